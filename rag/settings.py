"""The one settings object: `RAG_` environment variables, an optional `.env`, CLI overrides.

The LLM endpoint keeps the standard OpenAI names (OPENAI_BASE_URL, OPENAI_API_KEY).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.errors import SettingsError
from rag.records import HnswConfig

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SECRETS = ("openai_api_key", "auth", "api_key", "qdrant_api_key")  # never echoed, not even in an error


class Settings(BaseSettings):
    # validate_by_name: `with_overrides` re-validates field values under their own names.
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore", validate_by_name=True)

    # Paths
    seeds_dir: Path = Path("seeds")
    index_dir: Path = Path("index")
    data_dir: Path = Field(Path("data"), description="feedback, grades and traces (SQLite)")

    # Embedding
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    embedding_batch_size: int = 32
    embedding_runtime: Literal["auto", "torch"] = Field(
        "auto", description="auto: ONNX Runtime for queries once `rag index` has exported and checked the model"
    )
    index_precision: Literal["auto", "fp32"] = Field(
        "auto", description="auto: where the CPU computes bfloat16 natively (AVX512-BF16, AMX), a build of 300 passages or more embeds "
        "in bfloat16 on torch once its vectors are checked against the fp32 export's (cosine distance <= 1e-3); queries stay fp32")
    embed_title: bool = Field(True, description="prefix each chunk with its title when embedding")
    sentence_vectors: bool = Field(True, description="also embed each sentence; a chunk scores by its best match")
    sentence_pooling: bool = Field(
        False, description="pool sentence vectors from their passage's forward pass instead of embedding each sentence: "
        "indexing does a third of the work, but retrieval loses a question here and there (see Performance)")

    # Chunking (lengths in the embedding model's word pieces)
    chunk_max_tokens: int = 224
    chunk_overlap_tokens: int = 64

    # Index
    index_type: Literal["auto", "flat", "hnsw"] = "auto"
    ann_threshold: int = Field(50_000, description="`auto` switches from exact to HNSW above this many chunks")
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = Field(256, description="HNSW search breadth: recall@10 0.986 at 1,000,000 passages (128: 0.950)")

    # Where the passages and their vectors live: this machine's FAISS + BM25 files, or Qdrant
    store: Literal["faiss", "qdrant"] | None = Field(
        None, description="qdrant: passages, vectors and keyword weights in a Qdrant collection; unset: as the index is (faiss for a new one)")
    qdrant_url: str | None = Field(None, description="a Qdrant server or cluster, e.g. http://qdrant:6333")
    qdrant_path: Path | None = Field(None, description="an embedded Qdrant kept in this folder (tests, small set-ups), instead of a URL")
    qdrant_api_key: SecretStr | None = Field(None, description="the Qdrant server's API key")
    qdrant_collection: str | None = Field(None, description="the collection's name (default: derived from the index folder)")
    qdrant_timeout: float = Field(10.0, gt=0, description="seconds a Qdrant request may take")

    # `rag index --ray`: embedding on a Ray cluster
    ray_actors: int = Field(2, ge=1, description="embedding actors (each loads the model once)")
    ray_actor_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each embedding actor")
    ray_batch_size: int = Field(64, ge=1, description="passages an actor embeds per task")

    @property
    def hnsw(self) -> HnswConfig:
        return HnswConfig(self.hnsw_m, self.hnsw_ef_construction)

    # Retrieval
    top_k: int = 5
    candidates: int = Field(30, description="hits taken from each retriever before fusion")
    fusion: Literal["scores", "ranks"] = Field(
        "scores", description="scores: each retriever's scores as z-scores within its candidates, weighted and summed "
        "(distribution-based score fusion); ranks: reciprocal rank fusion")
    dense_weight: float = Field(0.5, ge=0, le=1, description="the dense retriever's share in score fusion (BM25 has the rest)")
    rrf_k: int = Field(60, description="reciprocal rank fusion constant (RAG_FUSION=ranks)")
    rerank: bool = Field(False, description="order the passages found by the best answer sentence each holds (hybrid search; "
                         "off: it won on the tune halves but not on the report halves)")
    rerank_rank_penalty: float = Field(
        0.02, ge=0, description="what each place lower in the retriever's order costs a passage when reranking by its best sentence")
    mmr: bool = False
    mmr_lambda: float = 0.7
    merge_neighbors: bool = False

    # Answering
    mode: Literal["auto", "llm", "extractive"] = Field(
        "auto", description="auto: llm when OPENAI_BASE_URL or RAG_LOCAL_GGUF is set, else extractive"
    )
    refuse_below: float = Field(0.04, ge=0, le=1, description="refuse when the answer policy's confidence is below this (no answerable question of the eight tune halves it was chosen on is under 0.04)")
    unsure_below: float = Field(0.54, ge=0, le=1, description="answer with a low-confidence notice when the confidence is below this")
    policy_model: Path | None = Field(None, description="a policy model fitted by eval/policy/fit.py (default: the bundled one)")
    support_threshold: float = Field(0.6, description="a sentence is supported when its similarity to a cited passage reaches this")
    support_coverage: float = Field(0.75, description="...or when this share of its content words is in the cited passage")
    clause_coverage: float = Field(0.5, ge=0, le=1, description="each clause of a sentence needs this share of its content words in what it cites")
    max_question_chars: int = 2000
    history_turns: int = 4
    extractive_sentences: int = Field(3, description="sentences chosen for an extractive answer, plus at most one unit it goes on in (3 holds the fact more often than 2 on four of five tune halves, never less)")
    prompt_context: Literal["auto", "passages", "sentences"] = Field(
        "auto", description="sentences: only the best sentences of each passage (auto: for the bundled small model)"
    )
    prompt_sentences: int = 4
    llm_sources: int = Field(3, description="how many of the retrieved passages go into the prompt")
    require_support: bool = Field(True, description="quote the passages instead when no sentence of the model's answer is supported")
    fallback_extractive: bool = Field(True, description="answer extractively, with a notice, when the LLM endpoint fails")
    model_refusal: Literal["auto", "trust", "verify"] = Field(
        "auto", description="verify: when the evidence check found the answer but the model says the sources do not "
        "cover it, quote the passages with a notice instead of refusing (auto: verify for the bundled small model)"
    )

    # Evaluation: what the automatic verdict calls a correct answer (compared with human grades)
    correct_f1: float = Field(0.5, ge=0, le=1, description="an answer is correct when its token F1 with the reference reaches this...")
    correct_similarity: float = Field(0.7, ge=0, le=1, description="...or its embedding similarity to the reference reaches this")

    judge: Literal["auto", "on", "off"] = Field(
        "auto", description="an LLM judge in evaluation runs: auto when OPENAI_BASE_URL is set; on: also with the bundled model")
    judge_model: str | None = Field(None, description="the judge's model at the endpoint (default: RAG_LLM_MODEL)")
    judge_temperature: float = Field(0.0, ge=0, le=2)

    # LLM endpoint (standard OpenAI variable names)
    openai_base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_BASE_URL", "RAG_OPENAI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY", "RAG_OPENAI_API_KEY"))
    llm_model: str | None = None
    llm_timeout: float = 60.0
    llm_max_retries: int = 1
    temperature: float = 0.1
    llm_seed: int | None = Field(0, description="sampling seed sent to the endpoint, for reproducible answers")
    max_answer_tokens: int = 400
    llm_context_tokens: int = 4096

    # The bundled local model
    local_gguf: Path | None = None
    local_llm_port: int = 8088
    local_llm_startup_timeout: float = 120.0

    # UI
    host: str = "127.0.0.1"
    port: int = 7860
    auth: SecretStr | None = Field(None, description="basic auth as user:password")
    concurrency_limit: int = 4
    max_queue: int = 32

    # The Library tab: articles added and removed in the browser
    library_dir: Path = Field(Path("library"), description="where articles added in the Library tab are kept")
    library_uploads: bool = Field(True, description="false: the Library tab lists the articles but cannot add or remove any")
    library_max_mb: float = Field(20.0, gt=0, description="largest file the Library tab accepts, in MB")
    library_max_files: int = Field(100, ge=1, description="most files one upload may add")

    # APIs: the OpenAI-compatible chat API and the MCP server
    api_port: int = Field(8000, description="where `rag api` listens (on RAG_HOST)")
    api_key: SecretStr | None = Field(None, description="a bearer key the API requires (unset: open, on the loopback)")

    def with_overrides(self, **overrides: object) -> "Settings":
        """A copy with the given (non-None) overrides applied and validated like the environment is."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise SettingsError(f"unknown setting {', '.join(unknown)}")
        try:
            return type(self).model_validate(dict(self) | changes)
        except ValidationError as exc:
            raise SettingsError(describe(exc)) from None


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment and `.env`, with overrides; a bad value is one SettingsError."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    return settings.with_overrides(**overrides)


def describe(error: ValidationError) -> str:
    """One line naming each bad setting, its variable and what it accepts."""
    problems = []
    for e in error.errors():
        name = str(e["loc"][0]) if e["loc"] else "settings"
        variable = name.upper() if name.upper().startswith("OPENAI_") else f"RAG_{name.upper()}"
        shown = "" if name in SECRETS else f" = {e.get('input')!r}"
        problems.append(f"{name} ({variable}){shown}: {e['msg']}")
    return "invalid setting: " + "; ".join(problems)
