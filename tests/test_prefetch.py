"""rag/prefetch.py: a large build's files are read and chunked in a worker process while the embedder
gets ready, and the index is the one a build that reads them itself would write."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest

import rag.indexing as indexing
from rag import embedding
from rag.chunking import Chunker, ChunkerConfig
from rag.embedding import DEFAULT_EMBEDDING_MODEL, Bfloat16Encoder, Embedder, OnnxEncoder
from rag.indexing import build_index
from rag.ingest import files_to_read, load_documents
from rag.onnx_export import OnnxExporter
from rag.prefetch import Prefetch
from rag.store import IndexStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def onnx_cache(embedder, tmp_path_factory):
    """The session's model exported, as a first `rag index` does."""
    cache = tmp_path_factory.mktemp("onnx")
    assert OnnxExporter(embedder.model, DEFAULT_EMBEDDING_MODEL, cache).export(["Belarus", "A loan of $1.5 billion."])
    return cache


@pytest.fixture
def collection(seeds_copy):
    """The seeds, with two files that cannot be indexed."""
    (seeds_copy / "empty.txt").write_text("")
    (seeds_copy / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    return seeds_copy


def build(tmp_path, name, collection, onnx_cache, make_settings):
    settings = make_settings(index_dir=tmp_path / name, seeds_dir=collection)
    embedder = Embedder(onnx_cache=onnx_cache, index_precision="auto")
    report = build_index(settings, embedder)
    return report, IndexStore.load(settings.index_dir), embedder.index_encoder(["what embeds a small build next"])


def test_a_prefetched_build_writes_the_index_a_build_reading_here_writes(tmp_path, collection, onnx_cache, make_settings, monkeypatch):
    """The worker read and chunked the files and the embedder loaded bfloat16 meanwhile (taken then
    for a build of any size); documents, passages and skipped files are those of a build that read the
    files itself, and the vectors those of fp32 within bfloat16's rounding."""
    monkeypatch.setattr(embedding, "computes_bfloat16", lambda: True)  # elsewhere torch emulates it: slower, the same
    here, here_store, here_encoder = build(tmp_path, "here", collection, onnx_cache, make_settings)
    monkeypatch.setattr(indexing, "PREFETCH_MIN_BYTES", 0)
    monkeypatch.setattr(indexing, "LARGE_BUILD_CHARS", 1)
    ahead, ahead_store, ahead_encoder = build(tmp_path, "ahead", collection, onnx_cache, make_settings)

    assert isinstance(here_encoder, OnnxEncoder)  # 28 passages: too few to load bfloat16 for
    assert isinstance(ahead_encoder, Bfloat16Encoder)  # loaded while the worker read: taken, and kept
    assert [s.reason for s in ahead.skipped] == [s.reason for s in here.skipped]
    assert {s.path.rsplit("/", 1)[1] for s in ahead.skipped} == {"empty.txt", "broken.pdf"}
    assert ahead_store.documents == here_store.documents
    assert ahead_store.chunks == here_store.chunks
    cosines = (np.asarray(ahead_store.vectors) * np.asarray(here_store.vectors)).sum(axis=1)
    assert cosines.min() >= 0.999
    assert np.array_equal(ahead_store.sentence_owner, here_store.sentence_owner)  # the worker's units: the same
    units = (np.asarray(ahead_store.sentence_vectors) * np.asarray(here_store.sentence_vectors)).sum(axis=1)
    assert len(units) > len(cosines) and units.min() >= 0.999


def test_a_worker_that_dies_loses_no_document(seeds_copy, onnx_cache, caplog):
    """Killed as soon as it reports a large build, the worker's files are made here instead, with a warning."""
    paths = list(files_to_read([seeds_copy]))
    chunker = Chunker(Embedder(onnx_cache=onnx_cache).tokenizer, ChunkerConfig())

    def kill_worker():
        for child in multiprocessing.active_children():
            child.kill()

    prefetch = Prefetch(paths, chunker, kill_worker, large_build=1)
    with caplog.at_level(logging.WARNING, logger="rag.prefetch"):
        read = load_documents([seeds_copy], read=prefetch.read)
    assert "the process reading the files stopped" in caplog.text
    assert read.documents == load_documents([seeds_copy]).documents
    for doc in read.documents:  # made here after the worker died, or left for the build to chunk
        assert prefetch.chunks(doc) in (None, chunker.chunk(doc))
