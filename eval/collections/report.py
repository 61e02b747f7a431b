"""Index each development collection and measure retrieval on its golden set, both halves.

    python eval/collections/report.py [--collections a,b] [--index-root DIR] [--out FILE]

The golden sets were split before tuning: `golden.tune.jsonl` is what changes are tried on,
`golden.report.jsonl` what the README reports. The seeds' own golden set is measured too.
Prints a markdown table; `--out` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COLLECTIONS = ["debian-reference", "debian-handbook", "r-manuals", "printed-pdf", "requests-docs", "sphinx-docs", "debian-policy", "psycopg-docs"]
HALVES = ["tune", "report"]


def rag(*args: str) -> str:
    command = [sys.executable, "-m", "rag", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:1])} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return done.stdout


def measure(name: str, docs: Path, goldens: dict[str, Path], index: Path) -> dict:
    started = time.perf_counter()
    rag("index", "--seeds", str(docs), "--index", str(index), "--rebuild")
    seconds = time.perf_counter() - started
    current = (index / "CURRENT").read_text(encoding="utf-8").strip()  # the version just built
    n_chunks = sum(1 for _ in open(index / current / "chunks.jsonl", encoding="utf-8"))
    row = {"collection": name, "index_seconds": round(seconds, 1), "passages": n_chunks}
    for half, golden in goldens.items():
        table = json.loads(rag("eval", "retrieval", "--golden", str(golden), "--index", str(index), "--json"))
        row[half] = table["hybrid"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default=",".join(["seeds", *COLLECTIONS]))
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name in args.collections.split(","):
        if name == "seeds":
            docs, goldens = ROOT / "seeds", {"all": ROOT / "eval" / "golden.jsonl"}
        else:
            docs = HERE / name / "docs"
            if not docs.is_dir():
                sys.exit(f"{docs}: missing; build the collections first: python3 eval/collections/build.py")
            goldens = {half: HERE / name / f"golden.{half}.jsonl" for half in HALVES}
        rows.append(measure(name, docs, goldens, args.index_root / name))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print("| collection | half | passages | index s | answer kept | passage @1 | passage in top 5 | article @1 | MRR |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for half in ("all", *HALVES):
            if half in row:
                r = row[half]
                print(f"| {row['collection']} | {half} | {row['passages']} | {row['index_seconds']} | {r.get('answer kept', float('nan')):.3f} "
                      f"| {r['passage@1']:.3f} | {r['passage@5']:.3f} | {r['doc_hit@1']:.3f} | {r['mrr']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
