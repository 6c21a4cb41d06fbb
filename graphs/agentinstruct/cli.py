"""`synthgraph instruct` and `synthgraph instruct-export`: options in, the job's summary out.

The work is `graphs/agentinstruct/job.py`'s; these commands parse and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgraph.graphs import cli_support
from synthgraph.graphs.agentinstruct.job import (
    ExportKind,
    InstructOptions,
    export_job,
    instruct_job,
    skill_rows,
)

DEPRECATED_FLAGS: dict[str, str] = {}
"""Old flag → new flag (none: instruct's flags already use the shared vocabulary)."""


@cli_support.with_run_options
def instruct_command(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Argument(
            metavar="INPUT",
            help="Seed documents: a folder of .txt/.md/code files, or a JSONL, Parquet or CSV file of texts.",
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
    turns: Annotated[
        int,
        typer.Option(min=1, max=8, help="User turns per conversation (follow-ups past the first)."),
    ] = 1,
    max_tries: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="Tries per seed and skill until --per-seed instructions are kept."
        ),
    ] = 1,
    export: Annotated[
        ExportKind,
        typer.Option(
            help="sft: conversations (OUT/hf). dpo: also answer each task without its text, "
            "judge both, and write preference pairs (OUT/dpo)."
        ),
    ] = "sft",
    text_field: Annotated[
        str, typer.Option(help="Text column of JSONL/Parquet/CSV seeds.")
    ] = "text",
    id_field: Annotated[str, typer.Option(help="Id column of JSONL/Parquet/CSV seeds.")] = "id",
    list_skills_only: Annotated[
        bool, typer.Option("--list-skills", help="List the shipped skills and exit.")
    ] = False,
    *,
    run_options: cli_support.RunOptions,
) -> None:
    """AgentInstruct: turn seed documents into instruction data (chat messages with provenance).

    Writes OUT/instructions.jsonl, OUT/rejects.jsonl and a Hugging Face dataset in OUT/hf/.
    """
    if list_skills_only:
        columns = ["skill", "transformations", "instruction types", "validator"]
        cli_support.stdout.print(cli_support.table("skills", columns, skill_rows()))
        return
    if source is None:
        cli_support.fail(
            "give INPUT: a folder of text or code files, or a JSONL, Parquet or CSV file"
        )
    if routing not in ("all", "sample", "llm"):
        cli_support.fail(f"--routing must be all, sample or llm, not {routing!r}")
    if dedup not in ("both", "minhash", "embedding", "none"):
        cli_support.fail(f"--dedup must be both, minhash, embedding or none, not {dedup!r}")
    if per_seed < 1 or refine_rounds < 0 or transformations < 1:
        cli_support.fail(
            "--per-seed and --transformations must be at least 1, --refine-rounds at least 0"
        )
    options = InstructOptions(
        skills=[s.strip() for s in skills.split(",") if s.strip()] if skills else [],
        instructions_per_seed=per_seed,
        refine_rounds=refine_rounds,
        routing=routing,
        transformations_per_seed=transformations,
        max_seed_chars=max_seed_chars,
        dedup=dedup,
        text_field=text_field,
        id_field=id_field,
        turns=turns,
        max_tries=max_tries,
        preferences=export == "dpo",
    )
    summary = instruct_job(
        source,
        out,
        # No option that shapes the data given on --resume: the run goes on as it started.
        options=None if cli_support.resuming_as_started(ctx, run_options.resume) else options,
        resume=run_options.resume,
        retry_rejects=run_options.retry_rejects,
        dedupe_ids=run_options.dedupe_ids,
        budget=run_options.budget,
    )
    rows = [[k, v] for k, v in summary.counts.items()]
    cli_support.stdout.print(cli_support.table("agentinstruct", ["count", "value"], rows))
    yields = [
        [skill, y["tried"], y["kept"], f"{y['kept'] / y['tried']:.2f}" if y["tried"] else "-"]
        for skill, y in summary.yields.items()
    ]
    cli_support.stdout.print(
        cli_support.table("yield per skill", ["skill", "tried", "kept", "kept/tried"], yields)
    )
    cli_support.console.print(
        f"instructions: {summary.instructions}\nrejects: {summary.rejects}\n"
        f"dataset: {summary.dataset}"
    )
    cli_support.report_run(summary.run_dir, run_options)


def instruct_export_command(
    run: Annotated[
        Path,
        typer.Argument(help="A run folder of `synthgraph instruct` (or its instructions.jsonl)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    export: Annotated[
        ExportKind,
        typer.Option(
            help="sft: conversations; dpo: preference pairs (a run made with --export dpo)."
        ),
    ] = "sft",
) -> None:
    """Export AgentInstruct output as a Hugging Face dataset: one Parquet split per skill + a card.

    Loads with `datasets.load_dataset("parquet", data_dir=OUT)`.
    """
    summary = export_job(run, out, export)
    splits = list(summary.splits.items())
    cli_support.stdout.print(cli_support.table("instruct-export", ["split", "rows"], splits))
    cli_support.console.print(
        f"dataset: {summary.dataset} ({summary.rows} rows of {summary.records} records)"
    )
