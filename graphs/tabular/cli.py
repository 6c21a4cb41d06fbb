"""`synthgraph tabular`: fit a TabularARGN, sample, impute and score synthetic tables.

Tables are CSV, Parquet or JSONL by extension. The CLI takes any path (the user
is trusted); the agent tools in `graphs/tabular/tool.py` confine theirs to the
workspace. Each command parses its options, runs its job (`graphs/tabular/job.py`) and
prints the summary; bad input ends it with one line (the root command's `UserErrorsGroup`).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from synthgraph.graphs.cli_support import fail, progress, stdout, table
from synthgraph.graphs.tabular.job import (
    DEFAULT_EPOCHS,
    RareMode,
    fit_job,
    impute_job,
    report_job,
    sample_job,
)

# Old spelling → new (the root command rewrites the old one, with a warning). The seed table
# of `sample` was `--seed PATH`; it is `--input PATH` now, and `--seed` the random seed.
DEPRECATED_FLAGS = {"--random-seed": "--seed", "--json": "--out"}

app = typer.Typer(
    help="TabularARGN synthetic tables: fit, sample, impute, report.", no_args_is_help=True
)

Seed = Annotated[int | None, typer.Option(help="Random seed for reproducible results.")]


@app.command("fit")
def fit_command(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Training table (flat, or events with --key).")
    ],
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder to save the model in.")],
    context: Annotated[Path | None, typer.Option(help="Context table: one row per entity.")] = None,
    key: Annotated[
        str | None, typer.Option(help="Entity key column of DATA (and of --context).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = DEFAULT_EPOCHS,
    max_minutes: Annotated[
        float | None, typer.Option(help="Wall-clock limit for training.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for reproducible training.")] = 0,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (default: torch's choice).")
    ] = None,
    constraints: Annotated[
        Path | None,
        typer.Option(help="JSON list of constraints every sample keeps (flat tables)."),
    ] = None,
    rare: Annotated[
        RareMode,
        typer.Option(
            help="A category seen under 5 times comes back as: a frequent one drawn in "
            "proportion (sample), the marker _RARE_ (token), or missing."
        ),
    ] = "sample",
) -> None:
    """Train a TabularARGN on DATA and save it to --model (safetensors + JSON)."""
    if context is not None and key is None:
        fail("--context needs --key")
    with ExitStack() as shown:
        bar: Progress | None = None
        tasks: dict[str, TaskID] = {}

        def report(event: dict[str, Any]) -> None:
            nonlocal bar
            stage = event.get("stage", "flat")
            if "step" not in event:
                return
            if bar is None:  # from the first step on: input refused before it stays one line
                bar = shown.enter_context(progress())
            total = event["max_epochs"] * event["steps_per_epoch"]
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"fit {stage}", total=total)
            done = (event["epoch"] - 1) * event["steps_per_epoch"] + event["step"]
            bar.update(
                tasks[stage],
                completed=done,
                description=f"fit {stage} (loss {event['train_loss']:.3f})",
            )

        summary = fit_job(
            data,
            model,
            context=context,
            key=key,
            epochs=epochs,
            max_minutes=max_minutes,
            seed=seed,
            threads=threads,
            progress=report,
            constraints=constraints,
            rare=rare,
        )
    rows = [
        [
            part,
            s["epochs"],
            s["best_epoch"],
            f"{s['best_val_loss']:.4f}",
            s["stop_reason"],
            s["seconds"],
        ]
        for part, s in summary.parts.items()
    ]
    stdout.print(
        table(
            f"TabularARGN fit of {data.name}",
            ["part", "epochs", "best", "val loss", "stop", "s"],
            rows,
        )
    )
    _print_violations(f"constraint breaches in {data.name} (kept)", summary.violations)
    stdout.print(f"model → {model}")


def _print_violations(title: str, violations: dict[str, int]) -> None:
    if violations:
        rows = [[label, f"{count:,}"] for label, count in violations.items()]
        stdout.print(table(title, ["constraint", "rows"], rows))


@app.command("sample")
def sample_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved model folder.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Synthetic table (.csv, .parquet, .jsonl).")
    ],
    rows: Annotated[
        int | None, typer.Option(min=1, help="Rows (flat) or entities (sequential).")
    ] = None,
    given: Annotated[
        Path | None,
        typer.Option("--input", help="Table of fixed values (flat) or context rows (sequential)."),
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Seed = None,
) -> None:
    """Generate synthetic rows, unconditionally (--rows) or for each row of --input."""
    if (rows is None) == (given is None):
        fail("give exactly one of --rows and --input")
    summary = sample_job(
        model, out, rows=rows, given=given, temperature=temperature, top_p=top_p, seed=seed
    )
    _print_violations(f"constraint breaches in {out.name}", summary.violations)
    stdout.print(f"{summary.rows:,} rows → {out}")


@app.command("impute")
def impute_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved flat model folder.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Table with missing cells.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Completed table.")],
    seed: Seed = None,
) -> None:
    """Fill the missing cells of --data; known cells are kept."""
    summary = impute_job(model, data, out, seed=seed)
    stdout.print(f"{summary.filled_cells:,} cells filled → {out}")


@app.command("report")
def report_command(
    synthetic: Annotated[Path, typer.Option("--synthetic", "-s", help="Synthetic table.")],
    training: Annotated[Path, typer.Option("--training", "-t", help="Training table.")],
    holdout: Annotated[
        Path | None, typer.Option("--holdout", help="Holdout table (for the DCR share).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the full report (JSON) here.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write the report as pictures: PNG plots and report.html here."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Entity key of event tables (adds sequence plots).")
    ] = None,
) -> None:
    """Accuracy (univariate, bivariate) and DCR share of a synthetic table."""
    summary = report_job(
        synthetic, training, holdout=holdout, report_path=out, html_dir=html, key=key
    )
    rows = [[name, f"{value:.4f}"] for name, value in summary.accuracy.items()]
    if summary.dcr_share is not None:
        rows.append(["DCR share", f"{summary.dcr_share:.4f}"])
    stdout.print(table(f"quality of {synthetic.name}", ["metric", "value"], rows))
    if summary.html_path is not None:
        stdout.print(f"pictures → {summary.html_path}")
    if out is not None:
        stdout.print(f"report → {out}")
    else:
        stdout.print_json(
            json.dumps({"accuracy": summary.accuracy, "dcr_share": summary.dcr_share})
        )
