"""The OpenAI-compatible API inside the running chat app, driven by the official `openai` client, and
the MCP server over stdio, driven by the `mcp` SDK's own client."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
import httpx
import openai
import pytest

from ui_server import serve_app, ui_pipeline

KEY = "api-key-for-tests"
LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
MARKER = re.compile(r"\[(\d+)\]")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(seed_index, embedder, pipeline, tmp_path_factory):
    pipe = ui_pipeline(seed_index, embedder, tmp_path_factory.mktemp("api-data"), None, store=pipeline.store, api_key=KEY)
    with serve_app(pipe) as running:
        yield running


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def check_sources(content: str, extra: dict) -> None:
    """Every [n] in the answer is sources[n-1], and the source carries what a client shows."""
    sources = extra["sources"]
    cited = {int(n) for n in MARKER.findall(content)}
    assert cited and cited <= set(range(1, len(sources) + 1))
    for source in sources:
        assert {"rank", "doc_id", "chunk_id", "title", "date", "url", "text", "start", "end"} <= set(source)
    assert any("$1.5 billion" in sources[n - 1]["text"] for n in cited)


def test_the_models_are_the_answer_modes(client):
    assert {m.id for m in client.models.list().data} == {"articles", "articles-llm", "articles-extractive"}


def test_a_plain_answer_carries_markers_and_its_sources(client):
    response = client.chat.completions.create(model="articles-extractive", messages=[{"role": "user", "content": LOAN_QUESTION}])
    content = response.choices[0].message.content
    assert "$1.5 billion" in content and response.choices[0].finish_reason == "stop"
    check_sources(content, response.model_extra)
    rag = response.model_extra["rag"]
    assert rag["refused"] is False and rag["mode"] == "extractive" and re.fullmatch(r"[0-9a-f]{32}", rag["trace_id"])
    assert all(s["supported"] for s in rag["sentences"])


def test_a_streamed_answer_joins_to_the_checked_answer_and_ends_with_the_sources(client):
    stream = client.chat.completions.create(model="articles-extractive", stream=True, temperature=0.2, top_p=0.9,
                                            max_tokens=200, user="student-7",
                                            messages=[{"role": "user", "content": LOAN_QUESTION}])
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and len(chunks) >= 3  # role, sentence(s), end
    check_sources(content, last.model_extra)
    plain = client.chat.completions.create(model="articles-extractive", messages=[{"role": "user", "content": LOAN_QUESTION}])
    assert content == plain.choices[0].message.content  # the same checked answer, only cut into pieces


def test_a_follow_up_is_read_with_the_conversation(app, client):
    messages = [{"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Who is Dmitri Trenin?"},
                {"role": "assistant", "content": "He heads the Carnegie Moscow Center [1]."},
                {"role": "user", "content": "What did he say about Lukashenko?"}]
    response = client.chat.completions.create(model="articles-extractive", messages=messages)
    trace_id = response.model_extra["rag"]["trace_id"]
    record = httpx.get(f"{app.url}/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    trace = record["trace"]["trace"]
    assert trace["history_turns"] == 1 and trace["rewrite"] == "rules" and "Trenin" in trace["rewritten_question"]
    assert any("Trenin" in s["text"] for s in response.model_extra["sources"])


def test_a_wrong_key_gets_401_in_openai_format(app):
    wrong = openai.OpenAI(base_url=f"{app.url}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="articles", messages=[{"role": "user", "content": LOAN_QUESTION}])
    error = caught.value.body
    assert caught.value.status_code == 401 and error["code"] == "invalid_api_key" and "RAG_API_KEY" in error["message"]
    assert KEY not in str(caught.value) and "not-the-key" not in str(caught.value)


@pytest.mark.parametrize("messages, expected", [
    ([{"role": "user", "content": "   "}], "the question is empty"),
    ([{"role": "assistant", "content": "Hello"}], "the last message must be the user's question"),
    ([], "the last message must be the user's question"),
])
def test_a_question_that_cannot_be_answered_gets_400_with_a_message(client, messages, expected):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="articles-extractive", messages=messages)
    assert caught.value.status_code == 400 and expected in caught.value.body["message"]


def test_an_unknown_model_gets_404_naming_the_models(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": LOAN_QUESTION}])
    assert "articles-extractive" in caught.value.body["message"]


# ---- MCP over stdio -------------------------------------------------------------------------------------------
def mcp_session_results(seed_index) -> dict:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAG_"))}
    env |= {"RAG_INDEX_DIR": str(seed_index.index_dir), "RAG_MODE": "extractive", "HF_HUB_OFFLINE": "1"}
    server = StdioServerParameters(command=str(Path(sys.executable).with_name("rag")), args=["mcp"], env=env)

    async def run() -> dict:
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            found = await session.call_tool("search_articles", {"query": LOAN_QUESTION, "top_k": 3})
            answered = await session.call_tool("ask", {"question": LOAN_QUESTION, "mode": "extractive"})
            documents = await session.call_tool("list_documents", {})
            first = found.structured_content["result"][0]
            passage = await session.call_tool("get_passage", {"chunk_id": first["chunk_id"]})
            missing = await session.call_tool("get_passage", {"chunk_id": "no-such-chunk"})
            resources = await session.list_resources()
            return {"tools": tools, "found": found, "answered": answered, "documents": documents, "passage": passage,
                    "missing": missing, "resources": resources}

    return anyio.run(run)


def test_the_mcp_server_over_stdio_searches_and_answers_with_sources(seed_index):
    got = mcp_session_results(seed_index)
    tools = {t.name: t for t in got["tools"].tools}
    assert set(tools) == {"search_articles", "ask", "get_passage", "list_documents"}
    assert all(len(t.description) > 60 for t in tools.values())  # tells an agent when to use it
    found = got["found"].structured_content["result"]
    assert len(found) == 3 and "$1.5 billion" in found[0]["text"] and found[0]["chunk_id"] and found[0]["doc_id"]
    answer = got["answered"].structured_content
    assert not answer["refused"] and "$1.5 billion" in answer["answer"]
    cited = {int(n) for n in MARKER.findall(answer["answer"])}
    assert cited and all("text" in answer["sources"][n - 1] for n in cited)
    documents = got["documents"].structured_content["result"]
    assert len(documents) == 5 and all(d["passages"] > 0 for d in documents)
    assert got["passage"].structured_content["text"] == found[0]["text"]
    assert got["missing"].is_error and "no passage 'no-such-chunk'" in got["missing"].content[0].text
    assert {str(r.uri) for r in got["resources"].resources} == {f"article://{d['doc_id']}" for d in documents}


# ---- `rag api` alone: the same API, and MCP over streamable HTTP ----------------------------------------------
@pytest.fixture(scope="module")
def api_server(seed_index, tmp_path_factory):
    import subprocess
    import time

    from llm_servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAG_"))}
    env |= {"RAG_INDEX_DIR": str(seed_index.index_dir), "RAG_MODE": "extractive", "RAG_API_KEY": KEY, "HF_HUB_OFFLINE": "1",
            "RAG_DATA_DIR": str(tmp_path_factory.mktemp("api-alone"))}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("rag")), "api", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"`rag api` did not start: {proc.stderr.read()}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_rag_api_alone_answers_openai_clients_and_mcp_clients_over_http(api_server):
    from mcp import ClientSession
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    response = openai.OpenAI(base_url=f"{api_server}/v1", api_key=KEY, max_retries=0).chat.completions.create(
        model="articles", messages=[{"role": "user", "content": LOAN_QUESTION}])
    check_sources(response.choices[0].message.content, response.model_extra)

    async def tools() -> set[str]:
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"})
        async with client, streamable_http_client(f"{api_server}/mcp", http_client=client) as streams:
            async with ClientSession(*streams[:2]) as session:
                await session.initialize()
                return {t.name for t in (await session.list_tools()).tools}

    assert anyio.run(tools) == {"search_articles", "ask", "get_passage", "list_documents"}
    refused = httpx.post(f"{api_server}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_beyond_the_chat_queue_a_client_is_told_to_come_back():
    from types import SimpleNamespace

    from rag.api import ApiError, ChatService
    from rag.settings import Settings

    service = ChatService(SimpleNamespace(settings=Settings(_env_file=None, concurrency_limit=1, max_queue=1)), feedback=None)

    async def crowd() -> list[str]:
        outcomes = []
        release = anyio.Event()

        async def ask(name: str) -> None:
            try:
                async with service.turn():
                    outcomes.append(f"{name} answered")
                    await release.wait()
            except ApiError as exc:
                outcomes.append(f"{name} {exc.status} {exc.code}")

        async with anyio.create_task_group() as group:
            group.start_soon(ask, "first")  # answering
            await anyio.sleep(0.05)
            group.start_soon(ask, "second")  # waits in the queue
            await anyio.sleep(0.05)
            await ask("third")  # the queue is full
            release.set()
        return outcomes

    assert anyio.run(crowd) == ["first answered", "third 429 queue_full", "second answered"]
