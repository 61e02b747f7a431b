"""Cleaning: raw article text -> body text plus metadata, recording everything removed.

Web copies carry banners, bylines, captions, pleas and source lines around the article.
Each rule below removes whole lines (or a paragraph, for pleas) and records why, so
`rag inspect` can show that nothing disappeared silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from rag.records import Removal

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
LONG_DATE = rf"(?:{MONTHS})\s+\d{{1,2}},\s+\d{{4}}"
_ISO_DATE_PREFIX = re.compile(r"^\s*date\s+(\d{4}-\d{2}-\d{2})\b\s*")
_LONG_DATE_LINE = re.compile(rf"^({LONG_DATE})$")
_BYLINE = re.compile(rf"^By\s+(?P<who>[\[A-Z].+?)(?:\s+(?P<date>{LONG_DATE}))?$")
_URL = re.compile(r"https?://\S+")
_SOURCE_LINE = re.compile(r"^(?:Source|Original url)\s*:\s*(?P<rest>.*)$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# (reason, pattern) for lines that are page furniture, not article text.
BOILERPLATE_LINES: list[tuple[str, re.Pattern[str]]] = [
    ("donation banner", re.compile(r"charitable donation|\bdonate\b|UNITED24", re.I)),
    ("site banner", re.compile(r"^\[\s*[^\]]*banner\s*\]$", re.I)),
    ("comment form", re.compile(r"^Leave a Reply$|^Your email address will not be published\.?$", re.I)),
    ("copyright line", re.compile(r"^(Copyright|©)|\(c\)\s*\d{4}", re.I)),
    ("mailing-list plea", re.compile(r"mailing list|newsletter", re.I)),
    ("related-article link", re.compile(r"^Related (article|story|stories)\s*:", re.I)),
    ("photo credit", re.compile(r"^[^.!?\"“”]{0,120}(?:\s/\s|\|)[^.!?]{0,80}\b(POOL|VIA AP|TASS|REUTERS|GETTY|AFP|SPUTNIK)\b")),
]
# Paragraphs that plead for subscriptions span several lines; drop the whole paragraph.
PLEA_PARAGRAPH = re.compile(r"subscrib", re.I)


@dataclass
class Cleaned:
    text: str
    title: str | None = None
    date: str | None = None
    publisher: str | None = None
    url: str | None = None
    removed: list[Removal] = field(default_factory=list)


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


def clean_text(raw: str, markdown: bool = True) -> Cleaned:
    """Clean one article's raw text; never raises, whatever the input."""
    text = _CONTROL.sub("", raw.replace("\r\n", "\n").replace("\r", "\n"))
    out = Cleaned(text="")
    lines = text.split("\n")

    if lines and (m := _ISO_DATE_PREFIX.match(lines[0])):
        out.date = m.group(1)
        out.removed.append(Removal(m.group(0).strip(), "date line (kept as metadata)"))
        lines[0] = lines[0][m.end():]

    kept: list[str] = []
    title_line: str | None = None
    pending_source = False
    for raw_line in lines:
        is_heading = markdown and raw_line.lstrip().startswith("# ")
        line = strip_markdown(raw_line) if markdown else raw_line.strip()
        if not line:
            kept.append("")
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
        if is_heading and title_line is None and not any(kept_line for kept_line in kept):
            title_line = line
            out.removed.append(Removal(raw_line.strip(), "title (kept as metadata)"))
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
        reason = len(line) < 250 and next((r for r, pat in BOILERPLATE_LINES if pat.search(line)), None)
        if reason:
            out.removed.append(Removal(raw_line.strip(), reason))
            continue
        kept.append(line)

    kept = _drop_repeated_captions(kept, out.removed)
    paragraphs = _paragraphs(kept, out.removed)
    if title_line is None and paragraphs and _looks_like_title(paragraphs[0]) and len(paragraphs) > 1:
        title_line = paragraphs.pop(0)
        out.removed.append(Removal(title_line, "title (kept as metadata)"))
    out.title = title_line or _headline_from(paragraphs)
    out.text = "\n\n".join(paragraphs)
    if out.url and not out.publisher:
        out.publisher = publisher_from_url(out.url)
    return out


def _in_header(kept: list[str]) -> bool:
    """Bylines belong to the page header: at most a few short lines above them."""
    lines = [line for line in kept if line]
    return len(lines) <= 4 and all(len(line) < 150 for line in lines)


def _headline_from(paragraphs: list[str], words: int = 10) -> str | None:
    """No headline in the file: the opening words of the article stand in for it."""
    if not paragraphs:
        return None
    head = paragraphs[0].split()
    return " ".join(head[:words]) + ("…" if len(head) > words else "")


def _title_before_byline(kept: list[str], removed: list[Removal]) -> str | None:
    """The headline is the last line above the byline; shorter lines above it are page header."""
    nonempty = [i for i, line in enumerate(kept) if line]
    if not nonempty:
        return None
    title = kept[nonempty[-1]]
    for i in nonempty[:-1]:
        removed.append(Removal(kept[i], "page header above the headline"))
    removed.append(Removal(title, "title (kept as metadata)"))
    kept.clear()
    return title


def _drop_repeated_captions(kept: list[str], removed: list[Removal]) -> list[str]:
    """A photo caption copied twice appears as two identical consecutive lines."""
    result: list[str] = []
    i = 0
    while i < len(kept):
        if kept[i] and i + 1 < len(kept) and kept[i + 1] == kept[i] and len(kept[i]) < 200:
            removed.append(Removal(kept[i], "photo caption repeated twice"))
            removed.append(Removal(kept[i], "photo caption repeated twice"))
            i += 2
            continue
        result.append(kept[i])
        i += 1
    return result


def _paragraphs(kept: list[str], removed: list[Removal]) -> list[str]:
    paragraphs: list[str] = []
    block: list[str] = []
    for line in [*kept, ""]:
        if line:
            block.append(line)
            continue
        if block:
            para = "\n".join(block)
            if PLEA_PARAGRAPH.search(para) and len(para) < 400:
                removed.append(Removal(para, "subscription plea"))
            else:
                paragraphs.append(para)
            block = []
    return paragraphs


def _looks_like_title(paragraph: str) -> bool:
    return "\n" not in paragraph and len(paragraph) < 150 and not re.search(r"[.!?\"”]$", paragraph)
