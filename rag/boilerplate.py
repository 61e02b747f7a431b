"""Page furniture: lines that belong to the page around an article, not to the article.

Every rule names its reason, which is recorded with what it removed (`rag inspect DOC_ID`).
Rules look at short lines only: a long paragraph that mentions a newsletter is still text.
"""

from __future__ import annotations

import re

MAX_BOILERPLATE_CHARS = 250
PERMALINK_SIGNS = "¶§🔗#"

_CREDIT = r"[A-Z][A-Z0-9&'-]*(?:\s[A-Z][A-Z0-9&'-]*)*"  # a credit in capitals: POOL, VIA AP
# (reason, pattern) for lines that are page furniture, not article text.
BOILERPLATE_LINES: list[tuple[str, re.Pattern[str]]] = [
    ("donation banner", re.compile(r"charitable donation|\bdonate\b", re.I)),
    ("site banner", re.compile(r"^\[\s*[^\]]*banner\s*\]$", re.I)),
    ("comment form", re.compile(r"^Leave a Reply$|^Your email address will not be published\.?$", re.I)),
    ("copyright line", re.compile(r"^(Copyright\b(?!-)|©)|\(c\)\s*\d{4}", re.I)),  # not "copyright-format"
    ("mailing-list plea", re.compile(r"^(?:join|subscribe to|sign up for|get)\b.{0,60}\b(?:mailing list|newsletter)\b", re.I)),
    ("related-article link", re.compile(r"^Related (article|story|stories)\s*:", re.I)),
    # "Jane Doe / POOL / AGENCY": a name, then two or more credits in capitals after a slash or a bar
    ("photo credit", re.compile(rf"^[^.!?\"“”|/]{{1,80}}\s[/|]\s+{_CREDIT}(?:\s+/\s+{_CREDIT})+\)?$")),
    ("last-updated line", re.compile(r"^(Last (updated|modified|changed|edited)|Updated on|Page generated)\b", re.I)),
    # a banner's sentence or its buttons, not a sentence that mentions a cookie policy
    ("cookie banner", re.compile(r"\bthis (site|website) uses cookies\b|^(accept|allow) (all )?cookies$|^cookie (policy|settings)$", re.I)),
    ("search box", re.compile(r"^(Search|Quick search|Search this site|Go)$", re.I)),
    ("navigation links", re.compile(r"^(?:(?:Prev(?:ious)?|Next|Up|Home|Top|Contents|Index|Table of Contents|Back to top|Skip to (?:main )?content)\s*[|·»«›‹>-]*\s*)+$", re.I)),
    ("pager", re.compile(r"^(?:Prev(?:ious)?\b.{0,120}\bNext|Next\b.{0,120}\bPrev(?:ious)?)$", re.I)),
    ("permalink sign", re.compile(rf"^[{PERMALINK_SIGNS}]$")),
]


def boilerplate_reason(line: str) -> str | None:
    """Why a short line is page furniture, or None when it is article text."""
    if len(line) >= MAX_BOILERPLATE_CHARS:
        return None
    return next((reason for reason, pattern in BOILERPLATE_LINES if pattern.search(line)), None)


def strip_permalink(heading: str) -> tuple[str, str | None]:
    """A heading without the permalink sign a site appends to it ("Logging ¶"), and the sign."""
    stripped = heading.rstrip()
    if stripped and stripped[-1] in PERMALINK_SIGNS and len(stripped) > 1 and stripped[-2].isspace():
        return stripped[:-1].rstrip(), stripped[-1]
    if stripped.endswith("¶"):
        return stripped[:-1].rstrip(), "¶"
    return heading, None
