"""Feedback and grades in one local SQLite file: answers with their traces, students' thumbs
up/down with comments, evaluators' grades. Every write is one transaction; the file is user-only."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from rag.files import open_private_append

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY, session TEXT, question TEXT, answer TEXT, rendered TEXT,
    trace TEXT, created REAL);
CREATE INDEX IF NOT EXISTS answers_session ON answers(session, created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT REFERENCES answers(answer_id),
    rating TEXT CHECK (rating IN ('up', 'down', 'comment')), comment TEXT, created REAL);
CREATE TABLE IF NOT EXISTS grades (
    run_id TEXT, question_id TEXT, grade TEXT CHECK (grade IN ('correct', 'partly', 'wrong')),
    comment TEXT, created REAL, PRIMARY KEY (run_id, question_id));
"""
GRADES = ("correct", "partly", "wrong")


class FeedbackStore:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            open_private_append(path).close()
        self._local = threading.local()
        self._db().executescript(SCHEMA)  # idempotent; executescript manages its own transaction

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self):
        return self._Tx(self._db())

    def record_answer(self, session: str, question: str, answer: str, rendered: str, trace: dict) -> str:
        answer_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (answer_id, session, question, answer, rendered, json.dumps(trace, ensure_ascii=False), time.time()),
            )
        return answer_id

    def find_answer(self, session: str, rendered: str | None = None) -> str | None:
        """The session's latest answer (with this rendered text, if given)."""
        query = "SELECT answer_id FROM answers WHERE session = ?"
        args: list = [session]
        if rendered is not None:
            query += " AND rendered = ?"
            args.append(rendered)
        row = self._db().execute(query + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return row[0] if row else None

    def trace(self, answer_id: str) -> dict | None:
        row = self._db().execute("SELECT question, answer, trace FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
        if row is None:
            return None
        return {"answer_id": answer_id, "question": row[0], "answer": row[1], "trace": json.loads(row[2])}

    def add_feedback(self, answer_id: str, rating: str, comment: str = "") -> None:
        with self._tx() as db:
            db.execute("INSERT INTO feedback (answer_id, rating, comment, created) VALUES (?, ?, ?, ?)",
                       (answer_id, rating, comment, time.time()))

    def feedback(self) -> list[dict]:
        rows = self._db().execute("SELECT answer_id, rating, comment FROM feedback ORDER BY id").fetchall()
        return [{"answer_id": a, "rating": r, "comment": c} for a, r, c in rows]

    def set_grade(self, run_id: str, question_id: str, grade: str, comment: str = "") -> None:
        if grade not in GRADES:
            raise ValueError(f"grade must be one of {GRADES}")
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?)", (run_id, question_id, grade, comment, time.time()))

    def grades(self, run_id: str) -> dict[str, dict]:
        rows = self._db().execute("SELECT question_id, grade, comment FROM grades WHERE run_id = ?", (run_id,)).fetchall()
        return {q: {"grade": g, "comment": c} for q, g, c in rows}
