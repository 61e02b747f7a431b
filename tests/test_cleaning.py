"""rag/cleaning.py on the real seed articles: metadata found, page furniture removed with a reason."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.cleaning import clean_text, join_broken_url, parse_long_date

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def seed(prefix: str):
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    return clean_text(path.read_text(encoding="utf-8"))


def reasons_for(cleaned, fragment: str) -> list[str]:
    return [r.reason for r in cleaned.removed if fragment in r.text]


# ---- metadata -------------------------------------------------------------------------------
def test_004_metadata_date_publisher_and_whole_url():
    c = seed("004")
    assert c.date == "2020-09-03"
    assert c.publisher == "RFE/RL"
    # the source line in the file has spaces inside the URL; it must come out whole
    assert c.url == "https://www.rferl.org/a/russian-pm-visits-minsk-as-belarus-looks-to-ally-for-help/30818225.html"
    assert c.title == "Russian PM In Minsk As Belarus Looks To Ally For Help"


def test_002_metadata_from_markdown_heading_byline_and_original_url():
    c = seed("002")
    assert c.date == "2020-09-11"
    assert c.url == "https://www.themoscowtimes.com/2020/09/11/putin-lukashenko-to-talk-integration-amid-belarus-protests-a71419"
    assert c.title == "Putin, Lukashenko To Talk 'Integration' Amid Belarus Protests"
    assert c.publisher == "AFP"


def test_000_iso_date_prefix_is_metadata_and_the_sentence_stays():
    c = seed("000")
    assert c.date == "2021-05-28"
    assert c.text.startswith("Belarusian strongman Alexander Lukashenko will seek")
    assert "date 2021-05-28" not in c.text
    assert reasons_for(c, "2021-05-28") == ["date line (kept as metadata)"]


@pytest.mark.parametrize("prefix", ["001", "003"])
def test_undated_articles_have_no_date(prefix):
    c = seed(prefix)
    assert c.date is None
    assert c.url is None


def test_003_plain_first_line_becomes_the_title():
    c = seed("003")
    assert c.title == "Putin Backs Lukashenko as Belarus Leader Vows Closer Ties"
    assert c.text.startswith("President Vladimir Putin on Monday backed")


# ---- boilerplate ----------------------------------------------------------------------------
def test_004_banners_copyright_and_mailing_list_removed_with_reasons():
    c = seed("004")
    assert reasons_for(c, "UNITED24 - Make a charitable donation") == ["donation banner"]
    assert reasons_for(c, "[ rfe/rl banner ]") == ["site banner"]
    assert reasons_for(c, "Copyright (c) 2020. RFE/RL, Inc.") == ["copyright line"]
    assert reasons_for(c, "Join the GlobalSecurity.org mailing list") == ["mailing-list plea"]
    assert reasons_for(c, "Weapons of Mass Destruction (WMD)") == ["page header above the headline"]
    assert reasons_for(c, "Russian PM In Minsk As Belarus Looks To Ally For Help") == ["title (kept as metadata)"]
    for gone in ("UNITED24", "rfe/rl banner", "Copyright (c) 2020", "mailing list", "Source:", "By RFE/RL's"):
        assert gone not in c.text
    # article sentences stay, including the first and the last one
    assert c.text.startswith("MINSK -- Russian Prime Minister Mikhail Mishustin has arrived in Minsk")
    assert "Makey thanked Russia for supporting Minsk in the face of what he described as protests orchestrated from abroad." in c.text
    assert c.text.endswith("With reporting by AFP, Reuters, and dpa")


def test_003_comment_form_removed_article_kept():
    c = seed("003")
    assert reasons_for(c, "Leave a Reply") == ["comment form"]
    assert reasons_for(c, "Your email address will not be published") == ["comment form"]
    assert "Leave a Reply" not in c.text
    assert "email address" not in c.text
    assert "Russia would extend Belarus a government loan of $1.5 billion" in c.text
    assert c.text.endswith("with a view to bringing the perpetrators to justice.”")


def test_001_subscription_plea_and_repeated_captions_removed():
    c = seed("001")
    plea = [r for r in c.removed if r.reason == "subscription plea"]
    assert len(plea) == 1
    assert "quality journalism is more crucial than ever" in plea[0].text
    assert "By subscribing, you can help us get the story right." in plea[0].text
    assert "subscrib" not in c.text
    assert "quality journalism" not in c.text

    # each caption appears twice in the file; both copies go, each recorded with a reason
    for caption in ("Vladimir Putin | SPUTNIK / KREMLIN / POOL / VIA AP)", "Alexander Lukashenko | BELTA / POOL / VIA AP"):
        recorded = [r for r in c.removed if r.text == caption]
        assert len(recorded) == 2
        assert all(r.reason for r in recorded)
        assert caption not in c.text
    assert "The European Union and the U.S. condemned the repression and rejected the election result" in c.text
    assert c.text.endswith("“That if Belarus breaks, Russia will be next.”")


def test_002_photo_credit_and_related_link_removed():
    c = seed("002")
    assert reasons_for(c, "Alexander Astafyev / POOL / TASS") == ["photo credit"]
    assert reasons_for(c, "Related article") == ["related-article link"]
    assert "Astafyev" not in c.text
    assert "Dismemberment" not in c.text
    assert "**" not in c.text  # markdown emphasis stripped
    assert "Mass demonstrations" in c.text  # a sub-heading is article text
    assert "\"He is fully dependent on Russia.\"" in c.text


def test_every_removal_has_a_reason_and_nothing_else_is_lost():
    """Each non-blank line of a seed file is either in the text or recorded as removed."""
    for path in sorted(SEEDS.glob("*.txt")):
        raw = path.read_text(encoding="utf-8")
        c = clean_text(raw)
        assert all(r.reason for r in c.removed), path.name
        removed_text = "\n".join(r.text for r in c.removed)
        squeezed_body = " ".join(c.text.split())
        for line in raw.splitlines():
            words = " ".join(line.replace("**", "").split())
            if not words or words.startswith("date 20") or words.startswith("#"):
                continue
            assert words in squeezed_body or line.strip() in removed_text or "](" in line, (path.name, line)


# ---- helpers ----------------------------------------------------------------------------------
def test_parse_long_date_and_join_broken_url():
    assert parse_long_date("September 03, 2020") == "2020-09-03"
    assert parse_long_date("Smarch 40, 2020") is None
    assert join_broken_url(" https://a.example/x- y/z.html. ") == "https://a.example/x-y/z.html"
    assert join_broken_url("see the website") is None


def test_control_characters_and_crlf_are_normalised_and_hard_wraps_joined():
    c = clean_text("First line\x07 here.\r\nSecond\x00 line\x85 here.\r\n")
    assert c.text == "First line here. Second line here."


# ---- properties -------------------------------------------------------------------------------
def _control_chars(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_clean_text_never_raises_and_leaves_no_control_characters(raw):
    c = clean_text(raw)
    assert isinstance(c.text, str)
    assert _control_chars(c.text) == []
    assert _control_chars(c.title or "") == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "# Heading", "By Someone for AFP", "September 11, 2020", "Source:", "https://x.example/a b",
    "Leave a Reply", "Copyright 2020", "subscribe now", "\x00\x1b", "", "Plain sentence here.", "date 2020-01-01 text",
]), max_size=12).map("\n".join))
def test_clean_text_never_raises_on_boilerplate_mixtures(raw):
    c = clean_text(raw)
    assert _control_chars(c.text) == []
    assert "\n\n\n" not in c.text
    assert c.date is None or len(c.date) == 10


def _blocks(cleaned) -> list[tuple[str, int, str]]:
    return [(b.kind, b.level, cleaned.text[b.start:b.end]) for b in cleaned.blocks]


SETEXT = """Policy Manual
*************

Opening text of the package-
specific manual, wrapped by hand.

1. Binary packages
******************

1.1. The package name
=====================

Names are lower case.

----

Short
-----

```
kept = "as is"
--------------
```
"""


def test_underlined_headings_are_headings_with_a_level_per_style_and_rules_are_dropped():
    cleaned = clean_text(SETEXT)
    assert cleaned.title == "Policy Manual"  # the first heading, at the top, as a '#' heading would be
    assert _blocks(cleaned) == [
        ("paragraph", 0, "Opening text of the package-specific manual, wrapped by hand."),  # broken at its hyphen
        ("heading", 1, "1. Binary packages"),  # '*' came first: level 1
        ("heading", 2, "1.1. The package name"),
        ("paragraph", 0, "Names are lower case."),
        ("heading", 3, "Short"),
        ("code", 0, 'kept = "as is"\n--------------'),  # fenced code is never read for headings
    ]
    assert ("----", "horizontal rule") in [(r.text, r.reason) for r in cleaned.removed]


def test_over_and_underlined_heading_is_one_heading():
    cleaned = clean_text("Intro text here.\n\n=======\nSection\n=======\n\nBody text here.\n")
    assert _blocks(cleaned)[1:] == [("heading", 1, "Section"), ("paragraph", 0, "Body text here.")]


DUMP = """   A manual's text, indented three columns
   as a text browser writes it.

                Applications/Editors

                        Editors, other than office word processors, for
                        text-based information.

   A literal block follows:

       if [ "$1" = purge ]; then
           update-rc.d package remove
       fi
"""


def test_indented_prose_is_prose_and_indented_code_is_code():
    kinds = [(kind, text.split("\n")[0]) for kind, _, text in _blocks(clean_text(DUMP))]
    assert ("paragraph", "Editors, other than office word processors, for text-based information.") in kinds
    assert ("code", 'if [ "$1" = purge ]; then') in kinds
    assert kinds[0] == ("paragraph", "A manual's text, indented three columns as a text browser writes it.")


def test_a_literal_block_indented_less_than_four_columns_is_code_when_it_holds_code():
    text = ("JSON\n\nThe module writes JSON, and reads it back,\nwith two calls. Call it like this:\n\n"
            "   >>> import json\n   >>> json.dumps([1, 2])\n   '[1, 2]'\n\nThe date looks like:\n\n   day-of-week, dd month yyyy\n")
    assert [(k, t) for k, _, t in _blocks(clean_text(text))] == [
        ("paragraph", "The module writes JSON, and reads it back, with two calls. Call it like this:"),
        ("code", ">>> import json\n>>> json.dumps([1, 2])\n'[1, 2]'"),
        ("paragraph", "The date looks like:"),
        ("code", "day-of-week, dd month yyyy"),  # announced by a colon and not a sentence: an example
    ]


def test_indented_lines_a_colon_announces_are_an_example_unless_they_end_as_a_sentence():
    text = ("Description\n\nIt is a multiline field with the following format:\n\n"
            "   Description: single line synopsis\n    extended description over several lines\n\n"
            "It meets one of the following requirements:\n\n"
            "   Standard interfaces\n      The material is an interface that\n      many packages use. (Control files are examples.)\n")
    assert [(k, t) for k, _, t in _blocks(clean_text(text))] == [
        ("paragraph", "It is a multiline field with the following format:"),
        ("code", "Description: single line synopsis\n extended description over several lines"),
        ("paragraph", "It meets one of the following requirements:"),
        ("paragraph", "Standard interfaces The material is an interface that many packages use. (Control files are examples.)"),
    ]


GRID = """Types

   +-----------------------------------------------+
   |  Type   |             Description             |
   |---------+-------------------------------------|
   | string  | Holds any arbitrary string of data. |
   |---------+-------------------------------------|
   |         | Holds one of a finite number of     |
   | select  | possible values, given in a field   |
   |         | named Choices:.                     |
   +-----------------------------------------------+
"""


def test_a_grid_table_is_a_table_with_one_row_per_bordered_band_and_its_cells_joined():
    assert _blocks(clean_text(GRID)) == [("table", 0, "Type | Description\nstring | Holds any arbitrary string of data.\n"
                                                     "select | Holds one of a finite number of possible values, given in a field named Choices:.")]


MANUAL = """Packaging Manual

This manual describes how packages are built.

* 1.1. Control files -- "debian/control"

* 1.2. Package relationships: "Depends", "Pre-
  Depends", "Recommends"

1.1. Control files – "debian/control"
=====================================

Every package must be accompanied by a verbatim copy of its
copyright notices and licensing details.

   Files: *
   Copyright: 1975-2010 Ulla Upstream
   License: GPL-2+

1.2. Package relationships: "Depends", "Pre-Depends", "Recommends"
==================================================================

Relationships are declared in fields.
"""


def test_a_manual_in_plain_text_loses_its_contents_list_and_keeps_every_line_of_its_text():
    cleaned = clean_text(MANUAL)
    assert _blocks(cleaned) == [
        ("paragraph", 0, "This manual describes how packages are built."),
        ("heading", 1, "1.1. Control files – \"debian/control\""),
        # a wrapped line starting "copyright…" goes on with the sentence above: not a copyright notice
        ("paragraph", 0, "Every package must be accompanied by a verbatim copy of its copyright notices and licensing details."),
        ("code", 0, "Files: *\nCopyright: 1975-2010 Ulla Upstream\nLicense: GPL-2+"),  # a record of fields, one a line
        ("heading", 1, "1.2. Package relationships: \"Depends\", \"Pre-Depends\", \"Recommends\""),
        ("paragraph", 0, "Relationships are declared in fields."),
    ]
    toc = [r.text for r in cleaned.removed if r.reason == "table of contents entry"]
    assert len(toc) == 2 and "Pre-Depends" in toc[1]  # dashes, wraps and case aside, each names a heading below


def test_a_source_field_in_an_example_record_is_not_the_documents_url():
    text = ("Copyright format\n\nA header stanza looks like this one, with its fields:\n\n"
            "Upstream-Name: X Solitaire\nSource: https://www.example.com/software/project\n\n"
            "The fields are explained below.\n")
    cleaned = clean_text(text)
    assert cleaned.url is None and cleaned.publisher is None
    assert ("code", 0, "Upstream-Name: X Solitaire\nSource: https://www.example.com/software/project") in _blocks(cleaned)
    own = clean_text("An article.\n\nSource: https://www.rferl.org/a/article/30818225.html\n")
    assert own.url == "https://www.rferl.org/a/article/30818225.html"  # the page's own source line still is
