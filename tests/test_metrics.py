"""rag/metrics.py against values computed by hand."""

from __future__ import annotations

import math

import pytest

from rag.metrics import (
    dedupe,
    exact_match,
    first_relevant_rank,
    hit_at_k,
    ndcg_at_k,
    normalize_answer,
    passage_contains,
    recall_at_k,
    reciprocal_rank,
    token_f1,
)


def test_hit_at_k():
    ranked = ["a", "b", "c"]
    assert hit_at_k(ranked, {"c"}, 3) == 1.0
    assert hit_at_k(ranked, {"c"}, 2) == 0.0
    assert hit_at_k(ranked, {"z"}, 10) == 0.0
    # a document repeated by several chunks counts once: "b" is the 2nd distinct document
    assert hit_at_k(["a", "a", "a", "b"], {"b"}, 2) == 1.0


def test_recall_at_k():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"b", "d"}, 2) == 0.5
    assert recall_at_k(ranked, {"b", "d"}, 4) == 1.0
    assert recall_at_k(ranked, {"x", "y", "a"}, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, set(), 3) == 0.0


def test_reciprocal_rank_and_first_relevant_rank():
    assert reciprocal_rank(["x", "y", "z"], {"z"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "x", "y"], {"y"}) == 0.5  # distinct documents
    assert reciprocal_rank(["x"], {"q"}) == 0.0
    assert first_relevant_rank(["x", "y"], {"y", "x"}) == 1
    assert first_relevant_rank([], {"y"}) is None
    # mean over questions, as the evaluation averages it
    rrs = [reciprocal_rank(["a", "b"], {"a"}), reciprocal_rank(["a", "b"], {"b"}), reciprocal_rank(["a"], {"c"})]
    assert sum(rrs) / len(rrs) == pytest.approx((1 + 0.5 + 0) / 3)


def test_ndcg_at_10_by_hand():
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "b", "c"], {"b", "c"}, 10) == pytest.approx(expected)
    assert ndcg_at_k(["b", "c", "a"], {"b", "c"}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b"], {"x"}, 10) == 0.0
    assert ndcg_at_k(["a", "b"], set(), 10) == 0.0
    # cut at k: the relevant document at rank 3 does not count for k=2
    assert ndcg_at_k(["a", "x", "b"], {"b"}, 2) == 0.0


def test_dedupe_keeps_first_occurrence_order():
    assert dedupe(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("The  Cat!", "cat"),
        ("An apple, a day.", "apple day"),
        ("“Elder brother”", "elder brother"),
        ("$1.5 billion", "15 billion"),
        ("  Theatre of the absurd ", "theatre of absurd"),
        ("", ""),
    ],
)
def test_squad_normalisation(raw, normal):
    assert normalize_answer(raw) == normal


def test_exact_match():
    assert exact_match("The Cat", "cat!") == 1.0
    assert exact_match("a cat", "the dog") == 0.0


def test_token_f1_by_hand():
    # pred tokens [cat, sat], ref [cat, sat, down]: P = 1, R = 2/3 -> F1 = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # pred [russia, will, lend, 15, billion], ref [15, billion]: P = 2/5, R = 1 -> 4/7
    assert token_f1("Russia will lend $1.5 billion", "$1.5 billion") == pytest.approx(4 / 7)
    assert token_f1("apple", "orange") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "cat") == 0.0  # nothing left of the prediction
    # repeated words only count as often as they appear in both
    assert token_f1("no no no", "no") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_passage_contains_ignores_whitespace_differences():
    passage = "Putin also offered economic support,\nsaying Russia would extend Belarus\n a government loan of $1.5 billion."
    assert passage_contains(passage, ["saying Russia would extend Belarus a government loan"])
    assert passage_contains(passage, ["not there", "loan of $1.5 billion."])
    assert not passage_contains(passage, ["a loan of $2 billion"])
    assert not passage_contains(passage, ["", "   "])  # empty references never match
    assert not passage_contains(passage, [])


def test_token_recall_counts_reference_tokens_found():
    from rag.metrics import token_recall

    # reference "$1.5 billion" -> tokens "15", "billion"; both in the answer
    assert token_recall("Russia would lend Belarus $1.5 billion.", "$1.5 billion") == 1.0
    assert token_recall("Russia would lend Belarus money.", "$1.5 billion") == 0.0
    assert token_recall("a collective farm", "collective farm boss") == 2 / 3
