"""The chat app launched for real (uvicorn on 127.0.0.1) and called with gradio_client and plain HTTP."""

from __future__ import annotations

import html
import http.client
import json
import re
import sqlite3

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from llm_servers import Fail, scripted_llm, scripted_server  # noqa: F401 - scripted_llm is a fixture
from ui_server import serve_app, ui_pipeline

pytestmark = pytest.mark.integration

LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
CITE_LINK = re.compile(r'<a class="cite" href="(/article/[^"?#]+\?chunk=[^"#]+#passage)"[^>]*>\[(\d+)\]</a>')
TRACE_LINK = re.compile(r'href="(/trace/([0-9a-f]{32})\.json)"')
TRACEBACK = ("Traceback", 'File "', "RagError", "EndpointError", "InputError", "Exception")


@pytest.fixture(scope="module")
def app(seed_index, embedder, pipeline, tmp_path_factory):
    """The app over the seed index: extractive by default, llm mode answered by the scripted server."""
    pipe = ui_pipeline(seed_index, embedder, tmp_path_factory.mktemp("ui-app-data"), scripted_server().base_url,
                       store=pipeline.store)
    with serve_app(pipe) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def ask(client, question: str, mode: str = "extractive", top_k: int = 5) -> tuple[str, str]:
    answer, sources = client.predict(question, mode, top_k, 0.1, api_name="/chat")
    return answer, sources


def source_cards(sources: str) -> list[tuple[int, str, str]]:
    """(marker, css class, article link) of each source card, in page order."""
    cards = re.findall(r'<div class="(source(?: cited)?)" id="source-(\d+)">.*?<a href="(/article/[^"]+)"', sources, re.S)
    return [(int(n), cls, link) for cls, n, link in cards]


def get_raw(app, path: str) -> tuple[int, dict, bytes]:
    """GET with the path sent exactly as written (no client-side normalising of ../ or %2F)."""
    host, port = app.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_answer_links_each_marker_to_its_passage_and_lists_cited_sources_first(app, client):
    answer, sources = ask(client, LOAN_QUESTION)

    assert "$1.5 billion" in answer
    links = CITE_LINK.findall(answer)
    assert links and links[0][1] == "1", answer
    cards = source_cards(sources)
    assert cards[0][:2] == (1, "source cited"), cards
    assert cards[0][2] == html.unescape(links[0][0]), "the first card is the passage [1] links to"
    assert "Cited sources" in sources
    # the sentence the answer took from source 1 is highlighted in that card
    first_card = sources.split('id="source-2"')[0]
    assert re.search(r"<mark>[^<]*\$1\.5 billion[^<]*</mark>", first_card), first_card

    trace_path = TRACE_LINK.search(sources)
    assert trace_path, sources
    response = httpx.get(app.url + trace_path.group(1), timeout=10)
    assert response.status_code == 200
    record = response.json()
    assert record["answer_id"] == trace_path.group(2)
    assert record["question"] == LOAN_QUESTION
    assert record["trace"]["trace"]["question"] == LOAN_QUESTION
    assert record["trace"]["trace"]["mode"] == "extractive"
    assert record["trace"]["citations"][0]["marker"] == 1


def test_answer_is_stored_with_its_trace_in_the_feedback_database(app, client):
    answer, sources = ask(client, LOAN_QUESTION)
    answer_id = TRACE_LINK.search(sources).group(2)

    with sqlite3.connect(app.feedback_db) as db:
        row = db.execute("SELECT question, answer, rendered, trace FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
    assert row is not None, f"answer {answer_id} not in {app.feedback_db}"
    question, plain, rendered, trace = row
    assert question == LOAN_QUESTION
    assert "$1.5 billion" in plain and "[1]" in plain
    assert rendered == answer
    stored = json.loads(trace)
    assert stored["question"] == LOAN_QUESTION
    assert stored["sources"] and stored["trace"]["retrieved"]


def test_question_the_articles_do_not_answer_is_refused_with_the_closest_sources(client):
    answer, sources = ask(client, "Who won the 2024 Belarusian election?")

    assert answer.startswith("**Not found in the articles.**")
    assert 'class="cite"' not in answer
    cards = source_cards(sources)
    assert len(cards) == 5 and all(cls == "source" for _, cls, _ in cards)
    assert "Closest passages" in sources


def test_failing_endpoint_gives_an_extractive_answer_with_a_notice_naming_the_endpoint(app, client, scripted_llm):
    scripted_llm.always(Fail(500, "boom inside the model server"))

    answer, sources = ask(client, LOAN_QUESTION, mode="llm")

    assert scripted_llm.requests, "llm mode must have called the endpoint"
    assert "$1.5 billion" in answer and CITE_LINK.search(answer)
    assert f"127.0.0.1:{scripted_llm.port}" in answer
    assert "HTTP 500" in answer
    assert "extractive answer instead" in answer
    for text in (answer, sources):
        assert not any(marker in text for marker in TRACEBACK), text
    assert "boom inside the model server" not in answer  # one clear line, not the endpoint's raw body


def test_llm_answer_from_the_endpoint_is_shown_with_checked_citations(client, scripted_llm):
    scripted_llm.reply("Russia promised Belarus a government loan of $1.5 billion [1].")

    answer, sources = ask(client, LOAN_QUESTION, mode="llm")

    assert len(scripted_llm.requests) == 1
    assert answer.startswith("Russia promised Belarus a government loan of $1.5 billion")
    link = CITE_LINK.search(answer)
    assert link and link.group(2) == "1"
    assert "⚠" not in answer, "a sentence its passage supports is not flagged"
    assert source_cards(sources)[0][:2] == (1, "source cited")


@pytest.mark.parametrize("question, message", [
    ("", "the question is empty; type a question about the articles"),
    ("   \n\t ", "the question is empty; type a question about the articles"),
    ("x" * 2001, "the question is 2001 characters long; the limit is 2000 (RAG_MAX_QUESTION_CHARS)"),
])
def test_unusable_question_is_rejected_with_one_plain_sentence(app, client, question, message):
    assert app.settings.max_question_chars == 2000
    with pytest.raises(AppError) as raised:
        ask(client, question)
    assert str(raised.value) == message


def test_article_page_highlights_the_cited_passage_under_a_content_security_policy(app, client):
    answer, _ = ask(client, LOAN_QUESTION)
    link = html.unescape(CITE_LINK.search(answer).group(1))
    chunk_id = re.search(r"chunk=([^#&]+)", link).group(1)
    chunk = next(c for c in app.pipeline.store.chunks if c.chunk_id == chunk_id)

    response = httpx.get(app.url + link, timeout=10)

    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    marked = re.findall(r'<mark id="passage">(.*?)</mark>', response.text, re.S)
    assert len(marked) == 1
    assert html.unescape(marked[0]) == chunk.text
    assert "$1.5 billion" in marked[0]
    assert "<script" not in response.text.lower()


def test_article_page_without_a_known_chunk_shows_the_article_unmarked(app):
    doc_id = next(iter(app.pipeline.store.documents))

    response = httpx.get(f"{app.url}/article/{doc_id}?chunk=not-a-chunk", timeout=10)

    assert response.status_code == 200
    assert "<mark" not in response.text
    assert html.escape(app.pipeline.store.documents[doc_id].text.split("\n\n")[0]) in response.text


@pytest.mark.parametrize("path", [
    "/article/..%2F..%2Fetc%2Fpasswd",
    "/article/%2Fetc%2Fpasswd",
    "/article/../../etc/passwd",
    "/article/..%2F..%2Fpyproject.toml",
    "/article/no-such-article",
    "/article/no-such-article?chunk=abc",
    "/trace/../../x.json",
    "/trace/abc.json",
    "/trace/..%2F..%2Fdata%2Ffeedback.sqlite.json",
    "/trace/" + "0" * 32 + ".json",
])
def test_unknown_ids_and_path_traversal_give_404(app, path):
    status, _, body = get_raw(app, path)

    assert status == 404, (path, status, body[:200])
    assert b"root:" not in body and b"[project]" not in body and b"SQLite" not in body
