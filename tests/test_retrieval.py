"""rag/retrieval.py on the seed index: hybrid ranking, filters, MMR, neighbour merging, and both fusions by hand."""

from __future__ import annotations

import pytest

from rag.records import Chunk
from rag.retrieval import Z_LIMIT, Filters, HybridRetriever, reciprocal_rank_fusion, score_fusion

LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
DOC_002 = "002_9aadfc9c626cea25"
DOC_004 = "004_deee31e75b74293e"
UNDATED = {"001_2181b654d248a0eb", "003_4244630f166f0cd0"}


# ---- reciprocal rank fusion (no model) -------------------------------------------------------
def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion([[10, 20, 30], [30, 10]], k=60)
    assert fused == pytest.approx({10: 1 / 61 + 1 / 62, 20: 1 / 62, 30: 1 / 63 + 1 / 61})
    assert max(fused, key=fused.get) == 10
    assert reciprocal_rank_fusion([[1, 2]], k=0) == pytest.approx({1: 1.0, 2: 0.5})
    assert reciprocal_rank_fusion([[], []]) == {}


# ---- score fusion (no model) -----------------------------------------------------------------
def test_score_fusion_by_hand():
    dense = [(10, 0.9), (20, 0.5), (30, 0.1)]  # mean 0.5, std 0.3266: z = 1.2247, 0, -1.2247
    bm25 = [(30, 8.0), (10, 4.0)]  # mean 6, std 2: z = 1, -1
    fused = score_fusion([dense, bm25], [0.5, 0.5])
    assert fused == pytest.approx({10: 0.5 * 1.2247 - 0.5, 20: -0.5 * Z_LIMIT, 30: -0.5 * 1.2247 + 0.5}, abs=1e-4)
    assert max(fused, key=fused.get) == 10
    assert score_fusion([dense, bm25], [1.0, 0.0]) == pytest.approx({10: 1.2247, 20: 0.0, 30: -1.2247}, abs=1e-4)
    assert score_fusion([[(1, 0.4)], []], [0.5, 0.5]) == {1: -0.5 * Z_LIMIT}  # one score has no spread: z 0
    assert score_fusion([[], []], [0.5, 0.5]) == {}
    longer = score_fusion([dense + [(40, -5.0)], bm25], [0.5, 0.5], window=3)  # statistics of the first 3 only
    assert {row: longer[row] for row in fused} == pytest.approx(fused) and longer[40] == pytest.approx(-Z_LIMIT)
    runaway = score_fusion([[(0, 10.0)] + [(i, 0.0) for i in range(1, 30)]], [1.0])  # z 5.4, clipped
    assert runaway[0] == Z_LIMIT


def test_score_fusion_ignores_each_retrievers_scale_and_counts_a_clear_lead():
    dense = [(1, 0.90), (2, 0.30), (3, 0.29), (4, 0.28)]  # 1 far ahead on meaning
    bm25 = [(2, 5.0), (1, 4.9), (3, 1.0), (4, 1.0)]  # 2 barely ahead on words
    ranks = reciprocal_rank_fusion([[r for r, _ in dense], [r for r, _ in bm25]])
    assert ranks[1] == pytest.approx(ranks[2])  # ranks alone cannot tell them apart
    fused = score_fusion([dense, bm25], [0.5, 0.5])
    assert max(fused, key=fused.get) == 1
    rescaled = score_fusion([dense, [(r, 100 * s + 7) for r, s in bm25]], [0.5, 0.5])  # BM25 of another engine
    assert rescaled == pytest.approx(fused)


def chunk(doc_id: str, date: str | None) -> Chunk:
    return Chunk("c", doc_id, 0, "text", 0, 4, date=date)


def test_filters_accept_by_doc_and_inclusive_date_range():
    f = Filters(doc_ids=frozenset({"a"}))
    assert f.accepts(chunk("a", None)) and not f.accepts(chunk("b", "2020-01-01"))
    dates = Filters(date_from="2020-09-03", date_to="2020-09-11")
    assert dates.accepts(chunk("x", "2020-09-03")) and dates.accepts(chunk("x", "2020-09-11"))
    assert not dates.accepts(chunk("x", "2020-09-12")) and not dates.accepts(chunk("x", "2020-09-02"))
    assert not dates.accepts(chunk("x", None))  # undated chunks never pass a date filter
    assert Filters().is_empty() and not dates.is_empty()


# ---- on the seed index ------------------------------------------------------------------------
@pytest.mark.integration
def test_loan_question_ranks_the_loan_chunk_first(pipeline):
    hits = pipeline.search(LOAN_QUESTION, top_k=5)
    assert len(hits) == 5
    assert "$1.5 billion" in hits[0].chunk.text
    assert len({h.chunk.chunk_id for h in hits}) == 5
    fused = pipeline.retriever.search(LOAN_QUESTION, top_k=5)  # before reranking by the answer stated: by fused score
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)
    assert {h.chunk.chunk_id for h in fused} == {h.chunk.chunk_id for h in hits}  # reranking reorders, never adds


@pytest.mark.integration
def test_hits_carry_both_ranks_and_a_consistent_fused_score(pipeline):
    hits = pipeline.retriever.search(LOAN_QUESTION, top_k=5)
    for hit in hits:
        assert hit.dense_rank is not None and hit.bm25_rank is not None
        assert -1.0 <= hit.dense_score <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].dense_rank <= 3 and hits[0].bm25_rank <= 6
    depth = pipeline.settings.candidates  # by default each retriever's 30 best go into the fusion
    query_vector = pipeline.retriever.embedder.encode_queries([LOAN_QUESTION])[0]
    searched = [pipeline.store.dense_search(query_vector, depth, None), pipeline.store.bm25_search(LOAN_QUESTION, depth, None)]
    by_score = score_fusion(searched, [0.5, 0.5])
    assert [h.score for h in hits] == pytest.approx(sorted(by_score.values(), reverse=True)[:5])
    narrow = HybridRetriever(pipeline.store, pipeline.retriever.embedder, pipeline.settings.with_overrides(candidates=10))
    first = [h.chunk.chunk_id for h in narrow.search(LOAN_QUESTION, top_k=3)]  # 10 candidates a retriever
    assert [h.chunk.chunk_id for h in narrow.search(LOAN_QUESTION, top_k=9)][:3] == first  # 27: the first 3 stay
    settings = pipeline.settings.with_overrides(fusion="ranks")
    k = settings.rrf_k
    by_rank = HybridRetriever(pipeline.store, pipeline.retriever.embedder, settings).search(LOAN_QUESTION, top_k=5)
    for hit in by_rank:
        assert hit.score == pytest.approx(1 / (k + hit.dense_rank) + 1 / (k + hit.bm25_rank))
    assert "$1.5 billion" in by_rank[0].chunk.text


@pytest.mark.integration
def test_top_k_is_clamped_to_the_number_of_chunks(pipeline):
    n = len(pipeline.store.chunks)
    hits = pipeline.search("Belarus", top_k=10_000)
    assert len(hits) == n
    assert len({h.chunk.chunk_id for h in hits}) == n
    assert len(pipeline.search("Belarus", top_k=3)) == 3


@pytest.mark.integration
def test_doc_filter_returns_only_that_document(pipeline):
    n_doc = sum(c.doc_id == DOC_004 for c in pipeline.store.chunks)
    hits = pipeline.search(LOAN_QUESTION, top_k=50, filters=Filters(doc_ids=frozenset({DOC_004})))
    assert len(hits) == n_doc
    assert {h.chunk.doc_id for h in hits} == {DOC_004}


@pytest.mark.integration
def test_date_filter_returns_only_dated_chunks_in_range(pipeline):
    f = Filters(date_from="2020-09-01", date_to="2020-09-30")
    expected = {c.chunk_id for c in pipeline.store.chunks if c.date and "2020-09-01" <= c.date <= "2020-09-30"}
    hits = pipeline.search("Putin and Lukashenko", top_k=100, filters=f)
    assert {h.chunk.chunk_id for h in hits} == expected
    assert {h.chunk.doc_id for h in hits} == {DOC_002, DOC_004}  # 000 is from 2021; 001 and 003 are undated
    assert all(h.chunk.doc_id not in UNDATED for h in hits)
    only_2021 = pipeline.search("Ryanair", top_k=100, filters=Filters(date_from="2021-01-01"))
    assert {h.chunk.doc_id for h in only_2021} == {"000_ac36cdf8cda615f1"}
    assert pipeline.search("Ryanair", filters=Filters(date_to="1999-12-31")) == []


@pytest.mark.integration
def test_bm25_only_and_dense_only(pipeline):
    bm25 = pipeline.search("Mishustin Minsk", top_k=5, method="bm25")
    assert bm25 and all(h.dense_rank is None and h.bm25_rank is not None for h in bm25)
    assert [h.bm25_rank for h in bm25] == list(range(1, len(bm25) + 1))
    assert bm25[0].chunk.doc_id == DOC_004 and "Mishustin" in bm25[0].chunk.text
    assert all(h.dense_score is None for h in bm25)

    dense = pipeline.search("Which Russian prime minister travelled to the Belarusian capital?", top_k=5, method="dense")
    assert len(dense) == 5 and all(h.bm25_rank is None for h in dense)
    assert [h.dense_rank for h in dense] == [1, 2, 3, 4, 5]
    assert [h.dense_score for h in dense] == sorted((h.dense_score for h in dense), reverse=True)
    assert dense[0].chunk.doc_id == DOC_004


@pytest.mark.integration
def test_bm25_with_no_matching_words_finds_nothing(pipeline):
    assert pipeline.search("xylophone quokka", method="bm25") == []


@pytest.mark.integration
def test_mmr_returns_distinct_chunks_and_keeps_the_best_hit(pipeline, embedder):
    settings = pipeline.settings.with_overrides(mmr=True)
    mmr = HybridRetriever(pipeline.store, embedder, settings)
    for query in (LOAN_QUESTION, "Lukashenko Putin Sochi meeting"):
        plain = pipeline.search(query, top_k=5)
        diverse = mmr.search(query, top_k=5)
        assert len(diverse) == 5
        assert len({h.chunk.chunk_id for h in diverse}) == 5
        assert plain[0].chunk.chunk_id in {h.chunk.chunk_id for h in diverse}
    # a strong diversity weight changes the choice of passages
    heavy = HybridRetriever(pipeline.store, embedder, pipeline.settings.with_overrides(mmr=True, mmr_lambda=0.3))
    query = "Lukashenko Putin Sochi meeting"
    assert [h.chunk.chunk_id for h in heavy.search(query, top_k=5)] != [h.chunk.chunk_id for h in pipeline.search(query, top_k=5)]


@pytest.mark.integration
def test_merge_neighbors_joins_adjacent_chunks_into_one_document_slice(pipeline, embedder):
    merging = HybridRetriever(pipeline.store, embedder, pipeline.settings.with_overrides(merge_neighbors=True))
    doc = pipeline.store.documents[DOC_004]
    chunks = [c for c in pipeline.store.chunks if c.doc_id == DOC_004]
    # every chunk of one article: they are all neighbours, so one passage comes back
    hits = merging.search("Lukashenka", top_k=len(chunks), filters=Filters(doc_ids=frozenset({DOC_004})))
    assert len(hits) == 1
    passage = hits[0].chunk
    assert (passage.start, passage.end) == (chunks[0].start, chunks[-1].end)
    assert passage.text == doc.text[passage.start : passage.end]
    assert passage.position == 0


@pytest.mark.integration
def test_merged_passages_never_overlap(pipeline, embedder):
    merging = HybridRetriever(pipeline.store, embedder, pipeline.settings.with_overrides(merge_neighbors=True))
    for query in ("protests in Minsk", "Mishustin visit Minsk Lavrov", "Lukashenko", LOAN_QUESTION):
        plain = pipeline.search(query, top_k=10)
        merged = merging.search(query, top_k=10)
        assert len(merged) <= len(plain)
        for hit in merged:
            c = hit.chunk
            assert c.text == pipeline.store.documents[c.doc_id].text[c.start : c.end]
        for a in merged:
            for b in merged:
                if a is not b and a.chunk.doc_id == b.chunk.doc_id:
                    assert a.chunk.end < b.chunk.start or b.chunk.end < a.chunk.start, query
        # every plain hit's text is inside one of the merged passages
        for hit in plain:
            assert any(m.chunk.doc_id == hit.chunk.doc_id and m.chunk.start <= hit.chunk.start and hit.chunk.end <= m.chunk.end
                       for m in merged)
    # two neighbouring chunks in the top results become one passage
    plain = pipeline.search("Mishustin visit Minsk Lavrov", top_k=5)
    positions = {h.chunk.position for h in plain if h.chunk.doc_id == DOC_004}
    assert {0, 1} <= positions
    first = merging.search("Mishustin visit Minsk Lavrov", top_k=5)[0].chunk
    assert first.doc_id == DOC_004 and first.start == 0
