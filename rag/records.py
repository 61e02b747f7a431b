"""Small typed records passed between stages."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Removal:
    """A piece of the raw file that cleaning dropped, and why."""

    text: str
    reason: str


BlockKind = Literal["heading", "term", "paragraph", "list_item", "table", "code", "quote"]
SECTION_SEPARATOR = " › "


@dataclass(frozen=True)
class Block:
    """One structural piece of a document: `start`/`end` are offsets into the document's text.

    Headings give context (the section path of what follows) and are never answer sentences; a
    term (a documented function's signature) opens a part as a heading does, but is an answer unit;
    code and table blocks keep their lines and are never split into sentences."""

    kind: BlockKind
    start: int
    end: int
    section: str = ""  # the headings above it, outermost first, joined by SECTION_SEPARATOR
    level: int = 0  # a heading's level (1 = top)
    page: int | None = None  # the PDF page it starts on

    @property
    def splits_into_sentences(self) -> bool:
        return self.kind in ("paragraph", "list_item", "quote")


@dataclass
class Document:
    """A cleaned article: its body text, its blocks, and what was learnt and removed on the way."""

    doc_id: str
    text: str
    title: str | None = None
    date: str | None = None  # YYYY-MM-DD
    publisher: str | None = None
    url: str | None = None
    source_path: str | None = None
    removed: list[Removal] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """What its passages are made of: the text and the metadata each passage carries (and is
        embedded with), so editing only a title or date counts as a change; and its structure, which
        decides where passages end and which section path they carry."""
        structure = "\x1e".join(f"{b.kind}:{b.start}:{b.end}:{b.level}:{b.page}:{b.section}" for b in self.blocks)
        made_of = "\x1f".join(v or "" for v in (self.text, self.title, self.date, self.publisher, self.url, structure))
        return hashlib.sha256(made_of.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict:
        return vars(self) | {
            "removed": [vars(r) for r in self.removed],
            "blocks": [vars(b) for b in self.blocks],
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Document:
        """Takes ownership of `data` (a freshly parsed record)."""
        data.pop("content_hash", None)  # derived
        data["removed"] = [Removal(**r) for r in data.get("removed", [])]
        data["blocks"] = [Block(**b) for b in data.get("blocks", [])]
        return cls(**data)


@dataclass(frozen=True)
class Chunk:
    """A passage of a document; `start`/`end` are offsets into the document's cleaned text."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    start: int
    end: int
    title: str | None = None
    date: str | None = None
    url: str | None = None
    publisher: str | None = None
    section: str | None = None  # the section path of the passage's headings
    page: int | None = None  # the PDF page the passage starts on
    # Headings inside the passage: a section's first passage opens with the last sentences before
    # its heading. They are context, never answer units (see `chunking.passage_units`).
    headings: tuple[str, ...] = ()

    @property
    def heading(self) -> str:
        """The article's title and the passage's section path, for the embedder, BM25 and the
        sources panel; a section path that starts with the title does not repeat it."""
        title, section = self.title or "", self.section or ""
        if not section or section.startswith(title):
            return section or title
        return f"{title}{SECTION_SEPARATOR}{section}" if title else section

    def __repr__(self) -> str:
        return f"Chunk({self.chunk_id}, {self.doc_id}#{self.position}, {self.text[:40]!r})"


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and its rank in each retriever (None: not found)."""

    chunk: Chunk
    score: float
    dense_rank: int | None = None
    bm25_rank: int | None = None
    dense_score: float | None = None

    def to_json(self, rank: int) -> dict:
        c = self.chunk
        return {
            "rank": rank,
            "doc_id": c.doc_id,
            "chunk_id": c.chunk_id,
            "score": round(self.score, 6),
            "title": c.title,
            "date": c.date,
            "url": c.url,
            "publisher": c.publisher,
            "section": c.section,
            "page": c.page,
            "text": c.text,
            "start": c.start,
            "end": c.end,
            "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank,
            "dense_score": None if self.dense_score is None else round(self.dense_score, 6),
        }


@dataclass(frozen=True)
class Citation:
    marker: int
    doc_id: str
    chunk_id: str


@dataclass(frozen=True)
class PassageSpan:
    """Where in source `marker`'s passage a sentence's support lies: offsets into the chunk's text."""

    marker: int
    start: int
    end: int


@dataclass
class Sentence:
    text: str
    citations: list[int]
    supported: bool
    reason: str = ""
    spans: list[PassageSpan] = field(default_factory=list)  # the passage sentence it rests on, per cited source


@dataclass
class Trace:
    """How an answer was made: what `rag ask --json`, the trace download and the evaluation read."""

    question: str
    mode: str
    history_turns: int = 0
    rewritten_question: str | None = None
    rewrite: str | None = None  # none / rules / llm
    retrieved: list[dict] = field(default_factory=list)
    index_version: str | None = None
    policy: dict | None = None  # the answer policy's verdict, features and confidence
    model: str | None = None
    endpoint: str | None = None  # scheme, host and port only
    prompt_hash: str | None = None
    sources_in_prompt: int | None = None
    sources_dropped_for_context: int | None = None
    usage: dict | None = None
    raw_answer: str | None = None
    finish_reason: str | None = None
    generation_error: str | None = None
    dropped_markers: list[int] = field(default_factory=list)
    refusal_reason: str | None = None
    answered_by: str | None = None  # "extractive" when quoted passages answer (in either mode)
    notice: str | None = None
    timings_ms: dict[str, float | None] = field(default_factory=dict)

    def add_notice(self, text: str) -> None:
        self.notice = f"{self.notice} {text}" if self.notice else text

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Answer:
    """What the pipeline returns: text with `[n]` markers, where marker n is `sources[n-1]`.

    Built by its named constructors: `generated` (the model's checked answer), `quoted` (sentences
    of the passages, in extractive mode or in place of the model) and `refusal`."""

    question: str
    answer: str
    mode: str
    refused: bool
    sources: list[Hit]
    citations: list[Citation] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)
    notice: str | None = None
    trace: Trace | None = None
    low_confidence: bool = False  # answered, but the evidence is weak: the passages may not answer it directly

    @classmethod
    def generated(cls, question: str, text: str, sources: list[Hit], citations: list[Citation],
                  sentences: list[Sentence], trace: Trace) -> Answer:
        return cls(question, text, "llm", False, sources, citations, sentences, trace.notice, trace)

    @classmethod
    def quoted(cls, question: str, text: str, mode: str, sources: list[Hit], citations: list[Citation],
               sentences: list[Sentence], trace: Trace) -> Answer:
        trace.answered_by = "extractive"
        return cls(question, text, mode, False, sources, citations, sentences, trace.notice, trace)

    @classmethod
    def refusal(cls, question: str, text: str, mode: str, sources: list[Hit], reason: str, trace: Trace) -> Answer:
        trace.refusal_reason = reason
        return cls(question, text, mode, True, sources, notice=trace.notice, trace=trace)

    @property
    def supported_fraction(self) -> float | None:
        cited = [s for s in self.sentences if s.citations or not s.supported]
        return sum(s.supported for s in cited) / len(cited) if cited else None

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "refused": self.refused,
            "low_confidence": self.low_confidence,
            "notice": self.notice,
            "citations": [asdict(c) for c in self.citations],
            "sentences": [asdict(s) for s in self.sentences],
            "supported_fraction": self.supported_fraction,
            "sources": [h.to_json(i) for i, h in enumerate(self.sources, 1)],
            "trace": self.trace.to_json() if self.trace else {},
        }


@dataclass(frozen=True)
class HnswConfig:
    m: int = 32  # graph degree
    ef_construction: int = 80  # build-time search breadth: a better graph for a slower build
