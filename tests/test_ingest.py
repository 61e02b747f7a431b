"""rag/ingest.py: every supported format loads; unreadable files are skipped by name, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdf_fixture import Text, pdf_bytes
from rag.errors import IngestError
from rag.ingest import discover, doc_id_for, load_document, load_documents

ARTICLE = (
    "Delegations from both countries met in Minsk on Tuesday to discuss grain exports and border crossings.\n\n"
    "The officials agreed to meet again next month, according to a joint statement released after the talks."
)

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Minsk Talks Resume</title>
<script>var trackingPixel = "analyticsTrackerSecret"; function loadAds() { return 42; }</script></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/world">World navigation menu</a></li></ul></nav>
<article>
<h1>Minsk Talks Resume</h1>
<p>Delegations from both countries met in Minsk on Tuesday to discuss grain exports and border crossings along the frontier.</p>
<p>The officials agreed to meet again next month, according to a joint statement released after the talks ended late in the evening.</p>
<p>Observers said the agreement on grain shipments could ease pressure on farmers in the southern regions of the country this winter.</p>
</article>
<footer>Footer text</footer>
</body></html>
"""


def minimal_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF that draws `lines` in 12-point Helvetica, 14 points apart."""
    return pdf_bytes([[Text(line, 72, 72 + 14 * i, "F1", 12) for i, line in enumerate(lines)]])


PDF_LINES = ["Belarus grain exports rose sharply in October.", "Officials in Minsk welcomed the new trade figures."]


def test_txt_and_md_load_with_doc_id_from_stem(tmp_path):
    (tmp_path / "plain-article.txt").write_text(ARTICLE, encoding="utf-8")
    (tmp_path / "notes.md").write_text("# Grain Talks\n\n**Minsk** hosted the [talks](https://x.example).\n\n" + ARTICLE, encoding="utf-8")
    result = load_documents([tmp_path])
    assert result.skipped == []
    docs = {d.doc_id: d for d in result.documents}
    assert set(docs) == {"plain-article", "notes"}
    assert docs["plain-article"].text == ARTICLE
    assert docs["plain-article"].source_path == str((tmp_path / "plain-article.txt").resolve())
    md = docs["notes"]
    assert md.title == "Grain Talks"
    assert md.text.startswith("Minsk hosted the talks.")  # markdown emphasis and link syntax gone
    assert "https://x.example" not in md.text


def test_doc_id_is_the_stem_with_unsafe_characters_replaced():
    assert doc_id_for(Path("/x/004_deee31e75b74293e.txt")) == "004_deee31e75b74293e"
    assert doc_id_for(Path("/x/my article (1).md")) == "my_article__1_"


def test_html_keeps_the_article_and_drops_script_and_nav(tmp_path):
    path = tmp_path / "talks.html"
    path.write_text(HTML_PAGE, encoding="utf-8")
    doc = load_document(path)
    assert doc.doc_id == "talks"
    assert doc.title == "Minsk Talks Resume"
    assert "Delegations from both countries met in Minsk on Tuesday" in doc.text
    assert "could ease pressure on farmers in the southern regions" in doc.text
    for code in ("trackingPixel", "analyticsTrackerSecret", "loadAds", "function"):
        assert code not in doc.text
    assert "World navigation menu" not in doc.text


def test_pdf_text_is_extracted(tmp_path):
    path = tmp_path / "brief.pdf"
    path.write_bytes(minimal_pdf(PDF_LINES))
    doc = load_document(path)
    assert doc.doc_id == "brief"
    # two lines at the normal line pitch are one paragraph: the wrap is joined
    assert doc.text == " ".join(PDF_LINES)
    assert [(b.kind, b.page) for b in doc.blocks] == [("paragraph", 1)]


def test_bad_files_are_skipped_by_name_while_good_files_load(tmp_path):
    (tmp_path / "good.txt").write_text(ARTICLE, encoding="utf-8")
    (tmp_path / "brief.pdf").write_bytes(minimal_pdf(PDF_LINES))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_bytes(b"  \n\n\t\n")
    (tmp_path / "binary.txt").write_bytes(b"ELF\x00\x01\x02\x00\xff" * 20)
    (tmp_path / "latin.txt").write_bytes(b"Le caf\xe9 de Minsk est ouvert.")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (tmp_path / "ignored.docx").write_bytes(b"not a supported type")

    result = load_documents([tmp_path])
    assert sorted(d.doc_id for d in result.documents) == ["brief", "good"]
    skipped = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(skipped) == {"empty.txt", "blank.md", "binary.txt", "latin.txt", "broken.pdf"}
    for name, reason in skipped.items():
        assert name in reason  # the message names the file
    assert "empty" in skipped["empty.txt"]
    assert "binary" in skipped["binary.txt"]
    assert "UTF-8" in skipped["latin.txt"]
    assert "PDF" in skipped["broken.pdf"]


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("empty.txt", b"", "empty"),
        ("nul.md", b"abc\x00def", "NUL"),
        ("cafe.txt", b"caf\xe9", "not valid UTF-8"),
        ("notes.rtf", b"{\\rtf1 hi}", "unsupported file type"),
    ],
)
def test_load_document_raises_ingest_error_naming_the_file(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(IngestError) as info:
        load_document(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff".encode() + ARTICLE.encode())
    assert load_document(path).text == ARTICLE


def test_duplicate_doc_ids_are_reported(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.txt").write_text(ARTICLE, encoding="utf-8")
    (tmp_path / "b" / "same.md").write_text(ARTICLE, encoding="utf-8")
    result = load_documents([tmp_path])
    assert [d.doc_id for d in result.documents] == ["same"]
    assert len(result.skipped) == 1
    assert "same document id" in result.skipped[0].reason


def test_discover_searches_folders_and_rejects_missing_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.TXT").write_text(ARTICLE, encoding="utf-8")
    (tmp_path / "y.csv").write_text("a,b", encoding="utf-8")
    assert discover([tmp_path]) == [str((tmp_path / "sub" / "x.TXT").resolve())]
    with pytest.raises(IngestError, match="no such file or folder"):
        discover([tmp_path / "missing"])
