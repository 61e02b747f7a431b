"""Feedback and grades in SQLite: round trip, concurrent writers, crash safety, private file."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from rag.feedback import FeedbackStore


def test_round_trip_and_latest_answer(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    first = store.record_answer("s1", "q1", "a1", "rendered one", {"question": "q1"})
    time.sleep(0.01)
    second = store.record_answer("s1", "q2", "a2", "rendered two", {"question": "q2"})
    assert store.find_answer("s1") == second
    assert store.find_answer("s1", "rendered one") == first
    assert store.find_answer("other") is None
    store.add_feedback(first, "down", "wrong number")
    assert store.feedback() == [{"answer_id": first, "rating": "down", "comment": "wrong number"}]
    assert store.trace(second)["trace"] == {"question": "q2"}
    store.set_grade("run1", "q001", "partly", "half right")
    store.set_grade("run1", "q001", "correct")  # a second grade replaces the first
    assert store.grades("run1") == {"q001": {"grade": "correct", "comment": ""}}
    with pytest.raises(ValueError):
        store.set_grade("run1", "q002", "great")
    assert stat.S_IMODE(os.stat(tmp_path / "f.sqlite").st_mode) == 0o600


def test_concurrent_writers_lose_no_rows(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    answer = store.record_answer("s", "q", "a", "r", {})

    def write(n: int) -> None:
        for i in range(25):
            store.add_feedback(answer, "up", f"{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.feedback()) == 200


def test_a_process_killed_mid_write_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "f.sqlite"
    FeedbackStore(path)
    script = (
        "import sys; from pathlib import Path; from rag.feedback import FeedbackStore\n"
        "s = FeedbackStore(Path(sys.argv[1])); a = s.record_answer('s', 'q', 'a', 'r', {})\n"
        "print('ready', flush=True)\n"
        "while True: s.add_feedback(a, 'up', 'x' * 1000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    written = db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    assert written > 0
    store = FeedbackStore(path)  # and it keeps working
    store.add_feedback(store.find_answer("s"), "down")
    assert len(store.feedback()) == written + 1
