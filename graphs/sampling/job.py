"""The sampling job: the graph over a problems file, in a resumable run folder.

`sampling_job` opens the run (`open_job`), samples, verifies and judges every
problem not yet done through the one batch loop (`samples.jsonl`, one append
per problem), then writes the metrics, plots and SFT exports (`build_report`).
`report_job` recomputes those of a run folder; `budget_plan` turns a compute
budget into the k of each model for a problems file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthgraph.graphs.batch import run_batch, unique_items
from synthgraph.graphs.jobs import open_job
from synthgraph.graphs.sampling.graph import GRAPH_NAME, Problem, SamplingContext, graph
from synthgraph.tools.io import InputProblem, load_texts, write_records
from synthgraph.tools.runs import MANIFEST
from synthgraph.tools.sampling_answers import AnswerError, gold_answer
from synthgraph.tools.sampling_budget import BudgetPlan, ModelCost, plan_budget
from synthgraph.tools.sampling_metrics import build_report
from synthgraph.tools.usage import Budget

SAMPLES = "samples.jsonl"
PROBLEMS = "problems.jsonl"
ROLES = ("weak", "strong")
# Nominal sizes of the two local models (Qwen2.5-Coder 0.5B and 1.5B): the ratio
# P_SE / P_WC = 3 is the paper's Gemma2 9B / 27B ratio.
DEFAULT_PARAMS: dict[str, float] = {"weak": 0.5e9, "strong": 1.5e9}
SAMPLING_KNOBS = ("weak_k", "strong_k", "judge_per_model", "temperature", "max_tokens")
"""The context fields a sampling run keeps in its manifest."""


@dataclass
class SamplingSummary:
    run_dir: str
    problems: int
    """Problems this attempt covered (the first `limit`), done before or now."""
    processed: int
    """Problems sampled in this attempt."""
    skipped: int
    """Problems already done by an earlier attempt."""
    rejected: int
    """Problems rejected in this attempt."""
    written: int
    """Samples written in this attempt."""
    report: dict[str, Any]
    """The run's metrics (`metrics.json`): every problem done so far, whatever `limit` says."""


def load_problems(path: Path) -> tuple[list[Problem], list[InputProblem]]:
    """Problems with a readable gold answer, and the records that cannot be used (and why)."""
    records, problems = load_texts(path, text_field="question")
    usable: list[Problem] = []
    for record in records:
        answer = record.meta.get("answer")
        try:
            if not isinstance(answer, str):
                raise AnswerError("field 'answer' is missing or not text")
            gold_answer(answer)
        except AnswerError as error:
            problems.append(InputProblem(record.id, f"{record.source}: {error}"))
            continue
        usable.append(Problem(id=record.id, question=record.text, answer=answer))
    return usable, problems


def run_config(
    problems_path: Path, context: SamplingContext, params: Mapping[str, float]
) -> dict[str, Any]:
    """What a sampling run keeps in its manifest: resuming it with other values is refused."""
    knobs = {key: getattr(context, key) for key in SAMPLING_KNOBS}
    return {"problems": str(problems_path), **knobs, "params": dict(params)}


def sampling_job(
    problems_path: Path,
    out: Path | None,
    context: SamplingContext | None = None,
    *,
    resume: str | None = None,
    params: Mapping[str, float] | None = None,
    config: dict[str, Any] | None = None,
    limit: int | None = None,
    workers: int | None = None,
    retry_rejects: bool = True,
    dedupe_ids: bool = False,
    show_progress: bool = True,
    budget: Budget | None = None,
) -> SamplingSummary:
    """Sample, verify and judge every problem not yet done in the run; then write its report.

    `context=None` on `resume` goes on with the knobs and params the run started with; a
    context given must be the run's. `config` is what the manifest keeps (default:
    `run_config`). Raises InputError (bad input, before any run folder) and RunError.
    """
    source = str(problems_path)
    loaded, unusable = load_problems(problems_path)
    problems = unique_items(loaded, lambda p: p["id"], source=source, dedupe=dedupe_ids)
    if context is not None:
        params = dict(params or DEFAULT_PARAMS)
        config = config or run_config(problems_path, context, params)
    run, config = open_job(
        GRAPH_NAME, config, out=out, resume=resume, problems=unusable, budget=budget
    )
    if context is None:  # resumed as started: the run's own knobs and params
        context = SamplingContext(**{key: config[key] for key in SAMPLING_KNOBS})
        params = config["params"]
    # Every problem's text, whatever `limit` says now: an earlier or later call may sample more.
    write_records([dict(p) for p in problems], run.path(PROBLEMS))
    todo = problems[:limit] if limit else problems
    result = run_batch(
        run,
        todo,
        lambda problem: graph.invoke({"problem": problem}, context=context)["samples"],
        item_id=lambda problem: problem["id"],
        output=SAMPLES,
        done_field="problem_id",
        content=lambda problem: f"{problem['question']}\x1f{problem['answer']}",
        source=source,
        retry_rejects=retry_rejects,
        stage="sample",
        description="sampling",
        workers=workers,
        show_progress=show_progress,
    )
    report = build_report(run.root, params or DEFAULT_PARAMS)
    run.finish(problems=len(todo), samples=result.written, rejected=result.rejected)
    return SamplingSummary(
        run_dir=str(run.root),
        problems=len(todo),
        processed=result.processed,
        skipped=result.skipped,
        rejected=result.rejected,
        written=result.written,
        report=report,
    )


def report_job(run_dir: Path) -> dict[str, Any]:
    """Recompute the metrics, plots and SFT exports of a sampling run, with the run's params."""
    manifest = run_dir / MANIFEST
    params = DEFAULT_PARAMS
    if manifest.exists():
        params = (
            json.loads(manifest.read_text("utf-8")).get("config", {}).get("params")
            or DEFAULT_PARAMS
        )
    return build_report(run_dir, params)


def model_costs(
    params: Mapping[str, float], prices: Mapping[str, float | None] | None = None
) -> list[ModelCost]:
    """The weak and the strong model as the budget planner sees them."""
    prices = prices or {}
    return [
        ModelCost(name=role, params=params[role], usd_per_million_tokens=prices.get(role))
        for role in ROLES
    ]


def budget_plan(
    problems_path: Path,
    budget: float,
    tokens_per_solution: float,
    *,
    params: Mapping[str, float],
    limit: int | None = None,
) -> BudgetPlan:
    """Samples per problem of each model that a FLOPs `budget` buys: for `limit` problems, or all."""
    records, _ = load_texts(problems_path, text_field="question")
    return plan_budget(model_costs(params), budget, limit or len(records), tokens_per_solution)
