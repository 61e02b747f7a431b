"""Extractive answering, no LLM: the sentences of the top passages that best answer the question.

Also the fallback when the LLM endpoint fails, and the evidence the refusal check reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from rag.chunking import passage_units
from rag.records import Hit, PassageSpan, Sentence
from rag.structure import BULLET, BULLET_SIGNS, CELL_SEPARATOR
from rag.policy import expected_answer_type, has_answer_type
from rag.keywords import bm25_tokenize

LEXICAL_WEIGHT = 0.3  # share of question terms found in the sentence, added to the cosine
TYPE_BONUS = 0.1  # a sentence holding the kind of answer asked for (a number for "how many")
NEAR_BEST = 3  # the sentences scoring within the margin of the best one that count as the evidence
# The answer goes on in the next unit when a sentence hands over to it ("...use the following command:")
# or the next one refers back to it ("To prevent this, add drop = FALSE"); and a unit that starts in
# lower case with a conjunction finishes the one before it ("where header=TRUE says that...").
ENDS_HANDING_OVER = re.compile(r":\s*$")  # the one sure sign, whatever quoted the unit
HANDS_OVER = re.compile(rf"{ENDS_HANDING_OVER.pattern}|\b(?:the|these|as) following\b|\bas follows\b|\bbelow\b", re.I)
CUT_OFF_WORDS = 2  # a sentence a block cuts off, or a caption over a table, has at least this many words
STOPS_ON_A_WORD = re.compile(r"\b[a-z][\w'-]*,?$|,$")  # a lower-case word or a comma last: no full stop, colon, bracket, quote, number or name
REFERS_BACK = re.compile(
    r"^(?:it|they|then|otherwise|hence|therefore|thus|so|instead|for example)\b|^(?:\W*\w+\W+){0,3}?(?:this|these|those|that|such)\b",
    re.I,
)
FINISHES_BEFORE = re.compile(r"^(?:where|which|whereas|while|and|or|but|because)\b")  # lower case only
MIN_UNIT_CHARS = 20  # shorter units are headings' leftovers and list markers, not answers
SHORT_STATEMENT_WORDS = 3  # a short unit that states something ("Defaults to False.") finishes the one before it
# What a note or a list item opens with ("^[6] ", "[2] ", "• "): two notes saying the same words are one sentence.
NOTE_MARK = re.compile(rf"^(?:\^?\[\d+\]|\(\d+\)|{BULLET_SIGNS})\s+")
# A label, not a statement: a caption or an admonition title ("TIP Testing the DNS server").
LABEL_WORDS = 8
STATEMENT_END = re.compile(r"[.!?:;)\]\"”]$")
TERM_DEFINED = re.compile(r"\w: \S")  # "term: definition", as definition lists are read
SENTENCE_END = re.compile(r"[.!?][\"”’)]?$")
# A line of code that cannot stand alone: it opens or goes on with a statement ("with conn:",
# "psycopg2.extensions.DECIMAL.values,") or only closes one ("}").
OPENS_OR_GOES_ON = re.compile(r"[,(\[{:\\]$|^[)\]}\s;,]+$")
# A sentence that hands over to a list, a table or a code block ("All of the following headers are
# supported:") is answered by the structure, not by its first line: up to this many units of it.
MAX_RUN = 8


@dataclass(frozen=True)
class Candidate:
    source: int  # 1-based source number
    text: str
    score: float
    typed: bool = True  # holds the kind of answer the question asks for (always, when it asks for none)
    follow: str | None = None  # the unit after it in its passage: a command after "run the following:"
    span: tuple[int, int] = (0, 0)  # where it is in its passage's text
    follow_span: tuple[int, int] = (0, 0)
    lead: str | None = None  # the unit before it in its passage
    lead_span: tuple[int, int] = (0, 0)
    resumes: tuple[tuple[str, tuple[int, int]], ...] = ()  # when it goes on with a sentence a block interrupted: from its start
    run: tuple[tuple[str, tuple[int, int]], ...] = ()  # when it hands over: the rest of the structure `follow` opens
    table_head: str = ""  # a table row's caption and header row: what its cells mean ("Range | Description")
    elsewhere: tuple[tuple[int, float], ...] = ()  # the other sources holding the same sentence, and its score there
    ends_block: bool = True  # the last unit of its paragraph or list item, not a line of a code block or table
    block: tuple[tuple[str, tuple[int, int]], ...] = ()  # a code line that cannot stand alone: its whole block

    def handed_over(self) -> tuple[tuple[str, tuple[int, int]], ...]:
        """The units the answer goes on in: the next one, and the rest of its structure when handed over to."""
        return ((self.follow, self.follow_span), *self.run) if self.continued() else ()

    def continued(self) -> bool:
        """The answer goes on in the next unit."""
        return goes_on(self.text, self.follow, self.ends_block)

    def unfinished_start(self) -> bool:
        """It finishes the unit before it."""
        return bool(self.lead) and bool(FINISHES_BEFORE.match(self.text))

    def begun_before(self) -> tuple[tuple[str, tuple[int, int]], ...]:
        """The units its sentence began in: where a block interrupted it, or the one it finishes."""
        if self.resumes:
            return self.resumes
        return ((self.lead, self.lead_span),) if self.unfinished_start() else ()


def goes_on(sentence: str, follow: str | None, ends_block: bool = True) -> bool:
    """Does the answer go on in the next unit? Any unit the sentence hands over to (a short command
    line too: 'html_theme = "blue"'), a short note that finishes it ("Defaults to False.", "New in
    version 2.8."), or one long enough to be a statement that refers back."""
    if not follow or (is_label(follow) and CELL_SEPARATOR not in follow):  # a table's header row is not a title
        return False
    return (hands_over(sentence, ends_block) or is_short_statement(follow)
            or (len(follow) >= MIN_UNIT_CHARS and bool(REFERS_BACK.search(follow))))


def hands_over(sentence: str, ends_block: bool = True) -> bool:
    """The sentence is finished by the unit after it: it announces it, or a block cuts it off."""
    return bool(HANDS_OVER.search(sentence)) or (ends_block and is_cut_off(sentence))


def ends_handing_over(c: Candidate) -> bool:
    """The sure signs: a closing colon, or a sentence a block cuts off."""
    return bool(ENDS_HANDING_OVER.search(c.text)) or (c.ends_block and is_cut_off(c.text))


def is_cut_off(sentence: str) -> bool:
    """Prose that a code block or a page break cuts off ("At this point an assignment such as",
    "…would use a zone named", "The attach"), or a caption over its table or example ("List of
    firewall tools"): a capital first, a lower-case word or a comma last, no table cells, not a title."""
    return (len(sentence.split()) >= CUT_OFF_WORDS and sentence[0].isupper() and bool(STOPS_ON_A_WORD.search(sentence))
            and CELL_SEPARATOR not in sentence and not is_label(sentence))


def is_short_statement(unit: str) -> bool:
    """A note too short to be an answer unit that still makes a sentence: a few words, two of them
    content words ("It is so." has none), a full stop, no dot leaders."""
    return (len(unit) <= MIN_UNIT_CHARS and len(unit.split()) >= SHORT_STATEMENT_WORDS and unit[-1] in ".!?"
            and ". ." not in unit and not unit.endswith("..") and len(bm25_tokenize([unit])[0]) >= 2)


def is_label(sentence: str) -> bool:
    """A short title-like line that states nothing: a few words, mostly capitalised (or led by a
    word in capitals, as admonitions are), with no closing punctuation. Code lines are lower case,
    and a term with its definition ("Returns: Response object") states something."""
    words = sentence.split()
    if len(words) > LABEL_WORDS or STATEMENT_END.search(sentence) or TERM_DEFINED.search(sentence):
        return False
    capitalised = sum(w[0].isupper() for w in words)
    return capitalised * 2 > len(words) or (len(words[0]) > 1 and words[0].isupper())


def lexical_overlap(question_terms: set[str], sentence: str | list[str], joined: dict[str, set[str]] | None = None) -> float:
    """Share of the question's terms in the sentence (given as text, or already tokenised); two
    question words the sentence writes as one (`joined`, from `compounds`) are both found."""
    if not question_terms:
        return 0.0
    terms = set(bm25_tokenize([sentence])[0] if isinstance(sentence, str) else sentence)
    found = question_terms & terms
    for word, parts in (joined or {}).items():
        if word in terms:
            found |= parts & question_terms
    return len(found) / len(question_terms)


def compounds(question: str) -> dict[str, set[str]]:
    """Adjacent words of the question that a text may write as one ("fall back" ~ "fallback",
    "built-in" ~ "builtin", "time out" ~ "timeout"): the joined word's term -> the words' terms."""
    words = list(re.finditer(r"(?<!\w)[A-Za-z]+(?!\w)", question))
    pairs = [(a.group(), b.group()) for a, b in zip(words, words[1:]) if re.fullmatch(r"[\s-]+", question[a.end():b.start()])]
    if not pairs:
        return {}
    joined = bm25_tokenize([a + b for a, b in pairs])
    parts = bm25_tokenize([f"{a} {b}" for a, b in pairs])
    return {j[0]: set(p) for j, p in zip(joined, parts) if len(j) == 1 and p}


class ExtractiveAnswerer:
    def __init__(self, embedder, max_sentences: int = 2, margin: float = 0.12, store=None, rank_penalty: float = 0.02):
        self.embedder = embedder
        self.store = store  # its stored sentence vectors spare re-embedding the passages
        self.max_sentences = max_sentences
        self.margin = margin  # keep sentences scoring within this of the best one
        self.rank_penalty = rank_penalty  # what a place lower in the retriever's order costs a passage (`rerank`)

    def rank(self, question: str, hits: list[Hit], query_vector: np.ndarray | None = None) -> list[Candidate]:
        """Every distinct sentence of the passages, best answer first (`query_vector`: the question, embedded)."""
        pieces: list[tuple[int, str]] = []
        context: list[dict] = []  # where each piece is, and the units on either side of it
        vectors: list[np.ndarray | None] = []
        for n, hit in enumerate(hits, 1):
            text = hit.chunk.text
            spans = passage_units(hit.chunk)
            stored = self.store.sentence_vectors_of(hit.chunk.chunk_id) if self.store is not None else None
            if stored is not None and len(stored) != len(spans):
                stored = None
            units = [" ".join(text[a:b].split()) for a, b in spans]
            for i, sentence in enumerate(units):
                if len(sentence) > MIN_UNIT_CHARS and not is_label(sentence):
                    pieces.append((n, sentence))
                    context.append(_neighbours(text, units, spans, i))
                    vectors.append(None if stored is None else stored[i])
        if not pieces:
            return []
        q = self.embedder.encode_queries([question])[0] if query_vector is None else query_vector
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            unique = list(dict.fromkeys(pieces[i][1] for i in missing))  # a sentence two passages hold, embedded once
            embedded = dict(zip(unique, self.embedder.encode_documents(unique)))
            for i in missing:
                vectors[i] = embedded[pieces[i][1]]
        question_terms, *sentence_terms = bm25_tokenize([question] + [s for _, s in pieces])  # one pass, not one per sentence
        sentence_terms = with_what_follows(pieces, context, sentence_terms)
        sentence_terms = with_table_head(context, sentence_terms)
        terms, joined = set(question_terms), compounds(question)
        kind = expected_answer_type(question)
        typed = [has_answer_type(s, kind) for _, s in pieces]
        scores = [
            float(v @ q) + LEXICAL_WEIGHT * lexical_overlap(terms, st, joined) + TYPE_BONUS * t
            for v, st, t in zip(vectors, sentence_terms, typed)
        ]
        order = np.argsort(-np.asarray(scores), kind="stable")
        # A sentence two overlapping passages hold is one candidate: where it scores best (where the
        # unit it goes on in is not cut off), noting the other passages that hold it. So is one that
        # notes or list items say again in the same words.
        best_of: dict[str, int] = {}
        elsewhere: dict[int, list[tuple[int, float]]] = {}
        for i in order:
            n, sentence = pieces[i]
            said = NOTE_MARK.sub("", sentence)
            if said not in best_of:
                best_of[said], elsewhere[i] = i, []
            elif n != pieces[best_of[said]][0]:
                elsewhere[best_of[said]].append((n, scores[i]))
        return [Candidate(pieces[i][0], pieces[i][1], scores[i], typed[i], elsewhere=tuple(elsewhere[i]), **context[i])
                for i in order if i in elsewhere]

    def rerank(self, hits: list[Hit], candidates: list[Candidate]) -> tuple[list[Hit], list[Candidate]]:
        """The passages in order of the best answer sentence each holds, less `rank_penalty` for each
        place the retriever put it lower: the passage that states the answer comes first, among
        passages the retriever found about equally close. The candidates keep their order; their
        source numbers follow their passages."""
        best: dict[int, float] = {}
        for c in candidates:
            for n, score in ((c.source, c.score), *c.elsewhere):
                best[n] = max(best.get(n, score), score)
        score = [best.get(n, 0.0) - self.rank_penalty * (n - 1) for n in range(1, len(hits) + 1)]
        order = sorted(range(len(hits)), key=lambda i: (-score[i], i))
        number = {old + 1: new + 1 for new, old in enumerate(order)}
        return [hits[i] for i in order], [replace(c, source=number[c.source], elsewhere=tuple((number[n], sc) for n, sc in c.elsewhere))
                                          for c in candidates]

    def near_best(self, candidates: list[Candidate]) -> list[Candidate]:
        """The few sentences close enough to the best one to be the answer: the evidence refusal reads."""
        if not candidates:
            return []
        return [c for c in candidates[:NEAR_BEST] if c.score >= candidates[0].score - self.margin]

    def answer(self, candidates: list[Candidate]) -> list[Sentence]:
        window = self.near_best(candidates)
        chosen = window[: self.max_sentences]
        holding = next((c for c in window if c.typed), None)
        if holding is not None and holding not in chosen:
            chosen = [*chosen[:-1], holding]  # the sentence stating the number/date asked for must be in the answer
        quotes: dict[str, tuple[int, tuple[int, int]]] = {}
        counted = 0  # a structure handed over to is quoted whole: its first unit counts against the limit, not the rest
        for c in chosen:
            if c.block:  # quoted whole, as one unit
                if counted <= self.max_sentences and c.block[0][0] not in quotes:
                    counted += 1
                    for text, span in c.block:
                        quotes.setdefault(text, (c.source, span))
                continue
            lead, over = c.begun_before(), c.handed_over()
            if lead and counted <= self.max_sentences and lead[0][0] not in quotes:
                counted += 1
                for text, span in lead:  # and the block that interrupted the sentence, whole
                    quotes.setdefault(text, (c.source, span))
            for text, span in [(c.text, c.span), *over[:1]]:
                if counted <= self.max_sentences and text not in quotes:
                    quotes[text] = (c.source, span)
                    counted += 1
            if over and (over[0][0] in quotes or owes_structure(c, quotes)):
                for text, span in over:
                    quotes.setdefault(text, (c.source, span))
        quotes = with_owed_structures(quotes, candidates)
        return [Sentence(text, [n], True, "quoted from the source", [PassageSpan(n, *span)]) for text, (n, span) in quotes.items()]


def with_owed_structures(quotes: dict[str, tuple], candidates: list[Candidate]) -> dict[str, tuple]:
    """Every quoted unit that ends handing over brings its structure right after it, also one quoted as
    the unit another sentence goes on in ("Changed in version 2.6: …" → "Note that the support is
    enabled only if all the following conditions are verified:" → the conditions). Only a closing
    colon or a sentence cut off counts here: "…between one version and the following version." hands
    nothing over."""
    handing_over = {(c.source, c.text): c for c in candidates if ends_handing_over(c)}
    ordered: dict[str, tuple] = {}
    for text, (n, span) in quotes.items():
        ordered.setdefault(text, (n, span))
        if (c := handing_over.get((n, text))) is not None:
            for unit, unit_span in c.handed_over():
                ordered.setdefault(unit, (n, unit_span))
    return ordered


def owes_structure(c: Candidate, quoted: dict[str, tuple]) -> bool:
    """A quoted sentence that hands over ("…has the following format:") never ends an answer without
    the structure it hands over to, even past the sentence limit."""
    return c.text in quoted and hands_over(c.text, c.ends_block)


def is_caption(line: str) -> bool:
    """A table's title line: a few words without closing punctuation ("Table 2. Numeric status codes")."""
    return 0 < len(line.split()) <= LABEL_WORDS and not STATEMENT_END.search(line)


def with_what_follows(pieces: list[tuple[int, str]], context: list[dict], sentence_terms: list[list[str]]) -> list[list[str]]:
    """A sentence the answer goes on from is quoted with its next unit (or the structure it hands over
    to), so it is scored with their words too ('"class": Only the class' docstring is inserted.' +
    'This is the default.')."""
    going_on = [(i, Candidate(0, s, 0.0, **c).handed_over()) for i, ((_, s), c) in enumerate(zip(pieces, context))]
    going_on = [(i, units) for i, units in going_on if units]
    if not going_on:
        return sentence_terms
    extended = list(sentence_terms)
    for (i, _), terms in zip(going_on, bm25_tokenize([" ".join(t for t, _ in units) for _, units in going_on])):
        extended[i] = sentence_terms[i] + terms
    return extended


def with_table_head(context: list[dict], sentence_terms: list[list[str]]) -> list[list[str]]:
    """A table row is scored with its table's caption and header row too: "100-109 | internal errors"
    answers "which range of status codes…" only under "Numeric status codes" / "Range | Description"."""
    rows = [i for i, c in enumerate(context) if c["table_head"]]
    if not rows:
        return sentence_terms
    extended = list(sentence_terms)
    for i, terms in zip(rows, bm25_tokenize([context[i]["table_head"] for i in rows])):
        extended[i] = sentence_terms[i] + terms
    return extended


def _neighbours(text: str, units: list[str], spans: list[tuple[int, int]], i: int) -> dict:
    after, before = i + 1 < len(units), i > 0
    ends_block = not after or "\n\n" in text[spans[i][1]:spans[i + 1][0]]
    return {"span": spans[i],
            "follow": units[i + 1] if after else None, "follow_span": spans[i + 1] if after else (0, 0),
            "lead": units[i - 1] if before else None, "lead_span": spans[i - 1] if before else (0, 0),
            "resumes": _interrupted_sentence(text, units, spans, i),
            "run": _structure_after(text, units, spans, i + 1) if after and hands_over(units[i], ends_block) else (),
            "ends_block": ends_block,
            "block": _code_block(text, units, spans, i) if is_fragment_of_code(units[i]) else (),
            "table_head": _table_head(text, units, spans, i)}


def is_fragment_of_code(line: str) -> bool:
    """A line of code that cannot stand alone: it opens a statement, goes on with one, or closes
    one (brackets not balanced). A table row is not code."""
    opened = sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
    return CELL_SEPARATOR not in line and (bool(OPENS_OR_GOES_ON.search(line)) or opened != 0)


def _code_block(text: str, units: list[str], spans: list[tuple[int, int]], i: int) -> tuple:
    """The lines of the code block unit `i` is a line of (MAX_RUN at most, `_block_window`), after
    the sentence that hands over to it ("You can register a customized adapter…:"); none for prose."""
    first, last = i, i
    while first > 0 and _same_block(text, spans, first):
        first -= 1
    while last + 1 < len(units) and _same_block(text, spans, last + 1):
        last += 1
    window = _block_window(first, last, i) if first < last else None
    if window is None:
        return ()
    first, last = window
    if first > 0 and ENDS_HANDING_OVER.search(units[first - 1]) and not _same_block(text, spans, first):
        first -= 1
    return tuple((units[k], spans[k]) for k in range(first, last + 1))


def _block_window(first: int, last: int, i: int) -> tuple[int, int] | None:
    """The lines of a block from `first` to `last` to quote for its line `i`: all of them, or of a
    longer block than MAX_RUN the first MAX_RUN when `i` is among them (what a block sets up comes
    first: the import, the class), else MAX_RUN lines around `i`."""
    if last - first < MAX_RUN:
        return first, last
    start = first if i - first < MAX_RUN else min(i - MAX_RUN // 2, last - MAX_RUN + 1)
    return start, start + MAX_RUN - 1


def _same_block(text: str, spans: list[tuple[int, int]], j: int) -> bool:
    """Units j - 1 and j are lines of one code block or table."""
    return is_line_break(text[spans[j - 1][1]:spans[j][0]])


def is_line_break(gap: str) -> bool:
    """The white space between two lines of one code block or table: a line break, no blank line
    (prose blocks are one line each, a blank line between them)."""
    return "\n" in gap and "\n\n" not in gap


def _interrupted_sentence(text: str, units: list[str], spans: list[tuple[int, int]], i: int) -> tuple:
    """When unit `i` goes on with a sentence that a code block or a table interrupted ("The attach" /
    "> attach(lentils)" / "places the data frame in the search path…"; "Conversely, using:" / a
    command / "will set default_transaction_read_only to on"): the units from where that sentence
    stopped, through the block. Unit `i` opens a paragraph in lower case, and the last prose before
    the block hands over with a colon or stops on a word."""
    if i == 0 or not units[i][:1].islower() or TERM_DEFINED.search(units[i]) or "\n\n" not in text[spans[i - 1][1]:spans[i][0]]:
        return ()
    for j in range(i - 1, max(-1, i - 1 - MAX_RUN), -1):
        if SENTENCE_END.search(units[j]) or is_label(units[j]):
            return ()  # prose that finished its sentence, or a title: nothing was interrupted
        ends_paragraph = "\n\n" in text[spans[j][1]:spans[j + 1][0]]
        if j < i - 1 and ends_paragraph and (ENDS_HANDING_OVER.search(units[j]) or is_cut_off(units[j])):
            return tuple((units[k], spans[k]) for k in range(j, i))
    return ()


def _table_head(text: str, units: list[str], spans: list[tuple[int, int]], i: int) -> str:
    """The caption and header row of the table whose body row unit `i` is ("" for anything else, and
    for a table this passage does not start: its first row here is not its header)."""
    if CELL_SEPARATOR not in units[i]:
        return ""
    first = i
    while first > 0 and CELL_SEPARATOR in units[first - 1] and "\n\n" not in text[spans[first - 1][1]:spans[first][0]]:
        first -= 1
    if first == i or not text[: spans[first][0]].endswith("\n\n"):
        return ""
    before = units[first - 1] if first > 0 else ""
    caption = before if is_caption(before) or hands_over(before) else ""
    return f"{caption}\n{units[first]}".strip()


def _structure_after(text: str, units: list[str], spans: list[tuple[int, int]], first: int) -> tuple:
    """The units after `first` that go on with the list, table or code block it opens (none for prose):
    the next lines of its block, or the next items of its list with their own sentences."""
    in_list = bool(BULLET.match(units[first]))
    run: list[tuple[str, tuple[int, int]]] = []
    for j in range(first + 1, min(len(units), first + MAX_RUN)):
        gap = text[spans[j - 1][1]:spans[j][0]]
        next_line = _same_block(text, spans, j)
        same_item = in_list and "\n" not in gap  # a later sentence of the same list item
        next_item = in_list and "\n\n" in gap and bool(BULLET.match(units[j]))
        if not (next_line or same_item or next_item):
            break
        run.append((units[j], spans[j]))
    return tuple(run)
