"""Which LLM answers: the configured OpenAI-compatible endpoint, or the bundled model's server,
started on first use and restarted if it died."""

from __future__ import annotations

import threading

from rag.llm import LLMClient, endpoint_host
from rag.local_llm import LocalLLMServer
from rag.settings import Settings


class LLMProvider:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._client: LLMClient | None = None
        self.local_server: LocalLLMServer | None = None  # the bundled server, once one was asked for

    @property
    def uses_local(self) -> bool:
        return not self.settings.openai_base_url

    @property
    def small_local(self) -> bool:
        """The bundled 135M model (no endpoint, no model file of one's own): it gets short prompts, and its
        "not covered" is checked against the evidence rather than trusted."""
        return self.uses_local and not self.settings.local_gguf

    @property
    def endpoint(self) -> str:
        return endpoint_host(self.settings.openai_base_url or f"http://127.0.0.1:{self.settings.local_llm_port}")

    def client(self) -> LLMClient:
        """Raises EndpointError (one clear line) when the endpoint or the bundled server cannot be reached."""
        with self._lock:
            if self.uses_local:
                if self.local_server is None:
                    self.local_server = LocalLLMServer(self.settings)
                if self._client is None or not self.local_server.alive():
                    base_url = self.local_server.ensure_running()
                    self._client = self._client or LLMClient(base_url, None, self.settings.llm_model, self.settings, local=True)
            elif self._client is None:
                key = self.settings.openai_api_key.get_secret_value() if self.settings.openai_api_key else None
                self._client = LLMClient(self.settings.openai_base_url, key, self.settings.llm_model, self.settings)
            return self._client

    def close(self) -> None:
        if self.local_server:
            self.local_server.stop()
