"""The Evaluate tab: run a golden set (from eval/ or uploaded) or score an answers file from another
system, reopen any earlier run, read each question with its answer, sources, trace and scores,
grade it, see the agreement with the automatic verdict, and compare two runs with intervals.
Every figure comes from `rag.evaluation`; this module only renders."""

from __future__ import annotations

import csv
import html
import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from rag.errors import RagError
from rag.evaluation import HEADLINE, RESULTS, SUMMARY, Evaluator, agreement, compare_runs, read_answers, read_results, run_history
from rag.factory import build_judge
from rag.feedback import GRADES, FeedbackStore
from rag.files import atomic_write
from rag.golden import read_golden
from rag.pipeline import Pipeline
from rag.report import comparison_markdown, comparison_plot, metrics_table, plots
from rag.settings import Settings
from ui.render import article_url

EVAL_DIR = Path("eval")
COLUMNS = ["id", "type", "question", "reference", "answer", "refused", "F1", "semantic", "hit@5", "citation recall"]
HISTORY_COLUMNS = ["run", "finished", "golden", "mode", "model", "index", "n", "key fact", "F1", "hit@5", "false refusals",
                   "unanswerable flagged"]  # the HEADLINE metrics, short


def golden_files() -> list[str]:
    return sorted(str(p) for p in [*EVAL_DIR.glob("*.jsonl"), *EVAL_DIR.glob("uploaded/*.jsonl"), *EVAL_DIR.glob("uploaded/*.csv")])


def runs_dir() -> Path:
    return EVAL_DIR / "runs"


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


def history_rows() -> list[list]:
    return [[r["run"], r["finished"], r["golden"] or "", r["mode"], r["model"] or "", r["index"] or "", r["n"],
             *("" if r[k] is None else r[k] for k in HEADLINE)] for r in run_history(runs_dir())]


def summary_markdown(run_id: str, summary: dict) -> str:
    golden = summary.get("config", {}).get("golden") or "?"
    return "\n".join([f"**Run {run_id}**: {summary['n']} questions from {golden}, mode {summary['mode']}", "",
                      *metrics_table(summary)])


def question_markdown(row: dict) -> str:
    """One question as an evaluator reads it: the answer with its citations linked, the sources, the scores."""
    answer = html.escape(row["answer"])
    for c in row.get("citations") or []:
        if c.get("doc_id"):
            link = f'<a href="{article_url(c["doc_id"], c.get("chunk_id"))}" target="_blank">[{c["marker"]}]</a>'
            answer = answer.replace(f"[{c['marker']}]", link)
    passages = "".join(f"<li><b>[{html.escape(k)}]</b> {html.escape(v)}</li>" for k, v in (row.get("cited_passages") or {}).items())
    scores = "".join(f"<li>{html.escape(k)}: {round(v, 3)}</li>" for k, v in sorted(row["scores"].items()))
    return (f"<h4>{html.escape(row['id'])}: {html.escape(row['user_input'])}</h4><p><b>Reference:</b> {html.escape(row['reference'])}</p>"
            f"<p><b>Answer{' (refused)' if row['refused'] else ''}:</b> {answer}</p>"
            f"<p><b>Cited passages:</b></p><ul>{passages or '<li>none</li>'}</ul><p><b>Scores:</b></p><ul>{scores}</ul>")


def build_evaluate_tab(pipeline: Pipeline, feedback: FeedbackStore) -> tuple[Callable, list]:
    settings = pipeline.settings
    run_id = gr.State("")
    with gr.Row():
        golden = gr.Dropdown(golden_files(), value=(golden_files() or [None])[0], label="Golden set (eval/*.jsonl, or uploaded)",
                             allow_custom_value=False, scale=3)
        upload = gr.File(file_types=[".jsonl", ".csv"], label="Upload a golden set (JSONL or CSV)", scale=2)
    golden_status = gr.Markdown()
    with gr.Row():
        mode = gr.Radio(["extractive", "llm"], value="extractive", label="Mode")
        limit = gr.Number(value=0, precision=0, label="Only the first N questions (0: all)")
        run = gr.Button("Run evaluation", variant="primary")
    with gr.Row():
        answers = gr.File(file_types=[".jsonl"], label="Score answers from another system (JSONL: id, response, citations…)", scale=3)
        score = gr.Button("Score the answers file", scale=1)
    with gr.Accordion("Run history", open=True):
        history = gr.Dataframe(headers=HISTORY_COLUMNS, value=history_rows, interactive=False, label="Runs")
        with gr.Row():
            opened = gr.Dropdown([], label="Open a run", scale=2)
            open_button = gr.Button("Open", scale=1)
            first = gr.Dropdown([], label="Compare run A", scale=2)
            second = gr.Dropdown([], label="with run B", scale=2)
            compare = gr.Button("Compare", scale=1)
    comparison = gr.Markdown()
    comparison_chart = gr.HTML()
    summary = gr.Markdown()
    figures = gr.HTML()
    questions = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="Per question")
    with gr.Accordion("One question: answer, sources, trace, scores, grade", open=True):
        question = gr.Dropdown([], label="Question")
        detail = gr.HTML()
        trace = gr.JSON(label="Trace")
        with gr.Row():
            grade = gr.Radio(list(GRADES), label="Grade")
            comment = gr.Textbox(label="Comment")
            save = gr.Button("Save grade")
        agreement_view = gr.Markdown()
        export = gr.DownloadButton("Export grades (CSV)")

    def run_choices():
        names = [r[0] for r in history_rows()]
        return history_rows(), *(gr.update(choices=names) for _ in range(3))

    def checked_golden(path_value: str):
        if not path_value or Path(path_value).resolve().parent not in (EVAL_DIR.resolve(), (EVAL_DIR / "uploaded").resolve()):
            raise gr.Error("Choose a golden set from the eval folder, or upload one.", print_exception=False)
        try:
            items, problems = read_golden(Path(path_value))
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        if not items:
            raise gr.Error(f"No usable question in {Path(path_value).name}: {problems[0] if problems else 'empty'}", print_exception=False)
        return items, problems

    def problems_markdown(name: str, n: int, problems: list[str]) -> str:
        text = f"**{name}**: {n} questions"
        if problems:
            text += f"; {len(problems)} line(s) skipped:\n\n" + "\n".join(f"- {html.escape(p)}" for p in problems)
        return text

    def do_upload(file_path: str | None):
        if not file_path:
            return gr.update(), ""
        source = Path(file_path)
        target = EVAL_DIR / "uploaded" / f"{time.strftime('%Y%m%d-%H%M%S')}-{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        items, problems = checked_golden(str(target))
        return gr.update(choices=golden_files(), value=str(target)), problems_markdown(source.name, len(items), problems)

    def show_run(rid: str):
        folder = runs_dir() / rid
        try:
            result = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            results = read_results(folder / RESULTS)
        except (OSError, json.JSONDecodeError) as exc:
            raise gr.Error(f"run {rid} cannot be read ({exc.__class__.__name__})", print_exception=False) from None
        images = "".join(f'<h4>{html.escape(k)}</h4><img style="max-width:100%" src="data:image/png;base64,{v}">'
                         for k, v in plots({result["mode"]: result}, results).items())
        return (rid, summary_markdown(rid, result), images, table(results), gr.update(choices=[r["id"] for r in results], value=None),
                agreement_markdown(results, feedback.grades(rid), settings))

    def do_run(golden_path: str, mode_value: str, limit_value: float, progress=gr.Progress()):
        items, problems = checked_golden(golden_path)
        if limit_value and limit_value > 0:
            items = items[: int(limit_value)]
        rid = f"{time.strftime('%Y%m%d-%H%M%S')}-{mode_value}"
        try:
            evaluator = Evaluator(pipeline, build_judge(settings, pipeline.llm_provider))
            evaluator.run(items, runs_dir() / rid, mode_value, golden=Path(golden_path).name,
                          progress=lambda done, total: progress((done, total), unit="questions"))
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (*show_run(rid), problems_markdown(Path(golden_path).name, len(items), problems), *run_choices())

    def do_score(golden_path: str, answers_path: str | None):
        if not answers_path:
            raise gr.Error("Upload an answers file first.", print_exception=False)
        items, problems = checked_golden(golden_path)
        rid = f"{time.strftime('%Y%m%d-%H%M%S')}-external"
        try:
            Evaluator(pipeline).score(items, read_answers(Path(answers_path)), runs_dir() / rid, golden=Path(golden_path).name)
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (*show_run(rid), problems_markdown(Path(golden_path).name, len(items), problems), *run_choices())

    def do_open(rid: str | None):
        if not rid:
            raise gr.Error("Choose a run to open.", print_exception=False)
        return show_run(rid)

    def do_compare(a: str | None, b: str | None):
        if not a or not b:
            raise gr.Error("Choose two runs to compare.", print_exception=False)
        try:
            found = compare_runs(runs_dir() / a, runs_dir() / b)
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        image = comparison_plot(found, HEADLINE)
        return comparison_markdown(found), f'<img alt="metric deltas" style="max-width:100%" src="data:image/png;base64,{image}">' if image else ""

    def do_question(rid: str, qid: str | None):
        if not rid or not qid:
            return "", None, None, ""
        row = next((r for r in read_results(runs_dir() / rid / RESULTS) if r["id"] == qid), None)
        if row is None:
            return "", None, None, ""
        given = feedback.grades(rid).get(qid, {})
        return question_markdown(row), row.get("trace") or {}, given.get("grade"), given.get("comment", "")

    def do_grade(rid: str, qid: str, grade_value: str, comment_value: str):
        if not rid:
            raise gr.Error("Run or open an evaluation first.", print_exception=False)
        if not qid or grade_value not in GRADES:
            raise gr.Error("Choose a question and a grade.", print_exception=False)
        feedback.set_grade(rid, qid, grade_value, (comment_value or "")[:2000])
        gr.Info(f"Saved: {qid} is {grade_value}.")
        return agreement_markdown(read_results(runs_dir() / rid / RESULTS), feedback.grades(rid), settings)

    def do_export(rid: str):
        if not rid:
            raise gr.Error("Run or open an evaluation first.", print_exception=False)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["run_id", "question_id", "grade", "comment"])
        for qid, g in sorted(feedback.grades(rid).items()):
            writer.writerow([rid, qid, g["grade"], g["comment"]])
        path = runs_dir() / rid / "grades.csv"
        atomic_write(path, buffer.getvalue().encode("utf-8"))
        return str(path)

    shown = [run_id, summary, figures, questions, question, agreement_view]
    history_outputs = [history, opened, first, second]
    upload.upload(do_upload, upload, [golden, golden_status], api_name=False)
    run.click(do_run, [golden, mode, limit], [*shown, golden_status, *history_outputs], api_name=False)
    score.click(do_score, [golden, answers], [*shown, golden_status, *history_outputs], api_name=False)
    open_button.click(do_open, opened, shown, api_name=False)
    compare.click(do_compare, [first, second], [comparison, comparison_chart], api_name=False)
    question.change(do_question, [run_id, question], [detail, trace, grade, comment], api_name=False)
    save.click(do_grade, [run_id, question, grade, comment], agreement_view, api_name=False)
    export.click(do_export, run_id, export, api_name=False)
    return run_choices, history_outputs  # for the page's load event: the history as it is now
