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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from synthgraph.agents.resilience import is_retryable
from synthgraph.graphs.cli_support import progress
from synthgraph.tools.io import InputError
from synthgraph.tools.log import get_logger
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings

Item = TypeVar("Item")
log = get_logger(__name__)


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
    changed since the run took it on.
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
    workers = workers or get_settings().max_concurrency
    writer = run.writer(output)

    def one(item: Item) -> tuple[str, list[dict[str, Any]] | BaseException]:
        record_id = item_id(item)
        structlog.contextvars.bind_contextvars(run_id=run.id, graph=run.graph, record_id=record_id)
        try:
            return record_id, process(item)
        except Exception as error:  # one bad record never ends the run
            return record_id, error
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "graph", "record_id")

    try:
        with (
            progress(transient=not show_progress) as bar,
            ThreadPoolExecutor(max(1, workers)) as pool,
        ):
            task = bar.add_task(description, total=len(todo))
            futures = [pool.submit(one, item) for item in todo]
            for future in as_completed(futures):
                record_id, outcome = future.result()
                if isinstance(outcome, BaseException):
                    retryable = is_retryable(outcome)
                    log.warning(
                        "batch.rejected", record_id=record_id, stage=stage, error=str(outcome),
                        retryable=retryable,
                    )  # fmt: skip
                    run.rejects.reject(record_id, stage, outcome, retryable=retryable)
                    result.rejected += 1
                else:
                    writer.write_many(outcome)
                    if outcome:  # no record written: not done, a resume tries it again
                        done.add(record_id)
                    result.written += len(outcome)
                result.processed += 1
                bar.advance(task)
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
