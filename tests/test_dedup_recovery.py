"""The dedup memory under concurrent writers, and across a job killed after its dedup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_agentinstruct import models
from test_dedup import documents

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.agentinstruct.job import OUTPUT, InstructOptions, instruct_job
from synthgraph.tools.dedup import DedupService
from synthgraph.tools.io import read_jsonl


def _dedup_process(source: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`synthgraph dedup SOURCE` in a process of its own, on the namespace `shared`."""
    args = ["dedup", str(source), "--field", "text", "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "synthgraph.graphs.cli", *args, "--method", "minhash", "--namespace", "shared"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_two_processes_deduping_one_namespace_at_once_lose_nothing(
    tmp_path: Path, isolated_settings: Path
) -> None:
    # 5,000 each: long enough that, without the lock, both load the store before either
    # saves it (one run's documents were lost in 4 of 4 trials).
    c, d = documents("c", seed=11, count=5000), documents("d", seed=12, count=5000)
    env = {**os.environ, "SYNTHGRAPH_DATA_DIR": str(isolated_settings)}
    runs = []
    for name, docs in (("c", c), ("d", d)):
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in docs))
        runs.append(_dedup_process(source, tmp_path / f"{name}.kept.jsonl", env))
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()[-2000:]
    assert [len(list(read_jsonl(tmp_path / f"{n}.kept.jsonl"))) for n in "cd"] == [5000, 5000]
    # both runs' kept documents are in the memory
    assert DedupService("shared", method="minhash").dedup(c + d, field="text").kept == []


def test_instruct_killed_between_its_dedup_and_its_output_keeps_the_records_on_resume(
    tmp_path: Path,
) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "cats.txt").write_text(
        "Cats sleep up to sixteen hours a day. They hunt at dawn and dusk."
    )
    (seeds / "bisect.py").write_text("def middle(a, b):\n    return (a + b) // 2\n")
    run_dir = tmp_path / "run"
    generator, judge = models()
    with use_chat_models(generator=generator, judge=judge):
        first = instruct_job(
            seeds,
            run_dir,
            options=InstructOptions(skills=["coding"], dedup="minhash"),
            show_progress=False,
        )
    written = sorted(r["id"] for r in read_jsonl(first.instructions))
    assert len(written) == 2
    # The kill: the dedup memory holds the kept instructions, the output does not.
    (run_dir / OUTPUT).unlink()
    generator, judge = models()
    with use_chat_models(generator=generator, judge=judge):
        again = instruct_job(
            seeds,
            run_dir,
            options=InstructOptions(skills=["coding"], dedup="minhash"),
            resume=str(run_dir),
            show_progress=False,
        )
    assert sorted(r["id"] for r in read_jsonl(again.instructions)) == written
    assert not [r for r in read_jsonl(again.rejects) if r["stage"] in ("dedup", "seed")]


OPEN_AT_ONCE = """
import sys, time
from synthgraph.tools.dedup import DedupService
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))  # all processes open the new folder together
DedupService("shared").collection().count()
"""


def test_processes_opening_one_new_chroma_folder_at_once_all_succeed(
    isolated_settings: Path,
) -> None:
    # Chroma creates its tables on first open with no guard. Unlocked, on a loaded machine,
    # 3 of 36 such processes failed ("table collections already exists"); locked, none.
    env = {**os.environ, "SYNTHGRAPH_DATA_DIR": str(isolated_settings)}
    start = f"{time.time() + 8:.3f}"  # after every interpreter has imported Chroma
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, start], env=env, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
