"""Question answering over a collection of articles, with checked citations."""

__version__ = "0.1.0"
