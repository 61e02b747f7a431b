"""RAG_STORE=qdrant (embedded Qdrant, the real client): the store contract on both stores, the golden set
through retrieval and extractive answering within 0.02 of FAISS, incremental indexing by article, and
bad settings as one clear line."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN_PATH, SEEDS_DIR, settings_for_test
from rag.embedding import VectorCache
from rag.errors import RagError
from rag.factory import build_pipeline
from rag.indexing import build_index
from rag.keywords import bm25_text, bm25_tokenize
from rag.retrieval import Filters
from rag.stores import load_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RAG = Path(sys.executable).with_name("rag")
QUERIES = ["How much money did Russia promise to lend Belarus?", "Ryanair flight forced to land in Minsk", "Mishustin visit"]


def qdrant_settings(root: Path, **values):
    return settings_for_test(store="qdrant", qdrant_path=root / "qdrant", index_dir=root / "index", **values)


@pytest.fixture(scope="module")
def qdrant_index(tmp_path_factory, embedder):
    """The seed articles indexed into an embedded Qdrant, with the session's model (as `seed_index`)."""
    settings = qdrant_settings(tmp_path_factory.mktemp("qdrant-seeds"), seeds_dir=SEEDS_DIR)
    build_index(settings, embedder)
    return settings


@pytest.fixture(scope="module")
def stores(seed_index, qdrant_index):
    return load_store(seed_index), load_store(qdrant_index)


@pytest.fixture(params=["faiss", "qdrant"])
def any_store(request, stores):
    return stores[0] if request.param == "faiss" else stores[1]


def chunk_ids(store, hits) -> list[str]:
    return [store.passage(key).chunk_id for key, _ in hits]


# ---- the contract, on both stores -----------------------------------------------------------------
def test_both_stores_hold_the_same_articles_and_passages(stores):
    faiss, qdrant = stores
    assert qdrant.manifest.store["kind"] == "qdrant" and faiss.manifest.store == {}
    assert qdrant.documents == faiss.documents
    assert qdrant.chunks == faiss.chunks  # payloads give back every field, in storage order
    assert qdrant.manifest.chunk_counts == faiss.manifest.chunk_counts
    assert qdrant.manifest.n_sentences == faiss.manifest.n_sentences


def test_chunk_lookup_by_id(any_store, stores):
    reference = stores[0].chunks
    for chunk in reference[::7]:
        assert any_store.chunk(chunk.chunk_id) == chunk
    assert any_store.chunk("no-such-passage") is None


def test_dense_search_ranks_alike_on_both_stores(stores, embedder):
    faiss, qdrant = stores
    for query in QUERIES:
        vector = embedder.encode_queries([query])[0]
        a, b = faiss.dense_search(vector, 10), qdrant.dense_search(vector, 10)
        assert chunk_ids(faiss, a)[:3] == chunk_ids(qdrant, b)[:3]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-4)


def test_keyword_search_scores_as_bm25s(stores):
    faiss, qdrant = stores
    for query in QUERIES:
        a, b = faiss.bm25_search(query, 10), qdrant.bm25_search(query, 10)
        assert chunk_ids(faiss, a)[:3] == chunk_ids(qdrant, b)[:3]
        np.testing.assert_allclose([s for _, s in a][:3], [s for _, s in b][:3], rtol=1e-3)
    assert qdrant.bm25_search("the of and", 10) == []  # only stop words: nothing to match


def test_filters_select_passages_on_either_store(any_store, embedder):
    vector = embedder.encode_queries(["Belarus"])[0]
    doc_id = next(iter(any_store.documents))
    allowed = any_store.select(Filters(frozenset([doc_id])))
    assert {any_store.passage(k).doc_id for k, _ in any_store.dense_search(vector, 50, allowed)} == {doc_id}
    assert {any_store.passage(k).doc_id for k, _ in any_store.bm25_search("Belarus", 50, allowed)} == {doc_id}
    dated = any_store.select(Filters(date_from="2021-01-01"))
    assert all(any_store.passage(k).date >= "2021-01-01" for k, _ in any_store.dense_search(vector, 50, dated))
    assert any_store.select(Filters(date_from="2090-01-01")) is None


def test_stored_vectors_and_keyword_weights_match(stores):
    faiss, qdrant = stores
    for chunk in faiss.chunks[::5]:
        np.testing.assert_allclose(qdrant.sentence_vectors_of(chunk.chunk_id), faiss.sentence_vectors_of(chunk.chunk_id), atol=1e-6)
    keys = [k for k, _ in qdrant.bm25_search("Belarus Russia loan", 5)]
    rows = [faiss.chunks.index(qdrant.passage(k)) for k in keys]
    np.testing.assert_allclose(qdrant.passage_vectors(keys), faiss.passage_vectors(rows), atol=1e-6)
    terms = bm25_tokenize(["Lukashenko Ryanair loan zebra"])[0]
    np.testing.assert_allclose(qdrant.specificity(terms), faiss.specificity(terms), atol=1e-9)


# ---- the golden set on both stores ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipelines(seed_index, qdrant_index, embedder):
    """Both stores' pipelines on the session's model, each question and sentence embedded once for both
    (on two busy cores, embedding them twice was most of these tests' time)."""
    shared = copy.copy(embedder)
    for name in ("encode_queries", "encode_documents"):
        plain = getattr(embedder, name)
        cache = VectorCache(plain, 100_000)
        setattr(shared, name, lambda texts, cache=cache, plain=plain: cache(texts) if len(texts) else plain(texts))
    return build_pipeline(seed_index, embedder=shared), build_pipeline(qdrant_index, embedder=shared)


def test_golden_retrieval_within_002_of_faiss_and_top5_documents_agree(pipelines):
    from rag.evaluation import retrieval_comparison
    from rag.golden import load_golden

    items = load_golden(GOLDEN_PATH)
    faiss, qdrant = (retrieval_comparison(p, items, 5) for p in pipelines)
    for method in ("dense", "bm25", "hybrid"):
        for metric in ("doc_hit@1", "doc_hit@5", "mrr", "passage@1", "passage@5"):
            assert abs(faiss[method][metric] - qdrant[method][metric]) <= 0.02, (method, metric, faiss[method], qdrant[method])
    agree = [[h.chunk.doc_id for h in pipelines[0].search(i.user_input, top_k=5)]
             == [h.chunk.doc_id for h in pipelines[1].search(i.user_input, top_k=5)] for i in items]
    assert np.mean(agree) >= 0.9


def test_golden_extractive_answers_within_002_of_faiss(pipelines, tmp_path):
    from rag.evaluation import HEADLINE, Evaluator
    from rag.golden import load_golden

    items = load_golden(GOLDEN_PATH)
    runs = [Evaluator(p).run(items, tmp_path / name, "extractive") for p, name in zip(pipelines, ("faiss", "qdrant"))]
    faiss, qdrant = (run["metrics"] for run in runs)
    for metric in HEADLINE:
        if faiss[metric] is None:  # e.g. no unanswerable question among these
            assert qdrant[metric] is None
            continue
        assert abs(faiss[metric] - qdrant[metric]) <= 0.02, (metric, faiss[metric], qdrant[metric])


# ---- incremental indexing by article -------------------------------------------------------------------
def test_add_change_remove_an_article_on_qdrant(tmp_path, seeds_copy, embedder):
    settings = qdrant_settings(tmp_path, seeds_dir=seeds_copy)
    build_index(settings, embedder)
    first = load_store(settings)
    before = first.chunks  # read now: the next build deletes the replaced articles' points
    files = sorted(seeds_copy.iterdir())
    files[0].unlink()  # removed
    files[1].write_text(files[1].read_text(encoding="utf-8") + "\n\nA new closing paragraph about grain corridors.\n", encoding="utf-8")
    (seeds_copy / "new.md").write_text("# Orchard report\n\nApple harvests in the Vitebsk region doubled this autumn.\n", encoding="utf-8")
    report = build_index(settings, embedder)
    assert (len(report.added), len(report.changed), len(report.removed), len(report.unchanged)) == (1, 1, 1, 3)
    store = load_store(settings)
    kept = [c for c in before if c.doc_id in report.unchanged]
    assert [c for c in store.chunks if c.doc_id in report.unchanged] == kept  # kept passages were not rewritten
    assert store.manifest.n_chunks == len(store.chunks) == store.client.count(store.collection, exact=True).count  # nothing stale left
    assert not [c for c in store.chunks if c.doc_id in report.removed]
    assert "grain corridors" in " ".join(c.text for c in store.chunks if c.doc_id in report.changed)
    (top, _), *_ = store.bm25_search("apple harvest Vitebsk", 1)
    assert store.passage(top).doc_id == report.added[0]
    assert store.stats.live == [first.manifest.version, store.manifest.version]  # the kept passages' version stays live
    # the keyword statistics kept up by article equal a count over the passages now held
    tokens = bm25_tokenize([bm25_text(c) for c in store.chunks])
    assert store.stats.n_passages == len(tokens) and store.stats.total_length == sum(map(len, tokens))
    assert store.stats.doc_freq == dict(Counter(t for ts in tokens for t in set(ts)))
    assert build_index(settings, embedder).up_to_date


# ---- the command line; bad settings: one line, a non-zero exit, never the key -----------------------------------------------
def run_rag(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"HF_HUB_OFFLINE": "1"} | env
    return subprocess.run([str(RAG), *args], env=clean, capture_output=True, text=True, timeout=300, cwd=ROOT)


def one_clear_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(w in line for w in words), line
    return line


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_qdrant_without_url_or_path_is_one_line(tmp_path):
    result = run_rag("index", "--index", str(tmp_path / "index"), RAG_STORE="qdrant")
    one_clear_line(result, "RAG_QDRANT_URL", "RAG_QDRANT_PATH")


def test_unreachable_qdrant_names_the_url_and_never_the_key(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_rag("index", "--index", str(tmp_path / "index"), RAG_STORE="qdrant", RAG_QDRANT_URL=url,
                     RAG_QDRANT_API_KEY="sekret-key-123", RAG_QDRANT_TIMEOUT="2")
    one_clear_line(result, "RAG_QDRANT_URL", url, "unreachable")
    assert "sekret-key-123" not in result.stdout + result.stderr
    assert not any("sekret-key-123" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_a_missing_collection_names_the_setting_and_the_fix(qdrant_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(qdrant_index.index_dir, index_dir)
    result = run_rag("search", "--index", str(index_dir), "loan", RAG_QDRANT_PATH=str(tmp_path / "empty-qdrant"))
    one_clear_line(result, "no collection", "RAG_QDRANT_URL", "rag index --rebuild")


def test_missing_url_or_path_is_a_rag_error_in_the_library(tmp_path, embedder):
    with pytest.raises(RagError, match="RAG_QDRANT_URL"):
        build_index(settings_for_test(store="qdrant", index_dir=tmp_path / "index", seeds_dir=SEEDS_DIR), embedder)


def test_cli_switching_to_qdrant_rebuilds_and_search_needs_only_the_index(tmp_path):
    """`RAG_STORE=qdrant RAG_QDRANT_PATH=P rag index --index DIR` over a FAISS index re-embeds every passage;
    `rag index` and `rag search --index DIR` then follow the manifest, which names the collection and where it is."""
    index, seeds = str(tmp_path / "index"), str(SEEDS_DIR)
    assert run_rag("index", "--index", index, "--seeds", seeds).returncode == 0
    moved = run_rag("index", "--index", index, "--seeds", seeds, RAG_STORE="qdrant", RAG_QDRANT_PATH=str(tmp_path / "qdrant"))
    assert moved.returncode == 0 and "embedded 28 chunks" in moved.stdout, moved.stderr
    again = run_rag("index", "--index", index, "--seeds", seeds)  # RAG_STORE unset: the index's store, the recorded Qdrant
    assert again.returncode == 0 and "index is up to date" in again.stdout, again.stderr
    found = run_rag("search", "--index", index, "--json", "How much money did Russia promise to lend Belarus?")
    assert found.returncode == 0, found.stderr
    top = json.loads(found.stdout)["results"][0]
    assert "1.5 billion" in top["text"] and top["title"] and top["end"] > top["start"]  # the payload's record
