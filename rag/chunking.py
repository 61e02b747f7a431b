"""Chunking: a cleaned `Document` -> sentence-aware, overlapping `Chunk`s that fit the embedder.

Lengths are counted in the embedding model's own word pieces. Paragraphs are split into
sentences by pysbd; a sentence longer than a chunk is cut at word-piece boundaries.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Protocol

from rag.records import Chunk, Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP]


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], **kwargs) -> dict: ...


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class ChunkerConfig:
    max_tokens: int = 224
    overlap_tokens: int = 64

    def signature(self) -> str:
        return f"sentences-v1:max={self.max_tokens}:overlap={self.overlap_tokens}"


_local = threading.local()


def _segmenter():
    """One pysbd segmenter per thread: `segment` keeps the text in `self.original_text` and finds
    the sentences' spans in it afterwards, so a segmenter shared by threads (the UI answers several
    questions at once) loses or misplaces sentences when another thread's text replaces it."""
    if not hasattr(_local, "segmenter"):
        import pysbd

        _local.segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return _local.segmenter


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence; paragraph breaks always end a sentence."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for paragraph in text.split("\n\n"):
        cursor = 0
        for piece in _segmenter().segment(paragraph) if paragraph.strip() else []:
            sent = piece.sent.strip()
            if not sent:
                continue
            found = paragraph.find(sent, cursor)
            if found < 0:  # pysbd altered the text: fall back to its own span
                found = min(max(piece.start, cursor), len(paragraph))
                sent = paragraph[found:piece.end].strip()
                if not sent:
                    continue
            spans.append((offset + found, offset + found + len(sent)))
            cursor = found + len(sent)
        offset += len(paragraph) + 2
    return spans


class Chunker:
    def __init__(self, tokenizer: Tokenizer, config: ChunkerConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.budget = config.max_tokens - SPECIAL_TOKENS

    def chunk(self, doc: Document) -> list[Chunk]:
        spans = self._measured_spans(doc.text)
        groups = self._group(spans)
        chunks = []
        for position, group in enumerate(groups):
            start, end = group[0].start, group[-1].end
            text = doc.text[start:end]
            chunks.append(
                Chunk(
                    chunk_id=self._chunk_id(doc.doc_id, start, end, text),
                    doc_id=doc.doc_id,
                    position=position,
                    text=text,
                    start=start,
                    end=end,
                    title=doc.title,
                    date=doc.date,
                    url=doc.url,
                    publisher=doc.publisher,
                )
            )
        return chunks

    def _chunk_id(self, doc_id: str, start: int, end: int, text: str) -> str:
        key = f"{doc_id}|{start}|{end}|{self.config.signature()}|{text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    def _measured_spans(self, text: str) -> list[Span]:
        raw = sentence_spans(text)
        if not raw:
            return []
        encoded = self.tokenizer(
            [text[s:e] for s, e in raw], add_special_tokens=False, return_offsets_mapping=True
        )
        spans: list[Span] = []
        for (start, end), offsets in zip(raw, encoded["offset_mapping"]):
            if len(offsets) <= self.budget:
                spans.append(Span(start, end, len(offsets)))
                continue
            # A sentence longer than a chunk: cut it into windows of whole word pieces, between
            # words when possible (a word cut in two re-tokenizes into more pieces).
            i = 0
            while i < len(offsets):
                j = min(i + self.budget, len(offsets))
                if j < len(offsets):
                    j = next((k for k in range(j, i, -1) if _between_words(text, start + offsets[k][0])), j)
                window = offsets[i:j]
                spans.append(Span(start + window[0][0], start + window[-1][1], len(window)))
                i = j
        return spans

    def _group(self, spans: list[Span]) -> list[list[Span]]:
        groups: list[list[Span]] = []
        current: list[Span] = []
        tokens = 0
        for span in spans:
            if current and tokens + span.tokens > self.budget:
                groups.append(current)
                current = self._overlap_tail(current, span.tokens)
                tokens = sum(s.tokens for s in current)
            current.append(span)
            tokens += span.tokens
        if current:
            groups.append(current)
        return groups

    def _overlap_tail(self, previous: list[Span], next_tokens: int) -> list[Span]:
        """Trailing sentences of the previous chunk repeated at the start of the next one."""
        tail: list[Span] = []
        tokens = 0
        for span in reversed(previous[1:]):
            if tokens + span.tokens > self.config.overlap_tokens or tokens + span.tokens + next_tokens > self.budget:
                break
            tail.insert(0, span)
            tokens += span.tokens
        return tail


def _between_words(text: str, pos: int) -> bool:
    """Is `pos` a cut that splits no word (not inside a run of letters and digits)?"""
    return not (text[pos - 1].isalnum() and text[pos].isalnum())
