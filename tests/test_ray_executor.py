"""The Ray executor: personas on a two-node Ray cluster on loopback keeps the books of a
local run, its request gate caps the whole cluster, and a driver killed mid-run resumes
with every input exactly once; the merge of committed blocks, alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import serve
from fault_server import FaultyServer

from synthgraph.graphs.batch import executor_for, run_batch
from synthgraph.graphs.personas.graph import PersonasContext
from synthgraph.graphs.personas.job import personas_job
from synthgraph.graphs.ray_executor import BLOCKS, RemoteJob, _Gate, block_id
from synthgraph.tools.io import read_jsonl
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget, Ledger

RAY = Path(sys.executable).with_name("ray")
TOPICS = ("tides", "bread", "violins", "glaciers", "chess", "beekeeping", "lighthouses", "kites")


class CountingServer(FaultyServer):
    """A fake endpoint that keeps the most requests it ever had in flight at once."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold, self.in_flight, self.peak = hold, 0, 0
        self._flight_lock = threading.Lock()

    def _next(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._flight_lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.hold)  # inside the count: the request is in flight
            return super()._next(request)
        finally:
            with self._flight_lock:
                self.in_flight -= 1


def _texts(folder: Path, count: int) -> Path:
    folder.mkdir()
    for number in range(count):
        topic = TOPICS[number % len(TOPICS)]
        (folder / f"{number:03d}.txt").write_text(f"Note {number}: a keeper of {topic}, {number}.")
    return folder


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start --block` in a session of its own: stopping it stops only its processes."""
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # a loopback cluster of one test; no token to hand round
    }
    node = ["--num-cpus", "1", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
            "--object-store-memory", str(100 * 1024 * 1024), "--dashboard-agent-listen-port", "0",
            "--metrics-export-port", str(_free_port())]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(RAY), "start", *args, *node], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop these `ray start --block` sessions, and only them (`ray stop` stops every Ray of
    the machine): SIGTERM drains a node; whatever of a session is left after a few seconds
    is killed."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for(check: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            # Ray is a Python dependency: it always can start here, so not starting is a failure.
            pytest.fail(f"Ray did not start ({what}): {tail}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node on loopback, one CPU each (so each runs one block actor);
    the address, for SYNTHGRAPH_RAY_ADDRESS. Stopped after the module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Short: Ray's socket paths live under it.
    folder = Path(tempfile.mkdtemp(prefix="sgray", dir="/tmp"))
    port = _free_port()
    head_log, node_log = folder / "head.log", folder / "node.log"
    head = _ray_start(
        ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(folder),
         "--ray-client-server-port", str(_free_port())],
        head_log,
    )  # fmt: skip
    node = None
    try:
        _wait_for(lambda: "Ray runtime started" in head_log.read_text(), 120, "head", head_log)
        address = f"127.0.0.1:{port}"
        node = _ray_start(["--address", address], node_log)
        ray.init(address=address, log_to_driver=False)
        alive = lambda: sum(n["Alive"] for n in ray.nodes()) == 2  # noqa: E731
        _wait_for(alive, 120, "second node", node_log)
        yield address
    finally:
        ray.shutdown()
        _stop([process for process in (node, head) if process is not None])
        shutil.rmtree(folder, ignore_errors=True)


def _on_cluster(monkeypatch: pytest.MonkeyPatch, address: str, concurrency: int) -> None:
    """Runs go to the cluster, under this cap, without the response cache (every call is sent)."""
    monkeypatch.setenv("SYNTHGRAPH_RAY_ADDRESS", address)
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", str(concurrency))
    monkeypatch.setenv("SYNTHGRAPH_CACHE", "false")


def test_ray_runs_jobs_that_a_worker_can_rebuild() -> None:
    settings = get_settings()
    ray = Ledger(executor="ray")
    assert executor_for(ray, settings, has_async=True, has_remote=True) == "ray"
    assert executor_for(ray, settings, has_async=True) == "async"
    assert executor_for(ray, settings, has_async=False) == "thread"
    assert executor_for(Ledger(executor="ray", batch=True), settings, has_async=True) == "thread"


def test_the_gate_caps_slots_and_takes_back_a_dead_holders_slot_when_its_lease_ends() -> None:
    async def scenario() -> None:
        gate = _Gate(size=2, per_minute=None, lease=0.3)
        first, second = await gate.acquire(), await gate.acquire()
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert not waiting.done(), "both slots are taken"
        await gate.release(first)
        third = await asyncio.wait_for(waiting, 10)
        assert set(gate.held) == {second, third}
        # `second` and `third` are never released (their worker was killed): the leases end.
        fourth = await asyncio.wait_for(gate.acquire(), 10)
        assert fourth in gate.held and second not in gate.held

    asyncio.run(scenario())


def _never(*_: Any) -> Any:
    raise AssertionError("no block is left to run")


def test_committed_blocks_are_merged_once_for_inputs_still_pending(tmp_path: Path) -> None:
    """A driver killed after its workers committed blocks: the resume settles them before
    anything runs, each input once, whatever copies of a block there are."""
    run = Run.open("test", out=tmp_path / "run")
    run.ledger.executor = "ray"
    folder = run.path(BLOCKS) / "out.jsonl"
    folder.mkdir(parents=True)
    usage = Ledger()
    usage.record("generator", "fake-model", "make", prompt_tokens=3, completion_tokens=2)
    lines = [
        {"id": "a", "records": [{"source_id": "a", "n": 1}], "reason": None, "raw": None,
         "retryable": False, "rejects": [], "usage": usage.to_manifest()["rows"]},
        {"id": "b", "records": None, "reason": "ValueError: no", "raw": "<html>",
         "retryable": True, "rejects": [], "usage": []},
        {"id": "gone", "records": [{"source_id": "gone"}], "reason": None, "raw": None,
         "retryable": False, "rejects": [], "usage": []},
    ]  # fmt: skip
    for name in (block_id(["a", "b"]), "copy"):  # the same block committed twice
        header = {"block": name, "node": "n1"}
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in [header, *lines])
        )
    (folder / ".half.tmp").write_text('{"block"')  # a block that never committed

    result = run_batch(
        run, ["a", "b"], _never, item_id=str, output="out.jsonl", show_progress=False,
        remote=RemoteJob(_never), retry_rejects=False,
    )  # fmt: skip

    assert (result.processed, result.written, result.rejected) == (2, 1, 1)
    assert list(read_jsonl(run.path("out.jsonl"))) == [{"source_id": "a", "n": 1}]
    rejects = list(read_jsonl(run.path("rejects.jsonl")))
    assert [(r["id"], r["error"], r["raw"], r["retryable"]) for r in rejects] == [
        ("b", "ValueError: no", "<html>", True)
    ]
    assert run.ledger.total().calls == 1, "a block's spend counts once"
    assert run.manifest["ray"]["nodes"] == {"n1": 2}
    assert list(folder.iterdir()) == []


@pytest.mark.cluster
def test_personas_on_two_nodes_keep_a_thread_runs_books_under_one_gate(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_cluster(monkeypatch, cluster, concurrency=3)
    server = CountingServer(hold=0.05)
    texts = _texts(tmp_path / "texts", 12)
    runs = {}
    for _ in serve(server, monkeypatch):
        for executor in ("thread", "ray"):
            server.peak = 0
            context = PersonasContext(
                expand_rounds=1, relations=["colleague"], dedup="none", namespace=executor
            )
            summary = personas_job(
                texts, tmp_path / executor, context=context, show_progress=False,
                budget=Budget(executor=executor),
            )  # fmt: skip
            runs[executor] = Path(summary.run_dir)
    thread, ray = (json.loads((runs[e] / "manifest.json").read_text()) for e in ("thread", "ray"))
    assert ray["counts"] == thread["counts"]
    assert ray["counts"]["generated"] == 12 * 2
    calls = [[(r["stage"], r["calls"]) for r in m["usage"]["rows"]] for m in (thread, ray)]
    assert calls[0] == calls[1]
    generated = {e: list(read_jsonl(runs[e] / "generated.jsonl")) for e in runs}
    assert Counter(r["input_id"] for r in generated["ray"]) == Counter(
        r["input_id"] for r in generated["thread"]
    )
    assert max(Counter(r["id"] for r in generated["ray"]).values()) == 1
    nodes = ray["ray"]["nodes"]
    assert len(nodes) == 2 and sum(nodes.values()) == 12, "both nodes ran blocks"
    assert server.peak <= 3, "the gate caps requests in flight across both workers"
    assert not _files(runs["ray"] / BLOCKS), "every block merged"


@pytest.mark.cluster
def test_a_driver_killed_mid_run_resumes_every_input_exactly_once(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_cluster(monkeypatch, cluster, concurrency=2)
    texts = _texts(tmp_path / "texts", 30)
    run_dir = tmp_path / "run"
    generated = run_dir / "generated.jsonl"
    for _ in serve(CountingServer(hold=0.1), monkeypatch):
        driver = subprocess.Popen(
            [sys.executable, "-m", "synthgraph.graphs.cli", "personas", str(texts),
             "--out", str(run_dir), "--expand-rounds", "1", "--relations", "colleague",
             "--dedup", "none", "--executor", "ray"],
            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        # Killed once some blocks are merged and others are still running.
        while driver.poll() is None and time.monotonic() < deadline:
            if generated.exists() and len(list(read_jsonl(generated))) >= 6:
                break
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert len(list(read_jsonl(generated))) < 60, "killed mid-run"
        personas_job(
            texts, None, resume=str(run_dir), show_progress=False, budget=Budget(executor="ray")
        )

    inputs = {r["id"] for r in read_jsonl(run_dir / "input_ids.jsonl")}
    assert len(inputs) == 30
    records = list(read_jsonl(generated))
    assert max(Counter(r["id"] for r in records).values()) == 1, "no record written twice"
    per_input = Counter(r["input_id"] for r in records)
    assert set(per_input) == inputs and set(per_input.values()) == {2}, "each input's tree once"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["generated"] == 60 and manifest["status"] == "done"
    assert not _files(run_dir / BLOCKS)


def _block_workers() -> list[int]:
    """Pids of the Ray Data actors that run blocks (Ray titles them after `BlockWorker`)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if b"BlockWorker" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.cluster
def test_a_worker_killed_mid_run_leaves_every_input_exactly_once_after_resume(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_cluster(monkeypatch, cluster, concurrency=16)
    # A request's slot is leased for the timeout + 10 s: the killed worker's come back soon.
    monkeypatch.setenv("SYNTHGRAPH_TIMEOUT", "5")
    count = 2000
    texts = _texts(tmp_path / "texts", count)
    run_dir = tmp_path / "run"
    generated = run_dir / "generated.jsonl"
    args = [sys.executable, "-m", "synthgraph.graphs.cli", "personas", str(texts), "--out",
            str(run_dir), "--expand-rounds", "0", "--dedup", "none", "--executor", "ray"]  # fmt: skip
    for _ in serve(CountingServer(hold=0.02), monkeypatch):
        driver = subprocess.Popen(
            args, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if generated.exists() and len(generated.read_bytes().splitlines()) >= 200:
                break
            time.sleep(0.1)
        workers = _block_workers()
        assert driver.poll() is None and workers, driver.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = driver.communicate(timeout=900)
        # Ray restarts the actor and runs its block again, or the driver fails: resume.
        resumed = subprocess.run(
            [*args, "--resume", str(run_dir)], env=dict(os.environ), capture_output=True,
            timeout=900,
        )  # fmt: skip
        assert resumed.returncode == 0, (stderr + resumed.stderr).decode()[-3000:]

    inputs = {r["id"] for r in read_jsonl(run_dir / "input_ids.jsonl")}
    assert len(inputs) == count
    records = list(read_jsonl(generated))
    assert max(Counter(r["id"] for r in records).values()) == 1, "no record written twice"
    per_input = Counter(r["input_id"] for r in records)
    assert set(per_input) == inputs and set(per_input.values()) == {1}, "each input once"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["generated"] == count and manifest["status"] == "done"
    assert not _files(run_dir / BLOCKS)
