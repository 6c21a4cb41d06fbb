"""The Ray executor (`--executor ray`): a job's inputs in blocks on a Ray cluster, its books
kept by the driver exactly as the local executors keep them.

`run_batch` hands over the inputs still to do and its `_Books` (the one place that writes
outputs, rejects and the manifest). Then:

1. Blocks that an earlier attempt's workers committed but its driver never merged (the
   driver was killed) are merged first.
2. The rest are cut into blocks, each named by a hash of its input ids, and become a Ray
   Dataset (`ray.data.from_items`, one row per block). `map_batches` runs the rows on a pool
   of `BlockWorker` actors, one per CPU of the cluster.
3. A worker builds the job's `aprocess` once (`RemoteJob.build`, a module-level function of
   the job), runs a block's inputs as tasks on one event loop as the async executor does,
   and commits the block: each input's records or error, its graph's rejects and its spend,
   in `RUN/blocks/<output>/<block>.jsonl` (written to a temporary name, fsynced, renamed).
4. The driver merges each committed block as its row comes back. An input the run still
   waits for is settled as the local executors settle one (one append, or its reject; its
   spend into the run's ledger; the manifest); then the file goes. An input the run no
   longer waits for (done, or settled from another copy of the block) is dropped, so each
   input is written once however often a block runs or is merged: exactly once across
   workers, a worker Ray restarts, and a killed driver.

Requests: every worker takes its slots from one gate, a Ray actor, so at most
SYNTHGRAPH_MAX_CONCURRENCY requests are in flight and SYNTHGRAPH_REQUESTS_PER_MINUTE start
per minute in the whole cluster (`Limits.gate`). A slot is leased for the request timeout
plus 10 s, so the slots of a killed worker come back when their leases end.

Checkpoints: workers on other machines cannot share the run's SQLite. With
SYNTHGRAPH_CHECKPOINT_URL set they checkpoint in Postgres, so a resumed input goes on from
its last step; without it they checkpoint in memory only, and an input whose block did not
commit starts again from scratch on resume.

Workers get the driver's SYNTHGRAPH_* and OPENAI_* environment variables as their settings,
and the run folder must be on a file system that every node sees (blocks are written
there). Caps are checked between blocks: the driver stops after the block that crosses
one, and blocks still running then are merged (and their spend counted) by a resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import pickle
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from synthgraph.agents.resilience import RateLimiter, aclose_http_client, get_limits, is_retryable
from synthgraph.graphs.batch import LoopSaver, _Books, _Outcome, _run_to_end, working_on
from synthgraph.tools.io import JsonlWriter, read_jsonl
from synthgraph.tools.log import redact
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Ledger, Usage, current_input, load_prices

Item = TypeVar("Item")
BLOCKS = "blocks"
"""The run folder's directory of committed blocks, one folder per output."""


@dataclass(frozen=True)
class RemoteJob:
    """How a Ray worker rebuilds a job's `aprocess`: `build(worker_run, *args)`, a module-level
    function of the job (workers import it) given the worker's `BlockRun`."""

    build: Callable[..., Callable[[Any], Awaitable[list[dict[str, Any]]]]]
    args: tuple[Any, ...] = ()


class BlockRun:
    """What a job's per-input function sees of its run inside a Ray worker: the run's id and
    graph config, a checkpointer (`saver`), and `import_rejects`, kept with the input being
    worked on until the driver settles it."""

    checkpointer = Run.checkpointer  # called only with SYNTHGRAPH_CHECKPOINT_URL set: Postgres

    def __init__(self, root: Path, run_id: str, graph: str) -> None:
        self.root, self.id, self.graph = root, run_id, graph
        self.imported: dict[str, list[dict[str, Any]]] = {}
        self.threads: set[str] = set()
        self.closing = ExitStack()
        self.saver: BaseCheckpointSaver[Any] = InMemorySaver()
        if get_settings().checkpoint_url:
            self.saver = LoopSaver(self.closing.enter_context(self.checkpointer()))  # type: ignore[arg-type]

    def graph_config(self, **extra: Any) -> dict[str, Any]:
        """The driver's config (`Run.graph_config`); its thread is forgotten after the block
        when checkpoints stay in memory."""
        config = Run.graph_config(self, **extra)  # type: ignore[arg-type]
        self.threads.add(config["configurable"]["thread_id"])
        return config

    def import_rejects(self, rejections: Iterable[Mapping[str, Any]]) -> None:
        self.imported.setdefault(current_input(), []).extend(dict(r) for r in rejections)

    def forget_threads(self) -> None:
        """Drop the block's in-memory checkpoints: a worker's memory holds one block's."""
        if isinstance(self.saver, InMemorySaver):
            for thread in self.threads:
                self.saver.delete_thread(thread)
        self.threads.clear()


class _Gate:
    """The cluster's request slots (a Ray actor): at most `size` in flight, `per_minute` a
    minute. A slot is a lease of `lease` seconds, longer than any request may take, so the
    slots of a worker killed mid-request come back when their leases end."""

    def __init__(self, size: int, per_minute: float | None, lease: float) -> None:
        self.size, self.lease = size, lease
        self.rate = RateLimiter(per_minute) if per_minute else None
        self.held: dict[str, float] = {}  # ticket → when its lease ends
        self.freed = asyncio.Condition()

    async def acquire(self) -> str:
        if self.rate:
            await self.rate.aacquire()
        async with self.freed:
            while len(self.held) >= self.size:
                now = time.monotonic()
                self.held = {ticket: end for ticket, end in self.held.items() if end > now}
                if len(self.held) < self.size:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.freed.wait(), min(self.held.values()) - now)
            ticket = uuid4().hex
            self.held[ticket] = time.monotonic() + self.lease
            return ticket

    async def release(self, ticket: str) -> None:
        async with self.freed:
            self.held.pop(ticket, None)
            self.freed.notify()


class _GateSlot:
    """One request's slot at the gate, for `async with` (`Limits.gate` makes one per request)."""

    def __init__(self, gate: Any) -> None:
        self.gate, self.ticket = gate, ""

    async def __aenter__(self) -> None:
        self.ticket = await self.gate.acquire.remote()

    async def __aexit__(self, *exc: object) -> None:
        await self.gate.release.remote(self.ticket)


class BlockWorker:
    """A Ray Data actor: builds the job's `aprocess` once, then runs and commits one block per
    row it is given."""

    def __init__(
        self, root: str, run_id: str, graph: str, folder: str, remote: RemoteJob, gate: Any,
        cache: bool | None,
    ) -> None:  # fmt: skip
        import ray

        settings = get_settings()
        get_limits(settings).gate = lambda: _GateSlot(gate)
        self.run = BlockRun(Path(root), run_id, graph)
        self.aprocess = remote.build(self.run, *remote.args)
        self.folder = Path(folder)
        self.prices = load_prices(settings.prices_file)
        self.cache = cache
        self.cap = max(1, settings.max_concurrency)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        for block, payload in zip(batch["block"], batch["items"], strict=True):
            lines: list[dict[str, Any]] = []
            _run_to_end(self._run(pickle.loads(payload), lines))
            self.run.forget_threads()
            header = {"block": str(block), "node": self.node, "pid": os.getpid()}
            _commit(self.folder / f"{block}.jsonl", [header, *lines])
        return {"block": [str(block) for block in batch["block"]]}

    async def _run(self, pairs: list[tuple[str, Any]], lines: list[dict[str, Any]]) -> None:
        """The block's inputs as tasks on this loop, `cap` at once, each with its own ledger."""
        cap = asyncio.Semaphore(self.cap)

        async def one(record_id: str, item: Any) -> None:
            ledger = Ledger(prices=self.prices, cache=self.cache)
            async with cap:
                with working_on(self.run.id, self.run.graph, ledger, record_id) as outcome:
                    outcome.records = await self.aprocess(item)
            lines.append(_line(outcome, ledger, self.run.imported.pop(record_id, [])))

        try:
            await asyncio.gather(*(one(record_id, item) for record_id, item in pairs))
        finally:
            await aclose_http_client()  # this loop's connections


def _line(outcome: _Outcome, ledger: Ledger, rejects: list[dict[str, Any]]) -> dict[str, Any]:
    """One input's outcome in a block file; its errors redacted (endpoints echo API keys),
    its records as they are, as the local executors write them."""
    error = outcome.error
    return {
        "id": outcome.record_id,
        "records": outcome.records if error is None else None,
        "reason": None if error is None else redact(f"{type(error).__name__}: {error}"),
        "raw": redact(getattr(error, "raw", None)),
        "retryable": error is not None and is_retryable(error),
        "rejects": redact(rejects),
        "usage": ledger.to_manifest()["rows"],
    }


def _commit(path: Path, lines: list[dict[str, Any]]) -> None:
    """Write a block whole or not at all: a temporary name of this attempt, fsync, rename."""
    temp = path.with_name(f".{path.name}.{uuid4().hex}.tmp")
    with JsonlWriter(temp) as writer:  # fsyncs
        writer.write_many(lines)
    os.replace(temp, path)


class WorkerError(Exception):
    """An input's error as a worker described it (the driver's reject keeps its text)."""

    def __init__(self, reason: str, raw: str | None, retryable: bool) -> None:
        super().__init__(reason)
        self.raw, self.retryable = raw, retryable


def _merge(path: Path, books: _Books, pending: dict[str, Any]) -> None:
    """Settle the inputs of a committed block that the run still waits for; drop the file."""
    run = books.run
    header, *lines = read_jsonl(path)
    # Inputs settled per node: which machines did the work.
    nodes = run.manifest.setdefault("ray", {}).setdefault("nodes", {})
    for line in lines:
        if line["id"] not in pending:
            continue  # done, or settled from another copy of this block
        del pending[line["id"]]
        nodes[header["node"]] = nodes.get(header["node"], 0) + 1
        run.import_rejects(line["rejects"])
        # Only this thread records into the driver's ledger: workers spend in their own.
        for key, spent in Ledger.from_manifest({"rows": line["usage"]}).rows.items():
            run.ledger.rows.setdefault(key, Usage()).add(spent)
        outcome = _Outcome(line["id"], line["records"])
        if line["reason"] is not None:
            outcome.error = WorkerError(line["reason"], line["raw"], line["retryable"])
            outcome.reason = line["reason"]
        books.settle(outcome)
    path.unlink()


def block_id(ids: Iterable[str]) -> str:
    """A block's name: the same inputs make the same block."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]


def _forwarded_env() -> dict[str, str]:
    """The driver's settings, for workers that may run where its environment is not."""
    return {k: v for k, v in os.environ.items() if k.startswith(("SYNTHGRAPH_", "OPENAI_"))}


def run_on_ray(
    run: Run,
    todo: list[Item],
    books: _Books,
    remote: RemoteJob,
    *,
    item_id: Callable[[Item], str],
    output: str,
) -> None:
    """Run `todo` in blocks on the Ray cluster (`SYNTHGRAPH_RAY_ADDRESS`, else a local Ray)
    and settle every input through `books`; see the module's docstring."""
    import ray
    import ray.data

    from synthgraph.tools.ray_support import init_ray

    folder = run.path(BLOCKS) / output
    folder.mkdir(parents=True, exist_ok=True)
    pending = {item_id(item): item for item in todo}
    for path in sorted(folder.glob("*.jsonl")):  # committed, never merged: the driver died
        _merge(path, books, pending)
    for temp in folder.glob(".*.tmp"):  # blocks an earlier attempt never committed
        temp.unlink(missing_ok=True)
    if not pending or not books.admits(0):  # all settled, or a cap already crossed
        return
    init_ray()
    settings = get_settings()
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Blocks large enough to fill a worker's cap, small enough that every actor gets a few.
    size = max(1, min(2 * settings.max_concurrency, math.ceil(len(pending) / (4 * actors))))
    pairs = list(pending.items())
    rows = []
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        rows.append({"block": block_id(i for i, _ in chunk), "items": pickle.dumps(chunk)})
    gate = (
        ray.remote(num_cpus=0)(_Gate)
        .options(name=f"synthgraph-gate-{run.id}-{uuid4().hex[:8]}")  # this attempt's
        .remote(get_limits(settings).size, settings.requests_per_minute, settings.timeout + 10)
    )
    worker = {"root": str(run.root), "run_id": run.id, "graph": run.graph, "folder": str(folder)}
    # The whole pool before the first block: else the first actor up takes every block.
    ray.data.DataContext.get_current().wait_for_min_actors_s = 600
    # A Ray Data block per block of ours: a task (one actor's work) is a Ray Data block.
    blocks = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        BlockWorker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        fn_constructor_kwargs={**worker, "remote": remote, "gate": gate, "cache": run.ledger.cache},
        runtime_env={"env_vars": _forwarded_env()},
    )
    try:
        for row in blocks.iter_rows():
            _merge(folder / f"{row['block']}.jsonl", books, pending)
            if not books.admits(0):
                break
    finally:
        ray.kill(gate)
