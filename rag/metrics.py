"""Deterministic metrics, no LLM needed: retrieval, answer overlap, citations, refusal, latency."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter


def first_relevant_rank(ranked_doc_ids: list[str], relevant: set[str]) -> int | None:
    """1-based rank of the first relevant document, counting each document once."""
    for rank, doc_id in enumerate(dedupe(ranked_doc_ids), 1):
        if doc_id in relevant:
            return rank
    return None


def dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def hit_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    return float(any(d in relevant for d in dedupe(ranked)[:k]))


def recall_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    return len(relevant & set(dedupe(ranked)[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: list[str], relevant: set[str]) -> float:
    rank = first_relevant_rank(ranked, relevant)
    return 1.0 / rank if rank else 0.0


def ndcg_at_k(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Binary-relevance nDCG over distinct documents."""
    gains = [1.0 if d in relevant else 0.0 for d in dedupe(ranked)[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation) | {"’", "‘", "“", "”"})
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_recall(prediction: str, reference: str) -> float:
    """Share of the reference's (normalised) tokens found in the prediction: are the facts there?"""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not ref:
        return float(not pred)
    return sum((Counter(pred) & Counter(ref)).values()) / len(ref)


def comparable(text: str) -> str:
    """Text as a reader compares it: Unicode compatibility forms (ligatures, non-breaking spaces),
    case, table cell separators and runs of whitespace do not count."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().replace(" | ", " ").split())


def passage_contains(passage: str, contexts: list[str]) -> bool:
    """Does the passage hold one of the reference sentences (compared as `comparable` text)?"""
    squeezed = comparable(passage)
    return any(comparable(c) in squeezed for c in contexts if c.strip())


def holds_key_fact(answer: str, contexts: list[str], min_share: float = 0.75) -> float:
    """Does the answer carry the fact asked for? It quotes a reference sentence, or holds at least
    `min_share` of one's content words (stemmed): a rephrased fact counts, a neighbouring sentence does not."""
    from rag.citations import word_coverage

    contexts = [c for c in contexts if c.strip()]
    if passage_contains(answer, contexts):
        return 1.0
    return float(any(word_coverage(c, answer) >= min_share for c in contexts))
