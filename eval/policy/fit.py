"""Fit the answer policy's logistic model on the tune halves; report the report halves; ablate each feature.

    python eval/policy/fit.py [--index-root DIR] [--write] [--out FILE]

Each collection (the seeds and the development collections) is indexed under --index-root
(reused when already there), every golden question is run through the real pipeline in
extractive mode with refusal switched off, and the policy's evidence features are read from
the answer's trace. The model is fitted on the tune halves pooled; the two thresholds are chosen
on the tune halves too (no false refusal, answerable questions flagged at most 15%);
the report halves are only measured. `--write` stores the model in rag/policy_model.json.
The seeds' golden set was never split before: its conversations alternate between the halves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))

from report import COLLECTIONS, rag  # noqa: E402
from rag.evaluation import Evaluator, group_conversations  # noqa: E402
from rag.golden import load_golden  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.policy import Evidence, PolicyModel  # noqa: E402
from rag.settings import Settings  # noqa: E402

MAX_FALSE_REFUSALS = 0.0  # refuse only below every answerable tune question: 3 % on the tune halves was 3.4 % on the report halves
MAX_FLAGGED = 0.15
C = 1.0  # L2 strength of the logistic regression (sklearn's default)


def halves(name: str) -> dict:
    if name == "seeds":
        conversations = group_conversations(load_golden(ROOT / "eval" / "golden.jsonl"))
        return {"tune": [i for c in conversations[0::2] for i in c], "report": [i for c in conversations[1::2] for i in c]}
    folder = ROOT / "eval" / "collections" / name
    return {half: load_golden(folder / f"golden.{half}.jsonl") for half in ("tune", "report")}


def collect(name: str, index: Path, out: Path) -> list[dict]:
    docs = ROOT / "seeds" if name == "seeds" else ROOT / "eval" / "collections" / name / "docs"
    if not (index / "CURRENT").exists():
        rag("index", "--seeds", str(docs), "--index", str(index), "--rebuild")
    settings = Settings(_env_file=None, index_dir=index, refuse_below=0.0, unsure_below=0.0, mode="extractive")
    pipeline = build_pipeline(settings)
    rows = []
    for half, items in halves(name).items():
        run = Evaluator(pipeline).run(items, out / name / half, "extractive")
        results = [json.loads(line) for line in (out / name / half / "results.jsonl").read_text().splitlines()]
        for r in results:
            policy = r["trace"].get("policy") or {}
            if policy.get("evidence"):
                rows.append({"collection": name, "half": half, "id": r["id"], "answerable": r["answerable"],
                             "evidence": policy["evidence"], "key_fact": r["scores"].get("answer.key_fact")})
        print(f"{name}/{half}: {run['n']} questions", file=sys.stderr)
    return rows


def fit(rows: list[dict], features: tuple[str, ...]) -> PolicyModel:
    x = np.array([[r["evidence"][f] for f in features] for r in rows])
    y = np.array([r["answerable"] for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=C, class_weight="balanced").fit((x - mean) / scale, y)
    return PolicyModel(features, tuple(mean.round(6)), tuple(scale.round(6)), tuple(model.coef_[0].round(6)),
                       round(float(model.intercept_[0]), 6))


def probabilities(model: PolicyModel, rows: list[dict]) -> np.ndarray:
    return np.array([model.probability(Evidence(**r["evidence"])) for r in rows])


def rates(p: np.ndarray, answerable: np.ndarray, refuse: float, unsure: float) -> dict:
    ans, unans = p[answerable], p[~answerable]
    return {
        "false_refusals": float((ans < refuse).mean()) if len(ans) else 0.0,
        "answerable_flagged": float(((ans >= refuse) & (ans < unsure)).mean()) if len(ans) else 0.0,
        "unanswerable_caught": float((unans < unsure).mean()) if len(unans) else 0.0,
        "unanswerable_refused": float((unans < refuse).mean()) if len(unans) else 0.0,
    }


def thresholds(p: np.ndarray, answerable: np.ndarray) -> tuple[float, float]:
    """The highest thresholds the tune half allows: refusals first, then the low-confidence band."""
    grid = np.round(np.arange(0.02, 0.98, 0.01), 2)
    ans = p[answerable]
    refuse = max([t for t in grid if (ans < t).mean() <= MAX_FALSE_REFUSALS], default=0.0)
    unsure = max([t for t in grid if t >= refuse and ((ans >= refuse) & (ans < t)).mean() <= MAX_FLAGGED], default=refuse)
    return float(refuse), float(unsure)


def evaluate(rows: list[dict], features: tuple[str, ...]) -> dict:
    tune = [r for r in rows if r["half"] == "tune"]
    model = fit(tune, features)
    p_tune = probabilities(model, tune)
    refuse, unsure = thresholds(p_tune, np.array([r["answerable"] for r in tune]))
    report = {}
    for name in dict.fromkeys(r["collection"] for r in rows):
        part = [r for r in rows if r["collection"] == name and r["half"] == "report"]
        report[name] = rates(probabilities(model, part), np.array([r["answerable"] for r in part]), refuse, unsure)
    everything = [r for r in rows if r["half"] == "report"]
    report["all"] = rates(probabilities(model, everything), np.array([r["answerable"] for r in everything]), refuse, unsure)
    return {"model": model, "refuse_below": refuse, "unsure_below": unsure, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--runs", type=Path, default=ROOT / "eval" / "runs" / "policy")
    parser.add_argument("--collections", default=",".join(["seeds", *COLLECTIONS]))
    parser.add_argument("--write", action="store_true", help="store the fitted model in rag/policy_model.json")
    parser.add_argument("--out", type=Path, help="the figures as JSON")
    args = parser.parse_args()
    rows = [row for name in args.collections.split(",") for row in collect(name, args.index_root / name, args.runs)]
    features = Evidence.names()
    full = evaluate(rows, features)
    table = {"all features": full["report"]["all"] | {"refuse_below": full["refuse_below"], "unsure_below": full["unsure_below"]}}
    for dropped in features:
        ablated = evaluate(rows, tuple(f for f in features if f != dropped))
        table[f"without {dropped}"] = ablated["report"]["all"] | {"refuse_below": ablated["refuse_below"], "unsure_below": ablated["unsure_below"]}
    print("| policy | false refusals | answerable flagged | unanswerable refused or flagged | unanswerable refused | thresholds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in table.items():
        print(f"| {label} | {r['false_refusals']:.3f} | {r['answerable_flagged']:.3f} | {r['unanswerable_caught']:.3f} "
              f"| {r['unanswerable_refused']:.3f} | {r['refuse_below']:.2f} / {r['unsure_below']:.2f} |")
    from sklearn.metrics import roc_auc_score

    for half in ("tune", "report"):
        part = [r for r in rows if r["half"] == half]
        auc = roc_auc_score([r["answerable"] for r in part], probabilities(full["model"], part))
        print(f"ROC AUC, {half} halves: {auc:.3f}")
    print("\nReport halves, all features:")
    for name, r in full["report"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    model = full["model"]
    print("\nweights: " + ", ".join(f"{f} {c:+.3f}" for f, c in zip(model.features, model.coef)) + f", intercept {model.intercept:+.3f}")
    if args.write:
        tune_sets = sorted({r["collection"] for r in rows})
        fitted = PolicyModel(model.features, model.mean, model.scale, model.coef, model.intercept,
                             f"tune halves of {', '.join(tune_sets)}; thresholds {full['refuse_below']:.2f} / {full['unsure_below']:.2f}")
        (ROOT / "rag" / "policy_model.json").write_text(json.dumps(fitted.to_json(), indent=1) + "\n", encoding="utf-8")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"table": table, "report": full["report"], "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
