"""TabularARGN as LangChain tools: paths in, paths and metrics out, all inside the workspace.

Each tool returns one JSON object as text. Bad paths, unknown columns and
oversized requests come back to the model as tool errors instead of crashing
the agent. Row, epoch and time limits keep an agent from starting jobs that
would hold the machine for hours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field

from synthgraph.tabular import TabularARGN, quality_report
from synthgraph.tools.io import InputError, read_table, write_json, write_table
from synthgraph.tools.workspace import confine, workspace_root

MAX_ROWS = 200_000
MAX_EPOCHS = 200
MAX_MINUTES = 60.0


def _relative(path: Path) -> str:
    return str(path.relative_to(workspace_root()))


def _tool_errors(error: Exception) -> ToolException:
    return ToolException(f"{type(error).__name__}: {error}")


class FitArgs(BaseModel):
    """Arguments of `fit_tabular_model` (paths are relative to the workspace)."""

    data_path: str = Field(description="Training table (.csv, .parquet or .jsonl).")
    model_dir: str = Field(description="Folder to write the model to.")
    context_path: str | None = Field(
        default=None, description="Optional context table, one row per entity."
    )
    context_key: str | None = Field(
        default=None,
        description="Key column linking event rows to entities; makes the model sequential.",
    )
    max_epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS)
    max_minutes: float = Field(default=10.0, gt=0, le=MAX_MINUTES)
    seed: int = Field(default=0, description="Seed for reproducible training.")


def fit_tabular_model(
    data_path: str,
    model_dir: str,
    context_path: str | None = None,
    context_key: str | None = None,
    max_epochs: int = 20,
    max_minutes: float = 10.0,
    seed: int = 0,
) -> str:
    """Train a TabularARGN on a table (and optional context) and save it."""
    try:
        out = confine(model_dir)  # outputs first: a refused path costs no work
        data = read_table(confine(data_path), flat=True)
        context = read_table(confine(context_path), flat=True) if context_path else None
        model = TabularARGN(max_epochs=max_epochs, max_minutes=max_minutes, seed=seed)
        model.fit(data, context=context, context_key=context_key)
        model.save(out)
    except (InputError, ValueError, KeyError, OSError) as error:
        raise _tool_errors(error) from error
    parts = model.summary.get("flat") or model.summary.get("events", {})
    return json.dumps(
        {
            "model_dir": _relative(out),
            "rows": len(data),
            "columns": list(map(str, data.columns)),
            "sequential": model.is_sequential,
            "epochs": parts.get("epochs"),
            "stop_reason": parts.get("stop_reason"),
            "seconds": parts.get("seconds"),
        }
    )


class GenerateArgs(BaseModel):
    """Arguments of `generate_synthetic_table`."""

    model_dir: str = Field(description="Folder of a model saved by fit_tabular_model.")
    output_path: str = Field(
        description="Where the synthetic table goes (.csv, .parquet or .jsonl)."
    )
    rows: int = Field(
        default=1000,
        ge=1,
        le=MAX_ROWS,
        description="Rows (flat) or entities (sequential) to generate.",
    )
    seed_path: str | None = Field(
        default=None,
        description="Optional table of fixed values: one output row per seed row, seed cells kept "
        "(flat models), or context rows to generate events for (sequential models).",
    )
    temperature: float = Field(default=1.0, gt=0, le=5.0)
    top_p: float = Field(default=1.0, gt=0, le=1.0)
    seed: int | None = Field(default=None, description="Seed for reproducible samples.")


def generate_synthetic_table(
    model_dir: str,
    output_path: str,
    rows: int = 1000,
    seed_path: str | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> str:
    """Sample synthetic rows from a saved model, optionally conditioned on seed values."""
    try:
        out = confine(output_path)
        model = TabularARGN.load(confine(model_dir))
        seed_frame = read_table(confine(seed_path), flat=True) if seed_path else None
        if seed_frame is not None and len(seed_frame) > MAX_ROWS:
            raise ValueError(f"the seed table has {len(seed_frame)} rows; the limit is {MAX_ROWS}")
        options: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "seed": seed}
        if model.is_sequential:
            synthetic = model.sample(
                rows if seed_frame is None else None, context=seed_frame, **options
            )
        else:
            synthetic = model.sample(
                rows if seed_frame is None else None, seed_data=seed_frame, **options
            )
        write_table(synthetic, out)
    except (InputError, ValueError, KeyError, OSError) as error:
        raise _tool_errors(error) from error
    return json.dumps(
        {"output_path": _relative(out), "rows": len(synthetic), "columns": list(synthetic.columns)}
    )


class ImputeArgs(BaseModel):
    """Arguments of `impute_table`."""

    model_dir: str = Field(description="Folder of a flat model saved by fit_tabular_model.")
    data_path: str = Field(description="Table with missing cells to fill.")
    output_path: str = Field(description="Where the completed table goes.")
    seed: int | None = Field(default=None, description="Seed for reproducible imputations.")


def impute_table(model_dir: str, data_path: str, output_path: str, seed: int | None = None) -> str:
    """Fill the missing cells of a table with values drawn from the model; known cells stay."""
    try:
        out = confine(output_path)
        model = TabularARGN.load(confine(model_dir))
        data = read_table(confine(data_path), flat=True)
        if len(data) > MAX_ROWS:
            raise ValueError(f"the table has {len(data)} rows; the limit is {MAX_ROWS}")
        imputed = model.impute(data, seed=seed)
        write_table(imputed, out)
    except (InputError, ValueError, KeyError, OSError, RuntimeError) as error:
        raise _tool_errors(error) from error
    return json.dumps(
        {
            "output_path": _relative(out),
            "rows": len(imputed),
            "filled_cells": int(data.isna().sum().sum() - imputed.isna().sum().sum()),
        }
    )


class ReportArgs(BaseModel):
    """Arguments of `tabular_quality_report`."""

    synthetic_path: str = Field(description="The synthetic table.")
    training_path: str = Field(description="The table the model was trained on.")
    holdout_path: str | None = Field(
        default=None, description="Real rows not used in training; needed for the DCR share."
    )
    report_path: str | None = Field(
        default=None, description="Optional JSON file for the full report."
    )


def tabular_quality_report(
    synthetic_path: str,
    training_path: str,
    holdout_path: str | None = None,
    report_path: str | None = None,
) -> str:
    """Accuracy (univariate, bivariate) and DCR share of a synthetic table."""
    try:
        report_file = confine(report_path) if report_path else None
        synthetic = read_table(confine(synthetic_path), flat=True)
        training = read_table(confine(training_path), flat=True)
        holdout = read_table(confine(holdout_path), flat=True) if holdout_path else None
        report = quality_report(synthetic, training, holdout)
        if report_file:
            write_json(report, report_file)
    except (InputError, ValueError, KeyError, OSError) as error:
        raise _tool_errors(error) from error
    summary = {"accuracy": report["accuracy"], "dcr_share": report.get("dcr", {}).get("share")}
    return json.dumps(summary)


def _explain_invalid_arguments(error: Exception) -> str:
    """Tell the model which argument broke which limit, so it can correct the call."""
    return f"invalid arguments: {error}"


def tabular_tools() -> list[StructuredTool]:
    """The four TabularARGN tools, with errors returned to the model as text."""
    specs = [
        (
            fit_tabular_model,
            FitArgs,
            "Train a TabularARGN synthetic-data model on a table in the workspace and save it. "
            "With context_key the table is an event table (many rows per entity).",
        ),
        (
            generate_synthetic_table,
            GenerateArgs,
            "Generate a synthetic table from a saved TabularARGN model; a seed table fixes "
            "values of some columns (conditional generation).",
        ),
        (
            impute_table,
            ImputeArgs,
            "Fill missing cells of a table with a saved flat TabularARGN model, keeping known cells.",
        ),
        (
            tabular_quality_report,
            ReportArgs,
            "Score a synthetic table against its training data: accuracy (1 - total variation "
            "distance of binned marginals) and, with a holdout, the DCR share (about 0.5 is private).",
        ),
    ]
    return [
        StructuredTool.from_function(
            func=func,
            name=func.__name__,
            description=description,
            args_schema=schema,
            handle_tool_error=True,
            handle_validation_error=_explain_invalid_arguments,
        )
        for func, schema, description in specs
    ]
