"""PDF -> blocks and metadata, in reading order, with page numbers.

PDFium (pypdfium2) gives each character with its box, font size and font flags, and splits the
page into lines. From the lines:
- page furniture is removed with its reason: a line that comes back at the same place on many
  pages (running heads, footers, a site banner printed on every page) and lone page numbers;
- headings are lines set larger than the body text (levels by size), joined when wrapped;
- code is a run of lines in a fixed-pitch font, kept line by line with its indentation;
- table rows are lines whose words stand in columns (wide gaps between cells);
- the rest is prose: a new paragraph starts after a vertical gap, at an indented first line
  or at a bullet; wrapped lines are joined, a word hyphenated at a line end is made whole,
  and a paragraph that runs over a page break is continued on the next page.
Metadata comes from the document information (title, and the date unless a browser printed it).
"""

from __future__ import annotations

import ctypes
import functools
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field

from rag.structure import BULLET, DocumentBuilder, join_wrapped, without_site_suffix

FIXED_PITCH, FORCE_BOLD = 1, 1 << 18  # PDF font descriptor flags
SOFT_HYPHEN = 2  # how PDFium reports a hyphen that breaks a word at a line end
BOLD_NAME = re.compile(r"bold|black|heavy|semibold|demi|cmbx|\+cmb\d", re.I)
NUMBERED_HEADING = re.compile(r"^(?:\d+|[A-Z])(?:\.\d+)+\.?\s+\S")  # "4.2.1 Title", "A.3. Title"
MONOSPACE_NAME = re.compile(r"mono|courier|cmtt|sftt|typewriter|consol|menlo|inconsolata|lmmono|\btt\d", re.I)
DOT_LEADER = re.compile(r"(?:\.\s?){4,}\s*\S{1,6}$")  # "Preface . . . . . 1": a table of contents line
NUMBERED_EDGE = re.compile(r"^\d{1,4}\s|\s\d{1,4}$")  # a running head carries the page number
PAGE_NUMBER = re.compile(r"^(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s*(?:/|of)\s*\d{1,4})?$", re.I)
BROWSER_PRODUCER = re.compile(r"skia|chrom|mozilla|webkit|gecko|wkhtmltopdf|princexml|weasyprint", re.I)
HEADING_RATIO = 1.12  # a line this much larger than the body text is a heading
CELL_GAP = 1.8  # a horizontal gap this many font sizes wide separates table cells
PARAGRAPH_GAP = 1.35  # a line pitch this much larger than usual starts a new paragraph
REPEAT_SHARE = 0.5  # a line at the same place on this share of the pages is page furniture
MARGIN_SHARE = 0.09  # top and bottom zones where running heads, footers and page numbers sit


@dataclass
class Line:
    text: str
    page: int  # 1-based
    x0: float
    top: float
    x1: float
    bottom: float
    size: float
    monospace: bool
    bold: bool = False
    cells: list[str] = field(default_factory=list)  # more than one: a table row
    last_cell_x: float = 0.0  # where a table row's last cell starts: its wrapped lines start there too

    @property
    def height(self) -> float:
        return self.bottom - self.top


def read_pdf(data: bytes, builder: DocumentBuilder) -> dict[str, str | None]:
    """Fill `builder` with the document's blocks; return its metadata. Raises ValueError for a
    file PDFium cannot open."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise ValueError(str(exc)) from exc
    try:
        read = [_page_lines(page, number) for number, page in enumerate(pdf, 1)]
        info = pdf.get_metadata_dict(skip_empty=True)
    finally:
        pdf.close()
    pages, heights = [lines for lines, _ in read], [height for _, height in read]
    pages = _without_furniture(pages, heights, builder)
    lines = [line for page in pages for line in page]
    _Layout(builder, lines).lay_out()
    return _metadata(info, lines)


def _page_lines(page, number: int) -> tuple[list[Line], float]:
    """The page's lines as PDFium segments them, and the page's height; fragments at the same
    height (a footnote mark, a change of font) are rejoined."""
    import pypdfium2.raw as raw

    height = page.get_height()
    textpage = page.get_textpage()
    handle = textpage.raw
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    name, flags = ctypes.create_string_buffer(64), ctypes.c_int()
    lines: list[Line] = []
    chars: list[tuple[str, float, float, float, float, float, bool, bool]] = []
    font_cache: dict[tuple[bytes, int], tuple[bool, bool]] = {}
    count = textpage.count_chars()
    for i in range(count + 1):
        code = raw.FPDFText_GetUnicode(handle, i) if i < count else 10  # a last line break flushes the last line
        if code in (10, 13) or code == 0xFFFE:
            if chars:
                _add_line(lines, chars, number)
                chars = []
            continue
        raw.FPDFText_GetCharBox(handle, i, left, right, bottom, top)
        size = raw.FPDFText_GetFontSize(handle, i)
        if chars and not chr(code).isspace() and abs((height - bottom.value) - chars[-1][4]) > 0.6 * max(size, 1):
            _add_line(lines, chars, number)  # a jump to another height: PDFium did not mark this line break
            chars = []
        length = raw.FPDFText_GetFontInfo(handle, i, name, 64, flags)
        key = (name.raw[:length], flags.value)
        if key not in font_cache:
            font_name = name.value.decode("latin-1")
            font_cache[key] = (bool(flags.value & FIXED_PITCH) or bool(MONOSPACE_NAME.search(font_name)),
                               bool(flags.value & FORCE_BOLD) or bool(BOLD_NAME.search(font_name)))
        chars.append(("-" if code == SOFT_HYPHEN else chr(code), left.value, height - top.value, right.value, height - bottom.value, size, *font_cache[key]))
    textpage.close()
    page.close()
    # Reading order is top to bottom: a browser draws a page's header last. (One column assumed.)
    return sorted(lines, key=lambda line: (round(line.top / 3), line.x0)), height


def _add_line(lines: list[Line], chars: list, page: int) -> None:
    visible = [c for c in chars if not c[0].isspace()]
    if not visible:
        return
    size = statistics.median(c[5] for c in visible)
    cells, cell = [], ""
    previous_right, cell_x = None, visible[0][1]
    for ch, x0, _, x1, *_ in chars:
        if previous_right is not None and not ch.isspace() and x0 - previous_right > CELL_GAP * size and cell.strip():
            cells.append(cell)
            cell, cell_x = "", x0
        cell += ch
        if not ch.isspace():
            previous_right = x1
    cells.append(cell)
    line = Line(
        text="".join(c[0] for c in chars).strip(), page=page,
        x0=min(c[1] for c in visible), top=min(c[2] for c in visible),
        x1=max(c[3] for c in visible), bottom=max(c[4] for c in visible),
        size=size, monospace=sum(c[6] for c in visible) >= 0.8 * len(visible),
        bold=sum(c[7] for c in visible) >= 0.8 * len(visible),
        cells=[join_wrapped(c) for c in cells if c.strip()], last_cell_x=cell_x,
    )
    last = lines[-1] if lines else None
    if last and abs(last.top - line.top) < 0.5 * min(last.height, line.height) and line.x0 >= last.x1 - 1:
        gap_cells = line.x0 - last.x1 > CELL_GAP * max(size, last.size)
        lines[-1] = Line(
            text=f"{last.text} {line.text}", page=page, x0=last.x0, top=min(last.top, line.top), x1=line.x1,
            bottom=max(last.bottom, line.bottom), size=max(last.size, line.size) if gap_cells else last.size,
            monospace=last.monospace and line.monospace, bold=last.bold and line.bold,
            cells=last.cells + line.cells if gap_cells else [*last.cells[:-1], f"{last.cells[-1]} {line.cells[0]}", *line.cells[1:]],
            last_cell_x=line.last_cell_x if gap_cells or len(line.cells) > 1 else last.last_cell_x,
        )
        return
    lines.append(line)


def _without_furniture(pages: list[list[Line]], heights: list[float], builder: DocumentBuilder) -> list[list[Line]]:
    """Drop running heads and footers, banners repeated on every page, and lone page numbers."""

    def shape(line: Line) -> tuple[str, int]:
        return re.sub(r"\d+", "#", line.text.lower()), round(line.top / 12)

    def in_margin(line: Line) -> bool:
        height = heights[line.page - 1]
        return line.top < MARGIN_SHARE * height or line.bottom > (1 - MARGIN_SHARE) * height

    counts = Counter(s for page in pages for s in {shape(line) for line in page})
    threshold = max(2, REPEAT_SHARE * len(pages))
    kept_pages = []
    for page in pages:
        kept = []
        for line in page:
            repeats = counts[shape(line)]
            margin_threshold = 2 if NUMBERED_EDGE.search(line.text) else max(3, 0.1 * len(pages))
            if in_margin(line) and PAGE_NUMBER.match(line.text):
                builder.remove(line.text, "page number")
            elif len(pages) > 1 and (repeats >= threshold or in_margin(line) and repeats >= margin_threshold):
                builder.remove(line.text, "repeated on many pages (running head, footer or banner)")
            elif DOT_LEADER.search(line.text):
                builder.remove(line.text, "table of contents")
            else:
                kept.append(line)
        kept_pages.append(kept)
    return kept_pages


class _Layout:
    """Turns the document's lines, in reading order, into blocks."""

    def __init__(self, builder: DocumentBuilder, lines: list[Line]):
        self.b = builder
        self.lines = lines
        prose = [line for line in lines if not line.monospace] or lines
        self.body_size = Counter(round(line.size, 1) for line in prose for _ in line.text).most_common(1)[0][0] if prose else 0
        self.left = Counter(round(line.x0) for line in prose).most_common(1)[0][0] if prose else 0
        pitches = [b.top - a.top for a, b in zip(prose, prose[1:]) if a.page == b.page and 0 < b.top - a.top < 3 * a.size]
        self.pitch = statistics.median(pitches) if pitches else 1.2 * self.body_size
        heading_sizes = sorted({round(line.size) for line in prose if self._is_heading_size(line)}, reverse=True)
        self.levels = {size: level for level, size in enumerate(heading_sizes, 1)}
        self.cell_x = 0.0  # where the last table row's last cell starts

    def _is_heading_size(self, line: Line) -> bool:
        return line.size >= HEADING_RATIO * self.body_size and len(line.text) < 150

    def lay_out(self) -> None:
        kind, parts, continuing = None, [], False  # the block being gathered
        previous: Line | None = None
        footnotes: list[Line] = []  # set below the text of a page; placed at the end of their section
        for page in _by_page(self.lines):
            body, notes = self._split_footnotes(page)
            for line in body:
                line_kind = self._kind(line)
                if line_kind == "table":
                    self.cell_x = line.last_cell_x
                if kind and self._continues(kind, parts, line, line_kind):
                    parts.append(line)
                elif kind == "paragraph" and line_kind == "paragraph" and self._runs_over_page(previous, line):
                    self._flush(kind, parts, continuing)
                    kind, parts, continuing = "paragraph", [line], True
                else:
                    self._flush(kind, parts, continuing)
                    if line_kind == "heading":  # footnotes close the section they belong to
                        for note in footnotes:
                            self.b.prose("paragraph", note.text, note.page)
                        footnotes = []
                    kind, parts, continuing = line_kind, [line], False
                previous = line
            footnotes.extend(notes)
        self._flush(kind, parts, continuing)
        for note in footnotes:
            self.b.prose("paragraph", note.text, note.page)

    def _split_footnotes(self, page: list[Line]) -> tuple[list[Line], list[Line]]:
        """Lines in small print at the foot of a page are footnotes."""
        cut = len(page)
        while cut > 0 and page[cut - 1].size < 0.9 * self.body_size and not page[cut - 1].monospace:
            cut -= 1
        if cut == 0 or cut == len(page) or page[cut].top < page[cut - 1].bottom:
            return page, []
        return page[:cut], page[cut:]

    def _kind(self, line: Line) -> str:
        if line.monospace:
            return "code"
        if self._is_heading_size(line) and line.size > self.body_size:
            return "heading"
        if len(line.cells) > 1:
            return "table"
        if BULLET.match(line.text):
            return "list_item"
        if line.bold and NUMBERED_HEADING.match(line.text) and len(line.text) < 100 and not _ends_sentence(line.text):
            return "heading"  # a numbered heading set in bold at the size of the body text ("11.7.3.1. Configuring NSS")
        return "paragraph"

    def _continues(self, kind: str, parts: list[Line], line: Line, line_kind: str) -> bool:
        previous = parts[-1]
        if previous.page != line.page:
            return False
        if kind == "heading":
            return line_kind == "heading" and abs(line.size - previous.size) < 0.5 and line.top - previous.bottom < previous.height
        if kind == "table" and line_kind == "paragraph":  # a cell's text wrapped onto the next line
            return line.x0 >= self.cell_x - 0.5 * line.size and line.top - previous.top < PARAGRAPH_GAP * self.pitch
        if kind in ("code", "table"):
            return line_kind == kind and line.top - previous.top < 2.2 * self.pitch
        if line_kind != "paragraph":
            return False
        if not line.bold and all(p.bold for p in parts):  # a title set in bold on top of its text ("CULTURE The good old days…")
            return False
        gap = line.top - previous.top > PARAGRAPH_GAP * self.pitch
        indented = line.x0 - self.left > 0.8 * self.body_size and previous.x0 - self.left <= 0.8 * self.body_size
        return not gap and not (kind == "paragraph" and indented and _ends_sentence(previous.text))

    def _runs_over_page(self, previous: Line | None, line: Line) -> bool:
        """The first line of a page continues the paragraph the last page ended with, when that
        paragraph did not end a sentence and the line is not indented as a new paragraph's first."""
        return (
            previous is not None and previous.page != line.page
            and not _ends_sentence(previous.text) and line.x0 - self.left <= 0.8 * self.body_size
        )

    def _flush(self, kind: str | None, parts: list[Line], continuing: bool = False) -> None:
        if not kind or not parts:
            return
        page = parts[0].page
        if continuing:  # the rest of the paragraph the previous page ended with
            self.b.replace_last(_join_wrapped(self.b.parts[-1], _join_prose(parts)))
            return
        if kind == "heading":
            self.b.heading(" ".join(p.text for p in parts), self.levels.get(round(parts[0].size), len(self.levels) + 1), page)
        elif kind == "code":
            indent = min(p.x0 for p in parts)
            width = max(0.6 * parts[0].size, 1.0)  # a fixed-pitch character is about 0.6 em wide
            self.b.code("\n".join(" " * round((p.x0 - indent) / width) + p.text for p in parts), page)
        elif kind == "table":
            rows: list[list[str]] = []
            for part in parts:
                if len(part.cells) > 1 or not rows:
                    rows.append(list(part.cells))
                else:  # the wrapped rest of the row's last cell
                    rows[-1][-1] = _join_wrapped(rows[-1][-1], part.text)
            self.b.table(rows, page)
        else:
            self.b.prose(kind, _join_prose(parts), page)


def _by_page(lines: list[Line]) -> list[list[Line]]:
    pages: dict[int, list[Line]] = {}
    for line in lines:
        pages.setdefault(line.page, []).append(line)
    return list(pages.values())


def _join_prose(lines: list[Line]) -> str:
    return functools.reduce(_join_wrapped, (line.text for line in lines))


def _join_wrapped(before: str, after: str) -> str:
    """Text wrapped from one line to the next: a word hyphenated at the line end ('infor-' +
    'mation') is made whole, other wraps become a space."""
    if re.search(r"[a-z]-$", before) and after[:1].islower():
        return before[:-1] + after
    return f"{before} {after}"


def _ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?:;)\]”\"']$", text.strip()))


def _metadata(info: dict, lines: list[Line]) -> dict[str, str | None]:
    producer = f"{info.get('Producer', '')} {info.get('Creator', '')}"
    date = None
    if not BROWSER_PRODUCER.search(producer):  # a browser's print date is not the document's date
        if m := re.match(r"D?:?(\d{4})(\d{2})(\d{2})", info.get("CreationDate", "")):
            date = "-".join(m.groups())
    title = without_site_suffix(join_wrapped(info.get("Title", "")), None) or _largest_text(lines)
    return {"title": title or None, "date": date, "publisher": None, "url": None}


def _largest_text(lines: list[Line]) -> str | None:
    """No title in the document information: the largest text of the first pages."""
    first = [line for line in lines if line.page <= 2 and len(line.text) > 3]
    if not first:
        return None
    size = max(line.size for line in first)
    return join_wrapped(" ".join(line.text for line in first if line.size >= size - 0.5))[:200]
