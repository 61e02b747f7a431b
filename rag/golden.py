"""The golden Q&A set: load (also RAGAS' older field names), validate, export."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.errors import RagError

# RAGAS' older names -> ours
ALIASES = {"question": "user_input", "ground_truth": "reference", "contexts": "reference_contexts"}


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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise RagError(f"{path}: {what} not found; check the path (JSONL, one object per line)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"{path}: cannot read the {what} ({exc.__class__.__name__}); give a UTF-8 JSONL file") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RagError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise RagError(f"{path}:{n}: expected a JSON object")
        rows.append((n, row))
    return rows


def load_golden(path: Path) -> list[GoldenItem]:
    items = [_item(row, path, n) for n, row in read_jsonl(path, "golden set")]
    if not items:
        raise RagError(f"{path}: the golden set is empty")
    return items


def _item(row: dict, path: Path, n: int) -> GoldenItem:
    row = {ALIASES.get(k, k): v for k, v in row.items()}
    if not row.get("user_input"):
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
