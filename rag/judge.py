"""An optional LLM judge for evaluation runs, after RAGAS' published definitions:

- faithfulness: the share of the answer's statements that its retrieved passages support (the
  answer's sentences are the statements; the judge gives each a verdict);
- answer correctness: 0.75 × the factual F1 of the answer's statements against the reference
  (TP / (TP + ½(FP + FN)), classified by the judge) + 0.25 × the embedding similarity;
- context relevance: the judge's 0–2 rating of how relevant the retrieved passages are to the
  question, scaled to 0–1.

It runs only when an endpoint is configured (`RAG_JUDGE=auto`), or when asked (`RAG_JUDGE=on`,
which also allows the bundled 135M model). The deterministic metrics stay the headline; a judge's
figures are its opinion, recorded with its model, prompt hash and temperature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from rag.errors import EndpointError
from rag.llm import LLMClient

log = logging.getLogger(__name__)

FAITHFULNESS = """Context:
{context}

Statements:
{statements}

For each statement, say whether the context supports it. Reply with JSON only:
{{"verdicts": [1 or 0, one per statement, in order]}}"""

CORRECTNESS = """Question: {question}
Reference answer: {reference}
Answer to judge: {answer}

Classify the statements of the answer against the reference. TP: statements of the answer the
reference supports; FP: statements of the answer the reference does not support; FN: statements
of the reference the answer leaves out. Reply with JSON only: {{"TP": n, "FP": n, "FN": n}}"""

CONTEXT_RELEVANCE = """Question: {question}

Passages:
{context}

How relevant are the passages to the question? 0: not relevant, 1: partly, 2: fully.
Reply with JSON only: {{"rating": 0, 1 or 2}}"""

JSON_OBJECT = re.compile(r"\{.*\}", re.S)
CORRECTNESS_WEIGHTS = (0.75, 0.25)  # factuality, semantic similarity: RAGAS' defaults


def prompt_hash() -> str:
    return hashlib.sha256("\x1e".join((FAITHFULNESS, CORRECTNESS, CONTEXT_RELEVANCE)).encode()).hexdigest()[:16]


def parsed(text: str) -> dict | None:
    """The first JSON object in the judge's reply (models wrap it in prose or code fences)."""
    found = JSON_OBJECT.search(text or "")
    try:
        value = json.loads(found.group()) if found else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class Judge:
    def __init__(self, client: LLMClient, temperature: float = 0.0, max_tokens: int = 200):
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens

    @property
    def record(self) -> dict:
        """What a run notes about its judge."""
        return {"model": self.client.model, "prompt_hash": prompt_hash(), "temperature": self.temperature}

    def _ask(self, prompt: str) -> dict | None:
        try:
            reply = self.client.complete([{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
                                         temperature=self.temperature)
        except EndpointError as exc:
            log.warning("the judge could not answer: %s", exc)
            return None
        return parsed(reply)

    def faithfulness(self, statements: list[str], contexts: list[str]) -> float | None:
        if not statements or not contexts:
            return None
        reply = self._ask(FAITHFULNESS.format(context="\n\n".join(contexts),
                                              statements="\n".join(f"{i}. {s}" for i, s in enumerate(statements, 1))))
        verdicts = reply.get("verdicts") if reply else None
        if not isinstance(verdicts, list) or len(verdicts) != len(statements):
            return None
        return sum(1 for v in verdicts if v in (1, True, "1", "yes")) / len(statements)

    def answer_correctness(self, question: str, answer: str, reference: str, similarity: float) -> float | None:
        if not reference:
            return None
        reply = self._ask(CORRECTNESS.format(question=question, reference=reference, answer=answer))
        try:
            tp, fp, fn = (int(reply[k]) for k in ("TP", "FP", "FN")) if reply else (None, None, None)
        except (KeyError, TypeError, ValueError):
            return None
        if tp is None:
            return None
        factual = tp / (tp + 0.5 * (fp + fn)) if tp + fp + fn else 0.0
        return CORRECTNESS_WEIGHTS[0] * factual + CORRECTNESS_WEIGHTS[1] * similarity

    def context_relevance(self, question: str, contexts: list[str]) -> float | None:
        if not contexts:
            return None
        reply = self._ask(CONTEXT_RELEVANCE.format(question=question, context="\n\n".join(contexts)))
        rating = reply.get("rating") if reply else None
        return rating / 2 if rating in (0, 1, 2) else None

    def scores(self, question: str, answer: str, statements: list[str], contexts: list[str], reference: str,
               similarity: float) -> dict[str, float]:
        found = {"judge.faithfulness": self.faithfulness(statements, contexts),
                 "judge.answer_correctness": self.answer_correctness(question, answer, reference, similarity),
                 "judge.context_relevance": self.context_relevance(question, contexts)}
        return {k: round(v, 4) for k, v in found.items() if v is not None}
