"""Evaluation reports: report.md and a self-contained report.html with plots (PNG inlined)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from rag.files import atomic_write

HEADLINE = ("retrieval.hit@1", "retrieval.hit@5", "retrieval.mrr", "answer.f1", "answer.semantic_similarity",
            "citation.precision", "citation.recall", "refusal.accuracy")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(summaries: dict[str, dict], results: list[dict]) -> dict[str, str]:
    """Metric bars by mode, answer F1 by question type, latency histogram: name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(summaries))
    for i, (mode, summary) in enumerate(summaries.items()):
        values = [summary["metrics"].get(k) or 0 for k in HEADLINE]
        ax.bar([x + i * width for x in range(len(HEADLINE))], values, width, label=mode)
    ax.set_xticks([x + width * (len(summaries) - 1) / 2 for x in range(len(HEADLINE))], HEADLINE, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Metrics by mode")
    ax.legend()
    out["Metrics by mode"] = _png(fig)
    plt.close(fig)

    summary = next(iter(summaries.values()))
    types = summary.get("by_type", {})
    if types:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        names = list(types)
        ax.bar(names, [types[t].get("answer.f1", 0) for t in names], label="answer F1")
        ax.plot(names, [types[t].get("refusal.correct", 0) for t in names], "o", color="black", label="refusal correct")
        ax.set_ylim(0, 1)
        ax.set_title("Scores by question type")
        ax.legend()
        out["Scores by question type"] = _png(fig)
        plt.close(fig)

    latencies = [r["latency_ms"] for r in results if r.get("latency_ms") is not None]
    if latencies:
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.hist(latencies, bins=20)
        ax.set_xlabel("latency per question (ms)")
        ax.set_title("Latency")
        out["Latency"] = _png(fig)
        plt.close(fig)
    return out


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _interval(bounds: list[float] | None) -> str:
    return "–" if not bounds else f"[{_fmt(bounds[0])}, {_fmt(bounds[1])}]"


def metrics_table(summary: dict) -> list[str]:
    """The headline metrics with their bootstrap intervals, as Markdown table lines."""
    intervals = summary.get("intervals", {})
    return ["| metric | value | 95% interval (bootstrap) |", "| --- | --- | --- |",
            *(f"| {k} | {_fmt(v)} | {_interval(intervals.get(k))} |" for k, v in summary["metrics"].items())]


def markdown(summary: dict, results: list[dict]) -> str:
    lines = [f"# Evaluation: {summary['n']} questions, mode {summary['mode']}", "", *metrics_table(summary)]
    lines += ["", "## By question type", "", "| type | n | answer F1 | hit@5 | refusal correct |", "| --- | --- | --- | --- | --- |"]
    for t, v in summary.get("by_type", {}).items():
        lines.append(f"| {t} | {v['n']} | {_fmt(v.get('answer.f1'))} | {_fmt(v.get('retrieval.hit@5'))} | {_fmt(v.get('refusal.correct'))} |")
    lines += ["", "## Questions", "", "| id | question | refused | F1 | hit@5 | answer |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s = r["scores"]
        answer = r["answer"].replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {r['id']} | {r['user_input'].replace('|', '/')} | {r['refused']} | {_fmt(s.get('answer.f1'))} | {_fmt(s.get('retrieval.hit@5'))} | {answer} |")
    return "\n".join(lines) + "\n"


def html_report(summary: dict, results: list[dict], images: dict[str, str]) -> str:
    e = html.escape
    intervals = summary.get("intervals", {})
    metric_rows = "".join(f"<tr><td>{e(k)}</td><td>{_fmt(v)}</td><td>{_interval(intervals.get(k))}</td></tr>"
                          for k, v in summary["metrics"].items())
    figures = "".join(f'<h2>{e(name)}</h2><img alt="{e(name)}" src="data:image/png;base64,{data}">' for name, data in images.items())
    rows = []
    for r in results:
        s = r["scores"]
        passages = "".join(f"<div class=p><b>[{e(k)}]</b> {e(v)}</div>" for k, v in (r.get("cited_passages") or {}).items())
        rows.append(
            f"<tr><td>{e(r['id'])}</td><td>{e(r['user_input'])}</td><td>{e(r['reference'])}</td>"
            f"<td>{e(r['answer'])}{passages}</td><td>{'yes' if r['refused'] else ''}</td>"
            f"<td>{_fmt(s.get('answer.f1'))}</td><td>{_fmt(s.get('retrieval.hit@5'))}</td><td>{_fmt(s.get('citation.recall'))}</td></tr>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}.p{{color:#555;font-size:12px;margin-top:4px}}</style>
</head><body><h1>Evaluation: {summary['n']} questions, mode {e(summary['mode'])}</h1>
<table><tr><th>metric</th><th>value</th><th>95% interval (bootstrap)</th></tr>{metric_rows}</table>{figures}
<h2>Questions</h2><table><tr><th>id</th><th>question</th><th>reference</th><th>answer and cited passages</th><th>refused</th>
<th>F1</th><th>hit@5</th><th>citation recall</th></tr>{''.join(rows)}</table></body></html>"""


def write_reports(summary: dict, results: list[dict], out_dir: Path) -> None:
    images = plots({summary["mode"]: summary}, results)
    atomic_write(out_dir / "report.md", markdown(summary, results).encode("utf-8"))
    atomic_write(out_dir / "report.html", html_report(summary, results, images).encode("utf-8"))


def comparison_markdown(comparison: dict) -> str:
    lines = [f"# {comparison['a']} ({comparison['mode_a']}) → {comparison['b']} ({comparison['mode_b']})", "",
             "| metric | A | B | delta | on the questions both answered (n) | 95% interval of the delta (paired bootstrap) | p |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {_fmt(v['a'])} | {_fmt(v['b'])} | {_fmt(v['delta'])} | {_fmt(v.get('paired_delta'))} ({v.get('paired', 0)}) "
              f"| {_interval([v['low'], v['high']] if v.get('low') is not None else None)} | {_fmt(v.get('p'))} |"
              for k, v in comparison["metrics"].items()]
    lines += ["", "## Changed questions (regressions first)", "", "| id | metric | A | B | question |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c['id']} | {c['metric']} | {_fmt(c['a'])} | {_fmt(c['b'])} | {c['user_input']} |" for c in comparison["changes"]]
    return "\n".join(lines) + "\n"


def comparison_plot(comparison: dict, names: tuple[str, ...]) -> str | None:
    """The headline deltas B - A over the paired questions, with their bootstrap intervals: base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, comparison["metrics"][k]) for k in names if comparison["metrics"].get(k, {}).get("paired_delta") is not None]
    if not rows:
        return None
    deltas = [v["paired_delta"] for _, v in rows]
    below = [d - v["low"] for (_, v), d in zip(rows, deltas)]
    above = [v["high"] - d for (_, v), d in zip(rows, deltas)]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.barh([k for k, _ in rows], deltas, xerr=[below, above], color=["#2e7d32" if d >= 0 else "#c62828" for d in deltas])
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_xlabel("B - A on the questions both runs answered, with the 95% paired bootstrap interval")
    image = _png(fig)
    plt.close(fig)
    return image
