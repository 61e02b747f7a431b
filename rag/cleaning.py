"""Cleaning: raw article text -> body text plus metadata, recording everything removed.

Web copies carry banners, bylines, captions, pleas and source lines around the article.
Each rule below removes whole lines (or a paragraph, for pleas) and records why, so
`rag inspect` can show that nothing disappeared silently.
"""

from __future__ import annotations

import re
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
    lines = text.split("\n")

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
        if m := _SOURCE_LINE.match(line):
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
        if reason := boilerplate_reason(line):
            out.removed.append(Removal(raw_line.strip(), reason))
            continue
        kept.append(_Line(raw_line.rstrip()))

    kept = _drop_repeated_captions(kept, out.removed)
    groups = _groups(kept, out.removed)
    if title_line is None and len(groups) > 1 and groups[0][0].kind == "text" and _looks_like_title(groups[0]):
        title_line = groups.pop(0)[0].text
        out.removed.append(Removal(title_line, "title (kept as metadata)"))
    builder = DocumentBuilder()
    for group in groups:
        _add_group(builder, group)
    out.text, out.blocks = "\n\n".join(builder.parts), builder.blocks
    out.removed.extend(builder.removed)
    out.title = title_line or _headline_from(out.text)
    if out.url and not out.publisher:
        out.publisher = publisher_from_url(out.url)
    return out


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


def _add_group(builder: DocumentBuilder, group: list[_Line]) -> None:
    """One run of lines becomes a heading, code, a table, list items, a quote or a paragraph."""
    first = group[0]
    raws = [line.raw for line in group]
    if first.kind == "heading":
        builder.heading(first.raw, first.level)
    elif first.kind == "code" or all(r.startswith(("    ", "\t")) for r in raws):
        builder.code("\n".join(raws))
    elif len(raws) > 1 and all(r.lstrip().startswith("|") for r in raws):
        builder.table([[strip_markdown(c) for c in r.strip().strip("|").split("|")] for r in raws if not _TABLE_RULE.match(r)])
    elif _LIST_ITEM.match(raws[0]):
        for item in _list_items(group):
            builder.prose("list_item", item)
    elif all(r.lstrip().startswith(">") for r in raws):
        builder.prose("quote", " ".join(strip_markdown(r.lstrip().lstrip(">")) for r in raws))
    else:
        builder.prose("paragraph", " ".join(line.text for line in group))


def _list_items(group: list[_Line]) -> list[str]:
    """List items, each with its wrapped continuation lines; the bullet becomes '• '."""
    items: list[list[str]] = []
    for line in group:
        if _LIST_ITEM.match(line.raw) or not items:
            items.append([re.sub(r"^\s*(?:[-*+•◦‣–])\s+", "• ", line.raw)])
        else:
            items[-1].append(line.raw)
    return [" ".join(strip_markdown(part) for part in item) for item in items]


def _looks_like_title(group: list[_Line]) -> bool:
    line = group[0].text
    return len(group) == 1 and len(line) < 150 and not re.search(r"[.!?\"”]$", line)
