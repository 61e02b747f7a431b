"""Writing an index version beside the current one, then switching `CURRENT` to it.

A build goes to a `.building-…` folder that is renamed into place and then named in `CURRENT`
(an atomic replace), all under a lock, so a crash mid-build leaves the previous version in service.

Adding articles hard-links the previous version's append-only files into the new one and appends
to them, instead of copying hundreds of megabytes: the previous version still reads exactly the
bytes its manifest records, and what an interrupted build appended is cut off by the next one.
The FAISS indexes are shared the same way until more than `EXACT_TAIL` rows lie past them; then
they are extended, which rewrites the index file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import IndexLockedError
from rag.files import (
    PRIVATE_FILE,
    PRIVATE_FOLDER,
    atomic_write,
    jsonl_bytes,
    private_write,
)
from rag.keywords import TermCounts, bm25_text, write_keyword_index
from rag.records import Chunk, Document, HnswConfig
from rag.store import (
    CHUNKS,
    CURRENT,
    DENSE,
    DOCUMENTS,
    SENTENCE_DENSE,
    SENTENCE_OWNER,
    SENTENCE_VECTORS,
    VECTORS,
    IndexStore,
    Manifest,
)

EXACT_TAIL = 10_000  # rows past a FAISS index, scanned exactly (~1 ms a query) until they are folded in
LOCK = ".lock"
DEFAULT_HNSW = HnswConfig()


@dataclass
class Vectors:
    """Chunk vectors in chunk order, and sentence vectors with the chunk row each belongs to."""

    chunks: np.ndarray
    sentences: np.ndarray
    sentence_owner: np.ndarray


def build_dense_index(vectors: np.ndarray, index_type: str, hnsw: HnswConfig = DEFAULT_HNSW, base=None):
    """A FAISS index over `vectors`; with `base`, that index extended by `vectors`."""
    import faiss

    index = base
    if index is None and index_type == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw.ef_construction
    elif index is None:
        index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sentence-transformers", "transformers", "torch", "faiss-cpu", "bm25s", "rag-articles"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def write_version(
    index_dir: Path,
    manifest: Manifest,
    documents: list[Document],
    chunks: list[Chunk],
    vectors: Vectors,
    hnsw: HnswConfig = DEFAULT_HNSW,
    appended_to: IndexStore | None = None,
    terms: TermCounts | None = None,
) -> Path:
    """Write an index version beside the current one, then switch `CURRENT` to it.

    Passages must come article by article, in `documents` order. Without `appended_to`, the
    arguments are the whole index. With it (the previous version), they are what follows its
    rows: its files are shared and extended, and its FAISS indexes shared until `EXACT_TAIL` rows
    lie past them, then extended, never rebuilt (an HNSW graph of 100,000 passages takes minutes).
    `terms`: every passage's term counts, when the caller kept most of them from the previous version."""
    index_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    version_dir = index_dir / manifest.version
    tmp_dir = index_dir / f".building-{manifest.version}"
    base = appended_to
    manifest.chunk_counts, manifest.sources = _catalog(documents, chunks, base)
    tmp_dir.mkdir(mode=PRIVATE_FOLDER)
    manifest.n_sentences = (base.manifest.n_sentences if base else 0) + len(vectors.sentence_owner)
    files = {
        DOCUMENTS: jsonl_bytes(d.to_dict() for d in documents),
        CHUNKS: jsonl_bytes(vars(c) for c in chunks),  # flat: vars, not asdict
        VECTORS: _raw(vectors.chunks, np.float32),
    }
    if manifest.sentence_vectors:
        files |= {SENTENCE_VECTORS: _raw(vectors.sentences, np.float32), SENTENCE_OWNER: _raw(vectors.sentence_owner, np.int64)}
    manifest.sizes = {name: _extend_file(tmp_dir / name, data, base) for name, data in files.items()}
    ann = _AnnWriter(manifest.index_type, hnsw, base)
    manifest.faiss_rows = {DENSE: ann.write(tmp_dir / DENSE, vectors.chunks, manifest.n_chunks)}
    if manifest.sentence_vectors:
        manifest.faiss_rows[SENTENCE_DENSE] = ann.write(tmp_dir / SENTENCE_DENSE, vectors.sentences, manifest.n_sentences)
    every_chunk = [*(base.chunks if base and not terms else []), *chunks]
    write_keyword_index(tmp_dir / "bm25", terms or TermCounts.empty().extended([bm25_text(c) for c in every_chunk]))
    private_write(tmp_dir / "manifest.json", json.dumps(vars(manifest)).encode("utf-8"))
    os.replace(tmp_dir, version_dir)
    atomic_write(index_dir / CURRENT, manifest.version.encode("utf-8"))
    prune_versions(index_dir, keep=manifest.version)
    return version_dir


def _catalog(documents: list[Document], chunks: list[Chunk], base: IndexStore | None) -> tuple[dict[str, int], dict[str, str | None]]:
    """Passage counts and source files per article, in storage order, the base version's first."""
    counts = dict(base.manifest.chunk_counts) if base else {}
    sources = dict(base.manifest.sources) if base else {}
    order = {d.doc_id: i for i, d in enumerate(documents)}
    for d in documents:
        counts[d.doc_id], sources[d.doc_id] = 0, d.source_path
    last = 0
    for c in chunks:
        if order.get(c.doc_id, -1) < last:
            raise ValueError(f"passage {c.chunk_id} is out of its article's order, or its article is not given")
        last = order[c.doc_id]
        counts[c.doc_id] += 1
    return counts, sources


def _extend_file(path: Path, data: bytes, base: IndexStore | None) -> int:
    """Write `data` after the base version's recorded bytes of the same file, which are shared
    (hard-linked), not copied. Returns the bytes this version reads."""
    if base is None:
        private_write(path, data)
        return len(data)
    kept = base.recorded_size(path.name)
    _share(base.path / path.name, path)
    os.truncate(path, kept)  # drops what an interrupted build appended; the base reads no further
    private_write(path, data, append=True)
    return kept + len(data)


@dataclass
class _AnnWriter:
    """Writes a version's FAISS indexes: with a base version, its index is shared (hard-linked)
    while the rows it lacks stay within `EXACT_TAIL`, else extended by them and written anew."""

    index_type: str
    hnsw: HnswConfig
    base: IndexStore | None

    def write(self, path: Path, new: np.ndarray, n_rows: int) -> int:
        """The index for the file `path.name` over `n_rows` rows, the last of which are `new`; returns the rows it holds."""
        if self.base is None:
            _save_faiss(path, build_dense_index(new, self.index_type, self.hnsw))
            return n_rows
        held = self.base.manifest.faiss_rows[path.name]
        if n_rows - held <= EXACT_TAIL:
            _share(self.base.path / path.name, path)
            return held
        index, stored = (self.base.dense, self.base.vectors) if path.name == DENSE else (self.base.sentence_dense, self.base.sentence_vectors)
        self.base.check_faiss_rows(path.name, index)
        _save_faiss(path, build_dense_index(np.concatenate([stored[held:], new]), self.index_type, self.hnsw, index))
        return n_rows


def _share(source: Path, path: Path) -> None:
    """A hard link: the new version shares the file instead of a copy of it."""
    try:
        os.link(source, path)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, path)
        os.chmod(path, PRIVATE_FILE)


def _raw(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _save_faiss(path: Path, index) -> None:
    import faiss

    faiss.write_index(index, str(path))
    os.chmod(path, PRIVATE_FILE)


def prune_versions(index_dir: Path, keep: str) -> None:
    """Drop older versions and folders left by interrupted builds."""
    for child in index_dir.iterdir():
        if child.is_dir() and child.name != keep and (child.name.startswith("v-") or child.name.startswith(".building-")):
            shutil.rmtree(child, ignore_errors=True)


def new_version_name() -> str:
    return f"v-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def index_lock(index_dir: Path, wait: bool = False):
    """One writer at a time; a second `rag index` refuses clearly (or waits)."""
    index_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IndexLockedError(f"another `rag index` is writing {index_dir}; wait for it to finish and try again") from exc
        yield
    finally:
        os.close(fd)
