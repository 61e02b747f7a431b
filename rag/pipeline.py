"""The one pipeline the CLI, the UI, the APIs and the evaluation all call.

question -> (rewrite) -> retrieve -> rank sentences -> answer policy -> generate or quote -> check -> Answer.
The stages are built by `rag.factory.build_pipeline` and handed in; this module only strings them together.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rag.citations import parse_citations, render_answer
from rag.errors import EndpointError, InputError
from rag.llm import Generation, LLMClient
from rag.prompt import REFUSAL_TEXT, build_prompt
from rag.policy import is_model_refusal
from rag.records import Answer, Citation, Hit, Sentence, Trace
from rag.retrieval import Filters, Method
from rag.rewrite import bounded, rewrite_question
from rag.settings import Settings
from rag.store import served_version


REFUSAL_HEADLINE = "Not found in the articles"
REFUSAL_DETAIL = "none of the passages answers this question. The closest passages are listed as sources."
NOT_FOUND = f"{REFUSAL_HEADLINE}: {REFUSAL_DETAIL}"
UNSURE = "The articles may not answer this directly; the closest passages say:"
# Control characters, and lone surrogates (undecodable bytes in argv arrive as these; tokenizers reject them).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class SourcesEvent:
    hits: list[Hit]


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class NoticeEvent:
    text: str


@dataclass(frozen=True)
class AnswerEvent:
    answer: Answer


Event = SourcesEvent | TokenEvent | NoticeEvent | AnswerEvent  # what `ask_stream` yields, the answer last


@dataclass
class Stages:
    """The parts the pipeline strings together (see `rag.factory`); a test hands in small fakes."""

    store: Any  # a PassageStore (rag.stores): documents, passages by id, the index version
    embedder: Any  # Embedder: shared by the stages; embeds the question once, counts prompt tokens
    retriever: Any  # HybridRetriever.search(query, top_k, method, filters, query_vector) -> list[Hit]
    ranker: Any  # ExtractiveAnswerer: rank(question, hits, query_vector) -> candidates; answer(candidates) -> sentences
    policy: Any  # AnswerPolicy.decide(question, hits, sentences) -> Verdict
    grounding: Any  # GroundingChecker.check(parsed, sources) -> citations
    llm: Any  # LLMProvider: client() -> LLMClient, or EndpointError


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
    def __init__(self, settings: Settings, stages: Stages, rebuild: Callable[[], Stages] | None = None):
        """`rebuild`: new stages over the index as it is now on disk (see `refresh`)."""
        self.settings = settings
        self.stages = stages
        self._rebuild = rebuild
        self._swap = threading.Lock()

    # One Stages object is swapped whole when a new index version is served.
    store = property(lambda self: self.stages.store)
    embedder = property(lambda self: self.stages.embedder)
    retriever = property(lambda self: self.stages.retriever)
    ranker = property(lambda self: self.stages.ranker)
    policy = property(lambda self: self.stages.policy)
    grounding = property(lambda self: self.stages.grounding)
    llm_provider = property(lambda self: self.stages.llm)

    def refresh(self) -> bool:
        """Serve the newest index version once `rag index` or the Library tab has written one (the
        version is switched atomically on disk, so nothing half-indexed is ever read). True if it switched."""
        if self._rebuild is None or served_version(self.settings.index_dir) in (None, self.store.manifest.version):
            return False
        with self._swap:
            if served_version(self.settings.index_dir) not in (None, self.store.manifest.version):
                self.stages = self._rebuild()
        return True

    @property
    def endpoint(self) -> str:
        return self.llm_provider.endpoint

    @property
    def uses_local_llm(self) -> bool:
        return self.llm_provider.uses_local

    @property
    def default_mode(self) -> str:
        """`auto`: LLM answers when an endpoint or a model file is configured; else extractive, which
        scores better than the bundled 135M model on every development collection."""
        if self.settings.mode != "auto":
            return self.settings.mode
        return "llm" if self.settings.openai_base_url or self.settings.local_gguf else "extractive"

    def llm(self) -> LLMClient:
        return self.llm_provider.client()

    def close(self) -> None:
        self.llm_provider.close()

    def warm_up(self) -> None:
        """Load the model now rather than on the first question."""
        self.retriever.search("warm up", top_k=1)

    # ---- the flow --------------------------------------------------------------------------
    def search(
        self, query: str, top_k: int | None = None, method: Method = "hybrid", filters: Filters | None = None
    ) -> list[Hit]:
        query = validate_question(query, self.settings.max_question_chars)
        self.refresh()
        if method != "hybrid" or not self.settings.rerank:
            return self.retriever.search(query, top_k=top_k, method=method, filters=filters)
        return self._found(query, top_k, filters, self.embedder.encode_queries([query])[0])[0]

    def ask(self, question: str, **kwargs) -> Answer:
        answer = None
        for event in self.ask_stream(question, **kwargs):
            if isinstance(event, AnswerEvent):
                answer = event.answer
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
        self.refresh()
        history = bounded(history, self.settings.history_turns)
        trace = Trace(question, mode, history_turns=len(history) // 2)

        llm = self._llm_or_notice(mode, trace)
        trace.rewritten_question, trace.rewrite = rewrite_question(question, history, llm)
        standalone = trace.rewritten_question

        t0 = time.perf_counter()
        query_vector = self.embedder.encode_queries([standalone])[0]  # once, for retrieval and for ranking sentences
        hits, candidates = self._found(standalone, top_k, filters, query_vector)
        trace.timings_ms["retrieve"] = _ms(t0)
        trace.retrieved = [_retrieved(h) for h in hits]
        trace.index_version = self.store.manifest.version
        yield SourcesEvent(hits)
        if trace.notice:
            yield NoticeEvent(trace.notice)

        verdict = self.policy.decide(standalone, hits, [c.text for c in candidates[:5]])
        trace.policy = verdict.to_json()
        if verdict.refused:
            answer = Answer.refusal(question, NOT_FOUND, mode, hits, verdict.reason, trace)
        else:
            if verdict.low_confidence:
                trace.add_notice(UNSURE)
                yield NoticeEvent(UNSURE)
            if mode == "llm" and llm is not None:
                answer = yield from self._generate(question, standalone, hits, candidates, llm, trace, temperature)
            else:
                answer = self._quote(question, hits, candidates, mode, trace)
            answer.low_confidence = verdict.low_confidence and not answer.refused
        trace.timings_ms["total"] = _ms(started)
        yield AnswerEvent(answer)

    # ---- steps -------------------------------------------------------------------------------
    def _found(self, query: str, top_k: int | None, filters: Filters | None, query_vector) -> tuple[list[Hit], list]:
        """The passages for a query and their sentences ranked as answers; the passages reranked by
        the best sentence each holds (`RAG_RERANK`)."""
        hits = self.retriever.search(query, top_k=top_k, filters=filters, query_vector=query_vector)
        candidates = self.ranker.rank(query, hits, query_vector)
        return self.ranker.rerank(hits, candidates) if self.settings.rerank else (hits, candidates)

    def _llm_or_notice(self, mode: str, trace: Trace) -> LLMClient | None:
        if mode != "llm":
            return None
        try:
            llm = self.llm()
            trace.model, trace.endpoint = llm.model, llm.host
            return llm
        except EndpointError as exc:
            if not self.settings.fallback_extractive:
                raise
            trace.endpoint = self.endpoint
            trace.add_notice(f"{exc}. Showing an extractive answer instead.")
            return None

    def _generate(self, question, standalone, hits, candidates, llm: LLMClient, trace: Trace, temperature) -> Iterator[Event]:
        shown = hits[: self.settings.llm_sources]
        excerpts = self._excerpts(candidates, len(shown)) if self._compress_context else None
        prompt = build_prompt(standalone, shown, self.embedder.count_tokens, self.settings.llm_context_tokens,
                              self.settings.max_answer_tokens, excerpts)
        trace.prompt_hash, trace.sources_in_prompt, trace.sources_dropped_for_context = prompt.hash, len(prompt.sources), prompt.dropped
        gen = Generation()
        try:
            for piece in llm.stream(prompt.messages, gen, temperature=temperature):
                yield TokenEvent(piece)
        except EndpointError as exc:
            trace.usage, trace.generation_error = gen.usage, str(exc)
            if not self.settings.fallback_extractive:
                raise
            return (yield from self._quote_instead(f"{exc}. Showing an extractive answer instead.", question, hits, candidates, trace))
        finally:
            trace.timings_ms |= {
                "first_token": None if gen.first_token_s is None else round(gen.first_token_s * 1000, 1),
                "generate": round(gen.total_s * 1000, 1),
            }
        trace.usage, trace.raw_answer, trace.finish_reason = gen.usage, gen.text, gen.finish_reason
        if is_model_refusal(gen.text, REFUSAL_TEXT):
            if self._verify_model_refusal:
                # The evidence check already passed: a small model's "not covered" is less reliable than it.
                notice = "The model said the articles do not cover this, but these passages match the question: check them."
                return (yield from self._quote_instead(notice, question, hits, candidates, trace))
            return Answer.refusal(question, NOT_FOUND, "llm", hits, "the model said the sources do not cover it", trace)
        parsed = parse_citations(gen.text, len(prompt.sources))
        trace.dropped_markers = parsed.dropped
        finished = parsed.without_unfinished_end() if gen.finish_reason == "length" else parsed
        if finished is not parsed:  # the model ran out of tokens mid-sentence: never show a sentence it did not finish
            stopped = f"The model's answer stopped at RAG_MAX_ANSWER_TOKENS={self.settings.max_answer_tokens}"
            if not finished.sentences:
                notice = f"{stopped} before its first sentence ended, so the best passages are quoted instead."
                return (yield from self._quote_instead(notice, question, hits, candidates, trace))
            trace.add_notice(f"{stopped}; its unfinished last sentence is left out.")
            parsed = finished
        citations = self.grounding.check(parsed, prompt.sources)
        if self.settings.require_support and not any(s.supported for s in parsed.sentences):
            notice = "The model's answer was not supported by the cited articles, so the best passages are quoted instead."
            return (yield from self._quote_instead(notice, question, hits, candidates, trace))
        return Answer.generated(question, render_answer(parsed.sentences), hits, citations, parsed.sentences, trace)

    def _quote_instead(self, notice: str, question, hits, candidates, trace: Trace) -> Iterator[Event]:
        """The model's answer cannot be used: say why, and quote the passages."""
        trace.notice = notice
        yield NoticeEvent(notice)
        return self._quote(question, hits, candidates, "llm", trace)

    @property
    def _verify_model_refusal(self) -> bool:
        if self.settings.model_refusal == "auto":
            return self.llm_provider.small_local
        return self.settings.model_refusal == "verify"

    @property
    def _compress_context(self) -> bool:
        if self.settings.prompt_context == "auto":
            return self.llm_provider.small_local
        return self.settings.prompt_context == "sentences"

    def _excerpts(self, candidates, n_sources: int) -> dict[int, list[str]]:
        """Each shown source's best sentences, in their ranked order: a short prompt for a small model."""
        excerpts: dict[int, list[str]] = {}
        for c in [c for c in candidates if c.source <= n_sources][: self.settings.prompt_sentences]:
            excerpts.setdefault(c.source, []).append(c.text)
        return excerpts

    def _quote(self, question, hits, candidates, mode, trace: Trace) -> Answer:
        sentences = self.ranker.answer(candidates)
        if not sentences:
            return Answer.refusal(question, NOT_FOUND, mode, hits, "no sentence in the passages answers it", trace)
        return Answer.quoted(question, render_answer(sentences), mode, hits, _citations_for(sentences, hits), sentences, trace)


def _retrieved(hit: Hit) -> dict:
    return {"chunk_id": hit.chunk.chunk_id, "doc_id": hit.chunk.doc_id, "score": round(hit.score, 6),
            "dense_rank": hit.dense_rank, "bm25_rank": hit.bm25_rank,
            "dense_score": None if hit.dense_score is None else round(hit.dense_score, 4)}


def _citations_for(sentences: list[Sentence], hits: list[Hit]) -> list[Citation]:
    markers = dict.fromkeys(n for s in sentences for n in s.citations)
    return [Citation(n, hits[n - 1].chunk.doc_id, hits[n - 1].chunk.chunk_id) for n in markers]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
