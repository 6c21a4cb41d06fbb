"""`synthgraph synthesize`: personas × a task → items (the job is `job.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgraph.graphs import cli_support
from synthgraph.graphs.synthesis.graph import SynthesisContext
from synthgraph.graphs.synthesis.job import ITEMS, TASKS, few_shot_file, synthesis_job

DEPRECATED_FLAGS: dict[str, str] = {"--max-records": "--limit"}


@cli_support.with_run_options
def synthesize_command(
    ctx: typer.Context,
    personas: Annotated[
        Path, typer.Option("--personas", help="personas.jsonl (fields id, persona).")
    ],
    task: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(TASKS)} (a resume keeps the run's).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<id>).")
    ] = None,
    per_persona: Annotated[int, typer.Option(min=1, max=20, help="Items per persona.")] = 1,
    few_shot: Annotated[
        str | None,
        typer.Option(help="JSONL of example items, or 'bundled' for the shipped examples."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N personas.")] = None,
    *,
    run_options: cli_support.RunOptions,
) -> None:
    """Write task items (math, instruction, knowledge, npc, tool) from each persona's view."""
    if task is None and not run_options.resume:
        cli_support.fail(f"--task is required for a new run: one of {', '.join(TASKS)}")
    as_started = cli_support.resuming_as_started(ctx, run_options.resume)
    context = None
    if not as_started:
        task = task or SynthesisContext().task
        context = SynthesisContext(
            task=task, per_persona=per_persona, few_shot_file=few_shot_file(task, few_shot)
        )
    # An unknown task, a bad examples file or run folder: the root prints the error in one line.
    summary = synthesis_job(
        personas, out, context=context,
        limit=limit, resume=run_options.resume, retry_rejects=run_options.retry_rejects, dedupe_ids=run_options.dedupe_ids,
        budget=run_options.budget,
    )  # fmt: skip
    rows = [
        ["personas", summary.personas], ["items", summary.items], ["rejects", summary.rejects],
        *[[f"time: {stage}", f"{seconds:.1f} s"] for stage, seconds in summary.seconds.items()],
    ]  # fmt: skip
    cli_support.console.print(f"[green]done[/] {summary.run_dir}/{ITEMS}")
    cli_support.stdout.print(cli_support.table(f"synthesize {summary.task}", ["", "count"], rows))
    cli_support.report_run(summary.run_dir, run_options)
