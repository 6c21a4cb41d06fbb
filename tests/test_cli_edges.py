"""Edges of the command line and the tools found by an adversarial pass: each once failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.jobs import open_job
from synthgraph.tools.runs import Run, RunError


def test_an_option_value_that_spells_an_old_flag_is_not_rewritten(tmp_path: Path) -> None:
    # `--synthetic` takes a value; that value happens to be `--random-seed`.
    result = CliRunner().invoke(
        app, ["tabular", "report", "--training", "t.csv", "--synthetic", "--random-seed"]
    )
    assert "deprecated" not in result.output
    assert "--seed" not in result.output  # the value stays the path the user gave


@pytest.mark.parametrize("command", ["personas", "synthesize", "instruct", "dedup"])
def test_a_feature_command_help_has_no_completion_options(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--show-completion" not in result.output


def test_a_misspelt_feature_command_is_suggested() -> None:
    result = CliRunner().invoke(app, ["persona"])
    assert result.exit_code == 2
    assert "Did you mean 'personas'" in result.output


def test_a_refused_resume_leaves_the_manifest_as_it_was(tmp_path: Path) -> None:
    Run.open("personas", out=tmp_path, config={"limit": 2}).finish()
    before = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    with pytest.raises(RunError):
        open_job("personas", {"limit": 3}, out=tmp_path, resume=str(tmp_path))
    after = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    assert after.get("resumed_at") == before.get("resumed_at")


def test_sampling_plan_with_an_infinite_budget_is_one_line(isolated_settings: Path) -> None:
    result = CliRunner().invoke(app, ["sampling", "plan", "--budget", "inf", "--problems", "1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_the_budget_tool_answers_an_overflow_in_one_line(isolated_settings: Path) -> None:
    from synthgraph.tools.sampling_budget import sampling_budget_tool

    answer = sampling_budget_tool().invoke(
        {
            "models": [{"name": "w", "params": 1e9}],
            "budget": 1e300,
            "problems": 1,
            "tokens_per_solution": 1e-300,
        }
    )
    assert isinstance(answer, str) and "\n" not in answer


def test_the_report_tool_answers_a_holdout_with_other_columns(
    isolated_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synthgraph.graphs.tabular.tool import report_tool

    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.setenv("SYNTHGRAPH_WORKSPACE_DIR", str(workspace))
    table = "a,b\n" + "".join(f"{i % 3},{i}\n" for i in range(20))
    (workspace / "train.csv").write_text(table)
    (workspace / "synthetic.csv").write_text(table)
    (workspace / "holdout.csv").write_text("x,y\n1,2\n3,4\n")
    from synthgraph.tools.settings import get_settings

    get_settings.cache_clear()
    answer = report_tool().invoke(
        {
            "synthetic_path": "synthetic.csv",
            "training_path": "train.csv",
            "holdout_path": "holdout.csv",
        }
    )
    assert isinstance(answer, str) and "\n" not in answer


def test_dedup_refuses_to_write_over_its_input(isolated_settings: Path, tmp_path: Path) -> None:
    source = tmp_path / "records.jsonl"
    source.write_text('{"id": "1", "text": "a b c"}\n{"id": "2", "text": "a b c"}\n')
    result = CliRunner().invoke(
        app, ["dedup", str(source), "--field", "text", "--out", str(source)]
    )
    assert result.exit_code == 2
    assert "must not be the input" in result.output
    assert source.read_text().count("\n") == 2  # untouched


def test_synthesize_needs_a_task_only_for_a_new_run(
    isolated_settings: Path, tmp_path: Path
) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text('{"id": "p1", "persona": "a baker"}\n')
    result = CliRunner().invoke(app, ["synthesize", "--personas", str(personas)])
    assert result.exit_code == 2
    assert "--task is required for a new run" in result.output
