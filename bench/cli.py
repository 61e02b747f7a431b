"""`rag bench`, registered with the `rag` command through the `rag.commands` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rag.cli import IndexOpt, fail, settings_for

SCENARIO_HELP = "startup, index, incremental, retrieval, scale, answer, concurrency, distributed (repeatable; default all)"
DEVELOPMENT_DOCS = "eval/collections/*/docs"


def bench(
    scenario: Annotated[Optional[list[str]], typer.Option("--scenario", help=SCENARIO_HELP)] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for bench.json and the plots")] = Path("bench/out"),
    sizes: Annotated[str, typer.Option("--sizes", help="collection sizes for the scale scenario")] = "100000,1000000",
    golden: Annotated[Path, typer.Option("--golden", help="questions for the retrieval and answer scenarios")] = Path("eval/golden.jsonl"),
    collection: Annotated[Optional[list[Path]], typer.Option(
        "--collection", help=f"document folders the index scenario indexes together (repeatable; default {DEVELOPMENT_DOCS})")] = None,
    index_dir: IndexOpt = None,
) -> None:
    """Measure speed and memory on this machine (medians of repeated runs, bare libraries beside)."""
    from bench.harness import SCENARIOS, format_table, run_bench
    from rag.store import current_version_dir

    chosen = scenario or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        fail(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not golden.is_file():
        fail(f"no golden set at {golden}; pass --golden FILE")
    settings = settings_for(index_dir=index_dir)
    current_version_dir(settings.index_dir)  # a clear error before any scenario starts
    collections = collection or sorted(Path().glob(DEVELOPMENT_DOCS))
    missing = [str(c) for c in collections if not c.is_dir()]
    if missing:
        fail(f"not a folder: {', '.join(missing)}")
    results = run_bench(chosen, out, settings.index_dir, settings.seeds_dir, golden, settings.embedding_model, sizes, collections)
    typer.echo(format_table(results))
    typer.echo(f"-> {out}/bench.json and plots")
