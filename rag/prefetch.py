"""Prefetching: a build's files read and chunked in a worker process while this process loads what
will embed them.

Reading, chunking and importing torch are all Python-bound: in threads they take turns (a thread
loading the model made a rebuild slower), in two processes they overlap. On the Debian Reference and
the R manuals (1,293 passages, 2 cores) the first batch is embedded at 5.5 s instead of 7.8-9.3 s.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

from rag.chunking import Chunker, passage_units
from rag.errors import IngestError
from rag.ingest import load_document
from rag.records import Chunk, Document

log = logging.getLogger(__name__)

PREFETCH_MIN_BYTES = 256_000  # fewer bytes to read are read here: starting a worker (about 0.3 s) would not pay
# Characters of text read so far from which the build is large enough for the embedder to prepare
# for it: about 180 passages (350-770 characters of text per passage on the nine collections, 550 typically)
LARGE_BUILD_CHARS = 100_000
Spans = tuple[int, int]
LARGE = "large"  # the worker's first message when it has read a large build's text


Made = dict[str, tuple[Document | IngestError, list[Chunk], list[list[Spans]]]]  # by path: document, chunks, their units


def _read_and_chunk(paths: list[str], chunker: Chunker, large_build: int, front, back, out) -> None:
    """The worker: each file it takes made into a document, chunks and their answer units (split
    here, where the chunker's sentence splits are cached), or why it cannot be read; all sent at the
    end in one message (a message per file would stall the worker while this process is busy loading)."""
    made: Made = {}
    chars = 0
    for path in _from_the_front(paths, front, back):
        doc = _read(path)
        if isinstance(doc, Document):
            before, chars = chars, chars + len(doc.text)
            if before < large_build <= chars:
                out.send(LARGE)  # before chunking: one large file is worth preparing for at once
        made[path] = _made(doc, chunker)
    out.send(made)
    out.close()


def _from_the_front(paths: list[str], front, back) -> Iterator[str]:
    """The worker's files: from the first on, until it meets those this process took from the last.
    No lock: a process killed holding one would stall the other; at worst both make one file."""
    for i, path in enumerate(paths):
        if i >= back.value:
            return
        front.value = i + 1
        yield path


def _from_the_back(paths: list[str], front, back) -> Iterator[str]:
    """This process's files, once it is ready: from the last back, until it meets the worker's."""
    for i in range(len(paths) - 1, -1, -1):
        if i < front.value:
            return
        back.value = i
        yield paths[i]


def _read(path: str) -> Document | IngestError:
    try:
        return load_document(Path(path))
    except IngestError as exc:
        return exc


def _made(doc: Document | IngestError, chunker: Chunker) -> tuple[Document | IngestError, list[Chunk], list[list[Spans]]]:
    if isinstance(doc, IngestError):
        return doc, [], []
    chunks = chunker.chunk(doc)
    return doc, chunks, [passage_units(c) for c in chunks]


class Prefetch:
    """Documents and chunks made by a worker process. `read` stands in for `load_document`; the first
    call waits for the worker, calls `on_large_build` as soon as it has read `large_build` characters
    of text, while it goes on, and then makes here the files it has not reached yet."""

    def __init__(self, paths: list[str], chunker: Chunker, on_large_build: Callable[[], None], large_build: int):
        context = multiprocessing.get_context("spawn")  # forking a process that runs threads (the UI, the API) is unsafe
        self._inbox, outbox = context.Pipe(duplex=False)
        self._paths, self._chunker = paths, chunker
        self._front, self._back = context.RawValue("i", 0), context.RawValue("i", len(paths))  # each written by one process
        self._worker = context.Process(target=_read_and_chunk, args=(paths, chunker, large_build, self._front, self._back, outbox),
                                       daemon=True)
        self._worker.start()
        outbox.close()  # the worker's copy only: if it dies, reading the inbox ends instead of waiting
        self._on_large_build = on_large_build
        self._made: Made | None = None
        self._units_by_chunk: dict[int, list[Spans]] = {}

    def read(self, path: Path) -> Document:
        """The worker's document of `path`, or its reason to skip it; a file the worker did not read, read here."""
        made = self._results().get(str(path))
        if made is None:
            return load_document(path)
        doc = made[0]
        if isinstance(doc, IngestError):
            raise doc
        return doc

    def chunks(self, doc: Document) -> list[Chunk] | None:
        """The worker's chunks of this very document (not of a stored one from the same file)."""
        made = self._results().get(doc.source_path or "")
        return made[1] if made is not None and made[0] is doc else None

    def units(self, chunk: Chunk) -> list[Spans]:
        """`passage_units` of a chunk: the worker's, for a chunk it made."""
        made = self._units_by_chunk.get(id(chunk))
        return made if made is not None else passage_units(chunk)

    def _results(self) -> Made:
        if self._made is None:
            self._made = self._collect()
            self._units_by_chunk = {id(c): u for _, chunks, units in self._made.values() for c, u in zip(chunks, units)}
        return self._made

    def _collect(self) -> Made:
        here: Made = {}
        try:
            message = self._inbox.recv()
            if message == LARGE:
                self._on_large_build()
                # ready before the worker is done: the files it has not reached yet are shared with it
                here = {path: _made(_read(path), self._chunker) for path in _from_the_back(self._paths, self._front, self._back)}
                message = self._inbox.recv()
        except EOFError:
            message = None
        finally:
            self._inbox.close()
        self._worker.join()
        if message is None:
            log.warning("the process reading the files stopped (exit code %s); reading them here", self._worker.exitcode)
        return (message or {}) | here
