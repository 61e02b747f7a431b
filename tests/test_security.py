"""Security: the API key never leaves the process, the app binds to the loopback, basic auth guards
every page, no path reaches files outside the index, and everything written to disk is user-only.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from pydantic import SecretStr

from llm_servers import LOCAL_SERVERS, Fail, Reply, Sleep, free_port, local_llm, pipeline_for, scripted_llm  # noqa: F401
from rag.settings import Settings
from test_reliability import RAG, ROOT, cli_seed_index, rag_env, run_rag
from ui_server import serve_app, ui_pipeline

CANARY = "sk-canary-7f3a9c1e"
QUESTION = "How much money did Russia promise to lend Belarus?"
GOOD_REPLY = "Russia promised to lend Belarus $1.5 billion [1]."
LLM_TIMEOUT = 2.0
SCENARIOS = {
    "answer": Reply(GOOD_REPLY),
    "401": Fail(401, "Incorrect API key provided", echo_auth=True),  # the error body repeats the key it was sent
    "500": Fail(500, "internal error", echo_auth=True),
    "timeout": Sleep(LLM_TIMEOUT * 2.5, Fail(500, "late", echo_auth=True)),
}
TRACE_LINK = re.compile(r'href="(/trace/[0-9a-f]{32}\.json)"')


def assert_no_canary(where: str, data: str | bytes) -> None:
    """Neither the key nor a recognisable piece of it."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for needle in (CANARY, CANARY[3:], "7f3a9c1e"):
        assert needle not in text, f"the API key leaked into {where}"


def assert_key_was_sent(server) -> None:
    """The key did reach the endpoint: a test that never sends it would prove nothing."""
    assert server.requests and all(r.headers.get("authorization") == f"Bearer {CANARY}" for r in server.requests)


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory) -> Path:
    """`seeds/` and `index/` built by `rag index` (with its ONNX export); read-only."""
    return cli_seed_index(tmp_path_factory)


# ---- the canary key: (a) the CLI ------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_key_is_not_printed_by_rag_ask(cli_root, tmp_path, scripted_llm, scenario):
    scripted_llm.always(SCENARIOS[scenario])
    env = {"OPENAI_API_KEY": CANARY, "OPENAI_BASE_URL": scripted_llm.base_url, "RAG_INDEX_DIR": str(cli_root / "index"),
           "RAG_LLM_TIMEOUT": str(LLM_TIMEOUT), "RAG_LLM_MAX_RETRIES": "0", "RAG_DATA_DIR": str(tmp_path / "data")}
    runs = [["ask", QUESTION, "--json"], ["-v", "ask", QUESTION]]  # JSON, and the streamed answer with INFO logging
    processes = [subprocess.Popen([*RAG, *args], cwd=tmp_path, env=rag_env(**env), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for args in runs]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    for args, process, output in zip(runs, processes, outputs):
        assert process.returncode == 0, output.decode()
        assert_no_canary(f"`rag {' '.join(args)}` output", output)
    answer = json.loads(next(line for line in outputs[0].decode().splitlines() if line.startswith("{")))
    assert answer["sources"] and (answer["notice"] is None) == (scenario == "answer")
    if scenario != "answer":
        assert scripted_llm.host in answer["notice"]
    assert_key_was_sent(scripted_llm)


# ---- (b) Pipeline.ask and (f) logging at DEBUG ---------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_key_is_not_in_the_answer_the_trace_or_the_logs(seed_index, embedder, pipeline, scripted_llm, caplog,
                                                            monkeypatch, scenario):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    settings_key = Settings(_env_file=None).openai_api_key
    assert settings_key.get_secret_value() == CANARY and CANARY not in repr(settings_key)
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "rag"):
        caplog.set_level(logging.DEBUG, logger=name)
    scripted_llm.always(SCENARIOS[scenario])
    pipe = pipeline_for(seed_index, embedder, scripted_llm.base_url, store=pipeline.store, openai_api_key=settings_key,
                        llm_timeout=LLM_TIMEOUT)
    try:
        answer = pipe.ask(QUESTION)
    finally:
        pipe.close()
    assert_key_was_sent(scripted_llm)
    assert (answer.notice is None) == (scenario == "answer")
    assert_no_canary("answer.to_json()", json.dumps(answer.to_json(), ensure_ascii=False))
    assert_no_canary("the answer's repr", repr(answer))
    assert_no_canary("the trace", json.dumps(answer.trace.to_json()))
    assert_no_canary("the pipeline settings' repr", repr(pipe.settings) + str(pipe.settings.model_dump()))
    assert any(r.name.startswith("openai") and r.levelno == logging.DEBUG for r in caplog.records), "no DEBUG logs captured"
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records) + caplog.text
    assert_no_canary("the logs", logged)


# ---- (c) the UI and (d) the feedback database -------------------------------------------------------------------
@pytest.fixture(scope="module")
def canary_app(seed_index, embedder, pipeline, tmp_path_factory):
    from llm_servers import scripted_server

    data_dir = tmp_path_factory.mktemp("security-ui") / "data"
    pipe = ui_pipeline(seed_index, embedder, data_dir, scripted_server().base_url, store=pipeline.store,
                       openai_api_key=SecretStr(CANARY), llm_timeout=LLM_TIMEOUT)
    with serve_app(pipe) as running:
        yield running


@pytest.mark.integration
def test_the_key_is_not_in_the_ui_the_trace_the_config_or_the_feedback_database(canary_app, scripted_llm, caplog):
    caplog.set_level(logging.DEBUG)
    client = Client(canary_app.url, verbose=False)
    seen: list[tuple[str, str]] = []
    for scenario, behaviour in SCENARIOS.items():
        scripted_llm.always(behaviour)
        answer, sources = client.predict(QUESTION, "llm", 5, 0.1, api_name="/chat")
        assert "1.5 billion" in answer, (scenario, answer)
        (trace_url,) = TRACE_LINK.findall(sources)
        trace = httpx.get(canary_app.url + trace_url, timeout=10)
        assert trace.status_code == 200 and trace.json()["trace"]["mode"] == "llm"
        if scenario != "answer":
            assert scripted_llm.host in trace.json()["trace"]["notice"]
        seen += [(f"{scenario} answer", answer), (f"{scenario} sources", sources), (f"{scenario} trace", trace.text)]
    assert_key_was_sent(scripted_llm)
    for path in ("/", "/config", "/gradio_api/info", "/gradio_api/config"):
        response = httpx.get(canary_app.url + path, timeout=10)
        seen.append((f"GET {path} ({response.status_code})", response.text))
    assert any(path.startswith("GET /config (200)") for path, _ in seen)
    for where, text in seen:
        assert_no_canary(where, text)
    database = sorted(canary_app.feedback_db.parent.glob("feedback.sqlite*"))
    assert database and sum(p.stat().st_size for p in database) > 0
    for path in database:
        assert_no_canary(path.name, path.read_bytes())
    assert_no_canary("the server's logs", caplog.text)


# ---- (e) the evaluation outputs -----------------------------------------------------------------------------------
EVAL_FILES = ("results.jsonl", "summary.json", "report.html", "report.md")


@pytest.fixture(scope="module")
def eval_run(cli_root, tmp_path_factory):
    """`rag eval run --limit 2 --mode llm` with the canary key; the first answer is a 401 that echoes the key."""
    from llm_servers import scripted_server

    server = scripted_server()
    server.reset()
    server.then(Fail(401, "Incorrect API key provided", echo_auth=True)).always(Reply(GOOD_REPLY))
    root = tmp_path_factory.mktemp("security-eval")
    out = root / "out"
    result = run_rag(["eval", "run", "--golden", str(ROOT / "eval" / "golden.jsonl"), "--out", str(out), "--limit", "2",
                      "--mode", "llm"], cwd=root, timeout=300, OPENAI_API_KEY=CANARY, OPENAI_BASE_URL=server.base_url,
                     RAG_INDEX_DIR=str(cli_root / "index"), RAG_LLM_TIMEOUT=str(LLM_TIMEOUT), RAG_LLM_MAX_RETRIES="0")
    requests = list(server.requests)
    server.reset()
    assert result.returncode == 0, result.stderr
    return out, result, requests


@pytest.mark.integration
def test_the_key_is_not_in_the_evaluation_outputs(eval_run):
    out, result, requests = eval_run
    assert requests and all(r.headers.get("authorization") == f"Bearer {CANARY}" for r in requests)
    results = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(results) == 2 and "401" in json.dumps(results)  # the failure is recorded, the key is not
    for name in EVAL_FILES:
        assert_no_canary(name, (out / name).read_bytes())
    assert_no_canary("the eval command's output", result.stdout + result.stderr)


# ---- the bind address ------------------------------------------------------------------------------------------
def test_the_default_bind_address_is_the_loopback(monkeypatch):
    monkeypatch.delenv("RAG_HOST", raising=False)
    assert Settings(_env_file=None).host == "127.0.0.1"


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets in LISTEN state on `port`, from /proc/net/tcp and tcp6 (hex, as the kernel writes them)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as fh:
            for row in fh.read().splitlines()[1:]:
                fields = row.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":
                    found.append(address)
    return found


@pytest.mark.integration
def test_rag_ui_listens_on_the_loopback_only(cli_root, tmp_path, scripted_llm):
    port = free_port()
    env = {"RAG_INDEX_DIR": str(cli_root / "index"), "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_PORT": str(port),
           "RAG_MODE": "extractive", "OPENAI_BASE_URL": scripted_llm.base_url}
    process = subprocess.Popen([*RAG, "ui"], cwd=tmp_path, env=rag_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not listening_addresses(port):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "`rag ui` did not start listening"
            time.sleep(0.2)
        assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1 only: not 0.0.0.0, not an IPv6 address
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if ss.returncode == 0:  # the same answer from the socket statistics tool
            assert [line.split()[3] for line in ss.stdout.splitlines()] == [f"127.0.0.1:{port}"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert "Traceback" not in err, err


# ---- basic auth ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_app(seed_index, embedder, pipeline, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RAG_AUTH", "user:pass")
    auth = Settings(_env_file=None).auth  # read from the environment as `rag ui` reads it
    mp.undo()
    pipe = ui_pipeline(seed_index, embedder, tmp_path_factory.mktemp("auth-ui") / "data", None, store=pipeline.store, auth=auth)
    with serve_app(pipe) as running:
        yield running


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (no client-side normalising of ../ or %2F)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.integration
def test_without_credentials_the_app_refuses(auth_app):
    doc_id = next(iter(auth_app.pipeline.store.documents))
    status, page = raw_get(auth_app.url, "/")
    assert status == 200 and b'"auth_required":true' in page.replace(b" ", b"")  # Gradio's login page
    assert b"Russia" not in page  # no article text on it
    for path in ("/config", "/gradio_api/info", f"/article/{doc_id}", "/trace/" + "0" * 32 + ".json", "/v1/models"):
        status, body = raw_get(auth_app.url, path)
        assert status in (401, 403), (path, status, body[:200])
        assert b"Belarus" not in body
    api = httpx.post(auth_app.url + "/v1/chat/completions", timeout=10,  # no RAG_API_KEY: the API stays closed too
                     json={"model": "articles", "messages": [{"role": "user", "content": QUESTION}]})
    assert api.status_code == 401 and "RAG_API_KEY" in api.json()["error"]["message"] and "Belarus" not in api.text
    join = httpx.post(auth_app.url + "/gradio_api/queue/join", timeout=10,
                      json={"data": [QUESTION, "extractive", 5, 0.1], "fn_index": 0, "session_hash": "intruder"})
    assert join.status_code in (401, 403), join.text
    with pytest.raises(Exception):
        Client(auth_app.url, auth=("user", "wrong"), verbose=False)
    with pytest.raises(Exception):
        Client(auth_app.url, verbose=False).predict(QUESTION, "extractive", 5, 0.1, api_name="/chat")


@pytest.mark.integration
def test_with_credentials_the_app_answers_and_its_pages_open(auth_app):
    client = Client(auth_app.url, auth=("user", "pass"), verbose=False)
    answer, sources = client.predict(QUESTION, "extractive", 5, 0.1, api_name="/chat")
    assert "1.5 billion" in answer
    login = httpx.post(auth_app.url + "/login", data={"username": "user", "password": "pass"}, timeout=10)
    assert login.status_code == 200
    cookies = login.cookies
    (trace_url,) = TRACE_LINK.findall(sources)
    for path in ("/config", re.search(r'href="(/article/[^"?]+)', sources).group(1), trace_url):
        response = httpx.get(auth_app.url + path, cookies=cookies, timeout=10)
        assert response.status_code == 200, (path, response.status_code)


# ---- path traversal -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_app(seed_index, embedder, pipeline, tmp_path_factory):
    pipe = ui_pipeline(seed_index, embedder, tmp_path_factory.mktemp("traversal-ui") / "data", None, store=pipeline.store)
    with serve_app(pipe) as running:
        Client(running.url, verbose=False).predict(QUESTION, "extractive", 5, 0.1, api_name="/chat")  # the database exists
        yield running


def traversal_paths(app) -> list[str]:
    database = app.feedback_db.resolve()
    index_file = next((app.settings.index_dir).resolve().glob("v-*/manifest.json"))
    return [
        "/article/..%2F..%2Fetc%2Fpasswd",
        "/article/%2Fetc%2Fpasswd",
        "/article/....//....//etc/passwd",
        "/article/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/article/..%252F..%252Fetc%252Fpasswd",
        "/article/%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
        "/trace/..%2F..%2Fpyproject.toml.json",
        "/trace/%2e%2e%2f%2e%2e%2fpyproject.toml.json",
        "/file=/etc/passwd",
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../pyproject.toml",
        "/gradio_api/file=..%2F..%2Fpyproject.toml",
        f"/gradio_api/file={ROOT / 'pyproject.toml'}",
        f"/gradio_api/file={database}",
        f"/gradio_api/file={index_file}",
        "/static/../../../../etc/passwd",
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
    ]


@pytest.mark.integration
def test_no_path_reaches_files_outside_the_app(open_app):
    for path in traversal_paths(open_app):
        status, body = raw_get(open_app.url, path)
        assert status in (403, 404), (path, status, body[:200])
        for secret in (b"root:x:0:0", b"[build-system]", b"SQLite format", b"embedding_model"):
            assert secret not in body, (path, secret)


# ---- file permissions -------------------------------------------------------------------------------------------------
def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path, expected_files: int = 1) -> None:
    found = modes(root)
    wrong = {p: oct(m) for p, m in found.items() if m != (0o700 if (root / p).is_dir() else 0o600)}
    assert not wrong, f"readable by others under {root}: {wrong}"
    assert sum(not (root / p).is_dir() for p in found) >= expected_files


@pytest.mark.integration
def test_the_index_written_by_rag_index_is_user_only(cli_root):
    index_dir = cli_root / "index"
    assert any(p.name == "onnx" for p in index_dir.iterdir()) and list(index_dir.glob("v-*/bm25/*"))
    assert_private(index_dir, expected_files=15)


@pytest.mark.integration
def test_the_feedback_database_is_user_only(open_app):
    data_dir = open_app.feedback_db.parent
    assert open_app.feedback_db.is_file()
    assert_private(data_dir)


@pytest.mark.integration
def test_the_evaluation_outputs_are_user_only(eval_run):
    out, _, _ = eval_run
    assert {p.name for p in out.iterdir()} >= set(EVAL_FILES)
    assert_private(out, expected_files=4)


@pytest.mark.llm
def test_the_llama_server_log_is_user_only(local_llm):
    log = LOCAL_SERVERS[local_llm].settings.data_dir / "llama-server.log"
    assert log.is_file() and log.stat().st_size > 0
    assert stat.S_IMODE(log.stat().st_mode) == 0o600, oct(log.stat().st_mode)
