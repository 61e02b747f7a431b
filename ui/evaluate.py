"""The Evaluate tab: run a golden set through the same pipeline, read the per-question table,
grade answers by hand, and see how the human grades agree with the automatic scores."""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path

import gradio as gr

from rag.errors import RagError
from rag.evaluation import Evaluator, agreement, read_results
from rag.feedback import GRADES, FeedbackStore
from rag.files import atomic_write
from rag.golden import load_golden
from rag.pipeline import Pipeline
from rag.settings import Settings
from rag.report import plots

EVAL_DIR = Path("eval")
COLUMNS = ["id", "type", "question", "reference", "answer", "refused", "F1", "semantic", "hit@5", "citation recall"]


def golden_files() -> list[str]:
    return sorted(str(p) for p in EVAL_DIR.glob("*.jsonl"))


def agreement_markdown(results: list[dict], grades: dict[str, dict], settings: Settings) -> str:
    found = agreement(results, grades, settings)
    if not found["n"]:
        return "No grades yet: pick a question, grade it, and the agreement with the automatic scores appears here."
    kappa = "–" if found["kappa"] is None else f"{found['kappa']:.2f}"
    lines = [f"**{found['n']} graded**; human and automatic verdicts agree on **{found['agree']}/{found['n']}**, "
             f"Cohen's kappa **{kappa}** (automatic: correct refusal, or F1 ≥ {settings.correct_f1}, "
             f"or similarity ≥ {settings.correct_similarity}).", ""]
    if found["disagreements"]:
        lines += ["**Disagreements (review these first):**", "", "| id | question | human | automatic |", "| --- | --- | --- | --- |"]
        lines += [f"| {d['id']} | {html.escape(d['user_input'])} | {d['human']} | {d['automatic']} |" for d in found["disagreements"]]
        lines.append("")
    lines += ["| metric | Spearman correlation with the grades |", "| --- | --- |"]
    lines += [f"| {k} | {'–' if v is None else f'{v:.2f}'} |" for k, v in found["correlations"].items()]
    return "\n".join(lines)


def table(results: list[dict]) -> list[list]:
    def f(x):
        return "" if x is None else round(x, 3)

    return [[r["id"], r.get("type", ""), r["user_input"], r["reference"], r["answer"], r["refused"],
             f(r["scores"].get("answer.f1")), f(r["scores"].get("answer.semantic_similarity")),
             f(r["scores"].get("retrieval.hit@5")), f(r["scores"].get("citation.recall"))] for r in results]


def build_evaluate_tab(pipeline: Pipeline, feedback: FeedbackStore) -> None:
    runs_dir = EVAL_DIR / "runs"
    run_id = gr.State("")
    with gr.Row():
        golden = gr.Dropdown(golden_files(), value=(golden_files() or [None])[0], label="Golden set (eval/*.jsonl)")
        mode = gr.Radio(["extractive", "llm"], value="extractive", label="Mode")
        limit = gr.Number(value=0, precision=0, label="Only the first N questions (0: all)")
        run = gr.Button("Run evaluation", variant="primary")
    summary = gr.Markdown()
    figures = gr.HTML()
    questions = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="Per question")
    with gr.Accordion("Grade answers", open=True):
        with gr.Row():
            question = gr.Dropdown([], label="Question")
            grade = gr.Radio(list(GRADES), label="Grade")
            comment = gr.Textbox(label="Comment")
            save = gr.Button("Save grade")
        agreement = gr.Markdown()
        export = gr.DownloadButton("Export grades (CSV)")

    def do_run(golden_path: str, mode_value: str, limit_value: float, progress=gr.Progress()):
        if not golden_path or Path(golden_path).resolve().parent != EVAL_DIR.resolve():
            raise gr.Error("Choose a golden set from the eval folder.", print_exception=False)
        try:
            items = load_golden(Path(golden_path))
            if limit_value and limit_value > 0:
                items = items[: int(limit_value)]
            rid = f"{time.strftime('%Y%m%d-%H%M%S')}-{mode_value}"
            result = Evaluator(pipeline).run(items, runs_dir / rid, mode_value,
                                             progress=lambda done, total: progress((done, total), unit="questions"))
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        results = read_results(runs_dir / rid / "results.jsonl")
        metrics = "\n".join(f"| {k} | {'–' if v is None else v} |" for k, v in result["metrics"].items())
        images = "".join(f'<h4>{html.escape(k)}</h4><img style="max-width:100%" src="data:image/png;base64,{v}">'
                         for k, v in plots({mode_value: result}, results).items())
        text = f"**Run {rid}**: {result['n']} questions, mode {mode_value}\n\n| metric | value |\n| --- | --- |\n{metrics}"
        return rid, text, images, table(results), gr.update(choices=[r["id"] for r in results], value=None), agreement_markdown(results, {}, pipeline.settings)

    def do_grade(rid: str, qid: str, grade_value: str, comment_value: str):
        if not rid:
            raise gr.Error("Run an evaluation first.", print_exception=False)
        if not qid or grade_value not in GRADES:
            raise gr.Error("Choose a question and a grade.", print_exception=False)
        feedback.set_grade(rid, qid, grade_value, (comment_value or "")[:2000])
        gr.Info(f"Saved: {qid} is {grade_value}.")
        return agreement_markdown(read_results(runs_dir / rid / "results.jsonl"), feedback.grades(rid), pipeline.settings), ""

    def do_export(rid: str):
        if not rid:
            raise gr.Error("Run an evaluation first.", print_exception=False)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["run_id", "question_id", "grade", "comment"])
        for qid, g in sorted(feedback.grades(rid).items()):
            writer.writerow([rid, qid, g["grade"], g["comment"]])
        path = runs_dir / rid / "grades.csv"
        atomic_write(path, buffer.getvalue().encode("utf-8"))
        return str(path)

    run.click(do_run, [golden, mode, limit], [run_id, summary, figures, questions, question, agreement], api_name=False)
    save.click(do_grade, [run_id, question, grade, comment], [agreement, comment], api_name=False)
    export.click(do_export, run_id, export, api_name=False)
