"""ui/render.py: every piece of article or model text is escaped; markers link to their passages."""

from __future__ import annotations

import html
import re

from rag.pipeline import NOT_FOUND, UNSURE
from rag.records import Answer, Block, Chunk, Citation, Document, Hit, PassageSpan, Sentence
from ui import render

HOSTILE = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(1)) ![i](http://evil/x.png)'


def chunk(n: int, text: str = "", doc_id: str | None = None, **meta) -> Chunk:
    return Chunk(f"chunk-{n}", doc_id or f"doc-{n}", 0, text or f"Passage number {n} says something.", 0, 10, **meta)


def hit(n: int, text: str = "", **meta) -> Hit:
    return Hit(chunk(n, text, **meta), score=1.0 / n, dense_rank=n, bm25_rank=n, dense_score=0.5)


def answer_with(sentences: list[Sentence], n_sources: int = 3, notice: str | None = None, hits: list[Hit] | None = None) -> Answer:
    hits = hits or [hit(i) for i in range(1, n_sources + 1)]
    markers = dict.fromkeys(m for s in sentences for m in s.citations if 1 <= m <= len(hits))
    citations = [Citation(m, hits[m - 1].chunk.doc_id, hits[m - 1].chunk.chunk_id) for m in markers]
    return Answer("q?", " ".join(s.text for s in sentences), "llm", False, hits, citations, sentences, notice=notice)


def card_order(sources: str) -> list[int]:
    return [int(n) for n in re.findall(r'<div class="source[^"]*" id="source-(\d+)">', sources)]


# ---- article_url -------------------------------------------------------------------------------
def test_article_url_links_to_the_passage_anchor():
    assert render.article_url("003_abc", "e48304") == "/article/003_abc?chunk=e48304#passage"
    assert render.article_url("003_abc") == "/article/003_abc"


def test_article_url_quotes_odd_ids_so_they_stay_one_path_segment():
    url = render.article_url("../a b/c?d#e&<x>", 'k"&#/')
    assert url == "/article/..%2Fa%20b%2Fc%3Fd%23e%26%3Cx%3E?chunk=k%22%26%23%2F#passage"
    assert url.count("/") == 2 and url.count("#") == 1 and url.count("?") == 1


# ---- answer_markdown ---------------------------------------------------------------------------
def test_answer_markdown_escapes_markup_and_markdown_links_from_the_model():
    out = render.answer_markdown(answer_with([Sentence(HOSTILE, [1], True)]))

    assert "<script" not in out.lower() and "<img" not in out.lower()
    assert "](javascript" not in out and "](http" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&#91;x&#93;(javascript:alert(1))" in out
    # the only tag in the answer is the citation link the renderer made
    assert re.findall(r"<(\w+)", out) == ["a"]


def test_answer_markdown_links_each_marker_to_its_source_passage():
    answer = answer_with([Sentence("Russia offered a loan of $1.5 billion.", [2], True),
                          Sentence("Both leaders met in Sochi.", [1, 3], True)])

    out = render.answer_markdown(answer)

    links = re.findall(r'<a class="cite" href="([^"]+)" target="_blank">\[(\d)\]</a>', out)
    assert links == [("/article/doc-2?chunk=chunk-2#passage", "2"),
                     ("/article/doc-1?chunk=chunk-1#passage", "1"),
                     ("/article/doc-3?chunk=chunk-3#passage", "3")]
    assert out.index("$1.5 billion.") < out.index("[2]") < out.index("Sochi") < out.index("[1]")
    assert "⚠" not in out


def test_answer_markdown_links_markers_of_odd_doc_ids_quoted():
    hits = [Hit(chunk(1, doc_id='x" onmouseover="alert(1)'), 1.0)]
    out = render.answer_markdown(answer_with([Sentence("A claim.", [1], True)], hits=hits))

    assert 'href="/article/x%22%20onmouseover%3D%22alert%281%29?chunk=chunk-1#passage"' in out
    assert "onmouseover=" not in out


def test_answer_markdown_never_links_an_out_of_range_marker():
    out = render.answer_markdown(answer_with([Sentence("Claim.", [0, 4], False, "marker out of range")], n_sources=3))

    assert 'class="cite"' not in out
    assert "[0]" not in out and "[4]" not in out


def test_answer_markdown_marks_an_unsupported_sentence_with_its_reason():
    reason = 'similarity 0.41 < 0.60 with [2] "<b>quoted</b>"'
    answer = answer_with([Sentence("Supported claim.", [1], True),
                          Sentence("Made-up <b>claim</b>.", [2], False, reason)])

    out = render.answer_markdown(answer)

    span = re.search(r'<span class="unsupported" title="([^"]*)">(.*?)</span>', out)
    assert span, out
    assert html.unescape(span.group(1)) == reason
    assert span.group(2) == "Made-up &lt;b&gt;claim&lt;/b&gt;. ⚠"
    assert out.count("⚠") == 2  # the flagged sentence, and the footnote explaining the sign
    assert "(50% supported)" in out
    assert "Supported claim." in out.split("<span")[0]


def test_answer_markdown_gives_an_unsupported_sentence_without_reason_a_default_title():
    out = render.answer_markdown(answer_with([Sentence("Claim.", [1], False)]))
    assert 'title="not supported by the cited passage"' in out


def test_answer_markdown_of_a_refusal_starts_with_not_found():
    refused = Answer("q?", NOT_FOUND, "extractive", True, [hit(1)])

    out = render.answer_markdown(refused)

    assert out.startswith("**Not found in the articles.**")
    assert "none of the passages answers this question" in out
    assert 'class="cite"' not in out


def test_a_low_confidence_answer_says_so_before_the_quote_and_once():
    unsure = answer_with([Sentence("Closest sentence.", [1], True)], notice=f"The endpoint failed. {UNSURE}")
    unsure.low_confidence = True

    out = render.answer_markdown(unsure)

    assert out.startswith(f"**Low confidence.** {UNSURE}\n\nClosest sentence.")
    assert out.count(UNSURE) == 1 and out.endswith("*Note: The endpoint failed.*")
    assert "Low confidence" not in render.answer_markdown(answer_with([Sentence("Closest sentence.", [1], True)]))


def test_answer_markdown_escapes_the_notice():
    notice = "the LLM endpoint http://127.0.0.1:9 failed with HTTP 500 <script>x</script>"
    out = render.answer_markdown(answer_with([Sentence("Claim.", [1], True)], notice=notice))

    assert "*Note: the LLM endpoint http://127.0.0.1:9 failed with HTTP 500 &lt;script&gt;x&lt;/script&gt;*" in out
    assert "<script" not in out


def test_streaming_markdown_escapes_partial_model_text():
    out = render.streaming_markdown('partial <img src=x onerror="alert(1)"> [a](javascript:x)')
    assert "<img" not in out and "](javascript" not in out
    assert out.endswith(" ▌")


# ---- sources_html ------------------------------------------------------------------------------
def test_sources_html_puts_cited_sources_first_in_citation_order():
    answer = answer_with([Sentence("First claim.", [3], True), Sentence("Second claim.", [1], True)], n_sources=4)

    out = render.sources_html(answer, trace_url="/trace/" + "a" * 32 + ".json")

    assert card_order(out) == [3, 1, 2, 4]
    assert re.findall(r'<div class="(source[^"]*)" id="source-\d">', out) == ["source cited", "source cited", "source", "source"]
    assert "Cited sources, then other retrieved passages" in out
    assert f'<a href="/trace/{"a" * 32}.json" download>' in out
    assert 'href="/article/doc-3?chunk=chunk-3#passage"' in out


def test_sources_html_without_an_answer_lists_the_hits_in_rank_order():
    out = render.sources_html(None, hits=[hit(1), hit(2)])
    assert card_order(out) == [1, 2]
    assert "Closest passages" in out and "cited" not in out and "trace" not in out


def test_sources_html_with_nothing_retrieved_says_so():
    assert "Sources appear here" in render.sources_html(None)


def test_sources_html_escapes_passage_text_titles_and_metadata():
    h = hit(1, text=HOSTILE + " The loan was $1.5 billion.", title="<b>Title</b>", publisher="<i>Pub</i>", date="2020-09-14",
            url='https://example.org/a" onclick="x')
    start = h.chunk.text.index("The loan")
    used = PassageSpan(1, start, len(h.chunk.text))  # where the grounding check found the sentence rests
    answer = answer_with([Sentence("The loan was $1.5 billion.", [1], True, spans=[used])], hits=[h])

    out = render.sources_html(answer)

    assert "<script" not in out.lower() and "<img" not in out.lower() and "<b>Title" not in out and "<i>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in out
    assert "&lt;b&gt;Title&lt;/b&gt;" in out and "&lt;i&gt;Pub&lt;/i&gt;" in out
    assert 'href="https://example.org/a&quot; onclick=&quot;x"' in out
    assert re.search(r"<mark>The loan was \$1\.5 billion\.</mark>", out) and out.count("<mark>") == 1  # the span, escaped


def test_sources_html_links_only_http_originals():
    out = render.sources_html(None, hits=[hit(1, url="javascript:alert(1)"), hit(2, url="https://example.org/x")])
    assert "javascript:" not in out
    assert out.count(">original</a>") == 1


# ---- article_page -------------------------------------------------------------------------------
ARTICLE = (
    "Opening paragraph with <b>markup</b>.\n\n"
    "The cited passage starts here.\n\nIt goes on over a second paragraph with <script>alert(1)</script>.\n\n"
    "Closing paragraph."
)


def document(**meta) -> Document:
    return Document("doc-1", ARTICLE, title="Hostile <script>title</script>", date="2021-05-28", **meta)


def test_article_page_wraps_the_whole_passage_in_one_mark():
    start = ARTICLE.index("The cited passage")
    end = ARTICLE.index("Closing") - 2

    page = render.article_page(document(), start, end)

    marked = re.findall(r'<mark id="passage">(.*?)</mark>', page, re.S)
    assert marked == [html.escape(ARTICLE[start:end])], "one mark holding the passage, not cut by paragraph tags"
    assert page.count("<mark") == 1
    before, after = page.split('<mark id="passage">')
    assert html.escape("Opening paragraph with <b>markup</b>.") in before
    assert "Closing paragraph." in after.split("</mark>")[1]


def test_a_passage_that_starts_with_a_term_holds_it_whole_in_its_mark():
    """A documented function's signature opens its passage: the mark opens before the term's span and
    closes after it, so the highlight is well nested and covers the signature."""
    text = "Main Interface\n\nlib.get(url, timeout=None)\n\nSends a GET request."
    term = Block("term", text.index("lib.get"), text.index(")") + 1, "Main Interface › lib.get(url, timeout=None)", 2)
    doc = Document("api", text, title="API", blocks=[Block("heading", 0, 14, "Main Interface", 1), term])
    page = render.article_page(doc, term.start, len(text))
    assert '<mark id="passage"><span class="term">lib.get(url, timeout=None)</span>\n\nSends a GET request.</mark>' in page
    assert '<span class="heading h1">Main Interface</span>' in page


def test_article_page_escapes_the_document_text_and_title():
    page = render.article_page(document(publisher="<i>Pub</i>", url="javascript:alert(1)"), None, None)

    assert "<script" not in page.lower() and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Hostile &lt;script&gt;title&lt;/script&gt;" in page
    assert "<mark" not in page
    assert "javascript:" not in page  # only http(s) originals are linked


def test_article_page_links_an_http_original():
    page = render.article_page(document(url="https://example.org/a?b=1&c=2"), None, None)
    assert 'href="https://example.org/a?b=1&amp;c=2"' in page


# ---- welcome_markdown ----------------------------------------------------------------------------
def test_welcome_markdown_escapes_titles_and_links_each_article():
    docs = [Document("doc/1", "x", title="[t](javascript:alert(1)) <script>", publisher="P", date="2020-01-01")]

    out = render.welcome_markdown(docs)

    assert "**1 articles**" in out
    assert "<script" not in out and "](javascript" not in out
    assert "([read](/article/doc%2F1))" in out
