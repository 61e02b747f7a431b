"""rag/citations.py: parsing [n] markers, the facts a sentence asserts, and the grounding check."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rag.citations import MAX_RANGE, GroundingChecker, expand_group, facts_in, missing_facts, parse_citations, render_answer, unsupported_clause
from rag.records import Hit

LOAN = "$1.5 billion"


# ---- parse_citations -----------------------------------------------------------------------
def test_single_marker_is_parsed_and_removed_from_the_sentence_text():
    parsed = parse_citations("Russia would lend Belarus $1.5 billion [1].", 3)
    assert [(s.text, s.citations) for s in parsed.sentences] == [("Russia would lend Belarus $1.5 billion.", [1])]
    assert parsed.dropped == []
    assert parsed.text == "Russia would lend Belarus $1.5 billion [1]."


def test_lists_and_ranges_expand_to_single_markers():
    parsed = parse_citations("Putin met Lukashenko in Sochi [1, 3]. Mishustin visited Minsk [1-2].", 3)
    assert [s.citations for s in parsed.sentences] == [[1, 3], [1, 2]]
    assert parsed.text == "Putin met Lukashenko in Sochi [1][3]. Mishustin visited Minsk [1][2]."
    assert parse_citations("Putin met Lukashenko in Sochi [2–3].", 3).sentences[0].citations == [2, 3]  # en dash


def test_zero_and_out_of_range_markers_are_dropped_never_remapped():
    parsed = parse_citations("Putin met Lukashenko in Sochi [0]. Mishustin visited Minsk [4]. Lavrov spoke in Moscow [2].", 3)
    assert [s.citations for s in parsed.sentences] == [[], [], [2]]
    assert parsed.dropped == [0, 4]
    # [0] must not become the last source (index -1) and [4] must not wrap round to source 1.
    assert "[0]" not in parsed.text and "[4]" not in parsed.text and "[3]" not in parsed.text and "[1]" not in parsed.text
    # the dropped marker takes its space with it: no "Sochi ." in the answer
    assert [s.text for s in parsed.sentences][:2] == ["Putin met Lukashenko in Sochi.", "Mishustin visited Minsk."]


def test_a_group_keeps_its_valid_markers_and_drops_the_rest():
    parsed = parse_citations("Putin met Lukashenko in Sochi [0, 2, 9].", 3)
    assert parsed.sentences[0].citations == [2]
    assert parsed.dropped == [0, 9]


def test_a_marker_formed_by_dropping_another_is_checked_too():
    parsed = parse_citations("Putin met Lukashenko in Sochi [[0]1]. Mishustin visited Minsk [[9]2].", 1)
    assert [s.citations for s in parsed.sentences] == [[1], []]
    assert parsed.dropped == [0, 9, 2]
    assert "[2]" not in parsed.text


def test_no_sources_means_every_marker_is_dropped():
    parsed = parse_citations("Putin met Lukashenko in Sochi [1].", 0)
    assert parsed.sentences[0].citations == []
    assert parsed.dropped == [1]


def test_marker_only_trailing_sentence_attaches_to_the_sentence_before():
    parsed = parse_citations("Russia would lend Belarus $1.5 billion. [2]", 3)
    assert [(s.text, s.citations) for s in parsed.sentences] == [("Russia would lend Belarus $1.5 billion.", [2])]
    parsed = parse_citations("Russia would lend Belarus $1.5 billion [1]. [2]", 3)
    assert [s.citations for s in parsed.sentences] == [[1, 2]]


def test_markers_after_a_full_stop_belong_to_the_sentence_before_not_the_next():
    # The style `render_answer` itself produces: "Sentence. [1] Next sentence. [2]".
    parsed = parse_citations("Russia would lend Belarus $1.5 billion. [1] Mishustin visited Minsk. [2]", 3)
    assert [(s.text, s.citations) for s in parsed.sentences] == [
        ("Russia would lend Belarus $1.5 billion.", [1]),
        ("Mishustin visited Minsk.", [2]),
    ]


def test_render_then_parse_round_trips():
    first = parse_citations("Russia would lend Belarus $1.5 billion [1]. Mishustin visited Minsk [2, 3].", 3)
    again = parse_citations(render_answer(first.sentences), 3)
    assert [(s.text, s.citations) for s in again.sentences] == [(s.text, s.citations) for s in first.sentences]


def test_a_leading_marker_on_the_first_sentence_stays_with_it():
    parsed = parse_citations("[2] Mishustin visited Minsk.", 3)
    assert [(s.text, s.citations) for s in parsed.sentences] == [("Mishustin visited Minsk.", [2])]


def test_text_without_markers_and_empty_text():
    parsed = parse_citations("Mishustin visited Minsk. Lavrov spoke in Moscow.", 3)
    assert [s.citations for s in parsed.sentences] == [[], []]
    assert all(not s.supported for s in parsed.sentences)
    assert parse_citations("", 3).sentences == []


def test_brackets_that_are_not_markers_are_left_alone():
    parsed = parse_citations("Lukashenko said he would [not] resign [1].", 2)
    assert parsed.sentences[0].text == "Lukashenko said he would [not] resign."
    assert parsed.sentences[0].citations == [1]


# ---- expand_group ---------------------------------------------------------------------------
def test_expand_group_lists_and_ranges():
    assert expand_group("1, 3-4") == [1, 3, 4]
    assert expand_group("2,2, 1") == [2, 1]
    assert expand_group("1-3, 2") == [1, 2, 3]


def test_expand_group_huge_range_keeps_only_its_ends():
    numbers = expand_group("1-1000000000")
    assert numbers == [1, 1_000_000_000]
    assert expand_group(f"1-{1 + MAX_RANGE}") == list(range(1, 2 + MAX_RANGE))  # widest range still expanded
    assert expand_group(f"1-{2 + MAX_RANGE}") == [1, 2 + MAX_RANGE]
    parsed = parse_citations("Putin met Lukashenko in Sochi [1-1000000000].", 3)
    assert parsed.sentences[0].citations == [1]
    assert parsed.dropped == [1_000_000_000]


# ---- facts ----------------------------------------------------------------------------------
def test_facts_in_finds_numbers_dates_and_names_but_not_the_first_word():
    facts = facts_in("Russia would lend Belarus $1.5 billion in September 2020, said Dmitri Trenin.")
    assert facts == {"1.5", "2020", "Belarus", "September", "Dmitri", "Trenin"}  # "Russia" starts the sentence
    assert facts_in("The loan was 1,500 million.") == {"1500"}
    assert facts_in("However, the loan is large.") == set()
    assert "EU" in facts_in("Sanctions by the EU hurt exports.")


def test_missing_facts_checks_numbers_exactly():
    passage = "Russia would extend Belarus a government loan of $1.5 billion."
    assert missing_facts("Russia would lend Belarus $1.5 billion.", passage) == []
    assert missing_facts("Russia would lend Belarus $2.5 billion.", passage) == ["2.5"]
    assert missing_facts("Russia would lend Belarus $1.5 billion in 2019.", passage) == ["2019"]
    # "1" must not match inside "1.5", nor "5" inside it
    assert missing_facts("Belarus got 1 loan of 5 billion.", passage) == ["1", "5"]
    assert missing_facts("Belarus owes 1,500 dollars.", "It owes 1500 dollars.") == []


def test_missing_facts_checks_names_ignoring_case_and_possessives():
    passage = "Putin hosts Lukashenko for talks in Sochi."
    assert missing_facts("Then Putin met Lukashenko's team in Sochi.", passage) == []
    assert missing_facts("Then Putin met Mishustin in Sochi.", passage) == ["Mishustin"]


# ---- the grounding check, with the real model ---------------------------------------------------
@pytest.fixture(scope="module")
def loan_and_unrelated(pipeline) -> tuple[Hit, Hit]:
    chunks = pipeline.store.chunks
    loan = next(c for c in chunks if LOAN in c.text)
    unrelated = next(c for c in chunks if "Ryanair" in c.text and LOAN not in c.text and "loan" not in c.text)
    return Hit(loan, 1.0), Hit(unrelated, 0.5)


@pytest.fixture(scope="module")
def checker(embedder, pipeline) -> GroundingChecker:
    return GroundingChecker(embedder, pipeline.settings.support_threshold)


@pytest.mark.integration
def test_paraphrase_with_the_right_number_is_supported(checker, loan_and_unrelated):
    loan, _ = loan_and_unrelated
    parsed = parse_citations("Russia will lend Belarus $1.5 billion as a government loan [1].", 1)
    citations = checker.check(parsed, [loan])
    sentence = parsed.sentences[0]
    assert sentence.supported, sentence.reason
    assert sentence.reason.startswith("similarity")
    assert [(c.marker, c.chunk_id, c.doc_id) for c in citations] == [(1, loan.chunk.chunk_id, loan.chunk.doc_id)]
    # where it rests: the passage sentence stating the loan, which the sources panel highlights
    span, = sentence.spans
    assert span.marker == 1 and LOAN in loan.chunk.text[span.start:span.end] and span.end - span.start < len(loan.chunk.text)


@pytest.mark.integration
def test_the_same_sentence_with_a_wrong_number_is_not_supported(checker, loan_and_unrelated):
    loan, _ = loan_and_unrelated
    parsed = parse_citations("Russia will lend Belarus $2.5 billion as a government loan [1].", 1)
    checker.check(parsed, [loan])
    sentence = parsed.sentences[0]
    assert not sentence.supported
    assert "2.5" in sentence.reason and "not in the cited passage" in sentence.reason


@pytest.mark.integration
def test_a_sentence_citing_an_unrelated_passage_is_not_supported(checker, loan_and_unrelated):
    loan, unrelated = loan_and_unrelated
    parsed = parse_citations("Russia will lend Belarus $1.5 billion as a government loan [2].", 2)
    citations = checker.check(parsed, [loan, unrelated])
    assert not parsed.sentences[0].supported and parsed.sentences[0].spans == []  # nothing to highlight
    assert parsed.sentences[0].citations == [2]  # the wrong citation is judged, not silently swapped for the right one
    assert [c.chunk_id for c in citations] == [unrelated.chunk.chunk_id]


@pytest.mark.integration
def test_an_uncited_supported_sentence_gets_the_citation_of_its_source(checker, loan_and_unrelated):
    loan, unrelated = loan_and_unrelated
    parsed = parse_citations("Russia will lend Belarus $1.5 billion as a government loan.", 2)
    citations = checker.check(parsed, [unrelated, loan])
    sentence = parsed.sentences[0]
    assert sentence.citations == [2] and sentence.supported
    assert "citation added" in sentence.reason
    assert [(c.marker, c.chunk_id) for c in citations] == [(2, loan.chunk.chunk_id)]
    # ...but not when told to leave uncited sentences alone
    parsed = parse_citations("Russia will lend Belarus $1.5 billion as a government loan.", 2)
    assert checker.check(parsed, [unrelated, loan], attribute_uncited=False) == []
    assert parsed.sentences[0].citations == [] and not parsed.sentences[0].supported


@pytest.mark.integration
def test_an_uncited_unsupported_sentence_stays_uncited(checker, loan_and_unrelated):
    parsed = parse_citations("Russia will lend Belarus $2.5 billion as a government loan.", 2)
    assert checker.check(parsed, list(loan_and_unrelated)) == []
    assert parsed.sentences[0].citations == [] and not parsed.sentences[0].supported


@pytest.mark.integration
def test_an_invented_clause_appended_to_a_true_sentence_is_not_supported(checker, loan_and_unrelated):
    """The bundled model's own words, seen on the seeds: the second clause is invented."""
    loan, _ = loan_and_unrelated
    parsed = parse_citations("The loan Russia offered Belarus was $1.5 billion, and it is a direct result of the recent "
                             "diplomatic standoff between the two countries [1].", 1)
    checker.check(parsed, [loan])
    sentence = parsed.sentences[0]
    assert not sentence.supported
    assert "direct result" in sentence.reason
    true = parse_citations("The loan Russia offered Belarus was $1.5 billion [1].", 1)
    checker.check(true, [loan])
    assert true.sentences[0].supported, true.sentences[0].reason


@pytest.mark.integration
def test_a_negated_claim_is_not_supported(checker, loan_and_unrelated):
    loan, _ = loan_and_unrelated
    parsed = parse_citations("Russia will not lend Belarus $1.5 billion [1].", 1)
    checker.check(parsed, [loan])
    assert not parsed.sentences[0].supported and "negates" in parsed.sentences[0].reason


@pytest.mark.parametrize("sentence, clause", [
    ("Russia lent $1.5 billion, and the money came from oil revenue.", "the money came from oil revenue."),
    ("Russia lent $1.5 billion because Moscow feared Western sanctions.", "Moscow feared Western sanctions."),
    ("Russia lent $1.5 billion; Belarus spent it on tractor factories.", "Belarus spent it on tractor factories."),
    ("Russia lent Belarus $1.5 billion.", None),  # one clause: the whole-sentence checks judge it
    ("Russia lent $1.5 billion, as planned.", None),  # too short to be a claim of its own
])
def test_the_first_unsupported_clause_is_named(sentence, clause):
    assert unsupported_clause(sentence, "Russia lent Belarus $1.5 billion, Putin said.", 0.5) == clause


def test_no_sources_means_nothing_is_supported():
    parsed = parse_citations("Russia will lend Belarus $1.5 billion [1].", 0)
    assert GroundingChecker(embedder=None, threshold=0.6).check(parsed, []) == []
    assert parsed.sentences[0].supported is False and parsed.sentences[0].reason == "no sources"


# ---- property: never raises, never out of range ------------------------------------------------
marker_like = st.text(alphabet="[]0123456789-–, .!?\nab", max_size=60)
answers = st.one_of(st.text(max_size=200), marker_like, st.lists(st.one_of(marker_like, st.text(max_size=20)), max_size=6).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(text="Putin met Lukashenko [[0]1].", n_sources=0)
@given(text=answers, n_sources=st.integers(min_value=0, max_value=10))
def test_parse_citations_never_raises_and_keeps_markers_in_range(text, n_sources):
    parsed = parse_citations(text, n_sources)
    for sentence in parsed.sentences:
        assert all(1 <= n <= n_sources for n in sentence.citations)
        assert len(sentence.citations) == len(set(sentence.citations))
        assert not re.search(r"\[\d+\]", sentence.text)  # markers are out of the text
    assert all(1 <= int(n) <= n_sources for n in re.findall(r"\[(\d+)\]", parsed.text))
    assert all(not (1 <= n <= n_sources) for n in parsed.dropped)
