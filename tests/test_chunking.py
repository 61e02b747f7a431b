"""rag/chunking.py with the embedding model's real tokenizer: chunks fit, offsets are exact, ids are stable."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag import chunking
from rag.chunking import SPECIAL_TOKENS, Chunker, ChunkerConfig, passage_units, sentence_spans
from rag.ingest import load_documents
from rag.records import Block, Document

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def n_pieces(tokenizer, text: str) -> int:
    """Word pieces the model sees for `text`, [CLS] and [SEP] included."""
    return len(tokenizer(text)["input_ids"])


@pytest.fixture(scope="module")
def seed_documents():
    return load_documents([SEEDS]).documents


def short_sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is short." for i in range(n))


@pytest.mark.integration
@pytest.mark.parametrize(("max_tokens", "overlap"), [(224, 64), (64, 16), (32, 8)])
def test_seed_chunks_fit_the_budget_and_match_the_document(embedder, seed_documents, max_tokens, overlap):
    tok = embedder.tokenizer
    chunker = Chunker(tok, ChunkerConfig(max_tokens, overlap))
    for doc in seed_documents:
        chunks = chunker.chunk(doc)
        assert len(chunks) >= 2, doc.doc_id
        assert [c.position for c in chunks] == list(range(len(chunks)))
        for c in chunks:
            assert n_pieces(tok, c.text) <= max_tokens, (doc.doc_id, c.position)
            assert doc.text[c.start : c.end] == c.text
            assert (c.doc_id, c.title, c.date, c.url) == (doc.doc_id, doc.title, doc.date, doc.url)
        # together the chunks cover the whole article, in order
        assert chunks[0].start == 0
        assert chunks[-1].end == len(doc.text.rstrip())
        headings = {doc.text[b.start:b.end] for b in doc.blocks if b.kind == "heading"}
        for a, b in zip(chunks, chunks[1:]):
            assert a.start < b.start
            between = doc.text[a.end : b.start].strip()
            # overlapping, or separated by whitespace or a heading (when no sentence fits the overlap)
            assert b.start < a.end or between == "" or between in headings


@pytest.mark.integration
def test_default_config_matches_settings_and_model_limit(embedder, make_settings):
    config = ChunkerConfig()
    settings = make_settings()
    assert (config.max_tokens, config.overlap_tokens) == (settings.chunk_max_tokens, settings.chunk_overlap_tokens)
    assert config.max_tokens <= embedder.model.max_seq_length  # a chunk is never truncated by the model
    assert SPECIAL_TOKENS == n_pieces(embedder.tokenizer, "")


@pytest.mark.integration
def test_consecutive_chunks_overlap_when_sentences_are_short(embedder):
    doc = Document("short", short_sentences(40))
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(48, 16)).chunk(doc)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end, "no overlap between consecutive chunks"
        shared = doc.text[b.start : a.end]
        assert n_pieces(embedder.tokenizer, shared) - SPECIAL_TOKENS <= 16  # never more than the overlap budget
        assert shared.endswith(".")  # overlap is made of whole sentences


@pytest.mark.integration
def test_no_overlap_when_overlap_is_zero(embedder):
    doc = Document("short", short_sentences(40))
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(48, 0)).chunk(doc)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start > a.end


@pytest.mark.integration
def test_chunk_ids_are_stable_and_change_with_the_text(embedder, seed_documents):
    doc = next(d for d in seed_documents if d.doc_id.startswith("004"))
    config = ChunkerConfig(224, 64)
    first = [c.chunk_id for c in Chunker(embedder.tokenizer, config).chunk(doc)]
    again = [c.chunk_id for c in Chunker(embedder.tokenizer, config).chunk(Document(**vars(doc)))]
    assert first == again
    assert len(set(first)) == len(first)

    edited = Document(doc.doc_id, doc.text + "\n\nA new closing sentence was added later.")
    changed = [c.chunk_id for c in Chunker(embedder.tokenizer, config).chunk(edited)]
    assert changed[0] == first[0]  # the untouched opening keeps its id
    assert changed[-1] not in first  # the edited end gets a new id

    renamed = Document("another-id", doc.text)
    assert set(c.chunk_id for c in Chunker(embedder.tokenizer, config).chunk(renamed)).isdisjoint(first)
    other_config = [c.chunk_id for c in Chunker(embedder.tokenizer, ChunkerConfig(224, 32)).chunk(doc)]
    assert other_config[0] != first[0]  # the chunker settings are part of the id


@pytest.mark.integration
def test_a_sentence_longer_than_the_budget_is_cut_into_fitting_chunks(embedder):
    words = "Lukashenka Tsikhanouskaya Mishustin negotiated unprecedented intergovernmental arrangements".split()
    sentence = " ".join(words[i % len(words)] for i in range(150)) + "."
    doc = Document("long", sentence)
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(40, 10)).chunk(doc)
    assert len(chunks) >= 5
    for c in chunks:
        assert n_pieces(embedder.tokenizer, c.text) <= 40
        assert doc.text[c.start : c.end] == c.text
        # cut between words, not inside one
        assert c.start == 0 or doc.text[c.start - 1] == " "
    assert chunks[0].start == 0
    assert chunks[-1].end == len(sentence)
    # the pieces cover the sentence without gaps beyond the spaces between words
    assert " ".join(c.text for c in chunks) == sentence


@pytest.mark.integration
def test_a_code_block_one_passage_can_hold_is_never_cut_between_two(embedder):
    code = "\n".join(f"setting_{n} = {n}" for n in range(6))
    text = short_sentences(8) + " Put these lines in the file:\n\n" + code + "\n\n" + short_sentences(3)
    doc = Document("code", text)  # made without blocks: a paragraph with line breaks is a code block
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(80, 16)).chunk(doc)
    assert len(chunks) >= 2
    holding = [c for c in chunks if "setting_0" in c.text or "setting_5" in c.text]
    assert [code in c.text for c in holding] == [True]  # one passage holds the whole block
    assert "Put these lines in the file:" in holding[0].text  # with the sentence that hands over to it, as overlap
    long_code = "\n".join(f"setting_{n} = {n}" for n in range(60))  # longer than a passage: cut at line boundaries
    for c in Chunker(embedder.tokenizer, ChunkerConfig(80, 16)).chunk(Document("long", "Intro.\n\n" + long_code)):
        assert n_pieces(embedder.tokenizer, c.text) <= 80 and all(line.startswith(("setting_", "Intro")) for line in c.text.split("\n") if line)


@pytest.mark.integration
def test_a_section_opening_with_a_code_block_gets_no_passage_of_the_last_ones_sentences_alone(embedder):
    prose = short_sentences(14)
    code = "\n".join(f"setting_{n} = {n}" for n in range(14))
    text = f"{prose}\n\nSecond part\n\n{code}"
    code_start = len(prose) + len("\n\nSecond part\n\n")
    doc = Document("d", text, blocks=[Block("paragraph", 0, len(prose)),
                                      Block("heading", len(prose) + 2, code_start - 2, level=1),
                                      Block("code", code_start, len(text), section="Second part")])
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(80, 16)).chunk(doc)
    for a, b in zip(chunks, chunks[1:]):
        assert not (a.start <= b.start and b.end <= a.end), b.text  # each passage holds something of its own
    assert [c.section for c in chunks if code in c.text] == ["Second part"]


def test_sentence_spans_cover_whole_sentences():
    text = "Putin met Lukashenko in Sochi. Russia offered a $1.5 billion loan! Will the protests stop?"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Putin met Lukashenko in Sochi.",
        "Russia offered a $1.5 billion loan!",
        "Will the protests stop?",
    ]


def test_sentence_spans_end_at_paragraph_breaks_and_keep_abbreviations():
    text = "The U.S. condemned it\n\nMr. Peskov said no.  Talks began on Aug. 9 in Minsk."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "The U.S. condemned it",
        "Mr. Peskov said no.",
        "Talks began on Aug. 9 in Minsk.",
    ]


def test_a_sentence_goes_on_where_no_space_follows_the_full_stop():
    """pysbd cut "tolerance of .Machine$double.eps ^ 0.5." after "of .", and the answer lost its value."""
    text = "all.equal() uses a tolerance of .Machine$double.eps ^ 0.5. Use .xlsx files. Then stop."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "all.equal() uses a tolerance of .Machine$double.eps ^ 0.5.",
        "Use .xlsx files.",
        "Then stop.",
    ]


def test_sentence_spans_from_many_threads_match_a_single_thread(seed_documents):
    """The UI answers several questions at once, each splitting passages into sentences: a thread
    must not get sentences lost or moved by another thread's text (which made the refusal check
    miss the loan sentence and refuse under load)."""
    texts = [p for d in seed_documents for p in d.text.split("\n\n") if p.strip() and "\n" not in p]
    split_afresh = chunking._sentences.__wrapped__  # past the cache, or only the first split would race
    expected = [split_afresh(t) for t in texts]
    wrong: list[str] = []
    start = threading.Barrier(8)

    def split(n: int) -> None:
        start.wait()
        for _ in range(3):
            for i in range(n, n + len(texts)):  # each thread in its own order
                if split_afresh(texts[i % len(texts)]) != expected[i % len(texts)]:
                    wrong.append(texts[i % len(texts)][:40])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, as a loaded machine does
    try:
        threads = [threading.Thread(target=split, args=(n * 7,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not wrong, f"{len(wrong)} of {8 * 3 * len(texts)} splits differed from a single thread's, e.g. {wrong[:3]}"


@pytest.mark.integration
def test_an_index_build_splits_each_paragraph_into_sentences_once(embedder, seed_documents, monkeypatch):
    """pysbd was a fifth of an index build: the chunker splits every block, and taking each
    passage's answer units afterwards must reuse those splits, not run pysbd on them again."""
    chunking._sentences.cache_clear()
    chunking._units.cache_clear()
    segmented: list[str] = []
    segmenter = chunking._segmenter()
    original = segmenter.segment
    monkeypatch.setattr(segmenter, "segment", lambda text: segmented.append(text) or original(text))
    chunks = [c for d in seed_documents for c in Chunker(embedder.tokenizer, ChunkerConfig()).chunk(d)]
    split_by_chunker = len(segmented)
    units = [passage_units(c) for c in chunks]
    assert split_by_chunker > 50 and sum(map(len, units)) > split_by_chunker
    # split again: only a passage's first paragraph when the passage starts inside a block
    assert len(segmented) - split_by_chunker < len(chunks)
    assert len(set(segmented)) == len(segmented), "a paragraph went through pysbd twice"


@pytest.mark.integration
def test_empty_document_has_no_chunks(embedder):
    assert Chunker(embedder.tokenizer, ChunkerConfig()).chunk(Document("empty", "")) == []
    assert sentence_spans("  \n\n  ") == []


@pytest.mark.integration
@settings(max_examples=40, deadline=None)
@given(text=st.text())
def test_chunking_arbitrary_text_keeps_exact_offsets(embedder, text):
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(32, 8)).chunk(Document("fuzz", text))
    for c in chunks:
        assert 0 <= c.start <= c.end <= len(text)
        assert text[c.start : c.end] == c.text
    for a, b in sentence_spans(text):
        assert 0 <= a < b <= len(text)


@pytest.mark.integration
@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.sampled_from(["Minsk", "Lukashenka", "loan", "$1.5", "billion", "U.S.", "Mr.", ".", "!", "\n\n", "café", "—", "“Yes”"]), max_size=150))
def test_chunking_word_soup_fits_the_budget(embedder, words):
    text = " ".join(words)
    chunks = Chunker(embedder.tokenizer, ChunkerConfig(32, 8)).chunk(Document("fuzz", text))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert n_pieces(embedder.tokenizer, c.text) <= 32
