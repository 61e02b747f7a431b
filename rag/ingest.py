"""Ingestion: files on disk -> cleaned `Document`s. Unreadable files are reported, not fatal."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rag.cleaning import clean_text
from rag.errors import IngestError
from rag.html_reader import read_html
from rag.pdf_reader import read_pdf
from rag.records import Document
from rag.structure import DocumentBuilder

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf")
# Changes when the readers make different documents from the same file: an index made by other
# readers has its files read again, not its stored documents chunked again.
READER_VERSION = "blocks-6"
MAX_FILE_BYTES = 20_000_000


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)  # read and cleaned
    unchanged: list[str] = field(default_factory=list)  # ids of documents whose files were not read again
    skipped: list[Skipped] = field(default_factory=list)
    file_stats: dict[str, list[int]] = field(default_factory=dict)  # doc_id -> [size, mtime_ns] of its file


# Given a file's path and stat, the id of the document already made from it, if the file has not changed since.
Reuse = Callable[[str, os.stat_result], str | None]


def file_stat(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns]


def doc_id_for(path: Path) -> str:
    """A document's id is its file name without the extension."""
    return re.sub(r"[^\w.-]", "_", path.stem)


def discover(paths: list[Path]) -> list[str]:
    """Supported files among `paths` (folders are searched recursively), resolved, sorted, deduplicated.
    Strings, not Paths: making 20,000 Path objects takes half a second."""
    found: list[str] = []
    for path in paths:
        if path.is_dir():
            found.extend(_supported_files(path.resolve()))
        elif path.is_file():
            found.append(str(path.resolve()))
        else:
            raise IngestError(f"{path}: no such file or folder; check the path or run `rag index --seeds DIR`")
    return sorted(set(found))


def _supported_files(folder: Path) -> list[str]:
    # os.walk reads each folder's entry types without a stat per file
    return [
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(SUPPORTED_SUFFIXES)
    ]


def files_to_read(paths: list[Path], reuse: Reuse | None = None) -> dict[str, int]:
    """The supported files `load_documents` would read (not those `reuse` spares), with their sizes."""
    sizes = {}
    for path in discover(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue  # load_documents reports it
        if not (reuse and reuse(path, st)):
            sizes[path] = st.st_size
    return sizes


def load_documents(paths: list[Path], reuse: Reuse | None = None,
                   read: Callable[[Path], Document] | None = None) -> LoadResult:
    """Read and clean every supported file; `reuse` spares re-reading files that have not changed;
    `read` (by default `load_document`) makes one file's document."""
    read = read or load_document
    result = LoadResult()
    seen: dict[str, str] = {}
    for path in discover(paths):
        try:
            st = os.stat(path)
            reused = reuse(path, st) if reuse else None
            doc = None if reused else read(Path(path))
        except OSError as exc:
            result.skipped.append(Skipped(path, f"{path}: cannot be read ({exc.strerror})"))
            continue
        except IngestError as exc:
            log.warning("skipped %s", exc)
            result.skipped.append(Skipped(path, str(exc)))
            continue
        doc_id = reused or doc.doc_id
        if doc_id in seen:
            reason = f"{path}: same document id as {seen[doc_id]}; rename one of them"
            result.skipped.append(Skipped(path, reason))
            continue
        seen[doc_id] = path
        if reused:
            result.unchanged.append(reused)
        else:
            result.documents.append(doc)
        result.file_stats[doc_id] = file_stat(st)
    return result


def load_document(path: Path) -> Document:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(f"{path}: unsupported file type {suffix or '(none)'}; use .txt, .md, .html or .pdf")
    try:
        size = path.stat().st_size  # before reading: a huge file must not be loaded into memory
        if size > MAX_FILE_BYTES:
            raise IngestError(f"{path}: {size // 1_000_000} MB is larger than the {MAX_FILE_BYTES // 1_000_000} MB limit for one article; split it")
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror})") from exc
    if not data.strip():
        raise IngestError(f"{path}: the file is empty")
    if suffix == ".pdf":
        doc = _from_pdf(path, data)
    else:
        text = _decode(path, data)
        doc = _from_html(path, text) if suffix in (".html", ".htm") else _from_text(path, text)
    if not doc.text.strip():
        raise IngestError(f"{path}: no article text left after cleaning")
    return doc


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise IngestError(f"{path}: looks binary (NUL bytes), not text; save it as UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8") from exc


def _from_text(path: Path, text: str) -> Document:
    c = clean_text(text)
    return Document(doc_id_for(path), c.text, c.title, c.date, c.publisher, c.url, str(path), c.removed, c.blocks)


def _from_html(path: Path, html: str) -> Document:
    builder = DocumentBuilder()
    try:
        metadata = read_html(html, builder)
    except ValueError as exc:
        raise IngestError(f"{path}: no readable article text found in the HTML ({exc})") from exc
    doc = builder.build(doc_id_for(path), str(path), **metadata)
    if not doc.text.strip():
        raise IngestError(f"{path}: no readable article text found in the HTML")
    return doc


def _from_pdf(path: Path, data: bytes) -> Document:
    builder = DocumentBuilder()
    try:
        metadata = read_pdf(data, builder)
    except ValueError as exc:
        raise IngestError(f"{path}: not a readable PDF ({exc}); re-export it or save the text as .txt") from exc
    metadata["title"] = metadata["title"] or path.stem
    return builder.build(doc_id_for(path), str(path), **metadata)
