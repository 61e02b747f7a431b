"""The golden Q&A set: load (also RAGAS' older field names), validate, export."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.errors import RagError

# RAGAS' older names -> ours
ALIASES = {"question": "user_input", "ground_truth": "reference", "contexts": "reference_contexts"}
LIST_COLUMNS = {"reference_doc_ids", "reference_contexts", "contexts"}
BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


@dataclass
class GoldenItem:
    id: str
    user_input: str
    reference: str = ""
    reference_doc_ids: list[str] = field(default_factory=list)
    reference_contexts: list[str] = field(default_factory=list)
    answerable: bool = True
    type: str = "fact"
    conversation_id: str | None = None
    turn: int | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a missing file or bad line is one clear error."""
    rows = []
    for n, row in _jsonl_rows(path, what):
        if isinstance(row, str):
            raise RagError(row)
        rows.append((n, row))
    return rows


def load_golden(path: Path) -> list[GoldenItem]:
    """The golden set, strictly: the first bad line is an error (the CLI's way)."""
    items, problems = read_golden(path)
    if problems:
        raise RagError(problems[0])
    return items


def read_golden(path: Path) -> tuple[list[GoldenItem], list[str]]:
    """Every usable question of a golden set (JSONL, or CSV with the same columns), and one message
    per line that is not usable (the Evaluate tab runs the rest)."""
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items, problems = [], []
    for n, row in rows:
        try:
            items.append(_item(row, path, n) if isinstance(row, dict) else _raise(row))
        except RagError as exc:
            problems.append(str(exc))
    if not items and not problems:
        problems.append(f"{path}: the golden set is empty")
    return items, problems


def _raise(message: str):
    raise RagError(message)


def _jsonl_rows(path: Path, what: str = "golden set") -> list[tuple[int, dict | str]]:
    """(line number, object, or the message saying why the line is not one)."""
    rows: list[tuple[int, dict | str]] = []
    for n, line in enumerate(_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((n, f"{path}:{n}: invalid JSON ({exc.msg})"))
            continue
        rows.append((n, row if isinstance(row, dict) else f"{path}:{n}: expected a JSON object"))
    return rows


def _csv_rows(path: Path) -> list[tuple[int, dict | str]]:
    """CSV with a header row; list columns as a JSON array or `|`-separated, booleans as true/false."""
    reader = csv.DictReader(io.StringIO(_text(path, "golden set")))
    rows: list[tuple[int, dict | str]] = []
    for row in reader:
        n = reader.line_num
        try:
            rows.append((n, {k: _csv_value(k, v) for k, v in row.items() if k and v not in (None, "")}))
        except ValueError as exc:
            rows.append((n, f"{path}:{n}: {exc}"))
    return rows


def _csv_value(column: str, value: str):
    if column in LIST_COLUMNS:
        return json.loads(value) if value.lstrip().startswith("[") else [v.strip() for v in value.split("|") if v.strip()]
    if column == "answerable":
        if value.strip().lower() not in BOOLEANS:
            raise ValueError(f"answerable is {value!r}; use true or false")
        return BOOLEANS[value.strip().lower()]
    if column == "turn":
        return int(value)
    return value


def _text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RagError(f"{path}: {what} not found; check the path (JSONL, one object per line)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"{path}: cannot read the {what} ({exc.__class__.__name__}); give a UTF-8 JSONL file") from exc


def _item(row: dict, path: Path, n: int) -> GoldenItem:
    row = {ALIASES.get(k, k): v for k, v in row.items()}
    if not isinstance(row.get("user_input"), str) or not row["user_input"].strip():
        raise RagError(f"{path}:{n}: no `user_input` (or `question`) field")
    known = GoldenItem.__dataclass_fields__
    fields = {k: v for k, v in row.items() if k in known}
    fields.setdefault("id", f"line{n}")
    fields["id"] = str(fields["id"])
    if "answerable" not in row:
        fields["answerable"] = bool(fields.get("reference_doc_ids") or fields.get("reference_contexts") or True)
    return GoldenItem(**fields)


def to_ragas_samples(items: list[GoldenItem], answers: dict[str, dict] | None = None) -> list[dict]:
    """RAGAS `SingleTurnSample` rows; with answers, `response` and `retrieved_contexts` too."""
    rows = []
    for item in items:
        row = {"user_input": item.user_input, "reference": item.reference, "reference_contexts": item.reference_contexts}
        if answers and item.id in answers:
            row["response"] = answers[item.id].get("answer", "")
            row["retrieved_contexts"] = [s["text"] for s in answers[item.id].get("sources", [])]
        rows.append(row)
    return rows


def to_beir_qrels(items: list[GoldenItem]) -> list[str]:
    """BEIR qrels TSV lines: query-id, corpus-id, score."""
    lines = ["query-id\tcorpus-id\tscore"]
    for item in items:
        lines.extend(f"{item.id}\t{doc_id}\t1" for doc_id in item.reference_doc_ids)
    return lines


def to_trec_qrels(items: list[GoldenItem]) -> list[str]:
    """TREC qrels lines: query id, iteration (0), document id, relevance (1): the answerable questions' articles."""
    return [f"{item.id} 0 {doc_id} 1" for item in items if item.answerable for doc_id in item.reference_doc_ids]


def add_golden_item(path: Path, item: GoldenItem) -> None:
    """Append one question to a JSONL golden set (rewritten whole, atomically); its id must be new."""
    from rag.files import atomic_write

    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    items, _ = read_golden(path) if existing.strip() else ([], [])
    if item.id in {i.id for i in items}:
        raise RagError(f"{path} already has a question with id {item.id!r}; choose another id")
    if existing and not existing.endswith("\n"):
        existing += "\n"
    atomic_write(path, (existing + json.dumps(item.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))


def draft_from_answer(answer: dict, item_id: str) -> GoldenItem:
    """A golden question drafted from an answer (`Answer.to_json()`): the answer, without its markers,
    as the reference an evaluator edits; the passage sentences it rests on (else the cited passages)
    as the reference contexts; the cited articles as the reference documents."""
    from rag.citations import MARKER_GROUP

    sources = answer.get("sources", [])
    cited = sorted({c["marker"] for c in answer.get("citations", []) if 1 <= c["marker"] <= len(sources)})
    rested = [sources[span["marker"] - 1]["text"][span["start"]:span["end"]]
              for sentence in answer.get("sentences", []) for span in sentence.get("spans", [])
              if 1 <= span["marker"] <= len(sources)]
    contexts = list(dict.fromkeys(rested or [sources[n - 1]["text"] for n in cited]))
    return GoldenItem(id=item_id, user_input=answer["question"], reference=" ".join(MARKER_GROUP.sub("", answer["answer"]).split()),
                      reference_doc_ids=list(dict.fromkeys(sources[n - 1]["doc_id"] for n in cited)),
                      reference_contexts=contexts, answerable=not answer.get("refused", False), type="from-chat")
