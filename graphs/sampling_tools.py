"""The sampling graph as a LangChain tool, for agents that build reasoning data."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool

from synthgraph.graphs.sampling import DEFAULT_PARAMS, GRAPH_NAME, SamplingContext, run_sampling
from synthgraph.tools.runs import Run
from synthgraph.tools.workspace import confine


@tool
def sample_verified_solutions(
    problems_file: str,
    out_dir: str,
    weak_k: int = 6,
    strong_k: int = 2,
    judge_per_model: int = 1,
    limit: int | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Sample math solutions from the weak and the strong model, keep the verified ones, measure them.

    `problems_file` (JSONL with `question` and a gold `answer` ending in `#### N`)
    and `out_dir` are paths inside the workspace. Returns coverage@k and
    diversity@k per model and k, the judged false-positive rate per model, and
    the SFT files written (`sft.jsonl`, `sft_weak.jsonl`, `sft_strong.jsonl`).
    Pass resume=True to continue an interrupted run in the same `out_dir`.
    """
    problems = confine(problems_file)
    out = confine(out_dir)
    context = SamplingContext(
        weak_k=weak_k, strong_k=strong_k, judge_per_model=judge_per_model, run_dir=str(out)
    )
    config = {
        "problems": str(problems),
        "weak_k": weak_k,
        "strong_k": strong_k,
        "params": DEFAULT_PARAMS,
    }
    run = Run.open(GRAPH_NAME, out=out, resume=str(out) if resume else None, config=config)
    result, report = run_sampling(problems, run, context, limit=limit, show_progress=False)
    return {
        **report,
        "processed": result.processed,
        "rejected": result.rejected,
        "out_dir": str(out),
        "sft_files": sorted(p.name for p in out.glob("sft*.jsonl")),
    }
