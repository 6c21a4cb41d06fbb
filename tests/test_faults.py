"""The fault suite: whole jobs through a failing endpoint, and kill -9 at random moments.

What it proves (the README's Guarantees):
- every input ends up exactly once in the outputs or in the rejects, never both,
  never twice, whatever mix of 429s, 500s, garbage bodies, cut JSON and hangs;
- every reject says why, carries the raw reply it was given (or null when there
  was none) and whether a retry may fix it;
- a run killed with SIGKILL at any moment and resumed gives every input its
  records exactly once, with no torn line in any file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import serve
from fault_server import FaultMix, FaultyServer

from synthgraph.tools.io import read_jsonl

FAULTS = FaultMix(rate_limited=0.02, server_error=0.01, garbage=0.01, truncated=0.01, hang=0.005)


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    monkeypatch.setenv("SYNTHGRAPH_MAX_RETRIES", "4")
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "16")
    # A hang costs one second, then a retry.
    yield from serve(FaultyServer(FAULTS, seed=7), monkeypatch, timeout=1)  # type: ignore[misc]


def _texts(folder: Path, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{n}" for n in range(400)]
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for number in range(count):
        text = f"Note {number}: " + " ".join(rng.choices(words, k=30)) + "."
        (folder / f"{number:04d}.txt").write_text(text)
        texts.append(text)
    return texts


def _whole_lines(path: Path) -> list[dict]:
    """Every line of a JSONL file, each a whole JSON object (a torn line fails the test)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path.name}: torn last line"
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _check_one_tree_per_input(records: list[dict]) -> None:
    """Each graph task (a text's perspective, a persona's relation) gave at most one record.

    Records are unique by id even when a task ran twice, so this is what catches a
    resumed graph that ran its input again on top of its own checkpoint.
    """
    tasks = Counter(
        (r["input_id"], r["round"], r["source_id"], r.get("relation"), r.get("perspective"))
        for r in records
    )
    assert max(tasks.values()) == 1, [task for task, n in tasks.items() if n > 1]


def _check_rejects(rejects: list[dict]) -> None:
    for reject in rejects:
        assert reject["error"], reject
        assert "raw" in reject and isinstance(reject["retryable"], bool), reject
        assert "sk-test-fake-key" not in json.dumps(reject)


def test_jobs_account_for_every_input_through_2000_faulty_requests(
    faulty: FaultyServer, tmp_path: Path
) -> None:
    from synthgraph.graphs.agentinstruct.job import InstructOptions, instruct_job
    from synthgraph.graphs.personas.graph import PersonasContext
    from synthgraph.graphs.personas.job import personas_job

    # personas: 300 texts × 4 perspectives = 1,200 calls before retries and re-asks
    _texts(tmp_path / "texts", 300, seed=1)
    context = PersonasContext(personas_per_text=4, expand_rounds=0, namespace="faults")
    personas_run = tmp_path / "personas-run"
    summary = personas_job(tmp_path / "texts", personas_run, context=context, show_progress=False)
    inputs = {r["id"] for r in _whole_lines(personas_run / "input_ids.jsonl")}
    assert len(inputs) == 300
    generated = _whole_lines(personas_run / "generated.jsonl")
    assert len({r["id"] for r in generated}) == len(generated), "no record twice"
    _check_one_tree_per_input(generated)
    done = {r["input_id"] for r in generated}
    rejects = _whole_lines(personas_run / "rejects.jsonl")
    _check_rejects(rejects)
    rejected = {r["id"] for r in rejects if r["stage"] == "generate"}
    assert done | rejected == inputs and not done & rejected, "each input once: output or reject"
    kept = [r["id"] for r in _whole_lines(personas_run / "personas.jsonl")]
    dropped = [r["id"] for r in _whole_lines(personas_run / "dropped.jsonl")]
    assert sorted(kept + dropped) == sorted(r["id"] for r in generated), "each judged once"
    assert summary.kept == len(kept)

    # instruct: 40 seeds × 5 skills, each job several calls (transform, create, answer, judge,
    # suggest, edit)
    _texts(tmp_path / "seeds", 40, seed=2)
    instruct_run = tmp_path / "instruct-run"
    five = ["coding", "open_domain_qa", "reading_comprehension", "text_modification", "tool_use"]
    options = InstructOptions(dedup="minhash", skills=five)
    result = instruct_job(tmp_path / "seeds", instruct_run, options=options, show_progress=False)
    jobs = {r["id"] for r in _whole_lines(instruct_run / "input_ids.jsonl")}  # seed/skill
    skills = json.loads((instruct_run / "manifest.json").read_text())["config"]["skills"]
    assert len(jobs) == 40 * len(skills)
    records = _whole_lines(result.instructions)
    assert len({r["id"] for r in records}) == len(records)
    finished = {r["seed_skill"] for r in records}
    rejects = _whole_lines(instruct_run / "rejects.jsonl")
    _check_rejects(rejects)
    failed = {r["id"] for r in rejects if r["stage"] == "seed"}
    assert finished | failed == jobs and not finished & failed

    assert len(faulty.requests) >= 2000, len(faulty.requests)
    assert all(faulty.injected.get(kind) for kind in ("rate_limited", "server_error", "garbage"))
    assert faulty.injected.get("truncated") and faulty.injected.get("hang")


def test_kill_9_at_ten_random_moments_then_resume_is_exactly_once(
    tmp_path: Path, isolated_settings: Path
) -> None:
    server = FaultyServer(FAULTS, seed=11, delay=0.05).start()
    try:
        texts = tmp_path / "texts"
        _texts(texts, 40, seed=3)
        run_dir = tmp_path / "run"
        env = {
            **os.environ,
            "SYNTHGRAPH_DATA_DIR": str(isolated_settings),
            "SYNTHGRAPH_BASE_URL": server.base_url,
            "SYNTHGRAPH_API_KEY": "sk-test-fake-key-0000",
            "SYNTHGRAPH_MODEL": "fake-model",
            "SYNTHGRAPH_TIMEOUT": "1",
            "SYNTHGRAPH_MAX_RETRIES": "4",
            "SYNTHGRAPH_MAX_CONCURRENCY": "4",
        }
        args = [str(texts), "--out", str(run_dir), "--per-text", "2", "--expand-rounds", "1",
                "--relations", "colleague,student", "--namespace", "kill9"]  # fmt: skip
        cli = [sys.executable, "-m", "synthgraph.graphs.cli", "personas", *args]
        rng = random.Random(5)
        kills = 0
        for attempt in range(10):
            resume = ["--resume", str(run_dir)] if (run_dir / "manifest.json").exists() else []
            process = subprocess.Popen(
                [*cli, *resume], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            # Wait until it works on the run (its manifest is written), then kill at a random moment.
            deadline = time.monotonic() + 60
            while not (run_dir / "manifest.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 4.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
            for name in ("generated.jsonl", "personas.jsonl", "dropped.jsonl", "rejects.jsonl"):
                _whole_lines(run_dir / name)  # no torn line, even right after a kill
            assert attempt or (run_dir / "manifest.json").exists()
        assert kills >= 5, "most attempts were killed mid-run"

        final = subprocess.run(
            [*cli, "--resume", str(run_dir)], env=env, capture_output=True, timeout=600
        )
        assert final.returncode == 0, final.stderr.decode()[-3000:]
    finally:
        server.stop()

    inputs = {r["id"] for r in read_jsonl(run_dir / "input_ids.jsonl")}
    assert len(inputs) == 40
    generated = _whole_lines(run_dir / "generated.jsonl")
    ids = Counter(r["id"] for r in generated)
    assert max(ids.values()) == 1, "no record written twice"
    _check_one_tree_per_input(generated)
    done = {r["input_id"] for r in generated}
    rejects = _whole_lines(run_dir / "rejects.jsonl")
    _check_rejects(rejects)
    current = {r["id"] for r in rejects if r["stage"] == "generate"} - done
    assert done | current == inputs
    kept = [r["id"] for r in _whole_lines(run_dir / "personas.jsonl")]
    dropped = [r["id"] for r in _whole_lines(run_dir / "dropped.jsonl")]
    assert sorted(kept + dropped) == sorted(ids), "every generated persona judged exactly once"


def test_a_kill_after_a_steps_writes_but_before_its_checkpoint_resumes_that_step(
    faulty: FaultyServer, tmp_path: Path
) -> None:
    """The narrow moment kill -9 can hit: a step's writes saved, the next checkpoint not.

    LangGraph then reports no next node, though the graph is not finished; the
    resumed text must continue its own tree, not start a second one.
    """
    import sqlite3

    from synthgraph.graphs.personas.graph import PersonasContext
    from synthgraph.graphs.personas.job import personas_job

    faulty.faults = FaultMix()
    _texts(tmp_path / "texts", 3, seed=4)
    context = PersonasContext(expand_rounds=1, relations=["colleague", "student"])
    run_dir = tmp_path / "run"
    personas_job(tmp_path / "texts", run_dir, context=context, show_progress=False)
    # Rewind every text to just after its first plan_round: keep that step's writes, drop
    # the checkpoints after it and the outputs, as a kill at that moment leaves them.
    with sqlite3.connect(run_dir / "checkpoint.sqlite") as db:
        for (thread,) in db.execute("select distinct thread_id from checkpoints").fetchall():
            ids = [row[0] for row in db.execute(
                "select checkpoint_id from checkpoints where thread_id = ? order by checkpoint_id",
                (thread,),
            )]  # fmt: skip
            later = ids[3:]  # input, step 0 (text_to_persona), step 1 (plan_round ran)
            db.executemany(
                "delete from checkpoints where thread_id = ? and checkpoint_id = ?",
                [(thread, c) for c in later],
            )
            db.executemany(
                "delete from writes where thread_id = ? and checkpoint_id = ?",
                [(thread, c) for c in later],
            )
    for name in ("generated.jsonl", "personas.jsonl", "dropped.jsonl"):
        (run_dir / name).unlink(missing_ok=True)

    personas_job(tmp_path / "texts", None, resume=str(run_dir), show_progress=False)
    generated = _whole_lines(run_dir / "generated.jsonl")
    _check_one_tree_per_input(generated)
    assert len(generated) == 3 * 3, "each text: its persona and two expansions"
