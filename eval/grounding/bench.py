"""The grounding check's benchmark: true sentences and paraphrases must pass, perturbed ones must not.

    python eval/grounding/bench.py [--index-root DIR] [--half tune|report] [--out FILE]

For each answerable golden question of the development collections (and the seeds), the
passage holding its reference sentence is the source. Sentences checked against it:
- the reference sentence itself (quoted) and the golden answer (a paraphrase): should pass;
- the golden answer with a number changed, with a name swapped for one from another question,
  with an invented clause appended (taken from another collection's answers), and negated:
  should fail.
Prints the share passed per kind, and the two headline figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))
sys.path.insert(0, str(ROOT / "eval" / "policy"))

from fit import halves  # noqa: E402
from report import COLLECTIONS, rag  # noqa: E402
from rag.citations import facts_in  # noqa: E402
from rag.metrics import passage_contains  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402
from rag.settings import Settings  # noqa: E402

AUXILIARY = re.compile(r"\b(is|are|was|were|can|should|will|must|has|have|does|do|did|would|could)\b")
NUMBER = re.compile(r"\b\d+\b")
TRUE_KINDS = ("quoted", "paraphrase")


def perturbations(answer: str, other_name: str | None, other_clause: str) -> dict[str, str]:
    out = {"invented clause": f"{answer.rstrip('. ')}, and {other_clause[0].lower()}{other_clause[1:].rstrip('. ')}."}
    number = NUMBER.search(answer)
    if number:
        out["number changed"] = answer[: number.start()] + str(int(number.group()) * 2 + 3) + answer[number.end():]
    names = sorted(n for n in facts_in(answer) if not n[0].isdigit())
    if names and other_name and other_name not in answer:
        out["name swapped"] = re.sub(rf"\b{re.escape(names[0])}\b", other_name, answer, count=1)
    aux = AUXILIARY.search(answer)
    if aux and " not " not in answer:
        out["negated"] = answer[: aux.end()] + " not" + answer[aux.end():]
    return out


def cases(name: str, index: Path, half: str, others: list[str]) -> tuple[Pipeline, list[tuple[str, str, str]]]:
    """The collection's pipeline, and (kind, sentence, passage) for every answerable question of its half."""
    docs = ROOT / "seeds" if name == "seeds" else ROOT / "eval" / "collections" / name / "docs"
    if not (index / "CURRENT").exists():
        rag("index", "--seeds", str(docs), "--index", str(index), "--rebuild")
    pipeline = build_pipeline(Settings(_env_file=None, index_dir=index))
    items = [i for i in halves(name)[half] if i.answerable and i.reference_contexts and i.reference]
    names = sorted({n for i in items for n in facts_in(i.reference) if not n[0].isdigit()})
    out = []
    for k, item in enumerate(items):
        passage = next((c.text for c in pipeline.store.chunks if passage_contains(c.text, item.reference_contexts)), None)
        if passage is None:
            continue
        out += [("quoted", item.reference_contexts[0], passage), ("paraphrase", item.reference, passage)]
        other_name = next((n for n in names[k % max(len(names), 1):] + names if n not in passage), None)
        for kind, sentence in perturbations(item.reference, other_name, others[k % len(others)]).items():
            out.append((kind, sentence, passage))
    return pipeline, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--half", choices=("tune", "report"), default="report")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = ["seeds", *COLLECTIONS]
    answers = {n: [i.reference for i in halves(n)[args.half] if i.answerable and i.reference] for n in names}
    checker = None  # the first collection's pipeline lends its grounding check
    passed: dict[str, list[bool]] = {}
    for n in names:
        others = [a for m in names if m != n for a in answers[m] if len(a.split()) >= 5]
        pipeline, found = cases(n, args.index_root / n, args.half, others)
        checker = checker or pipeline.grounding
        for kind, sentence, passage in found:
            passed.setdefault(kind, []).append(checker.supports(sentence, [passage]))
    print("| sentence | n | passed |\n| --- | --- | --- |")
    for kind, values in passed.items():
        print(f"| {kind} | {len(values)} | {sum(values) / len(values):.3f} |")
    true = [v for k in TRUE_KINDS for v in passed.get(k, [])]
    false = [v for k, vs in passed.items() if k not in TRUE_KINDS for v in vs]
    summary = {"true_passed": sum(true) / len(true), "perturbed_caught": 1 - sum(false) / len(false), "n": len(true) + len(false)}
    print(f"\ntrue sentences and paraphrases passed: {summary['true_passed']:.3f}; perturbed sentences caught: {summary['perturbed_caught']:.3f}")
    if args.out:
        args.out.write_text(json.dumps({"by_kind": {k: sum(v) / len(v) for k, v in passed.items()}} | summary, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
