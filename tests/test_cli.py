"""The real `rag` entry point in a subprocess: index, search (JSON, query files), inspect, and clean errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RAG = Path(sys.executable).with_name("rag")
if not RAG.exists():
    RAG = ROOT / ".venv" / "bin" / "rag"
RESULT_KEYS = {"rank", "doc_id", "chunk_id", "score", "title", "date", "url", "text", "start", "end"}


def run_rag(*args: str, cwd: Path, index_dir: Path, seeds_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"RAG_INDEX_DIR": str(index_dir), "RAG_SEEDS_DIR": str(seeds_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(RAG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a copy of the seeds, indexed once by `rag index`."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(ROOT / "seeds", root / "seeds")
    paths = {"cwd": root, "index_dir": root / "index", "seeds_dir": root / "seeds"}
    result = run_rag("index", **paths)
    return paths, result


def test_index_reports_what_it_did(workspace):
    paths, result = workspace
    assert result.returncode == 0, result.stderr
    assert "indexed 5 documents" in result.stdout
    assert "added 5, changed 0, unchanged 0, removed 0" in result.stdout
    assert (paths["index_dir"] / "CURRENT").is_file()
    assert "Traceback" not in result.stderr


def files_below(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_index_with_nothing_changed_writes_nothing_and_says_so(workspace, tmp_path):
    paths, _ = workspace
    index_dir = tmp_path / "index"
    shutil.copytree(paths["index_dir"], index_dir)  # the same seeds folder: the articles come from the same files
    version = (index_dir / "CURRENT").read_text(encoding="utf-8")
    n_chunks = json.loads((index_dir / version / "manifest.json").read_text(encoding="utf-8"))["n_chunks"]
    before = files_below(index_dir)

    result = run_rag("index", cwd=tmp_path, index_dir=index_dir, seeds_dir=paths["seeds_dir"])
    assert result.returncode == 0, result.stderr
    expected = f"index is up to date: 5 documents, {n_chunks} chunks (nothing changed) -> {index_dir}/{version}"
    assert result.stdout.strip() == expected
    assert files_below(index_dir) == before  # no new version folder, CURRENT and every file untouched

    rebuilt = run_rag("index", "--rebuild", cwd=tmp_path, index_dir=index_dir, seeds_dir=paths["seeds_dir"])
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "added 5, changed 0, unchanged 0, removed 0" in rebuilt.stdout
    new_version = (index_dir / "CURRENT").read_text(encoding="utf-8")
    assert new_version != version and sorted(p.name for p in index_dir.glob("v-*")) == [new_version]


def test_search_json_has_the_documented_shape(workspace):
    paths, _ = workspace
    result = run_rag("search", "How much money did Russia promise to lend Belarus?", "--json", "--top-k", "3", **paths)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["query"] == "How much money did Russia promise to lend Belarus?"
    results = data["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    for r in results:
        assert RESULT_KEYS <= set(r)
        assert isinstance(r["score"], float) and isinstance(r["start"], int) and isinstance(r["end"], int)
        assert r["end"] - r["start"] == len(r["text"])
        assert r["doc_id"] in {p.stem for p in paths["seeds_dir"].glob("*.txt")}
    assert "$1.5 billion" in results[0]["text"]
    assert results[0]["doc_id"] == "003_4244630f166f0cd0"
    assert results[0]["date"] is None and results[0]["url"] is None


def test_search_queries_file_prints_one_object_per_line_in_order(workspace, tmp_path):
    paths, _ = workspace
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        '{"user_input": "Who is Dmitri Trenin?", "reference": "x"}\n'
        "Who arrived in Minsk as Russian prime minister?\n"
        "\n"
        '{"question": "How much money did Russia promise to lend Belarus?"}\n',
        encoding="utf-8",
    )
    result = run_rag("search", "--queries", str(queries), "--json", "--top-k", "2", **paths)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["query"] for r in rows] == [
        "Who is Dmitri Trenin?",
        "Who arrived in Minsk as Russian prime minister?",
        "How much money did Russia promise to lend Belarus?",
    ]
    assert all(len(r["results"]) == 2 for r in rows)
    assert "Carnegie Moscow Center" in " ".join(h["text"] for h in rows[0]["results"])
    assert rows[1]["results"][0]["doc_id"] == "004_deee31e75b74293e"
    assert "$1.5 billion" in rows[2]["results"][0]["text"]


def test_inspect_shows_metadata_and_removed_banner(workspace):
    paths, _ = workspace
    result = run_rag("inspect", "004_deee31e75b74293e", **paths)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "url: https://www.rferl.org/a/russian-pm-visits-minsk-as-belarus-looks-to-ally-for-help/30818225.html" in out
    assert "date: 2020-09-03" in out
    assert "[site banner] [ rfe/rl banner ]" in out
    assert "[donation banner] UNITED24" in out


def test_inspect_shows_blocks_with_kinds_and_section_paths(workspace):
    paths, _ = workspace
    result = run_rag("inspect", "002_9aadfc9c626cea25", **paths)
    assert result.returncode == 0, result.stderr
    assert re.search(r"heading2\s+\[Mass demonstrations\] Mass demonstrations\n", result.stdout)
    assert re.search(r"paragraph\s+\[Mass demonstrations\] Lukashenko, in power for 26 years", result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_empty_question_is_refused(workspace):
    paths, _ = workspace
    assert_one_line_error(run_rag("search", "   ", **paths), "question is empty")


def test_missing_seeds_folder(tmp_path):
    missing = tmp_path / "no-seeds-here"
    result = run_rag("index", cwd=tmp_path, index_dir=tmp_path / "index", seeds_dir=missing)
    assert_one_line_error(result, str(missing), "not found")


def test_empty_seeds_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_rag("index", cwd=tmp_path, index_dir=tmp_path / "index", seeds_dir=tmp_path / "empty")
    assert_one_line_error(result, "nothing to index", str(tmp_path / "empty"))


def test_no_index(tmp_path):
    result = run_rag("search", "Who is Trenin?", cwd=tmp_path, index_dir=tmp_path / "index", seeds_dir=tmp_path)
    assert_one_line_error(result, "no index", "rag index")


def test_corrupted_index_file_is_named(workspace, tmp_path):
    paths, _ = workspace
    damaged = tmp_path / "index"
    shutil.copytree(paths["index_dir"], damaged)
    version = (damaged / "CURRENT").read_text().strip()
    (damaged / version / "dense.faiss").write_bytes(b"garbage")
    result = run_rag("search", "Who is Trenin?", cwd=tmp_path, index_dir=damaged, seeds_dir=paths["seeds_dir"])
    assert_one_line_error(result, str(damaged / version / "dense.faiss"), "--rebuild")


def test_unknown_doc_id(workspace):
    paths, _ = workspace
    assert_one_line_error(run_rag("inspect", "no-such-doc", **paths), "no-such-doc")


def test_bench_writes_medians_plots_and_the_machine(workspace, tmp_path):
    paths, _ = workspace
    out = tmp_path / "bench"
    result = run_rag("bench", "--scenario", "retrieval", "--scenario", "scale", "--sizes", "3000", "--out", str(out),
                     "--golden", str(ROOT / "eval" / "golden.jsonl"), **(paths | {"cwd": tmp_path}))  # paths as arguments
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["cores"] == os.cpu_count() and "faiss-cpu" in data["machine"]["libraries"]
    retrieval = data["scenarios"]["retrieval"]
    for method in ("dense", "bm25", "hybrid"):
        figure = retrieval[f"{method} (ms)"]
        assert figure["runs"] == retrieval["queries"] > 0
        assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    assert retrieval["peak resident memory (MB)"] > 0
    scale = data["scenarios"]["scale"]["3000 passages"]
    assert scale["exact (flat)"]["recall@10"] == 1.0
    hnsw = [k for k in scale if k.startswith("HNSW M=32 efC=80 efSearch=")]
    assert len(hnsw) == 4 and all(0.5 <= scale[k]["recall@10"] <= 1.0 for k in hnsw)
    assert (out / "latency_vs_size.png").stat().st_size > 0
    assert "[retrieval]" in result.stdout and "hybrid (ms)" in result.stdout


def test_bench_rejects_an_unknown_scenario(workspace, tmp_path):
    paths, _ = workspace
    result = run_rag("bench", "--scenario", "warp", "--out", str(tmp_path), **paths)
    assert result.returncode != 0
    assert "unknown scenario warp; choose from startup, index, incremental" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_bench_incremental_adds_articles_one_by_one_and_embeds_only_them(tmp_path):
    from bench.harness import ADDITIONS, incremental_at_scale

    figures = incremental_at_scale(tmp_path, ROOT / "seeds", n=300)
    per_article = figures["chunks embedded per article"]
    assert len(per_article) == ADDITIONS and all(n >= 1 for n in per_article)
    assert figures["passages after"] == figures["passages before"] + sum(per_article)
    assert figures["seconds per added article"]["runs"] == ADDITIONS


def test_eval_retrieval_compares_the_three_retrievers_on_the_golden_set(workspace):
    paths, _ = workspace
    golden = str(ROOT / "eval" / "golden.jsonl")
    result = run_rag("eval", "retrieval", "--golden", golden, "--json", **paths)
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert list(table) == ["dense", "bm25", "hybrid"]
    assert {row["n"] for row in table.values()} == {table["hybrid"]["n"]} and table["hybrid"]["n"] >= 50
    assert table["hybrid"]["doc_hit@5"] >= 0.95 and table["hybrid"]["passage@5"] >= 0.9
    assert table["hybrid"]["passage@5"] >= max(table["dense"]["passage@5"], table["bm25"]["passage@5"])
    shown = run_rag("eval", "retrieval", "--golden", golden, "--top-k", "3", **paths)
    assert shown.returncode == 0 and "| hybrid |" in shown.stdout and "top 3)" in shown.stdout
