"""The answer policy: answer, answer with low confidence, or refuse, from the question and its evidence.

It owns the question analysis (the kind of answer asked for, the words and names it is about),
the evidence features, the decision, and the detection of a model's own refusal. The decision is
a logistic model over six generic features (`Evidence`), fitted on the tune halves of the
development collections by `eval/policy/fit.py` and stored in `policy_model.json`; its two
thresholds are settings (`RAG_REFUSE_BELOW`, `RAG_UNSURE_BELOW`). No feature names a collection's
people, places or topics: names are matched generically (case, accents, possessives, compounds,
acronyms, word forms, and near-synonyms through the embedding model).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from rag.citations import facts_in
from rag.keywords import bm25_tokenize
from rag.records import Hit

Outcome = Literal["answered", "low_confidence", "refused"]
WordVectors = Callable[[list[str]], np.ndarray]  # unit vectors, one row per word
Specificity = Callable[[list[str]], np.ndarray]  # analysed terms -> 0..1, rarer in the collection is higher
MODEL_FILE = "policy_model.json"

# ---- question analysis ----------------------------------------------------------------------------
NUMBER_WORDS = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen|dozens|hundreds?|thousands?|millions?|billions?"
HAS_NUMBER = re.compile(rf"\d|\b({NUMBER_WORDS})\b", re.I)
HAS_PERCENT = re.compile(r"%|\bpercent\b|\bper cent\b", re.I)
HAS_DATE = re.compile(  # a four-digit number is a year only from 1500 to 2099, not an issue number (#2328)
    r"\b(1[5-9]\d\d|20\d\d|January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|yesterday|today|last (week|month|year)|next (week|month)|this week)\b"
    r"|\b(Jan|Feb|Aug|Sept?|Oct|Nov|Dec)\.\s*\d"
)
HAS_AGE = re.compile(r"\b\d{1,3}-year-old\b|\baged? \d{1,3}\b|\b\d{1,3} years old\b|\b[A-Z]\w+, \d{1,3},")

ANSWER_TYPES: list[tuple[str, re.Pattern[str]]] = [
    ("age", re.compile(r"^\s*how old\b", re.I)),
    ("percent", re.compile(r"\b(percent|percentage|interest rate|turnout|share of the vote)\b", re.I)),
    ("number", re.compile(
        r"^\s*(how (many|much|old|long|big|large|far)|what (number|amount|sum|price|size)"
        r"|(what|which) (is|are|was|were) the (\w+ ){0,3}?(number|amount|count|size|limit|length|price|total))\b", re.I)),
    ("code", re.compile(
        r"^\s*(how (do|can|should|would|could) (i|we|you|one)|how to|(what|which) (\w+ ){0,2}?"
        r"(command|function|option|variable|method|parameter|argument|directive|setting)s?)\b", re.I)),
    ("date", re.compile(r"^\s*(when|on what (date|day)|what (date|day|year)|on which (date|day)|which (date|day|year)|in what year)\b", re.I)),
]
KIND_NAMES = {"code": "command, name or setting"}  # how a reason names a kind, where its key is not a word
WORD = re.compile(r"[a-z][a-z'-]+")
SYNONYM_SIMILARITY = 0.8  # single-word cosine at which two words mean the same (lend ~ loan 0.81, gas ~ fuel 0.76)
NAME_SIMILARITY = 0.78  # a name and a word of the text that name the same thing (Europe ~ EU 0.80, Europe ~ Russia 0.66)
MIN_PREFIX = 4  # Russia ~ Russian, Europe ~ European: one form a prefix of the other, this long at least
ABBREVIATION_SIMILARITY = 0.5  # MB ~ megabytes 0.65, KB ~ kilobytes 0.52; MB ~ member 0.27, MB ~ mob 0.31

# Words that say how a question is asked, not what it is about.
QUESTION_FORM = (
    "how many much long old big large far what which when where who whom whose why number amount sum price size date day "
    "year percent percentage share did does do done was were is are be been being had has have it its he she his her him "
    "they them their this that these those there can could should would will i my me we our you your"
)


# A leading clause that sets the scene ("When adduser creates an account, where ..."): the question is what follows.
LEADING_CLAUSE = re.compile(r"^\s*(?:when|if|after|before|once|while)\b[^,?]*,\s*(?=(?:\w+\s+)?(?:what|which|where|who|whom|whose|why|how|when)\b)", re.I)


# A word before the question word that does not change what is asked ("For how many days…", "Roughly how many…").
LEADING_WORD = re.compile(r"^\s*(?:for|in|on|at|by|to|from|after|within|roughly|approximately|about|exactly|and|so|but)\s+"
                          r"(?=(?:what|which|where|who|whom|whose|why|how|when)\b)", re.I)


def expected_answer_type(question: str) -> str | None:
    asked = LEADING_WORD.sub("", LEADING_CLAUSE.sub("", question, count=1), count=1)
    return next((kind for kind, pattern in ANSWER_TYPES if pattern.search(asked)), None)


def has_answer_type(sentence: str, kind: str | None) -> bool:
    if kind is None:
        return True
    pattern = {"percent": HAS_PERCENT, "number": HAS_NUMBER, "age": HAS_AGE, "code": HAS_CODE}.get(kind, HAS_DATE)
    return bool(pattern.search(sentence))


# A name in code: dotted (json.loads, requests.adapters.HTTPAdapter), snake_case (pool_timeout) or
# called (get_adapter()). A question about a parameter the text never names is not answered by it.
CODE_NAME = re.compile(r"\b[A-Za-z_]\w+(?:\.\w{2,})+|\b\w*[A-Za-z0-9]_\w+|\b\w+(?=\(\))")  # not "e.g", "U.S"
# How something is done in code: a name in code, a manual page (script(1)), an option (-c, --dry-run),
# a path, a setting (x=1).
HAS_CODE = re.compile(rf"{CODE_NAME.pattern}|\b\w[\w.-]*\(\d\w?\)|(?<![\w-])--?[A-Za-z][\w-]*|(?<![\w.])[~.]{{0,2}}/\w[\w.-]*|\w=\S")


NAME_PARTS = re.compile(r"[-/–.]")  # Putin-Lukashenko, TCP/IP, requests.adapters.HTTPAdapter


def asked_names(question: str) -> set[str]:
    """The numbers, dates and names the question asks about, and the names in code it uses; a name
    that is only a part of another (HTTPAdapter in requests.adapters.HTTPAdapter) is that one."""
    names = facts_in(question) | set(CODE_NAME.findall(question))
    parts = {part for name in names for part in NAME_PARTS.split(name) if part != name}
    return {name for name in names if name[0].isdigit() or name not in parts}


def content_terms(question: str) -> set[str]:
    """The question's stemmed content words, without the words that only say how it is asked."""
    terms, form = bm25_tokenize([question, QUESTION_FORM])
    return set(terms) - set(form)


def focus_words(question: str) -> list[str]:
    """The question's content words other than its names: what the answer must be about."""
    names = facts_in(question)
    words = sorted(set(WORD.findall(question.lower())))
    stems, name_stems, form_stems = bm25_tokenize([" ".join(words), " ".join(names) or "-", QUESTION_FORM])
    kept = set(stems) - set(name_stems) - set(form_stems)
    return [w for w, stem in zip(words, bm25_tokenize(words)) if stem and stem[0] in kept]


def with_synonym(words: list[str], text: str, word_vectors: WordVectors | None) -> list[str]:
    """The words that have a near-synonym among the text's words (lend ~ loan), by single-word vectors."""
    others = sorted(set(WORD.findall(text.lower())))
    if word_vectors is None or not words or not others:
        return []
    similarity = word_vectors(words) @ word_vectors(others).T
    return [w for w, row in zip(words, similarity) if row.max() >= SYNONYM_SIMILARITY]


def about_the_focus(focus: list[str], sentence: str, word_vectors: WordVectors | None) -> bool:
    """The sentence uses one of the focus words, or a near-synonym of one (lend ~ loan) when vectors are given."""
    words = sorted(set(WORD.findall(sentence.lower())))
    if set(bm25_tokenize([" ".join(focus)])[0]) & set(bm25_tokenize([" ".join(words)])[0]):
        return True
    return bool(with_synonym(focus, sentence, word_vectors))


def states_answer(question: str, kind: str | None, sentences: Sequence[str], word_vectors: WordVectors | None = None) -> bool:
    """Does a sentence hold the kind of answer asked for, and (for amounts) about the question's subject?"""
    typed = [s for s in sentences if has_answer_type(s, kind)]
    focus = focus_words(question) if kind in ("number", "percent") else []
    if not typed or not focus:
        return bool(typed)
    return any(about_the_focus(focus, s, word_vectors) for s in typed)


# ---- matching names generically -----------------------------------------------------------------------
def fold(text: str) -> str:
    """Case, accents and possessives do not count: "Łukašenka's" ~ "lukasenka"."""
    decomposed = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return re.sub(r"['’]s\b", "", plain)


def metadata_text(hit: Hit) -> str:
    """Titles, sections and dates (spelled out) count as evidence too: 'September 2020' is in the byline."""
    c = hit.chunk
    parts = [c.title or "", c.section or "", c.publisher or ""]
    if c.date:
        d = date.fromisoformat(c.date)
        parts.append(f"{d:%B} {d.day}, {d.year} {d.year}")
    return " ".join(parts)


class NameMatcher:
    """Finds a question's names and numbers in the evidence without lists of names."""

    def __init__(self, evidence: str, word_vectors: WordVectors | None = None):
        self.evidence = evidence.replace(",", "")
        self.words = set(re.findall(r"\w+", fold(evidence)))
        self.capitalised = sorted(set(re.findall(r"\b[A-Z][\w-]*", evidence)))
        self.initials = {initials for run in re.findall(r"(?:\b[A-Z]\w+\s+)+[A-Z]\w+", evidence) for initials in _initials(run.split())}
        self.word_vectors = word_vectors

    def missing(self, question: str) -> list[str]:
        return [fact for fact in sorted(asked_names(question)) if not self.mentions(fact)]

    def mentions(self, fact: str) -> bool:
        if fact[0].isdigit():
            return re.search(rf"(?<![\d.]){re.escape(fact)}(?![\d]|\.\d)", self.evidence) is not None
        # Putin-Lukashenko: both named; Session.get_adapter: the method's page may name its class
        # only in a heading, so each part is looked for on its own
        parts = [p for p in NAME_PARTS.split(fact) if p]
        return all(self._word_found(p) for p in parts) or self._near_synonym(fact)

    def _word_found(self, word: str) -> bool:
        folded = fold(word)
        if folded in self.words or (word.isupper() and (word in self.initials or self._abbreviates(word))):
            return True
        if len(folded) < MIN_PREFIX:
            return False
        return any(w.startswith(folded) or (len(w) >= MIN_PREFIX and folded.startswith(w) and len(w) >= len(folded) - 3)
                   for w in self.words)

    def _abbreviates(self, abbreviation: str) -> bool:
        """MB ~ megabytes: a longer word of the text that starts with the abbreviation's first letter and
        holds the rest in order, which the embedding model places near it (EU ~ European Union is `initials`)."""
        if self.word_vectors is None or len(abbreviation) < 2:
            return False
        letters = re.compile(".*".join(map(re.escape, abbreviation.lower())))
        words = sorted(w for w in self.words if len(w) > len(abbreviation) and letters.match(w))
        if not words:
            return False
        similarity = self.word_vectors([abbreviation]) @ self.word_vectors(words).T
        return bool((similarity >= ABBREVIATION_SIMILARITY).any())

    def _near_synonym(self, fact: str) -> bool:
        if self.word_vectors is None or not self.capitalised:
            return False
        similarity = self.word_vectors([fact]) @ self.word_vectors(self.capitalised).T
        return bool((similarity >= NAME_SIMILARITY).any())


def _initials(words: list[str], longest: int = 6) -> set[str]:
    """The initials of every run of two or more of these capitalised words: "The European Union" -> TE, EU, TEU."""
    return {"".join(w[0] for w in words[i:j]) for i in range(len(words)) for j in range(i + 2, min(len(words), i + longest) + 1)}


# ---- evidence and the decision ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """What the decision reads: six numbers, each generic, each in the ablation table of the README."""

    relevance: float  # best cosine between the question and a passage (or one of its sentences)
    relevance_gap: float  # how far the best passage stands above the other retrieved ones
    term_coverage: float  # share of the question's content words in the best-covering passage and its headings,
    #                       each weighted by how rare it is in the collection (BM25's IDF)
    unknown_terms: float  # share of the question's content words that no passage of the collection holds
    name_coverage: float  # share of the question's names and numbers found in the passages (1 when it has none),
    #                      a missing name weighted by how rare it is in the collection
    answer_type: float  # 1 when a best sentence holds the kind of answer asked for (or none is asked)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def vector(self, names: Sequence[str]) -> np.ndarray:
        values = asdict(self)
        return np.array([values[n] for n in names], dtype=np.float64)


@dataclass(frozen=True)
class PolicyModel:
    """Logistic regression over standardised features: P(the passages answer the question)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> PolicyModel:
        text = path.read_text(encoding="utf-8") if path else (resources.files("rag") / MODEL_FILE).read_text(encoding="utf-8")
        raw = json.loads(text)
        return cls(tuple(raw["features"]), tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                   float(raw["intercept"]), raw.get("fitted_on", ""))

    def to_json(self) -> dict:
        return asdict(self)

    def contributions(self, evidence: Evidence) -> np.ndarray:
        """Each feature's share of the logit: how far it pushes towards answering (+) or refusing (-)."""
        z = (evidence.vector(self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z * np.asarray(self.coef)

    def probability(self, evidence: Evidence) -> float:
        logit = float(self.contributions(evidence).sum() + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    confidence: float  # the model's probability that the passages answer the question
    reason: str = ""
    evidence: Evidence | None = None
    missing: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"

    @property
    def low_confidence(self) -> bool:
        return self.outcome == "low_confidence"

    def to_json(self) -> dict:
        return {"outcome": self.outcome, "confidence": round(self.confidence, 4), "reason": self.reason,
                "missing": list(self.missing),
                "evidence": None if self.evidence is None else {k: round(v, 4) for k, v in asdict(self.evidence).items()}}


class AnswerPolicy:
    """Reads the evidence for a question and decides: answered, low_confidence or refused."""

    def __init__(self, model: PolicyModel, refuse_below: float, unsure_below: float,
                 word_vectors: WordVectors | None = None, specificity: Specificity | None = None):
        self.model = model
        self.refuse_below = refuse_below
        self.unsure_below = unsure_below
        self.word_vectors = word_vectors
        self.specificity = specificity

    def evidence(self, question: str, hits: list[Hit], ranked_sentences: Sequence[str],
                 evidence_sentences: int = 3) -> tuple[Evidence, list[str]]:
        """The features, and the names or numbers of the question the passages never mention."""
        dense = sorted((h.dense_score or 0.0 for h in hits), reverse=True)
        texts = [f"{metadata_text(h)}\n{h.chunk.text}" for h in hits]
        terms = sorted(content_terms(question))
        weight = self.specificity(terms) if self.specificity and terms else np.ones(len(terms))
        coverage = self._coverage(question, terms, weight, texts, ranked_sentences[:evidence_sentences])
        asked = asked_names(question)
        missing = NameMatcher("\n".join(texts), self.word_vectors).missing(question) if asked else []
        kind = expected_answer_type(question)
        own_date = kind == "date" and any(h.chunk.date for h in hits[:2])  # the article's own date may be the answer
        typed = own_date or states_answer(question, kind, ranked_sentences[:evidence_sentences], self.word_vectors)
        evidence = Evidence(
            relevance=dense[0] if dense else 0.0,
            relevance_gap=dense[0] - float(np.mean(dense[1:])) if len(dense) > 1 else 0.0,
            term_coverage=coverage,
            unknown_terms=float((weight >= 1.0).mean()) if terms and self.specificity else 0.0,
            name_coverage=1.0 - self._surprise(missing) / len(asked) if asked else 1.0,
            answer_type=float(typed),
        )
        return evidence, missing

    def _surprise(self, missing: list[str]) -> float:
        """How much the names the passages lack count: a name the whole collection keeps repeating
        ("Debian" in the Debian manuals) is its subject, so the passages' silence on it says little;
        a name in no passage at all counts fully. Each name weighs its rarest word's specificity."""
        if not missing or self.specificity is None:
            return float(len(missing))
        return float(sum(self.specificity(terms).max() if terms else 1.0 for terms in bm25_tokenize(missing)))

    def _coverage(self, question: str, terms: list[str], weight: np.ndarray, texts: list[str], sentences: Sequence[str]) -> float:
        """The best passage's share of the question's terms, each weighted by its rarity (1 for a question of none)."""
        if not terms:
            return 1.0
        if not texts:
            return 0.0
        passage_terms = [set(t) for t in bm25_tokenize(texts)]
        said_otherwise = self._said_otherwise(question, set(terms).difference(*passage_terms), sentences)
        found = np.array([[t in held or t in said_otherwise for t in terms] for held in passage_terms], dtype=np.float64)
        return float((found @ weight).max() / max(weight.sum(), 1e-9))

    def _said_otherwise(self, question: str, unseen: set[str], sentences: Sequence[str]) -> set[str]:
        """The question's terms no passage holds but whose near-synonym a best sentence uses (lend ~ loan)."""
        if not unseen:
            return set()
        question_words = sorted(set(WORD.findall(question.lower())))
        stems = {w: stem[0] for w, stem in zip(question_words, bm25_tokenize(question_words)) if stem and stem[0] in unseen}
        return {stems[w] for w in with_synonym(list(stems), " ".join(sentences), self.word_vectors)}

    def _weakest(self, question: str, evidence: Evidence, missing: list[str]) -> str:
        """The reason a student can read: the feature that pulled the confidence down the most."""
        pulls = dict(zip(self.model.features, self.model.contributions(evidence)))
        weakest = min(pulls, key=pulls.get)
        if weakest == "name_coverage" and missing:
            return f"the passages found never mention {', '.join(missing)}"
        if weakest == "answer_type" and not evidence.answer_type:
            kind = expected_answer_type(question)
            return f"no passage states the {KIND_NAMES.get(kind, kind)} the question asks for"
        if weakest in ("term_coverage", "unknown_terms"):
            return f"the passages hold only {evidence.term_coverage:.0%} of the question's words"
        return f"the closest passage is far from the question (similarity {evidence.relevance:.2f})"

    def decide(self, question: str, hits: list[Hit], ranked_sentences: Sequence[str]) -> Verdict:
        """`ranked_sentences`: the passages' best answer sentences, best first (a handful is enough)."""
        if not hits or not ranked_sentences:
            return Verdict("refused", 0.0, "no passage was found for the question")
        evidence, missing = self.evidence(question, hits, ranked_sentences)
        confidence = self.model.probability(evidence)
        if confidence >= self.unsure_below:
            return Verdict("answered", confidence, "", evidence, tuple(missing))
        outcome: Outcome = "refused" if confidence < self.refuse_below else "low_confidence"
        threshold, setting = (self.refuse_below, "RAG_REFUSE_BELOW") if outcome == "refused" else (self.unsure_below, "RAG_UNSURE_BELOW")
        why = self._weakest(question, evidence, missing)
        return Verdict(outcome, confidence, f"{why} (confidence {confidence:.2f} < {setting}={threshold:.2f})", evidence, tuple(missing))


# ---- a model's own refusal ----------------------------------------------------------------------------------
MODEL_REFUSAL = re.compile(
    r"do(?:es)? not (?:cover|contain|mention|say|provide|include|answer|specify|state)|not (?:found|mentioned|covered|stated)|no information"
    r"|no (?:other |further |specific )?information|not provide|cannot (?:answer|find|be answered)|don't know|do not know"
    r"|not enough information",
    re.I,
)


def is_model_refusal(text: str, refusal_text: str) -> bool:
    """The model declined: empty, our refusal sentence, or a refusal phrase in its first sentence."""
    stripped = text.strip()
    if not stripped or refusal_text.lower().rstrip(".") in stripped.lower():
        return True
    first = re.split(r"(?<=[.!?])\s", stripped, maxsplit=1)[0]
    return bool(MODEL_REFUSAL.search(first)) and re.search(r"\b(source|article|text|context|information)s?\b", first, re.I) is not None
