"""Refusal: decide from the retrieved evidence whether the articles can answer the question at all.

Three checks, each with a reason a student can read:
1. relevance: the best passage's cosine similarity reaches `min_relevance`;
2. coverage: every number, year and name the question asks about appears in the passages
   (or their titles and dates);
3. answer type: a question asking how many / what share / when / how old needs one of its best
   candidate sentences to hold a number / a percentage / a date / an age; for a number or a
   percentage, that sentence must also be about what the question asks (use one of its content
   words besides the names, or a near-synonym), or a nearby number on another subject would pass
   for the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np

from rag.citations import facts_in, missing_facts
from rag.records import Hit
from rag.keywords import bm25_tokenize

NUMBER_WORDS = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen|dozens|hundreds?|thousands?|millions?|billions?"
HAS_NUMBER = re.compile(rf"\d|\b({NUMBER_WORDS})\b", re.I)
HAS_PERCENT = re.compile(r"%|\bpercent\b|\bper cent\b", re.I)
HAS_DATE = re.compile(
    r"\b(\d{4}|January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|yesterday|today|last (week|month|year)|next (week|month)|this week)\b"
    r"|\b(Jan|Feb|Aug|Sept?|Oct|Nov|Dec)\.\s*\d"
)
HAS_AGE = re.compile(r"\b\d{1,3}-year-old\b|\baged? \d{1,3}\b|\b\d{1,3} years old\b|\b[A-Z]\w+, \d{1,3},")
DEMONYM = re.compile(r"(ish|ian|ese|ic|an|i)$")  # adjectives of place: the text may use the country's name instead

ANSWER_TYPES: list[tuple[str, re.Pattern[str]]] = [
    ("age", re.compile(r"^\s*how old\b", re.I)),
    ("percent", re.compile(r"\b(percent|percentage|interest rate|turnout|share of the vote)\b", re.I)),
    ("number", re.compile(r"^\s*(how (many|much|old|long|big|large|far)|what (number|amount|sum|price|size))\b", re.I)),
    ("date", re.compile(r"^\s*(when|on what (date|day)|what (date|day|year)|on which (date|day)|which (date|day|year)|in what year)\b", re.I)),
]


WordVectors = Callable[[list[str]], np.ndarray]  # unit vectors, one row per word
WORD = re.compile(r"[a-z][a-z'-]+")
SYNONYM_SIMILARITY = 0.8  # single-word cosine at which two words mean the same here (lend ~ loan 0.81, gas ~ fuel 0.76)

# Words that say how a question is asked, not what it is about.
QUESTION_FORM = (
    "how many much long old big large far what which when where who whom whose why number amount sum price size date day "
    "year percent percentage share did does do done was were is are be been being had has have it its he she his her him "
    "they them their this that these those there"
)


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
    if kind == "age":
        return bool(HAS_AGE.search(sentence))
    return bool(HAS_DATE.search(sentence))


def focus_words(question: str) -> list[str]:
    """The question's content words other than its names: what the answer must be about."""
    names = facts_in(question)
    words = sorted(set(WORD.findall(question.lower())))
    stems, name_stems, form_stems = bm25_tokenize([" ".join(words), " ".join(names) or "-", QUESTION_FORM])
    kept = set(stems) - set(name_stems) - set(form_stems)
    return [w for w, stem in zip(words, bm25_tokenize(words)) if stem and stem[0] in kept]


def about_the_focus(focus: list[str], sentence: str, word_vectors: WordVectors | None) -> bool:
    """The sentence uses one of the focus words, or a near-synonym of one (lend ~ loan) when vectors are given."""
    words = sorted(set(WORD.findall(sentence.lower())))
    if set(bm25_tokenize([" ".join(focus)])[0]) & set(bm25_tokenize([" ".join(words)])[0]):
        return True
    if word_vectors is None or not words:
        return False
    similarity = word_vectors(focus) @ word_vectors(words).T
    return bool((similarity >= SYNONYM_SIMILARITY).any())


def states_answer(question: str, kind: str | None, candidates: list[str], word_vectors: WordVectors | None = None) -> bool:
    """Does a candidate hold the kind of answer asked for, and (for amounts) about the question's subject?"""
    typed = [s for s in candidates if has_answer_type(s, kind, question)]
    focus = focus_words(question) if kind in ("number", "percent") else []
    if not typed or not focus:
        return bool(typed)
    return any(about_the_focus(focus, s, word_vectors) for s in typed)


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


def assess(
    question: str, hits: list[Hit], candidates: list[str], min_relevance: float, word_vectors: WordVectors | None = None
) -> Decision:
    """Should the pipeline refuse? `candidates` are the best-scoring answer sentences; `word_vectors`
    embeds single words, so that an amount stated with a synonym of the question's word counts."""
    relevance = max((h.dense_score or 0.0 for h in hits), default=0.0)
    if relevance < min_relevance:
        return Decision(True, f"best passage similarity {relevance:.2f} is below RAG_MIN_RELEVANCE={min_relevance:.2f}")
    missing = question_facts_missing(question, hits)
    if missing:
        return Decision(True, f"the articles never mention {', '.join(missing)}")
    kind = expected_answer_type(question)
    if kind == "date" and any(h.chunk.date for h in hits[:2]):
        return Decision(False)  # the article's own date may be the answer ("has arrived")
    if candidates and kind and not states_answer(question, kind, candidates, word_vectors):
        return Decision(True, f"no passage states the {kind} the question asks for")
    return Decision(False)
