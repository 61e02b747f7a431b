"""HTML -> blocks and metadata, keeping headings, paragraphs, lists, tables, code and quotes.

The page's main content (`<main>`, `[role=main]`, `<article>`, else `<body>`) is walked in order.
Navigation, forms, scripts and link-heavy page furniture (menus, tables of contents, banners,
breadcrumbs) are removed and recorded with their reason. An element with only inline content is
a paragraph, whatever its tag (generated docs write paragraphs as `<div class="para">`).

Metadata comes only from where publishers put it: `<meta>` tags, Open Graph, JSON-LD and the
canonical link. A date or publisher not declared there is unknown, never guessed from the text.
"""

from __future__ import annotations

import json
import re

from rag.boilerplate import strip_permalink
from rag.cleaning import parse_long_date
from rag.structure import DocumentBuilder, join_wrapped, without_site_suffix

HEADINGS = {f"h{n}": n for n in range(1, 7)}
DROPPED_TAGS = {
    "script": "script", "style": "style sheet", "noscript": "script", "template": "template",
    "nav": "navigation", "form": "form or search box", "button": "button", "input": "form or search box",
    "select": "form or search box", "textarea": "form or search box", "iframe": "embedded frame",
    "svg": "image", "canvas": "image", "head": "page head",
}
DROPPED_ROLES = {"navigation": "navigation", "search": "form or search box", "banner": "site banner",
                 "contentinfo": "site footer", "complementary": "aside"}
# Class or id words of page furniture; such an element is dropped when it is mostly links.
FURNITURE = re.compile(r"(^|[\s_-])(nav\w*|menu|breadcrumbs?|toc|sidebar|footer|header|banner|masthead|"
                       r"share|social|related|pagination|skip|docnav|navheader|navfooter)($|[\s_-])", re.I)
# A consent banner's class or id; a section id="cookies" is documentation about cookies, not a banner.
COOKIE = re.compile(r"consent|gdpr|cookie[-_]?(?:banner|bar|notice|popup|modal|dialog|law|message|warning|policy)", re.I)
PERMALINK_CLASS = re.compile(r"headerlink|anchor|permalink", re.I)
# Inline furniture left out of the text: permalink signs, and generated docs' "[source]" links.
SKIPPED_INLINE = re.compile(rf"{PERMALINK_CLASS.pattern}|viewcode", re.I)
INLINE = {"a", "abbr", "b", "bdi", "bdo", "br", "cite", "code", "data", "dfn", "em", "i", "kbd", "mark", "q",
          "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var", "wbr", "img", "font", "tt",
          "acronym", "big", "del", "ins", "label"}
LINK_DENSE = 0.5
SHORT_FURNITURE = 200  # characters: a short element with a menu's class name is page furniture even with few links
MAIN_SELECTORS = ("//main", "//*[@role='main']", "//article")
DATE_META = ("article:published_time", "datepublished", "date", "dc.date", "dc.date.issued", "dcterms.date",
             "dcterms.issued", "citation_publication_date", "citation_date", "pubdate", "publish-date",
             "sailthru.date", "parsely-pub-date")
# og:site_name names the site, not who published the text: it is not among them.
PUBLISHER_META = ("citation_publisher", "dc.publisher", "dcterms.publisher", "publisher")


def read_html(html: str, builder: DocumentBuilder) -> dict[str, str | None]:
    """Fill `builder` with the page's blocks; return its metadata (title, date, publisher, url).
    Raises ValueError for a page with no document in it."""
    import lxml.etree
    import lxml.html

    # bytes (lxml refuses a str with an XML declaration), decoded as the UTF-8 ingestion checked
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except lxml.etree.ParserError as exc:  # nothing but comments or markup lxml drops
        raise ValueError(str(exc)) from exc
    metadata = page_metadata(root)
    walker = _Walker(builder)
    main = _main_content(root)
    walker.record_outside(main)
    walker.walk(main)
    return metadata


def _main_content(root):
    for selector in MAIN_SELECTORS:
        found = root.xpath(selector)
        if found and len(join_wrapped(found[0].text_content())) > 200:
            return found[0]
    body = root.find("body")
    return body if body is not None else root


class _Walker:
    def __init__(self, builder: DocumentBuilder):
        self.b = builder

    def walk(self, element) -> None:
        if reason := self._dropped(element):
            self.b.remove(element.text_content(), reason)
            return
        tag = _tag(element)
        if tag in HEADINGS:
            self._heading(element, HEADINGS[tag])
        elif tag == "pre":
            self.b.code(_code_text(element))
        elif tag == "table":
            self._table(element)
        elif tag in ("ul", "ol"):
            for item in element:
                if _tag(item) == "li":
                    self._list_item(item)
                else:
                    self.walk(item)
        elif tag == "dl":
            self._definitions(element)
        elif tag == "blockquote" and _only_inline(element):
            self.b.prose("quote", _inline_text(element))
        elif _only_inline(element):
            self.b.prose("paragraph", _inline_text(element))
        else:
            self._mixed(element)

    def record_outside(self, main) -> None:
        """What lies around the main content (menus, banners, footers) is recorded as removed."""
        for ancestor in main.iterancestors():
            for sibling in ancestor:
                if sibling is main or sibling in main.iterancestors() or not isinstance(sibling.tag, str) or _tag(sibling) == "head":
                    continue
                self.b.remove(sibling.text_content(), self._dropped(sibling) or "outside the page's main content")

    def _mixed(self, element) -> None:
        """Block children in order; loose text between them is a paragraph of its own."""
        loose: list[str] = [element.text or ""]
        for child in element:
            if _tag(child) in INLINE or not isinstance(child.tag, str):
                loose.append(_inline_text(child) if isinstance(child.tag, str) else "")
            else:
                self.b.prose("paragraph", " ".join(loose))
                loose = []
                self.walk(child)
            loose.append(child.tail or "")
        self.b.prose("paragraph", " ".join(loose))

    def _dropped(self, element) -> str | None:
        if not isinstance(element.tag, str):
            return "comment"
        tag = _tag(element)
        if tag in DROPPED_TAGS:
            return DROPPED_TAGS[tag]
        if (role := element.get("role", "").lower()) in DROPPED_ROLES and tag not in ("main", "article"):
            return DROPPED_ROLES[role]
        if element.get("hidden") is not None or element.get("aria-hidden") == "true":
            return "hidden element"
        names = f"{element.get('class', '')} {element.get('id', '')}"
        if COOKIE.search(names):
            return "cookie banner"
        if tag in ("header", "footer", "aside") and _link_density(element) >= LINK_DENSE:
            return f"site {tag}"
        if FURNITURE.search(names) and (_link_density(element) >= LINK_DENSE or len(join_wrapped(element.text_content())) < SHORT_FURNITURE):
            return "navigation or table of contents"
        if tag in ("p", "div", "span", "a") and _only_image_links(element):
            return "image link"
        return None

    def _heading(self, element, level: int) -> None:
        for anchor in element.iter("a"):
            if PERMALINK_CLASS.search(anchor.get("class", "")) and join_wrapped(anchor.text_content()):
                self.b.remove(anchor.text_content(), "permalink sign")
                anchor.drop_tree()
        text, sign = strip_permalink(join_wrapped(element.text_content()))
        if sign:
            self.b.remove(sign, "permalink sign")
        self.b.heading(text, level)

    def _list_item(self, item) -> None:
        if _only_inline(item):
            self.b.prose("list_item", "• " + _inline_text(item))
            return
        # an item with nested lists or paragraphs: its own text first, then its blocks
        lead = [item.text or ""]
        children = list(item)
        while children and (_tag(children[0]) in INLINE or _only_inline(children[0]) and _tag(children[0]) in ("p", "div")):
            lead.append(_inline_text(children[0]) + " " + (children[0].tail or ""))
            children.pop(0)
        if join_wrapped(" ".join(lead)):
            self.b.prose("list_item", "• " + " ".join(lead))
        for child in children:
            self.walk(child)

    def _definitions(self, dl) -> None:
        """A term and a one-paragraph definition make one item: "term: definition". A term whose
        definition holds several blocks (a documented function: its description, parameters,
        examples) titles them: it is in their section path."""
        term: str | None = None
        for child in dl:
            tag = _tag(child)
            if tag == "dt":
                if term:
                    self.b.prose("list_item", term)
                term = _inline_text(child).removesuffix(":").rstrip()
            elif tag == "dd" and (definition := _one_paragraph(child)) is not None:
                self.b.prose("list_item", f"{term}: {definition}" if term else definition)
                term = None
            elif tag == "dd" and term:
                with self.b.subsection(term):
                    self.walk(child)
                term = None
            else:
                if term:
                    self.b.prose("list_item", term)
                    term = None
                self.walk(child)
        if term:
            self.b.prose("list_item", term)

    def _table(self, table) -> None:
        rows = []
        for row in table.iter("tr"):
            cells = [c for c in row if _tag(c) in ("td", "th") and join_wrapped(c.text_content())]
            rows.append(cells)
        if all(len(cells) <= 1 for cells in rows):  # a table used for layout (an admonition box): its cells are blocks
            for cells in rows:
                for cell in cells:
                    self.walk(cell)
            return
        rows = [[_inline_text(c) if _only_inline(c) else join_wrapped(c.text_content()) for c in cells] for cells in rows]
        caption = table.find("caption")
        if caption is not None:
            self.b.prose("paragraph", _inline_text(caption))
        self.b.table(rows)


def _tag(element) -> str:
    """The tag's name; "" for comments and processing instructions (lxml's HTML parser drops XHTML's namespace)."""
    return element.tag if isinstance(element.tag, str) else ""


def _only_inline(element) -> bool:
    return all(not isinstance(c.tag, str) or _tag(c) in INLINE for c in element.iterdescendants())


def _one_paragraph(element) -> str | None:
    """The text of an element holding inline content or one paragraph of it; None otherwise."""
    if _only_inline(element):
        return _inline_text(element)
    children = [c for c in element if isinstance(c.tag, str)]
    loose = (element.text or "") + "".join(c.tail or "" for c in element)
    if len(children) == 1 and _tag(children[0]) in ("p", "div") and _only_inline(children[0]) and not loose.strip():
        return _inline_text(children[0])
    return None


def _inline_text(element) -> str:
    """Text of inline content: `<br>` is a space, permalink anchors, "[source]" links and comments are left out."""
    return join_wrapped(_inline_raw(element))


def _inline_raw(element) -> str:
    # Spaces at the edges of inline elements are kept: "<em>float</em><em> or </em>" is "float or".
    parts = [element.text or ""] if _tag(element) != "img" else [element.get("alt", "")]
    for child in element:
        if _tag(child) == "br":
            parts.append(" ")
        elif _is_leading_icon(child, parts):
            pass
        elif isinstance(child.tag, str) and not SKIPPED_INLINE.search(child.get("class", "")):
            parts.append(_inline_raw(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _is_leading_icon(child, text_before: list[str]) -> bool:
    """An image that opens text ("<img alt='more info'> Read more about…") marks it; its alt is not a word of it."""
    return _tag(child) == "img" and not "".join(text_before).strip() and bool((child.tail or "").strip())


def _code_text(pre) -> str:
    return "".join(pre.itertext())


def _only_image_links(element) -> bool:
    """A logo or badge: links around images and no text of its own."""
    return (not join_wrapped(element.text_content()) and any(True for _ in element.iter("img"))
            and all(_tag(e) in ("a", "img", "span", "br") for e in element.iterdescendants() if isinstance(e.tag, str)))


def _link_density(element) -> float:
    text = len(join_wrapped(element.text_content()))
    if not text:
        return 1.0
    linked = sum(len(join_wrapped(a.text_content())) for a in element.iter("a"))
    return linked / text


# ---- metadata --------------------------------------------------------------------------------
def page_metadata(root) -> dict[str, str | None]:
    meta = _meta_tags(root)
    ld = _json_ld(root)
    site = meta.get("og:site_name")
    title = meta.get("og:title") or meta.get("citation_title") or meta.get("dc.title") or ld.get("headline")
    if not title and (found := root.find(".//title")) is not None:
        title = without_site_suffix(join_wrapped(found.text_content()), site, _top_heading(root))
    canonical = next((link.get("href") for link in root.iter("link")
                      if "canonical" in (link.get("rel") or "").lower().split()), None)
    return {
        "title": title or None,
        "date": _iso(ld.get("datePublished") or next((meta[k] for k in DATE_META if meta.get(k)), None)),
        "publisher": ld.get("publisher") or next((meta[k] for k in PUBLISHER_META if meta.get(k)), None),
        "url": canonical or meta.get("og:url") or ld.get("url"),
    }


def _top_heading(root) -> str | None:
    h1 = root.find(".//h1")
    return strip_permalink(_inline_text(h1))[0] if h1 is not None else None


def _meta_tags(root) -> dict[str, str]:
    found: dict[str, str] = {}
    for meta in root.iter("meta"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").strip().lower()
        value = join_wrapped(meta.get("content") or "")
        if key and value:
            found.setdefault(key, value)
    return found


def _json_ld(root) -> dict[str, str]:
    """datePublished, headline, url and the publisher's name from the page's JSON-LD, if any."""
    found: dict[str, str] = {}
    for script in root.xpath("//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text or "")
        except (json.JSONDecodeError, TypeError):
            continue
        items = data if isinstance(data, list) else data.get("@graph", [data]) if isinstance(data, dict) else []
        for item in items:
            if not isinstance(item, dict):
                continue
            for key in ("datePublished", "headline", "url"):
                if isinstance(item.get(key), str):
                    found.setdefault(key, item[key])
            publisher = item.get("publisher")
            if isinstance(publisher, dict) and isinstance(publisher.get("name"), str):
                found.setdefault("publisher", publisher["name"])
    return found


def _iso(value: str | None) -> str | None:
    if not value:
        return None
    if m := re.match(r"(\d{4}-\d{2}-\d{2})", value.strip()):
        return m.group(1)
    return parse_long_date(value)
