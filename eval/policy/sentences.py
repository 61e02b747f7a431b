"""Which extractive-answer rules earn their place: key facts with each rule taken out in turn.

    python eval/policy/sentences.py [--index-root DIR] [--halves report] [--collections a,b]

The rules of `rag/extractive.py` that pick the sentences of an answer, each switched off alone, on
the same indexes and questions (the real pipeline, extractive mode); prints a markdown table of
`answer.key_fact` per collection and half. The policy's features have their own table (fit.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "collections"))
sys.path.insert(0, str(ROOT / "eval" / "policy"))

from fit import halves  # noqa: E402
from report import COLLECTIONS, rag  # noqa: E402
from rag import extractive, policy  # noqa: E402
from rag.evaluation import key_fact  # noqa: E402
from rag.factory import build_pipeline  # noqa: E402
from rag.settings import Settings  # noqa: E402

NEVER = re.compile(r"(?!)")  # a pattern that matches nothing: the rule it replaces never fires

VARIANTS = {
    "all rules": {},
    "two sentences, not three": {"sentences": 2},
    "no lexical overlap in the score": {"LEXICAL_WEIGHT": 0.0},
    "two question words written as one not matched (fall back ~ fallback)": {"compounds": lambda question: {}},
    "no answer-type bonus": {"TYPE_BONUS": 0.0},
    "no 'code' answer type (how do I…, which command…)": {
        "expected_answer_type": lambda q: None if policy.expected_answer_type(q) == "code" else policy.expected_answer_type(q)},
    "labels quoted as answers": {"is_label": lambda sentence: False},
    "no 'hands over' (…the following:)": {"HANDS_OVER": NEVER},
    "a list, table or code block handed over to: its first unit only": {"MAX_RUN": 1},
    "no 'refers back' (To prevent this, …)": {"REFERS_BACK": NEVER},
    "no 'finishes the unit before' (where …)": {"FINISHES_BEFORE": NEVER},
    "not scored with the unit it goes on in": {"with_what_follows": lambda pieces, context, terms: terms},
    "a table row scored without its caption and header row": {"with_table_head": lambda context, terms: terms},
    "a sentence handing over may end the answer without its structure": {"owes_structure": lambda c, quoted: False},
    "the unit a sentence goes on in may end the answer at its colon": {
        "with_owed_structures": lambda quotes, candidates: quotes},
    "notes saying the same words quoted once each ('^[3] …', '^[5] …')": {"NOTE_MARK": NEVER},
    "a short note does not finish the unit before it ('New in version 2.5.')": {"is_short_statement": lambda unit: False},
    "a sentence a code block cuts off may end the answer ('…such as')": {"is_cut_off": lambda sentence: False},
    "a sentence a code block interrupted is quoted from where it goes on ('places the data frame…')": {
        "_interrupted_sentence": lambda text, units, spans, i: ()},
    "a code line that cannot stand alone quoted alone ('DECIMAL.values,')": {"is_fragment_of_code": lambda line: False},
    "a code line of a block longer than MAX_RUN lines: no block ('>>> class MyAuth(…):')":
        {"_block_window": lambda first, last, i: (first, last) if last - first < extractive.MAX_RUN else None},
}


def key_facts(pipeline, items) -> float:
    facts = []
    for item in items:
        if not (item.answerable and item.reference_contexts):
            continue
        answer = pipeline.ask(item.user_input, mode="extractive")
        facts.append(key_fact(item, answer.answer, answer.refused))
    return sum(facts) / len(facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-root", type=Path, default=ROOT / "eval" / "runs" / "collections")
    parser.add_argument("--collections", default=",".join(["seeds", *COLLECTIONS]))
    parser.add_argument("--halves", default="report", help="tune while trying a change; report for the README")
    args = parser.parse_args()
    names, wanted = args.collections.split(","), args.halves.split(",")
    columns = [(name, half) for name in names for half in wanted]
    print("| rules | " + " | ".join(f"{name} ({half})" for name, half in columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for label, change in VARIANTS.items():
        sentences = change.get("sentences", Settings().extractive_sentences)
        patches = [mock.patch.object(extractive, k, v) for k, v in change.items() if k != "sentences"]
        for patch in patches:
            patch.start()
        row = []
        for name in names:
            index = args.index_root / name
            if not (index / "CURRENT").exists():
                docs = ROOT / "seeds" if name == "seeds" else ROOT / "eval" / "collections" / name / "docs"
                rag("index", "--seeds", str(docs), "--index", str(index), "--rebuild")
            pipeline = build_pipeline(Settings(index_dir=index, mode="extractive", extractive_sentences=sentences))
            questions = halves(name)
            row += [key_facts(pipeline, questions[half]) for half in wanted]
            pipeline.close()
        for patch in patches:
            patch.stop()
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
