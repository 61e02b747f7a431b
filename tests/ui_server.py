"""The real chat app (create_app) served by uvicorn on 127.0.0.1 in a daemon thread, for UI tests.

    from ui_server import RunningApp, serve_app, ui_pipeline

`ui_pipeline` builds a Pipeline over an index with the session's embedding model, its data_dir in
tmp, extractive by default and an LLM endpoint (the scripted server) for tests that ask in llm mode.
`serve_app` is a context manager yielding the running app's base URL and pipeline.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from the app under test

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from llm_servers import free_port  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass
class RunningApp:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    pipeline: object  # rag.pipeline.Pipeline
    eval_dir: Path | None = None  # where the Evaluate tab looks for golden sets, when a test moved it

    @property
    def settings(self):
        return self.pipeline.settings

    @property
    def feedback_db(self) -> Path:
        return self.settings.data_dir / "feedback.sqlite"


def ui_pipeline(index_settings, embedder, data_dir: Path, base_url: str | None, store=None, **overrides):
    """A Pipeline over `index_settings.index_dir`, sharing the session's model (and `store`, if given)."""
    from rag.factory import build_pipeline

    values = {"data_dir": data_dir, "mode": "extractive", "openai_base_url": base_url,
              "llm_timeout": 2.0, "llm_max_retries": 0} | overrides
    return build_pipeline(index_settings.with_overrides(**values), embedder=embedder, store=store)


@contextlib.contextmanager
def serve_app(pipeline, startup_timeout: float = 60.0):
    """Run create_app(pipeline) under uvicorn until the block exits; yields a RunningApp."""
    from ui.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipeline), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, name=f"ui-app-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if not thread.is_alive():
                raise RuntimeError(f"the app server on port {port} stopped during startup")
            try:
                if httpx.get(url + "/", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app on {url} did not answer GET / within {startup_timeout:g}s")
            time.sleep(0.1)
        yield RunningApp(url, pipeline)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
