"""The LLM stage: one OpenAI-compatible client, streaming tokens, failures as one clear line.

Works with OpenAI, vLLM, Ollama, llama.cpp's server and LM Studio. The SDK retries
408/409/429/5xx itself (`llm_max_retries`); there is no second retry loop here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from rag.errors import EndpointError
from rag.settings import Settings


LOCAL_API_KEY = "local-no-key"  # llama.cpp's server ignores keys; the SDK insists on one


def endpoint_host(base_url: str | None) -> str:
    """Scheme, host and port only: what may appear in messages and traces (never a key or path secret)."""
    if not base_url:
        return "api.openai.com"
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


@dataclass
class Generation:
    """What a streamed completion produced, filled in as tokens arrive."""

    text: str = ""
    model: str = ""
    usage: dict = field(default_factory=dict)
    first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str | None = None


class LLMClient:
    """Built once per process; `stream()` yields text pieces and fills a `Generation`."""

    def __init__(self, base_url: str | None, api_key: str | None, model: str | None, settings: Settings, local: bool = False):
        from openai import OpenAI

        self.settings = settings
        self.base_url = base_url
        self.host = endpoint_host(base_url)
        self.local = local
        self._client = OpenAI(
            base_url=base_url,
            api_key=api_key or LOCAL_API_KEY,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )
        self._model = model

    @property
    def model(self) -> str:
        """The configured model, or the first one the endpoint lists."""
        if not self._model:
            try:
                models = self._client.models.list().data
            except Exception as exc:  # noqa: BLE001 - translated into one clear line
                raise self._translate(exc) from exc
            if not models:
                raise EndpointError(f"the LLM endpoint {self.host} lists no models; set RAG_LLM_MODEL")
            self._model = models[0].id
        return self._model

    def with_model(self, model: str) -> LLMClient:
        """The same endpoint and key, another model (the evaluation's judge)."""
        other = copy.copy(self)
        other._model = model
        return other

    def ping(self) -> bool:
        try:
            self._client.with_options(timeout=3.0, max_retries=0).models.list()
            return True
        except Exception:  # noqa: BLE001 - a status probe only
            return False

    def complete(self, messages: list[dict], max_tokens: int | None = None, temperature: float | None = None) -> str:
        gen = Generation()
        return "".join(self.stream(messages, gen, max_tokens=max_tokens, temperature=temperature))

    def stream(
        self, messages: list[dict], gen: Generation, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        started = time.perf_counter()
        gen.model = self.model
        response = None
        try:
            response = self._client.chat.completions.create(
                model=gen.model,
                messages=messages,
                stream=True,
                max_tokens=max_tokens or self.settings.max_answer_tokens,
                temperature=self.settings.temperature if temperature is None else temperature,
                seed=self.settings.llm_seed,  # reproducible answers where the endpoint honours it
            )
            pieces = 0
            for chunk in response:
                if getattr(chunk, "usage", None):
                    gen.usage = chunk.usage.model_dump()
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                gen.finish_reason = choice.finish_reason or gen.finish_reason
                piece = choice.delta.content or ""
                if piece:
                    if gen.first_token_s is None:
                        gen.first_token_s = time.perf_counter() - started
                    pieces += 1
                    gen.text += piece
                    yield piece
            if gen.finish_reason is None:
                raise EndpointError(f"the LLM endpoint {self.host} ended its stream without finishing the answer; try again")
            if not gen.usage:
                gen.usage = {"completion_pieces": pieces, "note": "endpoint reported no usage"}
        except EndpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into one clear line
            raise self._translate(exc, streaming=response is not None) from exc
        finally:
            gen.total_s = time.perf_counter() - started

    def _translate(self, exc: Exception, streaming: bool = False) -> EndpointError:
        import openai

        host, timeout = self.host, self.settings.llm_timeout
        fix = "check the endpoint or use --mode extractive"
        if isinstance(exc, openai.APITimeoutError):
            return EndpointError(f"the LLM endpoint {host} did not answer within {timeout:g}s (RAG_LLM_TIMEOUT); {fix}")
        if isinstance(exc, openai.APIConnectionError) and streaming:
            # The endpoint was reached and had started answering: the connection broke, it is not down.
            return EndpointError(f"the LLM endpoint {host} broke off the answer (connection closed mid-stream); try again or {fix.split(' or ')[1]}")
        if isinstance(exc, openai.APIConnectionError):
            return EndpointError(f"cannot reach the LLM endpoint {host}; is it running? set OPENAI_BASE_URL or {fix.split(' or ')[1]}")
        if isinstance(exc, openai.AuthenticationError):
            return EndpointError(f"the LLM endpoint {host} rejected the API key (401); set a valid OPENAI_API_KEY")
        if isinstance(exc, openai.PermissionDeniedError):
            return EndpointError(f"the LLM endpoint {host} refused access (403); check OPENAI_API_KEY and the model's permissions")
        if isinstance(exc, openai.RateLimitError):
            return EndpointError(f"the LLM endpoint {host} is rate limiting (429); wait and try again, or {fix.split(' or ')[1]}")
        if isinstance(exc, openai.NotFoundError):
            return EndpointError(f"the LLM endpoint {host} does not know model {self._model!r} (404); set RAG_LLM_MODEL")
        if isinstance(exc, openai.APIStatusError):
            return EndpointError(f"the LLM endpoint {host} failed with HTTP {exc.status_code}; {fix}")
        return EndpointError(f"the LLM endpoint {host} broke off the answer ({exc.__class__.__name__}); {fix}")
