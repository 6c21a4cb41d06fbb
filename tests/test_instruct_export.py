"""`synthgraph instruct-export`: a hand-built run folder exported, loaded back with `datasets`
offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from synthgraph.graphs.agentinstruct.job import export_job
from synthgraph.graphs.cli import app


def verdict(score: int) -> dict[str, Any]:
    return {"reasons": f"scored {score}", "correct": True, "score": score}


def record(
    rid: str,
    skill: str,
    scores: list[int],
    *,
    system: str = "",
    instruction_type: str = "summary",
    rejected_edit: bool = False,
) -> dict[str, Any]:
    """A record as the graph's `finish` writes it: one accepted version per score (round 0
    first), optionally a last edit the judge rejected."""
    versions: list[dict[str, Any]] = [
        {
            "round": n,
            "instruction": f"{rid} task v{n}",
            "answer": f"{rid} answer v{n}",
            "judge": verdict(score),
            "accepted": True,
        }
        for n, score in enumerate(scores)
    ]
    if rejected_edit:
        versions.append(
            {
                "round": len(versions),
                "instruction": f"{rid} task worse",
                "answer": f"{rid} answer worse",
                "judge": verdict(1),
                "accepted": False,
            }
        )
    final = versions[len(scores) - 1]
    return {
        "id": rid,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Some text.\n\n{final['instruction']}"},
            {"role": "assistant", "content": final["answer"]},
        ],
        "skill": skill,
        "transformation": "plain",
        "instruction_type": instruction_type,
        "refinement_rounds": final["round"],
        "seed_id": "seed-1",
        "seed_source": "seed.txt",
        "seed_skill": f"seed-1/{skill}",
        "instruction": final["instruction"],
        "judge": {k: final["judge"][k] for k in ("score", "correct", "reasons")},
        "transformed_text": "Some text.",
        "versions": versions,
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    records = [
        record("a", "coding", [3, 5]),  # refined, judge prefers it by 2
        record("b", "coding", [4, 4], system="You are terse.", instruction_type="debug"),
        record("c", "reading_comprehension", [4]),  # never refined: no pair
        record("d", "reading_comprehension", [2, 3], rejected_edit=True),  # margin 1
    ]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def load(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> datasets.DatasetDict:
    """The export as a trainer loads it: the parquet builder on the folder, no network."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    loaded = datasets.load_dataset(
        "parquet", data_dir=str(folder), cache_dir=str(tmp_path / "hf-cache")
    )
    assert isinstance(loaded, datasets.DatasetDict)
    return loaded


def card_header(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])


def test_sft_export_loads_with_list_typed_messages_one_split_per_skill(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = export_job(run_dir, tmp_path / "ds")
    assert summary.rows == 4 and summary.splits == {"coding": 2, "reading_comprehension": 2}

    loaded = load(tmp_path / "ds", tmp_path, monkeypatch)
    assert set(loaded) == {"coding", "reading_comprehension"}
    coding = {row["id"]: row for row in loaded["coding"]}
    # A real list of {role, content}, not a JSON string; the empty system turn is gone.
    assert coding["a"]["messages"] == [
        {"role": "user", "content": "Some text.\n\na task v1"},
        {"role": "assistant", "content": "a answer v1"},
    ]
    assert [m["role"] for m in coding["b"]["messages"]] == ["system", "user", "assistant"]
    assert coding["a"]["judge_score"] == 5 and coding["a"]["refinement_rounds"] == 1
    assert loaded["reading_comprehension"].num_rows == 2

    header = card_header(tmp_path / "ds")
    assert header["configs"][0]["data_files"] == [
        {"split": "coding", "path": "data/coding-*.parquet"},
        {"split": "reading_comprehension", "path": "data/reading_comprehension-*.parquet"},
    ]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| coding | debug | 1 |" in card and "| coding | summary | 1 |" in card
    assert "| 1 | 4 |" in card  # four rows of one user turn
    # The card's configs are what `load_dataset(folder)` follows.
    by_card = datasets.load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "hf-cache"))
    assert {name: split.num_rows for name, split in by_card.items()} == summary.splits


def test_cli_exports_one_shard_per_skill(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "ds" / "data").mkdir(parents=True)
    (tmp_path / "ds" / "data" / "gone-00000-of-00001.parquet").write_bytes(b"old")
    result = CliRunner().invoke(
        app, ["instruct-export", str(run_dir), "--out", str(tmp_path / "ds")]
    )
    assert result.exit_code == 0, result.output
    assert "4 rows of 4 records" in " ".join(result.output.split())
    # A shard of an earlier export would be read as a split of this one: it is gone.
    assert sorted(p.name for p in (tmp_path / "ds" / "data").iterdir()) == [
        "coding-00000-of-00001.parquet",
        "reading_comprehension-00000-of-00001.parquet",
    ]


def test_a_record_without_messages_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "instructions.jsonl").write_text('{"id": "1"}\n')
    result = CliRunner().invoke(
        app, ["instruct-export", str(tmp_path / "run"), "--out", str(tmp_path / "ds")]
    )
    assert result.exit_code == 2
    assert "record 1: cannot export (no usable field 'messages')" in result.output
