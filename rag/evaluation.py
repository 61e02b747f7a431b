"""Evaluation: run the golden set through the real pipeline, or score answers made elsewhere.

Every metric is deterministic and needs no LLM: document-level retrieval (hit@k, recall@k,
MRR, nDCG@10), SQuAD exact match and token F1, embedding similarity to the reference,
ALCE-style citation precision/recall from the grounding check, and refusal accuracy.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rag import metrics as m
from rag import stats
from rag.citations import MARKER_GROUP, ParsedAnswer, parse_citations
from rag.errors import RagError
from rag.extractive import STOPS_ON_A_WORD, is_line_break
from rag.files import atomic_write, jsonl_bytes, open_private_append
from rag.golden import GoldenItem, read_jsonl
from rag.judge import Judge
from rag.pipeline import NOT_FOUND, Pipeline
from rag.policy import is_model_refusal
from rag.prompt import REFUSAL_TEXT
from rag.records import Hit, Sentence
from rag.rewrite import bounded, rewrite_question
from rag.settings import Settings

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
METRIC_NAMES = (
    "retrieval.hit@1", "retrieval.hit@5", "retrieval.recall@5", "retrieval.mrr", "retrieval.ndcg@10",
    "answer.exact_match", "answer.f1", "answer.reference_recall", "answer.semantic_similarity", "answer.key_fact",
    "answer.stops_mid_sentence",
    "citation.precision", "citation.recall", "citation.right_article", "citation.out_of_range",
    "refusal.accuracy", "refusal.false_refusal_rate",
    "latency.p50_ms", "latency.p95_ms",
)
JUDGE_METRICS = ("judge.faithfulness", "judge.answer_correctness", "judge.context_relevance")  # only when a judge ran


# ---- scoring one answer -----------------------------------------------------------------------
def retrieval_scores(item: GoldenItem, ranked_doc_ids: list[str]) -> dict[str, float]:
    if not item.answerable or not item.reference_doc_ids:
        return {}
    relevant = set(item.reference_doc_ids)
    return {
        "retrieval.hit@1": m.hit_at_k(ranked_doc_ids, relevant, 1),
        "retrieval.hit@5": m.hit_at_k(ranked_doc_ids, relevant, 5),
        "retrieval.recall@5": m.recall_at_k(ranked_doc_ids, relevant, 5),
        "retrieval.mrr": m.reciprocal_rank(ranked_doc_ids, relevant),
        "retrieval.ndcg@10": m.ndcg_at_k(ranked_doc_ids, relevant, 10),
    }


def stops_mid_sentence(sentences: list[Sentence], sources: dict[int, str]) -> float:
    """Does the answer leave a sentence unfinished? A sentence of prose (a capital first, three words
    or more, no table cells, not a line of a code block or table in its passage) that ends on a
    lower-case word or a comma, and is not followed in the answer by what comes right after it in its
    passage (the command or list that finishes it)."""
    for sentence, after in zip(sentences, [*sentences[1:], None]):
        text = strip_markers(sentence.text).strip()
        prose = text[:1].isupper() and len(text.split()) >= 3 and " | " not in text and not _is_block_line(sentence, sources)
        if prose and STOPS_ON_A_WORD.search(text) and (after is None or not _goes_on_in(sentence, after, sources)):
            return 1.0
    return 0.0


def _is_block_line(sentence: Sentence, sources: dict[int, str]) -> bool:
    """Is the quoted text a line of a code block or table ("Script started, file is typescript" after
    "$ script")? It spans two lines, or a line of text comes right before or after it (`is_line_break`)."""
    for span in sentence.spans:
        source = sources.get(span.marker, "")
        before, inside, after = source[:span.start], source[span.start:span.end], source[span.end:]
        gap_before, gap_after = before[len(before.rstrip()):], after[:len(after) - len(after.lstrip())]
        if "\n" in inside.strip() or (before.strip() and is_line_break(gap_before)) or (after.strip() and is_line_break(gap_after)):
            return True
    return False


def _goes_on_in(sentence: Sentence, after: Sentence, sources: dict[int, str]) -> bool:
    """Is `after` the text that follows `sentence` in a passage (only white space between)?"""
    return any(a.marker == b.marker and a.end <= b.start and not sources.get(a.marker, "")[a.end:b.start].strip()
               for a in sentence.spans for b in after.spans)


def citation_scores(sentences: list[Sentence], sources: dict[int, str], checker) -> dict[str, float]:
    """ALCE-style: recall = sentences supported by what they cite; precision = citations that support their sentence."""
    if not sentences:
        return {}
    supported = 0
    citations = precise = 0
    for sentence in sentences:
        cited = [n for n in sentence.citations if n in sources]
        if cited and checker.supports(sentence.text, [sources[n] for n in cited]):
            supported += 1
        for n in cited:
            citations += 1
            precise += checker.supports(sentence.text, [sources[n]])
    scores = {"citation.recall": supported / len(sentences)}
    if citations:
        scores["citation.precision"] = precise / citations
    return scores


def article_scores(item: GoldenItem, cited_doc_ids: list[str], dropped_markers: list) -> dict[str, float]:
    """Does the answer cite a right article? Did the model emit markers outside its sources?"""
    scores = {"citation.out_of_range": float(len(dropped_markers) > 0)}
    if item.answerable and item.reference_doc_ids:
        scores["citation.right_article"] = float(bool(set(cited_doc_ids) & set(item.reference_doc_ids)))
    return scores


def strip_markers(text: str) -> str:
    return " ".join(MARKER_GROUP.sub("", text).split())


def answer_scores(item: GoldenItem, answer: str, refused: bool, similarity: Callable[[str, str], float]) -> dict[str, float]:
    scores = {"refusal.correct": float(refused != item.answerable)}
    if item.answerable:
        scores["refusal.false_refusal"] = float(refused)
        plain = strip_markers(answer)
        scores["answer.exact_match"] = m.exact_match(plain, item.reference)
        scores["answer.f1"] = m.token_f1(plain, item.reference)
        scores["answer.reference_recall"] = m.token_recall(plain, item.reference)
        scores["answer.semantic_similarity"] = similarity(plain, item.reference) if plain else 0.0
        if item.reference_contexts:
            scores["answer.key_fact"] = key_fact(item, answer, refused)
    return scores


def key_fact(item: GoldenItem, answer: str, refused: bool) -> float:
    """Does the answer carry the fact asked for (0 for a refusal)?"""
    return 0.0 if refused else m.holds_key_fact(strip_markers(answer), item.reference_contexts)


# ---- summary --------------------------------------------------------------------------------------
def per_question(results: list[dict], mode: str) -> dict[str, dict[str, float]]:
    """metric -> {question id: its value}: each headline figure is the mean of these (latency: a percentile)."""
    values: dict[str, dict[str, float]] = {}

    def put(name: str, row: dict, value) -> None:
        values.setdefault(name, {})[row["id"]] = float(value)

    for r in results:
        scores, answerable = r["scores"], r.get("answerable", True)
        for name in (*METRIC_NAMES, *JUDGE_METRICS):
            if name in scores:
                put(name, r, scores[name])
        for name, key in (("refusal.accuracy", "refusal.correct"), ("refusal.false_refusal_rate", "refusal.false_refusal")):
            if key in scores:
                put(name, r, scores[key])
        flagged = r["refused"] or r.get("low_confidence", False)
        if not answerable:
            put("refusal.unanswerable_refused", r, r["refused"])
            put("refusal.unanswerable_flagged", r, flagged)
        else:
            put("answer.low_confidence_rate", r, not r["refused"] and r.get("low_confidence", False))
        if mode == "llm" and not r["refused"]:  # answers the model wrote, not passages quoted after a check failed
            put("answer.written_by_model", r, (r.get("trace") or {}).get("answered_by") != "extractive")
        if r.get("latency_ms") is not None:
            for name in ("latency.p50_ms", "latency.p95_ms"):
                put(name, r, r["latency_ms"])
    return values


def statistic_of(name: str) -> stats.Statistic:
    return {"latency.p50_ms": stats.percentile(50), "latency.p95_ms": stats.percentile(95)}.get(name, stats.mean)


def summarize(results: list[dict], mode: str, config: dict) -> dict:
    values = per_question(results, mode)
    metrics: dict[str, float | None] = {}
    intervals: dict[str, list[float] | None] = {}
    judged = [name for name in JUDGE_METRICS if name in values]
    for name in [*METRIC_NAMES, "refusal.unanswerable_refused", "refusal.unanswerable_flagged",
                 "answer.low_confidence_rate", *(["answer.written_by_model"] if mode == "llm" else []), *judged]:
        found = list(values.get(name, {}).values())
        digits = 1 if name.startswith("latency") else 4
        metrics[name] = round(float(statistic_of(name)(np.asarray(found))), digits) if found else None
        bounds = stats.interval(found, statistic_of(name))
        intervals[name] = [round(b, digits) for b in bounds] if bounds else None
    by_type: dict[str, dict] = {}
    for r in results:
        by_type.setdefault(r.get("type", "fact"), []).append(r)
    per_type = {
        t: {k: round(statistics.fmean(v), 4) for k in ("answer.f1", "retrieval.hit@5", "refusal.correct")
            if (v := [r["scores"][k] for r in rs if k in r["scores"]])}
        | {"n": len(rs)}
        for t, rs in sorted(by_type.items())
    }
    return {"n": len(results), "mode": mode, "config": config, "metrics": metrics, "intervals": intervals, "by_type": per_type}


def check_thresholds(summary: dict, fail_under: list[str]) -> list[str]:
    """Failures for `METRIC=VALUE` thresholds; a malformed one or unknown metric is an error."""
    failures = []
    for spec in fail_under:
        name, sep, value = spec.partition("=")
        try:
            threshold = float(value)
        except ValueError:
            raise RagError(f"--fail-under {spec!r}: expected METRIC=NUMBER, e.g. retrieval.hit@5=0.9") from None
        if not sep or name not in summary["metrics"]:
            raise RagError(f"--fail-under {spec!r}: unknown metric; known: {', '.join(sorted(summary['metrics']))}")
        actual = summary["metrics"][name]
        if actual is None or actual < threshold:
            failures.append(f"{name} = {actual} is below {threshold}")
    return failures


# ---- the evaluator ---------------------------------------------------------------------------------
class Evaluator:
    def __init__(self, pipeline: Pipeline, judge: Judge | None = None):
        self.pipeline = pipeline
        self.judge = judge  # optional: its scores come after the deterministic ones

    def similarity(self, a: str, b: str) -> float:
        return float(self.pipeline.embedder.similarity([a], [b])[0, 0])

    def run(
        self,
        items: list[GoldenItem],
        out_dir: Path,
        mode: str,
        top_k: int | None = None,
        concurrency: int = 1,
        progress: Callable[[int, int], None] | None = None,
        golden: str | None = None,
    ) -> dict:
        """Run every question through the pipeline; resumable (questions already in results.jsonl are kept).
        `golden` names the golden set in the run's record."""
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        results_path = out_dir / RESULTS
        done = {r["id"]: r for r in read_results(results_path)} if results_path.exists() else {}
        conversations = group_conversations(items)
        todo = [conv for conv in conversations if not all(i.id in done for i in conv)]
        total, finished = len(items), sum(i.id in done for i in items)
        if progress:
            progress(finished, total)
        with open_private_append(results_path) as out:
            def run_conversation(conv: list[GoldenItem]) -> list[dict]:
                history: list[dict] = []
                rows = []
                for item in conv:
                    row = done.get(item.id) or self._ask(item, history, mode, top_k)
                    history += [{"role": "user", "content": item.user_input}, {"role": "assistant", "content": row["answer"]}]
                    rows.append(row)
                return rows

            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                for rows in pool.map(run_conversation, todo):
                    for row in rows:
                        if row["id"] not in done:
                            out.write(json.dumps(row, ensure_ascii=False) + "\n")
                            out.flush()
                            done[row["id"]] = row
                            finished += 1
                    if progress:
                        progress(finished, total)
        results = [done[i.id] for i in items if i.id in done]
        config = {"mode": mode, "golden": golden, "judge": self.judge.record if self.judge else None,
                  "top_k": top_k or self.pipeline.settings.top_k,
                  "embedding_model": self.pipeline.settings.embedding_model,
                  "index_version": self.pipeline.store.manifest.version}
        return self._finish(results, mode, config, out_dir)

    def _ask(self, item: GoldenItem, history: list[dict], mode: str, top_k: int | None) -> dict:
        started = time.perf_counter()
        answer = self.pipeline.ask(item.user_input, history=history, mode=mode, top_k=top_k)
        latency = (time.perf_counter() - started) * 1000
        ranked = [h.chunk.doc_id for h in answer.sources]
        sources = {n: h.chunk.text for n, h in enumerate(answer.sources, 1)}
        scores = retrieval_scores(item, ranked) | answer_scores(item, answer.answer, answer.refused, self.similarity)
        if not answer.refused:
            scores |= citation_scores(answer.sentences, sources, self.pipeline.grounding)
            scores["answer.stops_mid_sentence"] = stops_mid_sentence(answer.sentences, sources)
        scores |= article_scores(item, [c.doc_id for c in answer.citations], answer.trace.dropped_markers)
        if self.judge is not None and not answer.refused and item.answerable:
            plain = strip_markers(answer.answer)
            scores |= self.judge.scores(item.user_input, plain, [strip_markers(s.text) for s in answer.sentences],
                                        list(sources.values()), item.reference, scores.get("answer.semantic_similarity", 0.0))
        return base_row(item) | {
            "answer": answer.answer,
            "refused": answer.refused,
            "low_confidence": answer.low_confidence,
            "citations": [asdict(c) for c in answer.citations],
            "retrieved_doc_ids": ranked,
            "cited_passages": {str(c.marker): sources[c.marker] for c in answer.citations},
            "scores": scores,
            "latency_ms": round(latency, 1),
            "trace": answer.trace.to_json(),
        }

    def score(self, items: list[GoldenItem], answers: dict[str, dict], out_dir: Path, golden: str | None = None) -> dict:
        """Score answers produced elsewhere: JSONL rows with id and response (or answer)."""
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = self.pipeline.store
        chunk_text = {c.chunk_id: c.text for c in store.chunks}
        results = []
        for item in items:
            row = answers.get(item.id)
            if row is None:
                log.warning("no answer for %s", item.id)
                continue
            text = row.get("response", row.get("answer")) or ""
            refused = bool(row["refused"]) if "refused" in row else (text.strip() == NOT_FOUND or is_model_refusal(text, REFUSAL_TEXT))
            sources = _cited_sources(row.get("citations") or [], chunk_text, store.documents)
            parsed: ParsedAnswer = parse_citations(text, max(sources, default=0))
            scores = answer_scores(item, text, refused, self.similarity)
            if row.get("retrieved_doc_ids"):
                scores |= retrieval_scores(item, list(row["retrieved_doc_ids"]))
            if sources and not refused:
                scores |= citation_scores(parsed.sentences, sources, self.pipeline.grounding)
            cited_docs = [c.get("doc_id") for c in row.get("citations") or [] if isinstance(c, dict)]
            scores |= article_scores(item, [] if refused else cited_docs, parsed.dropped if sources else [])
            results.append(base_row(item) | {
                "answer": text, "refused": refused, "low_confidence": bool(row.get("low_confidence", False)),
                "citations": row.get("citations") or [],
                "retrieved_doc_ids": row.get("retrieved_doc_ids") or [], "scores": scores,
                "latency_ms": row.get("latency_ms"), "trace": {},
            })
        if not results:
            raise RagError("no answer in the answers file matches an id of the golden set; check the `id` fields")
        atomic_write(out_dir / RESULTS, jsonl_bytes(results))
        return self._finish(results, "external", {"mode": "external", "golden": golden, "answers": len(answers)}, out_dir)

    def _finish(self, results: list[dict], mode: str, config: dict, out_dir: Path) -> dict:
        from rag.report import write_reports

        models = {(r.get("trace") or {}).get("model") for r in results} - {None}
        config = config | {"model": ", ".join(sorted(models)) or None, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        summary = summarize(results, mode, config)
        atomic_write(out_dir / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8"))
        write_reports(summary, results, out_dir)
        return summary


def _cited_sources(citations: list[dict], chunk_text: dict[str, str], documents) -> dict[int, str]:
    """marker -> passage text, by chunk id when given, else the whole cited document."""
    sources = {}
    for c in citations:
        try:
            marker = int(c["marker"])
        except (KeyError, TypeError, ValueError):
            continue
        text = chunk_text.get(c.get("chunk_id") or "") or (documents[c["doc_id"]].text if c.get("doc_id") in documents else None)
        if text:
            sources[marker] = text
    return sources


def base_row(item: GoldenItem) -> dict:
    return {
        "id": item.id, "user_input": item.user_input, "reference": item.reference,
        "reference_doc_ids": item.reference_doc_ids, "answerable": item.answerable, "type": item.type,
    }


def group_conversations(items: list[GoldenItem]) -> list[list[GoldenItem]]:
    """Follow-up turns run in order within their conversation; other questions stand alone."""
    groups: dict[str, list[GoldenItem]] = {}
    order: list[list[GoldenItem]] = []
    for item in items:
        if item.conversation_id:
            if item.conversation_id not in groups:
                groups[item.conversation_id] = []
                order.append(groups[item.conversation_id])
            groups[item.conversation_id].append(item)
        else:
            order.append([item])
    for group in groups.values():
        group.sort(key=lambda i: i.turn or 0)
    return order


HEADLINE = ("answer.key_fact", "answer.f1", "retrieval.hit@5", "refusal.false_refusal_rate", "refusal.unanswerable_flagged")


def run_history(root: Path) -> list[dict]:
    """Every run under `root` (folders `rag eval run` or the Evaluate tab wrote), newest first: when,
    which golden set, mode, model, index version and the headline metrics."""
    runs = []
    for summary_path in root.glob(f"*/{SUMMARY}"):
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # an interrupted run: nothing to show yet
        config = summary.get("config", {})
        runs.append({"run": summary_path.parent.name, "finished": config.get("finished", ""), "golden": config.get("golden"),
                     "mode": summary.get("mode"), "model": config.get("model"), "index": config.get("index_version"),
                     "n": summary.get("n")} | {k: summary.get("metrics", {}).get(k) for k in HEADLINE})
    return sorted(runs, key=lambda r: (r["finished"] or "", r["run"]), reverse=True)


def to_trec_run(results: list[dict], name: str) -> list[str]:
    """TREC run lines (query id, Q0, document id, rank, score, run name): each question's retrieved
    articles, each once, in rank order, scores descending, as the retrieval metrics count them."""
    tag = re.sub(r"\s+", "_", name) or "rag"
    lines = []
    for row in results:
        ranked = m.dedupe(row.get("retrieved_doc_ids") or [])
        lines += [f"{row['id']} Q0 {doc_id} {rank} {len(ranked) - rank + 1} {tag}" for rank, doc_id in enumerate(ranked, 1)]
    return lines


def read_results(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d: unreadable line skipped (an interrupted run?)", path, n)
    return rows


def read_answers(path: Path) -> dict[str, dict]:
    answers = {}
    for n, row in read_jsonl(path, "answers file"):
        if "id" not in row or not ("response" in row or "answer" in row):
            raise RagError(f"{path}:{n}: each answer needs `id` and `response` (or `answer`)")
        answers[str(row["id"])] = row
    return answers


def compare_runs(dir_a: Path, dir_b: Path) -> dict:
    """Metric deltas B - A and per-question changes, regressions first."""
    def load(d: Path) -> tuple[dict, dict[str, dict]]:
        try:
            summary = json.loads((d / SUMMARY).read_text(encoding="utf-8"))
            results = {r["id"]: r for r in read_results(d / RESULTS)}
        except (OSError, json.JSONDecodeError) as exc:
            raise RagError(f"{d}: not an evaluation run ({exc.__class__.__name__}); give folders written by `rag eval run`") from exc
        return summary, results

    (sa, ra), (sb, rb) = load(dir_a), load(dir_b)
    values_a, values_b = per_question(list(ra.values()), sa.get("mode", "")), per_question(list(rb.values()), sb.get("mode", ""))
    deltas = {}
    for k, v in sb["metrics"].items():
        before = sa["metrics"].get(k)
        deltas[k] = {"a": before, "b": v, "delta": None if v is None or before is None else round(v - before, 4)}
        deltas[k] |= paired(values_a.get(k, {}), values_b.get(k, {}), statistic_of(k))
    changes = []
    for qid in ra.keys() & rb.keys():
        a, b = ra[qid]["scores"], rb[qid]["scores"]
        key = "answer.f1" if "answer.f1" in a and "answer.f1" in b else "refusal.correct"
        if key in a and key in b and a[key] != b[key]:
            changes.append({"id": qid, "user_input": rb[qid]["user_input"], "metric": key, "a": a[key], "b": b[key], "delta": round(b[key] - a[key], 4)})
    changes.sort(key=lambda c: (c["delta"], c["id"]))
    return {"a": str(dir_a), "b": str(dir_b), "mode_a": sa.get("mode"), "mode_b": sb.get("mode"), "metrics": deltas, "changes": changes}


def paired(a: dict[str, float], b: dict[str, float], statistic: stats.Statistic) -> dict:
    """B - A over the questions both runs answered (the headline delta counts every question of each
    run), its paired bootstrap interval and p-value."""
    common = sorted(a.keys() & b.keys())
    found = stats.paired_difference([a[q] for q in common], [b[q] for q in common], statistic)
    if found is None:
        return {"paired_delta": None, "low": None, "high": None, "p": None, "paired": 0}
    return {"paired_delta": round(found["delta"], 4), "low": round(found["low"], 4), "high": round(found["high"], 4),
            "p": round(found["p"], 4), "paired": found["n"]}


def retrieval_comparison(pipeline: Pipeline, items: list[GoldenItem], top_k: int = 5) -> dict[str, dict[str, float]]:
    """Dense, BM25 and hybrid side by side: document hit@1/5, MRR, and the answer passage at rank 1 and in the top k."""
    queries = standalone_questions(items, pipeline.settings.history_turns)
    answerable = [i for i in items if i.answerable and i.reference_doc_ids]
    kept = ingested_share(pipeline.store.chunks, answerable)
    table = {}
    for method in ("dense", "bm25", "hybrid"):
        rows = []
        for item in answerable:
            hits: list[Hit] = pipeline.search(queries[item.id], top_k=top_k, method=method)
            rows.append(ranking_scores(item, [h.chunk for h in hits]))
        table[method] = {k: round(statistics.fmean(r[k] for r in rows), 4) for k in rows[0]} | {"answer kept": kept, "n": len(rows)}
    return table


def ranking_scores(item: GoldenItem, ranked: list) -> dict[str, float]:
    """One question's retrieval figures from its ranked passages: the article at 1 and in the top 5,
    MRR, and a passage holding a reference context at 1 and anywhere in the list."""
    docs, relevant = [c.doc_id for c in ranked], set(item.reference_doc_ids)
    has = [m.passage_contains(c.text, item.reference_contexts) for c in ranked]
    return {"doc_hit@1": m.hit_at_k(docs, relevant, 1), "doc_hit@5": m.hit_at_k(docs, relevant, 5),
            "mrr": m.reciprocal_rank(docs, relevant), "passage@1": float(bool(has) and has[0]), "passage@5": float(any(has))}


def judged_correct(scores: dict, settings: Settings) -> bool:
    """The automatic verdict a human grade is compared with: the refusal was right, and the answer's
    token F1 or its similarity to the reference reaches its threshold (RAG_CORRECT_F1, RAG_CORRECT_SIMILARITY)."""
    if "answer.f1" not in scores:
        return bool(scores.get("refusal.correct"))
    return scores["answer.f1"] >= settings.correct_f1 or scores.get("answer.semantic_similarity", 0) >= settings.correct_similarity


GRADE_VALUE = {"correct": 1.0, "partly": 0.5, "wrong": 0.0}
AGREEMENT_METRICS = ("answer.f1", "answer.semantic_similarity", "answer.key_fact", "answer.reference_recall", "citation.recall")


def agreement(results: list[dict], grades: dict[str, dict], settings: Settings) -> dict:
    """How the automatic verdict agrees with human grades: Cohen's kappa (a human "correct" against
    `judged_correct`), each metric's Spearman correlation with the grades, and the disagreements
    (the questions to review first)."""
    graded = [r for r in results if r["id"] in grades]
    human = [grades[r["id"]]["grade"] == "correct" for r in graded]
    machine = [judged_correct(r["scores"], settings) for r in graded]
    disagreements = [{"id": r["id"], "user_input": r["user_input"], "human": grades[r["id"]]["grade"],
                      "automatic": "correct" if auto else "not correct"}
                     for r, h, auto in zip(graded, human, machine) if h != auto]
    return {"n": len(graded), "agree": len(graded) - len(disagreements), "kappa": cohen_kappa(human, machine),
            "correlations": grade_correlations(graded, grades), "disagreements": disagreements}


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Agreement beyond chance between two binary raters (None without ratings; 1.0 when both are
    constant and equal, where kappa is otherwise undefined)."""
    if not a:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / len(a)
    pa, pb = sum(a) / len(a), sum(b) / len(b)
    chance = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if chance == 1 else round((observed - chance) / (1 - chance), 4)


def grade_correlations(graded: list[dict], grades: dict[str, dict]) -> dict[str, float | None]:
    """Spearman's rho between each metric and the grades (correct 1, partly 0.5, wrong 0)."""
    from scipy.stats import spearmanr

    out: dict[str, float | None] = {}
    for name in AGREEMENT_METRICS:
        pairs = [(r["scores"][name], GRADE_VALUE[grades[r["id"]]["grade"]]) for r in graded if name in r["scores"]]
        varied = len(pairs) >= 3 and len({x for x, _ in pairs}) > 1 and len({y for _, y in pairs}) > 1
        out[name] = round(float(spearmanr(*zip(*pairs)).statistic), 4) if varied else None
    return out


def standalone_questions(items: list[GoldenItem], history_turns: int) -> dict[str, str]:
    """Each question as retrieval sees it in extractive mode: a follow-up rewritten by the pipeline's
    own rule from the questions before it in its conversation."""
    queries = {}
    for conversation in group_conversations(items):
        history: list[dict] = []
        for item in conversation:
            queries[item.id], _ = rewrite_question(item.user_input, bounded(history, history_turns))
            history += [{"role": "user", "content": item.user_input}, {"role": "assistant", "content": ""}]
    return queries


def ingested_share(chunks: list, items: list[GoldenItem]) -> float:
    """Share of the questions whose answer survived ingestion: a passage of the answer's article
    holds one of its reference contexts (0 when a table, a list or a code block was lost)."""
    by_doc: dict[str, list[str]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk.text)
    found = [any(m.passage_contains(t, i.reference_contexts) for d in i.reference_doc_ids for t in by_doc.get(d, []))
             for i in items if i.reference_contexts]
    return round(statistics.fmean(found), 4) if found else 1.0
