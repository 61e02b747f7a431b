"""Answer quality on every collection's halves: one extractive run each, the figures the README reports.

    python eval/policy/answers.py [--index-root DIR] [--runs DIR] [--mode extractive|llm]

Per collection and half: key facts in the answer (`answer.key_fact`: it quotes the reference
sentence or holds three quarters of its content words), the right article cited, false refusals,
answerable questions flagged low-confidence, unanswerable questions refused or flagged, answers
that stop mid-sentence (`answer.stops_mid_sentence`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))
sys.path.insert(0, str(ROOT / "eval" / "policy"))

from fit import halves  # noqa: E402
from report import COLLECTIONS, rag  # noqa: E402
from rag.evaluation import Evaluator  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.settings import Settings  # noqa: E402

COLUMNS = {"answer.key_fact": "key fact", "citation.right_article": "right article",
           "refusal.false_refusal_rate": "false refusals", "answer.low_confidence_rate": "answerable flagged",
           "refusal.unanswerable_flagged": "unanswerable refused or flagged",
           "answer.stops_mid_sentence": "answers that stop mid-sentence", "latency.p50_ms": "p50 ms"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--runs", type=Path, default=ROOT / "eval" / "runs" / "answers")
    parser.add_argument("--mode", default="extractive")
    parser.add_argument("--collections", default=",".join(["seeds", *COLLECTIONS]))
    parser.add_argument("--halves", default="tune,report", help="tune while trying a change; report for the README")
    args = parser.parse_args()
    print("| collection | half | n | " + " | ".join(COLUMNS.values()) + " |")
    print("|" + " --- |" * (len(COLUMNS) + 3))
    table = {}
    for name in args.collections.split(","):
        index = args.index_root / name
        if not (index / "CURRENT").exists():
            docs = ROOT / "seeds" if name == "seeds" else ROOT / "eval" / "collections" / name / "docs"
            rag("index", "--seeds", str(docs), "--index", str(index), "--rebuild")
        pipeline = build_pipeline(Settings(index_dir=index))
        for half, items in halves(name).items():
            if half not in args.halves.split(","):
                continue
            summary = Evaluator(pipeline).run(items, args.runs / args.mode / name / half, args.mode)
            figures = {label: summary["metrics"].get(key) for key, label in COLUMNS.items()}
            table[f"{name}/{half}"] = figures
            print(f"| {name} | {half} | {summary['n']} | " + " | ".join("–" if v is None else f"{v:.3f}" if v < 10 else f"{v:.0f}"
                                                                    for v in figures.values()) + " |")
        pipeline.close()
    (args.runs / args.mode / "table.json").write_text(json.dumps(table, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
