"""The one loop that runs a job over many records: resumable, bounded, never dies.

Every data command does the same thing: skip what a previous attempt already
wrote, process the rest concurrently under a cap, write each record's outputs
in one append (so it is all-or-nothing), send failures to the rejects file
with the reason, and show a progress bar. That loop is here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from synthgraph.graphs.cli_support import progress
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
    written: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)


def run_batch(
    run: Run,
    items: Sequence[Item],
    process: Callable[[Item], list[dict[str, Any]]],
    *,
    item_id: Callable[[Item], str],
    output: str,
    done_field: str = "source_id",
    stage: str = "process",
    description: str = "processing",
    workers: int | None = None,
    show_progress: bool = True,
    keep_outputs: bool = False,
) -> BatchResult:
    """Run `process` on every item not yet done and append its records to `output`.

    An item is done when a record in `output` has `done_field == item_id(item)`,
    or when it is already in the rejects file. `process` returns the item's
    output records (each must carry `done_field`); an exception rejects the
    item with its reason and the run goes on.
    """
    finished = run.done(output, done_field) | run.rejected_ids()
    todo = [item for item in items if item_id(item) not in finished]
    result = BatchResult(skipped=len(items) - len(todo))
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
                    log.warning(
                        "batch.rejected", record_id=record_id, stage=stage, error=str(outcome)
                    )
                    run.rejects.reject(record_id, stage, outcome)
                    result.rejected += 1
                else:
                    writer.write_many(outcome)
                    result.written += len(outcome)
                    if keep_outputs:
                        result.outputs.extend(outcome)
                result.processed += 1
                bar.advance(task)
    finally:
        writer.close()
    return result
