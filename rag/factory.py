"""The one place the pipeline's stages are built from the settings.

Callers that already hold a loaded part (the embedding model, an open index) hand it in, so a
process loads each once: the tests share one model across pipelines this way."""

from __future__ import annotations

from rag.citations import GroundingChecker
from rag.embedding import Embedder, VectorCache
from rag.extractive import ExtractiveAnswerer
from rag.judge import Judge
from rag.llm_provider import LLMProvider
from rag.pipeline import Pipeline, Stages
from rag.policy import AnswerPolicy, PolicyModel
from rag.retrieval import HybridRetriever
from rag.settings import Settings
from rag.stores import PassageStore, load_store

WORD_VECTORS = 10_000  # single words the policy's near-synonym check keeps embedded (about 15 MB)


def build_embedder(settings: Settings) -> Embedder:
    return Embedder(settings.embedding_model, settings.embedding_batch_size,
                    onnx_cache=settings.index_dir / "onnx", runtime=settings.embedding_runtime,
                    index_precision=settings.index_precision)


def build_stages(settings: Settings, embedder: Embedder | None = None, store: PassageStore | None = None,
                 llm: LLMProvider | None = None) -> Stages:
    """Raises IndexMissingError (and the other index errors) when the index cannot be read."""
    embedder = embedder or build_embedder(settings)
    store = store or load_store(settings)
    word_vectors = VectorCache(embedder.encode_documents, WORD_VECTORS)
    return Stages(
        store=store,
        retriever=HybridRetriever(store, embedder, settings),
        ranker=ExtractiveAnswerer(embedder, settings.extractive_sentences, store=store, rank_penalty=settings.rerank_rank_penalty),
        policy=AnswerPolicy(PolicyModel.load(settings.policy_model), settings.refuse_below, settings.unsure_below,
                            word_vectors, store.specificity),
        grounding=GroundingChecker(embedder, settings.support_threshold, settings.support_coverage, settings.clause_coverage),
        llm=llm or LLMProvider(settings),
        embedder=embedder,
    )


def build_pipeline(settings: Settings | None = None, embedder: Embedder | None = None,
                   store: PassageStore | None = None) -> Pipeline:
    settings = settings or Settings()
    stages = build_stages(settings, embedder, store)
    # A newer index is read with the same model and the same LLM (one bundled server, not two).
    return Pipeline(settings, stages, rebuild=lambda: build_stages(settings, stages.embedder, llm=stages.llm))


def build_judge(settings: Settings, llm: LLMProvider) -> Judge | None:
    """The evaluation's LLM judge, when one is wanted: an endpoint is configured (auto), or asked for (on)."""
    if settings.judge == "off" or (settings.judge == "auto" and not settings.openai_base_url):
        return None
    client = llm.client()
    return Judge(client.with_model(settings.judge_model) if settings.judge_model else client, settings.judge_temperature)
