"""The product as a Model Context Protocol server (the official `mcp` SDK, version 2): agents and
desktop assistants search the articles, ask checked questions, read passages and list documents.

`rag mcp` serves it over stdio; `rag api` also serves it over streamable HTTP at `/mcp`.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel, ConfigDict
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.resources import FunctionResource

from rag.errors import RagError
from rag.pipeline import Pipeline

INSTRUCTIONS = """Question answering over a fixed collection of articles, with checked citations.
Use `ask` for a question a student would ask: it returns an answer whose sentences cite numbered
sources [n], each checked against the passage it cites, or a refusal when the articles do not say.
Use `search_articles` to find passages yourself (to quote them, or to answer a question `ask`
refused). Use `get_passage` to read one passage by its chunk id, and `list_documents` to see what
the collection holds (titles, dates, publishers)."""


class Passage(BaseModel):
    """A passage as an agent needs it: ids, where it comes from, its text and offsets in the article."""

    model_config = ConfigDict(extra="ignore")
    chunk_id: str
    doc_id: str
    title: str | None = None
    date: str | None = None
    url: str | None = None
    publisher: str | None = None
    section: str | None = None
    page: int | None = None
    text: str
    start: int
    end: int
    rank: int | None = None  # its number among the results: [n] in an answer is sources[n-1]


class CheckedSentence(BaseModel):
    text: str
    citations: list[int]
    supported: bool
    reason: str = ""


class CheckedAnswer(BaseModel):
    answer: str
    refused: bool
    low_confidence: bool
    notice: str | None
    mode: str
    sentences: list[CheckedSentence]
    supported_fraction: float | None
    sources: list[Passage]


class DocumentInfo(BaseModel):
    doc_id: str
    title: str | None
    date: str | None
    publisher: str | None
    url: str | None
    passages: int


def build_mcp_server(pipeline: Pipeline) -> MCPServer:
    server = MCPServer("rag-articles", instructions=INSTRUCTIONS)
    store = pipeline.store  # the documents listed as resources when the server is built

    async def in_thread(function, *args):
        """The pipeline blocks (the model, the index): off the event loop, and its errors as one line
        (a ToolError reaches the agent with its message; anything else is logged as a crash)."""
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except RagError as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    async def search_articles(query: str, top_k: int = 5) -> list[Passage]:
        """Find the passages of the articles that best match a query (hybrid dense + keyword search).
        Returns up to top_k passages with their chunk id, document id, title, date, URL, text and
        character offsets in the article. Use it to find evidence or to quote the articles."""
        hits = await in_thread(lambda: pipeline.search(query, top_k=max(1, min(int(top_k), 50))))
        return [Passage(**h.to_json(n)) for n, h in enumerate(hits, 1)]

    @server.tool()
    async def ask(question: str, mode: str = "auto") -> CheckedAnswer:
        """Answer a question from the articles. The answer cites numbered sources [n] (sources[n-1]);
        each sentence is checked against the passage it cites (`sentences[].supported`). `refused`
        is true when the articles do not answer it; `low_confidence` when they may not answer it
        directly. mode: auto (the product's default), llm (a model writes it) or extractive (quotes)."""
        result = await in_thread(lambda: pipeline.ask(question, mode=None if mode == "auto" else mode))
        return CheckedAnswer(**result.to_json())

    @server.tool()
    async def get_passage(chunk_id: str) -> Passage:
        """Read one passage by its chunk id (from search_articles or ask): its text, its article and where it is."""
        chunk = pipeline.store.chunk(chunk_id)
        if chunk is None:
            raise ToolError(f"no passage {chunk_id!r}; chunk ids come from search_articles or ask")
        return Passage(**{k: getattr(chunk, k) for k in Passage.model_fields if k != "rank"})

    @server.tool()
    async def list_documents() -> list[DocumentInfo]:
        """List the articles in the collection: document id, title, date, publisher, URL and passage count."""
        return document_list(pipeline)

    @server.resource("article://{doc_id}", mime_type="text/plain")
    def article(doc_id: str) -> str:
        """The whole cleaned text of one article, by its document id."""
        doc = pipeline.store.documents.get(doc_id)
        if doc is None:
            raise ResourceError(f"no document {doc_id!r}; list_documents gives the ids")
        return doc.text

    for doc in store.documents.values():  # listed too, so a client can browse them
        server.add_resource(FunctionResource(uri=f"article://{doc.doc_id}", name=doc.title or doc.doc_id, mime_type="text/plain",
                                             description=" · ".join(x for x in (doc.publisher, doc.date) if x) or None,
                                             fn=lambda doc_id=doc.doc_id: article(doc_id)))
    return server


def document_list(pipeline: Pipeline) -> list[DocumentInfo]:
    passages = pipeline.store.manifest.chunk_counts
    return [DocumentInfo(doc_id=d.doc_id, title=d.title, date=d.date, publisher=d.publisher, url=d.url,
                         passages=passages.get(d.doc_id, 0)) for d in pipeline.store.documents.values()]
