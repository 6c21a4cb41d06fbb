"""Tabular graph: synthetic tables end to end, fit a TabularARGN → sample → quality report.

    START ─▶ fit ─▶ sample ─▶ report ─▶ END

Each node confines its paths to the workspace (as the agent tools do), so the graph is safe
to expose in Studio or over MCP, then runs the feature's job (`graphs/tabular/job.py`). The
model, the synthetic table and the report stay on disk; the state carries only paths
(workspace-relative) and the jobs' summaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from synthgraph.graphs.tabular import job
from synthgraph.tools.agent_tool import workspace_relative
from synthgraph.tools.io import InputError
from synthgraph.tools.workspace import confine, workspace_root

DEFAULT_ROWS = 1000
DEFAULT_MINUTES = 10.0
"""Training time limit for the graph and the tools: an agent's fit must not hold the machine."""


# --- state ----------------------------------------------------------------------
class TabularInput(TypedDict):
    training_path: NotRequired[str]
    """Training table (.csv, .parquet or .jsonl) inside the workspace."""
    schema_path: NotRequired[str | None]
    """Instead of training_path: a JSON or YAML schema of tables linked by foreign keys
    (multi-table); output_path is then a folder that gets <table>.csv per table."""
    model_dir: str
    output_path: str
    rows: NotRequired[int]
    holdout_path: NotRequired[str | None]
    context_path: NotRequired[str | None]
    context_key: NotRequired[str | None]
    max_epochs: NotRequired[int]
    max_minutes: NotRequired[float]
    seed: NotRequired[int]
    """Random seed of training and sampling."""
    dp_epsilon: NotRequired[float | None]
    """Train with differential privacy at this ε (flat tables; see `synthgraph.tabular.dp`)."""
    dp_delta: NotRequired[float]
    dp_max_grad_norm: NotRequired[float]


class TabularOutput(TypedDict):
    model_dir: str
    output_path: str
    fit: dict[str, Any]
    metrics: dict[str, Any]


class TabularState(TabularInput, TabularOutput, total=False):
    pass


def confine_given(path: str | None) -> Path | None:
    """An optional path, confined to the workspace when given."""
    return confine(path) if path else None


# --- nodes ----------------------------------------------------------------------
def fit(state: TabularState) -> dict[str, Any]:
    model_dir = confine(state["model_dir"])
    if state.get("schema_path"):
        tables = job.fit_schema_job(
            confine(state["schema_path"] or ""),
            model_dir,
            epochs=state.get("max_epochs", job.DEFAULT_EPOCHS),
            max_minutes=state.get("max_minutes", DEFAULT_MINUTES),
            seed=state.get("seed", 0),
            within=workspace_root(),
        )
        return {"fit": job.as_dict(tables, workspace_relative)}
    if not state.get("training_path"):
        raise InputError("give training_path or schema_path")
    summary = job.fit_job(
        confine(state["training_path"]),
        model_dir,
        context=confine_given(state.get("context_path")),
        key=state.get("context_key"),
        epochs=state.get("max_epochs", job.DEFAULT_EPOCHS),
        max_minutes=state.get("max_minutes", DEFAULT_MINUTES),
        seed=state.get("seed", 0),
        dp_epsilon=state.get("dp_epsilon"),
        dp_delta=state.get("dp_delta", job.DEFAULT_DELTA),
        dp_max_grad_norm=state.get("dp_max_grad_norm", job.DEFAULT_MAX_GRAD_NORM),
    )
    return {"fit": job.as_dict(summary, workspace_relative)}


def sample(state: TabularState) -> dict[str, Any]:
    if state.get("schema_path"):  # the integrity of the keys is the multi-table report
        tables = job.sample_schema_job(
            confine(state["model_dir"]),
            confine(state["output_path"]),
            rows=state.get("rows", DEFAULT_ROWS),
            seed=state.get("seed", 0),
        )
        return {
            "output_path": workspace_relative(tables.output_dir),
            "metrics": job.as_dict(tables, workspace_relative),
        }
    summary = job.sample_job(
        confine(state["model_dir"]),
        confine(state["output_path"]),
        rows=state.get("rows", DEFAULT_ROWS),
        seed=state.get("seed", 0),
    )
    return {"output_path": workspace_relative(summary.output_path)}


def report(state: TabularState) -> dict[str, Any]:
    if state.get("schema_path"):
        return {}  # `sample` reported the multi-table integrity already
    summary = job.report_job(
        confine(state["output_path"]),
        confine(state["training_path"]),
        holdout=confine_given(state.get("holdout_path")),
        model_dir=confine(state["model_dir"]),  # its privacy record joins the metrics
    )
    return {"metrics": job.as_dict(summary, workspace_relative)}


# --- builder --------------------------------------------------------------------
builder = StateGraph(TabularState, input_schema=TabularInput, output_schema=TabularOutput)
builder.add_sequence([fit, sample, report])
builder.add_edge(START, "fit")
builder.add_edge("report", END)
graph = builder.compile(name="tabular")
