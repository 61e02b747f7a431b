"""Citations: parse `[n]` markers, map them to sources, and check each sentence against what it cites.

A marker out of range (`[0]` included) is dropped and logged, never shifted to another source.
A sentence is supported when it is close in meaning to a cited passage (cosine similarity of
embeddings) or its words are there, every number, date and name in it appears in the passages it
cites, each of its clauses is in them (an invented clause appended to a true one fails), and it does
not negate what the closest sentence of the passage says.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from rag.chunking import passage_units, sentence_spans
from rag.embedding import VectorCache
from rag.records import Citation, Hit, PassageSpan, Sentence

log = logging.getLogger(__name__)

MARKER_GROUP = re.compile(r"\[\s*(\d+(?:\s*[-–,]\s*\d+)*)\s*\]")
ONLY_MARKERS = re.compile(r"^(?:\s*\[[^\]]*\]\s*)+[.!?]?$")
LEADING_MARKERS = re.compile(r"^\s*(?:\[\d+\]\s*)+")
SPACED_MARKER_GROUP = re.compile(r"([ \t]*)" + MARKER_GROUP.pattern)  # a dropped marker takes its space with it
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
NAME = re.compile(r"\b[A-Z][\w’'-]*[a-z][\w’'-]*|\b[A-Z]{2,}\b")
# Capitalised words that are not names (sentence-initial words are skipped anyway).
NOT_NAMES = {"The", "A", "An", "I", "In", "On", "At", "As", "But", "And", "He", "She", "It", "They", "This", "That",
             "According", "Based", "However", "Yes", "No", "Sources", "Source", "While", "After", "Before", "His", "Her",
             "How", "What", "Who", "Whom", "Whose", "When", "Where", "Why", "Which", "Did", "Does", "Do", "Is", "Was", "Were",
             "Are", "Can", "Could", "Will", "Would", "Has", "Have", "Had", "Apart", "Besides"}
POSSESSIVE = re.compile(r"[’']s$")
MAX_RANGE = 20
FINISHED = re.compile(r"[.!?…][\"'”’)\]]*$")  # a sentence's end, closing quotes and brackets after it
# Where a sentence splits into clauses that each make a claim: "..., and it is...", "...; ...", "... because ...".
CLAUSE_BREAK = re.compile(
    r"\s*(?:;|:|\s[-–—]\s|,\s*(?:and|but|while|whereas|which|who|so|as|although|though)\b|\s(?:because|since|whereas|although)\b"
    r"|\s(?:and|but)\s(?=(?:it|this|that|these|those|they|he|she|there|its|their|his|her|the)\b))",
    re.I,
)
NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|neither|nor|cannot|without)\b|n['’]t\b", re.I)
MIN_CLAUSE_WORDS = 3  # a clause this short ("as planned") is part of the claim beside it, not a claim of its own
UNIT_CACHE_SIZE = 20_000  # passage and sentence vectors kept between questions (about 30 MB at 384 dimensions)


@dataclass
class ParsedAnswer:
    text: str  # the answer with only valid markers, each as `[n]`
    sentences: list[Sentence]
    dropped: list[int] = field(default_factory=list)

    def without_unfinished_end(self) -> ParsedAnswer:
        """The answer without a last sentence the model did not finish (it ran out of tokens mid-sentence)."""
        if not self.sentences or FINISHED.search(self.sentences[-1].text):
            return self
        kept = self.sentences[:-1]
        return ParsedAnswer(" ".join(s.text for s in kept), kept, self.dropped)


def expand_group(group: str) -> list[int]:
    """'1, 3-4' -> [1, 3, 4]; ranges wider than MAX_RANGE are kept as their ends only."""
    numbers: list[int] = []
    for part in re.split(r"\s*,\s*", group.strip()):
        bounds = [int(x) for x in re.split(r"\s*[-–]\s*", part) if x]
        if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] <= MAX_RANGE:
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return list(dict.fromkeys(numbers))


def parse_citations(answer: str, n_sources: int) -> ParsedAnswer:
    """Split an answer into sentences with their markers; drop markers outside 1..n_sources."""
    dropped: list[int] = []

    def canonical(match: re.Match) -> str:
        valid = []
        for n in expand_group(match.group(2)):
            if 1 <= n <= n_sources:
                valid.append(n)
            else:
                dropped.append(n)
        markers = "".join(f"[{n}]" for n in valid)
        return match.group(1) + markers if markers else ""  # "billion [0]." -> "billion.", not "billion ."

    text, previous = answer, None
    while text != previous:  # "[[0]1]" -> "[1]": a marker formed by dropping another must be checked too
        previous, text = text, SPACED_MARKER_GROUP.sub(canonical, text)
    if dropped:
        log.warning("dropped citation markers out of range 1..%d: %s", n_sources, dropped)
    sentences: list[Sentence] = []
    for start, end in sentence_spans(text):
        piece = text[start:end]
        markers = [int(m) for m in re.findall(r"\[(\d+)\]", piece)]
        if sentences and ONLY_MARKERS.match(piece):  # "... billion. [1]" -> the marker belongs to the sentence before
            sentences[-1].citations.extend(m for m in markers if m not in sentences[-1].citations)
            continue
        lead = LEADING_MARKERS.match(piece) if sentences else None
        if lead:  # "... billion. [1] Putin said ..." -> markers before any text also belong to the sentence before
            sentences[-1].citations.extend(m for m in markers[: lead.group().count("[")] if m not in sentences[-1].citations)
            piece, markers = piece[lead.end():], markers[lead.group().count("["):]
        plain = re.sub(r"\s*\[\d+\]", "", piece).strip()
        if plain:
            sentences.append(Sentence(text=plain, citations=list(dict.fromkeys(markers)), supported=False))
    return ParsedAnswer(text=re.sub(r"[ \t]+", " ", text).strip(), sentences=sentences, dropped=list(dict.fromkeys(dropped)))


def facts_in(sentence: str) -> set[str]:
    """Numbers, dates and names a sentence asserts: each must appear in the passages it cites."""
    facts = {n.replace(",", "").rstrip(".") for n in NUMBER.findall(sentence)}
    words = sentence.split()
    first = words[0].strip("“\"'‘(") if words else ""
    for name in NAME.findall(sentence):
        if name in NOT_NAMES or name == first:
            continue
        facts.add(name)
    return facts


def missing_facts(sentence: str, passages: str) -> list[str]:
    haystack = passages.replace(",", "")
    lowered = haystack.lower()
    missing = []
    for fact in sorted(facts_in(sentence)):
        if fact[0].isdigit():
            if not re.search(rf"(?<![\d.]){re.escape(fact)}(?![\d]|\.\d)", haystack):
                missing.append(fact)
        elif not re.search(rf"\b{re.escape(POSSESSIVE.sub('', fact).lower())}", lowered):
            missing.append(fact)
    return missing


def word_coverage(sentence: str, passages: str) -> float:
    """Share of the sentence's content words (stemmed, no stop words) found in the passages."""
    from rag.keywords import bm25_tokenize

    claim, source = bm25_tokenize([sentence, passages])
    claim_terms = set(claim)
    return len(claim_terms & set(source)) / len(claim_terms) if claim_terms else 0.0


def unsupported_clause(sentence: str, passages: str, coverage: float) -> str | None:
    """The first clause with a claim of its own whose content words are mostly not in the passages."""
    from rag.keywords import bm25_tokenize

    clauses = [c.strip(" ,") for c in CLAUSE_BREAK.split(sentence) if c and c.strip(" ,")]
    if len(clauses) < 2:
        return None
    *claims, source = bm25_tokenize([*clauses, passages])
    held = set(source)
    for clause, terms in zip(clauses, claims):
        words = set(terms)
        if len(words) >= MIN_CLAUSE_WORDS and len(words & held) / len(words) < coverage:
            return clause
    return None


def negation_added(sentence: str, closest: str) -> bool:
    """The sentence says "not" (no, never, n't...) where the passage sentence closest to it does not:
    the claim is reversed. (The other way round is not checked: a passage sentence often negates a
    side clause that a true summary leaves out.)"""
    return bool(NEGATION.search(sentence)) and not NEGATION.search(closest)


class GroundingChecker:
    """Marks each answer sentence supported or not by the sources it cites."""

    def __init__(self, embedder, threshold: float, coverage: float = 0.75, clause_coverage: float = 0.5):
        self.embedder = embedder
        self.threshold = threshold
        self.coverage = coverage
        self.clause_coverage = clause_coverage
        self._encode_units = VectorCache(lambda texts: self.embedder.encode_documents(texts), UNIT_CACHE_SIZE)

    def check(self, parsed: ParsedAnswer, sources: list[Hit], attribute_uncited: bool = True) -> list[Citation]:
        """Fill `supported`/`reason` on each sentence; cite uncited sentences whose support is clear."""
        if not parsed.sentences or not sources:
            for s in parsed.sentences:
                s.supported, s.reason = False, "no sources"
            return []
        units, owner, whole, spans = self._source_units(sources)
        sent_vecs = self.embedder.encode_documents([s.text for s in parsed.sentences])
        unit_vecs = self._encode_units(units)
        similarity = sent_vecs @ unit_vecs.T  # sentence x unit
        best_by_source = np.full((len(parsed.sentences), len(sources)), -1.0)
        # Until a sentence of the source is closer, the whole passage (each source's last unit) is.
        closest_by_source = np.tile([u for u, is_whole in enumerate(whole) if is_whole], (len(parsed.sentences), 1))
        closest_score = np.full_like(best_by_source, -1.0)
        for u, src in enumerate(owner):
            best_by_source[:, src] = np.maximum(best_by_source[:, src], similarity[:, u])
            if not whole[u]:  # the closest *sentence*, for the negation check
                better = similarity[:, u] > closest_score[:, src]
                closest_score[better, src] = similarity[better, u]
                closest_by_source[better, src] = u

        for i, sentence in enumerate(parsed.sentences):
            closest = [units[u] for u in closest_by_source[i]]
            if sentence.citations:
                self._judge(sentence, [n - 1 for n in sentence.citations], best_by_source[i], sources, closest)
            elif attribute_uncited:
                self._attribute(sentence, best_by_source[i], sources, closest)
            else:
                sentence.supported, sentence.reason = False, "cites no source"
            if sentence.supported:  # where in each cited passage it rests: what the sources panel highlights
                sentence.spans = [PassageSpan(n, *spans[closest_by_source[i][n - 1]]) for n in sentence.citations]
        cited = dict.fromkeys(n for s in parsed.sentences for n in s.citations)
        return [Citation(n, sources[n - 1].chunk.doc_id, sources[n - 1].chunk.chunk_id) for n in cited]

    def supports(self, sentence: str, passages: list[str]) -> bool:
        """Is one sentence supported by these passages taken together? (for scoring answers)"""
        if not passages:
            return False
        sentences = [p[a:b] for p in passages for a, b in sentence_spans(p)]
        vectors = self.embedder.encode_documents([sentence] + sentences + passages)
        scores = vectors[1:] @ vectors[0]
        closest = sentences[int(scores[: len(sentences)].argmax())] if sentences else passages[0]
        return self.verdict(sentence, float(scores.max()), "\n".join(passages), closest)[0]

    def verdict(self, sentence: str, similarity: float, passages: str, closest: str | None = None) -> tuple[bool, str]:
        """Supported when every fact and every clause is in the passages, it does not reverse the
        closest passage sentence (`closest`), and either the meaning is close or its words are there.

        A short true claim drawn from one clause of a long sentence scores a low whole-sentence
        similarity, so word coverage is the second, equally strict-on-facts, route to support.
        """
        missing = missing_facts(sentence, passages)
        if missing:
            return False, f"not in the cited passage: {', '.join(missing)}"
        clause = unsupported_clause(sentence, passages, self.clause_coverage)
        if clause:
            return False, f"not in the cited passage: \"{clause}\""
        if closest is not None and negation_added(sentence, closest):
            return False, "it negates what the cited passage says"
        covered = word_coverage(sentence, passages)
        if similarity >= self.threshold:
            return True, f"similarity {similarity:.2f}"
        if covered >= self.coverage:
            return True, f"{covered:.0%} of its words are in the passage"
        return False, (f"cited passage too far from it (similarity {similarity:.2f} < {self.threshold:.2f}, "
                       f"{covered:.0%} of its words < {self.coverage:.0%})")

    def _judge(self, sentence: Sentence, cited: list[int], best: np.ndarray, sources: list[Hit], closest: list[str]) -> None:
        top = max(cited, key=lambda j: best[j])
        passages = "\n".join(sources[j].chunk.text for j in cited)
        sentence.supported, sentence.reason = self.verdict(sentence.text, float(best[top]), passages, closest[top])

    def _attribute(self, sentence: Sentence, best: np.ndarray, sources: list[Hit], closest: list[str]) -> None:
        """An uncited sentence gets the best source that passes the same check, if any."""
        for j in np.argsort(-best):
            supported, reason = self.verdict(sentence.text, float(best[j]), sources[j].chunk.text, closest[j])
            if supported:
                sentence.citations = [int(j) + 1]
                sentence.supported = True
                sentence.reason = f"citation added by the grounding check ({reason})"
                return
        sentence.supported, sentence.reason = False, "cites no source and no source supports it"

    @staticmethod
    def _source_units(sources: list[Hit]) -> tuple[list[str], list[int], list[bool], list[tuple[int, int]]]:
        """Each source as its sentences plus the whole passage: the units, their source, which are
        whole, and where each lies in its passage."""
        units, owner, whole, where = [], [], [], []
        for j, hit in enumerate(sources):
            text = hit.chunk.text
            spans = passage_units(hit.chunk)
            units += [text[a:b] for a, b in spans] + [text]
            owner += [j] * (len(spans) + 1)
            whole += [False] * len(spans) + [True]
            where += [*spans, (0, len(text))]
        return units, owner, whole, where


def render_answer(sentences: list[Sentence]) -> str:
    """The answer text with each sentence followed by its markers."""
    parts = []
    for s in sentences:
        markers = "".join(f"[{n}]" for n in s.citations)
        parts.append(f"{s.text} {markers}".strip() if markers else s.text)
    return " ".join(parts)
