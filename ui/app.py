"""The chat app: a Gradio Blocks page around gr.ChatInterface, plus article and trace pages.

Thin over the library: every answer comes from `Pipeline.ask_stream`; this module only renders.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import gradio as gr
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Mount

from rag.api import api_router, install_error_handlers
from rag.errors import RagError
from rag.feedback import FeedbackStore
from rag.golden import GoldenItem, add_golden_item, draft_from_answer
from rag.local_llm import is_serving
from rag.pipeline import AnswerEvent, NoticeEvent, Pipeline, SourcesEvent, TokenEvent
from ui import render
from ui import evaluate
from ui.evaluate import build_evaluate_tab
from ui.library import build_library_tab

log = logging.getLogger(__name__)

EXAMPLES = [
    "How much money did Russia promise to lend Belarus?",
    "Where did Putin and Lukashenko meet in September 2020?",
    "Who is Dmitri Trenin and what did he say about Lukashenko?",
    "Why did the EU prepare sanctions on Belarus in May 2021?",
]
CSS = """
.sources .source{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px;margin:6px 0}
.sources .source.cited{border-left:4px solid #e0a800}
.sources .source-meta{font-size:12px;color:var(--body-text-color-subdued)}
.sources .passage{font-size:13px;margin-top:4px;white-space:pre-wrap}
.sources mark{background:#ffe58a;color:#000}
.unsupported{text-decoration:underline wavy #c0392b}
"""
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'", "X-Content-Type-Options": "nosniff"}
ANSWER_ID = re.compile(r"^[0-9a-f]{32}$")


def status_markdown(pipeline: Pipeline) -> str:
    settings = pipeline.settings
    try:
        store = pipeline.store
        m = store.manifest
        kind = f"Qdrant collection {m.store['collection']}" if m.store else f"{m.index_type} index"
        index = f"{len(store.documents)} documents, {m.n_chunks} passages, {kind}, built {m.built_at}"
    except RagError as exc:
        index = f"unavailable: {exc}"
    if pipeline.uses_local_llm:
        up = is_serving(settings.local_llm_port)
        endpoint = f"bundled local model on {pipeline.endpoint} — {'running' if up else 'not running (starts on the first LLM question)'}"
    else:
        up = pipeline.llm().ping()
        endpoint = f"remote {pipeline.endpoint}, model {settings.llm_model or '(first listed)'} — {'reachable' if up else 'NOT reachable'}"
    return f"**Index:** {index}  \n**LLM endpoint:** {endpoint}"


class ChatHandler:
    """The chat function Gradio calls; one instance per app, shared by all sessions."""

    def __init__(self, pipeline: Pipeline, feedback: FeedbackStore):
        self.pipeline = pipeline
        self.feedback = feedback

    def respond(self, message: str, history: list[dict], mode: str, top_k: int, temperature: float, request: gr.Request):
        session = getattr(request, "session_hash", None) or "anonymous"
        streamed, sources = "", render.sources_html(None)
        try:
            for event in self.pipeline.ask_stream(message, history=history, mode=mode, top_k=int(top_k), temperature=temperature):
                match event:
                    case SourcesEvent(hits=hits):
                        sources = render.sources_html(None, hits=hits)
                        yield render.streaming_markdown("Searching the articles…") if not streamed else streamed, sources
                    case TokenEvent(text=text):
                        streamed += text
                        yield render.streaming_markdown(streamed), sources
                    case NoticeEvent(text=text):
                        gr.Warning(text)
                    case AnswerEvent(answer=answer):
                        rendered = render.answer_markdown(answer)
                        answer_id = self.feedback.record_answer(session, answer.question, answer.answer, rendered, answer.to_json())
                        yield rendered, render.sources_html(answer, trace_url=f"/trace/{answer_id}.json")
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def like(self, data: gr.LikeData, request: gr.Request) -> None:
        session = getattr(request, "session_hash", None) or "anonymous"
        value = data.value if isinstance(data.value, str) else (data.value or {}).get("value") if isinstance(data.value, dict) else None
        answer_id = self.feedback.find_answer(session, value) or self.feedback.find_answer(session)
        if answer_id is None:
            gr.Warning("No answer to rate yet.")
            return
        self.feedback.add_feedback(answer_id, "up" if data.liked else "down")
        gr.Info("Thanks, your feedback was saved.")

    def draft_golden(self, request: gr.Request):
        """The session's latest answer as a draft golden question, for an evaluator to edit."""
        session = getattr(request, "session_hash", None) or "anonymous"
        answer_id = self.feedback.find_answer(session)
        if answer_id is None:
            raise gr.Error("Ask a question first: the draft is made from the latest answer.", print_exception=False)
        item = draft_from_answer(self.feedback.trace(answer_id)["trace"], f"chat-{answer_id[:8]}")
        return item.id, item.user_input, item.reference, "\n".join(item.reference_contexts), ", ".join(item.reference_doc_ids)

    def save_golden(self, file_name: str, item_id: str, question: str, reference: str, contexts: str, doc_ids: str) -> None:
        name = (file_name or "").strip()
        if not name.endswith(".jsonl") or Path(name).name != name:
            raise gr.Error("Name a .jsonl file in the eval folder, e.g. from-chat.jsonl.", print_exception=False)
        if not (item_id or "").strip() or not (question or "").strip():
            raise gr.Error("A golden question needs an id and the question.", print_exception=False)
        item = GoldenItem(id=item_id.strip(), user_input=question.strip(), reference=(reference or "").strip(),
                          reference_doc_ids=[d.strip() for d in (doc_ids or "").split(",") if d.strip()],
                          reference_contexts=[c.strip() for c in (contexts or "").splitlines() if c.strip()], type="from-chat")
        try:
            add_golden_item(evaluate.EVAL_DIR / name, item)  # read now: tests move the eval folder
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        gr.Info(f"Saved {item.id} to eval/{name}.")

    def comment(self, text: str, request: gr.Request) -> str:
        session = getattr(request, "session_hash", None) or "anonymous"
        text = (text or "").strip()
        if not text:
            gr.Warning("Write a comment first.")
            return text
        answer_id = self.feedback.find_answer(session)
        if answer_id is None:
            gr.Warning("Ask a question first: comments are attached to the latest answer.")
            return text
        self.feedback.add_feedback(answer_id, "comment", text[:2000])
        gr.Info("Thanks, your comment was saved with the latest answer.")
        return ""


def build_blocks(pipeline: Pipeline, feedback: FeedbackStore) -> gr.Blocks:
    handler = ChatHandler(pipeline, feedback)
    settings = pipeline.settings
    with gr.Blocks(title="Ask the articles") as blocks:
        gr.Markdown("## Ask the articles")
        with gr.Tab("Ask"):
            with gr.Accordion("What is in the collection", open=True):
                gr.Markdown(lambda: render.welcome_markdown(list(pipeline.store.documents.values())))  # as the index is now
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(height=480, label="Answer", sanitize_html=True, allow_tags=False,
                                         placeholder="Ask a question about the articles; answers cite their sources as [n].")
                    mode = gr.Radio(["llm", "extractive"], value=pipeline.default_mode, label="Answer mode", render=False,
                                    info="llm: a model writes the answer; extractive: quoted sentences, no model")
                    top_k = gr.Slider(1, 10, value=settings.top_k, step=1, label="Passages to retrieve (top_k)", render=False)
                    temperature = gr.Slider(0.0, 1.0, value=settings.temperature, step=0.05, label="Temperature", render=False)
                    sources = gr.HTML(render.sources_html(None), render=False)
                    chat = gr.ChatInterface(
                        handler.respond,
                        chatbot=chatbot,
                        textbox=gr.Textbox(placeholder="e.g. How much money did Russia promise to lend Belarus?",
                                           max_length=settings.max_question_chars, submit_btn=True, stop_btn=True),
                        additional_inputs=[mode, top_k, temperature],
                        additional_inputs_accordion="Settings",
                        additional_outputs=[sources],
                        examples=[[q, pipeline.default_mode, settings.top_k, settings.temperature] for q in EXAMPLES],
                        cache_examples=False,
                        save_history=True,  # a student's conversations survive a reload, with a "new chat" button
                        api_name="chat",
                        concurrency_limit=settings.concurrency_limit,
                    )
                    chatbot.like(handler.like, None, None, api_name=False)
                    with gr.Row():
                        comment = gr.Textbox(placeholder="Optional comment on the latest answer", show_label=False, scale=4)
                        send = gr.Button("Send comment", scale=1)
                    send.click(handler.comment, comment, comment, api_name=False)
                    with gr.Accordion("Save the latest answer as a golden question (evaluators)", open=False):
                        draft = gr.Button("Draft from the latest answer", size="sm")
                        with gr.Row():
                            golden_id = gr.Textbox(label="Question id")
                            golden_file = gr.Textbox(value="from-chat.jsonl", label="Golden set (a .jsonl file in eval/)")
                        golden_question = gr.Textbox(label="Question")
                        golden_reference = gr.Textbox(label="Reference answer (edit before saving)", lines=3)
                        golden_contexts = gr.Textbox(label="Reference contexts, one per line (what the answer rests on)", lines=3)
                        golden_docs = gr.Textbox(label="Reference documents (ids, comma-separated)")
                        save_golden = gr.Button("Save to the golden set", variant="primary", size="sm")
                    golden_fields = [golden_id, golden_question, golden_reference, golden_contexts, golden_docs]
                    draft.click(handler.draft_golden, None, golden_fields, api_name=False)
                    save_golden.click(handler.save_golden, [golden_file, *golden_fields], None, api_name=False)
                with gr.Column(scale=2):
                    sources.render()
            with gr.Accordion("Status", open=False):
                status = gr.Markdown("Checking…")
                refresh = gr.Button("Check again", size="sm")
            refresh.click(lambda: status_markdown(pipeline), None, status, api_name=False)
            blocks.load(lambda: status_markdown(pipeline), None, status, api_name=False)
        with gr.Tab("Library"):
            load_library, library_outputs = build_library_tab(pipeline)
        blocks.load(load_library, None, library_outputs, api_name=False)
        with gr.Tab("Evaluate"):
            load_history, history_outputs = build_evaluate_tab(pipeline, feedback)
        blocks.load(load_history, None, history_outputs, api_name=False)
    return blocks


def create_app(pipeline: Pipeline, feedback: FeedbackStore | None = None) -> FastAPI:
    """The FastAPI app: article and trace pages beside the Gradio UI mounted at /."""
    settings = pipeline.settings
    feedback = feedback or FeedbackStore(settings.data_dir / "feedback.sqlite")
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    mounted: list = []  # the Gradio app, once mounted: its login sessions guard these pages too

    def logged_in(request: Request) -> None:
        """Gradio's login only guards Gradio's routes; with RAG_AUTH the article and trace pages need the same session."""
        gradio_app = mounted[0] if mounted else None
        if gradio_app is None or gradio_app.auth is None:
            return
        cookie = f"access-token-{gradio_app.cookie_id}"
        token = request.cookies.get(cookie) or request.cookies.get(cookie.replace("access-token-", "access-token-unsecure-"))
        if gradio_app.tokens.get(token) is None:
            raise HTTPException(status_code=401, detail="log in on the chat page first")

    @api.get("/article/{doc_id}", response_class=HTMLResponse, dependencies=[Depends(logged_in)])
    def article(doc_id: str, chunk: str | None = None):
        doc = pipeline.store.documents.get(doc_id)  # only indexed documents, looked up by id: never a path
        if doc is None:
            return PlainTextResponse("Not found", status_code=404)
        passage = pipeline.store.chunk(chunk) if chunk else None
        passage = passage if passage is not None and passage.doc_id == doc_id else None
        page = render.article_page(doc, passage.start if passage else None, passage.end if passage else None)
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    install_error_handlers(api)
    api.include_router(api_router(pipeline, feedback))  # the OpenAI-compatible API, same pipeline (its own bearer key)

    @api.get("/trace/{answer_id}.json", dependencies=[Depends(logged_in)])
    def trace(answer_id: str):
        record = feedback.trace(answer_id) if ANSWER_ID.match(answer_id) else None
        if record is None:
            return PlainTextResponse("Not found", status_code=404)
        return JSONResponse(record, headers={"Content-Disposition": f'attachment; filename="trace-{answer_id}.json"'})

    blocks = build_blocks(pipeline, feedback)
    blocks.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    secret = settings.auth.get_secret_value() if settings.auth else ""
    if secret and ":" not in secret:
        raise RagError("RAG_AUTH must be user:password")
    auth = tuple(secret.split(":", 1)) if secret else None
    app = gr.mount_gradio_app(api, blocks, path="", auth=auth, css=CSS, server_name=settings.host, server_port=settings.port,
                              footer_links=["api"], show_error=True, max_file_size=f"{settings.library_max_mb:g}mb")
    mounted.extend(route.app for route in app.routes if isinstance(route, Mount))
    return app


def start_llm_in_background(pipeline: Pipeline) -> None:
    """Start the bundled model while the page loads, so the first question does not wait for it."""
    if pipeline.default_mode != "llm" or not pipeline.uses_local_llm:
        return

    def start() -> None:
        try:
            pipeline.llm()
        except RagError as exc:
            log.warning("the LLM is not available yet: %s", exc)

    threading.Thread(target=start, daemon=True, name="start-llm").start()


def serve(pipeline: Pipeline, host: str, port: int) -> None:
    import uvicorn

    app = create_app(pipeline)
    start_llm_in_background(pipeline)
    # An open browser tab keeps a connection open: without a limit, stopping the app waits for it forever.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5))
    # Once stopping, the tabs' cut connections are expected: no traceback for them.
    logging.getLogger("uvicorn.error").addFilter(lambda record: not server.should_exit)
    server.run()
