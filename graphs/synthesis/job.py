"""The synthesis job: personas × a task → `items.jsonl` in a run folder, one append per persona."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from synthgraph.agents.personas import TASKS, bundled_few_shot
from synthgraph.graphs.batch import run_batch
from synthgraph.graphs.jobs import nothing_from, open_job
from synthgraph.graphs.synthesis.graph import SynthesisContext, context_few_shot, graph
from synthgraph.tools.io import InputError, TextRecord, count_records, load_texts
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget

ITEMS = "items.jsonl"


@dataclass
class SynthesisSummary:
    run_dir: str
    task: str = ""
    personas: int = 0
    items: int = 0
    rejects: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def few_shot_file(task: str, few_shot: str | None) -> str | None:
    """The examples file to use: `bundled` names the one shipped for `task`."""
    return str(bundled_few_shot(task)) if few_shot == "bundled" else few_shot


def synthesis_job(
    personas_file: Path,
    out: Path | None,
    *,
    context: SynthesisContext | None = None,
    limit: int | None = None,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    show_progress: bool = True,
    budget: Budget | None = None,
) -> SynthesisSummary:
    """Personas × task → items.jsonl in a run folder, one append per persona.

    On `resume`, `context=None` goes on with the run's own context and limit.
    """
    config = None
    if resume is None or context is not None:
        context = context or SynthesisContext()
        if context.task not in TASKS:
            raise InputError(f"unknown task {context.task!r}: use one of {', '.join(TASKS)}")
        context_few_shot(context, confined=False)  # a bad examples file fails before any call
        config = {"personas": str(personas_file), "limit": limit, "context": asdict(context)}
    personas, problems = load_texts(personas_file, text_field="persona", id_field="id")
    run, config = open_job(
        "synthesis", config, out=out, resume=resume, problems=problems, budget=budget
    )
    context, limit = SynthesisContext(**config["context"]), config["limit"]
    # The caller's examples file is read here, wherever it is; the graph itself reads
    # example files only inside the workspace.
    context = replace(context, few_shot=context_few_shot(context, confined=False))
    if limit is not None:
        personas = personas[:limit]
    max_concurrency = get_settings().max_concurrency

    def process(persona: TextRecord) -> list[dict[str, Any]]:
        payload = {"personas": [{"id": persona.id, "persona": persona.text}]}
        result = graph.invoke(payload, {"max_concurrency": max_concurrency}, context=context)
        rejects = result.get("rejects", [])
        if not result.get("items"):
            raise nothing_from(f"no {context.task} item for persona {persona.id}", rejects)
        run.import_rejects(rejects)  # items that failed; the persona's other items are kept
        return result["items"]

    started = time.monotonic()
    run_batch(
        run, personas, process, item_id=lambda p: p.id, output=ITEMS, done_field="persona_id",
        content=lambda p: p.text, source=str(personas_file), retry_rejects=retry_rejects,
        dedupe_ids=dedupe_ids, stage=f"synthesize.{context.task}", description=f"{context.task} items",
        show_progress=show_progress,
    )  # fmt: skip
    run.timing("synthesize", time.monotonic() - started)
    items = count_records(run.path(ITEMS))
    run.finish(personas=len(personas), items=items)
    return SynthesisSummary(
        run_dir=str(run.root),
        task=context.task,
        personas=len(personas),
        items=items,
        rejects=run.manifest["counts"]["rejects"],
        seconds=dict(run.manifest["timings"]),
    )
