"""HTML and Markdown for the UI. Every piece of document or model text is escaped here:
markup from articles or from the model is shown as text, never run."""

from __future__ import annotations

import html
from urllib.parse import quote

from rag.pipeline import REFUSAL_DETAIL, REFUSAL_HEADLINE, UNSURE
from rag.records import Answer, Document, Hit

UNSUPPORTED = "⚠"


def article_url(doc_id: str, chunk_id: str | None = None) -> str:
    url = f"/article/{quote(doc_id, safe='')}"
    return f"{url}?chunk={quote(chunk_id, safe='')}#passage" if chunk_id else url


def _escape_md(text: str) -> str:
    """Escape HTML, and the brackets that could form Markdown links or images: text stays text."""
    return html.escape(text, quote=False).replace("[", "&#91;").replace("]", "&#93;")


def answer_markdown(answer: Answer) -> str:
    """The answer with each [n] linked to its source's passage; unsupported sentences marked."""
    if answer.refused:
        return f"**{REFUSAL_HEADLINE}.** {_escape_md(REFUSAL_DETAIL)}"
    parts = []
    for sentence in answer.sentences:
        text = _escape_md(sentence.text)
        if not sentence.supported:
            reason = html.escape(sentence.reason or "not supported by the cited passage", quote=True)
            text = f'<span class="unsupported" title="{reason}">{text} {UNSUPPORTED}</span>'
        links = "".join(
            f'<a class="cite" href="{article_url(answer.sources[n - 1].chunk.doc_id, answer.sources[n - 1].chunk.chunk_id)}" '
            f'target="_blank">[{n}]</a>'
            for n in sentence.citations if 1 <= n <= len(answer.sources)
        )
        parts.append(f"{text} {links}".strip())
    body = " ".join(parts) or _escape_md(answer.answer)
    notice = answer.notice
    if answer.low_confidence:  # said first, so the quote is read as the closest passages, not the answer
        body = f"**Low confidence.** {_escape_md(UNSURE)}\n\n{body}"
        notice = (notice or "").replace(UNSURE, "").strip()
    if notice:
        body += f"\n\n*Note: {_escape_md(notice)}*"
    fraction = answer.supported_fraction
    if fraction is not None and fraction < 1:
        body += f"\n\n*{UNSUPPORTED} marks a sentence the cited passage does not support ({fraction:.0%} supported).*"
    return body


def streaming_markdown(text: str) -> str:
    return _escape_md(text) + " ▌"


def _highlight(passage: str, spans: list[tuple[int, int]]) -> str:
    """The passage, escaped, with the spans the answer rests on in <mark>."""
    out, position = [], 0
    for start, end in sorted(set(spans)):
        if start < position or end <= start:
            continue
        out += [html.escape(passage[position:start]), f"<mark>{html.escape(passage[start:end])}</mark>"]
        position = end
    return "".join(out) + html.escape(passage[position:])


def _used_spans(answer: Answer, n: int) -> list[tuple[int, int]]:
    """Where in source n the answer's sentences rest, as the grounding check or the quote found it."""
    return [(span.start, span.end) for s in answer.sentences for span in s.spans if span.marker == n]


def sources_html(answer: Answer | None, hits: list[Hit] | None = None, trace_url: str | None = None) -> str:
    """Cited sources first, then the other retrieved ones."""
    hits = answer.sources if answer else (hits or [])
    if not hits:
        return '<div class="sources empty">Sources appear here with each answer.</div>'
    cited = [c.marker for c in answer.citations] if answer else []
    order = cited + [n for n in range(1, len(hits) + 1) if n not in cited]
    cards = []
    for n in order:
        hit = hits[n - 1]
        c = hit.chunk
        where = c.section if c.section and c.section != c.title else None
        meta = " · ".join(html.escape(x) for x in (where, c.page and f"page {c.page}", c.publisher, c.date) if x)
        relevance = f"relevance {hit.dense_score:.2f}" if hit.dense_score is not None else ""
        passage = _highlight(c.text, _used_spans(answer, n)) if answer and n in cited else html.escape(c.text)
        original = (f' · <a href="{html.escape(c.url, quote=True)}" target="_blank" rel="noopener noreferrer">original</a>'
                    if c.url and c.url.startswith(("http://", "https://")) else "")
        cards.append(
            f'<div class="source{" cited" if n in cited else ""}" id="source-{n}">'
            f'<div class="source-head"><b>[{n}]</b> {html.escape(c.title or c.doc_id)}</div>'
            f'<div class="source-meta">{meta} {("· " + relevance) if relevance else ""}'
            f' · <a href="{article_url(c.doc_id, c.chunk_id)}" target="_blank">open in article</a>{original}</div>'
            f'<div class="passage">{passage}</div></div>'
        )
    label = "<h4>Cited sources, then other retrieved passages</h4>" if cited else "<h4>Closest passages</h4>"
    trace = f'<div class="trace"><a href="{trace_url}" download>Download this answer\'s trace (JSON)</a></div>' if trace_url else ""
    return f'<div class="sources">{label}{"".join(cards)}{trace}</div>'


def article_page(doc: Document, chunk_start: int | None, chunk_end: int | None) -> str:
    """A whole cleaned article, the cited passage highlighted and scrolled to (#passage). No scripts."""
    text = doc.text
    cuts = [(chunk_start, '<mark id="passage">'), (chunk_end, "</mark>")] if chunk_start is not None and chunk_end is not None else []
    # Headings and terms are styled in place; a passage holds them whole, so they never cut its <mark>.
    for b in doc.blocks:
        if b.kind in ("heading", "term"):
            style = f"heading h{min(b.level, 4)}" if b.kind == "heading" else "term"
            cuts += [(b.start, f'<span class="{style}">'), (b.end, "</span>")]
    cuts.sort(key=lambda cut: (cut[0], _nesting(cut[1])))
    body, position = [], 0
    for offset, tag in cuts:
        body += [html.escape(text[position:offset]), tag]
        position = offset
    body.append(html.escape(text[position:]))
    # One pre-wrap block, not <p> per paragraph: a passage spans paragraphs, and <p> tags would cut its <mark>.
    body = f'<div class="text">{"".join(body)}</div>'
    meta = " · ".join(html.escape(x) for x in (doc.publisher, doc.date) if x)
    original = (f'<p><a href="{html.escape(doc.url, quote=True)}" target="_blank" rel="noopener noreferrer">Original article</a></p>'
                if doc.url and doc.url.startswith(("http://", "https://")) else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(doc.title or doc.doc_id)}</title>
<style>body{{font-family:Georgia,serif;max-width:46em;margin:2em auto;padding:0 1em;line-height:1.55}}
mark{{background:#ffe58a;padding:2px 0;scroll-margin-top:30vh}}.meta{{color:#555}}.text{{white-space:pre-wrap}}
.heading{{font-weight:bold;font-family:sans-serif}}.term{{font-weight:bold;font-family:monospace}}.h1,.h2{{font-size:1.3em}}.h3{{font-size:1.1em}}</style></head>
<body><p><a href="/">← back to the chat</a></p><h1>{html.escape(doc.title or doc.doc_id)}</h1>
<p class="meta">{meta} · document {html.escape(doc.doc_id)}</p>{original}{body}</body></html>"""


def _nesting(tag: str) -> int:
    """At one offset: a span closes, then the passage's mark opens or closes, then a span opens, so
    a passage that starts or ends with a term holds it whole."""
    return 1 if "mark" in tag else 0 if tag.startswith("</") else 2


def welcome_markdown(documents: list[Document]) -> str:
    rows = "\n".join(
        f"- **{_escape_md(d.title or d.doc_id)}** — {_escape_md(d.publisher or 'unknown publisher')}, {d.date or 'undated'} "
        f"([read]({article_url(d.doc_id)}))"
        for d in sorted(documents, key=lambda d: d.date or "")
    )
    return (f"Ask questions about **{len(documents)} articles**; every answer cites its sources as [n], "
            f"and each [n] opens the article at the passage.\n\n{rows}")
