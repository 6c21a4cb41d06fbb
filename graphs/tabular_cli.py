"""`synthgraph tabular`: fit a TabularARGN, sample, impute and score synthetic tables.

Tables are CSV, Parquet or JSONL by extension. The CLI takes any path (the user
is trusted); the agent tools in `tools/tabular_tools.py` confine theirs to the
workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from synthgraph.graphs.cli_support import fail, progress, stdout, table
from synthgraph.tabular import TabularARGN, quality_report
from synthgraph.tabular.argn import META_FILE
from synthgraph.tools.io import InputError, read_table, write_json, write_table

app = typer.Typer(
    help="TabularARGN synthetic tables: fit, sample, impute, report.", no_args_is_help=True
)


def _read(path: Path, need_rows: bool = False) -> pd.DataFrame:
    """A flat table; with `need_rows`, an empty one is an `InputError` too."""
    frame = read_table(path, flat=True)
    if need_rows and frame.empty:
        raise InputError(f"{path}: no rows")
    return frame


def _load(model: Path) -> TabularARGN:
    """A saved model; a folder that holds none is an `InputError`."""
    if not (model / META_FILE).is_file():
        raise InputError(f"{model}: no saved model here (no {META_FILE}; see `tabular fit`)")
    try:
        return TabularARGN.load(model)
    except (ValueError, KeyError, OSError) as error:
        raise InputError(f"{model}: not a readable model ({error})") from error


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
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = 100,
    max_minutes: Annotated[
        float | None, typer.Option(help="Wall-clock limit for training.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for reproducible training.")] = 0,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (default: torch's choice).")
    ] = None,
) -> None:
    """Train a TabularARGN on DATA and save it to --model (safetensors + JSON)."""
    if context is not None and key is None:
        fail("--context needs --key")
    frame = _read(data, need_rows=True)
    context_frame = _read(context, need_rows=True) if context is not None else None
    argn = TabularARGN(max_epochs=epochs, max_minutes=max_minutes, seed=seed, num_threads=threads)
    with progress() as bar:
        tasks: dict[str, Any] = {}

        def report(event: dict[str, Any]) -> None:
            stage = event.get("stage", "flat")
            if "step" not in event:
                return
            total = event["max_epochs"] * event["steps_per_epoch"]
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"fit {stage}", total=total)
            done = (event["epoch"] - 1) * event["steps_per_epoch"] + event["step"]
            bar.update(
                tasks[stage],
                completed=done,
                description=f"fit {stage} (loss {event['train_loss']:.3f})",
            )

        try:
            argn.fit(frame, context=context_frame, context_key=key, progress=report)
        except ValueError as error:
            fail(str(error))
    argn.save(model)
    rows = [
        [
            stage,
            s["epochs"],
            s["best_epoch"],
            f"{s['best_val_loss']:.4f}",
            s["stop_reason"],
            s["seconds"],
        ]
        for stage, s in argn.summary.items()
    ]
    stdout.print(
        table(
            f"TabularARGN fit of {data.name}",
            ["part", "epochs", "best", "val loss", "stop", "s"],
            rows,
        )
    )
    stdout.print(f"model → {model}")


@app.command("sample")
def sample_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved model folder.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Synthetic table (.csv, .parquet, .jsonl).")
    ],
    rows: Annotated[
        int | None, typer.Option(min=1, help="Rows (flat) or entities (sequential).")
    ] = None,
    seed: Annotated[
        Path | None,
        typer.Option(
            "--seed", help="Seed table: fixed values (flat) or context rows (sequential)."
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    random_seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples.")] = None,
) -> None:
    """Generate synthetic rows, unconditionally (--rows) or for each row of --seed."""
    if (rows is None) == (seed is None):
        fail("give exactly one of --rows and --seed")
    argn = _load(model)
    seed_frame = _read(seed) if seed is not None else None
    options: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "seed": random_seed}
    try:
        if argn.is_sequential:
            synthetic = argn.sample(rows, context=seed_frame, **options)
        else:
            synthetic = argn.sample(rows, seed_data=seed_frame, **options)
    except ValueError as error:
        fail(str(error))
    write_table(synthetic, out)
    stdout.print(f"{len(synthetic):,} rows → {out}")


@app.command("impute")
def impute_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A saved flat model folder.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Table with missing cells.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Completed table.")],
    random_seed: Annotated[
        int | None, typer.Option(help="Seed for reproducible imputations.")
    ] = None,
) -> None:
    """Fill the missing cells of --data; known cells are kept."""
    frame = _read(data)
    try:
        imputed = _load(model).impute(frame, seed=random_seed)
    except (ValueError, RuntimeError) as error:
        fail(str(error))
    write_table(imputed, out)
    filled = int(frame.isna().sum().sum() - imputed.isna().sum().sum())
    stdout.print(f"{filled:,} cells filled → {out}")


@app.command("report")
def report_command(
    synthetic: Annotated[Path, typer.Option("--synthetic", "-s", help="Synthetic table.")],
    training: Annotated[Path, typer.Option("--training", "-t", help="Training table.")],
    holdout: Annotated[
        Path | None, typer.Option("--holdout", help="Holdout table (for the DCR share).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report here.")
    ] = None,
) -> None:
    """Accuracy (univariate, bivariate) and DCR share of a synthetic table."""
    report = quality_report(
        _read(synthetic, need_rows=True),
        _read(training, need_rows=True),
        _read(holdout, need_rows=True) if holdout else None,
    )
    accuracy = report["accuracy"]
    rows = [[name, f"{value:.4f}"] for name, value in accuracy.items()]
    if "dcr" in report:
        rows.append(["DCR share", f"{report['dcr']['share']:.4f}"])
    stdout.print(table(f"quality of {synthetic.name}", ["metric", "value"], rows))
    if json_out is not None:
        write_json(report, json_out)
        stdout.print(f"report → {json_out}")
    else:
        stdout.print_json(
            json.dumps({"accuracy": accuracy, "dcr_share": report.get("dcr", {}).get("share")})
        )
