"""rag/local_llm.py: the bundled llama.cpp server, started, reused and stopped for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from llm_servers import LOCAL_SERVERS, free_port, local_llm  # noqa: F401
from rag.errors import EndpointError
from rag.local_llm import BUNDLED_GGUF, LocalLLMServer, bundled_gguf, gguf_path, is_serving
from rag.settings import Settings

pytestmark = pytest.mark.llm


def settings(tmp_path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **values)


def test_bundled_gguf_is_found():
    path = bundled_gguf()
    assert path is not None and path.is_file()
    assert path.name == BUNDLED_GGUF
    assert path.read_bytes()[:4] == b"GGUF"  # the real model file, not a placeholder
    assert gguf_path(Settings(_env_file=None)) == path


def test_the_server_answers_models(local_llm):
    with urllib.request.urlopen(f"{local_llm}/models", timeout=5) as response:
        assert response.status == 200
        models = json.load(response)["data"]
    assert len(models) == 1 and models[0]["id"].endswith(BUNDLED_GGUF)
    assert is_serving(urlsplit(local_llm).port)


def test_a_second_server_on_the_same_port_reuses_the_running_one(local_llm, tmp_path):
    owner = LOCAL_SERVERS[local_llm]
    second = LocalLLMServer(settings(tmp_path, local_llm_port=urlsplit(local_llm).port))
    assert second.ensure_running() == local_llm
    assert second.process is None  # nothing started
    second.stop()  # stopping it must not stop the one it does not own
    assert owner.process is not None and owner.process.poll() is None
    assert second.alive() and is_serving(owner.port)


def test_stop_stops_the_server_it_started(local_llm, tmp_path):
    server = LocalLLMServer(settings(tmp_path, local_llm_port=free_port()))
    try:
        url = server.ensure_running()
        assert url == f"http://127.0.0.1:{server.port}/v1"
        process = server.process
        assert process is not None and process.poll() is None and server.alive()
        assert server.command(bundled_gguf())[1:3] == ["-m", "llama_cpp.server"]
    finally:
        server.stop()
    assert server.process is None
    assert process.returncode is not None  # the process is gone...
    assert not is_serving(server.port)  # ...and so is the port
    assert (tmp_path / "data" / "llama-server.log").is_file()
    assert is_serving(urlsplit(local_llm).port)  # the session's server is untouched


def test_a_missing_gguf_path_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "models" / "nope.gguf"
    monkeypatch.setenv("RAG_LOCAL_GGUF", str(missing))
    server = LocalLLMServer(settings(tmp_path, local_llm_port=free_port()))
    with pytest.raises(EndpointError) as caught:
        server.ensure_running()
    assert str(missing) in str(caught.value) and "RAG_LOCAL_GGUF" in str(caught.value)
    assert server.process is None


def test_a_broken_gguf_file_reports_the_exit_and_the_log(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all")
    server = LocalLLMServer(settings(tmp_path, local_llm_port=free_port(), local_gguf=broken, local_llm_startup_timeout=60))
    with pytest.raises(EndpointError, match="exited with code") as caught:
        server.ensure_running()
    assert str(tmp_path / "data" / "llama-server.log") in str(caught.value)
    assert not is_serving(server.port)


# ---- `rag serve-llm`, as a user runs it ---------------------------------------------------------------
def serve_llm(port: int, tmp_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAG_"))}
    env |= {"HF_HUB_OFFLINE": "1", "RAG_DATA_DIR": str(tmp_path / "data")}
    rag = Path(sys.executable).with_name("rag")
    return subprocess.Popen([str(rag), "serve-llm", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_llm_runs_the_bundled_model_until_stopped_and_takes_it_down(tmp_path):
    port = free_port()
    proc = serve_llm(port, tmp_path)
    try:
        line = proc.stdout.readline()  # printed once the server answers
        assert line.startswith(f"bundled LLM started at http://127.0.0.1:{port}/v1"), line + proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
            assert json.load(response)["data"][0]["id"].endswith(BUNDLED_GGUF)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not is_serving(port)  # the model server it started went down with it
    assert "Traceback" not in proc.stderr.read()


def test_serve_llm_leaves_a_running_server_alone(local_llm, tmp_path):
    port = urlsplit(local_llm).port
    proc = serve_llm(port, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith(f"bundled LLM already running at {local_llm}")
    assert is_serving(port)  # still serving: it was not ours to stop
