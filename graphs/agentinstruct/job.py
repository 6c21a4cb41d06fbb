"""The AgentInstruct jobs: seeds in, instruction data out; and the Hugging Face export.

`instruct_job` loads the seeds, runs the `agentinstruct` graph once per seed and
skill through the one resumable batch loop, and exports the result.
`export_job` (and the last step of `instruct_job`) writes the Hugging Face
`datasets` layout: one split per skill (`data/<skill>-00000-of-00001.parquet`) and
a dataset card (`README.md`) with counts per skill, instruction type and turns; as
chat messages.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from synthgraph.agents.agentinstruct import list_skills, load_skill
from synthgraph.agents.resilience import Rejection
from synthgraph.graphs.agentinstruct.graph import AgentInstructContext, graph
from synthgraph.graphs.batch import run_batch, unique_items
from synthgraph.graphs.jobs import current_names, open_job
from synthgraph.prompts import fill, load_prompt
from synthgraph.tools.io import (
    InputError,
    TextRecord,
    load_texts,
    read_jsonl,
    write_table,
)
from synthgraph.tools.runs import REJECTS, saved_config
from synthgraph.tools.usage import Budget

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
    turns: int = 1
    """User turns per conversation (follow-up questions past the first)."""
    max_tries: int = 1
    """Tries per seed and skill until `instructions_per_seed` instructions are kept."""
    preferences: bool = False
    """Answer each final task a second time without its text, for preference (DPO) pairs."""


@dataclass
class InstructSummary:
    run_dir: Path
    instructions: Path
    rejects: Path
    dataset: Path
    counts: dict[str, int] = field(default_factory=dict)
    """The run's counts, as its manifest holds them."""
    yields: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per skill: graph runs tried and instructions kept (the manifest's `yield`)."""


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
    budget: Budget | None = None,
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
    # Resumed as started: read the seeds with the fields the run was started with.
    fields = (
        current_names(saved_config(resume, out)) if config is None and resume else asdict(given)
    )
    records, problems = load_texts(
        source,
        text_field=fields.get("text_field", "text"),
        id_field=fields.get("id_field", "id"),
        suffixes=SEED_SUFFIXES,
    )
    run, config = open_job(
        GRAPH_NAME, config, out=out, resume=resume, problems=problems, budget=budget
    )
    context = AgentInstructContext(
        routing=config["routing"],
        transformations_per_seed=config["transformations_per_seed"],
        instructions_per_seed=config["instructions_per_seed"],
        refine_rounds=config["refine_rounds"],
        max_seed_chars=config["max_seed_chars"],
        dedup=config.get("dedup", "both"),
        turns=config.get("turns", 1),
        preferences=config.get("preferences", False),
        # One dedup memory per run: duplicates are caught across seeds and across resumes.
        namespace=f"agentinstruct-{run.id}",
        # A job killed after its dedup, before its output, meets its own stored records
        # on resume: entries this run stored under a record's id are that record.
        owner=run.id,
    )
    # Checked per seed, not per job, so a repeated seed is named (and dropped) once.
    records = unique_items(records, lambda r: r.id, source=str(source), dedupe=dedupe_ids)
    jobs = [(seed, skill) for seed in records for skill in config["skills"]]

    max_tries = config.get("max_tries", 1)
    tries: Counter[str] = Counter()  # per skill, this attempt
    tries_lock = threading.Lock()

    def process(job: tuple[TextRecord, str]) -> list[dict[str, Any]]:
        seed, skill = job
        rejects: list[Rejection] = []
        kept: list[dict[str, Any]] = []
        # --per-seed counts kept instructions: try again for the missing ones, up to --max-tries.
        for attempt in range(max_tries):
            with tries_lock:
                tries[skill] += 1
            # Another try chooses other transformations and types (and, cached, other samples).
            result = graph.invoke(
                {
                    "seeds": [{"id": seed.id, "text": seed.text, "source": seed.source}],
                    "skills": [skill],
                },
                config=run.graph_config(),
                context=replace(
                    context,
                    seed=context.seed + attempt,
                    instructions_per_seed=context.instructions_per_seed - len(kept),
                ),
            )
            rejects += result.get("rejects", [])
            kept += result["instructions"]
            if len(kept) >= context.instructions_per_seed:
                break
        retryable = not kept and any(r["retryable"] for r in rejects)
        if not retryable:  # a job tried again on resume leaves only its own reject
            run.import_rejects(rejects)
        if not kept:
            stages = Counter(r["stage"] for r in rejects)
            summary = (
                ", ".join(f"{n} at {stage}" for stage, n in stages.items()) or "nothing produced"
            )
            raise NoInstructionsError(
                f"seed {seed.source} ({seed.id}), skill {skill}: no instruction kept ({summary})",
                retryable,
            )
        return kept

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
    exported = export_dataset(instructions, dataset, title=f"synthgraph AgentInstruct run {run.id}")
    if config.get("preferences"):
        export_dataset(instructions, run.path(PREFERENCES_DIR), kind="dpo")
    run.manifest["yield"] = skill_yield(instructions, run.manifest.get("yield", {}), tries)
    run.finish(
        seeds=len(records),
        seed_problems=len(problems),
        jobs=len(jobs),
        jobs_skipped=batch.skipped,
        jobs_rejected=batch.rejected,
        instructions_written=batch.written,
        instructions=exported.records,
    )
    return InstructSummary(
        run.root,
        instructions,
        run.path(REJECTS),
        dataset,
        dict(run.manifest["counts"]),
        run.manifest["yield"],
    )


def skill_yield(
    instructions: Path, earlier: dict[str, dict[str, int]], tries: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """Per skill: graph runs tried (every attempt of the run) and instructions kept."""
    kept = (
        Counter(str(r.get("skill")) for r in read_jsonl(instructions))
        if instructions.exists()
        else Counter()
    )
    skills = sorted({*earlier, *tries, *kept})
    return {
        skill: {
            "tried": earlier.get(skill, {}).get("tried", 0) + tries.get(skill, 0),
            "kept": kept.get(skill, 0),
        }
        for skill in skills
    }


def skill_rows() -> list[list[Any]]:
    """One row per shipped skill: name, transformations, instruction types, validator."""
    skills = [load_skill(name) for name in list_skills()]
    return [[s.name, len(s.transformations), len(s.taxonomy), s.validator or "-"] for s in skills]


# --- Hugging Face datasets export ----------------------------------------------------
SHARD = "data/{split}-00000-of-00001.parquet"
"""One shard per skill: `datasets`' parquet builder reads the file name's prefix as the split."""
ExportKind = Literal["sft", "dpo"]
FORMAT_NOTES: dict[str, str] = {
    "sft": "`messages` is the conversation as a list of role/content messages "
    "(OpenAI chat format; no empty system turns), with the judge's `judge_score` "
    "and `judge_reasons` of the final answer.",
    "dpo": "Preference pairs in conversational form: `prompt` (messages), `chosen` (the "
    "refined, text-grounded answer) and `rejected` (the same task answered without its text), "
    "with both judge scores; kept where `chosen_score` exceeds `rejected_score` by at least "
    "1 point.",
}
PREFERENCE_MARGIN = 1
"""Judge points by which the chosen answer must beat the rejected one."""
PREFERENCES_DIR = "dpo"


@dataclass
class ExportSummary:
    dataset: Path
    rows: int
    records: int
    """Records read."""
    splits: dict[str, int] = field(default_factory=dict)
    """Rows per split (one split per skill)."""


def export_job(run: Path, out: Path, kind: ExportKind = "sft") -> ExportSummary:
    """Export a run folder's (or an instructions file's) records as a Hugging Face dataset."""
    instructions = run / OUTPUT if run.is_dir() else run
    if not instructions.is_file():
        raise InputError(f"{instructions}: no such file (expected a run folder holding {OUTPUT})")
    records = list(read_jsonl(instructions))  # bad bytes: InputError naming the file
    if kind == "dpo" and records and not any("rival" in r for r in records):
        raise InputError(
            f"{instructions}: no record has a rival answer; make the run with --export dpo"
        )
    return export_dataset(instructions, out, kind=kind)


def export_dataset(
    instructions: Path,
    out_dir: Path,
    title: str = "synthgraph AgentInstruct data",
    kind: ExportKind = "sft",
) -> ExportSummary:
    """Write `out_dir` as a Hugging Face dataset: one Parquet shard per skill and a dataset card.

    `sft`: every record's conversation. `dpo`: prompt, chosen (the final answer) and rejected
    (the rival answered without the text), kept where the judge prefers chosen by
    `PREFERENCE_MARGIN` points or more."""
    records = list(read_jsonl(instructions)) if instructions.exists() else []
    rows: list[dict[str, Any]] = []
    for number, record in enumerate(records, start=1):
        try:
            row = sft_row(record) if kind == "sft" else dpo_row(record)
        except (KeyError, TypeError) as error:  # not a record `synthgraph instruct` wrote
            raise InputError(
                f"{instructions}: record {number}: cannot export (no usable field {error})"
            ) from error
        if row is not None:
            rows.append(row)
    by_split: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_split.setdefault(split_name(row["skill"]), []).append(row)
    # A shard left by an earlier export (a skill no longer in the run)
    # would be read as a split of this one.
    for stale in (out_dir / "data").glob("*.parquet"):
        stale.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, split_rows in sorted(by_split.items()):
        write_table(pd.DataFrame(split_rows), out_dir / SHARD.format(split=split))
    card = fill(
        load_prompt("agentinstruct/dataset_card.md"),
        title=title,
        data_files="\n".join(
            f"  - split: {split}\n    path: data/{split}-*.parquet" for split in sorted(by_split)
        )
        or "  []",
        size_category=_size_category(len(rows)),
        format_note=FORMAT_NOTES[kind],
        rows=len(rows),
        skill_table=_count_table(["skill", "rows"], [(r["skill"],) for r in rows]),
        type_table=_count_table(
            ["skill", "instruction type", "rows"],
            [(r["skill"], r["instruction_type"]) for r in rows],
        ),
        turns_table=_count_table(
            ["user turns", "rows"],
            [(user_turns(r["messages" if kind == "sft" else "prompt"]),) for r in rows],
        ),
    )
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return ExportSummary(
        out_dir, len(rows), len(records), {s: len(v) for s, v in sorted(by_split.items())}
    )


def sft_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as an SFT row: its conversation and the judge's verdict on the final answer."""
    return {
        "id": str(record["id"]),
        "messages": clean_messages(record["messages"]),
        **_provenance(record),
        "judge_score": int(record["judge"]["score"]),
        "judge_reasons": str(record["judge"]["reasons"]),
    }


def dpo_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """A preference row, or None when the record has no rival or the judge's margin is short.

    The prompt is the conversation up to the first answer (a follow-up turn has no rival)."""
    rival = record.get("rival")
    if not rival:
        return None
    chosen_score, rejected_score = int(record["judge"]["score"]), int(rival["judge"]["score"])
    if chosen_score - rejected_score < PREFERENCE_MARGIN:
        return None
    messages = clean_messages(record["messages"])
    first_answer = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {
        "id": str(record["id"]),
        "prompt": messages[:first_answer],
        "chosen": [messages[first_answer]],
        "rejected": [{"role": "assistant", "content": str(rival["answer"])}],
        **_provenance(record),
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
        "rejected_reasons": str(rival["judge"]["reasons"]),
    }


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Role and content only, as strings; an empty system turn goes (a chat template would
    still render its markers)."""
    return [
        {"role": str(m["role"]), "content": str(m.get("content") or "")}
        for m in messages
        if m["role"] != "system" or str(m.get("content") or "").strip()
    ]


def user_turns(messages: list[dict[str, str]]) -> int:
    return sum(m["role"] == "user" for m in messages)


def split_name(skill: str) -> str:
    """A skill as a split name: `datasets` takes only word characters and dots."""
    return re.sub(r"[^\w.]+", "_", skill)


def _provenance(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "skill": str(record["skill"]),
        "transformation": str(record["transformation"]),
        "instruction_type": str(record["instruction_type"]),
        "refinement_rounds": int(record["refinement_rounds"]),
        "seed_id": str(record["seed_id"]),
    }


def _count_table(header: list[str], keys: list[tuple[Any, ...]]) -> str:
    """A markdown table of how many rows share each key, keys sorted."""
    counts = sorted(Counter(keys).items())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in (*key, n)) + " |" for key, n in counts]
    return "\n".join(lines) if counts else "(none)"


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
