"""Documents keep their structure: rag/structure.py, rag/html_reader.py, rag/pdf_reader.py and the
markdown path of rag/cleaning.py, down to the passages (rag/chunking.py) and the article view."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from pdf_fixture import two_page_manual
from rag.chunking import Chunker, ChunkerConfig, passage_units, sentence_spans
from rag.errors import IngestError
from rag.ingest import load_document
from rag.records import Document
from ui.render import article_page

COLLECTIONS = Path(__file__).resolve().parents[1] / "eval" / "collections"

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Logging HOWTO — Example Docs</title>
<meta property="og:site_name" content="Example Docs">
<link rel="canonical" href="https://docs.example.org/howto/logging.html">
<script type="application/ld+json">{"@type": "TechArticle", "datePublished": "2023-04-05T10:00:00Z",
 "publisher": {"@type": "Organization", "name": "Example Foundation"}}</script>
</head><body>
<div class="cookie-banner">This site uses cookies. <button>Accept all cookies</button></div>
<nav><a href="/">Home</a> <a href="/howto/">HOWTOs</a></nav>
<form role="search"><input name="q"><button>Go</button></form>
<main>
<h1>Logging HOWTO<a class="headerlink" href="#logging-howto">¶</a></h1>
<p>This page explains how an application
writes log messages. Each message has a level,
and the level decides whether it is shown.</p>
<h2>Levels<a class="headerlink" href="#levels">¶</a></h2>
<table><tr><th>Level</th><th>Numeric value</th></tr>
<tr><td>DEBUG</td><td>10</td></tr><tr><td>WARNING</td><td>30</td></tr></table>
<h2>New handlers ¶</h2>
<ul><li><a href="/rotating">RotatingFileHandler</a> rotates files by size.</li>
<li><a href="/timed">TimedRotatingFileHandler</a> rotates them by time.</li></ul>
<pre>import logging
logging.warning("Watch out. It is hot.")

logging.info("not shown")</pre>
<p>Last updated on Jan 02, 1999.</p>
</main>
<footer><a href="/about">About</a> <a href="/privacy">Privacy</a></footer>
</body></html>
"""

HARD_WRAPPED = """# Field Notes

The survey team crossed the river at dawn and
reached the northern camp before the rain started.
They counted forty-two nests along the bank.

## Equipment

- a waterproof notebook that
  survived the crossing
- two pairs of binoculars

```
count = 42
print(count)
```

| item | weight |
| --- | --- |
| tent | 2.1 kg |
"""


def blocks_of(doc: Document) -> list[tuple[str, str, str]]:
    return [(b.kind, b.section, doc.text[b.start:b.end]) for b in doc.blocks]


# ---- HTML -------------------------------------------------------------------------------------
@pytest.fixture
def html_doc(tmp_path) -> Document:
    path = tmp_path / "logging.html"
    path.write_text(HTML_PAGE, encoding="utf-8")
    return load_document(path)


def test_html_blocks_keep_headings_tables_lists_and_code(html_doc):
    assert blocks_of(html_doc) == [
        ("heading", "Logging HOWTO", "Logging HOWTO"),
        ("paragraph", "Logging HOWTO", "This page explains how an application writes log messages. "
                                       "Each message has a level, and the level decides whether it is shown."),
        ("heading", "Logging HOWTO › Levels", "Levels"),
        ("table", "Logging HOWTO › Levels", "Level | Numeric value\nDEBUG | 10\nWARNING | 30"),
        ("heading", "Logging HOWTO › New handlers", "New handlers"),
        ("list_item", "Logging HOWTO › New handlers", "• RotatingFileHandler rotates files by size."),
        ("list_item", "Logging HOWTO › New handlers", "• TimedRotatingFileHandler rotates them by time."),
        ("code", "Logging HOWTO › New handlers", 'import logging\nlogging.warning("Watch out. It is hot.")\nlogging.info("not shown")'),
    ]
    assert [b.level for b in html_doc.blocks if b.kind == "heading"] == [1, 2, 2]
    assert "¶" not in html_doc.text


def test_html_page_furniture_is_removed_with_its_reason(html_doc):
    reasons = {r.reason for r in html_doc.removed}
    assert {"cookie banner", "navigation", "form or search box", "permalink sign", "last-updated line", "site footer"} <= reasons
    for furniture in ("cookies", "HOWTOs", "Privacy", "Last updated"):
        assert furniture not in html_doc.text


def test_html_metadata_comes_from_where_publishers_put_it(html_doc):
    assert html_doc.title == "Logging HOWTO"  # the site's name is cut from <title>
    assert html_doc.date == "2023-04-05"  # JSON-LD, not the "Last updated" line
    assert html_doc.publisher == "Example Foundation"
    assert html_doc.url == "https://docs.example.org/howto/logging.html"


def test_html_without_declared_date_or_publisher_says_unknown(tmp_path):
    path = tmp_path / "plain.html"
    path.write_text("<html><head><title>Plain page</title></head><body><p>Updated 2020-01-01 in the"
                    " sample output below, which is not the page's date.</p><pre>2019-05-05 started</pre></body></html>")
    doc = load_document(path)
    assert (doc.date, doc.publisher, doc.url) == (None, None, None)


API_PAGE = """<html><head><title>API</title></head><body><main>
<h1>Developer Interface</h1>
<h2>Main Interface</h2>
<dl class="py function">
<dt id="lib.get"><em class="property"><span class="pre">function</span><span class="w"> </span></em><span class="pre">lib.</span><span class="pre">get</span>(<em>url</em>, <em>timeout=None</em>)<a href="_modules/lib.html#get"><span class="viewcode-link">[source]</span></a><a class="headerlink" href="#lib.get">¶</a></dt>
<dd><p>Sends a GET request.</p>
<dl class="field-list simple">
<dt class="field-odd">Parameters<span class="colon">:</span></dt>
<dd class="field-odd"><ul><li><p><strong>url</strong> – URL to fetch.</p></li>
<li><p><strong>timeout</strong> (<a href="#float"><em>float</em></a><em> or </em><a href="#tuple"><em>tuple</em></a>) – How long to wait.</p></li></ul></dd>
<dt class="field-even">Returns<span class="colon">:</span></dt>
<dd class="field-even"><p>Response object</p></dd>
</dl></dd></dl>
<p>These functions share one session.</p>
</main></body></html>"""


def test_documented_functions_title_their_blocks_and_inline_spaces_survive(tmp_path):
    """Generated API docs (Sphinx): a signature whose description holds several blocks is in their
    section path and only theirs; a one-paragraph definition stays "term: definition"; the spaces
    between inline elements and words survive; "[source]" links and permalink signs are left out."""
    path = tmp_path / "api.html"
    path.write_text(API_PAGE.replace("<title>API</title>", "<title>Developer Interface — Lib 2.28.1 documentation</title>"), encoding="utf-8")
    signature = "function lib.get(url, timeout=None)"
    function = f"Developer Interface › Main Interface › {signature}"
    doc = load_document(path)
    assert doc.title == "Developer Interface"  # the page's own heading; the suffix names the site
    assert blocks_of(doc) == [
        ("heading", "Developer Interface", "Developer Interface"),
        ("heading", "Developer Interface › Main Interface", "Main Interface"),
        ("term", function, signature),
        ("paragraph", function, "Sends a GET request."),
        ("term", f"{function} › Parameters", "Parameters"),
        ("list_item", f"{function} › Parameters", "• url – URL to fetch."),
        ("list_item", f"{function} › Parameters", "• timeout (float or tuple) – How long to wait."),
        ("list_item", function, "Returns: Response object"),
        ("paragraph", "Developer Interface › Main Interface", "These functions share one session."),
    ]


def test_documentation_about_cookies_is_not_a_cookie_banner(tmp_path):
    path = tmp_path / "cookies.html"
    path.write_text('<html><body><div id="consent-popup">We use cookies. <button>Accept all cookies</button></div><main>'
                    '<section id="cookies"><h2>Cookies</h2><p>If a response contains some Cookies, you can quickly access them.</p>'
                    '<ul><li>Calling copy on a cookie jar will now preserve the cookie policy correctly.</li></ul></section>'
                    '</main></body></html>', encoding="utf-8")
    doc = load_document(path)
    assert "you can quickly access them" in doc.text and "preserve the cookie policy correctly" in doc.text
    assert "We use cookies" not in doc.text and "cookie banner" in {r.reason for r in doc.removed}


def test_html_line_breaks_site_names_and_long_scripts(tmp_path):
    path = tmp_path / "page.html"
    script = "var tracker = 1;" * 2000
    path.write_text(f"<html><head><meta property='og:site_name' content='Example Docs'><title>Page</title></head><body>"
                    f"<script>{script}</script><p>First line of the address<br>second line of the address</p></body></html>")
    doc = load_document(path)
    assert doc.text == "First line of the address second line of the address"  # <br> is a space, not glue
    assert doc.publisher is None  # a site's name is not its publisher
    (scripts,) = [r for r in doc.removed if r.reason == "script"]
    assert scripts.text.startswith("var tracker = 1;") and len(scripts.text) <= 501  # recorded, not stored whole


def test_an_icon_opening_a_paragraph_is_not_read_as_its_first_words(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html><body><p><img alt='more info' src='more.png'/> Read more about the toctree directive.</p>"
                    "<p>The <img alt='alabaster' src='a.png'/> theme is the default one.</p></body></html>")
    text = load_document(path).text
    assert "Read more about the toctree directive." in text and "more info" not in text
    assert "The alabaster theme is the default one." in text  # an image inside a sentence is a word of it


@pytest.mark.parametrize("page", ["<!-- only a comment -->", "<html></html>", "<html><body><nav><a href='/'>Home</a></nav></body></html>"])
def test_html_without_article_text_is_one_clear_error(tmp_path, page):
    path = tmp_path / "empty.html"
    path.write_text(page, encoding="utf-8")
    with pytest.raises(IngestError, match="no readable article text found in the HTML"):
        load_document(path)


# ---- markdown and plain text -------------------------------------------------------------------
def test_hard_wrapped_markdown_becomes_blocks(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(HARD_WRAPPED, encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "Field Notes"
    assert blocks_of(doc) == [
        ("paragraph", "", "The survey team crossed the river at dawn and reached the northern camp before the rain "
                          "started. They counted forty-two nests along the bank."),
        ("heading", "Equipment", "Equipment"),
        ("list_item", "Equipment", "• a waterproof notebook that survived the crossing"),
        ("list_item", "Equipment", "• two pairs of binoculars"),
        ("code", "Equipment", "count = 42\nprint(count)"),
        ("table", "Equipment", "item | weight\ntent | 2.1 kg"),
    ]
    # a hard wrap is not a sentence end; code and table lines are units of their own
    units = [doc.text[a:b] for a, b in sentence_spans(doc.text)]
    assert "The survey team crossed the river at dawn and reached the northern camp before the rain started." in units
    assert "count = 42" in units and "tent | 2.1 kg" in units


# ---- PDF --------------------------------------------------------------------------------------
@pytest.fixture
def pdf_doc(tmp_path) -> Document:
    path = tmp_path / "widget.pdf"
    path.write_bytes(two_page_manual())
    return load_document(path)


def test_pdf_blocks_pages_and_sections(pdf_doc):
    assert pdf_doc.title == "Widget Manual"  # the document information's title, without the site's name
    assert pdf_doc.date == "2024-03-15"
    assert [(b.kind, b.level, b.page, b.section) for b in pdf_doc.blocks] == [
        ("heading", 1, 1, "Widget Manual"),
        ("heading", 2, 1, "Widget Manual › 1 Installing the widget"),
        ("paragraph", 0, 1, "Widget Manual › 1 Installing the widget"),
        ("code", 0, 1, "Widget Manual › 1 Installing the widget"),
        ("paragraph", 0, 1, "Widget Manual › 1 Installing the widget"),
        ("heading", 2, 2, "Widget Manual › 2 Removing the widget"),
        ("paragraph", 0, 2, "Widget Manual › 2 Removing the widget"),
    ]


def test_pdf_hyphenation_page_breaks_code_and_footers(pdf_doc):
    texts = [pdf_doc.text[b.start:b.end] for b in pdf_doc.blocks]
    # a word hyphenated at a line end is whole again; wrapped lines are one paragraph
    assert texts[2] == ("The widget is installed with the command below, which downloads the package and checks its "
                        "signature before it unpacks anything.")
    # the code block keeps its lines and their indentation, in reading order before what follows it
    assert texts[3] == "$ widget install --verify\n$ widget status\n    state: ready"
    # a paragraph that runs over the page break is one paragraph, its split word joined
    assert texts[4].endswith("recorded for the administrator to read later.")
    assert {(r.text, r.reason) for r in pdf_doc.removed} == {
        ("Widget Manual 1", "repeated on many pages (running head, footer or banner)"),
        ("Widget Manual 2", "repeated on many pages (running head, footer or banner)"),
    }


@pytest.mark.integration
def test_pdf_passages_carry_page_and_section_and_the_article_view_highlights_them_exactly(embedder, pdf_doc):
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(max_tokens=40, overlap_tokens=8)).chunk(pdf_doc)
    assert {(c.page, c.section) for c in chunks} == {
        (1, "Widget Manual › 1 Installing the widget"), (2, "Widget Manual › 2 Removing the widget")}
    for chunk in chunks:
        assert pdf_doc.text[chunk.start:chunk.end] == chunk.text
        page = article_page(pdf_doc, chunk.start, chunk.end)
        assert f'<mark id="passage">{html.escape(chunk.text)}</mark>' in page
    assert any("$ widget status" in c.text for c in chunks)


# ---- passages ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_passages_carry_their_section_and_headings_are_never_answer_units(embedder, html_doc):
    chunks = Chunker(embedder.tokenizer, ChunkerConfig()).chunk(html_doc)
    assert [c.section for c in chunks] == ["Logging HOWTO", "Logging HOWTO › Levels", "Logging HOWTO › New handlers"]
    assert chunks[1].heading == "Logging HOWTO › Levels"  # the title is not repeated before its own section path
    # a section's first passage opens with the sentences before its heading (the overlap)
    assert chunks[1].text.startswith("Each message has a level") and chunks[1].headings == ("Levels",)
    for chunk in chunks:
        units = [chunk.text[a:b] for a, b in passage_units(chunk)]
        assert not set(units) & {"Logging HOWTO", "Levels", "New handlers"}
    assert "DEBUG | 10" in [chunks[1].text[a:b] for a, b in passage_units(chunks[1])]


@pytest.mark.integration
def test_a_documented_functions_signature_is_a_unit_an_answer_can_quote(embedder, tmp_path):
    """A term that titles a part (a signature) opens its passages' section like a heading, but it is
    text: "What is the default timeout of lib.get?" is answered by `timeout=None` in it."""
    path = tmp_path / "api.html"
    path.write_text(API_PAGE, encoding="utf-8")
    chunks = Chunker(embedder.tokenizer, ChunkerConfig()).chunk(load_document(path))
    signature = "function lib.get(url, timeout=None)"
    first = next(c for c in chunks if signature in c.text)
    assert first.section == f"Developer Interface › Main Interface › {signature}" and signature not in first.headings
    units = [first.text[a:b] for a, b in passage_units(first)]
    assert units[units.index(signature) + 1] == "Sends a GET request."


@pytest.mark.integration
def test_a_long_code_block_is_split_at_line_boundaries(embedder):
    lines = [f"option_{i} = value_{i}  # sets option {i}" for i in range(60)]
    doc = Document("cfg", "\n".join(lines))
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(max_tokens=64, overlap_tokens=0)).chunk(doc)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.split("\n")[0] in lines and chunk.text.split("\n")[-1] in lines


def test_blocks_survive_the_document_record_round_trip(pdf_doc):
    again = Document.from_dict(json.loads(json.dumps(pdf_doc.to_dict())))
    assert again.blocks == pdf_doc.blocks and again.content_hash == pdf_doc.content_hash


# ---- the development collections --------------------------------------------------------------
def collection_documents() -> list[Path]:
    return sorted(p for p in COLLECTIONS.glob("*/docs/*") if p.suffix in (".html", ".pdf", ".txt"))


@pytest.fixture(scope="module")
def collection_chunks(embedder):
    files = collection_documents()
    if not files:
        pytest.fail(f"no development collections under {COLLECTIONS}: run `make collections`")
    chunker = Chunker(embedder.tokenizer, ChunkerConfig())
    return [(doc, chunker.chunk(doc)) for doc in map(load_document, files)]


def _prose_block_at(doc: Document, offset: int):
    return next((b for b in doc.blocks if b.start <= offset < b.end and b.splits_into_sentences), None)


@pytest.mark.integration
def test_every_collection_passage_starts_and_ends_at_a_sentence_boundary(collection_chunks):
    """Outside code and tables, a passage begins where a block or a sentence begins and ends where
    one ends (pysbd's sentences): never in the middle of one."""
    cut = []
    for doc, chunks in collection_chunks:
        for chunk in chunks:
            block = _prose_block_at(doc, chunk.start)
            if block is not None and chunk.start != block.start:
                starts = {block.start + a for a, _ in sentence_spans(doc.text[block.start:block.end])}
                if chunk.start not in starts:
                    cut.append((doc.doc_id, chunk.position, "start", chunk.text[:60]))
            block = _prose_block_at(doc, chunk.end - 1)
            if block is not None and chunk.end != block.end:
                ends = {block.start + b for _, b in sentence_spans(doc.text[block.start:block.end])}
                if chunk.end not in ends:
                    cut.append((doc.doc_id, chunk.position, "end", chunk.text[-60:]))
    total = sum(len(chunks) for _, chunks in collection_chunks)
    # only a sentence longer than a whole passage may be cut (there is no other way to fit it)
    assert len(cut) <= 0.002 * total, cut[:10]


@pytest.mark.integration
def test_no_collection_passage_cuts_a_code_block_or_table_one_passage_could_hold(collection_chunks, embedder):
    """A code block or table short enough for one passage is in one passage whole (189 of 801 were
    cut between two before passages were packed block by block)."""
    budget = ChunkerConfig().max_tokens - 2
    cut, blocks = [], 0
    for doc, chunks in collection_chunks:
        for b in doc.blocks:
            text = doc.text[b.start:b.end]
            if b.kind not in ("code", "table") or "\n" not in text.strip():
                continue
            if len(embedder.tokenizer(text, add_special_tokens=False)["input_ids"]) > budget:
                continue
            blocks += 1
            start, end = b.start + len(text) - len(text.lstrip()), b.start + len(text.rstrip())
            if not any(c.start <= start and end <= c.end for c in chunks):
                cut.append((doc.doc_id, text[:60]))
    assert blocks > 500 and not cut, cut[:5]


@pytest.mark.integration
def test_no_collection_passage_quotes_a_heading_or_holds_a_permalink_sign(collection_chunks):
    for doc, chunks in collection_chunks:
        headings = [b for b in doc.blocks if b.kind == "heading"]
        for chunk in chunks:
            assert "¶" not in chunk.text, (doc.doc_id, chunk.position)
            inside = [doc.text[h.start:h.end] for h in headings if chunk.start <= h.start < chunk.end]
            assert list(chunk.headings) == inside, (doc.doc_id, chunk.position)
            assert not any(h.start == chunk.start for h in headings), (doc.doc_id, chunk.position)
            heading_spans = [(h.start - chunk.start, h.end - chunk.start) for h in headings if chunk.start <= h.start < chunk.end]
            in_heading = [(a, b) for a, b in passage_units(chunk) if any(s <= a < e for s, e in heading_spans)]
            assert not in_heading, (doc.doc_id, chunk.position, [chunk.text[a:b] for a, b in in_heading])  # no piece of one either


@pytest.mark.integration
def test_every_collection_answer_survives_ingestion(collection_chunks):
    """Each golden answer's context, tables, lists and code included, is in a passage of its article."""
    from rag.evaluation import ingested_share
    from rag.golden import load_golden

    chunks = [c for _, cs in collection_chunks for c in cs]
    for golden in sorted(COLLECTIONS.glob("*/golden.*.jsonl")):
        items = [i for i in load_golden(golden) if i.answerable]
        assert ingested_share(chunks, items) >= 0.95, golden


def test_pdf_table_rows_keep_their_wrapped_cells(tmp_path):
    from pdf_fixture import Text, pdf_bytes

    page = [
        Text("Options of the widget command", 72, 72),
        Text("--quiet", 72, 100), Text("Print nothing but errors and exit with a sta-", 250, 100),
        Text("tus other than zero when a step fails.", 250, 114),
        Text("--verbose", 72, 128), Text("Print every step.", 250, 128),
    ]
    path = tmp_path / "options.pdf"
    path.write_bytes(pdf_bytes([page]))
    doc = load_document(path)
    # the cell's second line belongs to its row, and the word split across the two is whole
    assert blocks_of(doc)[-1] == ("table", "", "--quiet | Print nothing but errors and exit with a status other "
                                                "than zero when a step fails.\n--verbose | Print every step.")


def test_a_bold_title_on_top_of_its_text_is_not_glued_to_it(tmp_path):
    """A sidebar's title set in bold ("CULTURE The good old days of kernel-package") was read as the
    start of the sentence under it; a bold line inside a paragraph stays in the paragraph."""
    from pdf_fixture import Text, pdf_bytes

    page = [
        Text("Compiling a kernel takes a while. Plan for it before you start the build", 72, 72),
        Text("on a slow machine.", 72, 86),
        Text("CULTURE The good old days of kernel-package", 72, 114, "F2"),
        Text("Before the build system could make packages, make-kpkg was the way.", 72, 128),
        Text("It is gone now.", 72, 142),
        Text("Build the package with the command", 72, 170),
        Text("make bindeb-pkg in the source folder", 72, 184, "F2"),
        Text("and install it with dpkg.", 72, 198),
    ]
    path = tmp_path / "sidebar.pdf"
    path.write_bytes(pdf_bytes([page]))
    assert [text for kind, _, text in blocks_of(load_document(path))] == [
        "Compiling a kernel takes a while. Plan for it before you start the build on a slow machine.",
        "CULTURE The good old days of kernel-package",
        "Before the build system could make packages, make-kpkg was the way. It is gone now.",
        "Build the package with the command make bindeb-pkg in the source folder and install it with dpkg.",
    ]
