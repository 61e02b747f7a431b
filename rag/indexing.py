"""Indexing: documents -> chunks -> vectors -> a new index version, incrementally.

Unchanged documents (same content hash, model and chunker) keep their chunks and vectors;
new or changed ones are chunked and embedded, after the kept ones; documents whose file is gone
are dropped. When documents were only added, the new version extends the previous one's files;
when nothing changed, no version is written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import Chunker, ChunkerConfig, passage_units
from rag.embedding import NO_UNITS, Embedder, Units
from rag.errors import IndexCorruptError, IndexMissingError, RagError
from rag.index_writer import (
    Vectors,
    index_lock,
    library_versions,
    new_version_name,
    write_version,
)
from rag.ingest import READER_VERSION, Reuse, Skipped, file_stat, files_to_read, load_documents
from rag.keywords import KEYWORD_ANALYSIS, TermCounts, bm25_text
from rag.onnx_export import export_for
from rag.prefetch import LARGE_BUILD_CHARS, PREFETCH_MIN_BYTES, Prefetch
from rag.records import Chunk, Document
from rag.settings import Settings
from rag.store import IndexStore, Manifest
from rag.stores import open_previous, store_recipe

log = logging.getLogger(__name__)

# Recorded with an index whose sentence vectors were pooled (`RAG_SENTENCE_POOLING`): its vectors are
# never mixed with sentences embedded one by one (recorded as nothing, as before pooling existed).
POOLED = "pooled-from-passage"


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
    up_to_date: bool = False  # nothing changed: no version was written, `version` is the current one


def embedding_text(chunk: Chunk, with_title: bool) -> str:
    """What the embedder sees: the passage, headed by its article's title and section path."""
    return f"{chunk.heading}\n{chunk.text}" if with_title and chunk.heading else chunk.text


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
        try:
            report = _build(settings, embedder, previous, sources, progress)
        except IndexCorruptError as exc:  # damage in a part of the previous index only now read
            if previous is None:
                raise
            log.warning("rebuilding from scratch: %s", exc)
            report = _build(settings, embedder, None, sources, progress)
        report.seconds = time.perf_counter() - started
        return report


def _build(settings: Settings, embedder: Embedder, previous: IndexStore | None, sources: list[Path], progress: bool) -> IndexReport:
    """One build under the lock: the previous version's unchanged articles kept, the rest embedded;
    nothing written when nothing changed."""
    store = store_recipe(settings)
    reuse = _unchanged_files(previous)
    config = ChunkerConfig(settings.chunk_max_tokens, settings.chunk_overlap_tokens)
    prefetch = _prefetch(embedder, sources, reuse, config)
    loaded = load_documents(sources, reuse, prefetch.read if prefetch else None)
    if not loaded.documents and not loaded.unchanged:
        names = ", ".join(s.reason for s in loaded.skipped) or f"no .txt, .md, .html or .pdf files in {settings.seeds_dir}"
        raise RagError(f"nothing to index: {names}")
    old_hashes = previous.manifest.documents if previous else {}
    read = {d.doc_id: d for d in loaded.documents}
    # hashed once: hashing 20,000 texts twice shows; unread files keep their recorded hash
    hashes = {doc_id: old_hashes[doc_id] for doc_id in loaded.unchanged} | {d.doc_id: d.content_hash for d in loaded.documents}
    report = IndexReport(skipped=loaded.skipped)
    reusable = _reusable(previous, settings, config, store)

    kept: list[str] = []  # articles whose passages and vectors stay, in their stored order
    fresh: list[Document] = []  # articles chunked and embedded now, stored after the kept ones
    for doc_id in _previous_first(hashes, previous):
        if doc_id in reusable and old_hashes[doc_id] == hashes[doc_id]:
            kept.append(doc_id)
            report.unchanged.append(doc_id)
        else:
            (report.changed if doc_id in old_hashes else report.added).append(doc_id)
            fresh.append(read.get(doc_id) or previous.documents[doc_id])  # stored: its file was not read
    chunker = Chunker(embedder.tokenizer, config) if fresh else None  # an unchanged corpus needs no tokenizer
    new_chunks = [c for doc in fresh for c in _chunked(doc, chunker, prefetch)]
    kept_rows = np.fromiter((row for doc_id in kept for row in reusable[doc_id]), dtype=np.int64)
    if previous:
        report.removed = sorted(set(old_hashes) - set(hashes))

    n_chunks = len(kept_rows) + len(new_chunks)
    recipe = {  # what the manifest records of the collection and the settings, embedding aside
        "embedding_model": settings.embedding_model,
        "chunker": chunker_recipe(settings, config),
        "documents": {doc_id: hashes[doc_id] for doc_id in [*kept, *(d.doc_id for d in fresh)]},
        "index_type": choose_index_type(settings, n_chunks),
        "sentence_vectors": settings.sentence_vectors,
        "file_stats": loaded.file_stats,
        "store": store,
    }
    report.n_chunks = n_chunks
    report.embedded_chunks = len(new_chunks)
    # exported before embedding: a first build already embeds on ONNX Runtime
    export_for(embedder, lambda: _onnx_samples(settings, new_chunks, previous))
    if previous is not None and not fresh and _same_as(previous, recipe) and not _moved(kept, read, previous):
        report.up_to_date, report.version = True, previous.manifest.version
    else:
        plan = _Plan(recipe, read, kept, kept_rows, fresh, new_chunks, prefetch.units if prefetch else passage_units)
        report.version = _write(settings, embedder, previous, plan, progress)
    return report


def _prefetch(embedder: Embedder, sources: list[Path], reuse: Reuse | None, config: ChunkerConfig) -> Prefetch | None:
    """The files read and chunked by a worker while the embedder prepares for a large build, when
    there are enough of them to pay for the worker's start."""
    to_read = files_to_read(sources, reuse)
    if sum(to_read.values()) < PREFETCH_MIN_BYTES or not embedder.prepares_large_builds:
        return None
    return Prefetch(list(to_read), Chunker(embedder.tokenizer, config), embedder.prepare_large_build, LARGE_BUILD_CHARS)


def _chunked(doc: Document, chunker: Chunker, prefetch: Prefetch | None) -> list[Chunk]:
    made = prefetch.chunks(doc) if prefetch else None
    return chunker.chunk(doc) if made is None else made


def _same_as(previous: IndexStore, recipe: dict) -> bool:
    """The previous version holds the same articles, read from the same files, under the same settings."""
    return all(getattr(previous.manifest, name) == value for name, value in recipe.items())


@dataclass
class _Plan:
    """What a build keeps of the previous version and what it adds after it."""

    recipe: dict  # the manifest's fields that describe the collection and the settings
    read: dict[str, Document]  # articles whose files were read again
    kept: list[str]
    kept_rows: np.ndarray  # the kept articles' passage rows in the previous version
    fresh: list[Document]
    new_chunks: list[Chunk]
    units_of: Callable[[Chunk], list[tuple[int, int]]] = passage_units  # a passage's answer units


def _write(settings: Settings, embedder: Embedder, previous: IndexStore | None, plan: _Plan, progress: bool) -> str:
    """Embed the new passages and write the version; returns its name."""
    if plan.recipe["store"]:
        return _write_qdrant(settings, embedder, previous, plan, progress)
    kept, kept_rows, new_chunks = plan.kept, plan.kept_rows, plan.new_chunks
    # Adding articles only appends: the previous version's files are shared and extended.
    appending = (
        previous is not None
        and previous.manifest.index_type == plan.recipe["index_type"]
        and len(kept) == len(previous.manifest.documents)
        and not _moved(kept, plan.read, previous)
    )
    vectors = _vectors(embedder, settings, new_chunks, kept_rows, previous, appending, progress, plan.units_of)
    manifest = _manifest(plan, embedder)
    terms = _term_counts(previous, kept_rows, new_chunks, appending)
    if appending:
        write_version(settings.index_dir, manifest, plan.fresh, new_chunks, vectors, settings.hnsw, previous, terms)
    else:
        documents = [plan.read.get(doc_id) or previous.documents[doc_id] for doc_id in kept] + plan.fresh
        chunks = [previous.chunks[row] for row in kept_rows] + new_chunks if kept else new_chunks
        write_version(settings.index_dir, manifest, documents, chunks, vectors, settings.hnsw, None, terms)
    return manifest.version


def _write_qdrant(settings: Settings, embedder: Embedder, previous, plan: _Plan, progress: bool) -> str:
    """Only the new passages are embedded and sent: the kept ones stay in the collection."""
    from rag.qdrant_writer import write_qdrant_version

    vectors = _vectors(embedder, settings, plan.new_chunks, np.zeros(0, np.int64), None, True, progress, plan.units_of)
    manifest = _manifest(plan, embedder)
    documents = [plan.read.get(doc_id) or previous.documents[doc_id] for doc_id in plan.kept] + plan.fresh
    write_qdrant_version(settings, manifest, documents, plan.kept, plan.new_chunks, vectors, previous, progress)
    return manifest.version


def _manifest(plan: _Plan, embedder: Embedder) -> Manifest:
    return Manifest(
        **plan.recipe,
        dimension=embedder.dimension,
        n_chunks=len(plan.kept_rows) + len(plan.new_chunks),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        versions=library_versions(),
        version=new_version_name(),
    )


def _moved(kept: list[str], read: dict[str, Document], previous: IndexStore) -> bool:
    """A kept article was read from another file than recorded: its stored record needs rewriting."""
    sources = previous.manifest.sources
    return any(sources.get(doc_id) != read[doc_id].source_path for doc_id in kept if doc_id in read)


def _onnx_samples(settings: Settings, new_chunks: list[Chunk], previous: IndexStore | None) -> list[str]:
    """Texts to check an ONNX export on: the new passages, else the index's first ones."""
    chunks = new_chunks[:64] or (previous.chunks[:64] if previous else [])
    return [embedding_text(c, settings.embed_title) for c in chunks]


def _previous_first(hashes: dict[str, str], previous: IndexStore | None) -> list[str]:
    """Articles the previous index holds keep its order and new ones follow, so that adding one
    article appends to every file of the index instead of reordering them."""
    if previous is None:
        return list(hashes)
    order = {doc_id: i for i, doc_id in enumerate(previous.manifest.chunk_counts)}
    return sorted(hashes, key=lambda doc_id: order.get(doc_id, len(order)))  # stable: new ones in file order


def _term_counts(previous: IndexStore | None, kept_rows: np.ndarray, new_chunks: list[Chunk], appending: bool) -> TermCounts | None:
    """Kept passages' term counts taken from the previous index, only new passages tokenised
    (None: the previous index has none to take, so every passage is counted)."""
    same_analysis = previous is not None and previous.manifest.chunker.get("keywords") == KEYWORD_ANALYSIS
    old = previous.term_counts() if same_analysis and len(kept_rows) else None
    if old is None:
        return None
    return (old if appending else old.rows(kept_rows)).extended([bm25_text(c) for c in new_chunks])


def chunker_recipe(settings: Settings, config: ChunkerConfig) -> dict:
    """What the manifest records of how passages were made: a later build reuses the files and
    passages of an index whose recipe matches (`_unchanged_files`, `_reusable`)."""
    return asdict(config) | {"signature": config.signature(), "embed_title": settings.embed_title,
                             "reader": READER_VERSION, "keywords": KEYWORD_ANALYSIS} | _sentence_method(settings)


def _sentence_method(settings: Settings) -> dict[str, str]:
    return {"sentences": POOLED} if settings.sentence_vectors and settings.sentence_pooling else {}


def unit_spans(chunk: Chunk, with_title: bool, units_of: Callable[[Chunk], list[tuple[int, int]]] = passage_units) -> Units:
    """The passage's answer units as character spans of `embedding_text`, after its heading line."""
    shift = len(embedding_text(chunk, with_title)) - len(chunk.text)
    return Units(shift, [(a + shift, b + shift) for a, b in units_of(chunk)])


def _vectors(embedder, settings, new_chunks, kept_rows, previous, appending, progress, units_of) -> Vectors:
    """Embed the new chunks (and their sentences), which follow the kept ones. Appending, only
    those are returned; otherwise the kept chunks' vectors come first, copied from the previous index."""
    texts = [embedding_text(c, settings.embed_title) for c in new_chunks]
    units = [unit_spans(c, settings.embed_title, units_of) if settings.sentence_vectors else NO_UNITS for c in new_chunks]
    owners = np.repeat(np.arange(len(new_chunks), dtype=np.int64) + len(kept_rows), [len(u.spans) for u in units])
    passages, sentences = embedder.encode_passages(texts, units, progress, pooled=settings.sentence_pooling)
    new = Vectors(passages, sentences, owners)
    if appending or not len(kept_rows):
        return new
    chunk_vectors = np.concatenate([previous.vectors[kept_rows], new.chunks])
    if not settings.sentence_vectors:
        return Vectors(chunk_vectors, new.sentences, new.sentence_owner)
    keep = np.flatnonzero(np.isin(previous.sentence_owner, kept_rows))
    remap = np.zeros(previous.manifest.n_chunks, dtype=np.int64)
    remap[kept_rows] = np.arange(len(kept_rows))
    return Vectors(
        chunks=chunk_vectors,
        sentences=np.concatenate([previous.sentence_vectors[keep], new.sentences]),
        sentence_owner=np.concatenate([remap[previous.sentence_owner[keep]], new.sentence_owner]),
    )


def _previous(settings: Settings) -> IndexStore | None:
    """The current index, if one exists and is readable (a damaged one is simply rebuilt). Its
    records are read only when needed: adding articles under the same settings never needs them."""
    try:
        return open_previous(settings)
    except IndexMissingError:
        return None
    except IndexCorruptError as exc:
        log.warning("rebuilding from scratch: %s", exc)
        return None


def _unchanged_files(previous: IndexStore | None) -> Reuse | None:
    """Files whose size and modification time are as recorded are not read and cleaned again,
    unless the previous index's documents were made by other readers."""
    if previous is None or previous.manifest.chunker.get("reader") != READER_VERSION:
        return None
    recorded = previous.manifest.file_stats
    by_source = {path: doc_id for doc_id, path in previous.manifest.sources.items() if path}

    def reuse(path: str, st) -> str | None:
        doc_id = by_source.get(path)
        return doc_id if doc_id and recorded.get(doc_id) == file_stat(st) else None

    return reuse


def _reusable(previous: IndexStore | None, settings: Settings, config: ChunkerConfig, store: dict) -> dict[str, range]:
    """doc_id -> row numbers of its chunks, when the old index used the same model, chunker and store."""
    if previous is None:
        return {}
    m = previous.manifest
    same = (
        m.embedding_model == settings.embedding_model
        and m.chunker.get("signature") == config.signature()
        and m.chunker.get("embed_title") == settings.embed_title
        and m.sentence_vectors == settings.sentence_vectors
        and m.chunker.get("sentences") == _sentence_method(settings).get("sentences")
        and m.store == store
        # Qdrant keeps each passage's keyword vector with it: another analysis rewrites them all
        and (not store or m.chunker.get("keywords") == KEYWORD_ANALYSIS)
    )
    if not same:
        log.info("embedding model or chunker changed: re-embedding every document")
        return {}
    return m.rows_of()


def _sources(settings: Settings, previous: IndexStore | None, extra: list[Path]) -> list[Path]:
    """The seeds folder, the Library tab's folder, files added earlier that still exist, and the new paths."""
    if not settings.seeds_dir.is_dir():
        raise RagError(f"seeds folder {settings.seeds_dir} not found; create it or pass --seeds DIR")
    inside_seeds = os.path.join(settings.seeds_dir.resolve(), "")
    sources = [settings.seeds_dir] + ([settings.library_dir] if settings.library_dir.is_dir() else [])
    if previous:
        for path in previous.manifest.sources.values():  # stored resolved: a string test, not a Path per article
            if path and not path.startswith(inside_seeds) and os.path.isfile(path):
                sources.append(Path(path))
    return sources + extra
