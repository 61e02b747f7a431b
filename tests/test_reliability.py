"""Reliability: what the user gets when the LLM endpoint, the bundled server or the index on disk fails.

The endpoint failures use the scripted OpenAI-compatible server; the index tests run the real
`rag` command in subprocesses and kill it with SIGKILL while it writes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SEEDS_DIR
from llm_servers import Cut, Fail, Reply, Sleep, free_port, scripted_llm, scripted_pipeline  # noqa: F401
from rag.factory import build_pipeline
from rag.index_writer import index_lock
from rag.pipeline import AnswerEvent, NoticeEvent, SourcesEvent
from rag.store import CURRENT, IndexStore

ROOT = Path(__file__).resolve().parents[1]
RAG = [sys.executable, "-m", "rag"]  # `python -m rag`, as a user of the checkout runs it
QUESTION = "How much money did Russia promise to lend Belarus?"
LOAN_SENTENCE = "Russia would extend Belarus a government loan of $1.5 billion"
LLM_TIMEOUT = 2.0


# ---- the `rag` command in a subprocess (shared with test_security) ------------------------------------
def rag_env(**env: str) -> dict[str, str]:
    """The test process's environment without any RAG_/OPENAI_ setting, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    return base | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "False"} | env


def run_rag(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RAG, *args], cwd=cwd, env=rag_env(**env), capture_output=True, text=True, timeout=timeout)


def start_rag(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """`rag` started in the background; `process.started` is its launch time (time.monotonic)."""
    started = time.monotonic()
    process = subprocess.Popen([*RAG, *args], cwd=cwd, env=rag_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.started = started
    return process


def one_error_line(result: subprocess.CompletedProcess | tuple[int, str, str], *words: str) -> str:
    """The command failed with exactly one `error:` line on stderr naming `words`, and no traceback."""
    code, out, err = (result.returncode, result.stdout, result.stderr) if hasattr(result, "returncode") else result
    assert code != 0, (out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


_CLI_INDEX: dict[str, Path] = {}


def cli_seed_index(tmp_path_factory) -> Path:
    """A folder holding `seeds/` and `index/`, built once per session by `rag index` (with its ONNX export).

    Shared read-only: copy `index/` before changing anything in it.
    """
    if "root" not in _CLI_INDEX:
        root = tmp_path_factory.mktemp("cli-seed-index")
        shutil.copytree(SEEDS_DIR, root / "seeds")
        result = run_rag(["index"], cwd=root, RAG_INDEX_DIR=str(root / "index"), RAG_SEEDS_DIR=str(root / "seeds"))
        assert result.returncode == 0, result.stderr
        _CLI_INDEX["root"] = root
    return _CLI_INDEX["root"]


# ---- the LLM endpoint fails: extractive answer, notice naming the host, sources shown, bounded time ------
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


FAILURES = {
    "down": None,  # nothing listens on the port
    "slow": Sleep(10.0, Reply("Russia would lend Belarus $1.5 billion [1].")),
    "401": Fail(401, "Incorrect API key provided"),
    "429": Fail(429, "Rate limit reached"),
    "500": Fail(500, "internal error"),
    "cut": Cut(["Russia ", "would ", "lend "]),
}
NOTICE_WORDS = {
    "down": "cannot reach", "slow": f"within {LLM_TIMEOUT:g}s", "401": "401", "429": "429", "500": "500", "cut": "broke off",
}


@pytest.mark.integration
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_endpoint_gives_the_extractive_answer_with_sources_within_twice_the_timeout(
    scripted_pipeline, scripted_llm, failure
):
    behaviour = FAILURES[failure]
    if behaviour is None:
        pipe = scripted_pipeline(openai_base_url=closed_port_url(), llm_timeout=LLM_TIMEOUT, llm_max_retries=0)
    else:
        scripted_llm.always(behaviour)
        pipe = scripted_pipeline(llm_timeout=LLM_TIMEOUT, llm_max_retries=0)
    expected_sources = [h.chunk.chunk_id for h in pipe.search(QUESTION)]

    started = time.monotonic()
    events = list(pipe.ask_stream(QUESTION))
    elapsed = time.monotonic() - started

    answer = events[-1].answer
    assert isinstance(events[-1], AnswerEvent) and answer.mode == "llm"
    assert elapsed < 2 * LLM_TIMEOUT, f"{failure}: {elapsed:.1f}s for a {LLM_TIMEOUT:g}s timeout"
    if failure == "slow":
        assert elapsed >= LLM_TIMEOUT * 0.9  # it did wait for the endpoint, then gave up
    # the notice names the endpoint and says what is shown instead
    assert answer.notice and pipe.endpoint in answer.notice and NOTICE_WORDS[failure] in answer.notice, answer.notice
    assert answer.notice.endswith("Showing an extractive answer instead.")
    assert [e.text for e in events if isinstance(e, NoticeEvent)][-1] == answer.notice
    # the extractive answer, with the retrieved sources still shown (first, before any waiting on the model)
    assert not answer.refused and LOAN_SENTENCE in answer.answer
    assert answer.trace.answered_by == "extractive"
    assert isinstance(events[0], SourcesEvent) and [h.chunk.chunk_id for h in events[0].hits] == expected_sources
    assert [h.chunk.chunk_id for h in answer.sources] == expected_sources and len(expected_sources) == 5
    assert answer.citations and all(1 <= c.marker <= len(answer.sources) for c in answer.citations)
    assert scripted_llm.unscripted == 0


# ---- the bundled local server dies mid-session ------------------------------------------------------------
@pytest.mark.llm
def test_the_pipeline_restarts_its_bundled_server_after_it_dies(seed_index, embedder, pipeline, tmp_path):
    settings = seed_index.model_copy(update={
        "openai_base_url": None, "local_llm_port": free_port(), "data_dir": tmp_path / "data", "mode": "llm",
        "llm_timeout": 120.0, "llm_max_retries": 0, "temperature": 0.0, "max_answer_tokens": 32,
    })
    pipe = build_pipeline(settings, embedder=embedder, store=pipeline.store)
    try:
        first = pipe.ask("Who won the 2024 Belarusian election?")  # refused early, but the model is started for it
        assert first.notice is None and first.trace.model.endswith(".gguf"), first.notice
        process = pipe.llm_provider.local_server.process
        assert process is not None and process.poll() is None  # the pipeline started it itself

        process.kill()
        process.wait(timeout=10)

        second = pipe.ask(QUESTION)
        # The restarted model answered; its answer here ("...$1.5 billion, but does not specify a specific
        # amount of money") has an invented clause, which the grounding check may reject: no endpoint notice.
        assert second.notice is None or "not supported by the cited articles" in second.notice, second.notice
        assert second.trace.model.endswith(".gguf")
        assert second.trace.endpoint == f"http://127.0.0.1:{settings.local_llm_port}"
        assert second.trace.raw_answer and second.trace.timings_ms["first_token"] > 0  # the restarted model answered
        restarted = pipe.llm_provider.local_server.process
        assert restarted is not None and restarted.pid != process.pid and restarted.poll() is None
        assert len(second.sources) == 5
    finally:
        pipe.close()
    assert pipe.llm_provider.local_server.process is None


# ---- indexing killed mid-write ------------------------------------------------------------------------------
NEW_ARTICLE = """Minsk hosts a tractor trade fair

A trade fair for farm machinery opened in Minsk on Tuesday with 312 exhibitors from eleven countries, the organisers said.

Belarusian tractor maker MTZ showed a new electric tractor, and buyers from Kazakhstan signed the first orders.
"""
NEW_DOC = "900_tractor_fair"


@pytest.mark.llm
def test_stopping_rag_ui_with_sigterm_stops_the_bundled_model_server_it_started(tmp_path_factory, tmp_path):
    """A service manager stops the app with SIGTERM, tabs still open: it stops, and the llama.cpp
    server it started goes with it."""
    from gradio_client import Client

    from rag.local_llm import is_serving

    root = cli_seed_index(tmp_path_factory)
    llm_port = free_port()
    env = {"RAG_INDEX_DIR": str(root / "index"), "RAG_SEEDS_DIR": str(root / "seeds"), "RAG_DATA_DIR": str(tmp_path / "data"),
           "RAG_PORT": str(free_port()), "RAG_LOCAL_LLM_PORT": str(llm_port), "RAG_MODE": "llm"}
    process = start_rag(["ui"], cwd=tmp_path, **env)
    try:
        deadline = time.monotonic() + 180
        while not is_serving(llm_port):  # in LLM mode the app starts its model server at launch
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the bundled model server did not start"
            time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{env['RAG_PORT']}/", verbose=False)  # a browser tab's open connection
        assert "1.5 billion" in client.predict(QUESTION, "extractive", 5, 0.1, api_name="/chat")[0]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)  # without a limit on the graceful shutdown, it waited for the tab
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err, err
    assert not is_serving(llm_port)  # stopped, not orphaned


@pytest.fixture(scope="module")
def good_index(tmp_path_factory) -> tuple[Path, Path, str]:
    """(seeds folder, a good index folder to copy, its version): built by `rag index` before any damage."""
    root = cli_seed_index(tmp_path_factory)
    version = (root / "index" / CURRENT).read_text(encoding="utf-8").strip()
    return root / "seeds", root / "index", version


def building_folders(index_dir: Path) -> list[str]:
    return [p.name for p in index_dir.iterdir() if p.name.startswith(".building-")]


def kill_when(process: subprocess.Popen, ready, deadline_s: float = 180.0, poll_s: float = 0.0005) -> bool:
    """SIGKILL the process as soon as `ready()` is true; False if it ended first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll_s)
    process.kill()
    raise AssertionError("`rag index` neither started writing nor ended in time")


def assert_loads_and_answers(index_dir: Path, embedder, pipeline) -> IndexStore:
    store = IndexStore.load(index_dir, expected_model=pipeline.settings.embedding_model)
    pipe = build_pipeline(pipeline.settings.with_overrides(index_dir=index_dir), embedder=embedder)
    hits = pipe.search("How much money did Russia promise to lend Belarus?")
    assert hits and "$1.5 billion" in hits[0].chunk.text
    return store


@pytest.mark.integration
def test_indexing_killed_while_writing_keeps_the_previous_index(good_index, tmp_path, embedder, pipeline):
    seeds, good, good_version = good_index
    good_docs = set(IndexStore.load(good).documents)
    article = tmp_path / f"{NEW_DOC}.txt"
    article.write_text(NEW_ARTICLE, encoding="utf-8")
    args = ["index", str(article)]

    def attempt(index_dir: Path) -> subprocess.Popen:
        return start_rag(args, cwd=tmp_path, RAG_INDEX_DIR=str(index_dir), RAG_SEEDS_DIR=str(seeds))

    # 1. killed the moment the new version's folder appears
    index_dir = tmp_path / "index"
    shutil.copytree(good, index_dir)
    started = time.monotonic()
    process = attempt(index_dir)
    killed = kill_when(process, lambda: bool(building_folders(index_dir)))
    until_write = time.monotonic() - started
    assert killed and process.returncode == -signal.SIGKILL, process.stderr.read()
    assert building_folders(index_dir), "killed, but not while the new version was being written"
    store = assert_loads_and_answers(index_dir, embedder, pipeline)
    assert store.manifest.version == good_version and set(store.documents) == good_docs

    # 2. killed at a few random moments of other runs (each on a fresh copy), while
    # 3. the next `rag index` on the damaged folder completes and includes the new article
    final = attempt(index_dir)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    runs = []
    slowdown = 4 / (os.cpu_count() or 1)  # four runs at once share the CPUs: each takes longer than the lone one
    for n in range(3):
        copy = tmp_path / f"index-{n}"
        shutil.copytree(good, copy)
        runs.append((rng.uniform(0.2, until_write * max(1.0, slowdown) * 1.1), copy, attempt(copy)))
    for delay, copy, process in sorted(runs, key=lambda run: run[0]):
        ended_first = not kill_when(process, lambda: time.monotonic() - process.started >= delay, poll_s=0.005)
        store = assert_loads_and_answers(copy, embedder, pipeline)
        if store.manifest.version != good_version:  # the run got past the switch before the kill
            assert NEW_DOC in store.documents, f"seed {seed}, delay {delay:.2f}s"
        else:
            assert set(store.documents) == good_docs, f"seed {seed}, delay {delay:.2f}s"
        if ended_first:
            assert process.returncode == 0, process.stderr.read()

    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert "added 1" in out
    store = assert_loads_and_answers(index_dir, embedder, pipeline)
    assert set(store.documents) == good_docs | {NEW_DOC}
    assert store.manifest.version != good_version
    assert building_folders(index_dir) == []  # the interrupted build's leftovers are cleared


# ---- two `rag index` at once -------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_second_rag_index_is_refused_while_one_is_writing(good_index, tmp_path):
    seeds, good, _ = good_index
    index_dir = tmp_path / "index"
    shutil.copytree(good, index_dir)
    with index_lock(index_dir):
        result = run_rag(["index"], cwd=tmp_path, RAG_INDEX_DIR=str(index_dir), RAG_SEEDS_DIR=str(seeds))
    line = one_error_line(result, "another `rag index` is writing", str(index_dir))
    assert line.startswith("error: another `rag index` is writing ")
    assert result.stdout == ""


# ---- missing, truncated or corrupted index files: one line naming the file ------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x93NUMPY garbage \x00\xff" * 3)


def delete(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


DAMAGE = {
    "manifest.json missing": ("manifest.json", delete),
    "manifest.json truncated": ("manifest.json", truncate),
    "documents.jsonl missing": ("documents.jsonl", delete),
    "chunks.jsonl truncated": ("chunks.jsonl", truncate),
    "chunks.jsonl missing": ("chunks.jsonl", delete),
    "vectors.f32 truncated": ("vectors.f32", truncate),
    "vectors.f32 garbage": ("vectors.f32", garbage),
    "dense.faiss missing": ("dense.faiss", delete),
    "dense.faiss truncated": ("dense.faiss", truncate),
    "sentences.faiss missing": ("sentences.faiss", delete),
    "sentences.faiss truncated": ("sentences.faiss", truncate),
    "sentence_owner.i64 missing": ("sentence_owner.i64", delete),
    "sentence_owner.i64 truncated": ("sentence_owner.i64", truncate),
    "sentence_vectors.f32 garbage": ("sentence_vectors.f32", garbage),
    "bm25 folder missing": ("bm25", delete),
    "bm25 vocabulary garbage": ("bm25/vocab.index.json", garbage),
    "bm25 scores truncated": ("bm25/data.csc.index.npy", truncate),
}


@pytest.fixture(scope="module")
def damaged_searches(good_index, tmp_path_factory) -> dict[str, tuple[Path, tuple[int, str, str]]]:
    """Each damage applied to its own copy of the index, then `rag search "x"` on all copies at once."""
    seeds, good, version = good_index
    root = tmp_path_factory.mktemp("damaged")
    runs = {}
    for name, (relative, damage) in [*DAMAGE.items(), ("CURRENT points nowhere", (CURRENT, None))]:
        index_dir = root / name.replace(" ", "_")
        shutil.copytree(good, index_dir)
        if damage is None:
            (index_dir / CURRENT).write_text("v-20000101T000000-gone00", encoding="utf-8")
            named = index_dir / CURRENT
        else:
            named = index_dir / version / relative.split("/")[0] if relative.startswith("bm25") else index_dir / version / relative
            damage(index_dir / version / relative)
        runs[name] = (named, start_rag(["search", "x"], cwd=root, RAG_INDEX_DIR=str(index_dir), RAG_SEEDS_DIR=str(seeds)))
    results = {}
    for name, (named, process) in runs.items():
        out, err = process.communicate(timeout=300)
        results[name] = (named, (process.returncode, out, err))
    return results


@pytest.mark.integration
@pytest.mark.parametrize("damage", [*DAMAGE, "CURRENT points nowhere"])
def test_a_damaged_index_file_is_named_in_one_line_with_the_rebuild_command(damaged_searches, damage):
    named, result = damaged_searches[damage]
    line = one_error_line(result, "rag index --rebuild")
    assert str(named) in line, line
    assert result[1] == ""  # no partial results printed
