"""rag/extractive.py: answering by quoting the sentences of the passages that best answer the question."""

from __future__ import annotations

import pytest

from rag.chunking import passage_units
from rag.extractive import (MAX_RUN, Candidate, ExtractiveAnswerer, _interrupted_sentence, _table_head, compounds, goes_on, is_cut_off,
                            is_fragment_of_code, is_label, is_short_statement, lexical_overlap, with_what_follows)
from rag.records import Chunk, Hit
from rag.keywords import bm25_tokenize

LOAN_QUESTION = "How much money did Russia promise to lend Belarus?"
LOAN_SENTENCE = "Putin also offered economic support, saying Russia would extend Belarus a government loan of $1.5 billion"


def hit(n: int, text: str) -> Hit:
    return Hit(Chunk(f"c{n}", f"d{n}", 0, text, 0, len(text)), 1.0 / n)


def test_lexical_overlap_is_the_share_of_question_terms_found():
    terms = set(bm25_tokenize(["Russia lend Belarus money"])[0])
    assert lexical_overlap(terms, "Russia will lend money to Belarus.") == 1.0
    assert lexical_overlap(terms, "Nothing relevant here.") == 0.0
    assert lexical_overlap(set(), "Russia") == 0.0


def test_two_question_words_the_sentence_writes_as_one_are_both_found():
    question = "Which variable does Requests fall back to when REQUESTS_CA_BUNDLE is unset?"
    terms, joined = set(bm25_tokenize([question])[0]), compounds(question)
    sentence = "If REQUESTS_CA_BUNDLE is not set, CURL_CA_BUNDLE will be used as fallback."
    assert lexical_overlap(terms, sentence, joined) - lexical_overlap(terms, sentence) == pytest.approx(2 / len(terms))
    assert "requests_ca_bundl" in terms and not any("bundl" in word for word in joined)  # a name in code is one word
    assert set(compounds("a built-in function")) >= {"builtin"} and compounds("one") == {}


def test_answer_keeps_close_runners_up_only():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    close = [Candidate(2, "Best sentence here.", 0.9), Candidate(1, "Close second sentence.", 0.85), Candidate(1, "Third.", 0.84)]
    sentences = answerer.answer(close)
    assert [(s.text, s.citations, s.supported) for s in sentences] == [
        ("Best sentence here.", [2], True), ("Close second sentence.", [1], True)]  # max_sentences caps it
    far = [Candidate(2, "Best sentence here.", 0.9), Candidate(1, "Far second sentence.", 0.7)]
    assert [s.text for s in answerer.answer(far)] == ["Best sentence here."]
    assert answerer.answer([]) == []


def test_answer_brings_in_the_near_sentence_that_states_what_was_asked():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.12)
    ranked = [Candidate(1, "He met Putin in Sochi.", 0.9, typed=False), Candidate(2, "Sochi is on the Black Sea.", 0.85, typed=False),
              Candidate(2, "Lukashenko, 66, flew in.", 0.8, typed=True), Candidate(3, "He is 66.", 0.5, typed=True)]
    assert [s.text for s in answerer.answer(ranked)] == ["He met Putin in Sochi.", "Lukashenko, 66, flew in."]
    assert [c.text for c in answerer.near_best(ranked)] == [c.text for c in ranked[:3]]  # the fourth is too far behind


def test_a_sentence_that_hands_over_to_the_next_line_brings_it_along():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    command = "sudo apt-get install -t bullseye-backports package-name"
    ranked = [Candidate(1, "To install from backports, you use the following command:", 0.9, follow=command),
              Candidate(2, "Backports are newer packages.", 0.85)]
    assert [(s.text, s.citations) for s in answerer.answer(ranked)] == [
        ("To install from backports, you use the following command:", [1]), (command, [1]), ("Backports are newer packages.", [2])]
    plain = [Candidate(1, "Backports hold newer packages.", 0.9, follow="Unrelated next sentence.")]
    assert [s.text for s in answerer.answer(plain)] == ["Backports hold newer packages."]
    short = [Candidate(1, "If you have a theme in blue.zip, use this configuration:", 0.9, follow='html_theme = "blue"')]
    assert [s.text for s in answerer.answer(short)][-1] == 'html_theme = "blue"'  # a short command line counts too
    too_short = [Candidate(1, "Backports hold newer packages.", 0.9, follow="It is so.")]
    assert [s.text for s in answerer.answer(too_short)] == ["Backports hold newer packages."]  # refers back, but states nothing


def test_the_next_sentence_that_refers_back_is_part_of_the_answer():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    problem = "When a matrix with a single row is created by subscripting, it is by default turned into a vector."
    fix = "To prevent this happening, add the option drop = FALSE to the subscripting."
    ranked = [Candidate(1, problem, 0.9, follow=fix), Candidate(2, "Matrices have a dimension attribute.", 0.85)]
    assert [s.text for s in answerer.answer(ranked)] == [problem, fix, "Matrices have a dimension attribute."]
    (span,) = answerer.answer([Candidate(1, problem, 0.9, follow=fix, follow_span=(99, 174))])[1].spans
    assert (span.marker, span.start, span.end) == (1, 99, 174)  # the source highlights the added sentence too
    unrelated = [Candidate(1, problem, 0.9, follow="Arrays work the same way in every language.")]
    assert [s.text for s in answerer.answer(unrelated)] == [problem]


def test_a_sentence_is_scored_with_the_words_of_the_unit_it_goes_on_in():
    pieces = [(1, '"class": Only the class docstring is inserted.'), (1, '"both": Both docstrings are inserted.')]
    context = [{"follow": "This is the default."}, {"follow": "Another option follows."}]
    terms = [["class", "docstr", "insert"], ["both", "docstr", "insert"]]
    extended = with_what_follows(pieces, context, terms)
    assert "default" in extended[0]  # "This is…" refers back: the answer quotes it, so its words count
    assert extended[1] == terms[1]  # an unrelated next sentence is not quoted and does not count


def test_a_sentence_finishing_the_unit_before_it_brings_that_unit_along():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    call = 'HousePrice <- read.table("houses.data", header=TRUE)'
    where = "where the header=TRUE option specifies that the first line is a line of headings."
    assert [s.text for s in answerer.answer([Candidate(1, where, 0.9, lead=call)])] == [call, where]
    command = "axi-cache search term, on the other hand, provides better results."  # a command name, not a continuation
    assert [s.text for s in answerer.answer([Candidate(1, command, 0.9, lead="It often returns too many results.")])] == [command]


def test_continuations_add_at_most_one_sentence_to_the_answer():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    ranked = [Candidate(1, "First statement about the topic here.", 0.9, follow="This means the first is true."),
              Candidate(2, "Second statement about the topic here.", 0.88, follow="This means the second is true.")]
    assert [s.text for s in answerer.answer(ranked)] == [
        "First statement about the topic here.", "This means the first is true.", "Second statement about the topic here."]


def test_a_sentence_handing_over_never_ends_the_answer_without_what_it_hands_over_to():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    steps = "The particular steps for a rebooting test are:"
    ranked = [Candidate(1, "Some testbeds support rebooting the machine.", 0.9, follow="This means a test can reboot it."),
              Candidate(1, steps, 0.88, follow="• The test calls autopkgtest-reboot with a mark.",
                        run=(("• The test is run again with the mark in a variable.", (0, 0)),))]
    assert [s.text for s in answerer.answer(ranked)] == [  # past the limit, but never "…are:" with nothing after
        "Some testbeds support rebooting the machine.", "This means a test can reboot it.", steps,
        "• The test calls autopkgtest-reboot with a mark.", "• The test is run again with the mark in a variable."]


def test_a_unit_quoted_because_it_goes_on_brings_what_it_hands_over_to():
    """The unit an answer goes on in may itself hand over: its structure follows it, not a dangling colon."""
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=2, margin=0.1)
    note = "Note that the support is enabled only if all the following conditions are verified:"
    conditions = (("• the Python build is 64 bits;", (10, 20)), ("• the server is at least PostgreSQL 9.3.", (20, 30)))
    ranked = [Candidate(1, "Changed in version 2.6: added support for large objects greater than 2GB.", 0.9, follow=note),
              Candidate(1, "Several lobject methods fail past 2GB.", 0.88),
              Candidate(1, note, 0.5, follow=conditions[0][0], follow_span=conditions[0][1], run=conditions[1:])]
    assert [s.text for s in answerer.answer(ranked)] == [
        "Changed in version 2.6: added support for large objects greater than 2GB.", note,
        "• the Python build is 64 bits;", "• the server is at least PostgreSQL 9.3.", "Several lobject methods fail past 2GB."]


def test_following_as_a_verb_hands_nothing_over():
    assert goes_on("Use the following command:", "apt-get update")
    assert not goes_on("• New 'allow_redirects' param for following non-GET/HEAD Redirects", "• Settings module refactoring")


COOKIES = ("To send your own cookies to the server, you can use the cookies parameter:\n\n"
           ">>> url = 'https://httpbin.org/cookies'\n>>> cookies = dict(cookies_are='working')\n"
           ">>> r = requests.get(url, cookies=cookies)\n\nCookies are returned in a jar, which acts like a dict.")
HEADERS = ("All of the following section headers are supported:\n\n• Args (alias of Parameters)\n\n"
           "• Arguments (alias of Parameters)\n\n• Attention\n\n• Keyword Args (alias of Keyword Arguments).\n"
           "They are read like Keyword Arguments.\n\nSection headers end with a colon in the docstring.")


@pytest.mark.integration
@pytest.mark.parametrize("question, text, quoted", [
    ("How do I send my own cookies?", COOKIES, COOKIES.split("\n\n")[:2]),  # the whole code block, not its first line
    ("Which section headers are aliases?", HEADERS, HEADERS.split("\n\n")[:-1]),  # every item, a short one too
])
def test_a_structure_handed_over_to_is_quoted_whole(embedder, question, text, quoted):
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    handing_over = next(c for c in answerer.rank(question, [hit(1, text)]) if c.text.endswith(":"))
    answer = answerer.answer([handing_over])
    assert " ".join(s.text for s in answer) == " ".join(" ".join(quoted).split())
    assert all(text[s.spans[0].start:s.spans[0].end] == s.text for s in answer)  # each unit highlights in the source


@pytest.mark.integration
def test_a_long_structure_is_cut_at_the_run_limit(embedder):
    lines = "\n".join(f"option_{n} = {n}" for n in range(3 * MAX_RUN))
    text = f"Put these lines in the configuration file:\n\n{lines}\n\nThat is all."
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    first = next(c for c in answerer.rank("What goes in the configuration file?", [hit(1, text)]) if c.text.endswith(":"))
    assert [s.text for s in answerer.answer([first])][1:] == [f"option_{n} = {n}" for n in range(MAX_RUN)]


@pytest.mark.parametrize("line, label", [
    ("TIP Testing the DNS server", True),  # an admonition's title
    ("Using Remote X11 Applications", True),  # a caption
    ("Russia will lend Belarus $1.5 billion.", False),
    ("workgroup = FALCOTNET", False),
    ("sudo apt-get install -t bullseye-backports package-name", False),
    ("Anything longer than a title usually is, Capitalised Or Not, Is Text", False),
    ("Returns: Response object", False),  # a definition list's term and definition
])
def test_labels_are_not_answers(line, label):
    assert is_label(line) is label


@pytest.mark.integration
def test_rank_numbers_sources_from_one_and_skips_duplicates_and_fragments(embedder):
    hits = [
        hit(1, "Lukashenko thanked Putin for his support. Short one."),
        hit(2, f"{LOAN_SENTENCE}. Lukashenko thanked Putin for his support."),
    ]
    ranked = ExtractiveAnswerer(embedder).rank(LOAN_QUESTION, hits)
    assert [(c.source, c.text) for c in ranked][0] == (2, LOAN_SENTENCE + ".")
    texts = [c.text for c in ranked]
    assert texts.count("Lukashenko thanked Putin for his support.") == 1  # the duplicate in source 2 is dropped
    assert "Short one." not in texts  # too short to be an answer
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert ExtractiveAnswerer(embedder).rank(LOAN_QUESTION, []) == []


@pytest.mark.integration
def test_extractive_answer_quotes_the_loan_sentence_citing_its_source(pipeline):
    answer = pipeline.ask(LOAN_QUESTION, mode="extractive")
    assert not answer.refused and answer.mode == "extractive"
    first = answer.sentences[0]
    assert LOAN_SENTENCE in first.text and first.supported
    assert answer.answer.startswith(f"{first.text} [{first.citations[0]}]")
    for sentence in answer.sentences:
        (n,) = sentence.citations
        source = answer.sources[n - 1].chunk
        assert sentence.text in " ".join(source.text.split())  # quoted verbatim from the source it cites
        (span,) = sentence.spans  # ...from exactly here, which the sources panel highlights
        assert span.marker == n and " ".join(source.text[span.start:span.end].split()) == sentence.text
    assert {(c.marker, c.chunk_id, c.doc_id) for c in answer.citations} == {
        (n, answer.sources[n - 1].chunk.chunk_id, answer.sources[n - 1].chunk.doc_id)
        for s in answer.sentences for n in s.citations}
    assert answer.trace.answered_by == "extractive"
    assert len(answer.sentences) <= pipeline.settings.extractive_sentences + 1  # one continuation at most


TABLE_PASSAGE = (
    "Each command returns a numeric status code and an optional string of text. "
    "The number is the status code, while the text provides additional information.\n\n"
    "Table 2. Numeric status codes\n\n"
    "Range | Description\n0 | success\n10-19 | invalid parameters\n30-99 | command-specific return codes\n"
    "100-109 | internal errors\n110-255 | reserved\n\n"
    "Signals with numbers below 32 are reserved for the system."
)


def test_a_table_row_carries_its_caption_and_header_row():
    chunk = Chunk("c1", "d1", 0, TABLE_PASSAGE, 0, len(TABLE_PASSAGE))
    spans = passage_units(chunk)
    units = [" ".join(TABLE_PASSAGE[a:b].split()) for a, b in spans]
    heads = {unit: _table_head(TABLE_PASSAGE, units, spans, i) for i, unit in enumerate(units)}
    assert heads["100-109 | internal errors"].endswith("Numeric status codes\nRange | Description")  # caption, header row
    assert heads["Range | Description"] == ""  # the header row is the head, not a row under it
    assert heads["Signals with numbers below 32 are reserved for the system."] == ""
    rows_only = TABLE_PASSAGE[TABLE_PASSAGE.index("10-19"):]  # a passage cut inside a table: its first row is no header
    cut = Chunk("c2", "d1", 1, rows_only, 0, len(rows_only))
    cut_spans = passage_units(cut)
    cut_units = [" ".join(rows_only[a:b].split()) for a, b in cut_spans]
    assert all(_table_head(rows_only, cut_units, cut_spans, i) == "" for i in range(len(cut_units)))


@pytest.mark.integration
def test_the_row_answering_under_its_header_is_ranked_first(embedder):
    question = "Which range of numeric status codes signals internal errors?"
    ranked = ExtractiveAnswerer(embedder).rank(question, [hit(1, TABLE_PASSAGE)])
    assert ranked[0].text == "100-109 | internal errors"


def test_rerank_puts_the_passage_stating_the_answer_first_and_renumbers_the_sources():
    hits = [hit(1, "About the meeting."), hit(2, "The loan is $1.5 billion."), hit(3, "Other news.")]
    ranked = [Candidate(2, "The loan is $1.5 billion.", 0.9, elsewhere=((3, 0.6),)), Candidate(1, "About the meeting.", 0.7),
              Candidate(3, "Other news.", 0.5)]
    reordered, candidates = ExtractiveAnswerer(None, rank_penalty=0.02).rerank(hits, ranked)
    assert [h.chunk.chunk_id for h in reordered] == ["c2", "c1", "c3"]
    assert [(c.source, c.elsewhere) for c in candidates] == [(1, ((3, 0.6),)), (2, ()), (3, ())]  # same order, new numbers
    # a passage the retriever put far lower needs a better sentence than the penalty for each place
    kept, _ = ExtractiveAnswerer(None, rank_penalty=0.25).rerank(hits, ranked)
    assert [h.chunk.chunk_id for h in kept] == ["c1", "c2", "c3"]
    assert ExtractiveAnswerer(None).rerank([], []) == ([], [])


@pytest.mark.integration
def test_a_sentence_two_passages_hold_is_one_candidate_where_it_goes_on(embedder):
    sentence = "To send your own cookies to the server, you can use the following parameter:"
    cut = hit(1, f"Cookies are easy to read. {sentence}")  # the passage ends before what it hands over to
    whole = hit(2, f"{sentence}\n\ncookies = dict(cookies_are='working')")
    ranked = ExtractiveAnswerer(embedder).rank("How do I send a dict of my own cookies to the server?", [cut, whole])
    same = [c for c in ranked if c.text == sentence]
    assert len(same) == 1 and same[0].source == 2 and [n for n, _ in same[0].elsewhere] == [1]
    assert same[0].follow == "cookies = dict(cookies_are='working')"


@pytest.mark.integration
@pytest.mark.parametrize("rerank", [True, False])
def test_search_ranks_first_the_passage_holding_the_answer(seed_index, embedder, rerank):
    from rag.factory import build_pipeline

    pipe = build_pipeline(seed_index.with_overrides(rerank=rerank), embedder=embedder)
    question = "What was Lukashenko's former occupation, as mentioned in the article about his meeting with Putin after the Ryanair incident?"
    first = pipe.search(question)[0].chunk.text
    assert ("a former collective farm boss" in first) is rerank  # the retriever alone puts it third
    assert pipe.ask(question, mode="extractive").sources[0].chunk.text == first  # the chat's sources come in the same order


@pytest.mark.integration
def test_notes_saying_the_same_words_are_quoted_once(embedder):
    """Three footnotes of a text dump say one thing: the answer quotes it once, and goes on to other sentences."""
    note = "Build systems based on ExtUtils::MakeMaker and Module::Build do this automatically."
    text = (f"Perl modules must be installed into the vendor directories.\n\n^[3] {note}\n\n^[5] {note}\n\n"
            f"^[6] {note}\n\nThe vendor directories are set with INSTALLDIRS=vendor.")
    answerer = ExtractiveAnswerer(embedder, max_sentences=3)
    ranked = answerer.rank("Which build systems install into the vendor directories automatically?", [hit(1, text)])
    assert sum(note in c.text for c in ranked) == 1
    quoted = [s.text for s in answerer.answer(ranked)]
    assert sum(note in q for q in quoted) == 1 and len(quoted) >= 2


@pytest.mark.parametrize("unit, note", [
    ("New in version 2.8.", True), ("Defaults to False.", True), ("By default, True.", True), ("Broken in 2.8.0.", True),
    (". . . .", False),  # an index's dot leaders
    ("read.table . . . .", False),
    ("False to use the ..", False),  # cut off where the page had markup
    ("See below.", False),  # two words
    ("$ echo $?", False),  # a command, not a sentence
    ("This sentence is long enough to be an answer unit of its own.", False),
])
def test_a_short_note_is_a_few_words_that_make_a_sentence(unit, note):
    assert is_short_statement(unit) is note


def test_a_short_note_finishes_the_unit_before_it():
    """A documented attribute's "New in version 2.5." or a parameter's "Defaults to False." belongs to it."""
    assert goes_on("The default cursor factory used by cursor() if the parameter is not specified.", "New in version 2.5.")
    assert goes_on("True to parse Google style docstrings.", "Defaults to True.")
    assert not goes_on("R saves the workspace on exit.", ". . . .")


@pytest.mark.integration
def test_the_version_a_documented_attribute_came_in_is_quoted_with_it(embedder):
    text = ("cursor_factory\n\nThe default cursor factory used by cursor() if the parameter is not specified.\n\n"
            "New in version 2.5.\n\nnotices\n\nA list containing all the database messages sent to the client during the session.")
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    ranked = answerer.rank("Since which version does a connection have a default cursor factory?", [hit(1, text)])
    assert ranked[0].text.startswith("The default cursor factory")
    assert [s.text for s in answerer.answer(ranked)] == [ranked[0].text, "New in version 2.5."]


@pytest.mark.parametrize("unit, cut", [
    ("As such, the 2001:0bc8:31a0::/48 network would use a zone named", True),  # the zone's name is a code line
    ("At this point an assignment such as", True),
    ("For example, try the following", True),
    ("The data frame is attached at position 2.", False),  # a statement
    ("Sample user crontab file", True),  # a caption over its example
    ("The attach", True),
    ("Returns a redirect URI or None", False),  # a name last
    ("Configuration Of The Network Cards Here", False),  # a label
    ("Distribution | R name | additional arguments | size prob", False),  # a table row
    ("# WINS Support - Tells the NMBD component of Samba", False),  # a comment in code
    ("import psycopg2.extensions as ext and more words", False),  # code starts in lower case
])
def test_a_sentence_cut_off_by_a_block_is_prose_that_stops_mid_clause(unit, cut):
    assert is_cut_off(unit) is cut


def test_a_sentence_cut_off_by_a_code_block_goes_on_in_it_and_a_code_line_does_not():
    sentence = "At this point an assignment such as"
    assert goes_on(sentence, "> u <- v+w")
    assert not goes_on(sentence, "> u <- v+w", ends_block=False)  # a line of a code block: the block goes on, not a sentence
    assert not goes_on("The data frame is attached at position 2.", "> u <- v+w")


@pytest.mark.integration
def test_an_answer_never_stops_where_a_code_block_cuts_its_sentence(embedder):
    text = ("By attaching the data frame, u, v and w are available as variables in their own right. "
            "At this point an assignment such as\n\n> u <- v+w\n\n"
            "does not replace the component u of the data frame, but rather masks it.")
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    ranked = answerer.rank("What does an assignment to a variable of an attached data frame do?", [hit(1, text)])
    cut = next(c for c in ranked if c.text == "At this point an assignment such as")
    assert [s.text for s in answerer.answer([cut])] == ["At this point an assignment such as", "> u <- v+w"]


@pytest.mark.parametrize("line, fragment", [
    ("psycopg2.extensions.DECIMAL.values,", True),  # goes on with a call
    ("DEC2FLOAT = psycopg2.extensions.new_type(", True),  # opens one
    ("lambda value, curs: float(value) if value is not None else None)", True),  # closes it
    ("with conn:", True),
    ("}", True),
    ("workgroup = FALCOTNET", False),  # a setting states itself
    ("hist(x, breaks=b, ...)", False),
    ("The value is a float (not a Decimal).", False),
    ("Range | Description (of codes", False),  # a table row is not code
])
def test_a_code_line_that_opens_goes_on_with_or_closes_a_statement_is_a_fragment(line, fragment):
    assert is_fragment_of_code(line) is fragment


DECIMAL = ("Psycopg converts decimal/numeric database types into Python Decimal objects.\n\n"
           "You can register a customized adapter for PostgreSQL decimal type:\n\n"
           "DEC2FLOAT = psycopg2.extensions.new_type(\n    psycopg2.extensions.DECIMAL.values,\n    'DEC2FLOAT',\n"
           "    lambda value, curs: float(value) if value is not None else None)\n"
           "psycopg2.extensions.register_type(DEC2FLOAT)\n\nSee Type casting for the details.")


@pytest.mark.integration
def test_a_code_line_that_cannot_stand_alone_is_quoted_with_its_whole_block(embedder):
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    ranked = answerer.rank("How can I get decimal values back as floats?", [hit(1, DECIMAL)])
    fragment = next(c for c in ranked if c.text == "psycopg2.extensions.DECIMAL.values,")
    answer = answerer.answer([fragment])
    assert [s.text for s in answer] == [" ".join(u.split()) for u in DECIMAL.split("\n\n")[1:3] for u in u.split("\n")]
    assert all(DECIMAL[s.spans[0].start:s.spans[0].end].strip() == s.text for s in answer)  # each line highlights in the source
    whole = next(c for c in ranked if c.text == "psycopg2.extensions.register_type(DEC2FLOAT)")
    assert [s.text for s in answerer.answer([whole])] == [whole.text]  # a line that stands alone is quoted alone


AUTH = ("To do so, subclass AuthBase and implement the __call__() method:\n\n"
        ">>> import requests\n>>> class MyAuth(requests.auth.AuthBase):\n...     def __call__(self, r):\n"
        "...         # Implement my authentication\n...         return r\n...\n>>> url = 'https://httpbin.org/get'\n"
        ">>> requests.get(url, auth=MyAuth())\n<Response [200]>\n>>> session = requests.Session()\n"
        ">>> session.auth = MyAuth(\n...     )\n\nWhen an authentication handler is attached, it is called during request setup.")


@pytest.mark.integration
def test_a_code_line_of_a_long_block_is_quoted_with_the_start_of_the_block_it_belongs_to(embedder):
    answerer = ExtractiveAnswerer(embedder, max_sentences=1)
    ranked = answerer.rank("How do I implement my own authentication?", [hit(1, AUTH)])
    lines = [" ".join(u.split()) for u in AUTH.split("\n\n")[1].split("\n")]
    assert len(lines) > MAX_RUN
    opening = next(c for c in ranked if c.text == ">>> class MyAuth(requests.auth.AuthBase):")
    # the block from its first line (the import), after the sentence handing over to it
    assert [s.text for s in answerer.answer([opening])][:MAX_RUN + 1] == [AUTH.split("\n\n")[0], *lines[:MAX_RUN]]
    deep = next(c for c in ranked if c.text == ">>> session.auth = MyAuth(")
    assert [s.text for s in answerer.answer([deep])] == lines[-MAX_RUN:]  # past the first MAX_RUN lines: the ones around it


def resumed(text: str, unit: str) -> list[str]:
    """What `_interrupted_sentence` brings before `unit` of a one-passage text."""
    spans = passage_units(Chunk("c1", "d1", 0, text, 0, len(text)))
    units = [" ".join(text[a:b].split()) for a, b in spans]
    return [u for u, _ in _interrupted_sentence(text, units, spans, units.index(unit))]


@pytest.mark.parametrize("text, unit, before", [
    # a sentence a one-line code block interrupts, cut off on a word
    ("Suppose lentils is a data frame. The attach\n\n> attach(lentils)\n\nplaces the data frame in the search path.",
     "places the data frame in the search path.", ["The attach", "> attach(lentils)"]),
    # handed over with a colon to a two-line block, and taken up again after it
    ("Conversely, using:\n\nconn.set_session(readonly=True)\nconn.commit()\n\nwill set default_transaction_read_only to on.",
     "will set default_transaction_read_only to on.", ["Conversely, using:", "conn.set_session(readonly=True)", "conn.commit()"]),
    # a command name in lower case opening a new sentence after one that finished
    ("Every action is logged.\n\n$ tail /var/log/dpkg.log\n\ndpkg keeps a log of all of its actions in /var/log/dpkg.log.",
     "dpkg keeps a log of all of its actions in /var/log/dpkg.log.", []),
    # a title is not a sentence
    ("ALTERNATIVE axi-cache\n\napt-cache search is a very rudimentary tool.\n\naxi-cache search term, on the other hand, provides better results.",
     "axi-cache search term, on the other hand, provides better results.", []),
    # a definition list's term and definition
    ("Usage:\n\n>>> s = requests.Session()\n\nauth: Default Authentication tuple or object to attach to Request.",
     "auth: Default Authentication tuple or object to attach to Request.", []),
])
def test_a_sentence_a_block_interrupts_is_quoted_from_where_it_began(text, unit, before):
    assert resumed(text, unit) == before


def test_an_answer_quotes_an_interrupted_sentence_from_its_start_and_counts_it_once():
    answerer = ExtractiveAnswerer(embedder=None, max_sentences=1, margin=0.1)
    start = (("The attach", (33, 43)), ("> attach(lentils)", (45, 62)))
    resumed_unit = Candidate(1, "places the data frame in the search path.", 0.9, resumes=start)
    assert [s.text for s in answerer.answer([resumed_unit, Candidate(1, "Another sentence.", 0.85)])] == [
        "The attach", "> attach(lentils)", "places the data frame in the search path."]


def test_a_caption_goes_on_in_its_table_whose_header_row_is_not_a_title():
    assert goes_on("Configuration of libpam-ldap", "Question | Answer")
    assert not goes_on("The answers were given.", "Question | Answer")
