"""The one pipeline the CLI, the UI and the evaluation all call.

question -> (rewrite) -> retrieve -> prompt -> generate -> cite/check -> Answer.
Heavy parts (embedder, index, LLM client) are built once, on first use.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rag.citations import GroundingChecker, parse_citations, render_answer
from rag.embedding import Embedder, VectorCache
from rag.errors import EndpointError, InputError
from rag.extractive import ExtractiveAnswerer
from rag.llm import Generation, LLMClient, endpoint_host
from rag.local_llm import LocalLLMServer
from rag.prompt import REFUSAL_TEXT, build_prompt
from rag.policy import AnswerPolicy, PolicyModel, is_model_refusal
from rag.records import Answer, Citation, Hit, Sentence
from rag.retrieval import Filters, HybridRetriever, Method
from rag.rewrite import bounded, rewrite_question
from rag.settings import Settings
from rag.store import IndexStore


NOT_FOUND = "Not found in the articles: none of the passages answers this question. The closest passages are listed as sources."
UNSURE = "The articles may not answer this directly; the closest passages say:"
# Control characters, and lone surrogates (undecodable bytes in argv arrive as these; tokenizers reject them).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass
class Event:
    """What `ask_stream` yields: 'sources' (list[Hit]), 'token' (str), 'notice' (str), 'answer' (Answer)."""

    kind: str
    data: Any


def validate_question(question: str, max_chars: int) -> str:
    if not isinstance(question, str):
        raise InputError("the question must be text")
    cleaned = CONTROL.sub(" ", question).strip()
    if not cleaned:
        raise InputError("the question is empty; type a question about the articles")
    if len(cleaned) > max_chars:
        raise InputError(f"the question is {len(cleaned)} characters long; the limit is {max_chars} (RAG_MAX_QUESTION_CHARS)")
    return cleaned


class Pipeline:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self._llm_lock = threading.Lock()
        self._local_server: LocalLLMServer | None = None
        self._llm: LLMClient | None = None

    # ---- heavy parts, built once -----------------------------------------------------------
    @cached_property
    def embedder(self) -> Embedder:
        return Embedder(self.settings.embedding_model, self.settings.embedding_batch_size,
                        onnx_cache=self.settings.index_dir / "onnx", runtime=self.settings.embedding_runtime)

    @cached_property
    def store(self) -> IndexStore:
        return IndexStore.load(self.settings.index_dir, self.settings.embedding_model, self.settings.hnsw_ef_search)

    @cached_property
    def retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.embedder, self.settings)

    @cached_property
    def grounding(self) -> GroundingChecker:
        return GroundingChecker(self.embedder, self.settings.support_threshold, self.settings.support_coverage,
                                self.settings.clause_coverage)

    @cached_property
    def word_vectors(self) -> VectorCache:
        """Single words for the policy's near-synonym checks, each embedded once (10,000 kept, about 15 MB)."""
        return VectorCache(self.embedder.encode_documents, 10_000)

    @cached_property
    def policy(self) -> AnswerPolicy:
        model = PolicyModel.load(self.settings.policy_model)
        return AnswerPolicy(model, self.settings.refuse_below, self.settings.unsure_below, self.word_vectors, self.store.specificity)

    @cached_property
    def extractive(self) -> ExtractiveAnswerer:
        return ExtractiveAnswerer(self.embedder, self.settings.extractive_sentences, store=self.store)

    @property
    def endpoint(self) -> str:
        return endpoint_host(self.settings.openai_base_url or f"http://127.0.0.1:{self.settings.local_llm_port}")

    @property
    def uses_local_llm(self) -> bool:
        return not self.settings.openai_base_url

    @property
    def default_mode(self) -> str:
        """`auto`: LLM answers when an endpoint or a model file is configured; else extractive, which
        scores better than the bundled 135M model on every development collection."""
        if self.settings.mode != "auto":
            return self.settings.mode
        return "llm" if self.settings.openai_base_url or self.settings.local_gguf else "extractive"

    def llm(self) -> LLMClient:
        """The LLM client; with no endpoint configured, the bundled server (restarted if it died)."""
        with self._llm_lock:
            if self.uses_local_llm:
                if self._local_server is None:
                    self._local_server = LocalLLMServer(self.settings)
                if self._llm is None or not self._local_server.alive():
                    base_url = self._local_server.ensure_running()
                    self._llm = self._llm or LLMClient(base_url, None, self.settings.llm_model, self.settings, local=True)
            elif self._llm is None:
                key = self.settings.openai_api_key.get_secret_value() if self.settings.openai_api_key else None
                self._llm = LLMClient(self.settings.openai_base_url, key, self.settings.llm_model, self.settings)
            return self._llm

    def close(self) -> None:
        if self._local_server:
            self._local_server.stop()

    def warm_up(self) -> None:
        """Load the index and the model now rather than on the first question."""
        self.retriever.search("warm up", top_k=1)

    def count_tokens(self, text: str) -> int:
        return self.embedder.count_tokens(text)

    # ---- stages ------------------------------------------------------------------------------
    def search(
        self, query: str, top_k: int | None = None, method: Method = "hybrid", filters: Filters | None = None
    ) -> list[Hit]:
        query = validate_question(query, self.settings.max_question_chars)
        return self.retriever.search(query, top_k=top_k, method=method, filters=filters)

    def ask(self, question: str, **kwargs) -> Answer:
        answer = None
        for event in self.ask_stream(question, **kwargs):
            if event.kind == "answer":
                answer = event.data
        return answer

    def ask_stream(
        self,
        question: str,
        history: list[dict] | None = None,
        mode: str | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        temperature: float | None = None,
    ) -> Iterator[Event]:
        started = time.perf_counter()
        mode = mode or self.default_mode
        if mode not in ("llm", "extractive"):
            raise InputError(f"unknown mode {mode!r}; use llm or extractive")
        question = validate_question(question, self.settings.max_question_chars)
        history = bounded(history, self.settings.history_turns)
        trace: dict[str, Any] = {"question": question, "mode": mode, "history_turns": len(history) // 2}

        llm = self._llm_or_notice(mode, trace)
        standalone, how = rewrite_question(question, history, llm)
        trace |= {"rewritten_question": standalone, "rewrite": how}

        t0 = time.perf_counter()
        hits = self.retriever.search(standalone, top_k=top_k, filters=filters)
        trace["timings_ms"] = {"retrieve": _ms(t0)}
        trace["retrieved"] = [
            {"chunk_id": h.chunk.chunk_id, "doc_id": h.chunk.doc_id, "score": round(h.score, 6), "dense_rank": h.dense_rank,
             "bm25_rank": h.bm25_rank, "dense_score": None if h.dense_score is None else round(h.dense_score, 4)}
            for h in hits
        ]
        trace["index_version"] = self.store.manifest.version
        yield Event("sources", hits)
        if trace.get("notice"):
            yield Event("notice", trace["notice"])

        candidates = self.extractive.rank(standalone, hits)
        verdict = self.policy.decide(standalone, hits, [c.text for c in candidates[:5]])
        trace["policy"] = verdict.to_json()
        if verdict.refused:
            answer = self._refusal(question, hits, mode, verdict.reason, trace)
        else:
            if verdict.low_confidence:
                trace["notice"] = f"{trace['notice']} {UNSURE}" if trace.get("notice") else UNSURE
                yield Event("notice", UNSURE)
            if mode == "llm" and llm is not None:
                answer = yield from self._generate(question, standalone, hits, candidates, llm, trace, temperature)
            else:
                answer = self._extractive_answer(question, hits, candidates, mode, trace)
            answer.low_confidence = verdict.low_confidence and not answer.refused
        trace["timings_ms"]["total"] = _ms(started)
        yield Event("answer", answer)

    # ---- helpers -------------------------------------------------------------------------------
    def _llm_or_notice(self, mode: str, trace: dict) -> LLMClient | None:
        if mode != "llm":
            return None
        try:
            llm = self.llm()
            trace |= {"model": llm.model, "endpoint": llm.host}
            return llm
        except EndpointError as exc:
            if not self.settings.fallback_extractive:
                raise
            trace |= {"endpoint": self.endpoint, "notice": f"{exc}. Showing an extractive answer instead."}
            return None

    def _generate(self, question, standalone, hits, candidates, llm: LLMClient, trace, temperature) -> Iterator[Event]:
        shown = hits[: self.settings.llm_sources]
        excerpts = self._excerpts(candidates, len(shown)) if self._compress_context else None
        prompt = build_prompt(
            standalone, shown, self.count_tokens, self.settings.llm_context_tokens, self.settings.max_answer_tokens, excerpts
        )
        trace |= {"prompt_hash": prompt.hash, "sources_in_prompt": len(prompt.sources), "sources_dropped_for_context": prompt.dropped}
        gen = Generation()
        try:
            for piece in llm.stream(prompt.messages, gen, temperature=temperature):
                yield Event("token", piece)
        except EndpointError as exc:
            trace |= {"usage": gen.usage, "generation_error": str(exc)}
            if not self.settings.fallback_extractive:
                raise
            notice = f"{exc}. Showing an extractive answer instead."
            trace["notice"] = notice
            yield Event("notice", notice)
            return self._extractive_answer(question, hits, candidates, "llm", trace)
        finally:
            trace["timings_ms"] |= {
                "first_token": None if gen.first_token_s is None else round(gen.first_token_s * 1000, 1),
                "generate": round(gen.total_s * 1000, 1),
            }
        trace |= {"usage": gen.usage, "raw_answer": gen.text, "finish_reason": gen.finish_reason}
        if is_model_refusal(gen.text, REFUSAL_TEXT):
            if self._verify_model_refusal:
                # The evidence check already passed: a small model's "not covered" is less reliable than it.
                notice = "The model said the articles do not cover this, but these passages match the question: check them."
                trace["notice"] = notice
                yield Event("notice", notice)
                return self._extractive_answer(question, hits, candidates, "llm", trace)
            return self._refusal(question, hits, "llm", "the model said the sources do not cover it", trace)
        parsed = parse_citations(gen.text, len(prompt.sources))
        trace["dropped_markers"] = parsed.dropped
        citations = self.grounding.check(parsed, prompt.sources)
        if self.settings.require_support and not any(s.supported for s in parsed.sentences):
            notice = "The model's answer was not supported by the cited articles, so the best passages are quoted instead."
            trace["notice"] = notice
            yield Event("notice", notice)
            return self._extractive_answer(question, hits, candidates, "llm", trace)
        return Answer(question, render_answer(parsed.sentences), "llm", False, hits, citations, parsed.sentences,
                      notice=trace.get("notice"), trace=trace)

    @property
    def _verify_model_refusal(self) -> bool:
        if self.settings.model_refusal == "auto":
            return self.uses_local_llm and not self.settings.local_gguf
        return self.settings.model_refusal == "verify"

    @property
    def _compress_context(self) -> bool:
        if self.settings.prompt_context == "auto":
            return self.uses_local_llm and not self.settings.local_gguf
        return self.settings.prompt_context == "sentences"

    def _excerpts(self, candidates, n_sources: int) -> dict[int, list[str]]:
        """Each shown source's best sentences, in their ranked order: a short prompt for a small model."""
        excerpts: dict[int, list[str]] = {}
        for c in [c for c in candidates if c.source <= n_sources][: self.settings.prompt_sentences]:
            excerpts.setdefault(c.source, []).append(c.text)
        return excerpts

    @staticmethod
    def _refusal(question, hits, mode, reason: str, trace) -> Answer:
        trace["refusal_reason"] = reason
        return Answer(question, NOT_FOUND, mode, True, hits, notice=trace.get("notice"), trace=trace)

    def _extractive_answer(self, question, hits, candidates, mode, trace) -> Answer:
        sentences = self.extractive.answer(candidates)
        if not sentences:
            return self._refusal(question, hits, mode, "no sentence in the passages answers it", trace)
        citations = _citations_for(sentences, hits)
        return Answer(question, render_answer(sentences), mode, False, hits, citations, sentences,
                      notice=trace.get("notice"), trace=trace | {"answered_by": "extractive"})


def _citations_for(sentences: list[Sentence], hits: list[Hit]) -> list[Citation]:
    markers = dict.fromkeys(n for s in sentences for n in s.citations)
    return [Citation(n, hits[n - 1].chunk.doc_id, hits[n - 1].chunk.chunk_id) for n in markers]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
