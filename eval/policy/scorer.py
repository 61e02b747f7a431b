"""Could a learned sentence scorer pick better answer sentences than the hand-set one?

    python eval/policy/scorer.py [--index-root DIR] [--features cos,lex,typed,...]

The extractive answerer scores a sentence as its cosine to the question + 0.3 × the share of the
question's terms it holds + 0.1 when it holds the kind of answer asked for (`rag/extractive.py`).
Here a conditional logit (a softmax over each question's candidate sentences, L2-regularised) is
fitted on the tune halves to put a sentence of the reference answer first, with those three and
other generic features, and measured leave-one-collection-out: fitted on the other collections'
tune halves, the held-out one's answers are built with the learned score (the same `answer` rules)
and checked for the key fact. The report halves are not read.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))
sys.path.insert(0, str(ROOT / "eval" / "policy"))

from fit import halves  # noqa: E402
from report import COLLECTIONS  # noqa: E402
from rag.chunking import passage_units  # noqa: E402
from rag.citations import word_coverage  # noqa: E402
from rag.extractive import LEXICAL_WEIGHT, TYPE_BONUS, ExtractiveAnswerer  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.keywords import bm25_tokenize  # noqa: E402
from rag.metrics import comparable, holds_key_fact  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.structure import BULLET, CELL_SEPARATOR  # noqa: E402

FEATURES = ("cos", "lex", "typed", "passage_score", "passage_rank", "heading_overlap", "position", "first_unit",
            "log_length", "new_terms", "list_item", "table_row", "ends_with_colon", "goes_on", "lead_cos", "follow_cos")
L2 = 1.0


def candidate_features(pipeline, question: str, hits, candidates, query_vector) -> list[dict[str, float]]:
    """The generic features of each candidate sentence: its score's parts, its passage's, where it stands."""
    question_terms = set(bm25_tokenize([question])[0])
    rows = []
    for c in candidates:
        hit = hits[c.source - 1]
        spans = passage_units(hit.chunk)
        vectors = pipeline.store.sentence_vectors_of(hit.chunk.chunk_id)
        i = spans.index(c.span)
        cos = [float(v @ query_vector) for v in vectors]
        terms = set(bm25_tokenize([c.text])[0])
        rows.append({
            "cos": cos[i], "lex": (c.score - cos[i] - TYPE_BONUS * c.typed) / LEXICAL_WEIGHT, "typed": float(c.typed),
            "passage_score": hit.score, "passage_rank": float(c.source),
            "heading_overlap": len(question_terms & set(bm25_tokenize([hit.chunk.heading or ""])[0])) / max(1, len(question_terms)),
            "position": i / max(1, len(spans) - 1), "first_unit": float(i == 0), "log_length": math.log(len(c.text)),
            "new_terms": len(terms - question_terms) / max(1, len(terms)),
            "list_item": float(bool(BULLET.match(c.text))), "table_row": float(CELL_SEPARATOR in c.text),
            "ends_with_colon": float(c.text.rstrip().endswith(":")), "goes_on": float(c.continued()),
            "lead_cos": cos[i - 1] if i > 0 else 0.0, "follow_cos": cos[i + 1] if i + 1 < len(cos) else 0.0,
        })
    return rows


def holds_reference(sentence: str, contexts: list[str]) -> bool:
    squeezed = comparable(sentence)
    return any(squeezed in comparable(x) or comparable(x) in squeezed or word_coverage(x, sentence) >= 0.75
               for x in contexts if x.strip())


def collect(index_root: Path, names: list[str]) -> dict[str, list[dict]]:
    questions: dict[str, list[dict]] = {}
    for name in names:
        pipeline = build_pipeline(Settings(_env_file=None, index_dir=index_root / name, mode="extractive"))
        rows = []
        for item in halves(name)["tune"]:
            if not (item.answerable and item.reference_contexts):
                continue
            vector = pipeline.embedder.encode_queries([item.user_input])[0]
            hits = pipeline.retriever.search(item.user_input, query_vector=vector)
            candidates = pipeline.ranker.rank(item.user_input, hits, vector)
            rows.append({"item": item, "candidates": candidates,
                         "features": candidate_features(pipeline, item.user_input, hits, candidates, vector),
                         "labels": np.array([holds_reference(c.text, item.reference_contexts) for c in candidates])})
        questions[name] = rows
        pipeline.close()
    return questions


def fit(rows: list[dict], names: tuple[str, ...]) -> np.ndarray:
    """Weights maximising the probability that the first-ranked sentence holds the reference answer."""
    data = [(np.array([[f[k] for k in names] for f in r["features"]]), r["labels"]) for r in rows if r["labels"].any()]

    def loss(w):
        total, grad = 0.0, np.zeros_like(w)
        for x, y in data:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            total -= math.log(p[y].sum())
            grad -= x[y].T @ p[y] / p[y].sum() - x.T @ p
        penalty = np.r_[0.0, w[1:]]  # the cosine's weight sets the scale: not shrunk
        return total + L2 * penalty @ penalty / 2, grad + L2 * penalty

    start = np.zeros(len(names))
    start[0] = 10.0
    w = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return w / w[0]  # the cosine keeps weight 1, so the answerer's margin keeps its meaning


def key_facts(rows: list[dict], answerer, names: tuple[str, ...], w: np.ndarray | None) -> int:
    held = 0
    for r in rows:
        candidates = r["candidates"]
        if w is not None:
            score = np.array([[f[k] for k in names] for f in r["features"]]) @ w
            candidates = [replace(candidates[i], score=float(score[i])) for i in np.argsort(-score, kind="stable")]
        text = " ".join(s.text for s in answerer.answer(candidates))
        held += holds_key_fact(text, r["item"].reference_contexts) == 1.0
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--features", default=",".join(FEATURES), help="the first one is the cosine")
    args = parser.parse_args()
    names = tuple(args.features.split(","))
    questions = collect(args.index_root, ["seeds", *COLLECTIONS])
    answerer = ExtractiveAnswerer(None, Settings(_env_file=None).extractive_sentences)  # as the factory builds it
    print(f"features: {', '.join(names)}")
    print("| collection (tune) | questions | key facts, hand-set score | key facts, learned on the others |")
    print("| --- | --- | --- | --- |")
    totals = [0, 0, 0]
    for held_out, rows in questions.items():
        others = [r for name, rs in questions.items() if name != held_out for r in rs]
        hand, learned = key_facts(rows, answerer, names, None), key_facts(rows, answerer, names, fit(others, names))
        totals = [totals[0] + len(rows), totals[1] + hand, totals[2] + learned]
        print(f"| {held_out} | {len(rows)} | {hand} | {learned} |", flush=True)
    print(f"| all | {totals[0]} | {totals[1]} | {totals[2]} |")
    weights = fit([r for rs in questions.values() for r in rs], names)
    print("weights fitted on every tune half: " + ", ".join(f"{k} {v:+.3f}" for k, v in zip(names, weights)))


if __name__ == "__main__":
    main()
