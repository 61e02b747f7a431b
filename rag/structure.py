"""The structured document model: readers hand blocks to a `DocumentBuilder`, which lays them
out as the document's text (blocks separated by a blank line), with offsets and section paths.

Prose blocks (paragraphs, list items, quotes) become one line each: the hard line breaks of
HTML source, generated docs and PDFs are joined, so a sentence never ends at a wrap. Code and
table blocks keep one line per code line or table row and never contain a blank line, so every
later stage can tell them apart by the line breaks inside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from rag.boilerplate import boilerplate_reason
from rag.records import SECTION_SEPARATOR, Block, Document, Removal

CELL_SEPARATOR = " | "
MAX_REMOVED_CHARS = 500
_SPACES = re.compile(r"\s+")
# A list item's mark at the start of a line: a bullet, a dash, "1." / "(2)" or "a)".
BULLET_SIGNS = "[•◦▪‣∙·●○■□–—*-]"  # the marks alone, also what a note or item opens with in `extractive`
BULLET = re.compile(rf"^(?:{BULLET_SIGNS}|\(?\d{{1,2}}[.)]|\(?[a-z][.)])\s+\S")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b]")  # incl. soft hyphen, zero-width space


def join_wrapped(text: str) -> str:
    """One line of prose: hard wraps and runs of spaces become single spaces."""
    return _SPACES.sub(" ", _CONTROL.sub("", text)).strip()


def code_lines(text: str) -> str:
    """A code block's lines, common indentation removed, no trailing spaces and no blank lines."""
    lines = [line.rstrip().expandtabs(4) for line in _CONTROL.sub("", text).split("\n")]
    lines = [line for line in lines if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    return "\n".join(line[indent:] for line in lines)


def table_lines(rows: list[list[str]]) -> str:
    """One line per row, cells joined by ' | '; empty rows dropped."""
    lines = [CELL_SEPARATOR.join(join_wrapped(cell) for cell in row) for row in rows]
    return "\n".join(line for line in lines if line.replace("|", "").strip())


TITLE_SEPARATORS = (" | ", " — ", " – ", " - ", " · ", " :: ")


def without_site_suffix(title: str, site: str | None, heading: str | None = None) -> str:
    """'Logging HOWTO — Python 3.11 documentation' -> 'Logging HOWTO': the site's name is not the
    title. `heading`: the page's own top heading; a title that is it plus a suffix is the heading."""
    if heading and title.startswith(heading) and title[len(heading):].startswith(TITLE_SEPARATORS):
        return heading
    for sep in TITLE_SEPARATORS:
        head, found, tail = title.rpartition(sep)
        if found and head and (site and site.lower() in tail.lower() or len(tail.split()) <= 4 and len(head) > len(tail)):
            return head.strip()
    return title


class DocumentBuilder:
    """Collects blocks in reading order and what was removed, then lays out the `Document`."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.removed: list[Removal] = []
        self._length = 0
        self._headings: list[tuple[int, str]] = []  # (level, text) of the open sections

    @property
    def section(self) -> str:
        return SECTION_SEPARATOR.join(text for _, text in self._headings)

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        self._open_section("heading", text, level, page)

    @contextmanager
    def subsection(self, term: str) -> Iterator[None]:
        """A part inside the current section titled by a term (a documented function's signature): the
        term is in the section path of what it holds, and only of that. Unlike a heading, it is text
        an answer may quote ("connect(dsn=None, cursor_factory=None, …)" is the defaults asked for)."""
        open_sections = list(self._headings)
        self._open_section("term", term, (open_sections[-1][0] if open_sections else 0) + 1, None)
        try:
            yield
        finally:
            self._headings = open_sections

    def _open_section(self, kind: str, text: str, level: int, page: int | None) -> None:
        """A heading or a term: what follows is in its section, and out of those at its level or deeper."""
        if not (text := self._article_text(text)):
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self._append(kind, text, page, level)

    def prose(self, kind: str, text: str, page: int | None = None) -> None:
        """A paragraph, list item or quote."""
        if text := self._article_text(text):
            self._append(kind, text, page)

    def code(self, text: str, page: int | None = None) -> None:
        if text := code_lines(text):
            self._append("code", text, page)

    def table(self, rows: list[list[str]], page: int | None = None) -> None:
        if text := table_lines(rows):
            self._append("table", text, page)

    def _article_text(self, text: str) -> str:
        """The text as one line, or "" when it is empty or page furniture (recorded with its reason)."""
        text = join_wrapped(text)
        if text and (reason := boilerplate_reason(text)):
            self.remove(text, reason)
            return ""
        return text

    def remove(self, text: str, reason: str) -> None:
        """Record what was removed; a long piece (a page's scripts, a menu) is kept to its start."""
        if text := join_wrapped(text):
            self.removed.append(Removal(text if len(text) <= MAX_REMOVED_CHARS else text[:MAX_REMOVED_CHARS] + "…", reason))

    def replace_last(self, text: str) -> None:
        """Rewrite the last block's text (a paragraph continued after a page break)."""
        block = self.blocks[-1]
        text = join_wrapped(text)
        self._length += len(text) - len(self.parts[-1])
        self.parts[-1] = text
        self.blocks[-1] = Block(block.kind, block.start, block.start + len(text), block.section, block.level, block.page)

    def _append(self, kind: str, text: str, page: int | None, level: int = 0) -> None:
        start = self._length + (2 if self.parts else 0)
        self.parts.append(text)
        self._length = start + len(text)
        self.blocks.append(Block(kind, start, self._length, self.section, level, page))

    def build(self, doc_id: str, source_path: str | None = None, **metadata: str | None) -> Document:
        return Document(doc_id, "\n\n".join(self.parts), source_path=source_path, removed=self.removed,
                        blocks=self.blocks, **metadata)
