"""rag/library.py: articles added and removed by the collection's keeper, and the pipeline serving
the new index version without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SEEDS_DIR, settings_for_test
from rag.errors import InputError
from rag.library import Library, safe_name

NEW_ARTICLE = """Minsk opens a glass bridge over the Svislach

date 2021-07-01

The city of Minsk opened a glass footbridge over the Svislach river on Thursday. The bridge is 212 metres long
and was designed by the architect Olga Vinokurova, who said it took four years to build.
"""
QUESTION = "Who designed the glass footbridge over the Svislach river?"


@pytest.mark.parametrize("name, safe", [
    ("../../etc/passwd.txt", "passwd.txt"), ("..\\..\\boot.ini.md", "boot.ini.md"), (".hidden.html", "hidden.html"),
    ("report <2021>.pdf", "report _2021_.pdf"), ("...", "article"),
])
def test_an_uploaded_name_stays_a_plain_name_inside_the_library_folder(name, safe):
    assert safe_name(name) == safe


def upload(tmp_path: Path, name: str, data: bytes) -> tuple[str, Path]:
    path = tmp_path / "incoming" / "f"
    path.parent.mkdir(exist_ok=True)
    path = path.with_name(f"f{len(list(path.parent.iterdir()))}")
    path.write_bytes(data)
    return name, path


def test_add_checks_type_size_and_count_and_never_overwrites(tmp_path):
    settings = settings_for_test(library_dir=tmp_path / "library", library_max_mb=0.001, library_max_files=3)
    library = Library(settings)
    result = library.add([upload(tmp_path, "a.txt", b"Short article."), upload(tmp_path, "a.txt", b"Another one."),
                          upload(tmp_path, "tool.exe", b"MZ"), upload(tmp_path, "big.md", b"x" * 5000)][:3])
    assert [p.name for p in result.saved] == ["a.txt", "a-2.txt"]
    assert result.refused == ["tool.exe: not a .txt, .md, .html or .pdf file"]
    assert (tmp_path / "library" / "a.txt").read_bytes() == b"Short article."  # not overwritten by the second
    big = library.add([upload(tmp_path, "big.md", b"x" * 5000)])
    assert big.saved == [] and "big.md: 0.0 MB; the limit is 0.001 MB (RAG_LIBRARY_MAX_MB)" in big.refused[0]
    with pytest.raises(InputError, match="4 files at once; the limit is 3"):
        library.add([upload(tmp_path, f"{i}.txt", b"x") for i in range(4)])


def test_adding_and_removing_can_be_turned_off(tmp_path):
    library = Library(settings_for_test(library_dir=tmp_path / "library", library_uploads=False))
    with pytest.raises(InputError, match="RAG_LIBRARY_UPLOADS=false"):
        library.add([upload(tmp_path, "a.txt", b"Short article.")])
    assert not (tmp_path / "library").exists()


@pytest.mark.integration
def test_an_added_article_is_answered_and_cited_then_removed_without_a_restart(tmp_path, embedder):
    from rag.factory import build_pipeline
    from rag.indexing import build_index

    shutil.copytree(SEEDS_DIR, tmp_path / "seeds")
    settings = settings_for_test(seeds_dir=tmp_path / "seeds", index_dir=tmp_path / "index", library_dir=tmp_path / "library",
                                 data_dir=tmp_path / "data", mode="extractive")
    build_index(settings, embedder)
    pipeline = build_pipeline(settings, embedder=embedder)
    before = pipeline.store.manifest.version
    library = Library(settings)

    added = library.add([upload(tmp_path, "glass bridge.txt", NEW_ARTICLE.encode()),
                         upload(tmp_path, "broken.pdf", b"\x00\x01 not a pdf at all")])
    report = library.reindex(embedder, added.saved)
    assert len(report.added) == 2 - len(report.skipped) and any("broken.pdf" in s.reason for s in report.skipped)
    answer = pipeline.ask(QUESTION)  # the pipeline serves the new version from this question on
    assert pipeline.store.manifest.version == report.version != before
    assert "Olga Vinokurova" in answer.answer and not answer.refused
    new_doc = next(d for d in pipeline.store.documents.values() if "glass" in (d.title or "").lower())
    assert new_doc.doc_id in {c.doc_id for c in answer.citations}

    moved = library.remove(new_doc.doc_id, pipeline.store)
    assert moved.is_file() and moved.parent == settings.data_dir / "removed-articles"  # kept, not deleted
    library.reindex(embedder)
    again = pipeline.ask(QUESTION)
    assert new_doc.doc_id not in pipeline.store.documents
    assert new_doc.doc_id not in {c.doc_id for c in again.citations} and "Vinokurova" not in again.answer
    with pytest.raises(InputError, match="no article"):
        library.remove(new_doc.doc_id, pipeline.store)
