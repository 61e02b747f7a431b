"""rag/policy.py: question analysis, generic name matching, the evidence features and the three outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from rag.factory import build_pipeline
from rag.pipeline import NOT_FOUND, UNSURE
from rag.policy import (
    AnswerPolicy, Evidence, NameMatcher, PolicyModel, about_the_focus, asked_names, content_terms, expected_answer_type,
    focus_words, has_answer_type, is_model_refusal, metadata_text,
)
from rag.prompt import REFUSAL_TEXT
from rag.records import Chunk, Hit


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
    ("When adduser creates a new account, where do its first files come from?", None),  # the "when" sets the scene
    ("If the service fails, how many times is it restarted?", "number"),
    ("What is the default maximum number of redirects a Session will follow?", "number"),
    ("For how many days are inventories cached by default?", "number"),  # a preposition before the question word
    ("When building epub output, roughly how many characters fit on a line?", "number"),  # not a date question
    ("How do I cancel a job scheduled with at?", "code"),
    ("Which R function lists the objects in my workspace?", "code"),
    ("Which environment variable sets the proxy?", "code"),
    ("How did Lukashenko react?", None),
    ("Which package provides the DHCP server?", None),
])
def test_expected_answer_type(question, kind):
    assert expected_answer_type(question) == kind


@pytest.mark.parametrize("sentence, kind, holds", [
    ("Russia would extend Belarus a loan of $1.5 billion.", "number", True),
    ("Tens of thousands marched in Minsk.", "number", True),
    ("Russia would extend Belarus a loan.", "number", False),
    ("Lukashenko claimed 80% of the vote.", "percent", True),
    ("Lukashenko claimed 80 of the seats.", "percent", False),
    ("The election was held on Aug. 9.", "date", True),
    ("Mishustin arrived in Minsk.", "date", False),
    ("Released in 2021.", "date", True),
    ("Restrict requests to HTTP/1.1 and HTTP/1.0 (#2328).", "date", False),  # an issue number, not a year
    ("Lukashenko, 66, has had a volatile relationship with Moscow.", "age", True),
    ("Lukashenko has ruled for 26 years.", "age", False),
    ("Users can call install.packages() and update.packages().", "code", True),
    ("Pass the -c option to ldapadd.", "code", True),
    ("The basic method is to run it under script(1).", "code", True),
    ("The setting lives in /etc/ssh/sshd_config.", "code", True),
    ("Add drop=FALSE to the subscript.", "code", True),
    ("You can install packages from within R, e.g. from CRAN.", "code", False),
    ("Anything at all.", None, True),
])
def test_has_answer_type(sentence, kind, holds):
    assert has_answer_type(sentence, kind) is holds


def test_focus_and_content_words_leave_out_how_the_question_is_asked():
    assert focus_words("How many officers were in the reserve group created for Belarus?") == ["created", "group", "officers", "reserve"]
    assert content_terms("How do I change the port that sshd listens on?") == {"chang", "port", "sshd", "listen"}


# ---- names matched without lists of names ----------------------------------------------------------
@pytest.mark.parametrize("question, evidence", [
    ("What did the Belarusian leader say?", "Belarus said no."),  # word forms
    ("Did Europe prepare sanctions?", "The European Union prepared sanctions."),
    ("What did the EU prepare?", "The European Union prepared sanctions."),  # acronym from initials
    ("What came of the Putin-Lukashenko meeting?", "Putin met Lukashenko in Sochi."),  # a compound names both
    ("What did Łukašenka's office say?", "Lukasenka said no."),  # accents and possessives
    ("What does sshd_config set?", "Edit /etc/ssh/sshd_config to change it."),
])
def test_names_are_matched_generically(question, evidence):
    assert NameMatcher(evidence).missing(question) == []


def test_a_name_or_number_that_is_not_there_is_missing():
    assert NameMatcher("Putin met Lukashenko in Sochi in 2020.").missing("Did Putin meet Merkel in Sochi in 2021?") == ["2021", "Merkel"]


@pytest.mark.integration
def test_a_name_in_code_the_text_never_uses_is_missing():
    evidence = ("class requests.adapters.HTTPAdapter(pool_connections=10, max_retries=0)\n"
                "get_adapter(url): Returns the appropriate connection adapter for the given URL.")
    matcher = NameMatcher(evidence)
    assert matcher.missing("What is the default pool_timeout of requests.adapters.HTTPAdapter?") == ["pool_timeout"]
    assert matcher.missing("What does Session.get_adapter() return for a URL?") == ["Session.get_adapter"]
    assert NameMatcher(evidence + "\nclass requests.Session").missing("What does Session.get_adapter() return?") == []
    assert matcher.missing("What is the default max_retries, e.g. for a U.S. mirror?") == []  # "e.g", "U.S" are not code


def test_a_near_synonym_name_is_found_through_the_embedding_model(embedder):
    matcher = NameMatcher("The EU prepared sanctions against Minsk.", embedder.encode_documents)
    assert matcher.missing("What did Europe prepare against Minsk?") == []
    assert NameMatcher("The EU prepared sanctions.", None).missing("What did Europe prepare?") == ["Europe"]
    assert NameMatcher("Russia prepared sanctions.", embedder.encode_documents).missing("What did Europe prepare?") == ["Europe"]


def test_an_abbreviation_is_found_as_the_word_it_shortens(embedder):
    evidence = "Data objects of a few hundred megabytes can cause R to run out of memory."
    assert NameMatcher(evidence, embedder.encode_documents).missing("Why can a few hundred MB exhaust RAM?") == ["RAM"]
    assert NameMatcher(evidence, None).missing("Why can a few hundred MB exhaust memory?") == ["MB"]  # needs the model
    members = "Each member of the mob may have a mailbox."  # m…b words the model does not place near MB
    assert NameMatcher(members, embedder.encode_documents).missing("How many MB does it take?") == ["MB"]


@pytest.mark.integration
def test_an_amount_stated_with_a_synonym_is_about_the_focus(embedder):
    assert about_the_focus(["lend"], "Russia extends Belarus a loan of $1.5 billion.", embedder.encode_documents)
    assert not about_the_focus(["lend"], "Russia extends Belarus a loan of $1.5 billion.", None)
    assert not about_the_focus(["gas", "pay"], "Belarus asked Russia to reschedule $1 billion in debt.", embedder.encode_documents)


def test_titles_sections_and_spelled_out_dates_count_as_evidence():
    h = hit("Putin backed Lukashenko.", title="Putin Backs Lukashenko in Sochi", date="2020-09-14")
    assert metadata_text(h) == "Putin Backs Lukashenko in Sochi   September 14, 2020 2020"


# ---- the features and the decision ------------------------------------------------------------------
def policy(refuse: float = 0.2, unsure: float = 0.5, specificity=None) -> AnswerPolicy:
    return AnswerPolicy(PolicyModel.load(), refuse, unsure, specificity=specificity)


def test_the_features_read_the_evidence():
    hits = [hit("Russia would lend Belarus $1.5 billion.", 0.8), hit("Moscow and Minsk talked.", 0.5)]
    evidence, missing = policy().evidence("How much will Russia lend Belarus?", hits, ["Russia would lend Belarus $1.5 billion."])
    assert missing == []
    assert evidence.relevance == 0.8 and evidence.relevance_gap == pytest.approx(0.3)
    assert evidence.term_coverage == 1.0 and evidence.name_coverage == 1.0 and evidence.answer_type == 1.0
    weak, missing = policy().evidence("How much will Germany lend Belarus?", hits, ["Moscow and Minsk talked."])
    assert missing == ["Germany"] and weak.name_coverage == 0.5 and weak.answer_type == 0.0 and weak.term_coverage < 1.0


def test_a_name_that_is_part_of_another_is_counted_once():
    hits = [hit("class requests.adapters.HTTPAdapter(pool_connections=10, max_retries=0)")]
    question = "What is the default pool_timeout of requests.adapters.HTTPAdapter?"
    assert asked_names(question) == {"pool_timeout", "requests.adapters.HTTPAdapter"}  # HTTPAdapter is not counted twice
    evidence, missing = policy().evidence(question, hits, ["class requests.adapters.HTTPAdapter(max_retries=0)"])
    assert missing == ["pool_timeout"] and evidence.name_coverage == 0.5
    assert asked_names("Did Putin meet Lukashenko? The Putin-Lukashenko talks were in 2021 and 2021.5") == {"Putin-Lukashenko", "2021", "2021.5"}


def test_rare_words_count_more_and_words_in_no_passage_are_counted():
    rarity = {"lend": 0.2, "russia": 0.1, "belarus": 0.1, "bbr": 1.0}
    specificity = lambda terms: np.array([rarity.get(t, 0.5) for t in terms])  # noqa: E731
    hits = [hit("Russia and Belarus lend each other money.")]
    evidence, _ = policy(specificity=specificity).evidence("Does Russia lend Belarus BBR?", hits, ["Russia and Belarus lend."])
    assert evidence.term_coverage == pytest.approx(0.4 / 1.4)  # the rare word is the one missing
    assert evidence.unknown_terms == 0.25


def test_a_name_the_collection_keeps_repeating_is_not_evidence_of_absence():
    rarity = {"debian": 0.05, "ubuntu": 1.0}  # in most passages / in none
    specificity = lambda terms: np.array([rarity.get(t, 0.5) for t in terms])  # noqa: E731
    hits = [hit("Writing to /dev/full returns the ENOSPC error.")]
    common, missing = policy(specificity=specificity).evidence("What does /dev/full do on Debian?", hits, ["Writing returns ENOSPC."])
    assert missing == ["Debian"] and common.name_coverage == pytest.approx(0.95)
    absent, missing = policy(specificity=specificity).evidence("What does /dev/full do on Ubuntu?", hits, ["Writing returns ENOSPC."])
    assert missing == ["Ubuntu"] and absent.name_coverage == 0.0


def test_the_reason_names_the_feature_that_pulled_the_confidence_down(tmp_path):
    path = tmp_path / "model.json"  # relevance and names weigh alike
    path.write_text('{"features": ["relevance", "name_coverage"], "mean": [0.5, 0.5], "scale": [0.1, 0.1], "coef": [1, 1], "intercept": 0}')
    policy = AnswerPolicy(PolicyModel.load(path), 0.0, 0.99)
    far = policy.decide("What does /dev/full return?", [hit("Writing to /dev/full fails.", 0.1)], ["Writing to /dev/full fails."])
    assert far.low_confidence and far.reason.startswith("the closest passage is far from the question (similarity 0.10)")
    half_named = policy.decide("What did Merkel tell Lukashenko?", [hit("Lukashenko wrote to /dev/full.", 0.1)], ["Lukashenko wrote."])
    assert half_named.missing == ("Merkel",) and half_named.reason.startswith("the closest passage is far")  # names pull less
    unnamed = policy.decide("What did Merkel say about /dev/full?", [hit("Writing to /dev/full fails.", 0.8)], ["Writing to /dev/full fails."])
    assert unnamed.low_confidence and unnamed.reason.startswith("the passages found never mention Merkel")


def test_the_bundled_model_orders_strong_evidence_above_weak():
    model = PolicyModel.load()
    assert model.features == Evidence.names()
    strong = Evidence(relevance=0.8, relevance_gap=0.15, term_coverage=1.0, unknown_terms=0.0, name_coverage=1.0, answer_type=1.0)
    weak = Evidence(relevance=0.4, relevance_gap=0.02, term_coverage=0.3, unknown_terms=0.5, name_coverage=0.0, answer_type=0.0)
    assert model.probability(strong) > 0.8 > 0.2 > model.probability(weak)


@pytest.mark.parametrize("confidence, outcome", [(0.9, "answered"), (0.35, "low_confidence"), (0.1, "refused")])
def test_three_outcomes_by_the_two_thresholds(tmp_path, confidence, outcome):
    # a model whose only feature is relevance, with the identity as its logit: P = sigmoid(relevance)
    logit = float(np.log(confidence / (1 - confidence)))
    path = tmp_path / "model.json"
    path.write_text('{"features": ["relevance"], "mean": [0], "scale": [1], "coef": [1], "intercept": 0}')
    verdict = AnswerPolicy(PolicyModel.load(path), 0.2, 0.5).decide("Who is Trenin?", [hit("Trenin is a scholar.", logit)], ["Trenin is a scholar."])
    assert verdict.outcome == outcome and verdict.confidence == pytest.approx(confidence)
    if outcome == "refused":
        assert "RAG_REFUSE_BELOW=0.20" in verdict.reason
    if outcome == "low_confidence":
        assert "RAG_UNSURE_BELOW=0.50" in verdict.reason


def test_no_evidence_is_refused():
    assert policy().decide("Who is Trenin?", [], []).refused


@pytest.mark.parametrize("text, refused", [
    ("", True),
    (REFUSAL_TEXT, True),
    ("The sources do not mention the loan.", True),
    ("Russia will lend $1.5 billion [1].", False),
    ("The loan does not cover gas debts, the article says [1].", True),
    ("Gas prices were not mentioned by Putin [1].", False),  # a refusal phrase, but not about the sources
])
def test_a_models_own_refusal_is_recognised(text, refused):
    assert is_model_refusal(text, REFUSAL_TEXT) is refused


# ---- on the seed index ----------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("question", [
    "What was Belarus's GDP growth in 2020?",
    "Who is Angela Merkel?",
    "What is the best recipe for chocolate cake?",
    "Which TCP port does the Samba file server listen on?",
])
def test_unanswerable_questions_are_refused_or_flagged(pipeline, question):
    answer = pipeline.ask(question, mode="extractive")
    assert answer.refused or answer.low_confidence, answer.trace.policy


@pytest.mark.integration
@pytest.mark.parametrize("question", [
    "How much will Russia lend Belarus?",
    "Who is the Russian Prime Minister?",
    "Where did Putin and Lukashenko meet?",
    "Who is Nigel Gould-Davies?",
    "What did Europe prepare to do to Minsk over the Ryanair flight?",
    "What came of the Putin-Lukashenko meeting in Sochi?",
    "How old was Lukashenko at the time of the September 2020 Sochi talks?",
])
def test_answerable_questions_are_answered(pipeline, question):
    answer = pipeline.ask(question, mode="extractive")
    assert not answer.refused, answer.trace.policy


@pytest.mark.integration
def test_a_refusal_keeps_the_sources_and_its_reason(pipeline):
    answer = pipeline.ask("What is the best recipe for chocolate cake?", mode="extractive")
    assert answer.refused and answer.answer == NOT_FOUND and not answer.low_confidence
    assert answer.citations == [] and answer.sentences == []
    assert len(answer.sources) == pipeline.settings.top_k
    assert "RAG_REFUSE_BELOW" in answer.trace.refusal_reason
    assert answer.to_json()["refused"] is True and answer.to_json()["low_confidence"] is False


@pytest.mark.integration
def test_a_low_confidence_answer_quotes_the_closest_passages_with_a_notice(pipeline):
    settings = pipeline.settings.with_overrides(refuse_below=0.0, unsure_below=1.0)  # every answer is unsure
    unsure = build_pipeline(settings, embedder=pipeline.embedder, store=pipeline.store)
    answer = unsure.ask("How much will Russia lend Belarus?", mode="extractive")
    assert answer.low_confidence and not answer.refused
    assert answer.notice == UNSURE and answer.sentences and answer.citations
    assert answer.trace.policy["outcome"] == "low_confidence"


@pytest.mark.integration
def test_the_extractive_answer_holds_the_age_asked_for(pipeline):
    answer = pipeline.ask("How old was Lukashenko at the time of the September 2020 Sochi talks?", mode="extractive")
    assert not answer.refused
    assert any("Lukashenko, 66," in s.text for s in answer.sentences)
