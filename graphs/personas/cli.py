"""`synthgraph personas`: texts → personas → expansions → dedup (the job is `job.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgraph.graphs import cli_support
from synthgraph.graphs.personas.graph import DEFAULT_RELATIONS, DedupMethod, PersonasContext
from synthgraph.graphs.personas.job import personas_job

DEPRECATED_FLAGS: dict[str, str] = {"--max-records": "--limit"}


@cli_support.with_run_options
def personas_command(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="A folder of .txt/.md files, a JSONL, CSV or Parquet file.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<id>).")
    ] = None,
    expand_rounds: Annotated[
        int, typer.Option(min=0, max=6, help="Persona-to-Persona rounds.")
    ] = 1,
    relations: Annotated[
        str, typer.Option(help="Comma-separated relations to expand along.")
    ] = ",".join(DEFAULT_RELATIONS),
    per_text: Annotated[
        int,
        typer.Option(
            "--per-text",
            min=1,
            max=4,
            help="Personas per text: who would read, write, like, dislike it.",
        ),
    ] = 1,
    expand_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Expand at most this many personas per round and text."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N input texts.")
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="Text column/field of JSONL, CSV or Parquet input.")
    ] = "text",
    id_field: Annotated[
        str, typer.Option(help="Id column/field (default: content-derived ids).")
    ] = "id",
    dedup: Annotated[
        DedupMethod,
        typer.Option(help="Dedup method: MinHash then embeddings (both), one of them, or none."),
    ] = "both",
    namespace: Annotated[str, typer.Option(help="Dedup memory shared by runs.")] = "personas",
    threshold: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Dedup threshold (both stages).")
    ] = 0.9,
    temperature: Annotated[
        float,
        typer.Option(min=0.0, max=2.0, help="0: the same text gives the same persona on rerun."),
    ] = 0.0,
    *,
    run_options: cli_support.RunOptions,
) -> None:
    """Infer personas from texts, expand them through relations, dedup them (PersonaHub)."""
    names = [r.strip() for r in relations.split(",") if r.strip()]
    if expand_rounds and not names:
        cli_support.fail(
            "--relations is empty: name at least one relation (e.g. colleague,student)"
        )
    context = PersonasContext(
        personas_per_text=per_text, relations=names, expand_rounds=expand_rounds,
        expand_limit=expand_limit, dedup=dedup, namespace=namespace, threshold=threshold,
        temperature=temperature,
    )  # fmt: skip
    try:
        summary = personas_job(
            source, out, context=None if cli_support.resuming_as_started(ctx, run_options.resume) else context,
            limit=limit, resume=run_options.resume, retry_rejects=run_options.retry_rejects, dedupe_ids=run_options.dedupe_ids,
            budget=run_options.budget,
            text_field=text_field, id_field=id_field,
        )  # fmt: skip
    except ValueError as error:  # the root prints InputError & co.; a bad --namespace is bare
        cli_support.fail(str(error))
    cli_support.console.print(
        f"[green]done[/] {summary.run_dir}: {summary.kept} personas kept, {summary.dropped} dropped"
    )
    cli_support.stdout.print(
        cli_support.table("dedup", ["stage", "checked", "kept", "dropped"], summary.stages)
    )
    rows = [
        ["texts", summary.texts], ["generated", summary.generated], ["kept", summary.kept],
        ["dropped", summary.dropped], ["rejects", summary.rejects],
        *[[f"time: {stage}", f"{seconds:.1f} s"] for stage, seconds in summary.seconds.items()],
    ]  # fmt: skip
    cli_support.stdout.print(cli_support.table("personas", ["", "count"], rows))
    cli_support.report_run(summary.run_dir, run_options)
