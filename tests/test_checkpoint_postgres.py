"""Issue 16: LangGraph checkpoints in Postgres (`SYNTHGRAPH_CHECKPOINT_URL`), against a real
Postgres that this module starts and stops."""

from __future__ import annotations

import json
import operator
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from fakes import serve
from fault_server import FaultyServer
from postgres_server import create_database, postgres_server
from test_personas_resume import _cli  # the personas CLI in a process, with the prompt-aware fake
from typer.testing import CliRunner

from synthgraph.agents.local_model import free_port
from synthgraph.graphs.cli import app
from synthgraph.graphs.personas.graph import PersonasContext, builder
from synthgraph.graphs.personas.job import personas_job
from synthgraph.tools.io import read_jsonl
from synthgraph.tools.log import REDACTED
from synthgraph.tools.runs import CHECKPOINT, Run
from synthgraph.tools.settings import get_settings

PASSWORD = "pg-pass-not-for-logs"
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """One Postgres for the module; each test takes a database of its own on it."""
    with postgres_server(PASSWORD) as url:
        yield url


@pytest.fixture
def database(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty database; this process's runs checkpoint into it."""
    url = create_database(server, f"test_{uuid.uuid4().hex[:12]}")
    _use_checkpoint_url(url, monkeypatch)
    return url


@pytest.fixture
def any_schema_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    """An endpoint that answers every request well (a JSON instance of its schema)."""
    yield from serve(FaultyServer(), monkeypatch)  # type: ignore[misc]


def _use_checkpoint_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGRAPH_CHECKPOINT_URL", url)
    get_settings.cache_clear()


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(query).fetchall()


def _threads(url: str) -> dict[str, tuple[int, int]]:
    """thread id → (its latest step, how many times input went in)."""
    rows = _rows(
        url,
        "SELECT thread_id, max((metadata->>'step')::int), "
        "count(*) FILTER (WHERE metadata->>'source' = 'input') FROM checkpoints GROUP BY thread_id",
    )
    return {thread: (step, inputs) for thread, step, inputs in rows}


def _texts(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (folder / f"{number:02d}.txt").write_text(
            f"Note {number} about tide pools and kelp {number}."
        )
    return folder


def _input_ids(run_dir: Path) -> set[str]:
    return {r["id"] for r in read_jsonl(run_dir / "input_ids.jsonl")}


def _run_id(run_dir: Path) -> str:
    return str(json.loads((run_dir / "manifest.json").read_text())["run_id"])


def _env(data_dir: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "SYNTHGRAPH_DATA_DIR": str(data_dir),
        "SYNTHGRAPH_CHECKPOINT_URL": url,
        "SYNTHGRAPH_MAX_CONCURRENCY": "2",
    }


def test_a_personas_run_checkpoints_into_postgres_not_the_run_folder(
    database: str, any_schema_server: FaultyServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    context = PersonasContext(expand_rounds=1, relations=["colleague"], dedup="none")
    summary = personas_job(
        _texts(tmp_path / "texts", 3), run_dir, context=context, show_progress=False
    )
    assert summary.generated == 3 * 2 and any_schema_server.requests
    assert not (run_dir / CHECKPOINT).exists(), "Postgres holds the checkpoints, not SQLite"
    run_id = _run_id(run_dir)
    threads = _threads(database)
    assert set(threads) == {f"{run_id}:{i}" for i in _input_ids(run_dir)}
    assert all(inputs == 1 for _, inputs in threads.values())
    for table in TABLES:
        assert _rows(database, f"SELECT count(*) FROM {table}")[0][0] > 0, table


def test_two_runs_at_once_on_one_database_keep_their_own_threads(
    database: str, tmp_path: Path, isolated_settings: Path
) -> None:
    texts = _texts(tmp_path / "texts", 4)  # both runs take the same inputs, with the same ids
    # No dedup: two processes on one local Chroma is not what this test is about.
    args = ["--relations", "colleague,student", "--expand-rounds", "1", "--dedup", "none"]
    runs = [tmp_path / "first", tmp_path / "second"]
    env = _env(isolated_settings, database)
    processes = [_cli(0.05, str(texts), "--out", str(out), *args, env=env) for out in runs]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()[-3000:]

    threads = set(_threads(database))
    first, second = ({f"{_run_id(r)}:{i}" for i in _input_ids(r)} for r in runs)
    assert len(first) == len(second) == 4 and first | second == threads
    assert not first & second
    for run_dir in runs:
        records = list(read_jsonl(run_dir / "generated.jsonl"))
        assert set(Counter(r["input_id"] for r in records).values()) == {3}, (
            run_dir / "rejects.jsonl"
        ).read_text()
        run = Run.open("personas", resume=str(run_dir))
        with run.checkpointer() as saver:
            graph = builder.compile(checkpointer=saver)
            for input_id in _input_ids(run_dir):
                state = graph.get_state({"configurable": {"thread_id": f"{run.id}:{input_id}"}})
                assert [t["id"] for t in state.values["texts"]] == [input_id]
                assert len(state.values["personas"]) == 3, "one persona, two expansions"


def test_a_run_killed_with_sigkill_resumes_from_postgres_with_every_input_once(
    database: str, tmp_path: Path, isolated_settings: Path
) -> None:
    texts = _texts(tmp_path / "texts", 12)
    run_dir = tmp_path / "run"
    args = [str(texts), "--out", str(run_dir), "--relations", "colleague,student"]
    args += ["--expand-rounds", "2"]
    env = _env(isolated_settings, database)
    generated = run_dir / "generated.jsonl"

    def midway() -> set[str]:
        """Threads that have run a node but are far from done (round 2 still to ask)."""
        done = {r["input_id"] for r in read_jsonl(generated)} if generated.exists() else set()
        if not done:  # a text written first, so the resume also skips one
            return set()
        return {
            thread
            for thread, (step, _) in _threads(database).items()
            if 0 <= step <= 2 and thread.partition(":")[2] not in done
        }

    # Slow fake model (0.2 s a call): kill once a text is written and another is half-way.
    first = _cli(0.2, *args, env=env)
    deadline = time.monotonic() + 120
    while not midway() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, f"the run ended first: {first.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted = midway()
    assert interrupted, "killed with a text half-way through its graph"
    before = generated.read_bytes().splitlines()

    resumed = _cli(0.0, *args, "--resume", str(run_dir), env=env)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]

    assert not (run_dir / CHECKPOINT).exists()
    after = generated.read_bytes().splitlines()
    assert after[: len(before)] == before, "nothing written before the kill is lost or rewritten"
    records = list(read_jsonl(generated))
    per_input = Counter(r["input_id"] for r in records)
    assert set(per_input) == _input_ids(run_dir) and set(per_input.values()) == {7}
    assert len({r["id"] for r in records}) == len(records)
    threads = _threads(database)
    assert set(threads) == {f"{_run_id(run_dir)}:{i}" for i in per_input}
    # The half-way texts went on from their checkpoint: one input each, then to the end.
    last_step = max(step for step, _ in threads.values())
    assert all(threads[t] == (last_step, 1) for t in interrupted)


class _State(TypedDict):
    rejects: Annotated[list[dict[str, str]], operator.add]


def test_a_secret_in_the_graph_state_never_reaches_postgres(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langgraph.graph import StateGraph

    key = "gw-9d41c7e2b0a6f3"  # no `sk-` in front: only the configured key says it is one
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", key)
    get_settings.cache_clear()

    def echo(state: _State) -> dict[str, Any]:  # an endpoint echoing the key in its error
        return {"rejects": [{"error": f"401: invalid key {key}"}]}

    def refuse(state: _State) -> dict[str, Any]:  # a task failing with the key in its error
        raise PermissionError(f"denied for {key}")

    graph = StateGraph(_State)
    graph.add_node(echo)
    graph.add_node(refuse)
    graph.add_edge("__start__", "echo")
    graph.add_edge("echo", "refuse")
    run = Run.open("personas", out=tmp_path / "run")
    with run.checkpointer() as saver:
        compiled = graph.compile(checkpointer=saver)
        config = run.graph_config()
        with pytest.raises(PermissionError):
            compiled.invoke({"rejects": []}, config)
        assert compiled.get_state(config).values["rejects"] == [
            {"error": f"401: invalid key {REDACTED}"}
        ]

    stored = [
        value
        for table in TABLES
        for row in _rows(database, f"SELECT * FROM {table}")
        for value in row
    ]
    text = [v if isinstance(v, bytes) else json.dumps(v, default=str).encode() for v in stored]
    assert any(REDACTED.encode() in v for v in text), "the state and the error were stored"
    assert not [v for v in text if key.encode() in v]


def test_an_unreachable_or_refusing_database_is_one_line_and_exit_2(
    server: str, any_schema_server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(tmp_path / "texts", 2)
    port = free_port()  # nothing listens there
    wrong_password = server.replace(PASSWORD, "hunter2-wrong")
    cases = {
        f"postgresql://synthgraph:{PASSWORD}@127.0.0.1:{port}/synthgraph": (
            f"the checkpoint database at postgresql://127.0.0.1:{port}/synthgraph "
            "(SYNTHGRAPH_CHECKPOINT_URL) failed: connection failed"
        ),
        wrong_password: "password authentication failed",
        f"redis://:{PASSWORD}@127.0.0.1:{port}/0": (
            f"SYNTHGRAPH_CHECKPOINT_URL must be a postgresql:// URL, not 'redis://127.0.0.1:{port}/0'"
        ),
    }
    for number, (url, said) in enumerate(cases.items()):
        _use_checkpoint_url(url, monkeypatch)
        out = tmp_path / f"run{number}"
        result = CliRunner().invoke(app, ["personas", str(texts), "--out", str(out)])
        assert result.exit_code == 2, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("error: ") and said in line, line
        assert PASSWORD not in line and "hunter2-wrong" not in line
        assert not out.joinpath("generated.jsonl").exists()
    assert any_schema_server.requests == [], "no request before the checkpoints are reachable"
