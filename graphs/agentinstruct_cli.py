"""`synthgraph instruct`: seeds in, instruction data out (JSONL and a Hugging Face dataset).

`run_instruct` is the job (shared by the CLI and the LangChain tool): it loads
the seeds, runs the `agentinstruct` graph once per seed and skill through the
one resumable batch loop, and exports the result. `export_dataset` writes the
Hugging Face `datasets` layout: `data/train-00000-of-00001.parquet` and a
dataset card (`README.md`) with counts per skill and instruction type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from synthgraph.graphs.cli_support import (
    DedupeIds,
    MaxRejectRate,
    RetryRejects,
    console,
    exit_on_rejects,
    fail,
    resuming_as_started,
    stdout,
    table,
)
from synthgraph.prompts import fill, load_prompt
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    count_records,
    load_texts,
    read_jsonl,
    write_table,
)
from synthgraph.tools.runs import Run

GRAPH_NAME = "agentinstruct"
OUTPUT = "instructions.jsonl"
DATASET_DIR = "hf"
# Prose and code: code files are seeds too (the coding skill works best on them).
SEED_SUFFIXES = (
    ".txt",
    ".md",
    ".rst",
    ".py",
    ".js",
    ".ts",
    ".go",
    ".rs",
    ".java",
    ".c",
    ".h",
    ".sh",
)


class NoInstructionsError(ValueError):
    """Every instruction of a seed and skill was rejected (the reasons are in the rejects file).

    `retryable` when one of them failed at the endpoint: the job is tried again on resume.
    """

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class InstructResult:
    run_dir: Path
    instructions: Path
    rejects: Path
    dataset: Path
    counts: dict[str, int] = field(default_factory=dict)


def run_instruct(
    seeds: Path,
    out: Path | None = None,
    *,
    skills: list[str] | None = None,
    instructions_per_seed: int = 1,
    refine_rounds: int = 1,
    routing: str = "sample",
    transformations_per_seed: int = 1,
    max_seed_chars: int = 1500,
    dedup: str = "both",
    resume: str | None = None,
    keep_config: bool = False,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    text_field: str = "text",
    id_field: str = "id",
    workers: int | None = None,
    show_progress: bool = True,
) -> InstructResult:
    """Run AgentInstruct over every seed and skill; resumable; returns paths and counts.

    Bad input (no such file, unknown skill, a run folder already used) raises
    `InputError`, `SkillError` or `RunError`; a bad seed or a failed
    instruction goes to the rejects file and the run goes on.
    """
    # Imported here so `synthgraph --help` does not load LangGraph and the dedup stack.
    from synthgraph.agents.agentinstruct import list_skills, load_skill
    from synthgraph.graphs.agentinstruct import AgentInstructContext, graph
    from synthgraph.graphs.batch import run_batch, unique_items

    config: dict[str, Any] = {
        "seeds": str(seeds),
        "skills": skills or list_skills(),
        "instructions_per_seed": instructions_per_seed,
        "refine_rounds": refine_rounds,
        "routing": routing,
        "transformations_per_seed": transformations_per_seed,
        "max_seed_chars": max_seed_chars,
        "dedup": dedup,
        "text_field": text_field,
        "id_field": id_field,
    }
    for name in config["skills"]:
        load_skill(name)
    records, problems = load_texts(
        seeds, text_field=text_field, id_field=id_field, suffixes=SEED_SUFFIXES
    )
    # `keep_config` resumes with the run's settings; otherwise those given must be the run's.
    run = Run.open(GRAPH_NAME, out=out, resume=resume, config=None if keep_config else config)
    config = run.manifest["config"]
    run.reject_inputs(problems)

    context = AgentInstructContext(
        routing=config["routing"],
        transformations_per_seed=config["transformations_per_seed"],
        instructions_per_seed=config["instructions_per_seed"],
        refine_rounds=config["refine_rounds"],
        max_seed_chars=config["max_seed_chars"],
        dedup_method=config.get("dedup", "both"),
        run_dir=str(run.root),
        # One dedup memory per run: duplicates are caught across seeds and across resumes.
        dedup_namespace=f"agentinstruct-{run.id}",
        # A job killed after its dedup, before its output, meets its own stored records
        # on resume: entries this run stored under a record's id are that record.
        dedup_owner=run.id,
    )
    # Checked per seed, not per job, so a repeated seed is named (and dropped) once.
    records = unique_items(records, lambda r: r.id, source=str(seeds), dedupe=dedupe_ids)
    jobs = [(seed, skill) for seed in records for skill in config["skills"]]

    def job_id(job: tuple[TextRecord, str]) -> str:
        return f"{job[0].id}/{job[1]}"

    def process(job: tuple[TextRecord, str]) -> list[dict[str, Any]]:
        seed, skill = job
        result = graph.invoke(
            {
                "seeds": [{"id": seed.id, "text": seed.text, "source": seed.source}],
                "skills": [skill],
            },
            config=run.graph_config(),
            context=context,
        )
        rejections = result.get("rejected", [])
        retryable = not result["instructions"] and any(r["retryable"] for r in rejections)
        if not retryable:  # a job tried again on resume leaves only its own reject
            for rejected in rejections:
                run.rejects.reject(
                    rejected["id"], rejected["stage"], rejected["error"], raw=rejected["raw"],
                    retryable=rejected["retryable"],
                )  # fmt: skip
        if not result["instructions"]:
            stages = Counter(r["stage"] for r in rejections)
            summary = (
                ", ".join(f"{n} at {stage}" for stage, n in stages.items()) or "nothing produced"
            )
            raise NoInstructionsError(
                f"seed {seed.source} ({seed.id}), skill {skill}: no instruction kept ({summary})",
                retryable,
            )
        return result["instructions"]

    batch = run_batch(
        run,
        jobs,
        process,
        item_id=job_id,
        output=OUTPUT,
        done_field="seed_skill",
        content=lambda job: job[0].text,
        source=str(seeds),
        retry_rejects=retry_rejects,
        stage="seed",
        description="seed × skill",
        workers=workers,
        show_progress=show_progress,
    )
    instructions = run.path(OUTPUT)
    dataset = export_dataset(
        instructions, run.path(DATASET_DIR), title=f"synthgraph AgentInstruct run {run.id}"
    )
    total = count_records(instructions)
    counts = {
        "seeds": len(records),
        "seed_problems": len(problems),
        "jobs": len(jobs),
        "jobs_skipped": batch.skipped,
        "jobs_rejected": batch.rejected,
        "instructions_written": batch.written,
        "instructions": total,
    }
    run.finish(**counts)
    return InstructResult(
        run.root, instructions, run.path("rejects.jsonl"), dataset, dict(run.manifest["counts"])
    )


# --- Hugging Face datasets export ----------------------------------------------------
DATASET_COLUMNS = (
    "id",
    "messages",
    "skill",
    "transformation",
    "instruction_type",
    "refinement_rounds",
    "seed_id",
    "judge_score",
    "judge_reasons",
)


def export_dataset(
    instructions: Path, out_dir: Path, title: str = "synthgraph AgentInstruct data"
) -> Path:
    """Write `out_dir` as a Hugging Face dataset: one Parquet shard and a dataset card."""
    rows = list(read_jsonl(instructions)) if instructions.exists() else []
    frame = pd.DataFrame(
        [
            {
                "id": r["id"],
                "messages": r["messages"],
                "skill": r["skill"],
                "transformation": r["transformation"],
                "instruction_type": r["instruction_type"],
                "refinement_rounds": int(r["refinement_rounds"]),
                "seed_id": str(r["seed_id"]),
                "judge_score": int(r["judge"]["score"]),
                "judge_reasons": r["judge"]["reasons"],
            }
            for r in rows
        ],
        columns=list(DATASET_COLUMNS),
    )
    write_table(frame, out_dir / "data" / "train-00000-of-00001.parquet")
    by_skill = Counter(r["skill"] for r in rows)
    by_type = Counter((r["skill"], r["instruction_type"]) for r in rows)
    card = fill(
        load_prompt("agentinstruct/dataset_card.md"),
        title=title,
        rows=len(rows),
        size_category=_size_category(len(rows)),
        skill_table=_markdown_table(["skill", "rows"], sorted(by_skill.items())),
        type_table=_markdown_table(
            ["skill", "instruction type", "rows"],
            [[s, t, n] for (s, t), n in sorted(by_type.items())],
        ),
    )
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return out_dir


def _markdown_table(header: list[str], rows: list[Any]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) if rows else "(none)"


def _size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return name
    return "n>1M"


# --- commands ---------------------------------------------------------------------------
def instruct_command(
    ctx: typer.Context,
    seeds: Annotated[
        Path | None,
        typer.Argument(
            help="A folder of .txt/.md/code files, or a JSONL, Parquet or CSV file of texts."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default data/runs/<id>).")
    ] = None,
    skills: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated skills (default: every shipped skill; see --list-skills)."
        ),
    ] = None,
    per_seed: Annotated[
        int, typer.Option("--per-seed", help="Instructions per seed and skill.")
    ] = 1,
    refine_rounds: Annotated[
        int, typer.Option("--refine-rounds", help="Suggester-editor rounds (0: none).")
    ] = 1,
    routing: Annotated[
        str,
        typer.Option(
            help="Transformations per seed: all, sample (random k) or llm (the model picks k)."
        ),
    ] = "sample",
    transformations: Annotated[int, typer.Option(help="k for --routing sample/llm.")] = 1,
    max_seed_chars: Annotated[int, typer.Option(help="Cut seeds to this many characters.")] = 1500,
    dedup: Annotated[
        str,
        typer.Option(
            help="Near-duplicate removal: both (MinHash, then embeddings), minhash, embedding, none."
        ),
    ] = "both",
    resume: Annotated[str | None, typer.Option(help="Continue this run (id or folder).")] = None,
    retry_rejects: RetryRejects = True,
    dedupe_ids: DedupeIds = False,
    max_reject_rate: MaxRejectRate = 0.5,
    text_field: Annotated[
        str, typer.Option(help="Text column of JSONL/Parquet/CSV seeds.")
    ] = "text",
    id_field: Annotated[str, typer.Option(help="Id column of JSONL/Parquet/CSV seeds.")] = "id",
    list_skills_only: Annotated[
        bool, typer.Option("--list-skills", help="List the shipped skills and exit.")
    ] = False,
) -> None:
    """AgentInstruct: turn seed documents into instruction data (chat messages with provenance).

    Writes OUT/instructions.jsonl, OUT/rejects.jsonl and a Hugging Face dataset in OUT/hf/.
    """
    from synthgraph.agents.agentinstruct import list_skills, load_skill

    if list_skills_only:
        rows = [
            [name, len(load_skill(name).transformations), len(load_skill(name).taxonomy)]
            for name in list_skills()
        ]
        stdout.print(table("skills", ["skill", "transformations", "instruction types"], rows))
        return
    if seeds is None:
        fail("give SEEDS: a folder of text or code files, or a JSONL, Parquet or CSV file")
    if routing not in ("all", "sample", "llm"):
        fail(f"--routing must be all, sample or llm, not {routing!r}")
    if dedup not in ("both", "minhash", "embedding", "none"):
        fail(f"--dedup must be both, minhash, embedding or none, not {dedup!r}")
    if per_seed < 1 or refine_rounds < 0 or transformations < 1:
        fail("--per-seed and --transformations must be at least 1, --refine-rounds at least 0")
    chosen = [s.strip() for s in skills.split(",") if s.strip()] if skills else None
    result = run_instruct(
        seeds,
        out,
        skills=chosen,
        instructions_per_seed=per_seed,
        refine_rounds=refine_rounds,
        routing=routing,
        transformations_per_seed=transformations,
        max_seed_chars=max_seed_chars,
        dedup=dedup,
        resume=resume,
        keep_config=resuming_as_started(ctx, resume),
        retry_rejects=retry_rejects,
        dedupe_ids=dedupe_ids,
        text_field=text_field,
        id_field=id_field,
    )
    summary = table("agentinstruct", ["count", "value"], [[k, v] for k, v in result.counts.items()])
    stdout.print(summary)
    console.print(
        f"instructions: {result.instructions}\nrejects: {result.rejects}\ndataset: {result.dataset}"
    )
    exit_on_rejects(result.run_dir, max_reject_rate)


def instruct_export_command(
    run: Annotated[
        Path,
        typer.Argument(help="A run folder of `synthgraph instruct` (or its instructions.jsonl)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
) -> None:
    """Export AgentInstruct output as a Hugging Face dataset (Parquet + dataset card)."""
    instructions = run / OUTPUT if run.is_dir() else run
    if not instructions.is_file():
        fail(f"{instructions}: no such file (expected a run folder holding {OUTPUT})")
    try:
        export_dataset(instructions, out)
    except (InputError, KeyError) as error:
        fail(f"{instructions}: cannot export ({error})")
    console.print(f"dataset: {out}")
