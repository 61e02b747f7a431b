"""The store behind the retriever: what the pipeline asks of it, and opening the one an index names.

Two implementations: `rag.store.IndexStore`, FAISS and BM25 files in the index folder, and
`rag.qdrant_store.QdrantStore`, a Qdrant collection (a server, a cluster or an embedded one). Either
way the index folder keeps the manifest, the articles and the ONNX export; the manifest's `store`
says where the passages are. Each store names its passages by a key of its own (a row, a point id),
which the retriever only passes back.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rag.errors import IndexCorruptError, IndexMissingError
from rag.records import Chunk, Document
from rag.settings import Settings
from rag.store import IndexStore, Manifest, current_version_dir, read_manifest

if TYPE_CHECKING:
    from rag.retrieval import Filters

Key = Hashable
Selection = Any  # what `select` returns and the searches take back: rows, a payload filter


class PassageStore(Protocol):
    manifest: Manifest

    @property
    def documents(self) -> dict[str, Document]: ...

    @property
    def chunks(self) -> list[Chunk]:
        """Every passage in storage order (evaluation, `rag inspect`): read in full when asked."""

    def chunk(self, chunk_id: str) -> Chunk | None: ...

    def passage(self, key: Key) -> Chunk: ...

    def passage_vectors(self, keys: Sequence[Key]) -> np.ndarray: ...

    def select(self, filters: Filters) -> Selection | None:
        """The passages the filters accept, for the searches (None: no passage)."""

    def dense_search(self, query_vector: np.ndarray, k: int, allowed: Selection | None = None) -> list[tuple[Key, float]]:
        """Passages ranked by their best cosine match: the whole passage or one of its answer units."""

    def bm25_search(self, query: str, k: int, allowed: Selection | None = None) -> list[tuple[Key, float]]: ...

    def sentence_vectors_of(self, chunk_id: str) -> np.ndarray | None: ...

    def specificity(self, terms: list[str]) -> np.ndarray: ...


QDRANT = "qdrant"


def load_store(settings: Settings, check_model: bool = True) -> PassageStore:
    """The index version in service, from wherever its manifest says its passages are."""
    expected = settings.embedding_model if check_model else None
    if _kind(settings) == QDRANT:
        from rag.qdrant_store import QdrantStore

        return QdrantStore.open(settings, expected)
    return IndexStore.load(settings.index_dir, expected, settings.hnsw_ef_search)


def open_previous(settings: Settings) -> PassageStore | None:
    """The current version for `rag index` to build on: None when there is none, or it is damaged
    (it is then rebuilt). A FAISS version's records are read only when needed."""
    if _kind(settings) == QDRANT:
        from rag.qdrant_store import QdrantStore

        return QdrantStore.open(settings, None)  # unreachable is an error, not a reason to start over
    return IndexStore.open(settings.index_dir)


def store_recipe(settings: Settings) -> dict[str, str]:
    """What a manifest records of the store `rag index` writes to (nothing for FAISS): RAG_STORE, else
    the current index's. Another collection or another Qdrant means a full rebuild. Qdrant is reached
    now: a missing or wrong URL fails before any work."""
    current = _current(settings)
    if (settings.store or current.get("kind")) != QDRANT:
        return {}
    from rag.qdrant_store import collection_name, connect, location_for

    location = location_for(settings, current.get("location"))
    connect(location, settings.qdrant_timeout)
    collection = current.get("collection") if current and not settings.qdrant_collection else collection_name(settings)
    return {"kind": QDRANT, "collection": collection, "location": location.recorded}


def _kind(settings: Settings) -> str:
    return _current(settings).get("kind", "faiss")


def _current(settings: Settings) -> dict[str, str]:
    """The current index's store, as its manifest records it ({} for FAISS, or no readable index)."""
    try:
        return read_manifest(current_version_dir(settings.index_dir) / "manifest.json").store
    except (IndexMissingError, IndexCorruptError):
        return {}  # IndexStore reports what is missing or damaged
