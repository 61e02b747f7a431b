"""The `rag` command line: index, inspect, search, ask, eval, serve-llm, api, mcp; `ui` and `bench` register from outside."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rag.errors import RagError
from rag.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Question answering over a collection of articles, with checked citations.")
log = logging.getLogger("rag")

IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="index folder (RAG_INDEX_DIR)")]
DocOpt = Annotated[Optional[list[str]], typer.Option("--doc", help="only this document (repeatable; ids from `rag inspect`)")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="only articles dated on or after YYYY-MM-DD")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="only articles dated on or before YYYY-MM-DD")]
TopKOpt = Annotated[Optional[int], typer.Option("--top-k", min=1, help="passages to return (RAG_TOP_K)")]


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_for(**overrides) -> Settings:
    return load_settings(**overrides)


def filters_for(pipeline, docs: list[str] | None, since: str | None, until: str | None):
    """--doc/--since/--until as retrieval filters, each checked first: a typo fails, not an empty answer."""
    import datetime

    from rag.retrieval import Filters

    unknown = sorted(set(docs) - set(pipeline.store.documents)) if docs else []  # documents are read only when asked
    if unknown:
        fail(f"unknown document {', '.join(unknown)}; `rag inspect` lists the document ids")
    for option, value in (("--since", since), ("--until", until)):
        try:
            value and datetime.date.fromisoformat(value)
        except ValueError:
            fail(f"{option} {value!r} is not a date; use YYYY-MM-DD")
    return Filters(frozenset(docs) if docs else None, since, until)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress and decisions")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("faiss.loader", "bm25s", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # SIGTERM's default ends the process on the spot, skipping `finally` and atexit: the bundled model
    # server a command started would outlive it. (uvicorn shuts the app down first, then raises it again.)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@app.command()
def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="extra files or folders to add")] = None,
    seeds: Annotated[Optional[Path], typer.Option("--seeds", help="articles folder (RAG_SEEDS_DIR)")] = None,
    index_dir: IndexOpt = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="ignore the current index and start over")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="embed on Ray: a small Ray on this machine, or the cluster of --ray-address")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDRESS", help="embed on the Ray cluster at ADDRESS (auto on a cluster node, ray://head:10001)")] = None,
) -> None:
    """Build or update the index from the seeds folder (and PATHs): new and changed articles only; nothing when nothing changed."""
    from rag.factory import build_embedder
    from rag.indexing import build_index

    settings = settings_for(seeds_dir=seeds, index_dir=index_dir)
    progress = sys.stderr.isatty()
    if ray or ray_address:
        from rag.ray_indexing import LOCAL, RayEmbedder, ray_cluster

        with ray_cluster(ray_address or LOCAL):
            report = build_index(settings, RayEmbedder(settings), extra_paths=paths, rebuild=rebuild, progress=progress)
    else:
        report = build_index(settings, build_embedder(settings), extra_paths=paths, rebuild=rebuild, progress=progress)
    for skipped in report.skipped:
        typer.echo(f"skipped: {skipped.reason}", err=True)
    if report.up_to_date:
        typer.echo(f"index is up to date: {len(report.unchanged)} documents, {report.n_chunks} chunks (nothing changed) "
                   f"-> {settings.index_dir}/{report.version}")
        return
    typer.echo(
        f"indexed {len(report.added) + len(report.changed) + len(report.unchanged)} documents, {report.n_chunks} chunks "
        f"(added {len(report.added)}, changed {len(report.changed)}, unchanged {len(report.unchanged)}, "
        f"removed {len(report.removed)}; embedded {report.embedded_chunks} chunks) in {report.seconds:.1f}s "
        f"-> {settings.index_dir}/{report.version}"
    )


@app.command()
def inspect(
    doc_id: Annotated[Optional[str], typer.Argument(help="a document id; omit to list documents")] = None,
    index_dir: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a document's metadata, its blocks (kind, page, section path) and what cleaning removed (or list all documents)."""
    from rag.stores import load_store

    settings = settings_for(index_dir=index_dir)
    store = load_store(settings, check_model=False)
    if doc_id is None:
        for doc in store.documents.values():
            n = store.manifest.chunk_counts.get(doc.doc_id, 0)
            typer.echo(f"{doc.doc_id}  {doc.date or '----------'}  {n:3d} chunks  {doc.title}")
        return
    doc = store.documents.get(doc_id)
    if doc is None:
        fail(f"no document {doc_id!r} in the index; `rag inspect` lists the ids")
    chunks = [c for c in store.chunks if c.doc_id == doc_id]
    if as_json:
        typer.echo(json.dumps(doc.to_dict() | {"chunks": len(chunks)}, ensure_ascii=False, indent=2))
        return
    for key in ("doc_id", "title", "date", "publisher", "url", "source_path", "content_hash"):
        value = getattr(doc, key)
        typer.echo(f"{key:>12}: {value if value is not None else 'unknown'}")
    typer.echo(f"{'chunks':>12}: {len(chunks)}")
    typer.echo(f"{'characters':>12}: {len(doc.text)}")
    typer.echo(f"blocks ({len(doc.blocks)}):")
    for block in doc.blocks:
        text = " ⏎ ".join(doc.text[block.start:block.end].splitlines())
        where = f"p.{block.page} " if block.page else ""
        kind = f"{block.kind}{block.level or ''}"
        typer.echo(f"  {block.start:>7}  {kind:<10} {where}[{block.section}] {text[:100]}{'…' if len(text) > 100 else ''}")
    typer.echo(f"removed ({len(doc.removed)}):")
    for removal in doc.removed:
        typer.echo(f"  - [{removal.reason}] {removal.text}")


def read_queries(path: Path) -> list[str]:
    """JSONL with `user_input` (or `question`), or plain text, one query per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"{path}: cannot read the queries file ({exc.__class__.__name__}); give a UTF-8 JSONL or text file") from exc
    queries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RagError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
            query = row.get("user_input") or row.get("question")
            if not query:
                raise RagError(f"{path}:{n}: no `user_input` or `question` field")
            queries.append(query)
        else:
            queries.append(line.strip())
    return queries


@app.command()
def search(
    question: Annotated[Optional[str], typer.Argument(help="the question")] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", help="JSONL (user_input/question) or text, one per line")] = None,
    top_k: TopKOpt = None,
    index_dir: IndexOpt = None,
    method: Annotated[str, typer.Option("--method", help="hybrid, dense or bm25")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per query")] = False,
    doc: DocOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Find the passages that answer a question."""
    from rag.factory import build_pipeline

    if method not in ("hybrid", "dense", "bm25"):
        fail(f"unknown --method {method!r}; use hybrid, dense or bm25")
    if (question is None) == (queries is None):
        fail("give either a QUESTION or --queries FILE")
    pipeline = build_pipeline(settings_for(index_dir=index_dir))
    filters = filters_for(pipeline, doc, since, until)
    for query in [question] if question is not None else read_queries(queries):
        hits = pipeline.search(query, top_k=top_k, method=method, filters=filters)
        if as_json:
            typer.echo(json.dumps({"query": query, "results": [h.to_json(i) for i, h in enumerate(hits, 1)]}, ensure_ascii=False))
            continue
        typer.echo(f"Q: {query}")
        for i, hit in enumerate(hits, 1):
            c = hit.chunk
            typer.echo(f"{i}. [{c.doc_id}] {c.title} ({c.date or 'undated'})  score={hit.score:.4f}")
            typer.echo("   " + c.text.replace("\n", " ")[:300])


ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="auto, llm or extractive (RAG_MODE)")]


def print_answer_footer(answer) -> None:
    if answer.notice:
        typer.echo(f"note: {answer.notice}", err=True)
    fraction = answer.supported_fraction
    if fraction is not None:
        typer.echo(f"\n(supported sentences: {fraction:.0%})")
    typer.echo("\nSources:")
    cited = {c.marker for c in answer.citations}
    for n, hit in enumerate(answer.sources, 1):
        c = hit.chunk
        mark = "*" if n in cited else " "
        typer.echo(f"{mark}[{n}] {c.title} ({c.publisher or 'unknown publisher'}, {c.date or 'undated'}) {c.url or c.doc_id}")


@app.command()
def ask(
    question: Annotated[Optional[str], typer.Argument(help="the question")] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", help="JSONL (user_input/question) or text, one per line")] = None,
    mode: ModeOpt = None,
    top_k: TopKOpt = None,
    index_dir: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per question")] = False,
    doc: DocOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Answer a question from the articles, citing [n] sources, once its citations are checked."""
    from rag.factory import build_pipeline

    if (question is None) == (queries is None):
        fail("give either a QUESTION or --queries FILE")
    pipeline = build_pipeline(settings_for(index_dir=index_dir, mode=mode))
    filters = filters_for(pipeline, doc, since, until)
    try:
        for q in [question] if question is not None else read_queries(queries):
            answer = pipeline.ask(q, top_k=top_k, filters=filters)  # printed once, after the grounding check
            if as_json:
                if answer.notice:
                    typer.echo(f"note: {answer.notice}", err=True)
                typer.echo(json.dumps(answer.to_json(), ensure_ascii=False))
            else:
                typer.echo(answer.answer)
                print_answer_footer(answer)
    finally:
        pipeline.close()


@app.command("serve-llm")
def serve_llm(
    port: Annotated[Optional[int], typer.Option("--port", help="port on 127.0.0.1 (RAG_LOCAL_LLM_PORT)")] = None,
) -> None:
    """Run the bundled local LLM server (llama.cpp, OpenAI-compatible) until Ctrl-C."""
    import time

    from rag.local_llm import LocalLLMServer

    server = LocalLLMServer(settings_for(local_llm_port=port))
    url = server.ensure_running()
    owned = server.process is not None
    typer.echo(f"bundled LLM {'started' if owned else 'already running'} at {url}; export OPENAI_BASE_URL={url} to use it from elsewhere")
    if not owned:
        return
    try:
        while server.process.poll() is None:
            time.sleep(1)
        fail(f"the LLM server exited with code {server.process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


eval_app = typer.Typer(no_args_is_help=True, help="Score answers against a golden Q&A set.")
app.add_typer(eval_app, name="eval")
GoldenOpt = Annotated[Path, typer.Option("--golden", help="golden set, JSONL")]
FailUnderOpt = Annotated[Optional[list[str]], typer.Option("--fail-under", help="METRIC=VALUE; exit 1 when below (repeatable)")]


def report_summary(summary: dict, out: Path, fail_under: list[str] | None) -> None:
    from rag.evaluation import check_thresholds

    typer.echo(f"{summary['n']} questions, mode {summary['mode']} -> {out}/report.html")
    intervals = summary.get("intervals", {})
    for name, value in summary["metrics"].items():
        bounds = intervals.get(name)
        shown = f"  [{bounds[0]}, {bounds[1]}]" if bounds else ""
        typer.echo(f"  {name:32s} {'-' if value is None else value}{shown}")
    typer.echo("  (in brackets: 95% bootstrap intervals over the questions)")
    failures = check_thresholds(summary, fail_under or [])
    for failure in failures:
        typer.echo(f"below threshold: {failure}", err=True)
    if failures:
        raise typer.Exit(1)


@eval_app.command("run")
def eval_run(
    golden: GoldenOpt = Path("eval/golden.jsonl"),
    out: Annotated[Path, typer.Option("--out", help="folder for results.jsonl, summary.json, report.html/md")] = Path("eval/runs/latest"),
    mode: ModeOpt = None,
    top_k: TopKOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=16, help="conversations answered at once")] = 1,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="only the first N questions")] = None,
    fail_under: FailUnderOpt = None,
    index_dir: IndexOpt = None,
) -> None:
    """Run the golden set through the real pipeline (resumable: finished questions in --out are kept)."""
    from tqdm import tqdm

    from rag.evaluation import Evaluator
    from rag.golden import load_golden
    from rag.factory import build_judge, build_pipeline

    items = load_golden(golden)[:limit]
    pipeline = build_pipeline(settings_for(index_dir=index_dir, mode=mode))
    bar = tqdm(total=len(items), unit="q", disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        judge = build_judge(pipeline.settings, pipeline.llm_provider)
        summary = Evaluator(pipeline, judge).run(items, out, pipeline.default_mode, top_k=top_k, concurrency=concurrency,
                                                 progress=progress, golden=golden.name)
    finally:
        bar.close()
        pipeline.close()
    report_summary(summary, out, fail_under)


@eval_app.command("score")
def eval_score(
    golden: GoldenOpt = Path("eval/golden.jsonl"),
    answers: Annotated[Path, typer.Option("--answers", help="JSONL: id, response (or answer), optional retrieved_doc_ids, citations")] = ...,
    out: Annotated[Path, typer.Option("--out")] = Path("eval/runs/scored"),
    fail_under: FailUnderOpt = None,
    index_dir: IndexOpt = None,
) -> None:
    """Score answers produced anywhere (another system, a person) with the same metrics."""
    from rag.evaluation import Evaluator, read_answers
    from rag.golden import load_golden
    from rag.factory import build_pipeline

    summary = Evaluator(build_pipeline(settings_for(index_dir=index_dir))).score(load_golden(golden), read_answers(answers), out)
    report_summary(summary, out, fail_under)


@eval_app.command("compare")
def eval_compare(run_a: Path, run_b: Path) -> None:
    """Metric deltas between two runs and the questions that changed, regressions first."""
    from rag.evaluation import compare_runs
    from rag.report import comparison_markdown

    typer.echo(comparison_markdown(compare_runs(run_a, run_b)))


@eval_app.command("retrieval")
def eval_retrieval(
    golden: GoldenOpt = Path("eval/golden.jsonl"),
    top_k: Annotated[int, typer.Option("--top-k", min=1)] = 5,
    index_dir: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dense, BM25 and hybrid retrieval side by side on the golden set."""
    from rag.evaluation import retrieval_comparison
    from rag.golden import load_golden
    from rag.factory import build_pipeline

    table = retrieval_comparison(build_pipeline(settings_for(index_dir=index_dir)), load_golden(golden), top_k)
    if as_json:
        typer.echo(json.dumps(table))
        return
    columns = [k for k in next(iter(table.values())) if k != "n"]
    typer.echo("| method | " + " | ".join(columns) + " |")
    typer.echo("| --- " * (len(columns) + 1) + "|")
    for method, row in table.items():
        typer.echo(f"| {method} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    typer.echo(f"({next(iter(table.values()))['n']} answerable questions, top {top_k})")


@eval_app.command("export")
def eval_export(
    golden: GoldenOpt = Path("eval/golden.jsonl"),
    fmt: Annotated[str, typer.Option("--format", help="ragas (SingleTurnSample JSONL), beir (qrels TSV) or trec (run + qrels)")] = "ragas",
    out: Annotated[Path, typer.Option("--out", help="a file; for trec, a folder")] = ...,
    run: Annotated[Optional[Path], typer.Option("--run", help="trec: the `rag eval run` folder whose rankings to write")] = None,
) -> None:
    """Export the golden set (and, as TREC, a run's rankings) for other tools."""
    from rag.evaluation import RESULTS, read_results, to_trec_run
    from rag.files import atomic_write
    from rag.golden import load_golden, to_beir_qrels, to_ragas_samples, to_trec_qrels

    items = load_golden(golden)
    if fmt == "trec":
        if run is None or not (run / RESULTS).is_file():
            fail(f"--format trec needs --run RUN_DIR, a folder written by `rag eval run` (no {RESULTS} in {run})")
        out.mkdir(parents=True, exist_ok=True)
        lines = to_trec_run(read_results(run / RESULTS), run.name)
        atomic_write(out / "run.trec", "".join(line + "\n" for line in lines).encode("utf-8"))
        atomic_write(out / "qrels.trec", "".join(line + "\n" for line in to_trec_qrels(items)).encode("utf-8"))
        typer.echo(f"wrote {out / 'run.trec'} ({len(lines)} lines) and {out / 'qrels.trec'}")
        return
    if fmt == "ragas":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in to_ragas_samples(items))
    elif fmt == "beir":
        text = "\n".join(to_beir_qrels(items)) + "\n"
    else:
        fail(f"unknown --format {fmt!r}; use ragas, beir or trec")
    atomic_write(out, text.encode("utf-8"))
    typer.echo(f"wrote {len(items)} questions to {out}")


@app.command()
def api(
    host: Annotated[Optional[str], typer.Option("--host", help="bind address (RAG_HOST, default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port (RAG_API_PORT, default 8000)")] = None,
    index_dir: IndexOpt = None,
) -> None:
    """Serve the OpenAI-compatible chat API (/v1) and the MCP server (/mcp, streamable HTTP)."""
    import uvicorn

    from rag.api import create_api_app
    from rag.factory import build_pipeline

    settings = settings_for(host=host, api_port=port, index_dir=index_dir)
    pipeline = build_pipeline(settings)
    pipeline.warm_up()
    typer.echo(f"OpenAI-compatible API at http://{settings.host}:{settings.api_port}/v1, MCP at /mcp  (Ctrl-C to stop)")
    try:
        uvicorn.run(create_api_app(pipeline), host=settings.host, port=settings.api_port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        pipeline.close()


@app.command()
def mcp(index_dir: IndexOpt = None) -> None:
    """Serve the MCP server over stdio, for an MCP client's configuration (stdout is the protocol)."""
    from rag.factory import build_pipeline
    from rag.mcp_server import build_mcp_server

    pipeline = build_pipeline(settings_for(index_dir=index_dir))
    try:
        build_mcp_server(pipeline).run("stdio")
    finally:
        pipeline.close()


def add_registered_commands() -> None:
    """Commands that live outside the library (the chat app's `rag ui`, the benchmarks' `rag bench`)
    register under the `rag.commands` entry point group: the library never imports them."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="rag.commands"):
        app.command(name=entry.name)(entry.load())


def run() -> None:
    """Entry point: one clear line for every known failure, never a traceback."""
    try:
        add_registered_commands()
        code = app(standalone_mode=False)
    except RagError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the CLI boundary: log the traceback, show one line
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        log.info("unexpected error", exc_info=True)
        typer.echo(f"error: unexpected {exc.__class__.__name__}: {exc} (run with -v for details)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
