"""Exactly once: `synthgraph personas` killed with SIGKILL mid-run, then `--resume`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from synthgraph.tools.io import read_jsonl

SCRIPT = Path(__file__).with_name("personas_cli_script.py")
TOPICS = [
    "tide tables", "violin repair", "tax audits", "bee keeping", "rail signalling", "cheese caves",
    "glacier melt", "chess openings", "bridge welding", "orchid growing", "court reporting", "kite surfing",
    "lunar geology", "wool dyeing", "subway maps", "vaccine cold chains",
]  # fmt: skip


def _cli(delay: float, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(delay), "personas", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def test_kill_9_and_resume_gives_every_input_its_personas_once(
    tmp_path: Path, isolated_settings: Path
) -> None:
    texts = tmp_path / "texts"
    texts.mkdir()
    for number, topic in enumerate(TOPICS):
        (texts / f"{number:02d}.txt").write_text(
            f"A short note number {number} about {topic} for our readers."
        )
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "SYNTHGRAPH_DATA_DIR": str(isolated_settings),
        "SYNTHGRAPH_MAX_CONCURRENCY": "2",
    }
    args = [
        str(texts),
        "--out",
        str(run_dir),
        "--relations",
        "colleague,student",
        "--expand-rounds",
        "2",
    ]

    # Slow fake model: each call takes 0.2 s, so the kill lands mid-generation.
    first = _cli(0.2, *args, env=env)
    generated = run_dir / "generated.jsonl"
    deadline = time.monotonic() + 120
    while _lines(generated) < 14 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, (
        f"the run ended before the kill: {first.stderr.read().decode()[-2000:]}"
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = generated.read_bytes().splitlines()
    assert 0 < len(before) < len(TOPICS) * 7, "killed mid-run, with some texts written"
    assert not (run_dir / "personas.jsonl").exists()

    resumed = _cli(0.0, *args, "--resume", str(run_dir), env=env)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]

    after = generated.read_bytes().splitlines()
    assert after[: len(before)] == before, "nothing written before the kill is lost or rewritten"
    records = list(read_jsonl(generated))
    # every text: its one persona and 2 + 4 expansions, exactly once
    per_input = Counter(r["input_id"] for r in records)
    assert len(per_input) == len(TOPICS) and set(per_input.values()) == {7}
    assert len({r["id"] for r in records}) == len(records)
    kept = [r["id"] for r in read_jsonl(run_dir / "personas.jsonl")]
    dropped = [r["id"] for r in read_jsonl(run_dir / "dropped.jsonl")]
    assert len(set(kept)) == len(kept), "no duplicate ids"
    assert sorted(kept + dropped) == sorted(r["id"] for r in records), "every record judged once"
    assert not (run_dir / "rejects.jsonl").exists() or _lines(run_dir / "rejects.jsonl") == 0
