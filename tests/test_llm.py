"""rag/llm.py against a real HTTP server speaking the OpenAI API: streaming, and every failure as one clear line."""

from __future__ import annotations

import time

import pytest

from llm_servers import MODEL_ID, Cut, Fail, Reply, Sleep, free_port, scripted_llm  # noqa: F401
from rag.errors import EndpointError
from rag.llm import LOCAL_API_KEY, Generation, LLMClient, endpoint_host
from rag.settings import Settings

CANARY = "sk-canary-XYZ123"
MESSAGES = [{"role": "user", "content": "How much money did Russia promise to lend Belarus?"}]


def client(base_url: str, key: str | None = CANARY, timeout: float = 2.0, retries: int = 0, model: str | None = None) -> LLMClient:
    return LLMClient(base_url, key, model, Settings(_env_file=None, llm_timeout=timeout, llm_max_retries=retries))


def failure(llm: LLMClient) -> EndpointError:
    with pytest.raises(EndpointError) as caught:
        list(llm.stream(MESSAGES, Generation()))
    message = str(caught.value)
    assert CANARY not in message and CANARY not in repr(caught.value)
    return caught.value


def test_endpoint_host_keeps_scheme_host_and_port_only():
    assert endpoint_host("http://user:sk-secret@127.0.0.1:8080/v1?key=sk-2") == "http://127.0.0.1:8080"
    assert endpoint_host("https://api.example.com/v1") == "https://api.example.com"
    assert endpoint_host(None) == "api.openai.com"


def test_stream_yields_the_pieces_in_order_and_fills_the_generation(scripted_llm):
    scripted_llm.reply("", pieces=["Russia ", "would lend ", "Belarus ", "$1.5 billion", " [1]."])
    gen = Generation()
    pieces = list(client(scripted_llm.base_url).stream(MESSAGES, gen, max_tokens=50, temperature=0.3))
    assert pieces == ["Russia ", "would lend ", "Belarus ", "$1.5 billion", " [1]."]
    assert gen.text == "Russia would lend Belarus $1.5 billion [1]."
    assert gen.model == MODEL_ID  # no model configured: the first one the endpoint lists
    assert gen.finish_reason == "stop"
    assert gen.first_token_s is not None and 0 < gen.first_token_s <= gen.total_s < 2
    assert gen.usage["completion_pieces"] == 5
    (request,) = scripted_llm.requests
    assert request.body["stream"] is True and request.body["messages"] == MESSAGES
    assert request.body["model"] == MODEL_ID and request.body["max_tokens"] == 50 and request.body["temperature"] == 0.3
    assert request.headers["authorization"] == f"Bearer {CANARY}"


def test_first_token_time_is_measured_from_the_request(scripted_llm):
    scripted_llm.then(Sleep(0.4, Reply("Russia would lend Belarus $1.5 billion.")))
    gen = Generation()
    list(client(scripted_llm.base_url).stream(MESSAGES, gen))
    assert 0.35 <= gen.first_token_s < 1.5


def test_a_configured_model_is_used_without_listing(scripted_llm):
    scripted_llm.reply("ok")
    llm = client(scripted_llm.base_url, model="my-model")
    assert llm.complete(MESSAGES) == "ok"
    assert scripted_llm.requests[0].body["model"] == "my-model"
    assert scripted_llm.model_requests == 0


def test_no_key_sends_the_local_placeholder(scripted_llm):
    scripted_llm.reply("ok")
    client(scripted_llm.base_url, key=None).complete(MESSAGES)
    assert scripted_llm.requests[0].headers["authorization"] == f"Bearer {LOCAL_API_KEY}"


def test_http_500_names_the_endpoint_and_the_status(scripted_llm):
    scripted_llm.then(Fail(500, "internal error", echo_auth=True))
    message = str(failure(client(scripted_llm.base_url)))
    assert scripted_llm.host in message and "500" in message
    assert scripted_llm.requests[0].headers["authorization"] == f"Bearer {CANARY}"  # the key was sent (and echoed back)


def test_401_says_to_set_the_api_key(scripted_llm):
    scripted_llm.then(Fail(401, "Incorrect API key provided", echo_auth=True))
    error = failure(client(scripted_llm.base_url))
    assert "401" in str(error) and "OPENAI_API_KEY" in str(error) and scripted_llm.host in str(error)
    assert CANARY in str(error.__cause__)  # the server echoed the key; the translated message left it out


def test_429_says_rate_limited(scripted_llm):
    scripted_llm.then(Fail(429, "Rate limit reached", echo_auth=True))
    message = str(failure(client(scripted_llm.base_url)))
    assert "429" in message and "rate limit" in message and scripted_llm.host in message


def test_404_names_the_model(scripted_llm):
    scripted_llm.then(Fail(404, "model not found"))
    message = str(failure(client(scripted_llm.base_url, model="no-such-model")))
    assert "'no-such-model'" in message and "RAG_LLM_MODEL" in message


def test_the_sdk_retries_once_and_there_is_no_second_retry_loop(scripted_llm):
    scripted_llm.always(Fail(500))
    failure(client(scripted_llm.base_url, retries=1))
    assert len(scripted_llm.requests) == 2  # the first try and the SDK's one retry


def test_a_timeout_names_the_setting_and_returns_promptly(scripted_llm):
    scripted_llm.then(Sleep(5.0))
    started = time.perf_counter()
    message = str(failure(client(scripted_llm.base_url, timeout=1.0)))
    elapsed = time.perf_counter() - started
    assert "did not answer within 1s" in message and "RAG_LLM_TIMEOUT" in message and scripted_llm.host in message
    assert 0.9 <= elapsed < 1.6


def test_a_closed_port_cannot_be_reached():
    port = free_port()  # nothing listens there now
    message = str(failure(client(f"http://127.0.0.1:{port}/v1")))
    assert message.startswith(f"cannot reach the LLM endpoint http://127.0.0.1:{port}")
    assert "OPENAI_BASE_URL" in message


def test_a_cut_stream_is_an_error_not_a_short_answer(scripted_llm):
    scripted_llm.then(Cut(["Russia ", "would "]))
    gen = Generation()
    llm = client(scripted_llm.base_url)
    received = []
    with pytest.raises(EndpointError) as caught:
        for piece in llm.stream(MESSAGES, gen):
            received.append(piece)
    assert received == ["Russia ", "would "]  # what arrived was streamed...
    message = str(caught.value)
    assert "broke off the answer" in message and scripted_llm.host in message  # ...and the break is reported as such
    assert "cannot reach" not in message
    assert gen.finish_reason is None and gen.total_s > 0


def test_a_stream_that_ends_without_finishing_is_an_error(scripted_llm):
    scripted_llm.then(Reply("Russia would lend", finish=False))
    message = str(failure(client(scripted_llm.base_url)))
    assert "ended its stream without finishing" in message


def test_the_client_is_reused_across_calls(scripted_llm):
    scripted_llm.then(Reply("one"), Reply("two"))
    llm = client(scripted_llm.base_url)
    assert [llm.complete(MESSAGES), llm.complete(MESSAGES)] == ["one", "two"]
    assert scripted_llm.model_requests == 1  # the model name is asked for once


def test_the_scripted_server_also_answers_without_streaming(scripted_llm):
    """The test server itself: the SDK's non-streamed call parses its reply (a check on the fixture)."""
    from openai import OpenAI

    scripted_llm.reply("Russia would lend Belarus $1.5 billion [1].")
    sdk = OpenAI(base_url=scripted_llm.base_url, api_key="x", max_retries=0, timeout=2)
    completion = sdk.chat.completions.create(model=MODEL_ID, messages=MESSAGES)
    assert completion.choices[0].message.content == "Russia would lend Belarus $1.5 billion [1]."
    assert completion.choices[0].finish_reason == "stop" and completion.model == MODEL_ID
    assert [m.id for m in sdk.models.list().data] == [MODEL_ID]
    assert scripted_llm.requests[0].body.get("stream") in (None, False)


def test_unscripted_requests_fail_loudly(scripted_llm):
    message = str(failure(client(scripted_llm.base_url)))
    assert "500" in message and scripted_llm.unscripted == 1


def test_ping(scripted_llm):
    assert client(scripted_llm.base_url).ping()
    assert not client(f"http://127.0.0.1:{free_port()}/v1").ping()
