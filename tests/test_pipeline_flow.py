"""The pipeline's decision flow with small fake stages: no model, no index, well under a second.

Each fake stands for a stage whose real part cannot be steered into the case (a policy that refuses
on demand, an endpoint that fails on demand); the real stages are tested in their own modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from rag.errors import EndpointError, InputError
from rag.extractive import Candidate
from rag.pipeline import NOT_FOUND, UNSURE, AnswerEvent, NoticeEvent, Pipeline, SourcesEvent, Stages, TokenEvent
from rag.policy import Verdict
from rag.records import Chunk, Hit, Sentence
from rag.settings import Settings

PASSAGE = "Russia agreed to lend Belarus $1.5 billion. The loan was announced in Sochi."
HITS = [Hit(Chunk("c1", "d1", 0, PASSAGE, 0, len(PASSAGE), title="Loan"), 0.03)]
QUOTE = "Russia agreed to lend Belarus $1.5 billion."


class FakeRetriever:
    def search(self, query, top_k=None, method="hybrid", filters=None, query_vector=None):
        return HITS


class FakeRanker:
    def __init__(self):
        self.answered = 0

    def rank(self, question, hits, query_vector=None):
        return [Candidate(1, QUOTE, 0.9)]

    def rerank(self, hits, candidates):
        return hits, candidates

    def answer(self, candidates):
        self.answered += 1
        return [Sentence(c.text, [c.source], True, "quoted from the source") for c in candidates]


@dataclass
class FakePolicy:
    verdict: Verdict

    def decide(self, question, hits, sentences):
        return self.verdict


class FakeGrounding:
    """Supports exactly the sentences that appear in the passage."""

    def check(self, parsed, sources):
        for s in parsed.sentences:
            s.supported = s.text in PASSAGE
        return []


@dataclass
class FakeClient:
    reply: str
    model: str = "fake-model"
    host: str = "http://127.0.0.1:9"

    def stream(self, messages, gen, temperature=None):
        for i, word in enumerate(self.reply.split(" ")):
            piece = word if i == 0 else f" {word}"
            gen.text += piece
            yield piece
        gen.finish_reason = "stop"

    def complete(self, messages, max_tokens, temperature):
        return ""


@dataclass
class FakeProvider:
    client_or_error: FakeClient | EndpointError
    small_local: bool = False
    uses_local: bool = False
    endpoint: str = "http://127.0.0.1:9"
    closed: list = field(default_factory=list)

    def client(self):
        if isinstance(self.client_or_error, EndpointError):
            raise self.client_or_error
        return self.client_or_error

    def close(self):
        self.closed.append(True)


def make(outcome="answered", reply=QUOTE + " [1]", **settings) -> tuple[Pipeline, FakeRanker]:
    ranker = FakeRanker()
    llm = reply if isinstance(reply, EndpointError) else FakeClient(reply)
    stages = Stages(
        store=SimpleNamespace(manifest=SimpleNamespace(version="v-test")),
        embedder=SimpleNamespace(count_tokens=lambda text: len(text.split()), encode_queries=lambda texts: [None] * len(texts)),
        retriever=FakeRetriever(),
        ranker=ranker,
        policy=FakePolicy(Verdict(outcome, 0.05 if outcome == "refused" else 0.9, reason="the evidence is weak")),
        grounding=FakeGrounding(),
        llm=FakeProvider(llm),
    )
    return Pipeline(Settings(_env_file=None, **settings), stages), ranker


def run(pipe: Pipeline, question="How much money did Russia promise to lend Belarus?", **kwargs):
    events = list(pipe.ask_stream(question, **kwargs))
    assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], AnswerEvent)
    return events, events[-1].answer


def notices(events) -> list[str]:
    return [e.text for e in events if isinstance(e, NoticeEvent)]


def test_a_refusal_from_the_policy_quotes_nothing_and_says_why():
    pipe, ranker = make("refused")
    events, answer = run(pipe, mode="extractive")
    assert answer.refused and answer.answer == NOT_FOUND and answer.sources == HITS
    assert answer.trace.refusal_reason == "the evidence is weak" and answer.trace.policy["outcome"] == "refused"
    assert ranker.answered == 0 and not answer.low_confidence


def test_low_confidence_says_so_first_then_quotes():
    pipe, _ = make("low_confidence")
    events, answer = run(pipe, mode="extractive")
    assert notices(events) == [UNSURE] and answer.notice == UNSURE
    assert answer.low_confidence and not answer.refused and answer.answer == f"{QUOTE} [1]"
    assert answer.trace.answered_by == "extractive" and answer.citations[0].chunk_id == "c1"


def test_a_supported_model_answer_streams_and_is_kept():
    pipe, ranker = make(mode="llm")
    events, answer = run(pipe)
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == f"{QUOTE} [1]"
    assert answer.mode == "llm" and answer.sentences[0].supported and answer.trace.answered_by is None
    assert answer.trace.model == "fake-model" and ranker.answered == 0


def test_an_unsupported_model_answer_is_replaced_by_quotes_with_a_notice():
    pipe, _ = make(reply="Belarus will build a bridge to the Moon [1].", mode="llm")
    events, answer = run(pipe)
    assert "not supported by the cited articles" in answer.notice and notices(events) == [answer.notice]
    assert answer.answer == f"{QUOTE} [1]" and answer.trace.raw_answer.startswith("Belarus will build")


def test_a_failing_endpoint_falls_back_to_quotes_or_raises_when_asked_to():
    pipe, _ = make(reply=EndpointError("the LLM endpoint refused the connection"), mode="llm")
    events, answer = run(pipe)
    assert answer.trace.answered_by == "extractive" and "refused the connection" in answer.notice
    strict, _ = make(reply=EndpointError("the LLM endpoint refused the connection"), mode="llm", fallback_extractive=False)
    with pytest.raises(EndpointError):
        run(strict)


@pytest.mark.parametrize("small_local, refused", [(True, False), (False, True)])
def test_the_model_saying_not_covered_is_checked_for_a_small_model_and_trusted_otherwise(small_local, refused):
    pipe, _ = make(reply="The sources do not contain this information.", mode="llm")
    pipe.llm_provider.small_local = small_local
    _, answer = run(pipe)
    assert answer.refused is refused
    assert (answer.trace.refusal_reason == "the model said the sources do not cover it") is refused


def test_a_bad_mode_or_question_is_one_input_error():
    pipe, _ = make()
    with pytest.raises(InputError, match="unknown mode 'poetry'"):
        run(pipe, mode="poetry")
    with pytest.raises(InputError, match="empty"):
        run(pipe, question="  \x00 ")


def test_overrides_are_validated_like_the_environment():
    from rag.errors import SettingsError

    settings = Settings(_env_file=None)
    assert settings.with_overrides(mode="llm", top_k=None).mode == "llm"
    with pytest.raises(SettingsError, match=r"mode \(RAG_MODE\) = 'bogus'"):
        settings.with_overrides(mode="bogus")
    with pytest.raises(SettingsError, match=r"unknown setting colour"):
        settings.with_overrides(colour="red")
    assert settings.mode == "auto"  # the original is untouched
