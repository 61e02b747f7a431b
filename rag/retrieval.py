"""Retrieval: a question -> ranked `Hit`s, fusing dense and BM25 results by their scores (or ranks).

The searches are the store's (FAISS + BM25 files, or Qdrant); the fusion is the product's on either,
so a hit keeps its rank in each search. Optional MMR diversity, merging of neighbouring chunks, and
filters by document and date.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from rag.embedding import Embedder
from rag.records import Chunk, Hit
from rag.settings import Settings
from rag.stores import PassageStore

Method = Literal["hybrid", "dense", "bm25"]


@dataclass(frozen=True)
class Filters:
    doc_ids: frozenset[str] | None = None
    date_from: str | None = None  # inclusive, YYYY-MM-DD
    date_to: str | None = None

    def is_empty(self) -> bool:
        return not (self.doc_ids or self.date_from or self.date_to)

    def accepts(self, chunk: Chunk) -> bool:
        if self.doc_ids and chunk.doc_id not in self.doc_ids:
            return False
        if (self.date_from or self.date_to) and not chunk.date:
            return False
        if self.date_from and chunk.date < self.date_from:
            return False
        return not (self.date_to and chunk.date > self.date_to)


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = 60) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, 1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return scores


# Distribution-based score fusion's bounds: a z-score is clipped to mean ± 3 standard deviations, and a
# candidate missing from one retriever's list counts as the lower bound there.
Z_LIMIT = 3.0


def score_fusion(scored: list[list[tuple[int, float]]], weights: list[float], window: int | None = None) -> dict[int, float]:
    """Each list's scores as z-scores within the list (clipped to ±3), weighted and summed: unlike ranks,
    a clear lead in one retriever counts, and the scales of cosine and BM25 do not. Equal weights order
    as Qdrant's `Fusion.DBSF` does. `window`: only each list's first `window` hits are scored (the rest
    count as missing there), so asking for more hits does not reorder the first ones."""
    z_lists = []
    for hits in scored:
        head = hits[:window]
        values = np.array([score for _, score in head], dtype=np.float64)
        spread = values.std() if len(values) > 1 else 0.0
        z = (values - values.mean()) / spread if spread > 0 else np.zeros(len(values))
        z_lists.append(dict(zip((row for row, _ in head), np.clip(z, -Z_LIMIT, Z_LIMIT).tolist())))
    rows = {row for hits in scored for row, _ in hits}
    return {row: sum(w * z.get(row, -Z_LIMIT) for w, z in zip(weights, z_lists)) for row in rows}


class HybridRetriever:
    def __init__(self, store: PassageStore, embedder: Embedder, settings: Settings):
        self.store = store
        self.embedder = embedder
        self.settings = settings

    def search(
        self,
        query: str,
        top_k: int | None = None,
        method: Method = "hybrid",
        filters: Filters | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """`query_vector`: the query already embedded (the pipeline embeds it once for retrieval and ranking)."""
        top_k = max(1, min(top_k or self.settings.top_k, self.store.manifest.n_chunks))
        allowed = None
        if filters is not None and not filters.is_empty():
            allowed = self.store.select(filters)
            if allowed is None:
                return []
        depth = max(self.settings.candidates, top_k * 3)
        if method == "bm25":
            query_vector = None
        elif query_vector is None:
            query_vector = self.embedder.encode_queries([query])[0]
        dense = self.store.dense_search(query_vector, depth, allowed) if query_vector is not None else []
        bm25 = self.store.bm25_search(query, depth, allowed) if method != "dense" else []
        dense_rank = {row: r for r, (row, _) in enumerate(dense, 1)}
        dense_score = {row: s for row, s in dense}
        bm25_rank = {row: r for r, (row, _) in enumerate(bm25, 1)}
        fused = self._fuse(dense, bm25)
        # ties (common with ranks: 1st + 2nd = 2nd + 1st): the closer meaning decides
        order = sorted(fused, key=lambda row: (-fused[row], dense_rank.get(row, depth + 1), bm25_rank.get(row, depth + 1), row))
        if self.settings.mmr and query_vector is not None:
            order = self._mmr(order, query_vector, top_k, dense_score)
        hits = [
            Hit(self.store.passage(row), fused[row], dense_rank.get(row), bm25_rank.get(row), self._cosine(row, query_vector, dense_score))
            for row in order[:top_k]
        ]
        return self._merge_neighbors(hits) if self.settings.merge_neighbors else hits

    def _fuse(self, dense: list[tuple[int, float]], bm25: list[tuple[int, float]]) -> dict[int, float]:
        if self.settings.fusion == "ranks":
            return reciprocal_rank_fusion([[row for row, _ in dense], [row for row, _ in bm25]], self.settings.rrf_k)
        w = self.settings.dense_weight
        return score_fusion([dense, bm25], [w, 1 - w], window=self.settings.candidates)

    def _cosine(self, row: int, query_vector, dense_score: dict[int, float]) -> float | None:
        if row in dense_score:
            return dense_score[row]
        if query_vector is None:
            return None
        return float(np.dot(self.store.passage_vectors([row])[0], query_vector))

    def _mmr(self, order: list[int], query_vector: np.ndarray, top_k: int, dense_score: dict[int, float]) -> list[int]:
        """Maximal marginal relevance over the fused candidates: relevant but not redundant."""
        vectors = self.store.passage_vectors(order)
        # relevance as the dense retriever scored it (a chunk's best sentence counts too)
        relevance = np.array([dense_score.get(row, sim) for row, sim in zip(order, vectors @ query_vector)])
        chosen: list[int] = []
        remaining = list(range(len(order)))
        lam = self.settings.mmr_lambda
        while remaining and len(chosen) < top_k:
            if chosen:
                redundancy = (vectors[remaining] @ vectors[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(remaining))
            scores = lam * relevance[remaining] - (1 - lam) * redundancy
            chosen.append(remaining.pop(int(np.argmax(scores))))
        return [order[i] for i in chosen] + [order[i] for i in remaining]

    def _merge_neighbors(self, hits: list[Hit]) -> list[Hit]:
        """Join hits that are adjacent or overlapping chunks of one document into one passage."""
        merged: list[Hit] = []
        last: list[int] = []  # position of the last chunk in each merged passage
        for hit in hits:
            b = hit.chunk
            # every passage this chunk touches, best-ranked first; they all become one
            touching = [
                i for i, kept in enumerate(merged)
                if kept.chunk.doc_id == b.doc_id and kept.chunk.position - 1 <= b.position <= last[i] + 1
            ]
            if not touching:
                merged.append(hit)
                last.append(b.position)
                continue
            group = [merged[i].chunk for i in touching] + [b]
            start, end = min(c.start for c in group), max(c.end for c in group)
            doc = self.store.documents[b.doc_id]
            first = touching[0]
            chunk = replace(merged[first].chunk, text=doc.text[start:end], start=start, end=end,
                            position=min(c.position for c in group))
            merged[first] = replace(merged[first], chunk=chunk)
            last[first] = max([b.position] + [last[i] for i in touching])
            for i in reversed(touching[1:]):
                del merged[i], last[i]
        return merged
