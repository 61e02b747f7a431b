"""The one pipeline the CLI, the UI and the evaluation all call.

question -> (rewrite) -> retrieve -> prompt -> generate -> cite/check -> Answer.
Heavy parts (embedder, index, LLM client) are built once, on first use.
"""

from __future__ import annotations

import logging
from functools import cached_property

from rag.embedding import Embedder
from rag.errors import InputError
from rag.records import Hit
from rag.retrieval import Filters, HybridRetriever, Method
from rag.settings import Settings
from rag.store import IndexStore

log = logging.getLogger(__name__)


def validate_question(question: str, max_chars: int) -> str:
    cleaned = "".join(ch for ch in question if ch.isprintable() or ch in "\n\t").strip()
    if not cleaned:
        raise InputError("the question is empty; type a question about the articles")
    if len(cleaned) > max_chars:
        raise InputError(f"the question is {len(cleaned)} characters long; the limit is {max_chars} (RAG_MAX_QUESTION_CHARS)")
    return cleaned


class Pipeline:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    @cached_property
    def embedder(self) -> Embedder:
        return Embedder(self.settings.embedding_model, self.settings.embedding_batch_size)

    @cached_property
    def store(self) -> IndexStore:
        return IndexStore.load(self.settings.index_dir, expected_model=self.settings.embedding_model)

    @cached_property
    def retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.embedder, self.settings)

    def warm_up(self) -> None:
        """Load the index and the model now rather than on the first question."""
        self.retriever.search("warm up", top_k=1)

    def search(
        self, query: str, top_k: int | None = None, method: Method = "hybrid", filters: Filters | None = None
    ) -> list[Hit]:
        query = validate_question(query, self.settings.max_question_chars)
        return self.retriever.search(query, top_k=top_k, method=method, filters=filters)
