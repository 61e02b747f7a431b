"""Writing an index version to Qdrant: new passages upserted, stale ones deleted by article, then published.

The order keeps readers whole: the new points carry the new version, which no published manifest
names yet, so they stay out of sight; the replaced and removed articles' points are deleted by
document id; only then are the manifest, the articles and the keyword statistics written beside
the index and `CURRENT` switched to them (as `rag.index_writer` does for the FAISS store). A build
that fails before the switch leaves the previous version in service, short of the articles it was
replacing; the next `rag index` writes them again and deletes the unpublished points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rag.files import PRIVATE_FOLDER, atomic_write, jsonl_bytes, private_write
from rag.index_writer import Vectors, prune_versions
from rag.keywords import bm25_text, bm25_tokenize
from rag.qdrant_store import (
    DENSE,
    PAGE,
    SPARSE,
    STATS,
    UNITS,
    KeywordStats,
    Location,
    QdrantStore,
    call,
    chunk_of,
    connect,
    location_for,
    passage_sparse,
    payload_of,
    point_id,
)
from rag.records import Chunk, Document
from rag.settings import Settings
from rag.store import CURRENT, DOCUMENTS, Manifest


def write_qdrant_version(
    settings: Settings,
    manifest: Manifest,
    documents: list[Document],
    kept: list[str],
    new_chunks: list[Chunk],
    vectors: Vectors,
    previous,
    progress: bool = False,
) -> Path:
    """Publish `manifest`'s version: `documents` are all its articles, `new_chunks` (with `vectors`, unit
    owners counted from 0) the passages to write; the `kept` articles' passages stay as `previous` has them.
    Without a previous version in this collection (or with vectors of another size) the collection is made anew."""
    location = location_for(settings)
    client = connect(location, settings.qdrant_timeout)
    collection = manifest.store["collection"]
    incremental = _builds_on(previous, manifest)
    if incremental:
        stats = KeywordStats(**asdict(previous.stats))
        stale = sorted(set(previous.manifest.documents) - set(kept))
        stale_units = _forget(previous, stale, stats)
    else:
        _create(client, location, collection, manifest.dimension)
        stats, stale, stale_units = KeywordStats(), [], 0
    tokens = bm25_tokenize([bm25_text(c) for c in new_chunks]) if new_chunks else []
    stats.counted(tokens, +1)
    for batch in _points(manifest.version, new_chunks, vectors, tokens, stats.mean_length, progress):
        call(location, repr(collection), lambda: client.upsert(collection, batch, wait=True))
    if stale:
        call(location, repr(collection), lambda: client.delete(collection, _stale(stale, manifest.version), wait=True))
    stats.live = _still_live([*stats.live, manifest.version], client, location, collection)
    manifest.chunk_counts = _counts(documents, kept, new_chunks, previous.manifest.chunk_counts if incremental else {})
    manifest.sources = {d.doc_id: d.source_path for d in documents}
    manifest.n_sentences = (previous.manifest.n_sentences - stale_units if incremental else 0) + len(vectors.sentence_owner)
    return _publish(settings.index_dir, manifest, documents, stats)


def _builds_on(previous, manifest: Manifest) -> bool:
    """The previous version's collection is this one, with vectors of the same size: its kept passages stay."""
    return (isinstance(previous, QdrantStore) and previous.manifest.store == manifest.store
            and previous.manifest.dimension == manifest.dimension)


def _forget(previous: QdrantStore, stale: list[str], stats: KeywordStats) -> int:
    """Take the stale articles' passages out of the keyword statistics; returns their answer units."""
    from qdrant_client import models

    if not stale:
        return 0
    selection = previous.live(models.FieldCondition(key="doc_id", match=models.MatchAny(any=stale)))
    points = list(previous.scroll(selection))
    stats.counted(bm25_tokenize([bm25_text(chunk_of(p.payload)) for p in points]) if points else [], -1)
    return sum(p.payload.get("n_units", 0) for p in points)


def _create(client, location: Location, collection: str, dimension: int) -> None:
    """A new, empty collection (an old one of that name, from another build, is dropped)."""
    from qdrant_client import models

    def create() -> None:
        if client.collection_exists(collection):
            client.delete_collection(collection)
        client.create_collection(
            collection,
            vectors_config={
                # never searched (the units hold the passage too): no graph to build for it
                DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE, hnsw_config=models.HnswConfigDiff(m=0)),
                UNITS: models.VectorParams(size=dimension, distance=models.Distance.COSINE,
                                           multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)),
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if location.url:  # a server filters by these on every query; the embedded one has no payload indexes
            for key in ("version", "doc_id", "chunk_id"):
                client.create_payload_index(collection, key, models.PayloadSchemaType.KEYWORD)
            client.create_payload_index(collection, "day", models.PayloadSchemaType.INTEGER)

    call(location, repr(collection), create)


def _points(version: str, chunks: list[Chunk], vectors: Vectors, tokens: list[list[str]], mean_length: float,
            progress: bool) -> Iterator[list]:
    """The new passages as points, a page at a time."""
    from qdrant_client import models
    from tqdm import tqdm

    bounds = np.searchsorted(vectors.sentence_owner, np.arange(len(chunks) + 1))
    with tqdm(total=len(chunks), unit="passage", desc="qdrant", delay=2, disable=not progress, leave=False) as bar:
        for start in range(0, len(chunks), PAGE):
            batch = []
            for i in range(start, min(start + PAGE, len(chunks))):
                passage, units = vectors.chunks[i], vectors.sentences[bounds[i] : bounds[i + 1]]
                batch.append(models.PointStruct(
                    id=point_id(version, chunks[i].chunk_id),
                    vector={DENSE: passage.tolist(), UNITS: np.vstack([passage, units]).tolist(),
                            SPARSE: passage_sparse(tokens[i], mean_length)},
                    payload=payload_of(chunks[i], version, len(units)),
                ))
            yield batch
            bar.update(len(batch))


def _stale(doc_ids: list[str], version: str):
    """The replaced and removed articles' points, whichever version wrote them, but not this build's."""
    from qdrant_client import models

    return models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=doc_ids))],
        must_not=[models.FieldCondition(key="version", match=models.MatchValue(value=version))],
    ))


def _still_live(versions: list[str], client, location: Location, collection: str) -> list[str]:
    """The write versions that still hold points (the newest always): the filter every query carries stays short."""
    from qdrant_client import models

    def holds(version: str) -> bool:
        selection = models.Filter(must=[models.FieldCondition(key="version", match=models.MatchValue(value=version))])
        return call(location, repr(collection), lambda: client.count(collection, count_filter=selection, exact=True)).count > 0

    return [v for v in dict.fromkeys(versions) if v == versions[-1] or holds(v)]


def _counts(documents: list[Document], kept: list[str], new_chunks: list[Chunk], kept_counts: dict[str, int]) -> dict[str, int]:
    """Passages per article in storage order: the kept ones as recorded, the new ones counted."""
    kept_set = set(kept)
    counts = {d.doc_id: kept_counts[d.doc_id] if d.doc_id in kept_set else 0 for d in documents}
    for c in new_chunks:
        counts[c.doc_id] += 1
    return counts


def _publish(index_dir: Path, manifest: Manifest, documents: list[Document], stats: KeywordStats) -> Path:
    """The version's folder written whole, then named in `CURRENT` (as `rag.index_writer.write_version`)."""
    index_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    version_dir, tmp_dir = index_dir / manifest.version, index_dir / f".building-{manifest.version}"
    tmp_dir.mkdir(mode=PRIVATE_FOLDER)
    private_write(tmp_dir / DOCUMENTS, jsonl_bytes(d.to_dict() for d in documents))
    private_write(tmp_dir / STATS, json.dumps(asdict(stats)).encode("utf-8"))
    private_write(tmp_dir / "manifest.json", json.dumps(vars(manifest)).encode("utf-8"))
    os.replace(tmp_dir, version_dir)
    atomic_write(index_dir / CURRENT, manifest.version.encode("utf-8"))
    prune_versions(index_dir, keep=manifest.version)
    return version_dir
