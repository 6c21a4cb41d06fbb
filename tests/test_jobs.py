"""The one job prologue: open or resume a run, in today's vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgraph.graphs.jobs import current_names, open_job
from synthgraph.tools.runs import Run, RunError


def test_a_run_started_with_the_old_names_resumes(tmp_path: Path) -> None:
    old = {"input": "texts", "max_records": 2, "context": {"dedup": True, "dedup_threshold": 0.8}}
    Run.open("personas", out=tmp_path, config=old).finish()

    run, config = open_job("personas", None, out=tmp_path, resume=str(tmp_path))
    assert config == {"input": "texts", "limit": 2, "context": {"dedup": "both", "threshold": 0.8}}
    run.finish()

    same = {"input": "texts", "limit": 2, "context": {"dedup": "both", "threshold": 0.8}}
    open_job("personas", same, out=tmp_path, resume=str(tmp_path))[0].finish()


def test_a_resume_with_other_options_is_refused_naming_the_key(tmp_path: Path) -> None:
    Run.open("personas", out=tmp_path, config={"limit": 2}).finish()
    with pytest.raises(RunError, match=r"limit: run 2, now 3"):
        open_job("personas", {"limit": 3}, out=tmp_path, resume=str(tmp_path))


def test_a_new_run_needs_its_config() -> None:
    with pytest.raises(ValueError, match="needs its config"):
        open_job("personas", None)


def test_current_names_keeps_other_keys_and_values() -> None:
    assert current_names({"dedup": False, "seed": 3, "x": [1]}) == {
        "dedup": "none",
        "seed": 3,
        "x": [1],
    }


def test_an_agent_tool_refuses_an_unknown_argument(isolated_settings: Path) -> None:
    from synthgraph.tools.dedup_tools import dedup_tool

    answer = dedup_tool().invoke(
        {"input_path": "a.jsonl", "field": "text", "output_path": "b.jsonl", "seed_path": "x"}
    )
    assert "seed_path" in answer and "not permitted" in answer.lower()
