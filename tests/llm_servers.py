"""LLM servers for tests: a scripted OpenAI-compatible HTTP server, and the real bundled llama.cpp server.

Import the fixtures into a test module with
    from llm_servers import scripted_llm, local_llm  # noqa: F401
(pytest puts tests/ on sys.path, so this module imports by its bare name). `scripted_pipeline`
also needs `scripted_llm` imported beside it; `pipeline_for()` builds a Pipeline by hand.

`ScriptedLLM` is a real HTTP server on 127.0.0.1 speaking enough of the OpenAI API for the
SDK: GET /v1/models and POST /v1/chat/completions, streamed (SSE) or not. Each chat request
takes the next behaviour from the test's script (`Reply`, `Fail`, `Sleep`, `Cut`) and is
recorded (path, headers, JSON body) so a test can read the prompt it was sent.
"""

from __future__ import annotations

import atexit
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

MODEL_ID = "scripted-model"


# ---- behaviours ---------------------------------------------------------------------------------
@dataclass
class Reply:
    """Answer with `text`: streamed in word pieces (or the given `pieces`), then finish_reason 'stop' and [DONE]."""

    text: str = ""
    pieces: list[str] | None = None
    finish: bool = True  # False: a clean stream that never sends a finish_reason
    reason: str = "stop"  # "length": the model ran out of tokens

    def split(self) -> list[str]:
        return self.pieces if self.pieces is not None else re.findall(r"\S+\s*|\s+", self.text)


@dataclass
class Fail:
    """An HTTP error with an OpenAI-style error body; `echo_auth` puts the received Authorization header in it."""

    status: int = 500
    message: str = "scripted failure"
    echo_auth: bool = False


@dataclass
class Sleep:
    """Say nothing for `seconds` (no headers either), then do `then`."""

    seconds: float
    then: Reply | Fail = field(default_factory=lambda: Reply("late answer"))


@dataclass
class Cut:
    """Send these pieces as stream chunks, then close the connection mid-body (no finish_reason, no [DONE])."""

    pieces: list[str] = field(default_factory=lambda: ["Russia ", "would "])


Behaviour = Reply | Fail | Sleep | Cut

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 404: "not_found_error", 429: "rate_limit_exceeded"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])


# ---- the server ---------------------------------------------------------------------------------------
class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client dropped a kept-alive connection or gave up waiting (timeout tests)
        super().handle_error(request, client_address)


class ScriptedLLM:
    """An OpenAI-compatible server whose chat answers follow a per-test script."""

    def __init__(self) -> None:
        self.script: deque[Behaviour] = deque()
        self.default: Behaviour | None = None  # used when the script is empty; None: HTTP 500 "unscripted"
        self.requests: list[Received] = []  # chat completion requests, in arrival order
        self.model_requests = 0
        self.unscripted = 0  # chat requests that found nothing scripted
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # scripting
    def then(self, *behaviours: Behaviour) -> ScriptedLLM:
        self.script.extend(behaviours)
        return self

    def reply(self, text: str, **kwargs) -> ScriptedLLM:
        return self.then(Reply(text, **kwargs))

    def always(self, behaviour: Behaviour) -> ScriptedLLM:
        self.default = behaviour
        return self

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.default = None
            self.requests.clear()
            self.model_requests = 0
            self.unscripted = 0

    def close(self) -> None:
        self._stop.set()  # wakes sleeping handlers
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict, path: str, headers: dict) -> Behaviour | None:
        with self._lock:
            self.requests.append(Received(path, headers, body))
            if self.script:
                return self.script.popleft()
            if self.default is None:
                self.unscripted += 1
            return self.default

    def _handler_class(self):
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    with scripted._lock:
                        scripted.model_requests += 1
                    created = int(time.time())
                    self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": created, "owned_by": "tests"}]})
                else:
                    self._json(404, _error(404, f"no route {self.path}"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, _error(404, f"no route {self.path}"))
                    return
                body = json.loads(raw or b"{}")
                behaviour = scripted._next(body, self.path, {k.lower(): v for k, v in self.headers.items()})
                try:
                    self._perform(behaviour, body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

            def _perform(self, behaviour: Behaviour | None, body: dict) -> None:
                if behaviour is None:
                    self._json(500, _error(500, "ScriptedLLM: nothing scripted for this request"))
                elif isinstance(behaviour, Sleep):
                    if scripted._stop.wait(behaviour.seconds):
                        self.close_connection = True
                        return
                    self._perform(behaviour.then, body)
                elif isinstance(behaviour, Fail):
                    message = behaviour.message
                    if behaviour.echo_auth:
                        message += f" (you sent {self.headers.get('Authorization')})"
                    self._json(behaviour.status, _error(behaviour.status, message))
                elif isinstance(behaviour, Cut):
                    self._start_stream()
                    for piece in behaviour.pieces:
                        self._chunk(_sse(_chunk_json(piece, None)))
                    self.wfile.flush()
                    # no terminating zero-length chunk: the body breaks off mid-message
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif body.get("stream"):
                    self._start_stream()
                    for i, piece in enumerate(behaviour.split()):
                        self._chunk(_sse(_chunk_json(piece, None, role=i == 0)))
                    if behaviour.finish:
                        self._chunk(_sse(_chunk_json("", behaviour.reason)))
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                else:
                    n = len(behaviour.text.split())
                    self._json(200, {
                        "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": MODEL_ID,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": behaviour.text},
                                     "finish_reason": behaviour.reason if behaviour.finish else None}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n},
                    })

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _start_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler


def _error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": None, "code": str(status)}}


def _chunk_json(piece: str, finish_reason: str | None, role: bool = False) -> dict:
    delta = {"content": piece} if piece else {}
    if role:
        delta["role"] = "assistant"
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- fixtures ---------------------------------------------------------------------------------------
# Fixtures are imported by name into test modules, so each depends only on conftest's or on one imported with it.
_SCRIPTED: ScriptedLLM | None = None
LOCAL_SERVERS: dict[str, object] = {}  # base_url -> the LocalLLMServer the `local_llm` fixture started


def scripted_server() -> ScriptedLLM:
    """The one scripted server of the test session, started on first use."""
    global _SCRIPTED
    if _SCRIPTED is None:
        _SCRIPTED = ScriptedLLM()
        atexit.register(_SCRIPTED.close)
    return _SCRIPTED


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    """The session's scripted server, with an empty script and no recorded requests."""
    server = scripted_server()
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory) -> str:
    """Base URL (http://127.0.0.1:PORT/v1) of the real bundled llama.cpp server (SmolLM2-135M), started once.

    `LOCAL_SERVERS[base_url]` is the LocalLLMServer that owns the process.
    """
    from rag.local_llm import LocalLLMServer
    from rag.settings import Settings

    data_dir: Path = tmp_path_factory.mktemp("local-llm")
    server = LocalLLMServer(Settings(_env_file=None, local_llm_port=free_port(), data_dir=data_dir))
    server.ensure_running()
    assert server.process is not None, "the fixture must own the server it starts"
    LOCAL_SERVERS[server.base_url] = server
    yield server.base_url
    server.stop()
    LOCAL_SERVERS.pop(server.base_url, None)


def pipeline_for(seed_settings, embedder, base_url: str | None, store=None, **overrides):
    """A Pipeline over the session seed index talking to `base_url`, sharing the session's model (and store)."""
    from rag.factory import build_pipeline

    values = {"openai_base_url": base_url, "llm_timeout": 2.0, "llm_max_retries": 0} | overrides
    return build_pipeline(seed_settings.with_overrides(**values), embedder=embedder, store=store)


@pytest.fixture
def scripted_pipeline(scripted_llm, seed_index, embedder, pipeline):
    """A factory: Pipeline(**overrides) over the seed index, answering through the scripted server."""
    made = []

    def make(**overrides):
        pipe = pipeline_for(seed_index, embedder, scripted_llm.base_url, store=pipeline.store, **overrides)
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.close()
