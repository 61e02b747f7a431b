"""Reading an index version: documents, chunks, vectors, FAISS and BM25 indexes, and its manifest.

`CURRENT` names the version in service. Records and vectors are append-only files that later
versions may share and extend, so a version reads only the bytes its manifest records; FAISS
indexes may lag the vector files, and the rows after them are searched exactly. Writing a
version is `rag.index_writer`'s.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.errors import IndexCorruptError, IndexMissingError, ModelMismatchError
from rag.keywords import TermCounts, bm25_tokenize, load_keyword_index, read_term_counts
from rag.records import Chunk, Document

if TYPE_CHECKING:
    from rag.retrieval import Filters

log = logging.getLogger(__name__)

FORMAT = 2  # 2: append-only records and raw vector files, sizes in the manifest
DOCUMENTS, CHUNKS = "documents.jsonl", "chunks.jsonl"
VECTORS, SENTENCE_VECTORS, SENTENCE_OWNER = "vectors.f32", "sentence_vectors.f32", "sentence_owner.i64"
DENSE, SENTENCE_DENSE = "dense.faiss", "sentences.faiss"
CURRENT = "CURRENT"
REBUILD_HINT = "run `rag index --rebuild`"


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
    # Filled by `write_version`. Passages are stored article by article in `chunk_counts` order,
    # so an article's rows follow from the counts without reading the passage records.
    chunk_counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str | None] = field(default_factory=dict)  # doc_id -> the file it was read from
    n_sentences: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # append-only file -> bytes this version reads
    faiss_rows: dict[str, int] = field(default_factory=dict)  # FAISS file -> the first rows it holds
    store: dict[str, str] = field(default_factory=dict)  # where the passages live when not here: {kind, collection, location}

    def rows_of(self) -> dict[str, range]:
        """doc_id -> its passages' row numbers."""
        rows, start = {}, 0
        for doc_id, n in self.chunk_counts.items():
            rows[doc_id] = range(start, start + n)
            start += n
        return rows


class IndexStore:
    """A read-only index version. `load` reads everything now; `open` leaves the article and
    passage records until first used (adding an article to a large index never needs them)."""

    def __init__(self, path: Path, manifest: Manifest, ef_search: int = 256):
        self.path = path
        self.manifest = manifest
        self.ef_search = ef_search  # HNSW search breadth: recall against latency

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, index_dir: Path, expected_model: str | None = None, ef_search: int = 256) -> IndexStore:
        store = cls.open(index_dir, expected_model, ef_search)
        _ = store.documents, store.chunks  # a damaged file is reported at load, not mid-question
        store._check_catalog()
        store.check_faiss_rows(DENSE, store.dense)
        if store.manifest.sentence_vectors:
            store.check_faiss_rows(SENTENCE_DENSE, store.sentence_dense)
        return store

    @classmethod
    def open(cls, index_dir: Path, expected_model: str | None = None, ef_search: int = 256) -> IndexStore:
        version_dir = current_version_dir(index_dir)
        manifest = read_manifest(version_dir / "manifest.json")
        if expected_model and manifest.embedding_model != expected_model:
            raise ModelMismatchError(
                f"the index in {index_dir} was built with {manifest.embedding_model!r} but the configured "
                f"embedding model is {expected_model!r}; {REBUILD_HINT} or set RAG_EMBEDDING_MODEL={manifest.embedding_model}"
            )
        store = cls(version_dir, manifest, ef_search)
        store._check_files()
        return store

    def _check_files(self) -> None:
        """Open the vector files now so a damaged one is reported by name at load, not mid-question.
        The FAISS files are only looked for: `load` reads them, an append may not need them."""
        for name in (DOCUMENTS, CHUNKS):
            self._check_records_end(name)
        _ = self.vectors
        if self.manifest.sentence_vectors:
            _ = self.sentence_owner, self.sentence_vectors
        for name in [DENSE, SENTENCE_DENSE] if self.manifest.sentence_vectors else [DENSE]:
            if name not in self.manifest.faiss_rows or not (self.path / name).is_file():
                raise IndexCorruptError(f"{self.path / name}: missing, or not in the manifest; {REBUILD_HINT}")
        _ = self.bm25

    def _check_catalog(self) -> None:
        """The manifest's passage counts per article match the stored passages (an append trusts them)."""
        counts = self.manifest.chunk_counts
        stored = [c.doc_id for c in self.chunks]
        if stored != [doc_id for doc_id, n in counts.items() for _ in range(n)] or counts.keys() != self.documents.keys():
            raise IndexCorruptError(f"{self.path / 'manifest.json'}: its articles do not match {CHUNKS} and {DOCUMENTS}; {REBUILD_HINT}")

    def check_faiss_rows(self, name: str, index) -> None:
        if index.ntotal != self.manifest.faiss_rows.get(name):
            raise IndexCorruptError(f"{self.path / name}: {index.ntotal} vectors, expected {self.manifest.faiss_rows.get(name)}; {REBUILD_HINT}")

    def recorded_size(self, name: str) -> int:
        """The bytes of an append-only file this version reads; the file may hold more (a later version's)."""
        path = self.path / name
        size = self.manifest.sizes.get(name)
        try:
            actual = path.stat().st_size
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
        if size is None:
            raise IndexCorruptError(f"{path}: not in the manifest; {REBUILD_HINT}")
        if actual < size:
            raise IndexCorruptError(f"{path}: truncated ({actual} bytes, the manifest records {size}); {REBUILD_HINT}")
        return size

    def _check_records_end(self, name: str) -> None:
        """A record file's recorded bytes end a line: a cheap check that an append will not extend a cut record."""
        size = self.recorded_size(name)
        with open(self.path / name, "rb") as fh:
            fh.seek(max(size - 1, 0))
            if size and fh.read(1) != b"\n":
                raise IndexCorruptError(f"{self.path / name}: its last record is cut off; {REBUILD_HINT}")

    @cached_property
    def documents(self) -> dict[str, Document]:
        path = self.path / DOCUMENTS
        try:
            return {d["doc_id"]: Document.from_dict(d) for d in self._read_records(DOCUMENTS)}
        except (KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{path}: unexpected fields ({exc}); {REBUILD_HINT}") from exc

    @cached_property
    def chunks(self) -> list[Chunk]:
        path = self.path / CHUNKS
        try:
            chunks = [Chunk(**c | {"headings": tuple(c.get("headings", ()))}) for c in self._read_records(CHUNKS)]
        except TypeError as exc:
            raise IndexCorruptError(f"{path}: unexpected fields ({exc}); {REBUILD_HINT}") from exc
        if len(chunks) != self.manifest.n_chunks:
            raise IndexCorruptError(f"{path}: {len(chunks)} chunks, manifest says {self.manifest.n_chunks}; {REBUILD_HINT}")
        return chunks

    @cached_property
    def _chunk_by_id(self) -> dict[str, Chunk]:
        return {c.chunk_id: c for c in self.chunks}

    def chunk(self, chunk_id: str) -> Chunk | None:
        """The passage with this id, if the index holds it (a dict built on first use, not a scan)."""
        return self._chunk_by_id.get(chunk_id)

    # Passages are keyed by their row here.
    def passage(self, key: int) -> Chunk:
        return self.chunks[key]

    def passage_vectors(self, keys: list[int]) -> np.ndarray:
        return np.asarray(self.vectors[keys])

    def select(self, filters: Filters) -> np.ndarray | None:
        """The rows of the passages the filters accept (None: no passage)."""
        rows = np.array([i for i, c in enumerate(self.chunks) if filters.accepts(c)], dtype=np.int64)
        return rows if len(rows) else None

    def _read_records(self, name: str) -> list[dict]:
        path = self.path / name
        size = self.recorded_size(name)
        with open(path, "rb") as fh:
            data = fh.read(size)
        return parse_jsonl(path, data)

    def _read_array(self, name: str, dtype, shape: tuple[int, ...]) -> np.ndarray:
        size = self.recorded_size(name)
        if size != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise IndexCorruptError(f"{self.path / name}: {size} bytes do not hold {shape} values; {REBUILD_HINT}")
        if size == 0:
            return np.zeros(shape, dtype)  # an empty file cannot be mapped
        return np.memmap(self.path / name, dtype=dtype, mode="r", shape=shape)

    @cached_property
    def vectors(self) -> np.ndarray:
        return self._read_array(VECTORS, np.float32, (self.manifest.n_chunks, self.manifest.dimension))

    @cached_property
    def dense(self):
        return self._read_faiss(self.path / DENSE)

    @cached_property
    def sentence_dense(self):
        return self._read_faiss(self.path / SENTENCE_DENSE)

    @cached_property
    def sentence_owner(self) -> np.ndarray:
        """Chunk row of each sentence vector."""
        return self._read_array(SENTENCE_OWNER, np.int64, (self.manifest.n_sentences,))

    @cached_property
    def sentence_vectors(self) -> np.ndarray:
        return self._read_array(SENTENCE_VECTORS, np.float32, (self.manifest.n_sentences, self.manifest.dimension))

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

    @cached_property
    def _passage_frequency(self) -> np.ndarray:
        return np.diff(np.asarray(self.bm25.scores["indptr"]))  # passages holding each term (score matrix by term)

    def specificity(self, terms: list[str]) -> np.ndarray:
        """Each analysed term's BM25 IDF over the passages, scaled to 0..1 (1: in no passage)."""
        n, vocab = self.manifest.n_chunks, self.bm25.vocab_dict
        held = np.array([self._passage_frequency[vocab[t]] if t in vocab else 0 for t in terms], dtype=np.float64)
        return scaled_idf(n, held)

    def term_counts(self) -> TermCounts | None:
        """The counts the BM25 scores were computed from (None for an index from before they were kept)."""
        path = self.path / "bm25"
        try:
            terms = read_term_counts(path, self.bm25.vocab_dict)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable term counts (%s); counting again", path, exc)
            return None
        if terms and (terms.counts.shape[0] != self.manifest.n_chunks or terms.counts.shape[1] > len(terms.vocab)):
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
        for row, score in self._vector_search(self.dense, self.vectors, query, k, allowed):
            best[row] = score
        if self.manifest.sentence_vectors:
            sentence_allowed = None if allowed is None else np.flatnonzero(np.isin(self.sentence_owner, allowed))
            for sent, score in self._vector_search(self.sentence_dense, self.sentence_vectors, query, k * 4, sentence_allowed):
                row = int(self.sentence_owner[sent])
                best[row] = max(best.get(row, -1.0), score)
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:k]

    def _vector_search(self, index, vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """The best k rows: FAISS over the rows it holds, an exact scan over the newer rows after them."""
        held = index.ntotal
        if allowed is None:
            hits = self._faiss_search(index, query, k, None)
            tail = np.arange(held, len(vectors))
            scores = np.asarray(vectors[held:]) @ query[0]  # a slice: no copy of the rows
        else:
            hits = self._faiss_search(index, query, k, allowed[allowed < held])
            tail = allowed[allowed >= held]
            scores = np.asarray(vectors[tail]) @ query[0]
        if not len(tail):
            return hits
        top = np.argpartition(-scores, min(k, len(tail)) - 1)[:k]
        return sorted(hits + [(int(tail[i]), float(scores[i])) for i in top], key=lambda hit: -hit[1])[:k]

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


def scaled_idf(n_passages: int, held: np.ndarray) -> np.ndarray:
    """BM25's IDF of terms held by `held` of `n_passages` passages, scaled to 0..1 (1: in no passage)."""
    return np.log(1 + (n_passages - held + 0.5) / (held + 0.5)) / np.log(1 + (n_passages + 0.5) / 0.5)


def served_version(index_dir: Path) -> str | None:
    """The version `CURRENT` names now (None when unreadable): a cheap check for a newer index."""
    try:
        return (index_dir / CURRENT).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def current_version_dir(index_dir: Path) -> Path:
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        raise IndexMissingError(f"no index in {index_dir}; run `rag index` to build it")
    name = pointer.read_text(encoding="utf-8").strip()
    version_dir = index_dir / name
    if not name or "/" in name or not version_dir.is_dir():
        raise IndexCorruptError(f"{pointer}: points to a missing index version {name!r}; {REBUILD_HINT}")
    return version_dir


def read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format", FORMAT) != FORMAT:
            raise IndexCorruptError(f"{path}: an index of format {data['format']}; this version reads format {FORMAT}; {REBUILD_HINT}")
        return Manifest(**data)
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path}: corrupt manifest ({exc.__class__.__name__}); {REBUILD_HINT}") from exc


def parse_jsonl(path: Path, data: bytes) -> list[dict]:
    try:
        lines = data.decode("utf-8").strip()
        # one parse of all lines, not one per line (a newline inside a string is escaped): 100,000 in half the time
        return json.loads(f"[{lines.replace(chr(10), ',')}]")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path}: corrupt or truncated ({exc.__class__.__name__}); {REBUILD_HINT}") from exc
