"""`synthgraph tabular`: fit a TabularARGN, sample, impute and score synthetic tables.

Tables are CSV, Parquet or JSONL by extension. The CLI takes any path (the user
is trusted); the agent tools in `graphs/tabular/tool.py` confine theirs to the
workspace. Each command parses its options, runs its job (`graphs/tabular/job.py`) and
prints the summary; bad input ends it with one line (the root command's `UserErrorsGroup`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from synthgraph.graphs.cli_support import fail, progress, stdout, table
from synthgraph.graphs.tabular import job
from synthgraph.tabular.dp import privacy_rows
from synthgraph.tools.settings import Executor, get_settings

# Old spelling → new (the root command rewrites the old one, with a warning). The seed table
# of `sample` was `--seed PATH`; it is `--input PATH` now, and `--seed` the random seed.
DEPRECATED_FLAGS = {"--random-seed": "--seed", "--json": "--out"}

app = typer.Typer(
    help="TabularARGN synthetic tables: fit, sample, impute, report.", no_args_is_help=True
)

Seed = Annotated[int | None, typer.Option(help="Random seed for reproducible results.")]


@app.command("fit")
def fit_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder to save the model in.")],
    data: Annotated[
        Path | None,
        typer.Argument(metavar="DATA", help="Training table (flat, or events with --key)."),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            help="Instead of DATA: a JSON or YAML schema of tables linked by foreign keys "
            "(multi-table; --epochs, --max-minutes, --seed and --threads apply to each table)."
        ),
    ] = None,
    context: Annotated[Path | None, typer.Option(help="Context table: one row per entity.")] = None,
    key: Annotated[
        str | None, typer.Option(help="Entity key column of DATA (and of --context).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = job.DEFAULT_EPOCHS,
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
        job.RareMode,
        typer.Option(
            help="A category seen under 5 times comes back as: a frequent one drawn in "
            "proportion (sample), the marker _RARE_ (token), or missing."
        ),
    ] = "sample",
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help="Train with differential privacy (flat tables) at this ε: DP-SGD for the "
            "planned --epochs on every row, private value analysis (10% of the budget).",
        ),
    ] = None,
    dp_delta: Annotated[
        float, typer.Option(help="DP δ: keep it well under 1 / rows.")
    ] = job.DEFAULT_DELTA,
    dp_max_grad_norm: Annotated[
        float, typer.Option(help="DP-SGD per-row gradient clip norm.")
    ] = job.DEFAULT_MAX_GRAD_NORM,
    executor: Annotated[
        Executor | None,
        typer.Option(
            help="thread or async: train in this process; ray: data-parallel on Ray Train "
            "workers, DDP on CPU (SYNTHGRAPH_RAY_ADDRESS, else Ray on this machine). "
            "Default: SYNTHGRAPH_EXECUTOR.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Ray Train workers, one CPU each (with --executor ray; default 2)."
        ),
    ] = None,
) -> None:
    """Train a TabularARGN on DATA (or one per table of --schema) and save it to --model."""
    if (data is None) == (schema is None):
        fail("give exactly one of DATA and --schema")
    on_ray = (executor or get_settings().executor) == "ray"
    if workers is not None and not on_ray:
        fail("--workers is for --executor ray")
    if context is not None and key is None:
        fail("--context needs --key")
    if dp_epsilon and on_ray:
        fail("a differentially private fit trains in one process: no --executor ray")
    if schema is not None:
        if context is not None or key is not None or constraints is not None or dp_epsilon:
            fail(
                "--schema takes its keys from the schema: no --context, --key, --constraints or --dp-epsilon"
            )
        if executor == "ray":
            fail("--schema trains in this process: no --executor ray")
        _fit_schema(schema, model, epochs, max_minutes, seed, threads)
        return
    assert data is not None
    with _fit_progress() as report:
        summary = job.fit_job(
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
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            dp_max_grad_norm=dp_max_grad_norm,
            executor="ray" if on_ray else "local",
            workers=(workers or 2) if on_ray else 1,
        )
    rows = [
        [
            part,
            s["epochs"],
            s["best_epoch"],
            "–" if s["best_val_loss"] is None else f"{s['best_val_loss']:.4f}",
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
    if summary.privacy is not None:
        stdout.print(
            table("differential privacy", ["measure", "value"], privacy_rows(summary.privacy))
        )
    stdout.print(f"model → {model}")


@contextmanager
def _fit_progress() -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar per model part (per table and part, for a schema), from the first step."""
    with ExitStack() as shown:
        bar: Progress | None = None
        tasks: dict[str, TaskID] = {}

        def report(event: dict[str, Any]) -> None:
            nonlocal bar
            stage = " ".join(filter(None, [event.get("table"), event.get("stage", "flat")]))
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

        yield report


def _fit_schema(
    schema: Path,
    model: Path,
    epochs: int,
    max_minutes: float | None,
    seed: int,
    threads: int | None,
) -> None:
    with _fit_progress() as report:
        summary = job.fit_schema_job(
            schema,
            model,
            epochs=epochs,
            max_minutes=max_minutes,
            seed=seed,
            threads=threads,
            progress=report,
        )
    rows = [
        [name, t["parent"] or "–", f"{t['rows']:,}", f"{summary.orphans.get(name, 0):,}",
         t["epochs"], t["stop_reason"], t["seconds"]]
        for name, t in summary.tables.items()
    ]  # fmt: skip
    columns = ["table", "parent", "rows", "orphans", "epochs", "stop", "s"]
    stdout.print(table(f"TabularARGN fit of {schema.name}", columns, rows))
    stdout.print(f"model → {model}")


def _print_violations(title: str, violations: dict[str, int]) -> None:
    if violations:
        rows = [[label, f"{count:,}"] for label, count in violations.items()]
        stdout.print(table(title, ["constraint", "rows"], rows))


@app.command("sample")
def sample_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved model folder.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Synthetic table (.csv, .parquet, .jsonl); for a multi-table model, a folder "
            "that gets <table>.csv for each table.",
        ),
    ],
    rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Rows (flat), entities (sequential) or rows per root table (multi-table; "
            "default: as many as the source).",
        ),
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
    if job.is_schema_model(model):
        if given is not None:
            fail("--input is for single-table models; a multi-table model samples every table")
        _sample_schema(model, out, rows, temperature, top_p, seed)
        return
    if (rows is None) == (given is None):
        fail("give exactly one of --rows and --input")
    summary = job.sample_job(
        model, out, rows=rows, given=given, temperature=temperature, top_p=top_p, seed=seed
    )
    _print_violations(f"constraint breaches in {out.name}", summary.violations)
    stdout.print(f"{summary.rows:,} rows → {out}")


def _sample_schema(
    model: Path, out: Path, rows: int | None, temperature: float, top_p: float, seed: int | None
) -> None:
    summary = job.sample_schema_job(
        model, out, rows=rows, temperature=temperature, top_p=top_p, seed=seed
    )
    lines = []
    for name, check in summary.integrity.items():
        synthetic, source = check.child_counts, check.source_child_counts
        per_parent = "–"
        if synthetic is not None:
            known = source or {}
            per_parent = " · ".join(
                f"{q} {synthetic[q]:.2f} ({known[q]:.2f})"
                if q in known
                else f"{q} {synthetic[q]:.2f}"
                for q in ("mean", "p50", "p90", "max")
            )
        lines.append(
            [name, f"{check.rows:,}", f"{check.orphans:,}", f"{check.duplicate_keys:,}", per_parent]
        )
    columns = ["table", "rows", "orphans", "repeated keys", "children per parent (source)"]
    stdout.print(table(f"multi-table sample → {out}", columns, lines))


@app.command("impute")
def impute_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved flat model folder.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Table with missing cells.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Completed table.")],
    seed: Seed = None,
) -> None:
    """Fill the missing cells of --data; known cells are kept."""
    summary = job.impute_job(model, data, out, seed=seed)
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
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="The model that made it: adds its privacy record."),
    ] = None,
) -> None:
    """Accuracy (univariate, bivariate) and DCR share of a synthetic table."""
    summary = job.report_job(
        synthetic,
        training,
        holdout=holdout,
        report_path=out,
        html_dir=html,
        key=key,
        model_dir=model,
    )
    rows = [list(row) for row in privacy_rows(summary.privacy)] if model is not None else []
    rows += [[name, f"{value:.4f}"] for name, value in summary.accuracy.items()]
    if summary.dcr_share is not None:
        rows.append(["DCR share", f"{summary.dcr_share:.4f}"])
    stdout.print(table(f"quality of {synthetic.name}", ["metric", "value"], rows))
    if summary.html_path is not None:
        stdout.print(f"pictures → {summary.html_path}")
    if out is not None:
        stdout.print(f"report → {out}")
    else:
        shown: dict[str, Any] = {"accuracy": summary.accuracy, "dcr_share": summary.dcr_share}
        if model is not None:
            shown["privacy"] = summary.privacy
        stdout.print_json(json.dumps(shown))
