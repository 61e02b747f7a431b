"""The benchmark harness behind `rag bench`: speed and memory, measured on this machine, with the bare libraries beside.

Each scenario runs in a child process (so its peak memory is its own) and reports medians
of repeated runs with min and max. Figures for 100,000 and 1,000,000 passages use random
unit vectors (index-only figures); the output says so.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SCENARIOS = ("startup", "index", "incremental", "retrieval", "scale", "answer", "concurrency", "distributed")
QUESTIONS = [
    "How much money did Russia promise to lend Belarus?",
    "Where did Putin and Lukashenko meet in September 2020?",
    "Who is Dmitri Trenin?",
    "How many people did police detain after the election?",
    "What did Lukashenko call Putin?",
]


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3), "max": round(ordered[-1], 3),
            "p95": round(p95, 3), "runs": len(ordered)}


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def machine() -> dict:
    from rag.index_writer import library_versions

    mem = ""
    try:
        mem = next(line.split(":")[1].strip() for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory": mem, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "libraries": library_versions()}


def rag_cmd() -> list[str]:
    return [sys.executable, "-m", "rag"]


# ---- scenarios (each runs in its own process) ---------------------------------------------------
def scenario_startup(env: dict) -> dict:
    """Cold `rag search` process, and the bare sentence-transformers equivalent, 5 runs each."""
    from rag.embedding import resolve_model_path

    question = QUESTIONS[0]
    search = [*rag_cmd(), "search", question, "--top-k", "5", "--json", "--index", env["index"]]
    bare = [sys.executable, "-c",
            "from sentence_transformers import SentenceTransformer as S; import sys; "
            f"S(sys.argv[1], device='cpu').encode_query([{question!r}])", resolve_model_path(env["model"])]
    ours = timed(lambda: subprocess.run(search, check=True, capture_output=True), 5)
    reference = timed(lambda: subprocess.run(bare, check=True, capture_output=True), 3)
    ui = [ui_cold_start(env["index"]) for _ in range(2)]
    return {
        "cold rag search (ms)": stats(ours),
        "bare SentenceTransformer load + 1 query (ms)": stats(reference),
        "ratio search/bare": round(statistics.median(ours) / statistics.median(reference), 3),
        "ui: launch to page served (ms)": stats([u[0] for u in ui]),
        "ui: launch to first answer (ms)": stats([u[1] for u in ui]),
    }


def ui_cold_start(index: str) -> tuple[float, float]:
    import socket
    import urllib.request

    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"RAG_MODE": "extractive"}
    started = time.perf_counter()
    proc = subprocess.Popen([*rag_cmd(), "ui", "--port", str(port), "--index", index], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("rag ui exited") from None
                time.sleep(0.05)
        page = (time.perf_counter() - started) * 1000
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(QUESTIONS[0], "extractive", 5, 0.1, api_name="/chat")
        return page, (time.perf_counter() - started) * 1000
    finally:
        proc.terminate()
        proc.wait()


INDEX_RUNS = 3  # timed rebuilds and bare encodes per collection; medians reported


def scenario_index(env: dict) -> dict:
    """`rag index --rebuild` (the command, in its own process) on the seeds and on the development
    collections together, against the bare library embedding the same passages alone, and the
    passages and their sentences (what a sentence-level index embedded one by one would cost)."""
    from sentence_transformers import SentenceTransformer

    from rag.embedding import resolve_model_path

    model = SentenceTransformer(resolve_model_path(env["model"]), device="cpu")
    model.encode(["warm up"])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        collections = {"seeds": Path(env["seeds"])}
        if env.get("collections"):
            collections["development collections"] = linked_folder(Path(tmp) / "dev", [Path(p) for p in env["collections"]])
        for name, docs in collections.items():
            out[name] = index_figures(model, docs, Path(tmp) / f"index-{len(out)}")
    return out


def linked_folder(folder: Path, sources: list[Path]) -> Path:
    """One folder of links to every file of `sources`: several collections indexed as one."""
    folder.mkdir(parents=True)
    for source in sources:
        for path in sorted(source.iterdir()):
            if path.is_file():
                (folder / path.name).symlink_to(path.resolve())
    return folder


def index_figures(model, docs: Path, index: Path) -> dict:
    from rag.indexing import embedding_text
    from rag.store import IndexStore

    command = [*rag_cmd(), "index", "--seeds", str(docs), "--index", str(index), "--rebuild"]
    first_s, _ = run_measured(command)  # makes the ONNX export, as a first build does
    # sentences embedded one by one (the default), pooled from their passage's pass, and the default in fp32
    variants = {"sentences embedded alone (default)": {},
                "sentences embedded alone, RAG_INDEX_PRECISION=fp32": {"RAG_INDEX_PRECISION": "fp32"},
                "sentences pooled (RAG_SENTENCE_POOLING)": {"RAG_SENTENCE_POOLING": "true"}}
    store = IndexStore.load(index)
    texts = [embedding_text(c, True) for c in store.chunks]
    sentences = sentence_unit_texts(store, True)
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    bare, bare_all = [], []
    for _ in range(INDEX_RUNS):  # interleaved: a slow spell of the machine falls on every row alike
        for label, env in variants.items():
            runs[label].append(run_measured(command, env))
        bare += [s / 1000 for s in timed(lambda: model.encode(texts, batch_size=32, normalize_embeddings=True), 1)]
        bare_all += [s / 1000 for s in timed(lambda: model.encode(texts + sentences, batch_size=32, normalize_embeddings=True), 1)]
    n = len(texts)
    out = {"passages": n, "sentence vectors stored": len(store.sentence_owner),
           "first build, ONNX export included (s)": round(first_s, 2),
           "bare encode, passages alone (passages/s)": round(n / statistics.median(bare), 1),
           "bare encode, passages and sentences (passages/s)": round(n / statistics.median(bare_all), 1)}
    for label in variants:
        seconds = [s for s, _ in runs[label]]
        rate = n / statistics.median(seconds)
        out[f"rag index --rebuild, {label}"] = {
            "whole process (s)": stats(seconds), "passages/s": round(rate, 1),
            "ratio to bare passages alone": round(rate * statistics.median(bare) / n, 3),
            "ratio to bare passages and sentences": round(rate * statistics.median(bare_all) / n, 3),
            "peak resident memory (MB)": max(peak for _, peak in runs[label]),
        }
    return out


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one command (`env`: variables added)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | (env or {}))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command[2:4])} failed: {proc.stderr.read().decode(errors='replace')[-500:]}")
    return seconds, round(usage.ru_maxrss / 1024, 1)


def scenario_incremental(env: dict) -> dict:
    """One article added to a 100,000-passage index."""
    with tempfile.TemporaryDirectory() as tmp:
        return incremental_at_scale(Path(tmp), Path(env["seeds"]))


def sentence_unit_texts(store, with_title: bool) -> list[str]:
    from dataclasses import replace

    from rag.chunking import passage_units
    from rag.indexing import embedding_text

    return [embedding_text(replace(c, text=c.text[a:b]), with_title) for c in store.chunks for a, b in passage_units(c)]


ADDITIONS = 5  # articles added one after another to the 100,000-passage index
PASSAGES_PER_ARTICLE = 4.66  # what the chunker makes of 16 reshuffled seed paragraphs, measured


def synthetic_corpus(folder: Path, passages: int, seeds: Path) -> Path:
    """Articles made of 16 reshuffled seed paragraphs each: real text, any size."""
    import random

    from rag.ingest import load_documents

    docs = load_documents([seeds]).documents
    paragraphs = [p for d in docs for p in d.text.split("\n\n") if len(p) > 80]
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    n_docs = max(1, round(passages / PASSAGES_PER_ARTICLE))
    for i in range(n_docs):
        body = "\n\n".join(rng.choice(paragraphs) + f" (report {i}-{j})" for j in range(16))
        (folder / f"syn_{i:06d}.txt").write_text(f"Synthetic report {i}\n\n{body}\n", encoding="utf-8")
    return folder


def incremental_at_scale(tmp: Path, seeds: Path, n: int = 100_000) -> dict:
    """One article added to an index of n passages: real article files, vectors faked as random unit vectors
    (embedding n passages would take hours here); only the new article may be embedded."""
    from rag.chunking import Chunker, ChunkerConfig
    from rag.embedding import Embedder
    from rag.index_writer import Vectors, library_versions, write_version
    from rag.indexing import build_index, choose_index_type, chunker_recipe
    from rag.ingest import load_documents
    from rag.settings import Settings
    from rag.store import Manifest

    corpus = synthetic_corpus(tmp / "corpus-100k", n, seeds)
    settings = Settings(_env_file=None, seeds_dir=corpus, index_dir=tmp / "index-100k", sentence_vectors=False)
    embedder = Embedder(settings.embedding_model, settings.embedding_batch_size)
    loaded = load_documents([corpus])
    docs = loaded.documents
    config = ChunkerConfig(settings.chunk_max_tokens, settings.chunk_overlap_tokens)
    chunker = Chunker(embedder.tokenizer, config)
    chunks = [c for d in docs for c in chunker.chunk(d)]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(chunks), embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index_type = choose_index_type(settings, len(chunks))
    manifest = Manifest(settings.embedding_model, embedder.dimension, chunker_recipe(settings, config),
                        {d.doc_id: d.content_hash for d in docs}, index_type, len(chunks), "bench", library_versions(),
                        "v-bench-0", sentence_vectors=False, file_stats=loaded.file_stats)
    empty = np.zeros((0, embedder.dimension), np.float32)
    write_version(settings.index_dir, manifest, docs, chunks, Vectors(vectors, empty, np.zeros(0, np.int64)), settings.hnsw)
    os.sync()  # on disk, as an index built earlier is: an addition's fsync must not flush the build's 600 MB
    embedder.encode_documents(["warm up"])
    seconds, embedded = [], []
    for i, seed in enumerate(sorted(seeds.glob("*.txt"))[:ADDITIONS]):  # one article at a time, each an append
        article = tmp / f"new-article-{i}.txt"
        shutil.copy(seed, article)
        started = time.perf_counter()
        report = build_index(settings, embedder, extra_paths=[article])
        seconds.append(time.perf_counter() - started)
        embedded.append(report.embedded_chunks)
    return {"passages before": len(chunks), "passages after": report.n_chunks, "index type": index_type,
            "seconds per added article": stats(seconds), "chunks embedded per article": embedded,
            "note": "existing passages: real files of reshuffled seed paragraphs, random unit vectors, no sentence vectors"}


def scenario_retrieval(env: dict) -> dict:
    """Warm per-query latency on the seeds: dense, BM25, hybrid; and the bare libraries."""
    from rag.factory import build_pipeline
    from rag.settings import Settings

    pipeline = build_pipeline(Settings(_env_file=None, index_dir=Path(env["index"])))
    pipeline.warm_up()
    questions = [q for q in load_questions(Path(env["golden"]))] * 3
    out = {"queries": len(questions), "query encoder": pipeline.embedder.runtime_in_use}
    for method in ("dense", "bm25", "hybrid"):
        out[f"{method} (ms)"] = stats([timed(lambda q=q: pipeline.search(q, method=method), 1)[0] for q in questions])
    out["bare: query embedding alone (ms)"] = stats([timed(lambda q=q: pipeline.embedder.encode_queries([q]), 1)[0] for q in questions])
    vector = pipeline.embedder.encode_queries([questions[0]])[0]
    out["bare: FAISS search alone (ms)"] = stats(timed(lambda: pipeline.store.dense.search(vector[None, :], 30), 200))
    return out


def scenario_distributed(env: dict) -> dict:
    """Issue 18 on this machine: `rag index` against `rag index --ray` (a local Ray started by each run)
    on the seeds and the smallest development collection, the two indexes compared; and query latency
    with the passages in an embedded Qdrant against the FAISS store, on the seeds."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ray_env = {"HOME": str(tmp_path / "home")}  # Ray's auth token goes under the home folder
        collections = {"seeds": Path(env["seeds"])}
        if env.get("collections"):
            smallest = min((Path(c) for c in env["collections"]), key=lambda c: sum(f.stat().st_size for f in c.iterdir()))
            collections[smallest.parent.name] = smallest
        for name, docs in collections.items():
            out[f"index {name}"] = ray_against_plain(docs, tmp_path / name, ray_env)
        out["query latency, seeds"] = qdrant_against_faiss(Path(env["seeds"]), Path(env["golden"]), tmp_path / "latency")
        out["hybrid fusion on Qdrant, seeds golden set"] = engine_fusion(tmp_path / "latency" / "index-qdrant", Path(env["golden"]))
    return out


def engine_fusion(index: Path, golden: Path) -> dict:
    """The product's fusion over Qdrant's two searches against Qdrant's own (`prefetch` + `Fusion.DBSF`, or
    `RrfQuery(Rrf(k=60))` with RAG_FUSION=ranks), on the golden set's answerable questions: the figures of
    `rag eval retrieval`, and how often the top 5 agree."""
    from qdrant_client import models

    from rag.evaluation import ranking_scores, standalone_questions
    from rag.factory import build_pipeline
    from rag.golden import load_golden
    from rag.keywords import bm25_tokenize
    from rag.qdrant_store import SPARSE, UNITS, query_sparse
    from rag.settings import Settings

    pipeline = build_pipeline(Settings(_env_file=None, index_dir=index))
    store, items = pipeline.store, load_golden(golden)
    queries = standalone_questions(items, pipeline.settings.history_turns)
    depth = pipeline.settings.candidates
    settings = pipeline.settings
    engine_query = (models.RrfQuery(rrf=models.Rrf(k=settings.rrf_k)) if settings.fusion == "ranks"
                    else models.FusionQuery(fusion=models.Fusion.DBSF))
    product_name, engine_name = f"product fusion ({settings.fusion})", f"engine {type(engine_query).__name__}"
    rows: dict[str, list[dict]] = {product_name: [], engine_name: []}
    for item in [i for i in items if i.answerable and i.reference_doc_ids]:
        query = queries[item.id]
        product = [h.chunk for h in pipeline.search(query, top_k=5)]
        searches = [models.Prefetch(query=[pipeline.embedder.encode_queries([query])[0].tolist()], using=UNITS, limit=depth, filter=store.live())]
        tokens = bm25_tokenize([query])[0]
        if tokens:
            searches.append(models.Prefetch(query=query_sparse(tokens), using=SPARSE, limit=depth, filter=store.live()))
        fused = store.client.query_points(store.collection, prefetch=searches, query=engine_query, limit=5, with_payload=True).points
        engine = [store.passage(str(p.id)) for p in fused]
        for name, hits in ((product_name, product), (engine_name, engine)):
            rows[name].append(ranking_scores(item, hits) | {"same top 5 as the product's": float(hits == product)})
    pipeline.close()
    return {name: {k: round(statistics.fmean(r[k] for r in rs), 3) for k in rs[0]} for name, rs in rows.items()}


def ray_against_plain(docs: Path, tmp: Path, ray_env: dict) -> dict:
    from rag.store import IndexStore

    plain, on_ray = tmp / "plain", tmp / "ray"
    command = [*rag_cmd(), "index", "--seeds", str(docs), "--rebuild", "--index"]
    run_measured([*command, str(plain)])  # the first build makes the ONNX export; both then use it
    shutil.copytree(plain / "onnx", on_ray / "onnx")
    runs = {label: [run_measured([*command, str(index), *extra], ray_env)[0] for _ in range(INDEX_RUNS)]
            for label, index, extra in (("rag index", plain, []), ("rag index --ray (local Ray, 2 actors)", on_ray, ["--ray"]))}
    a, b = IndexStore.load(plain), IndexStore.load(on_ray)
    cosine = [float(np.min(np.sum(np.asarray(x) * np.asarray(y), axis=1)))
              for x, y in ((a.vectors, b.vectors), (a.sentence_vectors, b.sentence_vectors))]
    return {"passages": a.manifest.n_chunks, "units": a.manifest.n_sentences} | {
        f"{label}, whole process (s)": stats(seconds) for label, seconds in runs.items()} | {
        "same chunk ids": [c.chunk_id for c in a.chunks] == [c.chunk_id for c in b.chunks],
        "lowest cosine, passage vectors": round(cosine[0], 6), "lowest cosine, unit vectors": round(cosine[1], 6)}


def qdrant_against_faiss(seeds: Path, golden: Path, tmp: Path) -> dict:
    from rag.factory import build_pipeline
    from rag.settings import Settings

    stores = {"faiss": {}, "qdrant (embedded)": {"RAG_STORE": "qdrant", "RAG_QDRANT_PATH": str(tmp / "qdrant")}}
    questions = load_questions(golden) * 3
    out = {}
    for label, extra in stores.items():
        index = tmp / f"index-{label.split()[0]}"
        run_measured([*rag_cmd(), "index", "--seeds", str(seeds), "--index", str(index)], extra)
        settings = Settings(_env_file=None, index_dir=index, **{k.removeprefix("RAG_").lower(): v for k, v in extra.items()})
        pipeline = build_pipeline(settings)
        pipeline.warm_up()
        vectors = {q: pipeline.embedder.encode_queries([q])[0] for q in set(questions)}  # the store's share, not the model's
        for method in ("dense", "bm25", "hybrid"):
            out[f"{label} / {method} search, query embedded (ms)"] = stats(
                [timed(lambda q=q: pipeline.retriever.search(q, method=method, query_vector=vectors[q]), 1)[0] for q in questions])
        pipeline.close()
    return out


EF_SEARCH = (64, 128, 256, 512)
NPROBE = (64, 256, 512)


def scenario_scale(env: dict) -> dict:
    """Exact and approximate FAISS at 100,000 and 1,000,000 random unit vectors (index-only figures):
    HNSW as the product builds it (RAG_HNSW_M, RAG_HNSW_EF_CONSTRUCTION) at several efSearch, and
    IVF-SQ8 for comparison."""
    import faiss

    from rag.index_writer import build_dense_index
    from rag.settings import Settings

    config = Settings(_env_file=None).hnsw
    sizes = [int(s) for s in env.get("sizes", "100000,1000000").split(",")]
    rng = np.random.default_rng(0)
    out = {"note": "synthetic random unit vectors, 384 dimensions, with a 48-dimensional structure like real "
                   "sentence embeddings (uniform random vectors have no meaningful neighbours); 200 fresh queries; "
                   "recall@10 against exact search"}
    basis = np.linalg.qr(rng.standard_normal((384, 48)))[0].T.astype(np.float32)  # 48 orthonormal directions
    scales = np.linspace(1.0, 0.2, 48, dtype=np.float32)

    def sample(count: int) -> np.ndarray:
        latent = rng.standard_normal((count, 48), dtype=np.float32) * scales
        vectors = latent @ basis + 0.03 * rng.standard_normal((count, 384), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    for n in sizes:
        base = np.concatenate([sample(min(100_000, n - i)) for i in range(0, n, 100_000)])
        queries = sample(200)
        flat = faiss.IndexFlatIP(384)
        flat.add(base)
        _, truth = flat.search(queries, 10)
        row = {"exact (flat)": _measure(flat, queries, truth, 0, index_bytes=base.nbytes)}
        started = time.perf_counter()
        hnsw = build_dense_index(base, "hnsw", config)  # the product's own builder and settings
        build = time.perf_counter() - started
        for ef in EF_SEARCH:
            hnsw.hnsw.efSearch = ef
            row[f"HNSW M={config.m} efC={config.ef_construction} efSearch={ef}"] = _measure(
                hnsw, queries, truth, build, index_bytes=_faiss_bytes(hnsw))
        del hnsw
        started = time.perf_counter()
        nlist = int(4 * np.sqrt(n))
        ivf = faiss.index_factory(384, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf.train(base[rng.choice(n, min(n, 50 * nlist), replace=False)])
        ivf.add(base)
        build = time.perf_counter() - started
        for nprobe in NPROBE:
            ivf.nprobe = nprobe
            row[f"IVF{nlist},SQ8 nprobe={nprobe}"] = _measure(ivf, queries, truth, build, index_bytes=_faiss_bytes(ivf))
        out[f"{n} passages"] = row
        del base, flat, ivf
    return out


def _faiss_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def _measure(index, queries, truth, build_s: float, index_bytes: int) -> dict:
    latencies = [timed(lambda q=q: index.search(q[None, :], 10), 1)[0] for q in queries]
    _, found = index.search(queries, 10)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    return {"p50 ms": round(statistics.median(latencies), 3), "p95 ms": stats(latencies)["p95"], "recall@10": round(recall, 4),
            "build s": round(build_s, 1), "index MB": round(index_bytes / 1e6, 1)}


def scenario_answer(env: dict) -> dict:
    """Warm answers: extractive over the golden questions; the bundled model's time to first token
    and total, and each stage's share."""
    from rag.factory import build_pipeline
    from rag.settings import Settings

    pipeline = build_pipeline(Settings(_env_file=None, index_dir=Path(env["index"]), mode="llm"))
    try:
        pipeline.warm_up()
        extractive = _extractive_answers(pipeline, load_questions(Path(env["golden"])))
        pipeline.ask(QUESTIONS[0])  # starts the server and warms it
        rows = []
        for _ in range(3):
            for q in QUESTIONS:
                started = time.perf_counter()
                answer = pipeline.ask(q)
                total = (time.perf_counter() - started) * 1000
                t = answer.trace.timings_ms
                rows.append({"total": total, "retrieve": t.get("retrieve", 0), "first_token": t.get("first_token"),
                             "generate": t.get("generate", 0), "refused": answer.refused})
        generated = [r for r in rows if r["first_token"] is not None]
        total = sum(r["total"] for r in generated) or 1
        return {
            "extractive answer, warm (ms)": extractive,
            "model": pipeline.llm().model.rsplit("/", 1)[-1], "questions": len(rows), "answered by the model": len(generated),
            "time to first token (ms)": stats([r["retrieve"] + r["first_token"] for r in generated]) if generated else None,
            "total (ms)": stats([r["total"] for r in rows]),
            "share retrieval": round(sum(r["retrieve"] for r in generated) / total, 4),
            "share generation": round(sum(r["generate"] for r in generated) / total, 4),
            "share prompt, checks and the rest": round(1 - sum(r["retrieve"] + r["generate"] for r in generated) / total, 4),
        }
    finally:
        pipeline.close()


def _extractive_answers(pipeline, questions: list[str]) -> dict:
    """Each question asked once to warm up, then three times; stats over the timed asks."""
    for q in questions:
        pipeline.ask(q, mode="extractive")
    return stats([timed(lambda q=q: pipeline.ask(q, mode="extractive"), 1)[0] for _ in range(3) for q in questions])


def scenario_concurrency(env: dict) -> dict:
    """Questions per second with 1, 4 and 16 concurrent askers: retrieval only, and full answers with the bundled model."""
    from rag.factory import build_pipeline
    from rag.settings import Settings

    pipeline = build_pipeline(Settings(_env_file=None, index_dir=Path(env["index"]), mode="llm"))
    pipeline.warm_up()
    out = {"retrieval": {}, "answers (bundled model)": {}}
    questions = load_questions(Path(env["golden"]))
    try:
        pipeline.ask(QUESTIONS[0])
        for workers in (1, 4, 16):
            out["retrieval"][workers] = _load(lambda q: pipeline.search(q), questions * 2, workers)
            out["answers (bundled model)"][workers] = _load(lambda q: pipeline.ask(q), QUESTIONS * (2 if workers < 16 else 4), workers)
    finally:
        pipeline.close()
    return out


def _load(fn, items, workers: int) -> dict:
    latencies: list[float] = []

    def one(item):
        started = time.perf_counter()
        fn(item)
        latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, items))
    wall = time.perf_counter() - started
    s = stats(latencies)
    return {"questions/s": round(len(items) / wall, 2), "p50 ms": s["median"], "p95 ms": s["p95"], "n": len(items)}


def load_questions(golden: Path) -> list[str]:
    from rag.golden import load_golden

    return [i.user_input for i in load_golden(golden) if not i.turn or i.turn == 1]


RUNNERS = {"startup": scenario_startup, "index": scenario_index, "incremental": scenario_incremental, "retrieval": scenario_retrieval, "scale": scenario_scale,
           "answer": scenario_answer, "concurrency": scenario_concurrency, "distributed": scenario_distributed}


# ---- the parent -----------------------------------------------------------------------------------
def run_child(name: str, env: dict) -> tuple[dict, float]:
    """Run one scenario in a child process; return its result and peak resident memory (MB)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    proc = subprocess.Popen([sys.executable, "-m", "bench.harness", name, out_path, json.dumps(env)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        result = json.loads(Path(out_path).read_text()) if proc.returncode == 0 else {"error": f"exit code {proc.returncode}"}
    finally:
        os.unlink(out_path)
    return result, round(usage.ru_maxrss / 1024, 1)


def run_bench(scenarios: list[str], out_dir: Path, index_dir: Path, seeds: Path, golden: Path, model: str, sizes: str,
              collections: list[Path]) -> dict:
    from rag.files import atomic_write
    from rag.store import current_version_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    env = {"index": str(index_dir), "seeds": str(seeds), "golden": str(golden), "model": model, "sizes": sizes,
           "collections": [str(c) for c in collections]}
    results: dict = {"machine": machine(), "scenarios": {}}
    for name in scenarios:
        started = time.perf_counter()
        result, peak_mb = run_child(name, env)
        result["peak resident memory (MB)"] = peak_mb
        result["scenario seconds"] = round(time.perf_counter() - started, 1)
        results["scenarios"][name] = result
    version = current_version_dir(index_dir)
    size = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
    n_chunks = json.loads((version / "manifest.json").read_text())["n_chunks"]
    results["index bytes per passage (seeds, chunk + sentence vectors, BM25, text)"] = round(size / max(1, n_chunks))
    atomic_write(out_dir / "bench.json", json.dumps(results, indent=2).encode("utf-8"))
    write_plots(results, out_dir)
    return results


def write_plots(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = results["scenarios"].get("scale", {})
    sizes = [k for k in scale if k.endswith("passages")]
    if sizes:
        fig, ax = plt.subplots(figsize=(7, 4))
        for method in scale[sizes[0]]:
            xs = [int(s.split()[0]) for s in sizes if method in scale[s]]
            ax.plot(xs, [scale[s][method]["p50 ms"] for s in sizes if method in scale[s]], "o-", label=method)
        retrieval = results["scenarios"].get("retrieval", {})
        if "dense (ms)" in retrieval:
            ax.plot([28], [retrieval["bare: FAISS search alone (ms)"]["median"]], "ks", label="seeds (exact, real vectors)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("passages")
        ax.set_ylabel("p50 search latency (ms)")
        ax.set_title("Vector search latency against collection size")
        ax.legend(fontsize=7)
        fig.savefig(out_dir / "latency_vs_size.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    conc = results["scenarios"].get("concurrency", {})
    if conc.get("retrieval"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, key in zip(axes, ("retrieval", "answers (bundled model)")):
            workers = sorted(conc[key], key=int)
            ax.plot([int(w) for w in workers], [conc[key][w]["questions/s"] for w in workers], "o-")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent askers")
            ax.set_ylabel("questions per second")
            ax.set_title(key)
        fig.savefig(out_dir / "throughput_vs_concurrency.png", dpi=110, bbox_inches="tight")
        plt.close(fig)


def format_table(results: dict) -> str:
    lines = [f"machine: {results['machine']['cores']} cores, {results['machine']['memory']}, Python {results['machine']['python']}"]

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and "median" in value:
            lines.append(f"  {prefix:70s} median {value['median']:>10} (min {value['min']}, max {value['max']}, p95 {value['p95']}, n={value['runs']})")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix} / {k}" if prefix else str(k), v)
        else:
            lines.append(f"  {prefix:70s} {value}")

    for name, scenario in results["scenarios"].items():
        lines.append(f"[{name}]")
        walk("", scenario)
    lines.append(f"index bytes per passage: {results['index bytes per passage (seeds, chunk + sentence vectors, BM25, text)']}")
    return "\n".join(lines)


def child_main(argv: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    name, out_path, env = argv[0], argv[1], json.loads(argv[2])
    result = RUNNERS[name](env)
    Path(out_path).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    child_main(sys.argv[1:])
