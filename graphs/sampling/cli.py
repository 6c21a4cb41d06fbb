"""`synthgraph sampling plan|run|report`: compute-matched weak vs strong sampling.

The three fine-tuning regimes of the paper start from the exports a run writes
(`sft_weak.jsonl`, `sft_strong.jsonl`, `sft.jsonl`): knowledge distillation
(a student smaller than both learns from the weak model's data instead of the
strong one's), self-improvement (the weak model learns from its own data) and
weak-to-strong improvement (the strong model learns from the weak model's data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from synthgraph.graphs import cli_support
from synthgraph.graphs.sampling.graph import SamplingContext
from synthgraph.graphs.sampling.job import (
    DEFAULT_PARAMS,
    budget_plan,
    model_costs,
    report_job,
    sampling_job,
)
from synthgraph.tools.runs import REJECTS
from synthgraph.tools.sampling_budget import BudgetPlan, plan_budget

DEPRECATED_FLAGS: dict[str, str] = {}
"""Old flag → new flag (none: `--resume` now takes the run, which no rewrite can alias)."""

sampling_app = typer.Typer(
    help="Weak-cheap vs strong-expensive sampling at a matched compute budget."
)

WeakParams = Annotated[float, typer.Option(help="Parameters of the weak model (role weak).")]
StrongParams = Annotated[float, typer.Option(help="Parameters of the strong model (role strong).")]


def _print_plan(plan: BudgetPlan) -> None:
    cli_support.stdout.print(
        cli_support.table(
            f"budget {plan.budget:.3g} {plan.unit} for {plan.problems:,} problems "
            f"at {plan.tokens_per_solution:g} tokens per solution",
            ["model", f"{plan.unit} per solution", "samples per problem", f"{plan.unit} spent"],
            plan.rows(),
        )
    )
    cli_support.stdout.print(f"weak:strong samples ratio at a matched budget: {plan.ratio:.2f}")


def _print_report(report: dict[str, Any]) -> None:
    rows = [
        [
            r["role"],
            r["model"],
            r["k"],
            f"{r['coverage']:.3f}",
            f"{r['diversity']:.3f}",
            f"{r['flops_per_problem']:.3g}",
        ]
        for r in report["by_k"]
    ]
    cli_support.stdout.print(
        cli_support.table(
            f"coverage and diversity over {report['problems']} problems",
            ["role", "model", "k", "coverage@k", "diversity@k", "FLOPs/problem"],
            rows,
        )
    )
    fp_rows = [
        [
            f["role"],
            f["kept"],
            f["judged"],
            f["false_positives"],
            "-" if f["rate"] is None else f"{f['rate']:.3f}",
        ]
        for f in report["false_positives"]
    ]
    cli_support.stdout.print(
        cli_support.table(
            "false positives (judged reasoning)",
            ["role", "kept", "judged", "wrong reasoning", "FPR"],
            fp_rows,
        )
    )
    cli_support.stdout.print(
        f"SFT records: {report['sft_records']:,}; plots: {', '.join(report['plots'])}"
    )


@sampling_app.command()
def plan(
    budget: Annotated[float, typer.Option(help="Compute budget (FLOPs, or USD with --unit usd).")],
    problems: Annotated[int, typer.Option(help="Number of problems.")],
    tokens_per_solution: Annotated[
        float, typer.Option(help="Expected generated tokens per solution.")
    ] = 200,
    unit: Annotated[str, typer.Option(help="flops or usd.")] = "flops",
    weak_params: WeakParams = DEFAULT_PARAMS["weak"],
    strong_params: StrongParams = DEFAULT_PARAMS["strong"],
    weak_price: Annotated[
        float | None, typer.Option(help="Weak model USD per million output tokens.")
    ] = None,
    strong_price: Annotated[
        float | None, typer.Option(help="Strong model USD per million output tokens.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """How many samples per problem each model affords at the same budget (≈2·P FLOPs per token)."""
    if unit not in ("flops", "usd"):
        cli_support.fail(f"--unit must be flops or usd, not {unit!r}")
    params = {"weak": weak_params, "strong": strong_params}
    prices = {"weak": weak_price, "strong": strong_price}
    try:
        result = plan_budget(
            model_costs(params, prices), budget, problems, tokens_per_solution,
            unit=unit,  # type: ignore[arg-type]
        )  # fmt: skip
    except ValueError as error:  # a bad number is a bad option, not a bug
        cli_support.fail(str(error))
    if as_json:
        cli_support.stdout.print_json(result.model_dump_json())
    else:
        _print_plan(result)


@sampling_app.command()
@cli_support.with_run_options
def run(
    ctx: typer.Context,
    problems: Annotated[
        Path, typer.Argument(help="JSONL/CSV/Parquet with `question` and `answer` (`#### N`).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder (outputs, rejects, metrics, plots, SFT; default: data/runs/<id>)."
        ),
    ] = None,
    weak_k: Annotated[int, typer.Option(help="Solutions per problem from role weak.")] = 6,
    strong_k: Annotated[int, typer.Option(help="Solutions per problem from role strong.")] = 2,
    budget: Annotated[
        float | None, typer.Option(help="FLOPs budget: sets both k from the planner.")
    ] = None,
    tokens_per_solution: Annotated[
        float, typer.Option(help="For --budget: expected tokens.")
    ] = 200,
    judge_per_model: Annotated[
        int, typer.Option(help="Kept solutions per problem and model to judge.")
    ] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0).")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="Length cap of one solution.")] = 256,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems.")] = None,
    weak_params: WeakParams = DEFAULT_PARAMS["weak"],
    strong_params: StrongParams = DEFAULT_PARAMS["strong"],
    *,
    run_options: cli_support.RunOptions,
) -> None:
    """Sample, verify and judge; then write metrics, plots and the SFT export into the run folder."""
    if temperature <= 0:
        cli_support.fail(
            "--temperature must be > 0: sampling k solutions at temperature 0 gives k copies"
        )
    params = {"weak": weak_params, "strong": strong_params}
    if budget is not None:
        planned = budget_plan(problems, budget, tokens_per_solution, params=params, limit=limit)
        _print_plan(planned)
        weak_k, strong_k = (m.samples_per_problem for m in planned.models)
        if strong_k == 0:
            cli_support.fail(
                "the budget does not buy one strong sample per problem; raise --budget"
            )
    context = SamplingContext(
        temperature=temperature, max_tokens=max_tokens, weak_k=weak_k, strong_k=strong_k,
        judge_per_model=judge_per_model,
    )  # fmt: skip
    summary = sampling_job(
        problems, out, None if cli_support.resuming_as_started(ctx, run_options.resume) else context, resume=run_options.resume,
        params=params, limit=limit, retry_rejects=run_options.retry_rejects, dedupe_ids=run_options.dedupe_ids,
        budget=run_options.budget,
    )  # fmt: skip
    cli_support.console.print(
        f"[green]done[/] {summary.processed} problems this time ({summary.skipped} already done, "
        f"{summary.rejected} rejected: see {Path(summary.run_dir) / REJECTS})"
    )
    _print_report(summary.report)
    cli_support.report_run(summary.run_dir, run_options)


@sampling_app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A sampling run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Recompute the metrics cli_support.table, plots and SFT export of a sampling run."""
    result = report_job(run_dir)
    if as_json:
        cli_support.stdout.print_json(json.dumps(result))
    else:
        _print_report(result)
