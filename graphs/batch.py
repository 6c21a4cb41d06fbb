"""The one loop that runs a job over many records: resumable, bounded, never dies.

Every data command does the same thing: skip what a previous attempt already
wrote, process the rest concurrently under a cap, write each record's outputs
in one append (so it is all-or-nothing), send failures to the rejects file
with the reason, and show a progress bar. That loop is here, once.

Exactly once: input ids must be distinct (or `dedupe_ids` keeps the first
copy), and an id the run already took on must keep its content
(`Run.check_inputs`). An input is done when its records are in the output, or
when it was rejected for good; an input whose rejects are all retryable (the
endpoint was down, rate-limited, or answered garbage) is tried again on resume
unless `retry_rejects` is off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from synthgraph.agents.batch_api import collecting
from synthgraph.agents.resilience import is_retryable
from synthgraph.graphs.cli_support import console, progress
from synthgraph.tools.io import InputError
from synthgraph.tools.log import get_logger
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Usage, bound

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
    done_field: str = "source_id",
    content: Callable[[Item], str] = str,
    source: str = "input",
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    stage: str = "process",
    description: str = "processing",
    workers: int | None = None,
    show_progress: bool = True,
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
    # Batch mode: enough inputs at once to fill a batch (their threads only wait).
    workers = max(1, workers or (settings.batch_size if ledger.batch else settings.max_concurrency))
    writer = run.writer(output)
    spent_before = ledger.total()

    def one(item: Item) -> tuple[str, list[dict[str, Any]] | BaseException]:
        record_id = item_id(item)
        structlog.contextvars.bind_contextvars(run_id=run.id, graph=run.graph, record_id=record_id)
        try:
            with bound(ledger, record_id):  # the item's LLM calls count in the run's ledger
                return record_id, process(item)
        except Exception as error:  # one bad record never ends the run
            return record_id, error
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "graph", "record_id")

    def cap_reached(in_flight: int) -> str | None:
        """Admit one more input only if it and those in flight fit under the caps, at the
        mean spend per input of this attempt so far."""
        spent = ledger.total()
        done_now = max(1, result.processed)
        cost = (spent.cost_usd - spent_before.cost_usd) / done_now
        tokens = (spent.tokens - spent_before.tokens) // done_now
        return ledger.over_cap(cost * (in_flight + 1), tokens * (in_flight + 1))

    waiting = iter(todo)
    running: set[Future[tuple[str, list[dict[str, Any]] | BaseException]]] = set()
    try:
        with (
            progress(transient=not show_progress) as bar,
            ThreadPoolExecutor(workers) as pool,
            collecting(run) if ledger.batch else nullcontext(),  # closed first: frees the workers
        ):
            task = bar.add_task(description, total=len(todo))
            while True:
                while len(running) < workers and not run.stopped:
                    item = next(waiting, None)
                    if item is None:
                        break
                    run.stopped = cap_reached(len(running))
                    if run.stopped:
                        log.warning("batch.stopped_at_cap", cap=run.stopped, stage=stage)
                        break
                    running.add(pool.submit(one, item))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    record_id, outcome = future.result()
                    if isinstance(outcome, BaseException):
                        retryable = is_retryable(outcome)
                        log.warning(
                            "batch.rejected", record_id=record_id, stage=stage,
                            error=str(outcome), retryable=retryable,
                        )  # fmt: skip
                        run.rejects.reject(record_id, stage, outcome, retryable=retryable)
                        result.rejected += 1
                    else:
                        writer.write_many(outcome)
                        if outcome:  # no record written: not done, a resume tries it again
                            done.add(record_id)
                        result.written += len(outcome)
                    result.processed += 1
                    run.save_manifest()  # the spend so far: a kill -9 must not hide it from a cap
                    bar.advance(task)
                    if result.processed == ESTIMATE_AFTER < len(todo):
                        _estimate(ledger.total(), spent_before, len(todo), show_progress)
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
