"""Cleaning: raw article text -> body text plus metadata, recording everything removed.

Web copies carry banners, bylines, captions, pleas and source lines around the article.
Each rule below removes whole lines (or a paragraph, for pleas) and records why, so
`rag inspect` can show that nothing disappeared silently. Manuals in plain text keep their
structure: underlined headings, numbered section titles, grid tables, records, code told from
indented prose, and a contents list recognised as navigation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rag.boilerplate import boilerplate_reason
from rag.records import Block, Removal
from rag.structure import DocumentBuilder

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
LONG_DATE = rf"(?:{MONTHS})\s+\d{{1,2}},\s+\d{{4}}"
_ISO_DATE_PREFIX = re.compile(r"^\s*date\s+(\d{4}-\d{2}-\d{2})\b\s*")
_LONG_DATE_LINE = re.compile(rf"^({LONG_DATE})$")
_BYLINE = re.compile(rf"^By\s+(?P<who>[\[A-Z].+?)(?:\s+(?P<date>{LONG_DATE}))?$")
_SOURCE_LINE = re.compile(r"^(?:Source|Original url)\s*:\s*(?P<rest>.*)$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•◦‣–]|\d{1,3}[.)])\s+\S")
# A line of one repeated punctuation mark: under a line of text (and over it too, in reStructuredText)
# it makes that line a heading ("4.5. Copyright\n==========="); alone it is a horizontal rule.
_SETEXT_RULE = re.compile(r"^\s{0,3}([=\-~*^#\"'`+:._])\1{2,}\s*$")
# What only code has: a prompt, a call (f(), f(a, b)), braces, an assignment, an arrow, a line continued.
_CODE_SIGNAL = re.compile(r"^(?:>>>|\.\.\.|\$ |# |//)|\w\((?:[^()]*[,'\"=$][^()]*)?\)|[{}]|;$|\s=\s|\w=\S|->|\\$")
_PROSE_MARKS = ".,;:'\"()-?!’“”‘/"
_CLOSING = ")]'\"’”"  # what may close a sentence after its full stop
_GRID_RULE = re.compile(r"^(?:\+[-=+|]*\+|\|[-=|]*\+[-=+|]*\|)$")  # a grid table's border: +-----+ or |----+----|
_FIELD_LINE = re.compile(r"^[A-Z][\w-]*:(?:\s|$)")  # "Field: value", as in control files and headers
# A numbered section's title on a line of its own, as text dumps of manuals write it: "6.1. Format".
MAX_TITLE_WORDS = 10
_NUMBERED_TITLE = re.compile(r"^(\d{1,3}(?:\.\d{1,3})+)\.?\s+[A-Z][^.!?:;]{0,80}$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")

# Paragraphs that plead for subscriptions span several lines; drop the whole paragraph.
PLEA_PARAGRAPH = re.compile(r"\bby subscribing\b|\bsubscribe (now|today)\b|\bsubscri\w+\b.{0,80}\b(help|support) (us|our)\b", re.I)


@dataclass
class Cleaned:
    text: str
    title: str | None = None
    date: str | None = None
    publisher: str | None = None
    url: str | None = None
    removed: list[Removal] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


def strip_markdown(line: str) -> str:
    """Markdown to plain text for one line: headings, emphasis, links, autolinks."""
    line = re.sub(r"^#{1,6}\s+", "", line)
    line = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), line)
    line = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)
    line = re.sub(r"<(https?://[^>\s]+)>", r"\1", line)
    return line.strip()


def parse_long_date(text: str) -> str | None:
    try:
        return datetime.strptime(re.sub(r"\s+", " ", text.strip()), "%B %d, %Y").date().isoformat()
    except ValueError:
        return None


def join_broken_url(rest: str) -> str | None:
    """A URL copied with spaces inside ("...russian-pm- visits-minsk...") comes out whole."""
    rest = rest.strip().strip("<>")
    if not rest.lower().startswith("http"):
        return None
    return re.sub(r"\s+", "", rest).rstrip(".,;")


def publisher_from_byline(who: str) -> str | None:
    who = strip_markdown(who)
    if m := re.search(r"\bfor\s+([A-Z][\w/&.-]*(?:\s[A-Z][\w/&.-]*)*)$", who):
        return m.group(1)
    if m := re.match(r"^([A-Z][\w/&.-]+)'s\b", who):
        return m.group(1)
    return None


def publisher_from_url(url: str) -> str:
    host = re.sub(r"^https?://(www\.)?", "", url).split("/")[0]
    return host


@dataclass
class _Line:
    """A kept line: its raw text (markdown marks and indentation intact) and what it is."""

    raw: str
    kind: str = "text"  # text | heading | code | blank
    level: int = 0

    @property
    def text(self) -> str:
        return strip_markdown(self.raw) if self.kind == "text" else self.raw.strip()


def clean_text(raw: str) -> Cleaned:
    """Clean one article's raw text (plain or markdown) into blocks; never raises, whatever the input."""
    text = _CONTROL.sub("", raw.replace("\r\n", "\n").replace("\r", "\n"))
    out = Cleaned(text="")
    lines = _setext_as_atx(text.split("\n"), out.removed)

    if lines and (m := _ISO_DATE_PREFIX.match(lines[0])):
        out.date = m.group(1)
        out.removed.append(Removal(m.group(0).strip(), "date line (kept as metadata)"))
        lines[0] = lines[0][m.end():]

    kept: list[_Line] = []
    title_line: str | None = None
    pending_source = False
    fence: str | None = None
    for raw_line in lines:
        if m := _FENCE.match(raw_line):  # code fences: kept as they are, rules not applied
            fence = None if fence == m.group(1) else fence or m.group(1)
            kept.append(_Line("", "blank"))
            continue
        if fence:
            kept.append(_Line(raw_line, "code"))
            continue
        heading = _MD_HEADING.match(raw_line)
        line = strip_markdown(raw_line)
        if not line:
            kept.append(_Line("", "blank"))
            continue
        if pending_source and (url := join_broken_url(line)):
            out.url = out.url or url
            out.removed.append(Removal(raw_line.strip(), "source URL (kept as metadata)"))
            pending_source = False
            continue
        if (m := _SOURCE_LINE.match(line)) and not _in_record(raw_line, kept):
            url = join_broken_url(m.group("rest"))
            if url or not m.group("rest").strip():
                out.url = out.url or url
                pending_source = url is None
                out.removed.append(Removal(raw_line.strip(), "source URL (kept as metadata)"))
                continue
        if heading and len(heading.group(1)) == 1 and title_line is None and not any(k.raw.strip() for k in kept):
            title_line = line
            out.removed.append(Removal(raw_line.strip(), "title (kept as metadata)"))
            continue
        if heading:
            kept.append(_Line(strip_markdown(heading.group(2)), "heading", len(heading.group(1))))
            continue
        if m := _BYLINE.match(line):
            if len(line) < 160 and _in_header(kept):
                out.publisher = out.publisher or publisher_from_byline(m.group("who"))
                out.date = out.date or (m.group("date") and parse_long_date(m.group("date")))
                out.removed.append(Removal(raw_line.strip(), "byline (kept as metadata)"))
                if title_line is None:
                    title_line = _title_before_byline(kept, out.removed)
                continue
        if (m := _LONG_DATE_LINE.match(line)) and out.date is None:
            out.date = parse_long_date(m.group(1))
            out.removed.append(Removal(raw_line.strip(), "date line (kept as metadata)"))
            continue
        if not _continues_sentence(kept) and (reason := boilerplate_reason(line)):
            out.removed.append(Removal(raw_line.strip(), reason))
            continue
        kept.append(_Line(raw_line.rstrip()))

    kept = _drop_repeated_captions(kept, out.removed)
    groups = _groups(kept, out.removed)
    if title_line is None and len(groups) > 1 and groups[0][0].kind == "text" and _looks_like_title(groups[0]):
        title_line = groups.pop(0)[0].text
        out.removed.append(Removal(title_line, "title (kept as metadata)"))
    builder = DocumentBuilder()
    margin = _margin(kept)
    ahead = Counter(_title_key(title) for group in groups if (title := _title_of(group)))  # headings still to come
    previous: list[_Line] = []
    for group in groups:
        if title := _title_of(group):
            ahead[_title_key(title)] -= 1
        _add_group(builder, group, margin, lambda text: ahead[_title_key(text)] > 0, _introduces(previous))
        previous = group
    out.text, out.blocks = "\n\n".join(builder.parts), builder.blocks
    out.removed.extend(builder.removed)
    out.title = title_line or _headline_from(out.text)
    if out.url and not out.publisher:
        out.publisher = publisher_from_url(out.url)
    return out


def _setext_as_atx(lines: list[str], removed: list[Removal]) -> list[str]:
    """Headings underlined (or over- and underlined) with a repeated mark become '#' headings, one
    level per style in the order the document first uses them, as reStructuredText reads them; a
    rule that underlines nothing is a horizontal rule, dropped. Fenced code is left alone."""
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _FENCE.match(line):
            fence = None if fence == m.group(1) else fence or m.group(1)
        if fence or _FENCE.match(line):
            out.append(line)
            i += 1
            continue
        after_blank = i == 0 or not lines[i - 1].strip()
        mark = _rule_mark(line)
        if mark and after_blank and i + 2 < len(lines) and _is_title(lines[i + 1]) and _rule_mark(lines[i + 2]) == mark:
            heading, overlined, used = lines[i + 1], True, 3
        elif _is_title(line) and after_blank and i + 1 < len(lines) and (mark := _rule_mark(lines[i + 1])):
            heading, overlined, used = line, False, 2
        elif mark:
            removed.append(Removal(line.strip(), "horizontal rule"))
            i += 1
            continue
        else:
            out.append(line)
            i += 1
            continue
        if (mark, overlined) not in styles:
            styles.append((mark, overlined))
        out.append(f"{'#' * min(styles.index((mark, overlined)) + 1, 6)} {heading.strip()}")
        i += used
    return out


def _rule_mark(line: str) -> str | None:
    m = _SETEXT_RULE.match(line)
    return m.group(1) if m else None


def _is_title(line: str) -> bool:
    """A line that can be a heading: text, not indented as code, not itself a rule."""
    return bool(line.strip()) and not line.startswith(("    ", "\t")) and _rule_mark(line) is None


def _in_record(raw_line: str, kept: list[_Line]) -> bool:
    """An indented line, or one under a "Field: value" line: part of an example record ("Source:
    https://www.example.com/…" in a specification of control files), not the page's own source line."""
    return raw_line[:1].isspace() or bool(kept and _FIELD_LINE.match(kept[-1].raw.strip()))


def _continues_sentence(kept: list[_Line]) -> bool:
    """The next line goes on with the sentence the line above left open: a hard-wrapped paragraph's
    line ("copyright notices and licensing details.") is never judged as a line of page furniture."""
    above = kept[-1] if kept else None
    return above is not None and above.kind == "text" and not re.search(r"[.!?:;\"”)\]]$", above.raw.rstrip())


def _in_header(kept: list[_Line]) -> bool:
    """Bylines belong to the page header: at most a few short lines above them."""
    lines = [line.text for line in kept if line.raw.strip()]
    return len(lines) <= 4 and all(len(line) < 150 for line in lines)


def _headline_from(text: str, words: int = 10) -> str | None:
    """No headline in the file: the opening words of the article stand in for it."""
    head = text.split("\n\n", 1)[0].split()
    if not head:
        return None
    return " ".join(head[:words]) + ("…" if len(head) > words else "")


def _title_before_byline(kept: list[_Line], removed: list[Removal]) -> str | None:
    """The headline is the last line above the byline; shorter lines above it are page header."""
    nonempty = [line.text for line in kept if line.raw.strip()]
    if not nonempty:
        return None
    for line in nonempty[:-1]:
        removed.append(Removal(line, "page header above the headline"))
    removed.append(Removal(nonempty[-1], "title (kept as metadata)"))
    kept.clear()
    return nonempty[-1]


def _drop_repeated_captions(kept: list[_Line], removed: list[Removal]) -> list[_Line]:
    """A photo caption copied twice appears as two identical consecutive lines."""
    result: list[_Line] = []
    i = 0
    while i < len(kept):
        line = kept[i]
        if line.kind == "text" and i + 1 < len(kept) and kept[i + 1] == line and len(line.raw) < 200:
            removed.extend([Removal(line.text, "photo caption repeated twice")] * 2)
            i += 2
            continue
        result.append(line)
        i += 1
    return result


def _groups(kept: list[_Line], removed: list[Removal]) -> list[list[_Line]]:
    """Runs of lines between blank lines; a heading is a run of its own; pleas are dropped."""
    groups: list[list[_Line]] = []
    run: list[_Line] = []
    for line in [*kept, _Line("", "blank")]:
        if line.kind in ("text", "code") and (not run or run[-1].kind == line.kind):
            run.append(line)
            continue
        if run:
            prose = " ".join(r.text for r in run)
            if run[0].kind == "text" and PLEA_PARAGRAPH.search(prose) and len(prose) < 400:
                removed.append(Removal(prose, "subscription plea"))
            else:
                groups.append(run)
        run = [line] if line.kind in ("text", "code") else []
        if line.kind == "heading":
            groups.append([line])
    return groups


def _margin(kept: list[_Line]) -> int:
    """The indentation most text lines share: 0 in most files, 3 in a text dump of a manual."""
    indents = Counter(len(line.raw) - len(line.raw.lstrip()) for line in kept if line.kind == "text" and line.raw.strip())
    return indents.most_common(1)[0][0] if indents else 0


def _introduces(group: list[_Line]) -> bool:
    """A paragraph that ends with a colon ("…with the following format:") announces what follows."""
    return bool(group) and group[-1].kind == "text" and group[-1].raw.rstrip().endswith(":")


def _is_code(group: list[_Line], margin: int, introduced: bool = False) -> bool:
    """Fenced, or indented past the text and not reading as prose (a manual's nested notes, definitions
    and list items are indented too): by four columns or more, or by less when it holds code (a
    literal block's `>>> f(x)`). Indented lines a colon announced that do not end as a sentence
    ("Description: single line synopsis" / "extended description over several lines") are an example."""
    if group[0].kind == "code" or _is_record(group):
        return True
    raws = [line.raw.expandtabs(4) for line in group]
    indent = min(len(r) - len(r.lstrip()) for r in raws)
    lines = [r.strip() for r in raws]
    if indent <= margin or _LIST_ITEM.match(lines[0]):
        return False
    if introduced and not lines[-1].rstrip(_CLOSING).endswith((".", "!", "?", ":")):
        return True
    if _reads_as_prose(lines):
        return False
    return indent - margin >= 4 or any(_CODE_SIGNAL.search(line) for line in lines)


def _is_record(group: list[_Line]) -> bool:
    """Lines of "Field: value", as control files, headers and stanzas are written: one field a line."""
    fields = sum(bool(_FIELD_LINE.match(line.raw.strip())) for line in group)
    return fields >= 2 and 2 * fields >= len(group) and bool(_FIELD_LINE.match(group[0].raw.strip()))


def _reads_as_prose(lines: list[str]) -> bool:
    """Words and punctuation only, several to a line, ending as a sentence ends or wrapped over lines."""
    joined = " ".join(lines)
    wordy = sum(c.isalnum() or c.isspace() or c in _PROSE_MARKS for c in joined) >= 0.95 * len(joined)
    return wordy and len(joined.split()) >= 6 and (len(lines) > 1 or joined.endswith((".", "!", "?", ":")))


def _title_key(title: str) -> str:
    """A title as a table of contents and its heading both write it: dashes, wraps and case aside."""
    return re.sub(r"\W+", "", title.casefold())


def _title_of(group: list[_Line]) -> str | None:
    """The heading this group is: a marked one, or a numbered section's title on its own line."""
    first = group[0]
    if first.kind == "heading":
        return first.raw
    if len(group) == 1 and _NUMBERED_TITLE.match(first.text) and len(first.text.split()) <= MAX_TITLE_WORDS:
        return first.text
    return None


def _add_group(builder: DocumentBuilder, group: list[_Line], margin: int = 0,
               heading_ahead: Callable[[str], bool] = lambda text: False, introduced: bool = False) -> None:
    """One run of lines becomes a heading, code, a table, list items, a quote or a paragraph. A line
    or list item that is only the title of a heading further down is a table of contents' entry."""
    first = group[0]
    raws = [line.raw for line in group]
    if title := _title_of(group):
        if heading_ahead(title):
            builder.remove(title, "table of contents entry")
        elif first.kind == "heading":
            builder.heading(title, first.level)
        else:
            builder.heading(title, _NUMBERED_TITLE.match(title).group(1).count(".") + 1)
    elif _is_code(group, margin, introduced):
        builder.code("\n".join(raws))
    elif len(raws) > 2 and any(_GRID_RULE.match(r.strip()) for r in raws) and all(r.lstrip()[:1] in "+|" for r in raws):
        builder.table(_grid_rows([r.strip() for r in raws]))
    elif len(raws) > 1 and all(r.lstrip().startswith("|") for r in raws):
        builder.table([[strip_markdown(c) for c in r.strip().strip("|").split("|")] for r in raws if not _TABLE_RULE.match(r)])
    elif _LIST_ITEM.match(raws[0]):
        for item in _list_items(group):
            if heading_ahead(item.removeprefix("• ")):
                builder.remove(item, "table of contents entry")
            else:
                builder.prose("list_item", item)
    elif all(r.lstrip().startswith(">") for r in raws):
        builder.prose("quote", _unwrap([strip_markdown(r.lstrip().lstrip(">")) for r in raws]))
    else:
        builder.prose("paragraph", _unwrap([line.text for line in group]))


def _unwrap(lines: list[str]) -> str:
    """Hard-wrapped lines as one: a line broken after a word's hyphen ("package-" / "specific") is
    joined without a space, since a text writer breaks lines at hyphens, not inside words."""
    joined = ""
    for line in filter(None, (line.strip() for line in lines)):
        glued = re.search(r"[A-Za-z]-$", joined) and line[:1].isalpha()
        joined = f"{joined}{line}" if glued or not joined else f"{joined} {line}"
    return joined


def _grid_rows(lines: list[str]) -> list[list[str]]:
    """A grid table's rows: the lines between two borders are one row, each cell's lines joined."""
    rows: list[list[str]] = []
    current: list[list[str]] = []
    for line in [*lines, "+-+"]:
        if _GRID_RULE.match(line):
            if current:
                width = max(len(cells) for cells in current)
                rows.append([" ".join(c[j] for c in current if j < len(c) and c[j]) for j in range(width)])
            current = []
        else:
            current.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _list_items(group: list[_Line]) -> list[str]:
    """List items, each with its wrapped continuation lines; the bullet becomes '• '."""
    items: list[list[str]] = []
    for line in group:
        if _LIST_ITEM.match(line.raw) or not items:
            items.append([re.sub(r"^\s*(?:[-*+•◦‣–])\s+", "• ", line.raw)])
        else:
            items[-1].append(line.raw)
    return [_unwrap([strip_markdown(part) for part in item]) for item in items]


def _looks_like_title(group: list[_Line]) -> bool:
    line = group[0].text
    return len(group) == 1 and len(line) < 150 and not re.search(r"[.!?\"”]$", line)
