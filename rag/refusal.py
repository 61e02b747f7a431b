"""Refusal: decide from the retrieved evidence whether the articles can answer the question at all.

Three checks, each with a reason a student can read:
1. relevance: the best passage's cosine similarity reaches `min_relevance`;
2. coverage: every number, year and name the question asks about appears in the passages
   (or their titles and dates);
3. answer type: a question asking how many / what share / when needs its best candidate
   sentence to hold a number / a percentage / a date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from rag.citations import facts_in, missing_facts
from rag.records import Hit

NUMBER_WORDS = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen|dozens|hundreds?|thousands?|millions?|billions?"
HAS_NUMBER = re.compile(rf"\d|\b({NUMBER_WORDS})\b", re.I)
HAS_PERCENT = re.compile(r"%|\bpercent\b|\bper cent\b", re.I)
HAS_DATE = re.compile(
    r"\b(\d{4}|January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|yesterday|today|last (week|month|year)|next (week|month)|this week)\b"
    r"|\b(Jan|Feb|Aug|Sept?|Oct|Nov|Dec)\.\s*\d"
)
DEMONYM = re.compile(r"(ish|ian|ese|ic|an|i)$")  # adjectives of place: the text may use the country's name instead

ANSWER_TYPES: list[tuple[str, re.Pattern[str]]] = [
    ("percent", re.compile(r"\b(percent|percentage|interest rate|turnout|share of the vote)\b", re.I)),
    ("number", re.compile(r"^\s*(how (many|much|old|long|big|large|far)|what (number|amount|sum|price|size))\b", re.I)),
    ("date", re.compile(r"^\s*(when|on what (date|day)|what (date|day|year)|on which (date|day)|which (date|day|year)|in what year)\b", re.I)),
]


@dataclass
class Decision:
    refuse: bool
    reason: str = ""


def expected_answer_type(question: str) -> str | None:
    return next((kind for kind, pattern in ANSWER_TYPES if pattern.search(question)), None)


def has_answer_type(sentence: str, kind: str | None, question: str) -> bool:
    if kind is None:
        return True
    if kind == "percent":
        return bool(HAS_PERCENT.search(sentence))
    if kind == "number":
        return bool(HAS_NUMBER.search(sentence))
    return bool(HAS_DATE.search(sentence))


def metadata_text(hit: Hit) -> str:
    """Titles and dates (spelled out) count as evidence too: 'September 2020' is in the byline."""
    c = hit.chunk
    parts = [c.title or "", c.publisher or ""]
    if c.date:
        d = date.fromisoformat(c.date)
        parts.append(f"{d:%B} {d.day}, {d.year} {d.year}")
    return " ".join(parts)


def question_facts_missing(question: str, hits: list[Hit]) -> list[str]:
    evidence = "\n".join(h.chunk.text + "\n" + metadata_text(h) for h in hits)
    asked = {f for f in facts_in(question) if f[0].isdigit() or not DEMONYM.search(f)}
    missing = missing_facts(question, evidence)
    return [f for f in missing if f in asked]


def assess(question: str, hits: list[Hit], candidates: list[str], min_relevance: float) -> Decision:
    """Should the pipeline refuse? `candidates` are the best-scoring answer sentences."""
    relevance = max((h.dense_score or 0.0 for h in hits), default=0.0)
    if relevance < min_relevance:
        return Decision(True, f"best passage similarity {relevance:.2f} is below RAG_MIN_RELEVANCE={min_relevance:.2f}")
    missing = question_facts_missing(question, hits)
    if missing:
        return Decision(True, f"the articles never mention {', '.join(missing)}")
    kind = expected_answer_type(question)
    if kind == "date" and any(h.chunk.date for h in hits[:2]):
        return Decision(False)  # the article's own date may be the answer ("has arrived")
    if candidates and not any(has_answer_type(s, kind, question) for s in candidates):
        return Decision(True, f"no passage states the {kind} the question asks for")
    return Decision(False)
