"""An OpenAI-compatible chat API over the pipeline: `GET /v1/models`, `POST /v1/chat/completions`.

Any OpenAI client (Open WebUI, LibreChat, editor plug-ins, the `openai` SDK) can talk to the product.
The answer text carries its `[n]` markers; the sources travel in an extra top-level field `sources`
and the checks in `rag` (grounding per sentence, `refused`, `low_confidence`, notice, trace id).
A streamed answer is the *checked* answer, sent sentence by sentence once the grounding check has
run: a student never sees a claim that the check then withdraws.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from rag.errors import EndpointError, InputError, RagError, SettingsError
from rag.feedback import FeedbackStore
from rag.pipeline import Pipeline
from rag.records import Answer
from rag.settings import Settings

MODELS = {"articles": None, "articles-llm": "llm", "articles-extractive": "extractive"}  # id -> answer mode (None: the default)
OWNER = "rag-articles"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """Plain text, or the text parts of a multi-part message."""
        if isinstance(self.content, list):
            return " ".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields the product reads; the rest of OpenAI's request is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = "articles"
    messages: list[Message]
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None  # accepted; the answer length is RAG_MAX_ANSWER_TOKENS
    top_p: float | None = None  # accepted; not passed on
    user: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def conversation(messages: list[Message]) -> tuple[str, list[dict]]:
    """The last user message is the question; the user and assistant turns before it are the history."""
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question", code="no_question")
    return turns[-1].text, [{"role": m.role, "content": m.text} for m in turns[:-1]]


def answer_content(answer: Answer) -> str:
    """What a chat client shows: a notice (low confidence, a fallback) first, then the answer."""
    return f"_{answer.notice}_\n\n{answer.answer}" if answer.notice else answer.answer


def extra_fields(answer: Answer, trace_id: str) -> dict:
    return {
        "sources": [h.to_json(n) for n, h in enumerate(answer.sources, 1)],
        "rag": {"refused": answer.refused, "low_confidence": answer.low_confidence, "notice": answer.notice,
                "mode": answer.mode, "sentences": [asdict(s) for s in answer.sentences],
                "supported_fraction": answer.supported_fraction, "trace_id": trace_id},
    }


class ChatService:
    """Runs questions through the pipeline with the chat's limits: `concurrency_limit` answers at
    once, at most `max_queue` waiting; beyond that a client is told to come back (429)."""

    def __init__(self, pipeline: Pipeline, feedback: FeedbackStore):
        self.pipeline = pipeline
        self.feedback = feedback
        settings = pipeline.settings
        self.limiter = anyio.CapacityLimiter(settings.concurrency_limit)
        self.max_queue = settings.max_queue
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A place among the answers being computed, after waiting in line (at most `max_queue` wait)."""
        if self.limiter.available_tokens == 0 and self.waiting >= self.max_queue:
            raise ApiError(429, f"the product is busy ({self.max_queue} questions waiting); try again shortly",
                           kind="rate_limit_error", code="queue_full")
        self.waiting += 1
        try:
            await self.limiter.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.limiter.release()

    async def answer(self, request: ChatRequest) -> tuple[Answer, str]:
        if request.model not in MODELS:
            raise ApiError(404, f"unknown model {request.model!r}; use one of {', '.join(MODELS)}", code="model_not_found")
        question, history = conversation(request.messages)
        async with self.turn():
            answer = await anyio.to_thread.run_sync(self._ask, question, history, MODELS[request.model], request.temperature)
        trace_id = self.feedback.record_answer(request.user or "api", answer.question, answer.answer, answer.answer, answer.to_json())
        return answer, trace_id

    def _ask(self, question: str, history: list[dict], mode: str | None, temperature: float | None) -> Answer:
        try:
            return self.pipeline.ask(question, history=history, mode=mode, temperature=temperature)
        except (InputError, SettingsError) as exc:
            raise ApiError(400, str(exc), code="invalid_question") from None
        except EndpointError as exc:
            raise ApiError(502, str(exc), kind="api_error", code="llm_endpoint") from None
        except RagError as exc:
            raise ApiError(503, str(exc), kind="api_error", code="index_unavailable") from None


def completion(answer: Answer, trace_id: str, model: str) -> dict:
    return {
        "id": f"chatcmpl-{trace_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer_content(answer)},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage(answer),
    } | extra_fields(answer, trace_id)


def usage(answer: Answer) -> dict:
    used = (answer.trace.usage if answer.trace else None) or {}
    prompt, completion_tokens = used.get("prompt_tokens", 0), used.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def stream_chunks(answer: Answer, trace_id: str, model: str) -> list[dict]:
    """The checked answer as OpenAI chunks: the role, the notice, each sentence, then the end with the extras."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": f"chatcmpl-{trace_id}", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    content = answer_content(answer)
    cut = len(content) - len(answer.answer)
    pieces = ([content[:cut]] if cut else []) + sentence_pieces(answer)
    return ([chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
            + [chunk({}, "stop") | {"usage": usage(answer)} | extra_fields(answer, trace_id)])


def sentence_pieces(answer: Answer) -> list[str]:
    """The answer text cut after each sentence's markers, so the pieces join back to it exactly."""
    text, pieces, start = answer.answer, [], 0
    for sentence in answer.sentences:
        markers = "".join(f"[{n}]" for n in sentence.citations)
        at = text.find(sentence.text, start)
        if at < 0:
            break
        end = at + len(sentence.text)
        if markers and text.startswith(f" {markers}", end):
            end += len(markers) + 1
        pieces.append(text[start:end])
        start = end
    return pieces + ([text[start:]] if start < len(text) else [])


def check_key(request: Request, settings: Settings) -> None:
    """With RAG_API_KEY set, every request carries it as a bearer token (compared in constant time).
    Without one, the API is open, unless the app asks for a login (RAG_AUTH): then it stays closed."""
    key = settings.api_key
    if key is None:
        if settings.auth is not None:
            raise ApiError(401, "the app requires a login (RAG_AUTH): set RAG_API_KEY and send it as a bearer token",
                           code="invalid_api_key")
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise ApiError(401, "incorrect API key: send `Authorization: Bearer <RAG_API_KEY>`", code="invalid_api_key")


def api_router(pipeline: Pipeline, feedback: FeedbackStore) -> APIRouter:
    """The `/v1` routes, for the chat app's own server or `rag api`."""
    service = ChatService(pipeline, feedback)
    def authorised(request: Request) -> None:
        check_key(request, pipeline.settings)

    router = APIRouter(prefix="/v1", dependencies=[Depends(authorised)])

    @router.get("/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": OWNER} for m in MODELS]}

    @router.post("/chat/completions")
    async def chat(request: ChatRequest):
        answer, trace_id = await service.answer(request)
        if not request.stream:
            return completion(answer, trace_id, request.model)
        events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in stream_chunks(answer, trace_id, request.model)]
        return StreamingResponse(iter([*events, "data: [DONE]\n\n"]), media_type="text/event-stream")

    @router.get("/traces/{trace_id}")
    def trace(trace_id: str):
        record = feedback.trace(trace_id) if TRACE_ID.match(trace_id) else None
        if record is None:
            raise ApiError(404, f"no answer with trace id {trace_id!r}", code="trace_not_found")
        return record

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Errors in OpenAI's format, with their status codes, for the `/v1` routes."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body")
        return ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], code="invalid_request").response()


def create_api_app(pipeline: Pipeline, feedback: FeedbackStore | None = None) -> FastAPI:
    """`rag api`: the `/v1` routes and the MCP server over streamable HTTP at `/mcp`, one pipeline."""
    from rag.mcp_server import build_mcp_server

    settings = pipeline.settings
    feedback = feedback or FeedbackStore(settings.data_dir / "feedback.sqlite")
    mcp = build_mcp_server(pipeline)
    mcp_app = mcp.streamable_http_app(host=settings.host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(api_router(pipeline, feedback))

    @app.middleware("http")
    async def mcp_key(request: Request, call_next):
        """The MCP endpoint asks for the same bearer key as the `/v1` routes."""
        if request.url.path.startswith("/mcp"):
            try:
                check_key(request, settings)
            except ApiError as exc:
                return exc.response()
        return await call_next(request)

    app.router.routes.extend(mcp_app.routes)  # /mcp itself, not a mount that redirects /mcp to /mcp/
    return app
