"""Probes of one kind of answer each, written after the rule they check (not golden sets: nothing is tuned on them).

    python eval/probes/run.py [--index-root DIR]

- `notes.jsonl`: 24 questions on the psycopg2 and Sphinx docs answered by a short note ("New in
  version 2.5.", "Defaults to True."), its first reference sentence; with and without the rule that
  quotes a short note with the unit it finishes (`is_short_statement` in `rag/extractive.py`).
- `signatures.jsonl`: 16 questions on the Requests, psycopg2 and Sphinx docs answered by a
  documented function's signature alone, its first reference sentence (signatures are answer units
  since the reader made them terms).

Per probe and kind of question: how many extractive answers hold the first reference sentence (the
note or the signature), how many hold any reference sentence, and how many were refused or flagged.
The collections' indexes are made under --index-root as `eval/collections/report.py` makes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))

from report import rag  # noqa: E402
from rag import extractive  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.metrics import holds_key_fact  # noqa: E402
from rag.settings import Settings  # noqa: E402

PROBES = {"notes": {"with the rule": {}, "without it": {"is_short_statement": lambda unit: False}},
          "signatures": {"": {}}}


def measure(items: list[dict], index_root: Path) -> dict[str, list[tuple]]:
    """Per kind of question: (holds the first reference sentence, holds any, refused, flagged) per question."""
    by_kind: dict[str, list[tuple]] = {}
    for name in sorted({i["collection"] for i in items}):
        index = index_root / name
        if not (index / "CURRENT").exists():
            rag("index", "--seeds", str(ROOT / "eval" / "collections" / name / "docs"), "--index", str(index), "--rebuild")
        pipeline = build_pipeline(Settings(_env_file=None, index_dir=index, mode="extractive"))
        for item in (i for i in items if i["collection"] == name):
            answer = pipeline.ask(item["user_input"], mode="extractive")
            first = not answer.refused and holds_key_fact(answer.answer, item["reference_contexts"][:1]) == 1.0
            anything = not answer.refused and holds_key_fact(answer.answer, item["reference_contexts"]) == 1.0
            by_kind.setdefault(item["type"], []).append((first, anything, answer.refused, answer.low_confidence))
        pipeline.close()
    return by_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    args = parser.parse_args()
    print("| probe | kind | questions | first reference sentence in the answer | any reference sentence | refused | flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for probe, variants in PROBES.items():
        items = [json.loads(line) for line in (ROOT / "eval" / "probes" / f"{probe}.jsonl").read_text().splitlines()]
        for label, patches in variants.items():
            with mock.patch.multiple(extractive, **patches) if patches else contextlib.nullcontext():
                by_kind = measure(items, args.index_root)
            for kind, rows in by_kind.items():
                counts = [sum(row[k] for row in rows) for k in range(4)]
                name = f"{probe} ({label})" if label else probe
                print(f"| {name} | {kind} | {len(rows)} | " + " | ".join(str(c) for c in counts) + " |", flush=True)


if __name__ == "__main__":
    main()
