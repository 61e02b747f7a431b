"""`rag ui`, registered with the `rag` command through the `rag.commands` entry point: the library
never imports the app."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rag.cli import IndexOpt, settings_for


def ui(
    host: Annotated[Optional[str], typer.Option("--host", help="bind address (RAG_HOST, default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port (RAG_PORT, default 7860)")] = None,
    index_dir: IndexOpt = None,
) -> None:
    """Start the chat app in the browser (extractive answers unless OPENAI_BASE_URL or RAG_LOCAL_GGUF is set)."""
    from rag.factory import build_pipeline
    from ui.app import serve

    settings = settings_for(host=host, port=port, index_dir=index_dir)
    pipeline = build_pipeline(settings)
    pipeline.warm_up()
    typer.echo(f"chat app at http://{settings.host}:{settings.port}/  (Ctrl-C to stop)")
    try:
        serve(pipeline, settings.host, settings.port)
    finally:
        pipeline.close()
