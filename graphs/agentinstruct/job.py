"""The AgentInstruct jobs: seeds in, instruction data out; and the Hugging Face export.

`instruct_job` loads the seeds, runs the `agentinstruct` graph once per seed and
skill through the one resumable batch loop, and exports the result.
`export_job` (and the last step of `instruct_job`) writes the Hugging Face
`datasets` layout: `data/train-00000-of-00001.parquet` and a dataset card
(`README.md`) with counts per skill and instruction type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from synthgraph.agents.agentinstruct import list_skills, load_skill
from synthgraph.graphs.agentinstruct.graph import AgentInstructContext, graph
from synthgraph.graphs.batch import run_batch, unique_items
from synthgraph.graphs.jobs import open_job
from synthgraph.prompts import fill, load_prompt
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    count_records,
    load_texts,
    read_jsonl,
    write_table,
)
from synthgraph.tools.runs import REJECTS

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
class InstructOptions:
    """What shapes a run's data; saved as its config (with the input), so a resume keeps it."""

    skills: list[str] = field(default_factory=list)
    """Skill names; empty: every shipped skill."""
    instructions_per_seed: int = 1
    refine_rounds: int = 1
    routing: str = "sample"
    transformations_per_seed: int = 1
    max_seed_chars: int = 1500
    dedup: str = "both"
    text_field: str = "text"
    id_field: str = "id"


@dataclass
class InstructSummary:
    run_dir: Path
    instructions: Path
    rejects: Path
    dataset: Path
    counts: dict[str, int] = field(default_factory=dict)
    """The run's counts, as its manifest holds them."""


def instruct_job(
    source: Path,
    out: Path | None = None,
    *,
    options: InstructOptions | None = None,
    resume: str | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
) -> InstructSummary:
    """Run AgentInstruct over every seed of `source` and every skill; resumable.

    `options=None` on resume keeps the run's own; options given must be the run's. Bad
    input (no such file, unknown skill, a run folder already used) raises `InputError`,
    `SkillError` or `RunError`; a bad seed or a failed instruction goes to the rejects
    file and the run goes on.
    """
    given = options or InstructOptions()
    config: dict[str, Any] | None = None
    if options is not None or resume is None:  # else: the resumed run's own config
        config = {"seeds": str(source), **asdict(given), "skills": given.skills or list_skills()}
        for name in config["skills"]:
            load_skill(name)
    records, problems = load_texts(
        source, text_field=given.text_field, id_field=given.id_field, suffixes=SEED_SUFFIXES
    )
    run, config = open_job(GRAPH_NAME, config, out=out, resume=resume, problems=problems)
    context = AgentInstructContext(
        routing=config["routing"],
        transformations_per_seed=config["transformations_per_seed"],
        instructions_per_seed=config["instructions_per_seed"],
        refine_rounds=config["refine_rounds"],
        max_seed_chars=config["max_seed_chars"],
        dedup=config.get("dedup", "both"),
        # One dedup memory per run: duplicates are caught across seeds and across resumes.
        namespace=f"agentinstruct-{run.id}",
        # A job killed after its dedup, before its output, meets its own stored records
        # on resume: entries this run stored under a record's id are that record.
        owner=run.id,
    )
    # Checked per seed, not per job, so a repeated seed is named (and dropped) once.
    records = unique_items(records, lambda r: r.id, source=str(source), dedupe=dedupe_ids)
    jobs = [(seed, skill) for seed in records for skill in config["skills"]]

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
        rejects = result.get("rejects", [])
        retryable = not result["instructions"] and any(r["retryable"] for r in rejects)
        if not retryable:  # a job tried again on resume leaves only its own reject
            run.import_rejects(rejects)
        if not result["instructions"]:
            stages = Counter(r["stage"] for r in rejects)
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
        item_id=lambda job: f"{job[0].id}/{job[1]}",
        output=OUTPUT,
        done_field="seed_skill",
        content=lambda job: job[0].text,
        source=str(source),
        retry_rejects=retry_rejects,
        stage="seed",
        description="seed × skill",
        workers=workers,
        show_progress=show_progress,
    )
    instructions, dataset = run.path(OUTPUT), run.path(DATASET_DIR)
    export_dataset(instructions, dataset, title=f"synthgraph AgentInstruct run {run.id}")
    run.finish(
        seeds=len(records),
        seed_problems=len(problems),
        jobs=len(jobs),
        jobs_skipped=batch.skipped,
        jobs_rejected=batch.rejected,
        instructions_written=batch.written,
        instructions=count_records(instructions),
    )
    return InstructSummary(
        run.root, instructions, run.path(REJECTS), dataset, dict(run.manifest["counts"])
    )


def skill_rows() -> list[list[Any]]:
    """One row per shipped skill: name, transformations, instruction types."""
    return [
        [name, len(load_skill(name).transformations), len(load_skill(name).taxonomy)]
        for name in list_skills()
    ]


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


@dataclass
class ExportSummary:
    dataset: Path
    rows: int


def export_job(run: Path, out: Path) -> ExportSummary:
    """Export a run folder's (or an instructions file's) records as a Hugging Face dataset."""
    instructions = run / OUTPUT if run.is_dir() else run
    if not instructions.is_file():
        raise InputError(f"{instructions}: no such file (expected a run folder holding {OUTPUT})")
    try:
        rows = export_dataset(instructions, out)
    except (InputError, KeyError) as error:  # not JSONL, or a record without a dataset field
        raise InputError(f"{instructions}: cannot export ({error})") from error
    return ExportSummary(out, rows)


def export_dataset(
    instructions: Path, out_dir: Path, title: str = "synthgraph AgentInstruct data"
) -> int:
    """Write `out_dir` as a Hugging Face dataset (one Parquet shard and a dataset card); its rows."""
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
    return len(rows)


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
