"""rag/store.py and rag/index_writer.py: what is written reads back the same; damage is reported by file name;
switches are atomic."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rag import index_writer
from rag import store as store_module
from rag.errors import IndexCorruptError, IndexLockedError, IndexMissingError, ModelMismatchError, RagError
from rag.records import Chunk, Document, Removal
from rag.retrieval import HybridRetriever
from rag.index_writer import Vectors, index_lock, write_version
from rag.store import CURRENT, IndexStore, Manifest, current_version_dir

DIM = 8
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = {
    "minsk": ["Mishustin arrived in Minsk for talks.", "Lavrov praised the union state."],
    "loan": ["Russia will lend Belarus $1.5 billion.", "The loan was announced in Sochi."],
    "ryanair": ["A Ryanair flight was forced to land.", "Protasevich was arrested on board."],
}


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def tiny_version(index_dir: Path, version: str = "v-1", model: str = MODEL, seed: int = 0):
    """Write a small complete index (3 documents, 6 chunks, 8-d vectors) without any model."""
    documents, chunks = [], []
    for d, (doc_id, sentences) in enumerate(TEXTS.items()):
        text = " ".join(sentences)
        documents.append(Document(doc_id, text, f"Title {doc_id}", f"2020-09-0{d + 1}", "AFP", f"https://x.example/{doc_id}",
                                  f"/seeds/{doc_id}.txt", [Removal("Leave a Reply", "comment form")]))
        offset = 0
        for p, sentence in enumerate(sentences):
            start = text.index(sentence, offset)
            offset = start + len(sentence)
            chunks.append(Chunk(f"{doc_id}-{p}", doc_id, p, sentence, start, offset, f"Title {doc_id}", f"2020-09-0{d + 1}"))
    chunk_vectors = unit_rows(len(chunks), seed)
    sentence_vectors = unit_rows(len(chunks) * 2, seed + 1)
    vectors = Vectors(chunk_vectors, sentence_vectors, np.repeat(np.arange(len(chunks)), 2))
    manifest = Manifest(
        embedding_model=model, dimension=DIM, chunker={"signature": "test"},
        documents={d.doc_id: d.content_hash for d in documents}, index_type="flat", n_chunks=len(chunks),
        built_at="2020-01-01T00:00:00", versions={}, version=version, sentence_vectors=True,
    )
    write_version(index_dir, manifest, documents, chunks, vectors)
    return documents, chunks, vectors


@pytest.fixture
def tiny(tmp_path):
    index_dir = tmp_path / "index"
    documents, chunks, vectors = tiny_version(index_dir)
    return index_dir, documents, chunks, vectors


# ---- round trip ---------------------------------------------------------------------------------
def test_round_trip_reads_back_everything(tiny):
    index_dir, documents, chunks, vectors = tiny
    loaded = IndexStore.load(index_dir, expected_model=MODEL)
    assert loaded.path == index_dir / "v-1"
    assert loaded.chunks == chunks
    assert loaded.documents == {d.doc_id: d for d in documents}
    assert loaded.documents["loan"].removed == [Removal("Leave a Reply", "comment form")]
    np.testing.assert_array_equal(np.asarray(loaded.vectors), vectors.chunks)
    np.testing.assert_array_equal(np.asarray(loaded.sentence_vectors), vectors.sentences)
    np.testing.assert_array_equal(np.asarray(loaded.sentence_owner), vectors.sentence_owner)
    assert loaded.manifest.n_chunks == 6 and loaded.manifest.dimension == DIM


def test_dense_search_finds_each_chunk_by_its_own_vector(tiny):
    index_dir, _, _, vectors = tiny
    loaded = IndexStore.load(index_dir)
    for row in range(6):
        ranked = loaded.dense_search(vectors.chunks[row], k=3)
        assert ranked[0][0] == row
        assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(ranked) == 3
    # a sentence vector makes its chunk score as high as the sentence match
    owner = int(vectors.sentence_owner[7])
    assert loaded.dense_search(vectors.sentences[7], k=1)[0] == (owner, pytest.approx(1.0, abs=1e-5))
    # allowed rows restrict the search; k is clamped to what is allowed
    allowed = np.array([4, 5])
    assert sorted(r for r, _ in loaded.dense_search(vectors.chunks[0], k=10, allowed=allowed)) == [4, 5]


def test_a_chunk_is_found_by_its_id(tiny):
    index_dir, _, chunks, _ = tiny
    loaded = IndexStore.load(index_dir)
    assert [loaded.chunk(c.chunk_id) for c in chunks] == chunks
    assert loaded.chunk("no-such-chunk") is None
    assert loaded.chunk(chunks[3].chunk_id) is loaded.chunks[3]  # the stored passage itself, not a copy


def test_bm25_search_ranks_keyword_matches_and_respects_allowed(tiny):
    index_dir, _, chunks, _ = tiny
    loaded = IndexStore.load(index_dir)
    ranked = loaded.bm25_search("lend billion", k=5)
    assert [chunks[r].chunk_id for r, _ in ranked] == ["loan-0"]  # only positive scores
    assert loaded.bm25_search("Protasevich arrested", k=5, allowed=np.array([0, 1, 2])) == []
    assert loaded.bm25_search("the of and", k=5) == []  # stop words only


@pytest.mark.integration
def test_seed_index_round_trip_same_results_and_chunk_ids(seed_index, pipeline, embedder):
    from rag.chunking import Chunker, ChunkerConfig
    from rag.indexing import embedding_text
    from rag.ingest import load_documents

    again = IndexStore.load(seed_index.index_dir, expected_model=seed_index.embedding_model)
    assert [c.chunk_id for c in again.chunks] == [c.chunk_id for c in pipeline.store.chunks]
    # the stored ids are the ones the chunker computes from the seed files
    chunker = Chunker(embedder.tokenizer, ChunkerConfig(seed_index.chunk_max_tokens, seed_index.chunk_overlap_tokens))
    expected = [c.chunk_id for d in load_documents([seed_index.seeds_dir]).documents for c in chunker.chunk(d)]
    assert [c.chunk_id for c in again.chunks] == expected
    # stored vectors are the embedder's vectors for those chunks
    fresh = embedder.encode_documents([embedding_text(c, True) for c in again.chunks[:3]])
    np.testing.assert_allclose(np.asarray(again.vectors[:3]), fresh, atol=1e-4)

    retriever = HybridRetriever(again, embedder, seed_index)
    for query in ("How much money did Russia promise to lend Belarus?", "Who arrived in Minsk?", "Ryanair flight"):
        before = [(h.chunk.chunk_id, round(h.score, 9)) for h in pipeline.retriever.search(query, top_k=5)]
        after = [(h.chunk.chunk_id, round(h.score, 9)) for h in retriever.search(query, top_k=5)]
        assert before == after


# ---- damage is reported by file name ------------------------------------------------------------
def assert_corrupt_names(index_dir: Path, filename: str):
    with pytest.raises(IndexCorruptError) as info:
        IndexStore.load(index_dir)
    assert filename in str(info.value)
    assert "rag index --rebuild" in str(info.value)
    return str(info.value)


def test_truncated_chunks_file(tiny):
    index_dir = tiny[0]
    path = index_dir / "v-1" / "chunks.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut inside a line
    assert_corrupt_names(index_dir, "chunks.jsonl")


def test_chunks_file_missing_its_last_lines(tiny):
    index_dir = tiny[0]
    path = index_dir / "v-1" / "chunks.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-2]), encoding="utf-8")
    message = assert_corrupt_names(index_dir, "chunks.jsonl")
    assert "truncated" in message and str(len("".join(lines).encode())) in message  # the size the manifest records


def test_garbage_faiss_file(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "dense.faiss").write_bytes(b"this is not a faiss index" * 10)
    assert_corrupt_names(index_dir, "dense.faiss")


def test_garbage_sentence_faiss_file(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "sentences.faiss").write_bytes(b"\x00\x01garbage")
    assert_corrupt_names(index_dir, "sentences.faiss")


def test_deleted_vectors_file(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "vectors.f32").unlink()
    assert_corrupt_names(index_dir, "vectors.f32")


def test_vectors_file_short_of_the_manifest_rows(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "vectors.f32").write_bytes(np.zeros((5, DIM), dtype=np.float32).tobytes())  # 6 rows recorded
    assert "truncated" in assert_corrupt_names(index_dir, "vectors.f32")


def test_garbage_manifest(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "manifest.json").write_text("{not json", encoding="utf-8")
    assert_corrupt_names(index_dir, "manifest.json")


def test_manifest_with_unknown_fields(tiny):
    index_dir = tiny[0]
    (index_dir / "v-1" / "manifest.json").write_text(json.dumps({"hello": 1}), encoding="utf-8")
    assert_corrupt_names(index_dir, "manifest.json")


def test_missing_bm25_folder(tiny):
    import shutil

    index_dir = tiny[0]
    shutil.rmtree(index_dir / "v-1" / "bm25")
    assert_corrupt_names(index_dir, "bm25")


def test_current_pointing_to_a_missing_version(tiny):
    index_dir = tiny[0]
    (index_dir / CURRENT).write_text("v-gone", encoding="utf-8")
    message = assert_corrupt_names(index_dir, CURRENT)
    assert "v-gone" in message


@pytest.mark.integration
def test_damaged_copy_of_the_seed_index(index_copy):
    version = current_version_dir(index_copy)
    (version / "dense.faiss").write_bytes(b"garbage")
    assert_corrupt_names(index_copy, "dense.faiss")


# ---- missing index, other model ---------------------------------------------------------------
def test_missing_index(tmp_path):
    with pytest.raises(IndexMissingError) as info:
        IndexStore.load(tmp_path / "nothing-here")
    assert "rag index" in str(info.value)
    assert isinstance(info.value, RagError)


def test_other_embedding_model_is_refused_naming_both(tiny):
    index_dir = tiny[0]
    with pytest.raises(ModelMismatchError) as info:
        IndexStore.load(index_dir, expected_model="other-model")
    assert "other-model" in str(info.value)
    assert MODEL in str(info.value)
    assert "--rebuild" in str(info.value)


# ---- atomic switch -------------------------------------------------------------------------------
def test_leftovers_of_an_interrupted_build_do_not_stop_loading(tiny):
    index_dir, _, chunks, _ = tiny
    (index_dir / ".building-v-2").mkdir()
    (index_dir / ".building-v-2" / "chunks.jsonl").write_text('{"chunk_id": "x"', encoding="utf-8")
    half = index_dir / "v-9999"
    half.mkdir()
    (half / "chunks.jsonl").write_text("", encoding="utf-8")
    loaded = IndexStore.load(index_dir)
    assert loaded.path == index_dir / "v-1"
    assert loaded.chunks == chunks


def test_a_crash_while_writing_keeps_the_previous_version(tiny, monkeypatch):
    index_dir, _, chunks, _ = tiny

    def crash(path, texts):
        raise OSError("disk full")

    monkeypatch.setattr(index_writer, "write_keyword_index", crash)
    with pytest.raises(OSError, match="disk full"):
        tiny_version(index_dir, version="v-2", seed=5)
    assert (index_dir / CURRENT).read_text() == "v-1"
    assert IndexStore.load(index_dir).chunks == chunks
    monkeypatch.undo()

    # the next successful build switches over and clears the old version and the leftovers
    tiny_version(index_dir, version="v-3", seed=7)
    assert (index_dir / CURRENT).read_text() == "v-3"
    assert sorted(p.name for p in index_dir.iterdir() if p.is_dir()) == ["v-3"]
    np.testing.assert_array_equal(np.asarray(IndexStore.load(index_dir).vectors), unit_rows(6, 7))


# ---- lock and permissions -------------------------------------------------------------------------
def test_second_lock_is_refused_while_the_first_is_held(tmp_path):
    with index_lock(tmp_path):
        with pytest.raises(IndexLockedError) as info:
            with index_lock(tmp_path):
                pass
        assert str(tmp_path) in str(info.value)
    with index_lock(tmp_path):  # released: free again
        pass


@pytest.mark.parametrize("name", ["vectors.f32", "chunks.jsonl", "manifest.json", "documents.jsonl", "dense.faiss", "sentence_vectors.f32"])
def test_index_files_are_private(tiny, name):
    mode = stat.S_IMODE((tiny[0] / "v-1" / name).stat().st_mode)
    assert mode == 0o600


def test_current_pointer_and_version_folder_are_private(tiny):
    index_dir = tiny[0]
    assert stat.S_IMODE((index_dir / CURRENT).stat().st_mode) == 0o600
    assert stat.S_IMODE((index_dir / "v-1").stat().st_mode) == 0o700


def test_manifest_records_the_model_and_chunker(tiny):
    index_dir = tiny[0]
    data = json.loads((index_dir / "v-1" / "manifest.json").read_text(encoding="utf-8"))
    assert data["embedding_model"] == MODEL
    assert data["dimension"] == DIM
    assert data["chunker"] == {"signature": "test"}
    assert Manifest(**data) == IndexStore.load(index_dir).manifest
    assert asdict(IndexStore.load(index_dir).manifest)["format"] == store_module.FORMAT


# ---- appending: shared files, each version reads its recorded prefix -------------------------------
def test_an_append_shares_the_files_and_cuts_off_what_an_interrupted_build_left(tiny):
    index_dir, documents, chunks, vectors = tiny
    before = IndexStore.load(index_dir)
    for name in ("chunks.jsonl", "vectors.f32"):  # an append that crashed before switching CURRENT
        with open(index_dir / "v-1" / name, "ab") as fh:
            fh.write(b'{"half a rec')
    assert IndexStore.load(index_dir).chunks == chunks  # the version reads only what it recorded

    doc = Document("wheat", "Wheat exports rose.", "Title wheat", source_path="/seeds/wheat.txt")
    chunk = Chunk("wheat-0", "wheat", 0, doc.text, 0, len(doc.text), "Title wheat")
    new = Vectors(unit_rows(1, 9), unit_rows(2, 10), np.array([6, 6]))
    manifest = Manifest(
        embedding_model=MODEL, dimension=DIM, chunker={"signature": "test"},
        documents={d.doc_id: d.content_hash for d in [*documents, doc]}, index_type="flat", n_chunks=7,
        built_at="2020-01-02T00:00:00", versions={}, version="v-2", sentence_vectors=True,
    )
    write_version(index_dir, manifest, [doc], [chunk], new, appended_to=before)
    after = IndexStore.load(index_dir)
    assert after.chunks == [*chunks, chunk]
    assert list(after.documents) == [*(d.doc_id for d in documents), "wheat"]
    np.testing.assert_array_equal(np.asarray(after.vectors), np.concatenate([vectors.chunks, new.chunks]))
    np.testing.assert_array_equal(np.asarray(after.sentence_owner), np.concatenate([vectors.sentence_owner, [6, 6]]))
    assert after.manifest.chunk_counts == {"minsk": 2, "loan": 2, "ryanair": 2, "wheat": 1}
    assert after.manifest.sources["wheat"] == "/seeds/wheat.txt"
    assert (after.path / "vectors.f32").stat().st_size == 7 * DIM * 4  # the crashed build's bytes are gone
    np.testing.assert_array_equal(np.asarray(before.vectors), vectors.chunks)  # a reader of v-1 still sees its rows
    # the new row is past the shared FAISS index: searched exactly, filters included
    assert after.dense.ntotal == 6 and (after.path / "dense.faiss").stat().st_nlink == 1  # v-1 pruned, the file kept
    assert after.dense_search(new.chunks[0], 1)[0][0] == 6
    assert after.dense_search(new.sentences[1], 1) == [(6, pytest.approx(1.0))]  # by one of its sentences, also past the index
    assert after.dense_search(new.chunks[0], 1, allowed=np.array([0, 6]))[0][0] == 6
    assert 6 not in [row for row, _ in after.dense_search(new.chunks[0], 2, allowed=np.array([0, 1]))]


def test_passages_out_of_their_articles_order_are_refused(tmp_path):
    documents = [Document("a", "A."), Document("b", "B.")]
    chunks = [Chunk("b-0", "b", 0, "B.", 0, 2), Chunk("a-0", "a", 0, "A.", 0, 2)]
    manifest = Manifest(MODEL, DIM, {}, {"a": "x", "b": "y"}, "flat", 2, "", {}, "v-1")
    with pytest.raises(ValueError, match="a-0"):
        write_version(tmp_path / "index", manifest, documents, chunks, Vectors(unit_rows(2, 0), unit_rows(0, 0), np.zeros(0, np.int64)))


def test_a_manifest_whose_articles_do_not_match_the_passages_is_refused(tiny):
    index_dir = tiny[0]
    path = index_dir / "v-1" / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["chunk_counts"] = {"minsk": 3, "loan": 1, "ryanair": 2}  # an append would reuse the wrong rows
    path.write_text(json.dumps(data), encoding="utf-8")
    assert "do not match" in assert_corrupt_names(index_dir, "manifest.json")
