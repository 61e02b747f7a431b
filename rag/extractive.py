"""Extractive answering, no LLM: the sentences of the top passages that best answer the question.

Also the fallback when the LLM endpoint fails, and the evidence the refusal check reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.chunking import passage_units
from rag.records import Hit, PassageSpan, Sentence
from rag.policy import expected_answer_type, has_answer_type
from rag.keywords import bm25_tokenize

LEXICAL_WEIGHT = 0.3  # share of question terms found in the sentence, added to the cosine
TYPE_BONUS = 0.1  # a sentence holding the kind of answer asked for (a number for "how many")
NEAR_BEST = 3  # the sentences scoring within the margin of the best one that count as the evidence
# A sentence that hands over to what follows it ("...use the following command:"): the next unit is the answer.
ANNOUNCES = re.compile(r":\s*$|\b(?:following|as follows|below)\b", re.I)
# A label, not a statement: a caption or an admonition title ("TIP Testing the DNS server").
LABEL_WORDS = 8
STATEMENT_END = re.compile(r"[.!?:;)\]\"”]$")


@dataclass(frozen=True)
class Candidate:
    source: int  # 1-based source number
    text: str
    score: float
    typed: bool = True  # holds the kind of answer the question asks for (always, when it asks for none)
    follow: str | None = None  # the unit after it in its passage: a command after "run the following:"
    span: tuple[int, int] = (0, 0)  # where it is in its passage's text
    follow_span: tuple[int, int] = (0, 0)


def is_label(sentence: str) -> bool:
    """A short title-like line that states nothing: a few words, mostly capitalised (or led by a
    word in capitals, as admonitions are), with no closing punctuation. Code lines are lower case."""
    words = sentence.split()
    if len(words) > LABEL_WORDS or STATEMENT_END.search(sentence):
        return False
    capitalised = sum(w[0].isupper() for w in words)
    return capitalised * 2 > len(words) or (len(words[0]) > 1 and words[0].isupper())


def lexical_overlap(question_terms: set[str], sentence: str | list[str]) -> float:
    """Share of the question's terms in the sentence (given as text, or already tokenised)."""
    if not question_terms:
        return 0.0
    terms = bm25_tokenize([sentence])[0] if isinstance(sentence, str) else sentence
    return len(question_terms & set(terms)) / len(question_terms)


class ExtractiveAnswerer:
    def __init__(self, embedder, max_sentences: int = 2, margin: float = 0.12, store=None):
        self.embedder = embedder
        self.store = store  # its stored sentence vectors spare re-embedding the passages
        self.max_sentences = max_sentences
        self.margin = margin  # keep sentences scoring within this of the best one

    def rank(self, question: str, hits: list[Hit], query_vector: np.ndarray | None = None) -> list[Candidate]:
        """Every distinct sentence of the passages, best answer first (`query_vector`: the question, embedded)."""
        pieces: list[tuple[int, str]] = []
        follows: list[str | None] = []
        where: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (its span, the next unit's span)
        vectors: list[np.ndarray | None] = []
        seen: set[str] = set()
        for n, hit in enumerate(hits, 1):
            text = hit.chunk.text
            spans = passage_units(hit.chunk)
            stored = self.store.sentence_vectors_of(hit.chunk.chunk_id) if self.store is not None else None
            if stored is not None and len(stored) != len(spans):
                stored = None
            units = [" ".join(text[a:b].split()) for a, b in spans]
            for i, sentence in enumerate(units):
                if len(sentence) > 20 and sentence not in seen and not is_label(sentence):
                    seen.add(sentence)
                    pieces.append((n, sentence))
                    follows.append(units[i + 1] if i + 1 < len(units) else None)
                    where.append((spans[i], spans[i + 1] if i + 1 < len(units) else (0, 0)))
                    vectors.append(None if stored is None else stored[i])
        if not pieces:
            return []
        q = self.embedder.encode_queries([question])[0] if query_vector is None else query_vector
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            for i, v in zip(missing, self.embedder.encode_documents([pieces[i][1] for i in missing])):
                vectors[i] = v
        question_terms, *sentence_terms = bm25_tokenize([question] + [s for _, s in pieces])  # one pass, not one per sentence
        terms = set(question_terms)
        kind = expected_answer_type(question)
        typed = [has_answer_type(s, kind) for _, s in pieces]
        scores = [
            float(v @ q) + LEXICAL_WEIGHT * lexical_overlap(terms, st) + TYPE_BONUS * t
            for v, st, t in zip(vectors, sentence_terms, typed)
        ]
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [Candidate(pieces[i][0], pieces[i][1], scores[i], typed[i], follows[i], *where[i]) for i in order]

    def near_best(self, candidates: list[Candidate]) -> list[Candidate]:
        """The few sentences close enough to the best one to be the answer: the evidence refusal reads."""
        if not candidates:
            return []
        return [c for c in candidates[:NEAR_BEST] if c.score >= candidates[0].score - self.margin]

    def answer(self, candidates: list[Candidate]) -> list[Sentence]:
        window = self.near_best(candidates)
        chosen = window[: self.max_sentences]
        holding = next((c for c in window if c.typed), None)
        if holding is not None and holding not in chosen:
            chosen = [*chosen[:-1], holding]  # the sentence stating the number/date asked for must be in the answer
        quotes = [(c.text, c.source, c.span) for c in chosen]
        best = chosen[0] if chosen else None
        if best is not None and best.follow and ANNOUNCES.search(best.text) and best.follow not in {q[0] for q in quotes}:
            quotes.insert(1, (best.follow, best.source, best.follow_span))  # the answer continues in the next unit
        return [Sentence(text, [n], True, "quoted from the source", [PassageSpan(n, *span)]) for text, n, span in quotes]
