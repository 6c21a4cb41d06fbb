"""`synthgraph instruct`, the Hugging Face export and the LangChain tool, on fake chat models."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_agentinstruct import models
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.agentinstruct.job import InstructOptions, instruct_job
from synthgraph.graphs.agentinstruct.tool import instruct_tool
from synthgraph.graphs.cli import app
from synthgraph.tools.io import read_jsonl


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "cats.txt").write_text(
        "Cats sleep up to sixteen hours a day. They hunt at dawn and dusk."
    )
    (folder / "bisect.py").write_text("def middle(a, b):\n    return (a + b) // 2\n")
    (folder / "empty.md").write_text("   ")
    return folder


def test_instruct_run_writes_records_rejects_and_a_dataset(seeds: Path, tmp_path: Path) -> None:
    generator, judge = models()
    with use_chat_models(generator=generator, judge=judge):
        result = instruct_job(
            seeds,
            tmp_path / "run",
            options=InstructOptions(
                skills=["reading_comprehension", "coding"], refine_rounds=1, dedup="minhash"
            ),
            show_progress=False,
        )
    records = list(read_jsonl(result.instructions))
    assert {(r["seed_source"], r["skill"]) for r in records} == {
        ("cats.txt", "reading_comprehension"), ("cats.txt", "coding"),
        ("bisect.py", "reading_comprehension"), ("bisect.py", "coding"),
    }  # fmt: skip
    assert all(
        r["refinement_rounds"] == 1 and r["messages"][-1]["role"] == "assistant" for r in records
    )
    rejects = list(read_jsonl(result.rejects))
    assert (
        rejects[0]["id"] == "empty.md"
        and rejects[0]["cause" if "cause" in rejects[0] else "error"] == "empty file"
    )
    assert result.counts["instructions"] == 4 and result.counts["seeds"] == 2

    frame = pd.read_parquet(result.dataset / "data" / "coding-00000-of-00001.parquet")
    assert len(frame) == 2 and set(frame["skill"]) == {"coding"}  # one split per skill
    assert list(frame.iloc[0]["messages"][0].keys()) == ["role", "content"]
    card = (result.dataset / "README.md").read_text()
    assert "path: data/coding-*.parquet" in card and "| coding | 2 |" in card

    # Resuming a finished run calls no model and writes nothing twice.
    silent, _ = models(generator=lambda _: pytest.fail("a finished job ran again"))
    with use_chat_models(generator=silent, judge=judge):
        # A resume repeats the run's options: other ones are refused.
        again = instruct_job(
            seeds, tmp_path / "run",
            options=InstructOptions(skills=["reading_comprehension", "coding"], dedup="minhash"),
            resume=str(tmp_path / "run"), show_progress=False,
        )  # fmt: skip
    assert again.counts["jobs_skipped"] == 4 and len(list(read_jsonl(again.instructions))) == 4


def test_a_seed_skill_with_nothing_kept_is_rejected_and_counted_done(
    seeds: Path, tmp_path: Path
) -> None:
    generator, judge = models(judge=lambda _: {"reasons": "wrong", "correct": False, "score": 1})
    with use_chat_models(generator=generator, judge=judge):
        result = instruct_job(
            seeds,
            tmp_path / "run",
            options=InstructOptions(skills=["coding"], dedup="minhash"),
            show_progress=False,
        )
    rejects = list(read_jsonl(result.rejects))
    stages = [r["stage"] for r in rejects]
    assert stages.count("judge") == 2 and stages.count("seed") == 2
    seed_reject = next(r for r in rejects if r["stage"] == "seed" and "cats.txt" in r["error"])
    assert "no instruction kept (1 at judge)" in seed_reject["error"]
    assert result.counts["jobs_rejected"] == 2 and result.counts["instructions"] == 0


def test_cli_validates_and_reports(seeds: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(
        app, ["instruct", str(seeds), "--skills", "juggling", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "unknown skill 'juggling'" in flat(bad.output)
    missing = runner.invoke(app, ["instruct", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or folder" in flat(missing.output)
    listed = runner.invoke(app, ["instruct", "--list-skills"])
    assert listed.exit_code == 0 and "tool_use" in listed.output

    generator, judge = models()
    with use_chat_models(generator=generator, judge=judge):
        ok = runner.invoke(
            app,
            [
                "instruct",
                str(seeds),
                "--out",
                str(tmp_path / "run"),
                "--skills",
                "open_domain_qa",
                "--refine-rounds",
                "0",
                "--dedup",
                "minhash",
            ],
        )
    assert ok.exit_code == 0, ok.output
    exported = runner.invoke(
        app, ["instruct-export", str(tmp_path / "run"), "--out", str(tmp_path / "ds")]
    )
    assert exported.exit_code == 0 and (tmp_path / "ds" / "README.md").is_file()

    # A resume with no option that shapes the data goes on with the run's own (one skill).
    silent, _ = models(generator=lambda _: pytest.fail("a finished job ran again"))
    with use_chat_models(generator=silent, judge=judge):
        resumed = runner.invoke(app, ["instruct", str(seeds), "--resume", str(tmp_path / "run")])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]["jobs"] == 2
    differing = runner.invoke(
        app, ["instruct", str(seeds), "--resume", str(tmp_path / "run"), "--per-seed", "2"]
    )
    assert differing.exit_code == 2 and "config differs" in flat(differing.output)


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["instruct-export", str(tmp_path), "--out", str(tmp_path / "ds")])
    assert missing.exit_code == 2 and "no such file (expected a run folder" in flat(missing.output)
    partial = tmp_path / "instructions.jsonl"
    partial.write_text(json.dumps({"id": "a", "skill": "coding"}) + "\n")
    broken = runner.invoke(app, ["instruct-export", str(partial), "--out", str(tmp_path / "ds")])
    assert broken.exit_code == 2 and "cannot export" in flat(broken.output)
    assert "Traceback" not in broken.output


def test_the_graph_as_a_tool_takes_workspace_paths(seeds: Path, isolated_settings: Path) -> None:
    workspace = isolated_settings
    (workspace / "seeds").mkdir(parents=True)
    (workspace / "seeds" / "cats.txt").write_text((seeds / "cats.txt").read_text())
    generator, judge = models()
    with use_chat_models(generator=generator, judge=judge):
        result = instruct_tool().invoke(
            {
                "input_path": "seeds",
                "output_dir": "runs/one",
                "skills": ["tool_use"],
                "refine_rounds": 0,
                "dedup": "minhash",
            }
        )
    assert result["instructions"] == 1
    assert result["instructions_path"] == "runs/one/instructions.jsonl"
    assert (result["dataset_dir"], result["rejects_path"]) == (
        "runs/one/hf",
        "runs/one/rejects.jsonl",
    )
    record = next(read_jsonl(workspace / result["instructions_path"]))
    assert record["skill"] == "tool_use" and json.loads(record["messages"][-1]["content"])["calls"]
    escaped = instruct_tool().invoke({"input_path": "../../etc", "output_dir": "runs/two"})
    assert "outside the workspace" in escaped
    refused = instruct_tool().invoke(
        {"input_path": "seeds", "output_dir": "runs/three", "refine_rounds": 9}
    )
    assert "invalid arguments" in refused and "refine_rounds" in refused
    unknown = instruct_tool().invoke(
        {"input_path": "seeds", "output_dir": "runs/four", "skills": ["juggling"]}
    )
    assert "unknown skill 'juggling'" in unknown
