"""Files the project persists: written whole or not at all, readable by their owner only."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

PRIVATE_FILE, PRIVATE_FOLDER = 0o600, 0o700


def private_write(path: Path, data: bytes, append: bool = False) -> None:
    """Write (or append to) a file readable by its owner only, on disk when this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), PRIVATE_FILE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    private_write(tmp, data)
    os.replace(tmp, path)


def open_private_append(path: Path, mode: str = "a"):
    """A file opened to append to (`mode` "a" or "ab"), created readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    return open(fd, mode, encoding=None if "b" in mode else "utf-8")


def make_private(folder: Path) -> None:
    """A folder whose files a library wrote with the default mode, made the owner's only."""
    os.chmod(folder, PRIVATE_FOLDER)
    for f in folder.iterdir():
        os.chmod(f, PRIVATE_FILE)


def jsonl_bytes(rows) -> bytes:
    """One JSON object a line, UTF-8, non-ASCII kept as it is."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
