"""`rag ask` as a user runs it: a subprocess, JSON out, one clear line on failure, no secrets printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_servers import Fail, scripted_llm  # noqa: F401

RAG = Path(sys.executable).with_name("rag")
LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
LOAN_SENTENCE = "Russia would extend Belarus a government loan of $1.5 billion"
CANARY = "sk-canary-XYZ123"
ANSWER_KEYS = {"question", "answer", "mode", "refused", "notice", "citations", "sentences", "supported_fraction", "sources", "trace"}

pytestmark = pytest.mark.integration


def rag(args: list[str], seed_index, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAG_"))}
    environment |= {"RAG_INDEX_DIR": str(seed_index.index_dir), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([str(RAG), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def check_answer_json(data: dict) -> None:
    assert ANSWER_KEYS <= set(data)
    sources = data["sources"]
    assert [s["rank"] for s in sources] == list(range(1, len(sources) + 1))
    for c in data["citations"]:
        assert set(c) == {"marker", "doc_id", "chunk_id"}
        source = sources[c["marker"] - 1]  # marker n is sources[n-1]
        assert (c["doc_id"], c["chunk_id"]) == (source["doc_id"], source["chunk_id"])
    for s in data["sentences"]:
        assert {"text", "citations", "supported"} <= set(s)
        for n in s["citations"]:
            assert 1 <= n <= len(sources)
    assert {c["marker"] for c in data["citations"]} == {n for s in data["sentences"] for n in s["citations"]}


def test_ask_json_extractive(seed_index, tmp_path):
    result = rag(["ask", LOAN_QUESTION, "--mode", "extractive", "--json"], seed_index, tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    data = json.loads(line)
    check_answer_json(data)
    assert data["question"] == LOAN_QUESTION and data["mode"] == "extractive" and data["refused"] is False
    first = data["sentences"][0]
    assert LOAN_SENTENCE in first["text"] and first["supported"] is True
    (n,) = first["citations"]
    assert first["text"] in " ".join(data["sources"][n - 1]["text"].split())
    assert data["trace"]["question"] == LOAN_QUESTION and data["trace"]["retrieved"]
    assert "Traceback" not in result.stderr


def test_ask_queries_file_answers_each_question_in_order(seed_index, tmp_path):
    questions = [LOAN_QUESTION, "Who won the 2024 Belarusian election?", "Who is the Russian Prime Minister?"]
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"user_input": questions[0]}) + "\n\n" + json.dumps({"question": questions[1]}) + "\n" + questions[2] + "\n",
        encoding="utf-8",
    )
    result = rag(["ask", "--queries", str(queries), "--json", "--mode", "extractive"], seed_index, tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in rows] == questions
    for row in rows:
        check_answer_json(row)
    assert [r["refused"] for r in rows] == [False, True, False]
    assert "Mishustin" in rows[2]["answer"]


def test_ask_falls_back_with_a_note_when_the_endpoint_fails(seed_index, tmp_path, scripted_llm):
    scripted_llm.always(Fail(500, "internal error", echo_auth=True))
    result = rag(["ask", LOAN_QUESTION, "--mode", "llm"], seed_index, tmp_path,
                 OPENAI_BASE_URL=scripted_llm.base_url, OPENAI_API_KEY=CANARY)
    assert result.returncode == 0, result.stderr
    assert LOAN_SENTENCE in result.stdout and "Sources:" in result.stdout
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and scripted_llm.host in notes[0] and "500" in notes[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert CANARY not in result.stdout and CANARY not in result.stderr
    assert scripted_llm.requests and scripted_llm.requests[0].headers["authorization"] == f"Bearer {CANARY}"


def test_ask_with_neither_question_nor_file_is_one_error_line(seed_index, tmp_path):
    result = rag(["ask"], seed_index, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: give either a QUESTION or --queries FILE"


@pytest.mark.parametrize("args, env, named", [
    (["ask", LOAN_QUESTION, "--mode", "bogus"], {}, "mode (RAG_MODE) = 'bogus'"),
    (["ask", LOAN_QUESTION], {"RAG_REFUSE_BELOW": "3"}, "refuse_below (RAG_REFUSE_BELOW) = '3'"),
    (["search", LOAN_QUESTION], {"RAG_TOP_K": "many"}, "top_k (RAG_TOP_K) = 'many'"),
])
def test_a_bad_setting_from_an_option_or_the_environment_is_one_line_naming_it(seed_index, tmp_path, args, env, named):
    result = rag(args, seed_index, tmp_path, **env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert line.startswith("error: invalid setting: ") and named in line, line


def test_a_bad_api_key_setting_is_named_but_never_echoed(seed_index, tmp_path):
    result = rag(["ask", LOAN_QUESTION], seed_index, tmp_path, RAG_AUTH=CANARY, RAG_TOP_K="0x")
    assert result.returncode == 2 and CANARY not in result.stderr and "top_k" in result.stderr


def test_ask_and_search_keep_to_the_documents_and_dates_asked_for(seed_index, tmp_path):
    from rag.store import IndexStore

    documents = IndexStore.load(seed_index.index_dir).documents
    dated = sorted((d.date, d.doc_id) for d in documents.values() if d.date)
    (_, first), (last_date, last) = dated[0], dated[-1]
    result = rag(["search", LOAN_QUESTION, "--json", "--doc", first], seed_index, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {r["doc_id"] for r in json.loads(result.stdout)["results"]} == {first}
    result = rag(["ask", LOAN_QUESTION, "--json", "--mode", "extractive", "--since", last_date], seed_index, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {s["doc_id"] for s in json.loads(result.stdout)["sources"]} == {d for date, d in dated if date >= last_date}


@pytest.mark.parametrize("args, message", [
    (["--doc", "no-such-article"], "error: unknown document no-such-article; `rag inspect` lists the document ids"),
    (["--since", "last spring"], "error: --since 'last spring' is not a date; use YYYY-MM-DD"),
])
def test_a_bad_filter_is_one_line_naming_the_fix(seed_index, tmp_path, args, message):
    result = rag(["search", LOAN_QUESTION, *args], seed_index, tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == message
