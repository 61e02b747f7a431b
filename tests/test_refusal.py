"""rag/refusal.py: refuse from the evidence, with a reason, before any model is asked."""

from __future__ import annotations

import pytest

from rag.pipeline import EVIDENCE_SENTENCES, NOT_FOUND
from rag.records import Chunk, Hit
from rag.refusal import assess, expected_answer_type, has_answer_type, metadata_text, question_facts_missing


def hit(text: str, dense_score: float = 0.8, title: str | None = None, date: str | None = None) -> Hit:
    return Hit(Chunk("c1", "d1", 0, text, 0, len(text), title=title, date=date), 0.5, 1, 1, dense_score)


# ---- answer types ---------------------------------------------------------------------------
@pytest.mark.parametrize("question, kind", [
    ("How much will Russia lend Belarus?", "number"),
    ("How many people protested in Minsk?", "number"),
    ("What amount did Putin offer?", "number"),
    ("What percentage of the vote did Lukashenko claim?", "percent"),
    ("What was the turnout?", "percent"),
    ("When did Mishustin arrive in Minsk?", "date"),
    ("In what year did the protests start?", "date"),
    ("On what date was the election?", "date"),
    ("Who is Dmitri Trenin?", None),
    ("Where did Putin and Lukashenko meet?", None),
    ("Why did Lukashenko go to Sochi?", None),
])
def test_expected_answer_type(question, kind):
    assert expected_answer_type(question) == kind


@pytest.mark.parametrize("sentence, kind, holds", [
    ("Russia would extend Belarus a loan of $1.5 billion.", "number", True),
    ("Tens of thousands marched in Minsk.", "number", True),
    ("Russia would extend Belarus a loan.", "number", False),
    ("Lukashenko claimed 80% of the vote.", "percent", True),
    ("Turnout was 84 percent.", "percent", True),
    ("Lukashenko claimed 80 of the seats.", "percent", False),
    ("The election was held on Aug. 9.", "date", True),
    ("Mishustin arrived on Thursday.", "date", True),
    ("The vote took place in 2020.", "date", True),
    ("Mishustin arrived in Minsk.", "date", False),
    ("Anything at all.", None, True),
])
def test_has_answer_type(sentence, kind, holds):
    assert has_answer_type(sentence, kind, "") is holds


# ---- the three checks on hand-made evidence ------------------------------------------------------
def test_low_relevance_is_refused_with_the_setting_named():
    decision = assess("Who is Dmitri Trenin?", [hit("Dmitri Trenin heads a think tank.", dense_score=0.2)], [], 0.3)
    assert decision.refuse
    assert "0.20" in decision.reason and "RAG_MIN_RELEVANCE=0.30" in decision.reason
    assert not assess("Who is Dmitri Trenin?", [hit("Dmitri Trenin heads a think tank.", dense_score=0.31)], [], 0.3).refuse


def test_no_hits_is_refused():
    assert assess("Who is Dmitri Trenin?", [], [], 0.3).refuse


def test_facts_the_question_asks_about_must_be_in_the_evidence():
    hits = [hit("The Belarus leader met Putin in Sochi.")]
    decision = assess("Did the Belarus leader meet Putin in Minsk?", hits, [], 0.3)
    assert decision.refuse and decision.reason == "the articles never mention Minsk"
    assert not assess("Did the Belarus leader meet Putin in Sochi?", hits, [], 0.3).refuse
    # an adjective of place may be spelled as the country in the text
    assert question_facts_missing("Did the Belarusian leader meet Putin?", hits) == []


def test_titles_and_spelled_out_dates_count_as_evidence():
    hits = [hit("Putin backed Lukashenko.", title="Putin Backs Lukashenko in Sochi", date="2020-09-14")]
    assert metadata_text(hits[0]) == "Putin Backs Lukashenko in Sochi  September 14, 2020 2020"
    assert question_facts_missing("What did Putin say in Sochi in September 2020?", hits) == []
    assert question_facts_missing("What did Putin say in Sochi in October 2020?", hits) == ["October"]


def test_the_answer_type_must_appear_in_a_candidate_sentence():
    hits = [hit("Russia would extend Belarus a loan.")]
    decision = assess("How much will Russia lend Belarus?", hits, ["Russia would extend Belarus a loan."], 0.3)
    assert decision.refuse and decision.reason == "no passage states the number the question asks for"
    assert not assess("How much will Russia lend Belarus?", hits, ["Russia would lend Belarus $1.5 billion."], 0.3).refuse


# ---- on the seed index ----------------------------------------------------------------------------
def decide(pipeline, question: str):
    """The pipeline's own refusal step: retrieve, rank candidate sentences, assess."""
    hits = pipeline.search(question)
    candidates = pipeline.extractive.rank(question, hits)
    return assess(question, hits, [c.text for c in candidates[:EVIDENCE_SENTENCES]], pipeline.settings.min_relevance)


@pytest.mark.integration
@pytest.mark.parametrize("question, named", [
    ("What was Belarus's GDP growth in 2020?", "GDP"),
    ("Who won the 2024 Belarusian election?", "2024"),
    ("Who is Angela Merkel?", "Merkel"),
    ("What is the best recipe for chocolate cake?", "RAG_MIN_RELEVANCE"),
])
def test_unanswerable_questions_are_refused_with_a_reason(pipeline, question, named):
    decision = decide(pipeline, question)
    assert decision.refuse
    assert named in decision.reason


@pytest.mark.integration
@pytest.mark.parametrize("question", [
    "How much will Russia lend Belarus?",
    "Who is the Russian Prime Minister?",
    "Where did Putin and Lukashenko meet?",
    "How many people protested in Minsk?",
    "What did Dmitri Trenin say?",
])
def test_answerable_questions_are_not_refused(pipeline, question):
    decision = decide(pipeline, question)
    assert not decision.refuse, decision.reason


@pytest.mark.integration
def test_the_pipeline_refuses_with_the_sources_still_listed(pipeline):
    answer = pipeline.ask("What was Belarus's GDP growth in 2020?", mode="extractive")
    assert answer.refused and answer.answer == NOT_FOUND
    assert answer.citations == [] and answer.sentences == []
    assert len(answer.sources) == pipeline.settings.top_k
    assert answer.trace["refusal_reason"] == "the articles never mention GDP"
