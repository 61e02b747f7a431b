"""Load: 32 chat sessions at once against the real app, each its own gradio_client, asking in a loop.

Every request must end as an answer or as Gradio's clear "queue is full" message; nothing else.
The figures (answers/s, latency percentiles, rejections) go to tests/artifacts/load_<backend>.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from gradio_client import Client

from llm_servers import Reply, Sleep, local_llm, scripted_llm  # noqa: F401
from rag.embedding import Embedder
from conftest import settings_for_test
from test_reliability import cli_seed_index
from ui_server import ARTIFACTS, serve_app, ui_pipeline

pytestmark = pytest.mark.integration

SESSIONS = 32
SECONDS = float(os.environ.get("RAG_LOAD_SECONDS", "60"))  # how long the sessions keep asking
LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
QUESTIONS = [
    LOAN_QUESTION,
    "Where did Putin and Lukashenko meet in September 2020?",
    "Who is Dmitri Trenin and what did he say about Lukashenko?",
    "Why did the EU prepare sanctions on Belarus in May 2021?",
]
BUSY = "Queue is full"  # gradio_client's QueueError for Gradio's queue_full message


GRACE = 10.0  # after the asking time, seconds the requests still in flight get to finish before they are cancelled
SCRIPTED_GRACE = 30.0  # ...with the fast scripted endpoint, long enough for all of them


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, completed answers only
    busy: int = 0
    issued: int = 0
    unfinished_waits: list[float] = field(default_factory=list)  # seconds waited by requests cancelled at the end
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def outcome(job, question: str, check) -> str | None:
    """None for a good answer, "busy" for Gradio's queue-full message, else what went wrong."""
    try:
        answer, sources = job.result()
        return check(question, answer, sources)
    except Exception as exc:  # noqa: BLE001 - gradio_client raises QueueError/AppError; any other is counted too
        return "busy" if BUSY in str(exc) else f"{type(exc).__name__}: {exc}"


def session(url: str, questions: list[str], check, start: threading.Barrier, clock: dict, tally: Tally, n: int,
            grace: float):
    try:
        client = Client(url, verbose=False)
    except Exception as exc:  # noqa: BLE001 - a session that cannot even connect is an error to count
        with tally.lock:
            tally.errors.append(f"connect: {exc!r}")
        start.abort()
        raise
    start.wait()
    i = n
    while time.monotonic() < clock["stop"]:
        question = questions[i % len(questions)]
        i += 1
        with tally.lock:
            tally.issued += 1
        started = time.monotonic()
        job = client.submit(question, "llm", 5, 0.1, api_name="/chat")
        while not job.done() and time.monotonic() < clock["stop"] + grace:
            time.sleep(0.02)
        if not job.done():  # the run is over: withdraw it, and report how long it had waited
            with contextlib.suppress(Exception):  # Gradio may be slow to acknowledge a cancel of a running event
                job.cancel()
            with tally.lock:
                tally.unfinished_waits.append(time.monotonic() - started)
            break
        problem = outcome(job, question, check)
        with tally.lock:
            if problem is None:
                tally.latencies.append(time.monotonic() - started)
            elif problem == "busy":
                tally.busy += 1
            else:
                tally.errors.append(problem)
        if problem == "busy":
            time.sleep(0.5)  # a person would wait a moment before asking again
    client.close()


def run_load(url: str, questions: list[str], check, seconds: float = SECONDS, sessions: int = SESSIONS,
             grace: float = GRACE) -> dict:
    tally = Tally()
    start = threading.Barrier(sessions + 1)
    clock = {"stop": float("inf")}
    threads = [threading.Thread(target=session, args=(url, questions, check, start, clock, tally, n, grace), daemon=True)
               for n in range(sessions)]
    for t in threads:
        t.start()
    start.wait(timeout=120)  # every session connected: the clock starts
    began = time.monotonic()
    clock["stop"] = began + seconds
    for t in threads:
        t.join(timeout=seconds + grace + 60)
    assert not any(t.is_alive() for t in threads), "a session never came back"
    elapsed = time.monotonic() - began
    latencies = sorted(tally.latencies)
    waits = sorted(tally.unfinished_waits)
    return {
        "sessions": sessions,
        "asking_seconds": seconds,
        "grace_seconds": grace,
        "elapsed_seconds": round(elapsed, 1),
        "requests": tally.issued,
        "completed": len(latencies),
        "busy_rejections": tally.busy,
        "unfinished_at_end": len(waits),
        "unfinished_waited_s": [round(waits[0], 1), round(waits[-1], 1)] if waits else None,
        "other_errors": len(tally.errors),
        "error_samples": tally.errors[:5],
        "answers_per_s": round(len(latencies) / elapsed, 2),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2) if latencies else None,
        "latency_max_s": round(latencies[-1], 2) if latencies else None,
        "cpus": os.cpu_count(),
    }


def record(backend: str, figures: dict, pipeline) -> Path:
    s = pipeline.settings
    figures = {"backend": backend, **figures, "concurrency_limit": s.concurrency_limit, "max_queue": s.max_queue,
               "embedding_runtime": pipeline.embedder.runtime_in_use, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"load_{backend}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return path


def assert_sound(figures: dict) -> None:
    assert figures["other_errors"] == 0, figures["error_samples"]
    # every request was answered or told the queue is full (or was still waiting when the run ended)
    assert figures["completed"] + figures["busy_rejections"] + figures["unfinished_at_end"] == figures["requests"]
    assert figures["completed"] > 0


@pytest.fixture(scope="module")
def onnx_settings(tmp_path_factory):
    """The index `rag index` builds, and the embedder `rag ui` uses with it (ONNX Runtime, loaded once)."""
    root = cli_seed_index(tmp_path_factory)
    settings = settings_for_test(index_dir=root / "index", seeds_dir=root / "seeds")
    embedder = Embedder(settings.embedding_model, settings.embedding_batch_size, onnx_cache=settings.index_dir / "onnx")
    assert embedder.runtime_in_use == "onnx"
    return settings, embedder


def loan_answer(question: str, answer: str, sources: str) -> str | None:
    if "1.5 billion" not in answer or 'class="source' not in sources:
        return f"unexpected answer to {question!r}: {answer[:120]!r}"
    return None


def any_answer(question: str, answer: str, sources: str) -> str | None:
    if not answer.strip() or 'class="source' not in sources:
        return f"empty answer to {question!r}: {answer[:120]!r}"
    return None


def test_32_sessions_against_the_scripted_endpoint(onnx_settings, scripted_llm, tmp_path):
    settings, embedder = onnx_settings
    scripted_llm.always(Sleep(0.2, Reply("Russia promised to lend Belarus $1.5 billion [1].")))
    pipe = ui_pipeline(settings, embedder, tmp_path / "data", scripted_llm.base_url, mode="llm", llm_timeout=30.0)
    with serve_app(pipe) as app:
        figures = run_load(app.url, [LOAN_QUESTION], loan_answer, grace=SCRIPTED_GRACE)
    path = record("scripted", figures, pipe)
    assert_sound(figures)
    assert figures["unfinished_at_end"] == 0, figures  # a fast endpoint: everything in flight finished
    assert len(scripted_llm.requests) >= figures["completed"]  # each answer went through the endpoint
    assert path.is_file()


def test_an_overflowing_queue_gives_the_busy_message_not_an_error(onnx_settings, scripted_llm, tmp_path):
    """A deliberately small queue: the extra sessions are told the queue is full, and nothing breaks."""
    settings, embedder = onnx_settings
    scripted_llm.always(Sleep(0.5, Reply("Russia promised to lend Belarus $1.5 billion [1].")))
    pipe = ui_pipeline(settings, embedder, tmp_path / "data", scripted_llm.base_url, mode="llm", llm_timeout=30.0,
                       concurrency_limit=1, max_queue=2)
    with serve_app(pipe) as app:
        figures = run_load(app.url, [LOAN_QUESTION], loan_answer, seconds=8, grace=SCRIPTED_GRACE)
        assert Client(app.url, verbose=False).predict(LOAN_QUESTION, "llm", 5, 0.1, api_name="/chat")[0]  # still serving
    assert_sound(figures)
    assert figures["busy_rejections"] > 0 and figures["unfinished_at_end"] == 0, figures


@pytest.mark.llm
def test_32_sessions_against_the_bundled_model(onnx_settings, local_llm, tmp_path):
    settings, embedder = onnx_settings
    pipe = ui_pipeline(settings, embedder, tmp_path / "data", None, mode="llm", local_llm_port=urlsplit(local_llm).port,
                       llm_timeout=300.0)
    with serve_app(pipe) as app:
        figures = run_load(app.url, QUESTIONS, any_answer)
    path = record("bundled", figures, pipe)
    assert_sound(figures)
    assert path.is_file()


class CountingEmbedder:
    """The real embedder, counting the texts the pipeline asks it to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.embedded: list[str] = []

    def encode_documents(self, texts):
        self.embedded += list(texts)
        return self.inner.encode_documents(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_repeated_question_does_not_re_embed_its_passages(onnx_settings, scripted_llm, tmp_path):
    """What keeps the load figures up: the grounding check embeds a passage, and the refusal check a
    word, once, not once per question."""
    settings, embedder = onnx_settings
    scripted_llm.always(Reply("Russia promised to lend Belarus $1.5 billion [1]."))
    pipe = ui_pipeline(settings, CountingEmbedder(embedder), tmp_path / "data", scripted_llm.base_url, mode="llm")
    first = pipe.ask(LOAN_QUESTION)
    assert not first.refused and first.sentences[0].supported
    first_count = len(pipe.embedder.embedded)
    assert first_count > 10  # the answer's sentence, and every sentence and passage of the five sources
    pipe.embedder.embedded.clear()
    second = pipe.ask(LOAN_QUESTION)
    assert pipe.embedder.embedded == [s.text for s in second.sentences]  # only the new answer's sentences
    assert second.sentences[0].supported == first.sentences[0].supported
    assert second.sentences[0].reason == first.sentences[0].reason
