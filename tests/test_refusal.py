"""rag/refusal.py: refuse from the evidence, with a reason, before any model is asked."""

from __future__ import annotations

import pytest

from rag.pipeline import NOT_FOUND
from rag.records import Chunk, Hit
from rag.refusal import about_the_focus, assess, expected_answer_type, focus_words, has_answer_type, metadata_text, question_facts_missing


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
    ("How old was Lukashenko in 2020?", "age"),
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
    ("Lukashenko, 66, has had a volatile relationship with Moscow.", "age", True),
    ("The 66-year-old leader flew to Sochi.", "age", True),
    ("Lukashenko has ruled for 26 years.", "age", False),
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


def test_focus_words_are_the_content_words_besides_names_and_question_form():
    assert focus_words("How many officers were in the reserve group created for Belarus?") == ["created", "group", "officers", "reserve"]
    assert focus_words("How much did Putin pay?") == ["pay"]


@pytest.mark.integration
def test_an_amount_stated_with_a_synonym_is_about_the_focus(embedder):
    assert about_the_focus(["lend"], "Russia extends Belarus a loan of $1.5 billion.", embedder.encode_documents)
    assert not about_the_focus(["lend"], "Russia extends Belarus a loan of $1.5 billion.", None)  # stems differ
    assert not about_the_focus(["gas", "pay"], "Belarus asked Russia to reschedule $1 billion in debt.", embedder.encode_documents)


def test_a_number_on_another_subject_is_not_the_answer():
    question = "How many officers were in the reserve group Russia created for Belarus?"
    hits = [hit("Russia created a reserve group of officers for Belarus. Moscow has offered Minsk billions of dollars in loans.")]
    evidence = ["Russia created a reserve group of officers.", "Moscow has offered Minsk billions of dollars in loans."]
    decision = assess(question, hits, evidence, 0.3)
    assert decision.refuse and decision.reason == "no passage states the number the question asks for"
    assert not assess(question, hits, ["The reserve group has 500 officers."], 0.3).refuse


# ---- on the seed index ----------------------------------------------------------------------------
def decide(pipeline, question: str):
    """The pipeline's own refusal step: retrieve, rank candidate sentences, assess."""
    hits = pipeline.search(question)
    candidates = pipeline.extractive.rank(question, hits)
    evidence = [c.text for c in pipeline.extractive.near_best(candidates)]
    return assess(question, hits, evidence, pipeline.settings.min_relevance, pipeline.embedder.encode_documents)


@pytest.mark.integration
@pytest.mark.parametrize("question, named", [
    ("What was Belarus's GDP growth in 2020?", "GDP"),
    ("Who won the 2024 Belarusian election?", "2024"),
    ("Who is Angela Merkel?", "Merkel"),
    # the articles hold a number near the topic, but not the one asked for
    ("How many officers were in the reserve group of Russian law enforcement created for Belarus?", "number"),
    ("How much does Belarus pay Russia for natural gas?", "number"),
    ("What was the official voter turnout in the August 2020 Belarusian presidential election?", "percent"),
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
    "How old was Lukashenko at the time of the September 2020 Sochi talks?",
    "What share of the vote does Tsikhanouskaya claim she actually won?",
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


@pytest.mark.integration
def test_the_extractive_answer_holds_the_age_asked_for(pipeline):
    answer = pipeline.ask("How old was Lukashenko at the time of the September 2020 Sochi talks?", mode="extractive")
    assert not answer.refused
    assert any("Lukashenko, 66," in s.text for s in answer.sentences)
