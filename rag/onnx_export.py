"""Exporting the embedding model's transformer to ONNX, kept only if it gives the same vectors.

`rag index` exports once per model, beside the index; `rag.embedding.OnnxEncoder` then serves
queries and answer checks without importing torch. The export is checked against the model on
real passages (cosine distance <= `ONNX_TOLERANCE`) and appears whole or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from rag.embedding import ONNX_META, Embedder, OnnxEncoder, is_exported, onnx_folder
from rag.files import PRIVATE_FOLDER, make_private, private_write

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-4  # largest cosine distance allowed between ONNX and sentence-transformers vectors


def export_for(embedder: Embedder, sample_texts: Callable[[], list[str]]) -> bool:
    """The embedder's ONNX export, made if it may use one and has none yet; `sample_texts()` (asked
    for only then) to check it on. The loaded model is the embedder's: no second copy is loaded."""
    folder = embedder.onnx_export_dir
    if folder is None:
        return False
    if is_exported(folder):
        return True
    exported = OnnxExporter(embedder.model, embedder.model_name, folder.parent, embedder.batch_size).export(sample_texts())
    if exported:
        embedder.forget_onnx()  # it may have looked for an export before this one existed
    return exported


class OnnxExporter:
    """Exports a loaded SentenceTransformer into `cache_dir`, under the model's name."""

    def __init__(self, model, model_name: str, cache_dir: Path, batch_size: int = 32):
        self.model = model
        self.model_name = model_name
        self.folder = onnx_folder(cache_dir, model_name)
        self.batch_size = batch_size

    def export(self, texts: list[str]) -> bool:
        """Write the export if the model is exportable and its vectors match on `texts`."""
        reason = self.unexportable_reason()
        if reason:
            log.info("queries stay on sentence-transformers: %s", reason)
            return False
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        self.folder.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        tmp.mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
        try:
            meta = self._write(tmp)
            distance = self._distance(tmp, meta, texts)
        except Exception as exc:  # noqa: BLE001 - export is an optimisation; the index is fine without it
            log.warning("ONNX export failed (%s); queries use sentence-transformers", exc)
            return False
        if distance > ONNX_TOLERANCE:
            log.warning("ONNX vectors differ by cosine distance %.2g > %g; not used", distance, ONNX_TOLERANCE)
            return False
        # the meta file marks a checked export: written last, and the folder renamed into place whole
        private_write(tmp / ONNX_META, json.dumps(meta | {"max_cosine_distance": distance}, indent=2).encode("utf-8"))
        make_private(tmp)  # torch and tokenizers write with the default mode
        os.replace(tmp, self.folder)
        return True

    def unexportable_reason(self) -> str | None:
        """Why the model is not a plain transformer with mean pooling (None: it is)."""
        model = self.model
        types = [f"{type(m).__module__.rsplit('.', 1)[0]}.{type(m).__name__}" for m in model]
        names = [type(m).__name__ for m in model]
        if names[:2] != ["Transformer", "Pooling"] or any(n not in ("Transformer", "Pooling", "Normalize") for n in names):
            return f"modules {types} are not Transformer + Pooling (+ Normalize)"
        pooling = model[1]
        if getattr(pooling, "pooling_mode", "mean") != "mean" and not getattr(pooling, "pooling_mode_mean_tokens", False):
            return "pooling is not mean pooling"
        if any(model.prompts.values()):
            return "the model uses prompts"
        if not getattr(model.tokenizer, "is_fast", False):
            return "the tokenizer has no tokenizer.json"
        return None

    def _write(self, folder: Path) -> dict:
        """The transformer as model.onnx and its tokenizer as tokenizer.json; returns what the encoder needs to know."""
        import torch

        transformer = self.model[0].auto_model.eval()
        tokenizer = self.model.tokenizer
        sample = tokenizer(["a sample sentence", "another one"], padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

        class Hidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(**dict(zip(names, args))).last_hidden_state

        axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
        # The tracer warns about shape checks it freezes; the export is verified against the model after.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Hidden(transformer), tuple(sample[n] for n in names), str(folder / "model.onnx"),
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        return {"model": self.model_name, "max_seq_length": int(self.model.max_seq_length),
                "pad_id": int(tokenizer.pad_token_id or 0), "pad_token": tokenizer.pad_token or "[PAD]"}

    def _distance(self, folder: Path, meta: dict, texts: list[str]) -> float:
        """The largest cosine distance between the model's vectors and the export's."""
        texts = (texts or ["a sample sentence"])[:64]
        reference = self.model.encode_document(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=self.batch_size)
        exported = OnnxEncoder(folder, meta).encode(texts, self.batch_size)
        return float((1.0 - (reference * exported).sum(axis=1)).max())
