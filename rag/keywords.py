"""The keyword index: BM25 (bm25s, Lucene variant) over lower-cased, stop-worded, stemmed tokens.

Beside bm25s's score matrix the index keeps each passage's term counts. A passage's BM25 scores
depend on every other passage (through the IDF and the average length), so adding one article
changes them all; with the counts kept, only the new passages are tokenised and the scores are
recomputed from the counts in a few array operations, instead of re-tokenising and re-scoring the
whole collection in Python (10 s at 100,000 passages).
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.files import make_private
from rag.records import Chunk

TERM_COUNTS = "term_counts.npz"
EMPTY_TOKEN = ""  # bm25s's placeholder: a query of unknown words still has a column to score


def _bm25s():
    import bm25s

    # bm25s sets its own logger to DEBUG on import; keep its chatter out of the user's terminal.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


# bm25s's words of two or more characters, and dotted numbers whole: a version (3.8, 2.26.0), a
# decimal (1.5) or an address is one term, not nothing (one-character pieces are dropped).
KEYWORD_ANALYSIS = "dotted-numbers-1"  # recorded in the manifest: another analysis recounts every passage
TOKEN_PATTERN = r"(?u)\b\d+(?:\.\d+)+\b|\b\w\w+\b"


def _tokenize(texts: list[str], return_ids: bool):
    return _bm25s().tokenize(texts, token_pattern=TOKEN_PATTERN, stopwords="en", stemmer=_stemmer(),
                             return_ids=return_ids, show_progress=False)


def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    """The same analysis for the index, queries and the answer checks."""
    return _tokenize(texts, return_ids=False)


def bm25_text(chunk: Chunk) -> str:
    """Keyword search sees the title and section path too: a passage is about its section's subject."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


@dataclass
class TermCounts:
    """How often each vocabulary term occurs in each passage (passages x terms, sparse)."""

    counts: object  # scipy.sparse.csr_matrix
    vocab: dict[str, int]

    @classmethod
    def empty(cls) -> TermCounts:
        from scipy import sparse

        return cls(sparse.csr_matrix((0, 1), dtype=np.int32), {EMPTY_TOKEN: 0})

    def rows(self, rows: list[int]) -> TermCounts:
        return TermCounts(self.counts[np.asarray(rows, dtype=np.int64)], self.vocab)

    def extended(self, texts: list[str]) -> TermCounts:
        """These counts with one row appended per text; unseen terms join the vocabulary."""
        from scipy import sparse

        if not texts:
            return self
        ids, local_vocab = _tokenize(texts, return_ids=True)
        vocab = dict(self.vocab)
        to_global = np.zeros(len(local_vocab), dtype=np.int64)
        for term, local in local_vocab.items():
            to_global[local] = vocab.setdefault(term, len(vocab))
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(ids)), lengths)
        shape = (len(ids), len(vocab))
        new = sparse.csr_matrix((np.ones(len(flat), dtype=np.int32), (rows, to_global[flat])), shape=shape)
        old = sparse.csr_matrix(self.counts, shape=(self.counts.shape[0], len(vocab)))
        return TermCounts(sparse.vstack([old, new], format="csr"), vocab)


def bm25_index(terms: TermCounts):
    """A bm25s retriever scored from the counts, exactly as `bm25s.BM25().index` scores the tokens."""
    from scipy import sparse

    retriever = _bm25s().BM25(method="lucene")  # the formula below
    counts = terms.counts.tocsr()
    counts.sum_duplicates()
    n_docs, n_terms = counts.shape
    lengths = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    mean_length = lengths.mean() if n_docs else 0.0
    doc_freq = np.bincount(counts.indices, minlength=n_terms)
    idf = np.log(1 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))  # bm25s's Lucene IDF
    tf = counts.data.astype(np.float64)
    row_length = np.repeat(lengths, np.diff(counts.indptr))
    k1, b = retriever.k1, retriever.b
    scores = idf[counts.indices] * tf / (k1 * ((1 - b) + b * row_length / max(mean_length, 1e-9)) + tf)
    by_term = sparse.csr_matrix((scores.astype(retriever.dtype), counts.indices, counts.indptr), shape=counts.shape).tocsc()
    retriever.scores = {
        "data": by_term.data.astype(retriever.dtype),
        "indices": by_term.indices.astype(retriever.int_dtype),
        "indptr": by_term.indptr.astype(retriever.int_dtype),
        "num_docs": n_docs,
    }
    retriever.nonoccurrence_array = None  # the Lucene variant has none
    retriever.vocab_dict = dict(terms.vocab)
    retriever.unique_token_ids_set = set(terms.vocab.values())
    return retriever


def write_keyword_index(path: Path, terms: TermCounts) -> None:
    """bm25s's files and the term counts they were scored from, readable by the owner only."""
    from scipy import sparse

    bm25_index(terms).save(str(path), show_progress=False)
    sparse.save_npz(path / TERM_COUNTS, terms.counts.tocsr(), compressed=False)
    make_private(path)


def load_keyword_index(path: Path):
    return _bm25s().BM25.load(str(path), show_progress=False)


def read_term_counts(path: Path, vocab: dict[str, int]) -> TermCounts | None:
    """The counts an index was scored from; None for an index written before they were kept."""
    from scipy import sparse

    file = path / TERM_COUNTS
    if not file.is_file():
        return None
    return TermCounts(sparse.load_npz(file).tocsr(), vocab)
