"""Evaluation: hand-computed metrics on small fixtures, and end-to-end runs through the real pipeline."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from llm_servers import scripted_llm  # noqa: F401 - a fixture
from rag.errors import RagError
from rag.evaluation import (
    METRIC_NAMES,
    Evaluator,
    answer_scores,
    check_thresholds,
    citation_scores,
    compare_runs,
    group_conversations,
    read_answers,
    read_results,
    stops_mid_sentence,
    summarize,
)
from rag.golden import GoldenItem, load_golden
from rag.records import PassageSpan, Sentence

ROOT = Path(__file__).resolve().parents[1]
LOAN = "Putin also offered economic support, saying Russia would extend Belarus a government loan of $1.5 billion."
DETAINED = "Police detained nearly 7,000 people during protests in the days after the election."


@pytest.fixture(scope="module")
def checker(pipeline):
    return pipeline.grounding


def test_citation_precision_and_recall_by_hand(checker):
    sources = {1: LOAN, 2: DETAINED}
    sentences = [
        Sentence("Russia would extend Belarus a government loan of $1.5 billion.", [1], False),
        Sentence("Police detained nearly 7,000 people during the protests after the election.", [1, 2], False),
        Sentence("The weather in Minsk was sunny.", [], False),
    ]
    scores = citation_scores(sentences, sources, checker)
    # recall: sentences 1 and 2 are supported by what they cite, 3 cites nothing -> 2/3
    assert scores["citation.recall"] == pytest.approx(2 / 3)
    # precision: [1] supports sentence 1; for sentence 2, [1] does not and [2] does -> 2 of 3 citations
    assert scores["citation.precision"] == pytest.approx(2 / 3)


def test_a_wrong_number_is_not_supported(checker):
    assert checker.supports("Russia would lend Belarus $1.5 billion.", [LOAN])
    assert not checker.supports("Russia would lend Belarus $2.5 billion.", [LOAN])


def test_answer_scores_by_hand():
    item = GoldenItem("q", "How much?", reference="$1.5 billion", reference_doc_ids=["d"])
    scores = answer_scores(item, "The loan was $1.5 billion [1].", refused=False, similarity=lambda a, b: 0.5)
    # tokens: "loan was 15 billion" vs "15 billion": precision 2/4, recall 2/2 -> F1 2/3
    assert scores["answer.f1"] == pytest.approx(2 / 3)
    assert scores["answer.exact_match"] == 0.0
    assert scores["refusal.correct"] == 1.0 and scores["refusal.false_refusal"] == 0.0
    exact = answer_scores(item, "1.5 billion", refused=False, similarity=lambda a, b: 1.0)
    assert exact["answer.exact_match"] == 1.0
    unanswerable = GoldenItem("u", "Who won in 2024?", answerable=False)
    assert answer_scores(unanswerable, "Not found", refused=True, similarity=lambda a, b: 0)["refusal.correct"] == 1.0
    assert "answer.f1" not in answer_scores(unanswerable, "x", refused=False, similarity=lambda a, b: 0)


def test_summary_counts_retrieval_on_answerable_and_refusal_on_both():
    results = [
        {"id": "a", "answerable": True, "refused": False, "type": "fact", "latency_ms": 10.0,
         "scores": {"retrieval.hit@5": 1.0, "answer.f1": 0.5, "refusal.correct": 1.0, "refusal.false_refusal": 0.0}},
        {"id": "b", "answerable": True, "refused": True, "type": "fact", "latency_ms": 30.0,
         "scores": {"retrieval.hit@5": 0.0, "answer.f1": 0.0, "refusal.correct": 0.0, "refusal.false_refusal": 1.0}},
        {"id": "c", "answerable": False, "refused": True, "type": "unanswerable", "latency_ms": 20.0,
         "scores": {"refusal.correct": 1.0}},
    ]
    summary = summarize(results, "extractive", {})
    m = summary["metrics"]
    assert summary["n"] == 3 and summary["mode"] == "extractive"
    assert m["retrieval.hit@5"] == 0.5
    assert m["refusal.accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["refusal.false_refusal_rate"] == 0.5
    assert m["refusal.unanswerable_refused"] == 1.0
    assert m["latency.p50_ms"] == 20.0
    assert summary["by_type"]["unanswerable"]["n"] == 1
    assert "answer.written_by_model" not in m


def test_llm_summary_says_how_many_answers_the_model_wrote():
    def result(n: int, refused: bool, answered_by: str | None) -> dict:
        trace = {"answered_by": answered_by} if answered_by else {}
        return {"id": f"q{n}", "answerable": True, "refused": refused, "scores": {}, "trace": trace, "latency_ms": 1.0}

    results = [result(1, False, None), result(2, False, "extractive"), result(3, False, "extractive"), result(4, True, None)]
    assert summarize(results, "llm", {})["metrics"]["answer.written_by_model"] == pytest.approx(1 / 3, abs=1e-4)


def test_thresholds():
    summary = {"metrics": {"retrieval.hit@5": 0.9, "answer.f1": None}}
    assert check_thresholds(summary, ["retrieval.hit@5=0.8"]) == []
    assert check_thresholds(summary, ["retrieval.hit@5=0.95"]) == ["retrieval.hit@5 = 0.9 is below 0.95"]
    assert check_thresholds(summary, ["answer.f1=0.1"]) == ["answer.f1 = None is below 0.1"]
    with pytest.raises(RagError, match="unknown metric"):
        check_thresholds(summary, ["nope=1"])
    with pytest.raises(RagError, match="METRIC=NUMBER"):
        check_thresholds(summary, ["retrieval.hit@5=high"])


def test_follow_up_turns_stay_together_in_order():
    items = [GoldenItem("1", "a"), GoldenItem("3", "b2", conversation_id="c", turn=2),
             GoldenItem("2", "b1", conversation_id="c", turn=1)]
    groups = group_conversations(items)
    assert [[i.id for i in g] for g in groups] == [["1"], ["2", "3"]]


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory) -> Path:
    items = load_golden(ROOT / "eval" / "golden.jsonl")
    chosen = [i for i in items if i.id in ("q001", "q057")] + [i for i in items if i.conversation_id == "c1"]
    path = tmp_path_factory.mktemp("golden") / "small.jsonl"
    path.write_text("".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in chosen), encoding="utf-8")
    return path


@pytest.mark.integration
def test_end_to_end_run_is_complete_and_resumable(pipeline, small_golden, tmp_path):
    items = load_golden(small_golden)
    out = tmp_path / "run"
    summary = Evaluator(pipeline).run(items, out, "extractive")
    assert summary["n"] == 4 and summary["mode"] == "extractive"
    assert set(METRIC_NAMES) <= set(summary["metrics"])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [i.id for i in items] or {r["id"] for r in rows} == {i.id for i in items}
    for row in rows:
        assert {"id", "user_input", "reference", "reference_doc_ids", "answer", "refused", "citations",
                "retrieved_doc_ids", "scores", "trace"} <= set(row)
    by_id = {r["id"]: r for r in rows}
    assert by_id["q057"]["refused"] or by_id["q057"]["low_confidence"]  # GDP: not in the articles
    assert by_id["q001"]["scores"]["retrieval.hit@1"] == 1.0
    follow_up = by_id["q050"]
    assert follow_up["trace"]["rewrite"] == "rules" and "Trenin" in follow_up["trace"]["rewritten_question"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and 'src="http' not in html
    assert "| retrieval.hit@5 |" in (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["metrics"] == summary["metrics"]

    # Resume: a lost line is recomputed, the others are kept as they were.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[1:]) + "\n")
    kept = {json.loads(line)["id"]: json.loads(line)["latency_ms"] for line in lines[1:]}
    Evaluator(pipeline).run(items, out, "extractive")
    again = {json.loads(line)["id"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert set(again) == {i.id for i in items}
    assert all(again[qid]["latency_ms"] == latency for qid, latency in kept.items())


@pytest.mark.integration
def test_scoring_external_answers_and_comparing_runs(pipeline, small_golden, tmp_path):
    items = load_golden(small_golden)
    chunk = next(c for c in pipeline.store.chunks if "collective farm boss" in c.text)
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"id": "q001", "response": "He was a collective farm boss [1].", "retrieved_doc_ids": [chunk.doc_id],
         "citations": [{"marker": 1, "doc_id": chunk.doc_id, "chunk_id": chunk.chunk_id}]},
        {"id": "q057", "answer": "The articles do not cover this."},
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    good = Evaluator(pipeline).score(items, read_answers(answers), tmp_path / "good")
    assert good["n"] == 2
    results = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "good" / "results.jsonl").read_text().splitlines()}
    assert results["q001"]["scores"]["answer.f1"] == 1.0  # "collective farm boss" vs "He was a collective farm boss."
    assert results["q001"]["scores"]["citation.recall"] == 1.0
    assert results["q057"]["refused"] is True and results["q057"]["scores"]["refusal.correct"] == 1.0

    rows[0]["response"] = "He was a tractor driver."
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    Evaluator(pipeline).score(items, read_answers(answers), tmp_path / "worse")
    comparison = compare_runs(tmp_path / "good", tmp_path / "worse")
    assert comparison["changes"][0]["id"] == "q001" and comparison["changes"][0]["delta"] < 0
    assert comparison["metrics"]["answer.f1"]["delta"] < 0
    f1 = comparison["metrics"]["answer.f1"]
    assert f1["paired"] == 1 and f1["low"] <= f1["delta"] <= f1["high"] < 0  # one question, worse in every resample


def test_answers_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"id": "q1", "response": "x"}\n{oops\n')
    with pytest.raises(RagError, match=r"a.jsonl:2: invalid JSON"):
        read_answers(bad)
    bad.write_text('{"response": "x"}\n')
    with pytest.raises(RagError, match="needs `id`"):
        read_answers(bad)


@pytest.mark.integration
def test_cli_fail_under_score_and_export(seed_index, small_golden, tmp_path):
    env = os.environ | {"RAG_INDEX_DIR": str(seed_index.index_dir), "RAG_MODE": "extractive"}
    rag = [sys.executable, "-m", "rag"]
    run = subprocess.run([*rag, "eval", "run", "--golden", str(small_golden), "--out", str(tmp_path / "r"),
                          "--fail-under", "retrieval.hit@5=1.01"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr
    assert "below threshold: retrieval.hit@5" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "r" / "report.html").exists()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    low, high = summary["intervals"]["answer.f1"]
    assert low <= summary["metrics"]["answer.f1"] <= high and f"answer.f1" in run.stdout and f"[{low}, {high}]" in run.stdout
    shutil.copytree(tmp_path / "r", tmp_path / "again")  # the same answers: no difference, and the interval says so
    compare = subprocess.run([*rag, "eval", "compare", str(tmp_path / "r"), str(tmp_path / "again")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stderr
    f1_row = next(line for line in compare.stdout.splitlines() if line.startswith("| answer.f1 |"))
    answered = sum("answer.f1" in r["scores"] for r in read_results(tmp_path / "r" / "results.jsonl"))
    assert f1_row.split(" | ")[3:7] == ["0.000", f"0.000 ({answered})", "[0.000, 0.000]", "1.000 |"], f1_row
    export = subprocess.run([*rag, "eval", "export", "--golden", str(small_golden), "--format", "beir", "--out", str(tmp_path / "q.tsv")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "q.tsv").read_text().splitlines()[:2] == ["query-id\tcorpus-id\tscore", "q001\t000_ac36cdf8cda615f1\t1"]
    missing = subprocess.run([*rag, "eval", "score", "--golden", str(small_golden), "--answers", str(tmp_path / "none.jsonl")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and missing.stderr.startswith("error:") and "none.jsonl" in missing.stderr


def test_the_automatic_verdict_uses_the_thresholds_in_the_settings():
    from rag.evaluation import judged_correct
    from rag.settings import Settings

    settings = Settings(_env_file=None)
    assert judged_correct({"answer.f1": 0.5, "answer.semantic_similarity": 0.1}, settings)
    assert judged_correct({"answer.f1": 0.1, "answer.semantic_similarity": 0.7}, settings)
    assert not judged_correct({"answer.f1": 0.49, "answer.semantic_similarity": 0.69}, settings)
    assert not judged_correct({"answer.f1": 0.5}, settings.with_overrides(correct_f1=0.8))
    assert judged_correct({"refusal.correct": 1.0}, settings) and not judged_correct({"refusal.correct": 0.0}, settings)


@pytest.mark.integration
def test_the_trec_export_gives_trec_eval_the_products_own_retrieval_figures(pipeline, tmp_path):
    import pytrec_eval

    golden = Path(__file__).resolve().parents[1] / "eval" / "golden.jsonl"
    Evaluator(pipeline).run(load_golden(golden), tmp_path / "run", "extractive")
    env = os.environ | {"RAG_INDEX_DIR": str(pipeline.settings.index_dir)}
    export = subprocess.run([sys.executable, "-m", "rag", "eval", "export", "--format", "trec", "--golden", str(golden),
                             "--run", str(tmp_path / "run"), "--out", str(tmp_path / "trec")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr

    def read(path: Path, columns: tuple[int, int, int]) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            table.setdefault(parts[columns[0]], {})[parts[columns[1]]] = float(parts[columns[2]])
        return table

    qrels = {q: {d: int(v) for d, v in docs.items()} for q, docs in read(tmp_path / "trec" / "qrels.trec", (0, 2, 3)).items()}
    run = read(tmp_path / "trec" / "run.trec", (0, 2, 4))
    measured = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.5", "recip_rank"}).evaluate(run)
    ours = {r["id"]: r["scores"] for r in read_results(tmp_path / "run" / "results.jsonl") if "retrieval.mrr" in r["scores"]}
    assert set(measured) == set(ours) and len(ours) >= 50
    for theirs, mine in (("ndcg_cut_10", "retrieval.ndcg@10"), ("recall_5", "retrieval.recall@5"), ("recip_rank", "retrieval.mrr")):
        trec_eval_mean = statistics.fmean(measured[q][theirs] for q in ours)
        assert abs(trec_eval_mean - statistics.fmean(s[mine] for s in ours.values())) < 1e-6, theirs


def test_agreement_gives_kappa_correlations_and_the_disagreements_first():
    from rag.evaluation import agreement, cohen_kappa
    from rag.settings import Settings

    assert cohen_kappa([True, True, False, False], [True, True, False, False]) == 1.0
    assert cohen_kappa([True, False, True, False], [False, True, False, True]) == -1.0
    assert cohen_kappa([True, True, False, False], [True, False, True, False]) == 0.0
    assert cohen_kappa([], []) is None
    rows = [{"id": f"q{i}", "user_input": f"question {i}", "scores": {"answer.f1": f1, "answer.semantic_similarity": f1}}
            for i, f1 in enumerate([0.9, 0.8, 0.2, 0.1, 0.6])]
    grades = {"q0": {"grade": "correct"}, "q1": {"grade": "correct"}, "q2": {"grade": "wrong"}, "q3": {"grade": "partly"},
              "q4": {"grade": "wrong"}}
    found = agreement(rows, grades, Settings(_env_file=None))
    assert found["n"] == 5 and found["agree"] == 4 and [d["id"] for d in found["disagreements"]] == ["q4"]
    assert found["kappa"] == pytest.approx(0.6154, abs=1e-4)  # po 0.8, pe 0.48
    assert found["correlations"]["answer.f1"] > 0.5 and found["correlations"]["citation.recall"] is None


# ---- the optional LLM judge, against a scripted judge ------------------------------------------------------------
@pytest.mark.integration
def test_the_judge_scores_faithfulness_correctness_and_relevance_after_ragas(scripted_llm, seed_index, embedder, pipeline, tmp_path):
    from llm_servers import MODEL_ID, Reply, pipeline_for
    from rag.factory import build_judge
    from rag.judge import prompt_hash

    pipe = pipeline_for(seed_index, embedder, scripted_llm.base_url, store=pipeline.store, mode="extractive")
    item = next(i for i in load_golden(Path(__file__).resolve().parents[1] / "eval" / "golden.jsonl") if i.answerable)
    n = len(pipe.ask(item.user_input).sentences)  # extractive: the judge makes every request
    scripted_llm.then(Reply("Sure! " + json.dumps({"verdicts": [1] * (n - 1) + [0]})),
                      Reply('```json\n{"TP": 2, "FP": 1, "FN": 1}\n```'), Reply('{"rating": 1}'))
    judge = build_judge(pipe.settings, pipe.llm_provider)
    summary = Evaluator(pipe, judge).run([item], tmp_path / "run", "extractive")
    (row,) = read_results(tmp_path / "run" / "results.jsonl")
    scores = row["scores"]
    assert scores["judge.faithfulness"] == pytest.approx((n - 1) / n, abs=1e-4)
    assert scores["judge.answer_correctness"] == pytest.approx(0.75 * 2 / 3 + 0.25 * scores["answer.semantic_similarity"], abs=1e-4)
    assert scores["judge.context_relevance"] == 0.5
    assert summary["config"]["judge"] == {"model": MODEL_ID, "prompt_hash": prompt_hash(), "temperature": 0.0}
    assert list(summary["metrics"])[-3:] == ["judge.faithfulness", "judge.answer_correctness", "judge.context_relevance"]
    faithfulness, correctness, relevance = (r.messages[0]["content"] for r in scripted_llm.requests)
    assert "Statements:" in faithfulness and item.reference in correctness and item.user_input in relevance
    assert all(r.body["temperature"] == 0.0 for r in scripted_llm.requests)


@pytest.mark.integration
def test_a_judge_that_rambles_leaves_its_metrics_out_and_no_endpoint_means_no_judge(scripted_llm, seed_index, embedder,
                                                                                      pipeline, tmp_path):
    from llm_servers import Reply, pipeline_for
    from rag.factory import build_judge

    pipe = pipeline_for(seed_index, embedder, scripted_llm.base_url, store=pipeline.store, mode="extractive")
    scripted_llm.always(Reply("I think it is mostly fine."))
    item = next(i for i in load_golden(Path(__file__).resolve().parents[1] / "eval" / "golden.jsonl") if i.answerable)
    Evaluator(pipe, build_judge(pipe.settings, pipe.llm_provider)).run([item], tmp_path / "run", "extractive")
    (row,) = read_results(tmp_path / "run" / "results.jsonl")
    assert not [k for k in row["scores"] if k.startswith("judge.")] and "answer.f1" in row["scores"]
    local = pipeline_for(seed_index, embedder, None, store=pipeline.store)
    assert build_judge(local.settings, local.llm_provider) is None  # auto: never the bundled model unless asked


PASSAGE = ("For IPv6 networks, the suffix is ip6.arpa. As such, the 2001:0bc8:31a0::/48 network would use a zone named\n\n"
           "0.a.1.3.8.c.b.0.1.0.0.2.ip6.arpa.\n\nA zone file lists the records.")


def quoted(text: str, marker: int = 1) -> Sentence:
    start = PASSAGE.index(text)
    return Sentence(text, [marker], True, spans=[PassageSpan(marker, start, start + len(text))])


def test_an_answer_that_stops_mid_sentence_is_counted_unless_what_finishes_it_follows():
    cut = "As such, the 2001:0bc8:31a0::/48 network would use a zone named"
    sources = {1: PASSAGE, 2: PASSAGE}
    assert stops_mid_sentence([quoted(cut)], sources) == 1.0  # the answer ends where the sentence does not
    assert stops_mid_sentence([quoted(cut), quoted("A zone file lists the records.")], sources) == 1.0  # skips what finishes it
    assert stops_mid_sentence([quoted(cut), quoted("0.a.1.3.8.c.b.0.1.0.0.2.ip6.arpa.", 2)], sources) == 1.0  # another source
    assert stops_mid_sentence([quoted(cut), quoted("0.a.1.3.8.c.b.0.1.0.0.2.ip6.arpa.")], sources) == 0.0
    assert stops_mid_sentence([quoted("For IPv6 networks, the suffix is ip6.arpa.")], sources) == 0.0
    assert stops_mid_sentence([Sentence("$ dig -x 2001:bc8::1", [1], True)], sources) == 0.0  # a command, not prose
    assert stops_mid_sentence([Sentence("Russia would lend Belarus $1.5 billion, and", [1], True)], sources) == 1.0  # a model's cut answer


def test_a_line_of_a_code_block_or_table_is_not_a_sentence_that_stops():
    block = "For example, try the following\n\n$ script\nScript started, file is typescript\n\nThe log is a file named"
    sources = {1: block}

    def of_block(text: str) -> Sentence:
        start = block.index(text)
        return Sentence(text, [1], True, spans=[PassageSpan(1, start, start + len(text))])

    assert stops_mid_sentence([of_block("Script started, file is typescript")], sources) == 0.0  # a line after "$ script"
    assert stops_mid_sentence([of_block("$ script\nScript started, file is typescript")], sources) == 0.0  # two lines
    assert stops_mid_sentence([of_block("The log is a file named")], sources) == 1.0  # prose after the block still counts
    assert stops_mid_sentence([of_block("For example, try the following")], sources) == 1.0  # and before it
