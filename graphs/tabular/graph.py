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

from synthgraph.graphs.tabular.job import (
    DEFAULT_EPOCHS,
    as_dict,
    fit_job,
    report_job,
    sample_job,
)
from synthgraph.tools.agent_tool import workspace_relative
from synthgraph.tools.workspace import confine

DEFAULT_ROWS = 1000
DEFAULT_MINUTES = 10.0
"""Training time limit for the graph and the tools: an agent's fit must not hold the machine."""


# --- state ----------------------------------------------------------------------
class TabularInput(TypedDict):
    training_path: str
    """Training table (.csv, .parquet or .jsonl) inside the workspace."""
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
    summary = fit_job(
        confine(state["training_path"]),
        confine(state["model_dir"]),
        context=confine_given(state.get("context_path")),
        key=state.get("context_key"),
        epochs=state.get("max_epochs", DEFAULT_EPOCHS),
        max_minutes=state.get("max_minutes", DEFAULT_MINUTES),
        seed=state.get("seed", 0),
    )
    return {"fit": as_dict(summary, workspace_relative)}


def sample(state: TabularState) -> dict[str, Any]:
    summary = sample_job(
        confine(state["model_dir"]),
        confine(state["output_path"]),
        rows=state.get("rows", DEFAULT_ROWS),
        seed=state.get("seed", 0),
    )
    return {"output_path": workspace_relative(summary.output_path)}


def report(state: TabularState) -> dict[str, Any]:
    summary = report_job(
        confine(state["output_path"]),
        confine(state["training_path"]),
        holdout=confine_given(state.get("holdout_path")),
    )
    return {"metrics": as_dict(summary, workspace_relative)}


# --- builder --------------------------------------------------------------------
builder = StateGraph(TabularState, input_schema=TabularInput, output_schema=TabularOutput)
builder.add_sequence([fit, sample, report])
builder.add_edge(START, "fit")
builder.add_edge("report", END)
graph = builder.compile(name="tabular")
