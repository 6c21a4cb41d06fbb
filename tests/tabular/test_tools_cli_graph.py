"""The tabular tools, a tool-calling agent over them, the CLI and the graph, end to end."""

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.tabular.cli import fit_command
from synthgraph.graphs.tabular.graph import graph
from synthgraph.graphs.tabular.job import DEFAULT_EPOCHS, fit_job
from synthgraph.graphs.tabular.tool import (
    FitArgs,
    fit_tool,
    generate_synthetic_table,
    generate_tool,
    impute_tool,
    report_tool,
)
from synthgraph.tabular import TabularARGN
from synthgraph.tools.workspace import workspace_root

TOOLS = [fit_tool(), generate_tool(), impute_tool(), report_tool()]


def make_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n)
    return pd.DataFrame(
        {"colour": colour, "size": np.where(colour == "red", 10.0, 2.0) + rng.normal(0, 1, n)}
    )


@pytest.fixture
def workspace() -> Path:
    root = workspace_root()
    make_table(600, 0).to_csv(root / "train.csv", index=False)
    make_table(200, 1).to_csv(root / "holdout.csv", index=False)
    gaps = make_table(50, 2)
    gaps.loc[::3, "size"] = None
    gaps.to_csv(root / "gaps.csv", index=False)
    return root


class ToolCallingFakeModel(GenericFakeChatModel):
    """A scripted chat model an agent can bind tools to (the script already names them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ToolCallingFakeModel":
        return self


def call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_tool_calling_agent_fits_generates_imputes_and_scores(workspace: Path) -> None:
    from langgraph.prebuilt import create_react_agent

    script = [
        call(
            "fit_tabular_model",
            {"data_path": "train.csv", "model_dir": "model", "max_epochs": 3},
            "1",
        ),
        call(
            "generate_synthetic_table",
            {"model_dir": "model", "output_path": "syn.parquet", "rows": 300, "seed": 1},
            "2",
        ),
        call(
            "impute_table",
            {"model_dir": "model", "data_path": "gaps.csv", "output_path": "filled.csv"},
            "3",
        ),
        call(
            "tabular_quality_report",
            {
                "synthetic_path": "syn.parquet",
                "training_path": "train.csv",
                "holdout_path": "holdout.csv",
            },
            "4",
        ),
        AIMessage(content="Done: synthetic table in syn.parquet."),
    ]
    agent = create_react_agent(ToolCallingFakeModel(messages=iter(script)), TOOLS)
    result = agent.invoke(
        {"messages": [("user", "Make a private synthetic copy of train.csv and score it.")]}
    )

    replies = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert all(m.status == "success" for m in replies.values()), [
        m.content for m in replies.values()
    ]
    fitted = json.loads(replies["1"].content)
    assert fitted["model_dir"] == "model" and fitted["epochs"] == 3
    assert (workspace / "model" / "weights.safetensors").exists()
    synthetic = pd.read_parquet(workspace / "syn.parquet")
    assert len(synthetic) == 300 and list(synthetic.columns) == ["colour", "size"]
    assert json.loads(replies["3"].content)["filled_cells"] == 17
    assert not pd.read_csv(workspace / "filled.csv")["size"].isna().any()
    metrics = json.loads(replies["4"].content)
    assert metrics["accuracy"]["overall"] > 0.7 and 0 <= metrics["dcr_share"] <= 1
    assert result["messages"][-1].content.startswith("Done")


def test_tools_refuse_paths_outside_the_workspace(workspace: Path, tmp_path: Path) -> None:
    generate = generate_tool()
    reply = generate.invoke({"model_dir": "../../elsewhere", "output_path": "x.csv"})
    assert "outside the workspace" in reply
    too_many = generate.invoke({"model_dir": "model", "output_path": "x.csv", "rows": 10**9})
    assert "less than or equal" in too_many
    with pytest.raises(Exception, match="outside the workspace"):
        generate_synthetic_table(str(tmp_path / "model"), "x.csv")


def test_the_graph_fits_samples_and_reports(workspace: Path) -> None:
    result = graph.invoke(
        {
            "training_path": "train.csv",
            "holdout_path": "holdout.csv",
            "model_dir": "graph-model",
            "output_path": "graph-syn.csv",
            "rows": 200,
            "max_epochs": 2,
        }
    )
    assert set(result) == {"model_dir", "output_path", "fit", "metrics"}
    assert result["fit"]["epochs"] == 2
    assert len(pd.read_csv(workspace / "graph-syn.csv")) == 200
    assert "dcr_share" in result["metrics"]


def test_cli_fit_sample_impute_report(tmp_path: Path) -> None:
    runner = CliRunner()
    make_table(400, 0).to_csv(tmp_path / "train.csv", index=False)
    make_table(100, 1).to_csv(tmp_path / "holdout.csv", index=False)
    fixed = pd.DataFrame({"colour": ["red"] * 20})
    fixed.to_csv(tmp_path / "fixed.csv", index=False)
    model, out = tmp_path / "model", tmp_path / "syn.parquet"

    fitted = runner.invoke(
        app, ["tabular", "fit", str(tmp_path / "train.csv"), "--model", str(model), "--epochs", "2"]
    )
    assert fitted.exit_code == 0, fitted.output
    sampled = runner.invoke(
        app,
        # Seeded: the accuracy check below must not depend on the luck of 150 draws.
        [
            "tabular",
            "sample",
            "--model",
            str(model),
            "--rows",
            "150",
            "--seed",
            "0",
            "--out",
            str(out),
        ],
    )
    assert sampled.exit_code == 0, sampled.output
    assert len(pd.read_parquet(out)) == 150
    conditional = runner.invoke(
        app,
        [
            "tabular",
            "sample",
            "--model",
            str(model),
            "--input",
            str(tmp_path / "fixed.csv"),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert conditional.exit_code == 0, conditional.output
    assert (pd.read_csv(tmp_path / "s.csv")["colour"] == "red").all()
    gaps = make_table(30, 3)
    gaps.loc[::2, "colour"] = None
    gaps.to_csv(tmp_path / "gaps.csv", index=False)
    imputed = runner.invoke(
        app,
        [
            "tabular",
            "impute",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "gaps.csv"),
            "--out",
            str(tmp_path / "f.csv"),
        ],
    )
    assert imputed.exit_code == 0, imputed.output
    assert not pd.read_csv(tmp_path / "f.csv")["colour"].isna().any()
    reported = runner.invoke(
        app,
        [
            "tabular",
            "report",
            "--synthetic",
            str(out),
            "--training",
            str(tmp_path / "train.csv"),
            "--holdout",
            str(tmp_path / "holdout.csv"),
            "--out",
            str(tmp_path / "report.json"),
        ],
    )
    assert reported.exit_code == 0, reported.output
    assert "DCR share" in reported.output
    assert json.loads((tmp_path / "report.json").read_text())["accuracy"]["overall"] > 0.7


def test_cli_rejects_contradictory_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["tabular", "sample", "--model", str(tmp_path), "--out", str(tmp_path / "x.csv")]
    )
    assert result.exit_code != 0


def test_the_tools_return_dicts_with_workspace_relative_paths(workspace: Path) -> None:
    fitted = fit_tool().invoke({"data_path": "train.csv", "model_dir": "m", "max_epochs": 1})
    assert fitted["model_dir"] == "m" and fitted["epochs"] == 1 and not fitted["sequential"]
    assert "history" not in fitted["parts"]["flat"]
    pd.DataFrame({"colour": ["blue"] * 7}).to_csv(workspace / "fixed.csv", index=False)
    generated = generate_tool().invoke(
        {"model_dir": "m", "output_path": "out/syn.csv", "input_path": "fixed.csv", "seed": 0}
    )
    assert generated == {
        "output_path": "out/syn.csv",
        "rows": 7,
        "columns": ["colour", "size"],
        "violations": {},  # the model has no constraints
    }
    assert (pd.read_csv(workspace / "out" / "syn.csv")["colour"] == "blue").all()


def test_one_default_epoch_limit_for_model_command_tool_and_graph() -> None:
    assert inspect.signature(fit_command).parameters["epochs"].default == DEFAULT_EPOCHS
    assert FitArgs.model_fields["max_epochs"].default == DEFAULT_EPOCHS
    assert TabularARGN().train_config.max_epochs == DEFAULT_EPOCHS
    assert inspect.signature(fit_job).parameters["epochs"].default == DEFAULT_EPOCHS


def test_the_graph_shape() -> None:
    assert graph.name == "tabular"
    assert graph.get_graph().draw_mermaid() == MERMAID


MERMAID = """---
config:
  flowchart:
    curve: linear
---
graph TD;
	__start__([<p>__start__</p>]):::first
	fit(fit)
	sample(sample)
	report(report)
	__end__([<p>__end__</p>]):::last
	__start__ --> fit;
	fit --> sample;
	sample --> report;
	report --> __end__;
	classDef default fill:#f2f0ff,line-height:1.2
	classDef first fill-opacity:0
	classDef last fill:#bfb6fc
"""


def one_line_error(result: Any, cause: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cause in lines[0], lines


def test_the_model_refusing_input_is_one_line_from_every_command(tmp_path: Path) -> None:
    runner = CliRunner()
    make_table(100, 0).to_csv(tmp_path / "train.csv", index=False)
    fit_job(tmp_path / "train.csv", tmp_path / "flat", epochs=1)
    pd.DataFrame({"shape": ["round"]}).to_csv(tmp_path / "unknown.csv", index=False)
    sampled = runner.invoke(
        app,
        [
            "tabular",
            "sample",
            "-m",
            str(tmp_path / "flat"),
            "--input",
            str(tmp_path / "unknown.csv"),
            "--out",
            str(tmp_path / "x.csv"),
        ],
    )
    one_line_error(sampled, "seed columns not in the model: ['shape']")
    fitted = runner.invoke(
        app,
        [
            "tabular",
            "fit",
            str(tmp_path / "train.csv"),
            "-m",
            str(tmp_path / "seq"),
            "--key",
            "nope",
            "--epochs",
            "1",
        ],
    )
    one_line_error(fitted, "context_key 'nope' is not a column")
    events = make_table(100, 0).assign(entity=np.arange(100) // 4)
    events.to_csv(tmp_path / "events.csv", index=False)
    fit_job(tmp_path / "events.csv", tmp_path / "seq", key="entity", epochs=1)
    imputed = runner.invoke(
        app,
        [
            "tabular",
            "impute",
            "-m",
            str(tmp_path / "seq"),
            "--data",
            str(tmp_path / "train.csv"),
            "--out",
            str(tmp_path / "f.csv"),
        ],
    )
    one_line_error(imputed, "impute needs a fitted flat model")
