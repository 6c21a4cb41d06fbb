"""Synthetic tables end to end: fit a TabularARGN → sample → quality report.

Every path is taken relative to the workspace (the same confinement as the
agent tools), so the graph is safe to expose in Studio or over MCP. The nodes
call the tool functions, which keep the model, the synthetic table and the
report on disk and pass only paths and metrics through the state.
"""

from __future__ import annotations

import json
from typing import NotRequired

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from synthgraph.tools.tabular_tools import (
    fit_tabular_model,
    generate_synthetic_table,
    tabular_quality_report,
)


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


class TabularOutput(TypedDict):
    model_dir: str
    output_path: str
    fit: dict
    metrics: dict


class TabularState(TabularInput, TabularOutput, total=False):
    pass


def fit(state: TabularState) -> dict:
    summary = fit_tabular_model(
        data_path=state["training_path"],
        model_dir=state["model_dir"],
        context_path=state.get("context_path"),
        context_key=state.get("context_key"),
        max_epochs=state.get("max_epochs", 20),
        max_minutes=state.get("max_minutes", 10.0),
        seed=state.get("seed", 0),
    )
    return {"fit": json.loads(summary)}


def sample(state: TabularState) -> dict:
    result = json.loads(
        generate_synthetic_table(
            model_dir=state["model_dir"],
            output_path=state["output_path"],
            rows=state.get("rows", 1000),
            seed=state.get("seed", 0),
        )
    )
    return {"output_path": result["output_path"]}


def report(state: TabularState) -> dict:
    metrics = tabular_quality_report(
        synthetic_path=state["output_path"],
        training_path=state["training_path"],
        holdout_path=state.get("holdout_path"),
    )
    return {"metrics": json.loads(metrics)}


builder = StateGraph(TabularState, input_schema=TabularInput, output_schema=TabularOutput)
builder.add_node("fit", fit)
builder.add_node("sample", sample)
builder.add_node("report", report)
builder.add_edge(START, "fit")
builder.add_edge("fit", "sample")
builder.add_edge("sample", "report")
builder.add_edge("report", END)
graph = builder.compile()
