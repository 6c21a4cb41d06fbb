"""The personas job: texts → personas (+ expansions) → dedup, in a resumable run folder.

`personas_job` runs in two stages inside one run folder:

1. generate — one personas-graph run per input text (its personas and all
   their expansions), checkpointed in `checkpoint.sqlite` under a thread per
   text, and appended to `generated.jsonl` in one write: a text is done when
   its records are there, so a killed run redoes only unfinished texts, and
   resumes those from their last finished round. (Ray workers checkpoint in
   Postgres or in memory only: `graphs/ray_executor.py`.)
2. dedup — every generated record not yet judged goes through the two-stage
   dedup service; winners go to `personas.jsonl`, losers to `dropped.jsonl`.
   The service stores its memory before these files are written, tagged with
   the run id (its `owner`), so a kill between the two does not make a record
   a duplicate of itself on resume.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import StateSnapshot

from synthgraph.graphs.batch import LoopSaver, run_batch
from synthgraph.graphs.cli_support import progress
from synthgraph.graphs.jobs import nothing_from, open_job
from synthgraph.graphs.personas.graph import PersonasContext, builder, dedup_personas
from synthgraph.graphs.ray_executor import BlockRun, RemoteJob
from synthgraph.tools.io import TextRecord, count_records, load_texts, read_jsonl
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget

GENERATED = "generated.jsonl"
PERSONAS = "personas.jsonl"
DROPPED = "dropped.jsonl"


@dataclass
class PersonasSummary:
    run_dir: str
    texts: int = 0
    generated: int = 0
    kept: int = 0
    dropped: int = 0
    rejects: int = 0
    stages: list[list[Any]] = field(default_factory=list)
    """Rows [stage, checked, kept, dropped] of this attempt's dedup."""
    seconds: dict[str, float] = field(default_factory=dict)


def personas_job(
    source: Path,
    out: Path | None,
    *,
    context: PersonasContext | None = None,
    limit: int | None = None,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    text_field: str = "text",
    id_field: str = "id",
    show_progress: bool = True,
    budget: Budget | None = None,
) -> PersonasSummary:
    """Texts → personas (+ expansions) → dedup, in a run folder. Raises InputError / RunError.

    On `resume`, `context=None` goes on with the run's own context and limit.
    """
    texts, problems = load_texts(source, text_field=text_field, id_field=id_field)
    config = None
    if resume is None or context is not None:
        context = context or PersonasContext()
        config = {"input": str(source), "limit": limit, "context": asdict(context)}
    run, config = open_job(
        "personas", config, out=out, resume=resume, problems=problems, budget=budget
    )
    context, limit = PersonasContext(**config["context"]), config["limit"]
    if limit is not None:
        texts = texts[:limit]

    started = time.monotonic()
    batch = {"source": str(source), "retry_rejects": retry_rejects, "dedupe_ids": dedupe_ids}
    # Stage 2 dedups the whole corpus at once, so the graph of each text does not.
    generated = _generate(run, texts, replace(context, dedup="none"), show_progress, batch)
    run.timing("generate", time.monotonic() - started)

    started = time.monotonic()
    stages = _dedup_stage(run, context, show_progress)
    run.timing("dedup", time.monotonic() - started)

    summary = PersonasSummary(
        run_dir=str(run.root),
        texts=len(texts),
        generated=generated,
        kept=len(run.done(PERSONAS)),
        dropped=count_records(run.path(DROPPED)),
        stages=stages,
    )
    run.finish(
        texts=summary.texts, generated=summary.generated, kept=summary.kept, dropped=summary.dropped
    )
    summary.rejects = run.manifest["counts"]["rejects"]
    summary.seconds = dict(run.manifest["timings"])
    return summary


def _generate(
    run: Run,
    texts: list[TextRecord],
    context: PersonasContext,
    show_progress: bool,
    batch: dict[str, Any],
) -> int:
    """Stage 1: one checkpointed graph run per text; returns the records in generated.jsonl."""
    with run.checkpointer() as saver:
        # One graph for both executors: its LLM nodes have sync and async bodies.
        personas_graph = builder.compile(checkpointer=LoopSaver(saver), name="personas")
        one = _TextRun(run, personas_graph, context)
        run_batch(
            run, texts, one.process, aprocess=one.aprocess, item_id=lambda t: t.id,
            output=GENERATED, done_field="input_id", content=lambda t: t.text, stage="generate",
            description="personas", show_progress=show_progress,
            remote=RemoteJob(_on_ray_worker, (context,)), **batch,
        )  # fmt: skip
    return count_records(run.path(GENERATED))


class _TextRun:
    """One text's checkpointed graph run, sync and async, in `run`: the job's `Run`, or a Ray
    worker's `BlockRun` (`_on_ray_worker`)."""

    def __init__(self, run: Run | BlockRun, graph: Any, context: PersonasContext) -> None:
        self.run, self.graph, self.context = run, graph, context
        self.max_concurrency = get_settings().max_concurrency

    def config_for(self, text: TextRecord) -> RunnableConfig:
        return self.run.graph_config(
            configurable={"thread_id": f"{self.run.id}:{text.id}"},
            max_concurrency=self.max_concurrency,
        )

    def records(self, text: TextRecord, result: dict[str, Any]) -> list[dict[str, Any]]:
        rejects = result.get("rejects", [])
        if not any(record["round"] == 0 for record in result["personas"]):
            failed = [r for r in rejects if r["stage"] == "text_to_persona"]
            raise nothing_from(f"no persona from {text.source}", failed)
        self.run.import_rejects(rejects)  # expansions that failed; the rest of the tree is kept
        return [
            {**record, "source": text.source} if record["round"] == 0 else record
            for record in result["personas"]
        ]

    def process(self, text: TextRecord) -> list[dict[str, Any]]:
        config = self.config_for(text)
        payload, result = _resume_point(self.graph.get_state(config), text)
        if result is None:
            result = self.graph.invoke(payload, config, context=self.context)
        return self.records(text, result)

    async def aprocess(self, text: TextRecord) -> list[dict[str, Any]]:
        config = self.config_for(text)
        payload, result = _resume_point(await self.graph.aget_state(config), text)
        if result is None:
            result = await self.graph.ainvoke(payload, config, context=self.context)
        return self.records(text, result)


def _on_ray_worker(
    run: BlockRun, context: PersonasContext
) -> Callable[[TextRecord], Awaitable[list[dict[str, Any]]]]:
    """A Ray worker's `aprocess` (built once per worker): the same graph run, on the worker's
    checkpointer."""
    return _TextRun(run, builder.compile(checkpointer=run.saver, name="personas"), context).aprocess


def _resume_point(
    snapshot: StateSnapshot, text: TextRecord
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(what to invoke the text's graph with, or its finished state) from its checkpoint."""
    if snapshot.metadata is None:  # never started: the text goes in
        return {"texts": [{"id": text.id, "text": text.text}]}, None
    if not snapshot.next and "personas" in snapshot.values:  # killed before the write
        return None, snapshot.values
    # Killed mid-way. `next` is empty when a step's writes were saved but not the
    # checkpoint after it; new input would then add a second tree to the state.
    return None, None


def _dedup_stage(run: Run, context: PersonasContext, show_progress: bool) -> list[list[Any]]:
    """Stage 2: judge every generated record not yet in personas.jsonl or dropped.jsonl."""
    if not run.path(GENERATED).exists():
        return []
    judged = run.done(PERSONAS) | run.done(DROPPED)
    pending: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(run.path(GENERATED)):
        if record["id"] not in judged:
            pending.setdefault(record["id"], record)
    if not pending:
        return []
    if context.dedup == "none":  # every record is kept, unjudged
        with run.writer(PERSONAS) as personas:
            personas.write_many(list(pending.values()))
        return []
    with progress(transient=not show_progress) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"dedup ({stage})", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        # The dedup memory is written before our files: if a kill lands between the
        # two, the records stored under this run's id are not judged duplicates of
        # themselves on resume (the service's `owner`).
        result = dedup_personas(
            list(pending.values()),
            context.namespace,
            context.threshold,
            method=context.dedup,
            progress=report,
            owner=run.id,
        )
    with run.writer(PERSONAS) as personas, run.writer(DROPPED) as losers:
        personas.write_many(result.kept)
        losers.write_many(result.dropped)
    # The dedup report of this attempt, kept with the run.
    run.manifest["dedup"] = {
        stage: {"checked": checked, "kept": kept_count, "dropped": dropped_count}
        for stage, checked, kept_count, dropped_count in result.summary_rows()
    }
    run.save_manifest()
    return result.summary_rows()
