"""`synthgraph personas` and `synthgraph synthesize`: the two graphs over whole corpora.

`personas_job` runs in two resumable stages inside one run folder:

1. generate — one personas-graph run per input text (its personas and all
   their expansions), checkpointed in `checkpoint.sqlite` under a thread per
   text, and appended to `generated.jsonl` in one write: a text is done when
   its records are there, so a killed run redoes only unfinished texts, and
   resumes those from their last finished round.
2. dedup — every generated record not yet judged goes through the two-stage
   dedup service; winners go to `personas.jsonl`, losers to `dropped.jsonl`.

`synthesis_job` writes `items.jsonl`, one append per persona.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from synthgraph.agents.llm import StructuredOutputError
from synthgraph.agents.personas import TASKS, bundled_few_shot
from synthgraph.graphs.batch import run_batch
from synthgraph.graphs.cli_support import (
    DedupeIds,
    MaxRejectRate,
    RetryRejects,
    console,
    exit_on_rejects,
    fail,
    progress,
    resuming_as_started,
    stdout,
    table,
)
from synthgraph.graphs.personas import DEFAULT_RELATIONS, PersonasContext, builder, dedup_personas
from synthgraph.graphs.synthesis import SynthesisContext, context_few_shot
from synthgraph.graphs.synthesis import graph as synthesis_graph
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    count_records,
    load_texts,
    read_jsonl,
)
from synthgraph.tools.log import get_logger
from synthgraph.tools.runs import Run, RunError
from synthgraph.tools.settings import get_settings

log = get_logger(__name__)
GENERATED = "generated.jsonl"
PERSONAS = "personas.jsonl"
DROPPED = "dropped.jsonl"
ITEMS = "items.jsonl"


def _nothing_from(what: str, failed: list[dict[str, Any]]) -> StructuredOutputError:
    """An input that gave nothing: every cause, and the model's first raw reply to look at."""
    errors = [r["error"] for r in failed]
    raw = next((r["raw"] for r in failed if r.get("raw")), None)
    return StructuredOutputError(f"{what}: {'; '.join(errors)}", raw, errors)


# --- personas -------------------------------------------------------------------
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
    max_records: int | None = None,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    text_field: str = "text",
    id_field: str = "id",
    show_progress: bool = True,
) -> PersonasSummary:
    """Texts → personas (+ expansions) → dedup, in a run folder. Raises InputError / RunError."""
    # Resuming without knobs keeps the run's; knobs given must be the run's (Run.open checks).
    keep = resume is not None and context is None
    context = context or PersonasContext()
    texts, problems = load_texts(source, text_field=text_field, id_field=id_field)
    config = {"input": str(source), "max_records": max_records, "context": asdict(context)}
    run = Run.open("personas", out=out, resume=resume, config=None if keep else config)
    if resume:  # a resumed run keeps the knobs it started with
        context = PersonasContext(**run.manifest["config"]["context"])
        max_records = run.manifest["config"]["max_records"]
    if max_records is not None:
        texts = texts[:max_records]
    context = replace(context, dedup=False)  # stage 2 below dedups the whole corpus at once
    run.reject_inputs(problems, "input")

    started = time.monotonic()
    batch = {"source": str(source), "retry_rejects": retry_rejects, "dedupe_ids": dedupe_ids}
    generated = _generate(run, texts, context, show_progress, batch)
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
    max_concurrency = get_settings().max_concurrency
    with run.checkpointer() as saver:
        personas_graph = builder.compile(checkpointer=saver, name="personas")

        def process(text: TextRecord) -> list[dict[str, Any]]:
            config = run.graph_config(
                configurable={"thread_id": f"{run.id}:{text.id}"}, max_concurrency=max_concurrency
            )
            snapshot = personas_graph.get_state(config)
            if snapshot.metadata is None:  # never started: the text goes in
                payload = {"texts": [{"id": text.id, "text": text.text}]}
                result = personas_graph.invoke(payload, config, context=context)
            elif not snapshot.next and "personas" in snapshot.values:  # killed before the write
                result = snapshot.values
            else:
                # Killed mid-way. `next` is empty when a step's writes were saved but not the
                # checkpoint after it; new input would then add a second tree to the state.
                result = personas_graph.invoke(None, config, context=context)
            rejects = result.get("rejects", [])
            if not any(record["round"] == 0 for record in result["personas"]):
                failed = [r for r in rejects if r["stage"] == "text_to_persona"]
                raise _nothing_from(f"no persona from {text.source}", failed)
            known = run.rejected_ids()
            for reject in rejects:  # expansions that failed; the rest of the tree is kept
                if reject["id"] not in known:
                    run.rejects.reject(
                        reject["id"], reject["stage"], reject["error"], reject.get("raw")
                    )
            return [
                {**record, "source": text.source} if record["round"] == 0 else record
                for record in result["personas"]
            ]

        run_batch(
            run, texts, process, item_id=lambda t: t.id, output=GENERATED, done_field="input_id",
            content=lambda t: t.text, stage="generate", description="personas",
            show_progress=show_progress, **batch,
        )  # fmt: skip
    return count_records(run.path(GENERATED))


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


# --- synthesis --------------------------------------------------------------------
@dataclass
class SynthesisSummary:
    run_dir: str
    personas: int = 0
    items: int = 0
    rejects: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def synthesis_job(
    personas_file: Path,
    out: Path | None,
    *,
    context: SynthesisContext | None = None,
    max_records: int | None = None,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    show_progress: bool = True,
) -> SynthesisSummary:
    """Personas × task → items.jsonl in a run folder, one append per persona."""
    # Resuming without knobs keeps the run's; knobs given must be the run's (Run.open checks).
    keep = resume is not None and context is None
    context = context or SynthesisContext()
    if context.task not in TASKS:
        raise InputError(f"unknown task {context.task!r}: use one of {', '.join(TASKS)}")
    context_few_shot(context, confined=False)  # a bad examples file fails before any call
    personas, problems = load_texts(personas_file, text_field="persona", id_field="id")
    config = {
        "personas": str(personas_file),
        "max_records": max_records,
        "context": asdict(context),
    }
    run = Run.open("synthesis", out=out, resume=resume, config=None if keep else config)
    if resume:  # a resumed run keeps the knobs it started with
        context = SynthesisContext(**run.manifest["config"]["context"])
        max_records = run.manifest["config"]["max_records"]
    # The caller's examples file is read here, wherever it is; the graph itself reads
    # example files only inside the workspace.
    context = replace(context, few_shot=context_few_shot(context, confined=False))
    if max_records is not None:
        personas = personas[:max_records]
    run.reject_inputs(problems, "input")
    max_concurrency = get_settings().max_concurrency

    def process(persona: TextRecord) -> list[dict[str, Any]]:
        payload = {"personas": [{"id": persona.id, "persona": persona.text}]}
        result = synthesis_graph.invoke(
            payload, {"max_concurrency": max_concurrency}, context=context
        )
        if not result.get("items"):
            failed = result.get("rejects", [])
            raise _nothing_from(f"no {context.task} item for persona {persona.id}", failed)
        known = run.rejected_ids()
        for reject in result.get("rejects", []):
            if reject["id"] not in known:
                run.rejects.reject(
                    reject["id"], reject["stage"], reject["error"], reject.get("raw")
                )
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
        personas=len(personas),
        items=items,
        rejects=run.manifest["counts"]["rejects"],
        seconds=dict(run.manifest["timings"]),
    )


# --- commands ----------------------------------------------------------------------
def personas_command(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="A folder of .txt/.md files, a JSONL, CSV or Parquet file.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<id>).")
    ] = None,
    expand_rounds: Annotated[
        int, typer.Option(min=0, max=6, help="Persona-to-Persona rounds.")
    ] = 1,
    relations: Annotated[
        str, typer.Option(help="Comma-separated relations to expand along.")
    ] = ",".join(DEFAULT_RELATIONS),
    per_text: Annotated[
        int,
        typer.Option(
            "--per-text",
            min=1,
            max=4,
            help="Personas per text: who would read, write, like, dislike it.",
        ),
    ] = 1,
    expand_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Expand at most this many personas per round and text."),
    ] = None,
    max_records: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N input texts.")
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="Text column/field of JSONL, CSV or Parquet input.")
    ] = "text",
    id_field: Annotated[
        str, typer.Option(help="Id column/field (default: content-derived ids).")
    ] = "id",
    namespace: Annotated[str, typer.Option(help="Dedup memory shared by runs.")] = "personas",
    threshold: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Dedup threshold (both stages).")
    ] = 0.9,
    temperature: Annotated[
        float,
        typer.Option(min=0.0, max=2.0, help="0: the same text gives the same persona on rerun."),
    ] = 0.0,
    resume: Annotated[str | None, typer.Option(help="Continue this run (id or folder).")] = None,
    retry_rejects: RetryRejects = True,
    dedupe_ids: DedupeIds = False,
    max_reject_rate: MaxRejectRate = 0.5,
) -> None:
    """Infer personas from texts, expand them through relations, dedup them (PersonaHub)."""
    names = [r.strip() for r in relations.split(",") if r.strip()]
    if expand_rounds and not names:
        fail("--relations is empty: name at least one relation (e.g. colleague,student)")
    context = PersonasContext(
        personas_per_text=per_text, relations=names, expand_rounds=expand_rounds,
        expand_limit=expand_limit, namespace=namespace, threshold=threshold, temperature=temperature,
    )  # fmt: skip
    try:
        summary = personas_job(
            source, out, context=None if resuming_as_started(ctx, resume) else context,
            max_records=max_records, resume=resume,
            retry_rejects=retry_rejects, dedupe_ids=dedupe_ids, text_field=text_field,
            id_field=id_field,
        )  # fmt: skip
    except (InputError, RunError, ValueError) as error:
        fail(str(error))
    console.print(
        f"[green]done[/] {summary.run_dir}: {summary.kept} personas kept, {summary.dropped} dropped"
    )
    stdout.print(table("dedup", ["stage", "checked", "kept", "dropped"], summary.stages))
    rows = [
        ["texts", summary.texts], ["generated", summary.generated], ["kept", summary.kept],
        ["dropped", summary.dropped], ["rejects", summary.rejects],
        *[[f"time: {stage}", f"{seconds:.1f} s"] for stage, seconds in summary.seconds.items()],
    ]  # fmt: skip
    stdout.print(table("personas", ["", "count"], rows))
    exit_on_rejects(summary.run_dir, max_reject_rate)


def synthesize_command(
    ctx: typer.Context,
    personas: Annotated[
        Path, typer.Option("--personas", help="personas.jsonl (fields id, persona).")
    ],
    task: Annotated[str, typer.Option(help=f"One of: {', '.join(TASKS)}.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<id>).")
    ] = None,
    per_persona: Annotated[int, typer.Option(min=1, max=20, help="Items per persona.")] = 1,
    few_shot: Annotated[
        str | None,
        typer.Option(help="JSONL of example items, or 'bundled' for the shipped examples."),
    ] = None,
    max_records: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N personas.")
    ] = None,
    resume: Annotated[str | None, typer.Option(help="Continue this run (id or folder).")] = None,
    retry_rejects: RetryRejects = True,
    dedupe_ids: DedupeIds = False,
    max_reject_rate: MaxRejectRate = 0.5,
) -> None:
    """Write task items (math, instruction, knowledge, npc, tool) from each persona's view."""
    if task not in TASKS:
        fail(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    few_shot_file = str(bundled_few_shot(task)) if few_shot == "bundled" else few_shot
    context = SynthesisContext(task=task, per_persona=per_persona, few_shot_file=few_shot_file)
    try:
        summary = synthesis_job(
            personas, out, context=None if resuming_as_started(ctx, resume) else context,
            max_records=max_records, resume=resume,
            retry_rejects=retry_rejects, dedupe_ids=dedupe_ids,
        )  # fmt: skip
    except (InputError, RunError, ValueError) as error:
        fail(str(error))
    rows = [
        ["personas", summary.personas], ["items", summary.items], ["rejects", summary.rejects],
        *[[f"time: {stage}", f"{seconds:.1f} s"] for stage, seconds in summary.seconds.items()],
    ]  # fmt: skip
    console.print(f"[green]done[/] {summary.run_dir}/{ITEMS}")
    stdout.print(table(f"synthesize {task}", ["", "count"], rows))
    exit_on_rejects(summary.run_dir, max_reject_rate)
