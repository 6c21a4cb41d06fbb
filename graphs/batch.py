"""The one loop that runs a job over many records: resumable, bounded, never dies.

Every data command does the same thing: skip what a previous attempt already
wrote, process the rest concurrently under a cap, write each record's outputs
in one append (so it is all-or-nothing), send failures to the rejects file
with the reason, and show a progress bar. That loop is here, once, on an event
loop: the thread executor runs each input's `process` in a thread pool, the
async executor its `aprocess` as a task (`--executor`, `SYNTHGRAPH_EXECUTOR`), and
the Ray executor blocks of inputs on a Ray cluster, each block with the job's
`aprocess` rebuilt in a worker (`graphs/ray_executor.py`), settled here alike.

Exactly once: input ids must be distinct (or `dedupe_ids` keeps the first
copy), and an id the run already took on must keep its content
(`Run.check_inputs`). An input is done when its records are in the output, or
when it was rejected for good; an input whose rejects are all retryable (the
endpoint was down, rate-limited, or answered garbage) is tried again on resume
unless `retry_rejects` is off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from rich.progress import Progress, TaskID

from synthgraph.agents.batch_api import collecting
from synthgraph.agents.resilience import aclose_http_client, is_retryable
from synthgraph.graphs.cli_support import console, progress
from synthgraph.tools.io import InputError, JsonlWriter
from synthgraph.tools.log import get_logger
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import Executor, Settings, get_settings
from synthgraph.tools.usage import Ledger, Usage, bound

if TYPE_CHECKING:
    from synthgraph.graphs.ray_executor import RemoteJob

Item = TypeVar("Item")
log = get_logger(__name__)
ESTIMATE_AFTER = 3
"""Inputs after which the run projects what all of them will spend."""


@dataclass
class BatchResult:
    processed: int = 0
    skipped: int = 0
    rejected: int = 0
    """Inputs rejected in this attempt."""
    written: int = 0
    inputs: int = 0
    """Distinct inputs given, done or not."""
    retried: int = 0
    """Inputs with only retryable rejects that this attempt tried again."""
    duplicates: int = 0
    """Later copies of a repeated id, dropped (only with `dedupe_ids`)."""
    inputs_rejected: int = 0
    """Inputs rejected after this attempt (current rejects, however old)."""
    inputs_retryable: int = 0
    """Of those, inputs whose every reject is retryable: a `--resume` tries them again."""


def unique_items(
    items: Sequence[Item], item_id: Callable[[Item], str], *, source: str, dedupe: bool
) -> list[Item]:
    """The items with the first copy of each id. A repeated id is bad input unless `dedupe`."""
    seen: set[str] = set()
    unique: list[Item] = []
    for item in items:
        record_id = item_id(item)
        if record_id not in seen:
            seen.add(record_id)
            unique.append(item)
        elif dedupe:
            log.warning("batch.duplicate_dropped", source=source, record_id=record_id)
        else:
            raise InputError(
                f"{source}: id {record_id!r} is used by more than one record (records without an "
                "id get one from their text); give each its own id, or pass --dedupe-ids to keep the first"
            )
    return unique


def run_batch(
    run: Run,
    items: Sequence[Item],
    process: Callable[[Item], list[dict[str, Any]]],
    *,
    item_id: Callable[[Item], str],
    output: str,
    aprocess: Callable[[Item], Awaitable[list[dict[str, Any]]]] | None = None,
    done_field: str = "source_id",
    content: Callable[[Item], str] = str,
    source: str = "input",
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    stage: str = "process",
    description: str = "processing",
    workers: int | None = None,
    show_progress: bool = True,
    remote: RemoteJob | None = None,
) -> BatchResult:
    """Run `process` on every item not yet done and append its records to `output`.

    An item is done when a record in `output` has `done_field == item_id(item)`,
    or when it has a reject that is not retryable (with `retry_rejects` off:
    any reject). `process` returns the item's output records (each must carry
    `done_field`); an exception rejects the item with its reason, retryable or
    not (`is_retryable`), and the run goes on. `content(item)` is what an id
    stands for, `source` names the input in errors. Raises `InputError` before
    any work for a repeated id (unless `dedupe_ids`) or an id whose content
    changed since the run took it on. Before admitting an input it checks the run's caps
    (`run.ledger`); past one, it admits no more, finishes those in flight and sets `run.stopped`.

    `aprocess`, the same as a coroutine, lets the async executor run the items as tasks on
    one event loop instead of threads (`executor`: the run's `--executor`, else the settings).
    `remote`, how a Ray worker rebuilds `aprocess`, lets the Ray executor run them on a cluster.
    """
    unique = unique_items(items, item_id, source=source, dedupe=dedupe_ids)
    run.check_inputs({item_id(item): content(item) for item in unique}, source)
    run.outputs[output] = done_field
    run.save_manifest()
    done = run.done(output, done_field)
    rejected = run.rejected(done)
    finished = done | rejected.final | (set() if retry_rejects else rejected.retryable)
    todo = [item for item in unique if item_id(item) not in finished]
    result = BatchResult(
        skipped=len(unique) - len(todo),
        inputs=len(unique),
        duplicates=len(items) - len(unique),
        retried=sum(1 for item in todo if item_id(item) in rejected.retryable),
    )
    ledger = run.ledger
    settings = get_settings()
    executor = executor_for(
        ledger, settings, has_async=aprocess is not None, has_remote=remote is not None
    )
    on_loop = executor == "async"
    # Batch mode: enough inputs at once to fill a batch (their threads only wait).
    workers = max(1, workers or (settings.batch_size if ledger.batch else settings.max_concurrency))
    writer = run.writer(output)
    try:
        with (
            progress(transient=not show_progress) as bar,
            ThreadPoolExecutor(workers) as pool,  # the thread executor's; idle on the async one
            collecting(run) if ledger.batch else nullcontext(),  # closed first: frees the workers
        ):
            books = _Books(run, result, writer, done, len(todo), stage, show_progress)
            books.bar, books.task = bar, bar.add_task(description, total=len(todo))

            def in_thread(item: Item) -> _Outcome:
                with books.working_on(item_id(item)) as outcome:
                    outcome.records = process(item)
                return outcome

            async def on_task(item: Item) -> _Outcome:
                assert aprocess is not None
                with books.working_on(item_id(item)) as outcome:
                    outcome.records = await aprocess(item)
                return outcome

            def start(item: Item) -> Awaitable[_Outcome]:
                if on_loop:
                    return on_task(item)
                return asyncio.get_running_loop().run_in_executor(pool, in_thread, item)

            if executor == "ray":
                from synthgraph.graphs.ray_executor import run_on_ray

                assert remote is not None
                run_on_ray(run, todo, books, remote, item_id=item_id, output=output)
            else:
                _run_to_end(_admit_and_settle(todo, start, books, workers))
    finally:
        writer.close()

    now = run.rejected(done)
    ids = [item_id(item) for item in unique]
    for record_id in ids:
        if record_id in now.retryable:
            run.batch_inputs[record_id] = "retryable"
        elif record_id in now.final:
            run.batch_inputs[record_id] = "final"
        else:
            run.batch_inputs[record_id] = None
    result.inputs_rejected = len(now.all.intersection(ids))
    result.inputs_retryable = len(now.retryable.intersection(ids))
    return result


def executor_for(
    ledger: Ledger, settings: Settings, *, has_async: bool, has_remote: bool = False
) -> Executor:
    """The executor of this attempt. Outside batch mode (whose transport is sync): `ray` for a
    job a Ray worker can rebuild (`remote`); `async` (or `ray` asked of another job) for a job
    with an async `process`. Else `thread`."""
    chosen = ledger.executor or settings.executor
    if chosen not in ("thread", "async", "ray"):
        raise InputError(f"unknown executor {chosen!r}: thread, async or ray")
    if ledger.batch or chosen == "thread":
        return "thread"
    if chosen == "ray" and has_remote:
        return "ray"
    return "async" if has_async else "thread"


def _run_to_end(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run`, in a thread of its own when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main)
        return
    with ThreadPoolExecutor(1) as own:
        own.submit(asyncio.run, main).result()


@dataclass
class _Outcome:
    record_id: str
    records: list[dict[str, Any]] | None = None
    error: Exception | None = None
    reason: str | None = None
    """The reject's text when the error was described elsewhere (a Ray worker); else from `error`."""


@contextmanager
def working_on(run_id: str, graph: str, ledger: Ledger, record_id: str) -> Iterator[_Outcome]:
    """The input's context (its LLM calls count in `ledger`, its logs name it); an exception
    becomes its outcome: one bad record never ends the run."""
    outcome = _Outcome(record_id)
    structlog.contextvars.bind_contextvars(run_id=run_id, graph=graph, record_id=record_id)
    try:
        with bound(ledger, record_id):
            yield outcome
    except Exception as error:
        outcome.error = error
    finally:
        structlog.contextvars.unbind_contextvars("run_id", "graph", "record_id")


class _Books:
    """What every executor keeps alike: the caps before each admission, one append per input,
    rejects with `retryable`, the manifest after each input, the bar, the ledger binding."""

    bar: Progress
    task: TaskID

    def __init__(
        self,
        run: Run,
        result: BatchResult,
        writer: JsonlWriter,
        done: set[str],
        todo: int,
        stage: str,
        show_progress: bool,
    ) -> None:
        self.run, self.result, self.writer, self.done = run, result, writer, done
        self.todo, self.stage, self.show_progress = todo, stage, show_progress
        self.spent_before = run.ledger.total()

    def admits(self, in_flight: int) -> bool:
        """Admit one more input only if it and those in flight fit under the caps, at the
        mean spend per input of this attempt so far."""
        ledger = self.run.ledger
        spent = ledger.total()
        done_now = max(1, self.result.processed)
        cost = (spent.cost_usd - self.spent_before.cost_usd) / done_now
        tokens = (spent.tokens - self.spent_before.tokens) // done_now
        self.run.stopped = ledger.over_cap(cost * (in_flight + 1), tokens * (in_flight + 1))
        if self.run.stopped:
            log.warning("batch.stopped_at_cap", cap=self.run.stopped, stage=self.stage)
        return not self.run.stopped

    def working_on(self, record_id: str) -> AbstractContextManager[_Outcome]:
        """`working_on` the input for this run."""
        return working_on(self.run.id, self.run.graph, self.run.ledger, record_id)

    def settle(self, outcome: _Outcome) -> None:
        """Write a finished input's records, or its reject; save the manifest."""
        result, record_id = self.result, outcome.record_id
        if outcome.error is not None:
            retryable = is_retryable(outcome.error)
            log.warning(
                "batch.rejected", record_id=record_id, stage=self.stage,
                error=str(outcome.error), retryable=retryable,
            )  # fmt: skip
            self.run.rejects.reject(
                record_id, self.stage, outcome.reason or outcome.error,
                getattr(outcome.error, "raw", None), retryable=retryable,
            )  # fmt: skip
            result.rejected += 1
        else:
            records = outcome.records or []
            self.writer.write_many(records)
            if records:  # no record written: not done, a resume tries it again
                self.done.add(record_id)
            result.written += len(records)
        result.processed += 1
        self.run.save_manifest()  # the spend so far: a kill -9 must not hide it from a cap
        self.bar.advance(self.task)
        if result.processed == ESTIMATE_AFTER < self.todo:
            _estimate(self.run.ledger.total(), self.spent_before, self.todo, self.show_progress)


async def _admit_and_settle(
    todo: Sequence[Item],
    start: Callable[[Item], Awaitable[_Outcome]],
    books: _Books,
    workers: int,
) -> None:
    """The one executor loop: keep `workers` inputs in flight (threads or tasks, as `start`
    makes them) while the caps allow, and settle each as it finishes."""
    waiting = iter(todo)
    running: set[asyncio.Future[_Outcome]] = set()
    try:
        while True:
            while len(running) < workers and not books.run.stopped:
                item = next(waiting, None)
                if item is None or not books.admits(len(running)):
                    break
                running.add(asyncio.ensure_future(start(item)))
            if not running:
                return
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for future in finished:
                # Off the loop: the append and the manifest wait on the disk; in flight go on.
                await asyncio.to_thread(books.settle, future.result())
    finally:
        await aclose_http_client()  # this loop's connections


class LoopSaver(BaseCheckpointSaver[Any]):
    """A sync checkpointer (the run's SQLite or Postgres saver) that `ainvoke` can use too:
    its async methods run the sync ones in a thread, the one place the async executor keeps
    threads, since the savers `Run.checkpointer` opens are sync-only."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.saver.get_tuple(config)

    def list(self, config: RunnableConfig | None, **kwargs: Any) -> Iterator[CheckpointTuple]:
        return self.saver.list(config, **kwargs)

    def put(self, config: RunnableConfig, *args: Any) -> RunnableConfig:
        return self.saver.put(config, *args)

    def put_writes(self, config: RunnableConfig, *args: Any, **kwargs: Any) -> None:
        self.saver.put_writes(config, *args, **kwargs)

    def delete_thread(self, thread_id: str) -> None:
        self.saver.delete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.saver.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.saver.get_tuple, config)

    async def alist(
        self, config: RunnableConfig | None, **kwargs: Any
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await asyncio.to_thread(lambda: [*self.saver.list(config, **kwargs)]):
            yield item

    async def aput(self, config: RunnableConfig, *args: Any) -> RunnableConfig:
        return await asyncio.to_thread(self.saver.put, config, *args)

    async def aput_writes(self, config: RunnableConfig, *args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.saver.put_writes, config, *args, **kwargs)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.saver.delete_thread, thread_id)


def _estimate(spent: Usage, before: Usage, inputs: int, show: bool) -> None:
    """Project this attempt's spend over all its inputs from the first few."""
    cost = (spent.cost_usd - before.cost_usd) / ESTIMATE_AFTER * inputs
    tokens = (spent.tokens - before.tokens) // ESTIMATE_AFTER * inputs
    log.info("batch.estimate", inputs=inputs, cost_usd=round(cost, 4), tokens=tokens)
    if show:
        console.print(
            f"estimate from the first {ESTIMATE_AFTER} inputs: about ${cost:.4f} and "
            f"{tokens:,} tokens for {inputs:,} (cache hits are free)"
        )
