"""Indexing: documents -> chunks -> vectors -> a new index version, incrementally.

Unchanged documents (same content hash, model and chunker) keep their chunks and vectors;
new or changed ones are chunked and embedded; documents whose file is gone are dropped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rag.chunking import Chunker, ChunkerConfig, sentence_spans
from rag.embedding import Embedder
from rag.errors import IndexCorruptError, IndexMissingError, RagError
from rag.ingest import Reuse, Skipped, doc_id_for, file_stat, load_documents
from rag.keywords import TermCounts, bm25_text
from rag.records import Chunk, Document
from rag.settings import Settings
from rag.store import (
    IndexStore,
    Manifest,
    Vectors,
    index_lock,
    library_versions,
    new_version_name,
    write_version,
)

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    n_chunks: int = 0
    embedded_chunks: int = 0
    seconds: float = 0.0
    version: str = ""


def embedding_text(chunk: Chunk, with_title: bool) -> str:
    """What the embedder sees: the passage, headed by its article's title for context."""
    return f"{chunk.title}\n{chunk.text}" if with_title and chunk.title else chunk.text


def choose_index_type(settings: Settings, n_chunks: int) -> str:
    if settings.index_type != "auto":
        return settings.index_type
    return "hnsw" if n_chunks > settings.ann_threshold else "flat"


def build_index(
    settings: Settings,
    embedder: Embedder,
    extra_paths: list[Path] | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> IndexReport:
    started = time.perf_counter()
    with index_lock(settings.index_dir):
        previous = None if rebuild else _previous(settings)
        sources = _sources(settings, previous, extra_paths or [])
        loaded = load_documents(sources, _unchanged_files(previous))
        if not loaded.documents:
            names = ", ".join(s.reason for s in loaded.skipped) or f"no .txt, .md, .html or .pdf files in {settings.seeds_dir}"
            raise RagError(f"nothing to index: {names}")
        documents = _previous_first(loaded.documents, previous)
        hashes = {d.doc_id: d.content_hash for d in documents}  # once: hashing 20,000 texts twice shows
        config = ChunkerConfig(settings.chunk_max_tokens, settings.chunk_overlap_tokens)
        report = IndexReport(skipped=loaded.skipped)
        reusable = _reusable(previous, settings, config)

        kept_rows: list[int] = []  # rows of the previous index that stay
        new_chunks: list[Chunk] = []
        chunker = None  # built on first use: an unchanged corpus needs no tokenizer
        for doc in documents:
            old_hash = previous.manifest.documents.get(doc.doc_id) if previous else None
            if reusable and old_hash == hashes[doc.doc_id]:
                kept_rows.extend(reusable[doc.doc_id])
                report.unchanged.append(doc.doc_id)
                continue
            (report.changed if old_hash else report.added).append(doc.doc_id)
            chunker = chunker or Chunker(embedder.tokenizer, config)
            new_chunks.extend(chunker.chunk(doc))
        # Kept chunks first, in their old order, then the new ones: adding an article appends
        # to the previous index, so its vector index can be extended instead of rebuilt.
        kept_rows.sort()
        chunks = [previous.chunks[row] for row in kept_rows] + new_chunks
        reused_rows: list[int | None] = [*kept_rows, *[None] * len(new_chunks)]
        if previous:
            present = {d.doc_id for d in documents}
            report.removed = sorted(set(previous.manifest.documents) - present)

        vectors = _vectors(embedder, settings, chunks, reused_rows, previous, progress)
        index_type = choose_index_type(settings, len(chunks))
        manifest = Manifest(
            embedding_model=settings.embedding_model,
            dimension=embedder.dimension,
            chunker=asdict(config) | {"signature": config.signature(), "embed_title": settings.embed_title},
            documents=hashes,
            index_type=index_type,
            n_chunks=len(chunks),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            versions=library_versions(),
            version=new_version_name(),
            sentence_vectors=settings.sentence_vectors,
            file_stats=loaded.file_stats,
        )
        appended_to = previous if _is_append(previous, kept_rows, index_type) else None
        terms = _term_counts(previous, kept_rows, new_chunks)
        write_version(settings.index_dir, manifest, documents, chunks, vectors, settings.hnsw, appended_to, terms)
        embedder.export_onnx([embedding_text(c, settings.embed_title) for c in chunks[:64]])
        report.embedded_chunks = reused_rows.count(None)
        report.n_chunks = len(chunks)
        report.version = manifest.version
        report.seconds = time.perf_counter() - started
        return report


def _previous_first(documents: list[Document], previous: IndexStore | None) -> list[Document]:
    """Articles the previous index holds keep its order and new ones follow, so that adding one
    article appends to every file of the index instead of reordering them."""
    if previous is None:
        return documents
    order = {doc_id: i for i, doc_id in enumerate(previous.documents)}
    return sorted(documents, key=lambda d: order.get(d.doc_id, len(order)))  # stable: new ones in file order


def _is_append(previous: IndexStore | None, kept_rows: list[int], index_type: str) -> bool:
    """Every previous chunk is kept, in place, under the same index type: only new rows need adding."""
    return (
        previous is not None
        and previous.manifest.index_type == index_type
        and len(kept_rows) == len(previous.chunks)  # kept_rows is sorted and distinct
    )


def _term_counts(previous: IndexStore | None, kept_rows: list[int], new_chunks: list[Chunk]) -> TermCounts | None:
    """Kept passages' term counts copied from the previous index, only new passages tokenised
    (None: the previous index has none to copy, so every passage is counted)."""
    old = previous.term_counts() if previous and kept_rows else None
    return old.rows(kept_rows).extended([bm25_text(c) for c in new_chunks]) if old else None


def _sentence_texts(chunk: Chunk, with_title: bool) -> list[str]:
    return [embedding_text(replace(chunk, text=chunk.text[a:b]), with_title) for a, b in sentence_spans(chunk.text)]


def _vectors(embedder, settings, chunks, reused_rows, previous, progress) -> Vectors:
    """Embed new chunks (and their sentences); copy the vectors of reused ones, in chunk order."""
    dim = embedder.dimension
    new_rows = [i for i, old in enumerate(reused_rows) if old is None]
    texts = [embedding_text(chunks[i], settings.embed_title) for i in new_rows]
    sentence_texts: list[str] = []
    new_sentence_owner: list[int] = []
    if settings.sentence_vectors:
        for i in new_rows:
            pieces = _sentence_texts(chunks[i], settings.embed_title)
            sentence_texts.extend(pieces)
            new_sentence_owner.extend([i] * len(pieces))
    fresh = embedder.encode_documents(texts + sentence_texts, progress=progress)

    chunk_vectors = np.zeros((len(chunks), dim), dtype=np.float32)
    chunk_vectors[new_rows] = fresh[: len(texts)]
    sentence_blocks: list[np.ndarray] = []
    owner_blocks: list[np.ndarray] = []
    old_rows = {old: new for new, old in enumerate(reused_rows) if old is not None}
    if old_rows:
        old, new = np.fromiter(old_rows, dtype=np.int64), np.fromiter(old_rows.values(), dtype=np.int64)
        chunk_vectors[new] = previous.vectors[old]
        if settings.sentence_vectors:
            keep = np.flatnonzero(np.isin(previous.sentence_owner, old))
            remap = np.zeros(len(previous.chunks), dtype=np.int64)
            remap[old] = new
            sentence_blocks.append(np.asarray(previous.sentence_vectors[keep]))
            owner_blocks.append(remap[np.asarray(previous.sentence_owner[keep])])
    sentence_blocks.append(fresh[len(texts):])  # after the kept ones, as the chunks are
    owner_blocks.append(np.asarray(new_sentence_owner, dtype=np.int64))
    return Vectors(
        chunks=chunk_vectors,
        sentences=np.concatenate(sentence_blocks).astype(np.float32).reshape(-1, dim),
        sentence_owner=np.concatenate(owner_blocks),
    )


def _previous(settings: Settings) -> IndexStore | None:
    """The current index, if one exists and is readable (a damaged one is simply rebuilt)."""
    try:
        return IndexStore.load(settings.index_dir)
    except IndexMissingError:
        return None
    except IndexCorruptError as exc:
        log.warning("rebuilding from scratch: %s", exc)
        return None


def _unchanged_files(previous: IndexStore | None) -> Reuse | None:
    """Files whose size and modification time are as recorded are not read and cleaned again."""
    if previous is None:
        return None
    recorded = previous.manifest.file_stats

    def reuse(path: Path, st) -> Document | None:
        doc = previous.documents.get(doc_id_for(path))
        if doc and doc.source_path == str(path) and recorded.get(doc.doc_id) == file_stat(st):
            return doc
        return None

    return reuse


def _reusable(previous: IndexStore | None, settings: Settings, config: ChunkerConfig) -> dict[str, list[int]]:
    """doc_id -> row numbers of its chunks, when the old index used the same model and chunker."""
    if previous is None:
        return {}
    m = previous.manifest
    same = (
        m.embedding_model == settings.embedding_model
        and m.chunker.get("signature") == config.signature()
        and m.chunker.get("embed_title") == settings.embed_title
        and m.sentence_vectors == settings.sentence_vectors
    )
    if not same:
        log.info("embedding model or chunker changed: re-embedding every document")
        return {}
    rows: dict[str, list[int]] = {}
    for i, chunk in enumerate(previous.chunks):
        rows.setdefault(chunk.doc_id, []).append(i)
    return rows


def _sources(settings: Settings, previous: IndexStore | None, extra: list[Path]) -> list[Path]:
    """The seeds folder, files added earlier that still exist, and the new paths."""
    if not settings.seeds_dir.is_dir():
        raise RagError(f"seeds folder {settings.seeds_dir} not found; create it or pass --seeds DIR")
    inside_seeds = os.path.join(settings.seeds_dir.resolve(), "")
    sources = [settings.seeds_dir]
    if previous:
        for doc in previous.documents.values():
            path = doc.source_path  # stored resolved: a string test, not a Path per article
            if path and not path.startswith(inside_seeds) and os.path.isfile(path):
                sources.append(Path(path))
    return sources + extra
