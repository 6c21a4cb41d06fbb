"""The personas and synthesis graphs as LangChain tools: workspace-confined, bounded."""

from __future__ import annotations

from pathlib import Path

from personas_fake_models import PromptAwareFake

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.personas.tool import personas_tool
from synthgraph.graphs.synthesis.tool import synthesis_tool
from synthgraph.tools.io import read_jsonl
from synthgraph.tools.workspace import workspace_root


def test_personas_then_synthesis_through_the_tools() -> None:
    texts = workspace_root() / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("The quartet's new album opens with a slow ballad on saxophone.")
    (texts / "b.txt").write_text(
        "Lead times for aluminium housings rose from six to fourteen weeks."
    )
    with use_chat_models(generator=PromptAwareFake()):
        personas = personas_tool().invoke(
            {"input_path": "texts", "output_dir": "runs/p", "relations": ["fan"], "limit": 1}
        )
        items = synthesis_tool().invoke(
            {"personas_path": personas["personas_path"], "task": "math", "output_dir": "runs/m"}
        )
    assert (
        personas["texts"] == 1
        and personas["kept"] + personas["dropped"] == personas["generated"] == 2
    )
    assert personas["personas_path"] == "runs/p/personas.jsonl"
    assert items["items_path"] == "runs/m/items.jsonl" and items["items"] == personas["kept"]
    assert len(list(read_jsonl(workspace_root() / items["items_path"]))) == items["items"]


def test_paths_outside_the_workspace_and_oversized_requests_come_back_as_errors(
    tmp_path: Path,
) -> None:
    outside = personas_tool().invoke({"input_path": str(tmp_path), "output_dir": "runs/p"})
    assert "outside the workspace" in outside
    escape = synthesis_tool().invoke(
        {"personas_path": "../x.jsonl", "task": "npc", "output_dir": "o"}
    )
    assert "outside the workspace" in escape
    too_big = personas_tool().invoke({"input_path": "texts", "output_dir": "o", "limit": 5000})
    assert "limit" in too_big
    bad_task = synthesis_tool().invoke(
        {"personas_path": "p.jsonl", "task": "poem", "output_dir": "o"}
    )
    assert "task" in bad_task
    missing = personas_tool().invoke({"input_path": "nothing-here", "output_dir": "o"})
    assert "no such file" in missing
