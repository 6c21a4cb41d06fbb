"""The tabular jobs as agent tools: paths in, paths and metrics out, all inside the workspace.

Each factory builds one tool with `agent_tool`; its result is a dict with workspace-relative
paths. Bad paths, unknown columns and oversized requests come back to the model as tool errors
instead of crashing the agent. Row, epoch and time limits keep an agent from starting jobs
that would hold the machine for hours.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.tabular import job
from synthgraph.graphs.tabular.graph import DEFAULT_MINUTES, DEFAULT_ROWS, confine_given
from synthgraph.tools.agent_tool import agent_tool, workspace_relative
from synthgraph.tools.io import InputError
from synthgraph.tools.workspace import confine, workspace_root

MAX_ROWS = 200_000
MAX_EPOCHS = 200
MAX_MINUTES = 60.0


class FitArgs(BaseModel):
    """Arguments of `fit_tabular_model` (paths are relative to the workspace)."""

    data_path: str | None = Field(
        default=None, description="Training table (.csv, .parquet or .jsonl)."
    )
    model_dir: str = Field(description="Folder to write the model to.")
    schema_path: str | None = Field(
        default=None,
        description="Instead of data_path: a JSON or YAML schema of tables linked by foreign "
        "keys (multi-table; table paths relative to it, inside the workspace).",
    )
    context_path: str | None = Field(
        default=None, description="Optional context table, one row per entity."
    )
    context_key: str | None = Field(
        default=None,
        description="Key column linking event rows to entities; makes the model sequential.",
    )
    max_epochs: int = Field(default=job.DEFAULT_EPOCHS, ge=1, le=MAX_EPOCHS)
    max_minutes: float = Field(default=DEFAULT_MINUTES, gt=0, le=MAX_MINUTES)
    seed: int = Field(default=0, description="Random seed for reproducible training.")
    constraints_path: str | None = Field(
        default=None,
        description="Optional JSON list of rules sampling must keep (value_set, range, "
        "inequality, fixed_combinations, sum); flat tables only.",
    )
    dp_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="Train with differential privacy at this epsilon (flat tables, no "
        "constraints): DP-SGD for max_epochs on every row, private value analysis.",
    )
    dp_delta: float = Field(default=job.DEFAULT_DELTA, gt=0, lt=1, description="DP delta.")
    dp_max_grad_norm: float = Field(
        default=job.DEFAULT_MAX_GRAD_NORM, gt=0, description="DP-SGD per-row gradient clip norm."
    )


def fit_tabular_model(
    model_dir: str,
    data_path: str | None = None,
    schema_path: str | None = None,
    context_path: str | None = None,
    context_key: str | None = None,
    max_epochs: int = job.DEFAULT_EPOCHS,
    max_minutes: float = DEFAULT_MINUTES,
    seed: int = 0,
    constraints_path: str | None = None,
    dp_epsilon: float | None = None,
    dp_delta: float = job.DEFAULT_DELTA,
    dp_max_grad_norm: float = job.DEFAULT_MAX_GRAD_NORM,
) -> dict[str, Any]:
    """Train a TabularARGN on a table (and optional context), or one per table of a schema,
    and save it."""
    out = confine(model_dir)  # outputs first: a refused path costs no work
    if (data_path is None) == (schema_path is None):
        raise InputError("give exactly one of data_path and schema_path")
    if schema_path is not None:
        schema_summary = job.fit_schema_job(
            confine(schema_path),
            out,
            epochs=max_epochs,
            max_minutes=max_minutes,
            seed=seed,
            within=workspace_root(),
        )
        return job.as_dict(schema_summary, workspace_relative)
    summary = job.fit_job(
        confine(data_path),
        out,
        context=confine_given(context_path),
        key=context_key,
        epochs=max_epochs,
        max_minutes=max_minutes,
        seed=seed,
        constraints=confine_given(constraints_path),
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        dp_max_grad_norm=dp_max_grad_norm,
    )
    return job.as_dict(summary, workspace_relative)


class GenerateArgs(BaseModel):
    """Arguments of `generate_synthetic_table`."""

    model_dir: str = Field(description="Folder of a model saved by fit_tabular_model.")
    output_path: str = Field(
        description="Where the synthetic table goes (.csv, .parquet or .jsonl); for a "
        "multi-table model, a folder that gets <table>.csv per table."
    )
    rows: int = Field(
        default=DEFAULT_ROWS,
        ge=1,
        le=MAX_ROWS,
        description="Rows (flat) or entities (sequential) to generate.",
    )
    input_path: str | None = Field(
        default=None,
        description="Optional table of fixed values: one output row per input row, its cells "
        "kept (flat models), or context rows to generate events for (sequential models); "
        "rows is then ignored.",
    )
    temperature: float = Field(default=1.0, gt=0, le=5.0)
    top_p: float = Field(default=1.0, gt=0, le=1.0)
    seed: int | None = Field(default=None, description="Random seed for reproducible samples.")


def generate_synthetic_table(
    model_dir: str,
    output_path: str,
    rows: int = DEFAULT_ROWS,
    input_path: str | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> dict[str, Any]:
    """Sample synthetic rows from a saved model, optionally conditioned on an input table; a
    multi-table model writes <table>.csv per table into output_path (a folder)."""
    out, model = confine(output_path), confine(model_dir)
    if job.is_schema_model(model):
        if input_path is not None:
            raise InputError("input_path is for single-table models")
        tables = job.sample_schema_job(
            model, out, rows=rows, temperature=temperature, top_p=top_p, seed=seed
        )
        return job.as_dict(tables, workspace_relative)
    summary = job.sample_job(
        model,
        out,
        rows=rows,
        given=confine_given(input_path),
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        max_rows=MAX_ROWS,
    )
    return job.as_dict(summary, workspace_relative)


class ImputeArgs(BaseModel):
    """Arguments of `impute_table`."""

    model_dir: str = Field(description="Folder of a flat model saved by fit_tabular_model.")
    data_path: str = Field(description="Table with missing cells to fill.")
    output_path: str = Field(description="Where the completed table goes.")
    seed: int | None = Field(default=None, description="Random seed for reproducible imputations.")


def impute_table(
    model_dir: str, data_path: str, output_path: str, seed: int | None = None
) -> dict[str, Any]:
    """Fill the missing cells of a table with values drawn from the model; known cells stay."""
    out = confine(output_path)
    summary = job.impute_job(
        confine(model_dir), confine(data_path), out, seed=seed, max_rows=MAX_ROWS
    )
    return job.as_dict(summary, workspace_relative)


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
    html_dir: str | None = Field(
        default=None, description="Optional folder for the report as pictures (report.html)."
    )
    context_key: str | None = Field(
        default=None, description="Entity key of event tables; adds sequence plots."
    )
    model_dir: str | None = Field(
        default=None, description="Optional model that made the table: adds its privacy record."
    )


def tabular_quality_report(
    synthetic_path: str,
    training_path: str,
    holdout_path: str | None = None,
    report_path: str | None = None,
    html_dir: str | None = None,
    context_key: str | None = None,
    model_dir: str | None = None,
) -> dict[str, Any]:
    """Accuracy (univariate, bivariate) and DCR share of a synthetic table, and its plots."""
    report_file, pictures = confine_given(report_path), confine_given(html_dir)
    summary = job.report_job(
        confine(synthetic_path),
        confine(training_path),
        holdout=confine_given(holdout_path),
        report_path=report_file,
        html_dir=pictures,
        key=context_key,
        model_dir=confine_given(model_dir),
    )
    return job.as_dict(summary, workspace_relative)


def fit_tool() -> StructuredTool:
    return agent_tool(fit_tabular_model, FitArgs)


def generate_tool() -> StructuredTool:
    return agent_tool(generate_synthetic_table, GenerateArgs)


def impute_tool() -> StructuredTool:
    return agent_tool(impute_table, ImputeArgs)


def report_tool() -> StructuredTool:
    return agent_tool(tabular_quality_report, ReportArgs)
