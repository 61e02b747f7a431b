"""rag/indexing.py: incremental builds embed only what changed and keep every other vector in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexCorruptError, RagError
from rag.indexing import build_index
from rag.retrieval import HybridRetriever
from rag.settings import Settings
from rag.store import IndexStore

pytestmark = pytest.mark.integration

SEEDS = Path(__file__).resolve().parents[1] / "seeds"

SEED_IDS = [
    "000_ac36cdf8cda615f1",
    "001_2181b654d248a0eb",
    "002_9aadfc9c626cea25",
    "003_4244630f166f0cd0",
    "004_deee31e75b74293e",
]
NEW_ARTICLE = (
    "Grain Corridor Deal Signed\n\n"
    "Officials in Vilnius signed a grain corridor agreement with Kazakhstan on Thursday, "
    "allowing wheat shipments to reach Baltic ports by rail.\n\n"
    "The corridor is expected to carry two million tonnes of wheat in its first year."
)


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, embedder):
    """One full build of the seeds, shared: (index folder, its report)."""
    root = tmp_path_factory.mktemp("base")
    seeds = root / "seeds"
    shutil.copytree(SEEDS, seeds)
    report = build_index(Settings(_env_file=None, index_dir=root / "index", seeds_dir=seeds), embedder)
    # The index remembers where each article came from and keeps indexing files outside the
    # seeds folder that still exist; remove this folder so each test's own seeds copy is the source.
    shutil.rmtree(seeds)
    return root / "index", report


@pytest.fixture
def settings(tmp_path, seeds_copy, make_settings, base_index):
    """Settings over a private seeds copy and a private copy of the base index."""
    shutil.copytree(base_index[0], tmp_path / "index")
    return make_settings(index_dir=tmp_path / "index", seeds_dir=seeds_copy)


def vectors_by_chunk(store: IndexStore) -> dict[str, np.ndarray]:
    return {c.chunk_id: np.asarray(store.vectors[i]) for i, c in enumerate(store.chunks)}


def sentence_vectors_by_chunk(store: IndexStore) -> dict[str, np.ndarray]:
    owner = np.asarray(store.sentence_owner)
    sentences = np.asarray(store.sentence_vectors)
    return {c.chunk_id: sentences[owner == i] for i, c in enumerate(store.chunks)}


def assert_same_vectors(old: IndexStore, new: IndexStore, doc_ids: set[str]) -> None:
    """Chunks of `doc_ids` carry exactly the vectors (chunk and sentence) they had before."""
    old_vectors, new_vectors = vectors_by_chunk(old), vectors_by_chunk(new)
    old_sentences, new_sentences = sentence_vectors_by_chunk(old), sentence_vectors_by_chunk(new)
    kept = [c.chunk_id for c in new.chunks if c.doc_id in doc_ids]
    assert kept
    for chunk_id in kept:
        np.testing.assert_array_equal(new_vectors[chunk_id], old_vectors[chunk_id])
        assert len(new_sentences[chunk_id]) >= 1
        np.testing.assert_array_equal(new_sentences[chunk_id], old_sentences[chunk_id])


def snapshot(index_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file below the index folder: its size and modification time."""
    return {str(p.relative_to(index_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in index_dir.rglob("*")}


def test_second_build_writes_nothing_and_rebuild_embeds_all(settings, embedder, base_index):
    first = base_index[1]
    assert first.added == SEED_IDS
    assert first.embedded_chunks == first.n_chunks >= 20
    assert first.skipped == [] and not first.up_to_date
    moved = build_index(settings, embedder)  # the base index read another seeds folder: the new files are recorded
    assert not moved.up_to_date and moved.embedded_chunks == 0
    before = snapshot(settings.index_dir)

    second = build_index(settings, embedder)
    assert second.up_to_date
    assert second.unchanged == SEED_IDS
    assert (second.added, second.changed, second.removed) == ([], [], [])
    assert second.embedded_chunks == 0
    assert second.n_chunks == first.n_chunks
    assert second.version == moved.version
    assert snapshot(settings.index_dir) == before  # no version folder, CURRENT untouched, nothing rewritten

    rebuilt = build_index(settings, embedder, rebuild=True)
    assert not rebuilt.up_to_date
    assert rebuilt.added == SEED_IDS
    assert rebuilt.unchanged == []
    assert rebuilt.embedded_chunks == rebuilt.n_chunks == first.n_chunks
    assert rebuilt.version != moved.version
    assert (settings.index_dir / "CURRENT").read_text(encoding="utf-8") == rebuilt.version


def test_other_settings_or_a_touched_file_are_not_up_to_date(settings, embedder, seeds_copy):
    """The collection is the same, but what the manifest records is not: a version is written."""
    assert build_index(settings, embedder).version and build_index(settings, embedder).up_to_date  # this seeds copy recorded
    changed = build_index(settings.with_overrides(ann_threshold=10), embedder)  # flat -> HNSW
    assert not changed.up_to_date and changed.embedded_chunks == 0
    assert IndexStore.load(settings.index_dir).manifest.index_type == "hnsw"
    touched = seeds_copy / f"{SEED_IDS[1]}.txt"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # saved again, same text: its new time is recorded
    again = build_index(settings.with_overrides(ann_threshold=10), embedder)
    assert not again.up_to_date and again.version != changed.version
    assert build_index(settings.with_overrides(ann_threshold=10), embedder).up_to_date


def test_changing_one_article_re_embeds_only_that_article(settings, embedder, seeds_copy):
    before = IndexStore.load(settings.index_dir)
    target = "003_4244630f166f0cd0"
    path = seeds_copy / f"{target}.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\n\nThe zebra sanctuary near Gomel reopened on Tuesday.\n", encoding="utf-8")

    report = build_index(settings, embedder)
    assert report.changed == [target]
    assert report.unchanged == [d for d in SEED_IDS if d != target]
    assert report.added == [] and report.removed == []
    after = IndexStore.load(settings.index_dir)
    assert report.embedded_chunks == sum(c.doc_id == target for c in after.chunks)
    assert 1 <= report.embedded_chunks < report.n_chunks
    assert "zebra sanctuary" in after.documents[target].text
    assert_same_vectors(before, after, set(SEED_IDS) - {target})

    retriever = HybridRetriever(after, embedder, settings)
    best = retriever.search("zebra sanctuary near Gomel", top_k=1)[0]
    assert best.chunk.doc_id == target and "zebra sanctuary" in best.chunk.text


def test_deleting_an_article_drops_it(settings, embedder, seeds_copy):
    before = IndexStore.load(settings.index_dir)
    gone = "001_2181b654d248a0eb"
    (seeds_copy / f"{gone}.txt").unlink()

    report = build_index(settings, embedder)
    assert report.removed == [gone]
    assert report.embedded_chunks == 0
    after = IndexStore.load(settings.index_dir)
    assert gone not in after.documents
    assert gone not in after.manifest.documents
    assert all(c.doc_id != gone for c in after.chunks)
    assert after.manifest.n_chunks == len(before.chunks) - sum(c.doc_id == gone for c in before.chunks)
    # rows shifted: every remaining chunk still has its own vectors
    assert_same_vectors(before, after, set(SEED_IDS) - {gone})
    hits = HybridRetriever(after, embedder, settings).search("Valery Tsepkalo exile in Poland", top_k=after.manifest.n_chunks)
    assert all(h.chunk.doc_id != gone for h in hits)


def test_extra_paths_add_a_file_that_stays_indexed(settings, embedder, tmp_path):
    extra = tmp_path / "elsewhere" / "grain-corridor.md"
    extra.parent.mkdir()
    extra.write_text(NEW_ARTICLE, encoding="utf-8")

    report = build_index(settings, embedder, extra_paths=[extra])
    assert report.added == ["grain-corridor"]
    assert report.unchanged == SEED_IDS
    store = IndexStore.load(settings.index_dir)
    assert report.embedded_chunks == sum(c.doc_id == "grain-corridor" for c in store.chunks) >= 1
    best = HybridRetriever(store, embedder, settings).search("How much wheat will the corridor carry?", top_k=1)[0]
    assert best.chunk.doc_id == "grain-corridor"

    # a later plain `rag index` keeps the added file
    again = build_index(settings, embedder)
    assert "grain-corridor" in again.unchanged and again.embedded_chunks == 0
    # and drops it once the file is gone
    extra.unlink()
    assert build_index(settings, embedder).removed == ["grain-corridor"]


def test_bad_files_are_skipped_and_reported_while_the_rest_is_indexed(settings, embedder, seeds_copy):
    (seeds_copy / "empty.txt").write_bytes(b"")
    (seeds_copy / "binary.md").write_bytes(b"\x00\x01\x02 binary")
    (seeds_copy / "latin.txt").write_bytes(b"caf\xe9 au lait")
    report = build_index(settings, embedder)
    assert report.unchanged == SEED_IDS
    assert sorted(s.path.rsplit("/", 1)[-1] for s in report.skipped) == ["binary.md", "empty.txt", "latin.txt"]
    assert set(IndexStore.load(settings.index_dir).documents) == set(SEED_IDS)


def test_empty_seeds_folder_is_a_clear_error(tmp_path, embedder, make_settings):
    empty = tmp_path / "empty-seeds"
    empty.mkdir()
    settings = make_settings(index_dir=tmp_path / "index", seeds_dir=empty)
    with pytest.raises(RagError) as info:
        build_index(settings, embedder)
    assert "nothing to index" in str(info.value)
    assert str(empty) in str(info.value)
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_seeds_folder_of_bad_files_names_them(tmp_path, embedder, make_settings):
    seeds = tmp_path / "bad-seeds"
    seeds.mkdir()
    (seeds / "empty.txt").write_bytes(b"")
    settings = make_settings(index_dir=tmp_path / "index", seeds_dir=seeds)
    with pytest.raises(RagError, match=r"nothing to index: .*empty\.txt: the file is empty"):
        build_index(settings, embedder)


def test_missing_seeds_folder_is_a_clear_error(tmp_path, embedder, make_settings):
    settings = make_settings(index_dir=tmp_path / "index", seeds_dir=tmp_path / "no-such-folder")
    with pytest.raises(RagError) as info:
        build_index(settings, embedder)
    assert "no-such-folder" in str(info.value) and "not found" in str(info.value)


# ---- large collections: HNSW ---------------------------------------------------------------------
def test_above_the_threshold_auto_builds_hnsw_with_the_configured_breadth(settings, embedder):
    from rag.factory import build_pipeline

    small = settings.with_overrides(ann_threshold=10, hnsw_ef_search=77)
    build_index(small, embedder, rebuild=True)
    pipeline = build_pipeline(small, embedder=embedder)
    assert pipeline.store.manifest.index_type == "hnsw"
    assert pipeline.store.dense.hnsw.efSearch == 77 and pipeline.store.sentence_dense.hnsw.efSearch == 77
    # on a collection this small the graph search finds what exact search finds
    exact = HybridRetriever(IndexStore.load(settings.index_dir), embedder, settings)
    question = "Who is Dmitri Trenin?"
    assert [h.chunk.chunk_id for h in pipeline.search(question, method="dense")] == [
        h.chunk.chunk_id for h in exact.search(question, method="dense")]


def _record(seen: list, rows) -> list:
    rows = list(rows)
    seen.extend(rows)
    return rows


def test_adding_an_article_shares_the_previous_files_and_searches_the_new_rows_exactly(settings, embedder, tmp_path, monkeypatch):
    import rag.index_writer
    import rag.store

    hnsw = settings.with_overrides(index_type="hnsw")
    build_index(hnsw, embedder, rebuild=True)
    before = IndexStore.load(settings.index_dir)
    extended = []
    real = rag.index_writer.build_dense_index

    def spy(vectors, index_type, config, base=None):
        extended.append(None if base is None else base.ntotal)
        return real(vectors, index_type, config, base)

    monkeypatch.setattr(rag.index_writer, "build_dense_index", spy)
    encoded, parsed = [], []
    real_jsonl, real_parse = rag.index_writer.jsonl_bytes, rag.store.parse_jsonl
    monkeypatch.setattr(rag.index_writer, "jsonl_bytes", lambda rows: real_jsonl(_record(encoded, rows)))
    monkeypatch.setattr(rag.store, "parse_jsonl", lambda path, data: parsed.append(path.name) or real_parse(path, data))
    shared = ("documents.jsonl", "chunks.jsonl", "vectors.f32", "sentence_vectors.f32", "sentence_owner.i64", "dense.faiss", "sentences.faiss")
    previous = {name: ((before.path / name).stat().st_ino, (before.path / name).read_bytes()) for name in shared}
    extra = tmp_path / "grain-corridor.md"
    extra.write_text(NEW_ARTICLE, encoding="utf-8")
    report = build_index(hnsw, embedder, extra_paths=[extra])
    assert parsed == []  # adding an article reads none of the stored records
    after = IndexStore.load(settings.index_dir)
    assert extended == []  # the HNSW graphs are shared as they are; the new rows are searched exactly
    assert after.dense.ntotal == len(before.chunks) and after.sentence_dense.ntotal == len(before.sentence_owner)
    assert after.chunks[: len(before.chunks)] == before.chunks
    assert list(after.documents.values())[:-1] == list(before.documents.values())
    # the previous files are shared (hard links), not copied, and only grew; only the new records were encoded
    for name, (inode, data) in previous.items():
        path = after.path / name
        grown = name.endswith(".faiss") or path.stat().st_size > len(data)
        assert path.stat().st_ino == inode and path.read_bytes().startswith(data) and grown
        assert path.stat().st_mode & 0o777 == 0o600
    assert {r.get("doc_id") for r in encoded} == {"grain-corridor"}
    assert len(encoded) == 1 + report.embedded_chunks
    assert report.embedded_chunks == len(after.chunks) - len(before.chunks) >= 1
    assert_same_vectors(before, after, set(SEED_IDS))
    best = HybridRetriever(after, embedder, hnsw).search("How much wheat will the corridor carry?", top_k=1)[0]
    assert best.chunk.doc_id == "grain-corridor"
    # the same dense ranking as an exact search of every row
    query = embedder.encode_queries(["How much wheat will the corridor carry?"])[0]
    exact = np.argsort(-(np.asarray(after.vectors) @ query))[:3]
    assert [row for row, _ in after._vector_search(after.dense, after.vectors, query[None, :], 3, None)] == list(exact)

    # past EXACT_TAIL the new rows are folded into the graph: extended, not rebuilt
    monkeypatch.setattr(rag.index_writer, "EXACT_TAIL", 0)
    second = tmp_path / "grain-corridor-2.md"
    second.write_text(NEW_ARTICLE.replace("corridor", "route"), encoding="utf-8")
    build_index(hnsw, embedder, extra_paths=[extra, second])
    folded = IndexStore.load(settings.index_dir)
    assert extended == [len(before.chunks), len(before.sentence_owner)]
    assert folded.dense.ntotal == len(folded.chunks) and folded.sentence_dense.ntotal == len(folded.sentence_owner)

    # a change in the middle is not an append: the graph is rebuilt, the other articles keep their vectors
    extended.clear()
    (Path(hnsw.seeds_dir) / f"{SEED_IDS[0]}.txt").write_text("Changed Title\n\nA wholly different article body.\n", encoding="utf-8")
    build_index(hnsw, embedder, extra_paths=[extra, second])
    assert extended == [None, None]
    rebuilt = IndexStore.load(settings.index_dir)
    assert rebuilt.dense.ntotal == len(rebuilt.chunks) and rebuilt.sentence_dense.ntotal == len(rebuilt.sentence_owner)
    assert_same_vectors(folded, rebuilt, {*SEED_IDS[1:], "grain-corridor", "grain-corridor-2"})

    # an article removed after an addition whose rows are still past the graph: the rows are renumbered
    monkeypatch.setattr(rag.index_writer, "EXACT_TAIL", 10_000)
    third = tmp_path / "grain-corridor-3.md"
    third.write_text(NEW_ARTICLE.replace("corridor", "lane"), encoding="utf-8")
    build_index(hnsw, embedder, extra_paths=[extra, second, third])
    with_tail = IndexStore.load(settings.index_dir)
    assert with_tail.dense.ntotal < len(with_tail.chunks)
    (Path(hnsw.seeds_dir) / f"{SEED_IDS[2]}.txt").unlink()
    build_index(hnsw, embedder, extra_paths=[extra, second, third])
    removed = IndexStore.load(settings.index_dir)
    assert SEED_IDS[2] not in removed.documents
    assert_same_vectors(with_tail, removed, {SEED_IDS[1], SEED_IDS[3], "grain-corridor", "grain-corridor-3"})


def test_unchanged_files_are_not_read_again(settings, embedder, seeds_copy, monkeypatch):
    import rag.ingest

    build_index(settings, embedder)  # records each file's size and modification time
    read = []
    real = rag.ingest.load_document
    monkeypatch.setattr(rag.ingest, "load_document", lambda path: read.append(path.stem) or real(path))
    assert build_index(settings, embedder).unchanged == SEED_IDS
    assert read == []

    touched = seeds_copy / f"{SEED_IDS[1]}.txt"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # saved again, same text
    report = build_index(settings, embedder)
    assert read == [SEED_IDS[1]] and report.unchanged == SEED_IDS and report.embedded_chunks == 0


def test_an_index_made_by_other_readers_has_its_files_read_again(settings, embedder, seeds_copy, monkeypatch):
    import rag.indexing
    import rag.ingest

    build_index(settings, embedder)
    read = []
    real = rag.ingest.load_document
    monkeypatch.setattr(rag.ingest, "load_document", lambda path: read.append(path.stem) or real(path))
    monkeypatch.setattr(rag.indexing, "READER_VERSION", "readers-of-the-future")
    build_index(settings, embedder)
    assert sorted(read) == SEED_IDS  # stored documents are not trusted to have the new structure


def keyword_scores(store: IndexStore, query: str) -> dict[str, float]:
    from rag.keywords import bm25_tokenize

    scores = store.bm25.get_scores(bm25_tokenize([query])[0])
    return {c.chunk_id: float(s) for c, s in zip(store.chunks, scores)}


def test_keyword_index_is_updated_from_kept_term_counts_and_scores_as_a_fresh_bm25s_index(
    settings, embedder, seeds_copy, tmp_path, monkeypatch
):
    import bm25s

    import rag.keywords
    from rag.keywords import bm25_text, bm25_tokenize

    tokenised = []
    real = rag.keywords._tokenize
    monkeypatch.setattr(rag.keywords, "_tokenize", lambda texts, return_ids: tokenised.extend(texts) or real(texts, return_ids))
    extra = tmp_path / "grain-corridor.md"
    extra.write_text(NEW_ARTICLE, encoding="utf-8")
    (seeds_copy / f"{SEED_IDS[2]}.txt").unlink()  # a removal and an addition in one build
    build_index(settings, embedder, extra_paths=[extra])
    store = IndexStore.load(settings.index_dir)
    new_texts = [bm25_text(c) for c in store.chunks if c.doc_id == "grain-corridor"]
    assert tokenised == new_texts  # the kept passages' counts were copied, not recounted

    fresh = bm25s.BM25(method="lucene")
    fresh.index(bm25_tokenize([bm25_text(c) for c in store.chunks]), show_progress=False)
    for query in ("wheat corridor Kazakhstan", "Lukashenko Putin loan", "Tsepkalo exile"):
        expected = fresh.get_scores(bm25_tokenize([query])[0])
        np.testing.assert_allclose(list(keyword_scores(store, query).values()), expected, rtol=1e-5, atol=1e-6)
    scores = keyword_scores(store, "wheat corridor Kazakhstan")
    best = max(store.chunks, key=lambda c: scores[c.chunk_id])
    assert best.doc_id == "grain-corridor"


def test_damaged_term_counts_are_counted_again(settings, embedder, tmp_path):
    from scipy import sparse

    from rag.keywords import TERM_COUNTS

    store = IndexStore.load(settings.index_dir)
    sparse.save_npz(store.path / "bm25" / TERM_COUNTS, sparse.csr_matrix((3, 2), dtype=np.int32))  # wrong shape
    assert store.term_counts() is None
    extra = tmp_path / "grain-corridor.md"
    extra.write_text(NEW_ARTICLE, encoding="utf-8")
    build_index(settings, embedder, extra_paths=[extra])
    after = IndexStore.load(settings.index_dir)
    assert after.term_counts().counts.shape[0] == len(after.chunks)
    scores = keyword_scores(after, "wheat corridor Kazakhstan")
    assert max(after.chunks, key=lambda c: scores[c.chunk_id]).doc_id == "grain-corridor"


def test_another_keyword_analysis_recounts_every_passage_without_embedding_again(settings, embedder, monkeypatch):
    """Versions and decimals are whole terms ("1.5", not nothing); an index counted under another
    analysis has its keyword index counted again on the next build, and nothing is embedded."""
    import rag.indexing
    import rag.keywords
    from rag.keywords import bm25_text

    before = IndexStore.load(settings.index_dir)
    loan = next(c for c in before.chunks if "$1.5 billion" in c.text)
    scores = keyword_scores(before, "1.5")
    assert scores[loan.chunk_id] == max(scores.values()) > 0  # the number alone finds the loan
    monkeypatch.setattr(rag.indexing, "KEYWORD_ANALYSIS", "an-older-analysis")
    tokenised = []
    real = rag.keywords._tokenize
    monkeypatch.setattr(rag.keywords, "_tokenize", lambda texts, return_ids: tokenised.extend(texts) or real(texts, return_ids))
    report = build_index(settings, embedder)
    assert not report.up_to_date and report.embedded_chunks == 0
    assert sorted(tokenised) == sorted(bm25_text(c) for c in before.chunks)  # every passage counted again
    after = IndexStore.load(settings.index_dir)
    assert after.manifest.chunker["keywords"] == "an-older-analysis"
    assert after.term_counts().counts.shape[0] == len(after.chunks)
    assert keyword_scores(after, "1.5") == scores


def test_an_edited_date_alone_counts_as_a_change(settings, embedder, seeds_copy):
    """The date is metadata, not text, but each passage carries it: the article is stored and embedded again."""
    path = seeds_copy / f"{SEED_IDS[0]}.txt"
    original = path.read_text(encoding="utf-8")
    assert "date 2021-05-28" in original
    path.write_text(original.replace("date 2021-05-28", "date 2021-05-29"), encoding="utf-8")
    report = build_index(settings, embedder)
    store = IndexStore.load(settings.index_dir)
    assert report.changed == [SEED_IDS[0]] and report.unchanged == SEED_IDS[1:]
    assert report.embedded_chunks == sum(c.doc_id == SEED_IDS[0] for c in store.chunks)
    assert store.documents[SEED_IDS[0]].date == "2021-05-29"
    assert {c.date for c in store.chunks if c.doc_id == SEED_IDS[0]} == {"2021-05-29"}


def test_an_index_of_the_old_format_is_refused_by_load_and_rebuilt_by_rag_index(settings, embedder):
    import json

    version = IndexStore.load(settings.index_dir).path
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    (version / "manifest.json").write_text(json.dumps(manifest | {"format": 1, "invented_later": True}), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="format 1.*rag index --rebuild"):
        IndexStore.load(settings.index_dir)
    report = build_index(settings, embedder)
    assert report.added == SEED_IDS and report.embedded_chunks == report.n_chunks
    assert IndexStore.load(settings.index_dir).manifest.format == 2


def test_damage_met_only_mid_build_rebuilds_from_scratch(settings, embedder, seeds_copy):
    """A change makes the build read the stored passages; a damaged record there is met only then."""
    store = IndexStore.load(settings.index_dir)
    path = store.path / "chunks.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b'{"not": "a chunk"}'.ljust(len(lines[1])), *lines[2:]]))  # same size, a bad record inside
    IndexStore.open(settings.index_dir)  # opening does not read the records: the damage is met mid-build
    (seeds_copy / f"{SEED_IDS[1]}.txt").write_text("Changed Title\n\nA wholly different article body.\n", encoding="utf-8")
    report = build_index(settings, embedder)
    assert report.added == SEED_IDS and report.embedded_chunks == report.n_chunks  # from scratch
    assert len(IndexStore.load(settings.index_dir).chunks) == report.n_chunks


def test_the_index_stores_one_vector_per_answer_unit_embedded_on_its_own(base_index, embedder):
    """Each passage's units (sentences, code lines, table rows) get one vector each, in order: the
    unit embedded with its heading, as the extractive answerer reads them back per unit."""
    from dataclasses import replace

    from rag.chunking import passage_units
    from rag.indexing import embedding_text

    store = IndexStore.load(base_index[0])
    units = [len(passage_units(c)) for c in store.chunks]
    assert len(store.sentence_owner) == sum(units) > len(store.chunks)
    np.testing.assert_array_equal(store.sentence_owner, np.repeat(np.arange(len(store.chunks)), units))
    chunk = store.chunks[0]
    expected = embedder.encode_documents([embedding_text(replace(chunk, text=chunk.text[a:b]), True) for a, b in passage_units(chunk)])
    np.testing.assert_allclose(store.sentence_vectors_of(chunk.chunk_id), expected, atol=1e-5)


@pytest.fixture(scope="module")
def pooled_index(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("pooled")
    build_index(Settings(_env_file=None, index_dir=root / "index", seeds_dir=SEEDS, sentence_pooling=True), embedder)
    return root / "index"


def test_a_pooled_index_stores_each_units_vector_from_its_passages_pass(pooled_index, embedder):
    from rag.chunking import passage_units
    from rag.indexing import embedding_text, unit_spans

    store = IndexStore.load(pooled_index)
    assert store.manifest.chunker["sentences"] == "pooled-from-passage"
    assert len(store.sentence_owner) == sum(len(passage_units(c)) for c in store.chunks)
    chunk = store.chunks[0]
    spans = unit_spans(chunk, True)
    text = embedding_text(chunk, True)
    assert [text[a:b] for a, b in spans.spans] == [chunk.text[a:b] for a, b in passage_units(chunk)]
    _, expected = embedder.encode_passages([text], [spans], pooled=True)
    np.testing.assert_allclose(store.sentence_vectors_of(chunk.chunk_id), expected, atol=1e-5)


def test_pooled_unit_vectors_are_near_the_units_embedded_on_their_own(pooled_index, base_index):
    """What pooling gives up, measured on the seeds: each unit's pooled vector is closer to the unit
    embedded on its own than its passage's vector is (all but one of 171 units), and within its
    passage it is nearest its own unit for 80 % of units."""
    pooled_store, alone_store = IndexStore.load(pooled_index), IndexStore.load(base_index[0])
    owner = np.asarray(pooled_store.sentence_owner)
    pooled, standalone = np.asarray(pooled_store.sentence_vectors), np.asarray(alone_store.sentence_vectors)
    passages = np.asarray(pooled_store.vectors)[owner]
    assert np.mean((pooled * standalone).sum(axis=1) > (passages * standalone).sum(axis=1)) >= 0.98
    own = [np.argmax(pooled[owner == i] @ standalone[owner == i].T, axis=1) == np.arange((owner == i).sum())
           for i in range(len(pooled_store.chunks))]
    assert np.mean(np.concatenate(own)) >= 0.75


def test_switching_sentence_pooling_re_embeds_every_passage(settings, embedder, make_settings):
    build_index(settings, embedder)
    report = build_index(settings.with_overrides(sentence_pooling=True), embedder)
    assert report.embedded_chunks == report.n_chunks and not report.unchanged
