"""Chunking: a cleaned `Document` -> structure-aware, overlapping `Chunk`s that fit the embedder.

Lengths are counted in the embedding model's own word pieces. A passage is made of whole units:
the sentences of prose blocks (split by pysbd), the lines of code blocks and the rows of tables;
only a unit longer than a whole passage is cut, at word-piece boundaries. Passages are packed
within a section and carry its section path; like any passage, a section's first one opens with
the last sentences of the passage before it (the overlap), so a heading can sit inside a passage,
as context: it is never one of the passage's answer units.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import Protocol

from rag.records import Block, Chunk, Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP]
SECTION_STARTS = ("heading", "term")  # a passage never runs on across either


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], **kwargs) -> dict: ...


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int
    block: int = 0  # index of the block it belongs to
    prose: bool = True  # a sentence (not a code line or a table row)


@dataclass(frozen=True)
class ChunkerConfig:
    max_tokens: int = 224
    overlap_tokens: int = 64

    def signature(self) -> str:
        return f"blocks-v5:max={self.max_tokens}:overlap={self.overlap_tokens}"


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
    """(start, end) of each answer unit: a blank line ends every block; a block with line breaks
    inside (code, a table) gives one unit per line, any other block its sentences."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for paragraph in text.split("\n\n"):
        if "\n" in paragraph.strip():
            spans.extend((offset + a, offset + b) for a, b in _line_spans(paragraph))
        else:
            spans.extend((offset + a, offset + b) for a, b in _sentences(paragraph))
        offset += len(paragraph) + 2
    return spans


def passage_units(chunk: Chunk) -> list[tuple[int, int]]:
    """The answer units of a passage: its sentences, code lines and table rows, never a heading."""
    return list(_units(chunk.text, chunk.headings))


@functools.lru_cache(maxsize=4096)
def _units(text: str, headings: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    # Splitting with pysbd costs milliseconds a passage, and the same passages come back question
    # after question (retrieved, ranked, checked): each text is split once. A heading is a paragraph
    # of its own, and none of it is a unit, though pysbd may cut it ("4.9." / "Main building script").
    spans, offset = [], 0
    for paragraph in text.split("\n\n"):
        if paragraph.strip() not in headings:
            spans.extend((offset + a, offset + b) for a, b in sentence_spans(paragraph))
        offset += len(paragraph) + 2
    return tuple(spans)


def _line_spans(block: str) -> list[tuple[int, int]]:
    spans, cursor = [], 0
    for line in block.split("\n"):
        if line.strip():
            lead = len(line) - len(line.lstrip())
            spans.append((cursor + lead, cursor + len(line.rstrip())))
        cursor += len(line) + 1
    return spans


@functools.lru_cache(maxsize=1 << 16)
def _sentences(paragraph: str) -> tuple[tuple[int, int], ...]:
    # Cached: the chunker splits each block, and the same paragraphs come back when the index takes
    # its passages' units and when answers rank them; pysbd was a fifth of an index build's time.
    spans: list[tuple[int, int]] = []
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
        cursor = found + len(sent)
        if spans and spans[-1][1] == found:  # no space after the cut: "of .Machine$double.eps" goes on
            found = spans.pop()[0]
        spans.append((found, cursor))
    return tuple(spans)


def document_blocks(doc: Document) -> list[Block]:
    """The document's blocks; a document made without them (plain text) has one per paragraph."""
    if doc.blocks:
        return doc.blocks
    blocks, offset = [], 0
    for paragraph in doc.text.split("\n\n"):
        if paragraph.strip():
            blocks.append(Block("code" if "\n" in paragraph.strip() else "paragraph", offset, offset + len(paragraph)))
        offset += len(paragraph) + 2
    return blocks


class Chunker:
    def __init__(self, tokenizer: Tokenizer, config: ChunkerConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.budget = config.max_tokens - SPECIAL_TOKENS

    def chunk(self, doc: Document) -> list[Chunk]:
        blocks = document_blocks(doc)
        spans = self._measured_spans(doc.text, blocks)
        chunks = []
        for group, body in self._group_sections(_by_section(spans, blocks)):
            start, end = group[0].start, group[-1].end
            text = doc.text[start:end]
            first = blocks[body.block]
            chunks.append(
                Chunk(
                    chunk_id=self._chunk_id(doc.doc_id, start, end, text),
                    doc_id=doc.doc_id,
                    position=len(chunks),
                    text=text,
                    start=start,
                    end=end,
                    title=doc.title,
                    date=doc.date,
                    url=doc.url,
                    publisher=doc.publisher,
                    section=first.section or None,
                    page=first.page,
                    headings=tuple(doc.text[b.start:b.end] for b in blocks if b.kind == "heading" and start <= b.start < end),
                )
            )
        return chunks

    def _chunk_id(self, doc_id: str, start: int, end: int, text: str) -> str:
        key = f"{doc_id}|{start}|{end}|{self.config.signature()}|{text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    def _measured_spans(self, text: str, blocks: list[Block]) -> list[Span]:
        raw = [
            (block.start + a, block.start + b, i, block.splits_into_sentences)
            for i, block in enumerate(blocks) if block.kind != "heading"
            for a, b in (_sentences if block.splits_into_sentences else _line_spans)(text[block.start:block.end])
        ]
        if not raw:
            return []
        encoded = self.tokenizer(
            [text[s:e] for s, e, _, _ in raw], add_special_tokens=False, return_offsets_mapping=True
        )
        spans: list[Span] = []
        for (start, end, block, prose), offsets in zip(raw, encoded["offset_mapping"]):
            if len(offsets) <= self.budget:
                spans.append(Span(start, end, len(offsets), block, prose))
                continue
            # A unit longer than a chunk: cut it into windows of whole word pieces, between
            # words when possible (a word cut in two re-tokenizes into more pieces).
            i = 0
            while i < len(offsets):
                j = min(i + self.budget, len(offsets))
                if j < len(offsets):
                    j = next((k for k in range(j, i, -1) if _between_words(text, start + offsets[k][0])), j)
                window = offsets[i:j]
                spans.append(Span(start + window[0][0], start + window[-1][1], len(window), block, prose))
                i = j
        return spans

    def _group_sections(self, sections: list[list[Span]]) -> list[tuple[list[Span], Span]]:
        """Passages within each section, each with its first unit of the section's own; a section's
        first passage opens with the previous passage's last sentences, as any passage does."""
        pairs: list[tuple[list[Span], Span]] = []
        for section in sections:
            lead = self._overlap_tail(pairs[-1][0], self._first_fit(section, 0)) if pairs else []
            for group in self._group(lead + section):
                body = next((s for s in group if s not in lead), group[0])
                pairs.append((group, body))
            lead = []
        return pairs

    def _group(self, spans: list[Span]) -> list[list[Span]]:
        """Units packed greedily into passages; a code block or table that one passage can hold starts
        a new passage rather than be cut between two."""
        groups: list[list[Span]] = []
        current: list[Span] = []
        tokens = 0
        for i, span in enumerate(spans):
            needed = self._first_fit(spans, i)
            if current and tokens + needed > self.budget:
                groups.append(current)
                current = self._overlap_tail(current, needed)
                tokens = sum(s.tokens for s in current)
            current.append(span)
            tokens += span.tokens
        if current:
            groups.append(current)
        return groups

    def _first_fit(self, spans: list[Span], i: int) -> int:
        """The word pieces that must go into one passage from unit `i` on: a whole code block or table
        when `i` opens one that a passage can hold, else the unit alone."""
        if spans[i].prose or (i > 0 and spans[i - 1].block == spans[i].block):
            return spans[i].tokens
        block = _block_tokens(spans, i)
        return block if block <= self.budget else spans[i].tokens

    def _overlap_tail(self, previous: list[Span], next_tokens: int) -> list[Span]:
        """Trailing sentences of the previous chunk repeated at the start of the next one: context for
        what follows. Code lines and table rows are not carried over (they dilute the next passage)."""
        tail: list[Span] = []
        tokens = 0
        for span in reversed(previous[1:]):
            if not span.prose or tokens + span.tokens > self.config.overlap_tokens or tokens + span.tokens + next_tokens > self.budget:
                break
            tail.insert(0, span)
            tokens += span.tokens
        return tail


def _block_tokens(spans: list[Span], first: int) -> int:
    """The word pieces of the block whose first unit is `first`."""
    tokens, i = 0, first
    while i < len(spans) and spans[i].block == spans[first].block:
        tokens += spans[i].tokens
        i += 1
    return tokens


def _by_section(spans: list[Span], blocks: list[Block]) -> list[list[Span]]:
    """Runs of units between headings (and the terms that title a part): the sections passages are packed in."""
    runs: list[list[Span]] = []
    for span in spans:
        if runs and not any(blocks[k].kind in SECTION_STARTS for k in range(runs[-1][-1].block + 1, span.block + 1)):
            runs[-1].append(span)
        else:
            runs.append([span])
    return runs


def _between_words(text: str, pos: int) -> bool:
    """Is `pos` a cut that splits no word (not inside a run of letters and digits)?"""
    return not (text[pos - 1].isalnum() and text[pos].isalnum())
