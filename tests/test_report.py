"""Reports: Markdown tables and a self-contained HTML page with the three plots."""

from __future__ import annotations

import re

from rag.report import comparison_markdown, html_report, markdown, plots, write_reports

SUMMARY = {"n": 2, "mode": "extractive", "config": {}, "metrics": {"retrieval.hit@5": 1.0, "answer.f1": 0.25, "latency.p50_ms": 12.0},
           "by_type": {"fact": {"n": 1, "answer.f1": 0.5}, "unanswerable": {"n": 1, "refusal.correct": 1.0}}}
RESULTS = [
    {"id": "q1", "user_input": "How much <b>?", "reference": "$1.5 billion", "answer": "It was $1.5 billion [1] <script>x</script>",
     "refused": False, "scores": {"answer.f1": 0.5}, "latency_ms": 10.0, "cited_passages": {"1": "loan of $1.5 billion"}},
    {"id": "q2", "user_input": "Who won?", "reference": "", "answer": "Not found", "refused": True, "scores": {}, "latency_ms": 14.0},
]


def test_plots_are_the_three_named_pngs():
    images = plots({"extractive": SUMMARY}, RESULTS)
    assert list(images) == ["Metrics by mode", "Scores by question type", "Latency"]
    assert all(re.fullmatch(r"[A-Za-z0-9+/=]+", data) and data.startswith("iVBOR") for data in images.values())


def test_html_is_self_contained_and_escapes_text(tmp_path):
    write_reports(SUMMARY, RESULTS, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "<script>" not in page and "&lt;script&gt;" in page and "How much &lt;b&gt;?" in page
    assert not re.search(r'(src|href)="https?://', page)
    assert "loan of $1.5 billion" in page


def test_markdown_tables():
    text = markdown(SUMMARY, RESULTS)
    assert "| retrieval.hit@5 | 1.000 |" in text
    assert "| fact | 1 | 0.500 |" in text
    assert "| q2 | Who won? | True |" in text


def test_comparison_lists_regressions_first():
    comparison = {"a": "A", "b": "B", "mode_a": "llm", "mode_b": "extractive",
                  "metrics": {"answer.f1": {"a": 0.5, "b": 0.25, "delta": -0.25}},
                  "changes": [{"id": "q1", "user_input": "x", "metric": "answer.f1", "a": 1.0, "b": 0.0, "delta": -1.0}]}
    text = comparison_markdown(comparison)
    assert "| answer.f1 | 0.500 | 0.250 | -0.250 |" in text and "| q1 | answer.f1 | 1.000 | 0.000 | x |" in text


def test_html_report_has_a_row_per_question():
    page = html_report(SUMMARY, RESULTS, {})
    assert page.count("<tr><td>q") == 2
