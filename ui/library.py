"""The Library tab: the articles in the collection, adding and removing them, re-indexing with a
progress bar. Everything that is not rendering is `rag.library` and `rag index`'s own code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from rag.errors import RagError
from rag.indexing import IndexReport
from rag.library import Library
from rag.pipeline import Pipeline

COLUMNS = ["document id", "title", "date", "publisher", "URL", "passages", "removed by cleaning"]


def document_rows(pipeline: Pipeline) -> list[list]:
    passages = pipeline.store.manifest.chunk_counts
    rows = []
    for doc in sorted(pipeline.store.documents.values(), key=lambda d: (d.title or d.doc_id).lower()):
        reasons = sorted({r.reason for r in doc.removed})
        removed = f"{len(doc.removed)}: {'; '.join(reasons)}" if doc.removed else "nothing"
        rows.append([doc.doc_id, doc.title or "", doc.date or "unknown", doc.publisher or "unknown", doc.url or "",
                     passages.get(doc.doc_id, 0), removed])
    return rows


def report_markdown(report: IndexReport, refused: list[str] | None = None) -> str:
    lines = [f"**Index {'up to date' if report.up_to_date else 'updated'}** ({report.version}): "
             f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
             f"{report.n_chunks} passages, {report.seconds:.1f} s."]
    problems = (refused or []) + [s.reason for s in report.skipped]
    if problems:
        lines += ["", "**Not added:**"] + [f"- {p}" for p in problems]
    return "\n".join(lines)


def build_library_tab(pipeline: Pipeline) -> tuple[Callable, list]:
    library = Library(pipeline.settings)
    settings = pipeline.settings
    allowed = settings.library_uploads
    gr.Markdown(f"Articles in the collection. Added files are kept in `{settings.library_dir}`; a removed article's "
                f"file is moved to `{settings.data_dir / 'removed-articles'}`, never deleted."
                + ("" if allowed else " **Adding and removing is turned off** (RAG_LIBRARY_UPLOADS=false)."))
    status = gr.Markdown()
    with gr.Row(visible=allowed):
        files = gr.File(file_count="multiple", file_types=[".txt", ".md", ".html", ".htm", ".pdf"],
                        label=f"Add articles (.txt, .md, .html, .pdf; up to {settings.library_max_files} files, "
                              f"{settings.library_max_mb:g} MB each)", scale=3)
        add = gr.Button("Add and index", variant="primary", scale=1)
    with gr.Row(visible=allowed):
        doomed = gr.Dropdown([], label="Remove an article", scale=3)
        remove = gr.Button("Remove and re-index", variant="stop", scale=1)
    documents = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="Documents")

    def refreshed():
        pipeline.refresh()  # the chat reads the new version from its next question on
        rows = document_rows(pipeline)
        return rows, gr.update(choices=[(f"{r[1] or r[0]} ({r[0]})", r[0]) for r in rows], value=None)

    def do_add(uploaded: list[str] | None, progress=gr.Progress(track_tqdm=True)):
        if not uploaded:
            raise gr.Error("Choose one or more files first.", print_exception=False)
        try:
            upload = library.add([(Path(f).name, Path(f)) for f in uploaded])
            report = library.reindex(pipeline.embedder, upload.saved, progress=True) if upload.saved else None
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        text = report_markdown(report, upload.refused) if report else "**Nothing added:**\n\n" + "\n".join(
            f"- {r}" for r in upload.refused)
        return text, None, *refreshed()

    def do_remove(doc_id: str | None, progress=gr.Progress(track_tqdm=True)):
        if not doc_id:
            raise gr.Error("Choose the article to remove.", print_exception=False)
        try:
            moved = library.remove(doc_id, pipeline.store)
            report = library.reindex(pipeline.embedder, progress=True)
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return f"Removed {doc_id} (its file is now {moved}).\n\n" + report_markdown(report), *refreshed()

    add.click(do_add, files, [status, files, documents, doomed], api_name=False, concurrency_limit=1)
    remove.click(do_remove, doomed, [status, documents, doomed], api_name=False, concurrency_limit=1)
    return refreshed, [documents, doomed]  # for the page's load event: the list as the index is now
