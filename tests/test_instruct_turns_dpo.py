"""Issue 18: multi-turn conversations (`--turns`), preference pairs (`--export dpo`), and
yield per skill with `--max-tries`, end to end against an endpoint that answers any request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
from fakes import serve
from fault_server import FaultyServer
from typer.testing import CliRunner

from synthgraph.graphs.agentinstruct.job import InstructOptions, export_job, instruct_job
from synthgraph.graphs.cli import app
from synthgraph.tools.io import InputError

CLOSED_BOOK = "You solve tasks."  # the first words of prompts/agentinstruct/closed_book.md


class RivalLosesServer(FaultyServer):
    """Answers every request; an answer given without the text is marked, and the judge
    scores a marked answer 1 (so the grounded answer wins by a margin)."""

    def _next(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = super()._next(request)
        texts = [str(m.get("content")) for m in request.get("messages", [])]
        if texts and texts[0].startswith(CLOSED_BOOK):
            return {**reply, "content": "A guess made without the text, as a rival answer."}
        if request.get("response_format") and any("rival answer" in t for t in texts):
            verdict = {"reasons": "not from the text", "correct": False, "score": 1}
            return {**reply, "content": json.dumps(verdict)}
        return reply


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[RivalLosesServer]:
    yield from serve(RivalLosesServer(), monkeypatch)  # type: ignore[misc]


def _seeds(folder: Path, count: int = 2) -> Path:
    folder.mkdir()
    for n in range(count):
        (folder / f"{n}.txt").write_text(
            f"Seed {n}: honey bees visit {n + 3} kinds of flowers and carry pollen home."
        )
    return folder


def test_turns_make_conversations_and_dpo_pairs_load_with_datasets(
    endpoint: RivalLosesServer, tmp_path: Path
) -> None:
    options = InstructOptions(skills=["open_domain_qa"], dedup="none", turns=3, preferences=True)
    summary = instruct_job(_seeds(tmp_path / "seeds"), tmp_path / "run", options=options)
    records = [json.loads(line) for line in summary.instructions.open()]
    assert records
    for record in records:
        roles = [m["role"] for m in record["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant"] * 3, roles
        assert record["turns"] == 3
        assert record["rival"]["judge"]["score"] == 1

    pairs = datasets.load_dataset("parquet", data_dir=str(tmp_path / "run" / "dpo"))
    rows = [row for split in pairs.values() for row in split]
    assert len(rows) == len(records)
    for row in rows:
        assert [m["role"] for m in row["prompt"]][-1] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["rejected"][0]["content"].startswith("A guess made without the text")
        assert row["chosen_score"] - row["rejected_score"] >= 1
    assert summary.yields == {"open_domain_qa": {"tried": 2, "kept": len(records)}}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["yield"] == summary.yields


def test_dpo_export_of_a_run_without_rivals_is_one_clear_error(
    endpoint: RivalLosesServer, tmp_path: Path
) -> None:
    options = InstructOptions(skills=["open_domain_qa"], dedup="none")
    instruct_job(_seeds(tmp_path / "seeds", 1), tmp_path / "run", options=options)
    with pytest.raises(InputError, match="no record has a rival answer; make the run with"):
        export_job(tmp_path / "run", tmp_path / "dpo", "dpo")
    result = CliRunner().invoke(
        app,
        ["instruct-export", str(tmp_path / "run"), "--out", str(tmp_path / "d"), "--export", "dpo"],
    )
    assert result.exit_code == 2 and "no record has a rival answer" in result.output


class FirstTryFailsServer(FaultyServer):
    """The judge rejects every pair of the first try of each seed (its transformation is
    chosen with the run's seed); later tries are judged as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.judged = 0

    def _next(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = super()._next(request)
        schema = (request.get("response_format") or {}).get("json_schema") or {}
        if schema.get("name") == "Verdict":
            self.judged += 1
            if self.judged == 1:  # the first judged pair of the run (one seed, run alone)
                verdict = {"reasons": "wrong", "correct": False, "score": 1}
                return {**reply, "content": json.dumps(verdict)}
        return reply


def test_max_tries_tries_a_seed_again_until_it_yields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = FirstTryFailsServer()
    endpoint = serve(server, monkeypatch)
    next(endpoint)
    try:
        options = InstructOptions(
            skills=["open_domain_qa"], dedup="none", refine_rounds=0, max_tries=3
        )
        summary = instruct_job(_seeds(tmp_path / "seeds", 1), tmp_path / "run", options=options)
    finally:
        next(endpoint, None)
    assert summary.yields == {"open_domain_qa": {"tried": 2, "kept": 1}}
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").open()]
    assert [r["stage"] for r in rejects] == ["judge"], "the first try's pair, kept as history"


def test_a_resume_as_started_reads_the_seeds_with_the_run_s_own_fields(
    endpoint: RivalLosesServer, tmp_path: Path
) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"key": f"s{n}", "body": f"Seed {n}: bees visit {n + 3} kinds of flowers."})
            + "\n"
            for n in range(2)
        )
    )
    run = tmp_path / "run"
    args = ["instruct", str(seeds), "--out", str(run), "--skills", "open_domain_qa"]
    args += ["--text-field", "body", "--id-field", "key", "--dedup", "none"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    asked = len(endpoint.requests)
    again = CliRunner().invoke(app, ["instruct", str(seeds), "--resume", str(run)])
    assert again.exit_code == 0, again.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["seed_problems"] == 0, "the seeds were read with body/key again"
    assert manifest["counts"]["jobs_skipped"] == 2 and len(endpoint.requests) == asked


def test_per_seed_counts_kept_instructions_across_tries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = FirstTryFailsServer()  # the first of the two pairs of the first try is refused
    endpoint = serve(server, monkeypatch)
    next(endpoint)
    try:
        options = InstructOptions(
            skills=["open_domain_qa"],
            dedup="none",
            refine_rounds=0,
            max_tries=3,
            instructions_per_seed=2,
        )
        summary = instruct_job(_seeds(tmp_path / "seeds", 1), tmp_path / "run", options=options)
    finally:
        next(endpoint, None)
    assert summary.yields == {"open_domain_qa": {"tried": 2, "kept": 2}}, (
        "one more for the one lost"
    )
