"""Passages in Qdrant: a server, a cluster, or an embedded one (`RAG_QDRANT_PATH`, tests and small set-ups).

One point per passage: its record in the payload (text, offsets, section path, metadata), and
three named vectors: `dense` (the passage), `units` (the passage and each answer unit, a
multivector compared by MaxSim, so one query ranks a passage by its best match as the FAISS store
does), and `bm25` (sparse; the engine weights each term by its IDF, the payload by BM25's term
frequency saturation with the product's own analysis, so keyword scores are those of the bm25s index).

Each point carries the version that wrote it. A reader searches only the versions its manifest
names live, so the points of a build not yet published stay out of sight (see `rag.qdrant_writer`).
The index folder keeps the manifest, the articles and the keyword statistics (`qdrant.json`).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.errors import IndexCorruptError, ModelMismatchError, RagError
from rag.keywords import bm25_tokenize
from rag.records import Chunk, Document
from rag.settings import Settings
from rag.store import DOCUMENTS, REBUILD_HINT, Manifest, current_version_dir, parse_jsonl, read_manifest, scaled_idf

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

    from rag.retrieval import Filters

log = logging.getLogger(__name__)

STATS = "qdrant.json"  # beside the manifest: live versions and keyword statistics
DENSE, UNITS, SPARSE = "dense", "units", "bm25"
K1, B = 1.5, 0.75  # bm25s's defaults, as the FAISS store's keyword index
PAGE = 256  # points a request reads or writes
_NAMESPACE = uuid.UUID("6c1f6f0e-6a53-4d7e-9f0e-0d1d5a3c2b71")


class QdrantError(RagError):
    """Qdrant is unreachable, refuses the key, or lacks the collection."""


@dataclass
class KeywordStats:
    """What the engine does not tell: each term's passage count (for the answer policy's specificity)
    and the passage lengths (for BM25's length normalisation), and which write versions are live."""

    live: list[str] = field(default_factory=list)
    n_passages: int = 0
    total_length: int = 0
    doc_freq: dict[str, int] = field(default_factory=dict)

    @property
    def mean_length(self) -> float:
        return self.total_length / self.n_passages if self.n_passages else 1.0

    def counted(self, token_lists: list[list[str]], sign: int) -> None:
        """Add (sign 1) or take away (sign -1) these passages' terms."""
        for tokens in token_lists:
            self.n_passages += sign
            self.total_length += sign * len(tokens)
            for term in set(tokens):
                n = self.doc_freq.get(term, 0) + sign
                if n > 0:
                    self.doc_freq[term] = n
                else:
                    self.doc_freq.pop(term, None)

    @classmethod
    def read(cls, path: Path) -> KeywordStats:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{path}: corrupt ({exc.__class__.__name__}); {REBUILD_HINT}") from exc


# ---- where the collection is ----------------------------------------------------------------
@dataclass(frozen=True)
class Location:
    url: str | None
    path: str | None
    api_key: str | None = field(default=None, repr=False)  # never printed

    @property
    def shown(self) -> str:
        return f"RAG_QDRANT_URL={self.url}" if self.url else f"RAG_QDRANT_PATH={self.path}"

    @property
    def recorded(self) -> str:
        """What the manifest records (never the key): a later `rag search --index DIR` finds the collection."""
        return self.url or self.path or ""


def location_for(settings: Settings, recorded: str | None = None) -> Location:
    """The configured Qdrant, else the one the manifest recorded; neither is a clear error."""
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    if settings.qdrant_url:
        return Location(settings.qdrant_url.rstrip("/"), None, key)
    if settings.qdrant_path:
        if settings.qdrant_path.resolve() == settings.index_dir.resolve():  # both lock a `.lock` file there
            raise QdrantError("RAG_QDRANT_PATH is the index folder; give the embedded Qdrant a folder of its own")
        return Location(None, str(settings.qdrant_path.resolve()), key)
    if recorded:
        is_url = re.match(r"^[a-z]+://", recorded)
        return Location(recorded if is_url else None, None if is_url else recorded, key)
    raise QdrantError("RAG_STORE=qdrant needs RAG_QDRANT_URL (a Qdrant server or cluster) or RAG_QDRANT_PATH "
                      "(an embedded Qdrant in a folder); set one of them")


def collection_name(settings: Settings) -> str:
    """The configured name, else one derived from the index folder: two indexes never share a collection."""
    if settings.qdrant_collection:
        return settings.qdrant_collection
    folder = settings.index_dir.resolve()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-") or "index"
    return f"rag-{slug}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


def connect(location: Location, timeout: float) -> QdrantClient:
    """One client per Qdrant in a process (an embedded one allows only one), checked to answer."""
    return _client(location, timeout)


@functools.lru_cache(maxsize=8)
def _client(location: Location, timeout: float) -> QdrantClient:
    from qdrant_client import QdrantClient

    try:
        if location.url:
            client = QdrantClient(url=location.url, api_key=location.api_key, timeout=int(max(timeout, 1)))
        else:
            Path(location.path).mkdir(parents=True, exist_ok=True, mode=0o700)
            client = QdrantClient(path=location.path)
        client.get_collections()
        atexit.register(client.close)  # closed before the interpreter tears down what closing needs
    except Exception as exc:  # noqa: BLE001 - the client raises many kinds; each means the same to the user
        raise QdrantError(_unreachable(location, exc)) from None  # the cause may carry the request's headers
    return client


def _unreachable(location: Location, exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return f"Qdrant at {location.shown} refused the request (HTTP {status}); set RAG_QDRANT_API_KEY to the server's key"
    if location.path:
        return (f"the embedded Qdrant in {location.shown} cannot be opened ({exc.__class__.__name__}); another process may "
                "hold it: stop it, or run a Qdrant server and set RAG_QDRANT_URL")
    return f"Qdrant at {location.shown} is unreachable ({exc.__class__.__name__}); start it, or correct RAG_QDRANT_URL"


def call(location: Location, what: str, request):
    """A request to Qdrant; a failure is one line naming the setting and the fix."""
    try:
        return request()
    except QdrantError:
        raise
    except Exception as exc:  # noqa: BLE001 - as in `_client`
        if "not found" in str(exc).lower() and "collection" in str(exc).lower():
            raise QdrantError(f"Qdrant at {location.shown} has no collection {what}; run `rag index --rebuild` "
                              "to write it, or point RAG_QDRANT_URL at the Qdrant that holds it") from None
        raise QdrantError(_unreachable(location, exc)) from None


# ---- what the points hold ---------------------------------------------------------------------
def point_id(version: str, chunk_id: str) -> str:
    """A build's own id for a passage: it never overwrites a point a published version reads."""
    return str(uuid.uuid5(_NAMESPACE, f"{version}/{chunk_id}"))


def term_id(term: str) -> int:
    """A stable 32-bit index for a term: no vocabulary to share between writers."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


def passage_sparse(tokens: list[str], mean_length: float) -> models.SparseVector:
    """BM25's term weight without the IDF (the engine's `Modifier.IDF` multiplies it in), as bm25s's Lucene variant."""
    from qdrant_client import models

    norm = K1 * (1 - B + B * len(tokens) / max(mean_length, 1e-9))
    weights: dict[int, float] = {}
    for term, tf in Counter(tokens).items():
        index = term_id(term)
        weights[index] = weights.get(index, 0.0) + tf / (tf + norm)
    return models.SparseVector(indices=list(weights), values=list(weights.values()))


def query_sparse(tokens: list[str]) -> models.SparseVector:
    from qdrant_client import models

    weights = Counter(term_id(t) for t in tokens)
    return models.SparseVector(indices=list(weights), values=[float(n) for n in weights.values()])


def day(date: str | None) -> int | None:
    """A YYYY-MM-DD date as a number the engine can compare in a range filter."""
    return int(date.replace("-", "")) if date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) else None


def payload_of(chunk: Chunk, version: str, n_units: int) -> dict:
    return vars(chunk) | {"headings": list(chunk.headings), "version": version, "day": day(chunk.date), "n_units": n_units}


_CHUNK_FIELDS = tuple(Chunk.__dataclass_fields__)


def chunk_of(payload: dict) -> Chunk:
    return Chunk(**{k: payload[k] for k in _CHUNK_FIELDS if k in payload} | {"headings": tuple(payload.get("headings", ()))})


# ---- reading ------------------------------------------------------------------------------------
class QdrantStore:
    """An index version whose passages live in a Qdrant collection; implements `rag.stores.PassageStore`
    with point ids as keys."""

    def __init__(self, path: Path, manifest: Manifest, client: QdrantClient, location: Location, stats: KeywordStats):
        self.path = path
        self.manifest = manifest
        self.client = client
        self.location = location
        self.stats = stats
        self.collection = manifest.store["collection"]
        self._passages: dict[str, Chunk] = {}  # point id -> passage, as searches return them
        self._ids: dict[str, str] = {}  # chunk id -> point id

    @classmethod
    def open(cls, settings: Settings, expected_model: str | None = None) -> QdrantStore:
        version_dir = current_version_dir(settings.index_dir)
        manifest = read_manifest(version_dir / "manifest.json")
        if expected_model and manifest.embedding_model != expected_model:
            raise ModelMismatchError(
                f"the index in {settings.index_dir} was built with {manifest.embedding_model!r} but the configured "
                f"embedding model is {expected_model!r}; {REBUILD_HINT} or set RAG_EMBEDDING_MODEL={manifest.embedding_model}"
            )
        location = location_for(settings, manifest.store.get("location"))
        client = connect(location, settings.qdrant_timeout)
        collection = manifest.store["collection"]
        if not call(location, collection, lambda: client.collection_exists(collection)):
            raise QdrantError(f"Qdrant at {location.shown} has no collection {collection!r}; run `rag index --rebuild` "
                              "to write it, or point RAG_QDRANT_URL at the Qdrant that holds it")
        return cls(version_dir, manifest, client, location, KeywordStats.read(version_dir / STATS))

    def _call(self, request):
        return call(self.location, repr(self.collection), request)

    # ---- records -----------------------------------------------------------------------------
    @cached_property
    def documents(self) -> dict[str, Document]:
        path = self.path / DOCUMENTS
        try:
            return {d["doc_id"]: Document.from_dict(d) for d in parse_jsonl(path, path.read_bytes())}
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"{path}: missing; {REBUILD_HINT}") from exc
        except (KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{path}: unexpected fields ({exc}); {REBUILD_HINT}") from exc

    @cached_property
    def chunks(self) -> list[Chunk]:
        order = self._doc_order
        chunks = [self._remember(str(p.id), p.payload) for p in self.scroll(self.live())]
        chunks.sort(key=lambda c: (order.get(c.doc_id, len(order)), c.position))
        if len(chunks) != self.manifest.n_chunks:
            raise IndexCorruptError(f"collection {self.collection!r}: {len(chunks)} passages, the manifest in {self.path} "
                                    f"says {self.manifest.n_chunks}; {REBUILD_HINT}")
        return chunks

    def scroll(self, selection: models.Filter, with_vectors: list[str] | bool = False):
        """Every point the filter selects, page by page."""
        offset = None
        while True:
            points, offset = self._call(lambda: self.client.scroll(
                self.collection, scroll_filter=selection, limit=PAGE, offset=offset, with_payload=True, with_vectors=with_vectors))
            yield from points
            if offset is None:
                return

    def _remember(self, key: str, payload: dict) -> Chunk:
        chunk = self._passages.get(key)
        if chunk is None:
            chunk = self._passages[key] = chunk_of(payload)
            self._ids[chunk.chunk_id] = key
        return chunk

    def _key_of(self, chunk_id: str) -> str | None:
        if chunk_id not in self._ids:
            from qdrant_client import models

            points, _ = self._call(lambda: self.client.scroll(
                self.collection, scroll_filter=self.live(models.FieldCondition(key="chunk_id", match=models.MatchValue(value=chunk_id))),
                limit=1, with_payload=True))
            for p in points:
                self._remember(str(p.id), p.payload)
        return self._ids.get(chunk_id)

    def chunk(self, chunk_id: str) -> Chunk | None:
        key = self._key_of(chunk_id)
        return None if key is None else self._passages[key]

    def passage(self, key: str) -> Chunk:
        if key not in self._passages:
            (point,) = self._call(lambda: self.client.retrieve(self.collection, [key], with_payload=True))
            self._remember(key, point.payload)
        return self._passages[key]

    def passage_vectors(self, keys: Sequence[str]) -> np.ndarray:
        if not len(keys):
            return np.zeros((0, self.manifest.dimension), np.float32)
        points = self._call(lambda: self.client.retrieve(self.collection, list(keys), with_vectors=[DENSE]))
        by_id = {str(p.id): p.vector[DENSE] for p in points}
        return np.asarray([by_id[k] for k in keys], dtype=np.float32)

    def sentence_vectors_of(self, chunk_id: str) -> np.ndarray | None:
        """The stored vectors of a passage's answer units (the multivector after its passage row), if kept."""
        key = self._key_of(chunk_id) if self.manifest.sentence_vectors else None
        if key is None:
            return None
        (point,) = self._call(lambda: self.client.retrieve(self.collection, [key], with_vectors=[UNITS]))
        return np.asarray(point.vector[UNITS][1:], dtype=np.float32).reshape(-1, self.manifest.dimension)

    # ---- search --------------------------------------------------------------------------------
    def live(self, *conditions) -> models.Filter:
        """Points of the versions this manifest serves, and the given conditions."""
        from qdrant_client import models

        return models.Filter(must=[models.FieldCondition(key="version", match=models.MatchAny(any=self.stats.live)), *conditions])

    def select(self, filters: Filters) -> models.Filter | None:
        from qdrant_client import models

        conditions = []
        if filters.doc_ids:
            conditions.append(models.FieldCondition(key="doc_id", match=models.MatchAny(any=sorted(filters.doc_ids))))
        if filters.date_from or filters.date_to:
            conditions.append(models.FieldCondition(key="day", range=models.Range(gte=day(filters.date_from), lte=day(filters.date_to))))
        selection = self.live(*conditions)
        return selection if self._call(lambda: self.client.count(self.collection, count_filter=selection, exact=True)).count else None

    def _query(self, query, using: str, k: int, allowed: models.Filter | None) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        result = self._call(lambda: self.client.query_points(
            self.collection, query=query, using=using, limit=k, query_filter=allowed or self.live(), with_payload=True))
        # float32, as the vectors: the embedded engine's float64 sums differ in the last bits for equal vectors
        hits = [(str(p.id), float(np.float32(p.score)), self._remember(str(p.id), p.payload)) for p in result.points]
        # equal scores (a unit shared by two overlapping passages) in storage order, as the FAISS store ranks them
        hits.sort(key=lambda hit: (-hit[1], self._doc_order.get(hit[2].doc_id, len(self._doc_order)), hit[2].position))
        return [(key, score) for key, score, _ in hits]

    @cached_property
    def _doc_order(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.manifest.chunk_counts)}

    def dense_search(self, query_vector: np.ndarray, k: int, allowed: models.Filter | None = None) -> list[tuple[str, float]]:
        """One MaxSim query over the passage and its units: a passage scores by its best match."""
        return self._query([np.asarray(query_vector, dtype=np.float32).tolist()], UNITS, k, allowed)

    def bm25_search(self, query: str, k: int, allowed: models.Filter | None = None) -> list[tuple[str, float]]:
        tokens = bm25_tokenize([query])[0]
        if not tokens:
            return []
        return [(key, score) for key, score in self._query(query_sparse(tokens), SPARSE, k, allowed) if score > 0]

    def specificity(self, terms: list[str]) -> np.ndarray:
        """Each analysed term's BM25 IDF over the passages, scaled to 0..1 (1: in no passage), as the FAISS store's."""
        n = self.stats.n_passages
        held = np.array([self.stats.doc_freq.get(t, 0) for t in terms], dtype=np.float64)
        return scaled_idf(n, held)
