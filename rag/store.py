"""The index on disk: documents, chunks, vectors, a FAISS index and a BM25 index, with a manifest.

Each build is written to a fresh version folder and made current by atomically replacing
the `CURRENT` pointer file, so a crash mid-build leaves the previous index usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.errors import IndexCorruptError, IndexLockedError, IndexMissingError, ModelMismatchError
from rag.keywords import TermCounts, bm25_text, bm25_tokenize, load_keyword_index, read_term_counts, write_keyword_index
from rag.records import Chunk, Document, HnswConfig

log = logging.getLogger(__name__)

FORMAT = 1
CURRENT = "CURRENT"
LOCK = ".lock"
REBUILD_HINT = "run `rag index --rebuild`"


def private_write(path: Path, data: bytes, append: bool = False) -> None:
    """Write (or append to) a file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    private_write(tmp, data)
    os.replace(tmp, path)


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


@dataclass
class Vectors:
    """Chunk vectors in chunk order, and sentence vectors with the chunk row each belongs to."""

    chunks: np.ndarray
    sentences: np.ndarray
    sentence_owner: np.ndarray


@dataclass
class Manifest:
    embedding_model: str
    dimension: int
    chunker: dict
    documents: dict[str, str]  # doc_id -> content hash
    index_type: str
    n_chunks: int
    built_at: str
    versions: dict[str, str]
    version: str
    sentence_vectors: bool = False
    format: int = FORMAT
    file_stats: dict[str, list[int]] = field(default_factory=dict)  # doc_id -> [size, mtime_ns]: unchanged files are not re-read


def build_dense_index(vectors: np.ndarray, index_type: str, hnsw: HnswConfig = HnswConfig(), base=None):
    """A FAISS index over `vectors`. `base`, an index already holding the first rows, is extended instead."""
    import faiss

    index = base
    if index is None and index_type == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw.ef_construction
    elif index is None:
        index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors) > index.ntotal:
        index.add(np.ascontiguousarray(vectors[index.ntotal :], dtype=np.float32))
    return index


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sentence-transformers", "transformers", "torch", "faiss-cpu", "bm25s", "rag-articles"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


class IndexStore:
    """A loaded, read-only index version."""

    def __init__(
        self, path: Path, manifest: Manifest, documents: dict[str, Document], chunks: list[Chunk], ef_search: int = 256
    ):
        self.path = path
        self.manifest = manifest
        self.documents = documents
        self.chunks = chunks
        self.ef_search = ef_search  # HNSW search breadth: recall against latency

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, index_dir: Path, expected_model: str | None = None, ef_search: int = 256) -> IndexStore:
        version_dir = current_version_dir(index_dir)
        manifest = _read_manifest(version_dir / "manifest.json")
        if expected_model and manifest.embedding_model != expected_model:
            raise ModelMismatchError(
                f"the index in {index_dir} was built with {manifest.embedding_model!r} but the configured "
                f"embedding model is {expected_model!r}; {REBUILD_HINT} or set RAG_EMBEDDING_MODEL={manifest.embedding_model}"
            )
        documents = {d["doc_id"]: Document.from_dict(d) for d in _read_jsonl(version_dir / "documents.jsonl")}
        try:
            chunks = [Chunk(**c) for c in _read_jsonl(version_dir / "chunks.jsonl")]
        except TypeError as exc:
            raise IndexCorruptError(f"{version_dir / 'chunks.jsonl'}: unexpected fields ({exc}); {REBUILD_HINT}") from exc
        if len(chunks) != manifest.n_chunks:
            raise IndexCorruptError(
                f"{version_dir / 'chunks.jsonl'}: {len(chunks)} chunks, manifest says {manifest.n_chunks}; {REBUILD_HINT}"
            )
        store = cls(version_dir, manifest, documents, chunks, ef_search)
        store._check_files()
        return store

    def _check_files(self) -> None:
        """Open the vector files now so a damaged one is reported by name at load, not mid-question."""
        vectors = self.vectors
        if vectors.shape != (self.manifest.n_chunks, self.manifest.dimension):
            raise IndexCorruptError(f"{self.path / 'vectors.npy'}: shape {vectors.shape} does not match the manifest; {REBUILD_HINT}")
        if self.dense.ntotal != self.manifest.n_chunks:
            raise IndexCorruptError(f"{self.path / 'dense.faiss'}: {self.dense.ntotal} vectors, expected {self.manifest.n_chunks}; {REBUILD_HINT}")
        if self.manifest.sentence_vectors:
            n = len(self.sentence_owner)
            if self.sentence_dense.ntotal != n or self.sentence_vectors.shape[0] != n:
                raise IndexCorruptError(f"{self.path / 'sentences.faiss'}: {self.sentence_dense.ntotal} vectors, expected {n}; {REBUILD_HINT}")
        _ = self.bm25

    @cached_property
    def vectors(self) -> np.ndarray:
        return self._read_npy(self.path / "vectors.npy")

    def _read_npy(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexCorruptError(f"{path}: unreadable ({exc}); {REBUILD_HINT}") from exc

    @cached_property
    def dense(self):
        return self._read_faiss(self.path / "dense.faiss")

    @cached_property
    def sentence_dense(self):
        return self._read_faiss(self.path / "sentences.faiss")

    @cached_property
    def sentence_owner(self) -> np.ndarray:
        """Chunk row of each sentence vector."""
        return self._read_npy(self.path / "sentence_owner.npy")

    @cached_property
    def sentence_vectors(self) -> np.ndarray:
        return self._read_npy(self.path / "sentence_vectors.npy")

    @cached_property
    def _sentence_rows(self) -> dict[str, np.ndarray]:
        """chunk_id -> rows of its sentence vectors, in sentence order."""
        order = np.argsort(self.sentence_owner, kind="stable")
        owners = np.asarray(self.sentence_owner)[order]
        bounds = np.searchsorted(owners, np.arange(len(self.chunks) + 1))
        return {c.chunk_id: order[bounds[i] : bounds[i + 1]] for i, c in enumerate(self.chunks)}

    def sentence_vectors_of(self, chunk_id: str) -> np.ndarray | None:
        """The stored vectors of a chunk's sentences (title-prefixed, as indexed), if kept."""
        if not self.manifest.sentence_vectors or chunk_id not in self._sentence_rows:
            return None
        return np.asarray(self.sentence_vectors[self._sentence_rows[chunk_id]])

    def _read_faiss(self, path: Path):
        import faiss

        if not path.is_file():
            raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(f"{path}: unreadable FAISS index; {REBUILD_HINT}") from exc
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = self.ef_search
        return index

    @cached_property
    def bm25(self):
        path = self.path / "bm25"
        try:
            return load_keyword_index(path)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise IndexCorruptError(f"{path}: unreadable BM25 index ({exc}); {REBUILD_HINT}") from exc

    def term_counts(self) -> TermCounts | None:
        """The counts the BM25 scores were computed from (None for an index from before they were kept)."""
        path = self.path / "bm25"
        try:
            terms = read_term_counts(path, self.bm25.vocab_dict)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable term counts (%s); counting again", path, exc)
            return None
        if terms and (terms.counts.shape[0] != len(self.chunks) or terms.counts.shape[1] > len(terms.vocab)):
            log.warning("%s: term counts do not match the passages; counting again", path)
            return None
        return terms

    # ---- search primitives ---------------------------------------------------------------
    def dense_search(self, query_vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Chunks ranked by their best cosine match: the whole passage or one of its sentences."""
        k = min(k, self.manifest.n_chunks if allowed is None else len(allowed))
        if k <= 0:
            return []
        query = query_vector.reshape(1, -1).astype(np.float32)
        best: dict[int, float] = {}
        for row, score in self._faiss_search(self.dense, query, k, allowed):
            best[row] = score
        if self.manifest.sentence_vectors:
            sentence_allowed = None if allowed is None else np.flatnonzero(np.isin(self.sentence_owner, allowed))
            for sent, score in self._faiss_search(self.sentence_dense, query, k * 4, sentence_allowed):
                row = int(self.sentence_owner[sent])
                best[row] = max(best.get(row, -1.0), score)
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:k]

    def _faiss_search(self, index, query: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        import faiss

        k = min(k, index.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return []
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
            if hasattr(index, "hnsw"):
                params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
            else:
                params = faiss.SearchParameters(sel=selector)
        scores, ids = index.search(query, k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def bm25_search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        tokens = bm25_tokenize([query])[0]
        if not tokens or k <= 0 or not self.chunks:
            return []
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            masked = np.full_like(scores, -np.inf)
            masked[allowed] = scores[allowed]
            scores = masked
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


# ---- writing --------------------------------------------------------------------------------
def current_version_dir(index_dir: Path) -> Path:
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        raise IndexMissingError(f"no index in {index_dir}; run `rag index` to build it")
    name = pointer.read_text(encoding="utf-8").strip()
    version_dir = index_dir / name
    if not name or "/" in name or not version_dir.is_dir():
        raise IndexCorruptError(f"{pointer}: points to a missing index version {name!r}; {REBUILD_HINT}")
    return version_dir


def write_version(
    index_dir: Path,
    manifest: Manifest,
    documents: list[Document],
    chunks: list[Chunk],
    vectors: Vectors,
    hnsw: HnswConfig = HnswConfig(),
    appended_to: IndexStore | None = None,
    terms: TermCounts | None = None,
) -> Path:
    """Write a complete index version beside the current one, then switch `CURRENT` to it.

    `appended_to`: the previous version, when its rows are the first rows of this one; its vector
    indexes are extended rather than rebuilt (an HNSW graph of 100,000 passages takes minutes).
    `terms`: the chunks' term counts, when the caller kept most of them from the previous version."""
    index_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    version_dir = index_dir / manifest.version
    tmp_dir = index_dir / f".building-{manifest.version}"
    tmp_dir.mkdir(mode=0o700)
    before = appended_to.path if appended_to else None
    _write_records(tmp_dir / "documents.jsonl", documents, Document.to_dict, before, appended_to and list(appended_to.documents.values()))
    _write_records(tmp_dir / "chunks.jsonl", chunks, vars, before, appended_to and appended_to.chunks)  # flat: vars, not asdict
    _save_npy(tmp_dir / "vectors.npy", vectors.chunks)
    index_type = manifest.index_type
    base = appended_to.dense if appended_to else None
    _save_faiss(tmp_dir / "dense.faiss", build_dense_index(vectors.chunks, index_type, hnsw, base))
    if manifest.sentence_vectors:
        _save_npy(tmp_dir / "sentence_vectors.npy", vectors.sentences)
        _save_npy(tmp_dir / "sentence_owner.npy", vectors.sentence_owner)
        base = appended_to.sentence_dense if appended_to else None
        _save_faiss(tmp_dir / "sentences.faiss", build_dense_index(vectors.sentences, index_type, hnsw, base))
    write_keyword_index(tmp_dir / "bm25", terms or TermCounts.empty().extended([bm25_text(c) for c in chunks]))
    private_write(tmp_dir / "manifest.json", json.dumps(vars(manifest)).encode("utf-8"))
    os.replace(tmp_dir, version_dir)
    atomic_write(index_dir / CURRENT, manifest.version.encode("utf-8"))
    prune_versions(index_dir, keep=manifest.version)
    return version_dir


def _write_records(path: Path, records: list, to_dict, previous_dir: Path | None, previous: list | None) -> None:
    """Records as JSON lines. When the previous version's file holds exactly the first records, it is
    copied and only the rest are encoded: encoding 100,000 passages again takes seconds."""
    kept = len(previous) if previous and records[: len(previous)] == previous else 0
    if kept:
        shutil.copyfile(previous_dir / path.name, path)
        os.chmod(path, 0o600)  # copyfile creates it with the default mode
    private_write(path, jsonl_bytes(to_dict(r) for r in records[kept:]), append=bool(kept))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        np.save(fh, np.ascontiguousarray(array))


def _save_faiss(path: Path, index) -> None:
    import faiss

    faiss.write_index(index, str(path))
    os.chmod(path, 0o600)


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
    index_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IndexLockedError(f"another `rag index` is writing {index_dir}; wait for it to finish and try again") from exc
        yield
    finally:
        os.close(fd)


def _read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(**data)
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path}: corrupt manifest ({exc.__class__.__name__}); {REBUILD_HINT}") from exc


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").strip()
        # one parse of all lines, not one per line (a newline inside a string is escaped): 100,000 in half the time
        return json.loads(f"[{lines.replace(chr(10), ',')}]")
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path}: corrupt or truncated ({exc.__class__.__name__}); {REBUILD_HINT}") from exc
