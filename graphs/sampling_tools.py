"""The sampling graph as a LangChain tool, for agents that build reasoning data."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from synthgraph.graphs.sampling import (
    DEFAULT_PARAMS,
    GRAPH_NAME,
    SamplingContext,
    run_config,
    run_sampling,
)
from synthgraph.tools.log import tool_error_text
from synthgraph.tools.runs import Run
from synthgraph.tools.workspace import confine


class SamplingArgs(BaseModel):
    """Arguments of `sample_verified_solutions`; sizes are bounded so a call cannot run for days."""

    problems_file: str = Field(description="JSONL with `question` and `answer`, in the workspace.")
    out_dir: str = Field(description="Run folder in the workspace.")
    weak_k: int = Field(default=6, ge=1, le=32, description="Solutions per problem, weak model.")
    strong_k: int = Field(
        default=2, ge=1, le=16, description="Solutions per problem, strong model."
    )
    judge_per_model: int = Field(
        default=1, ge=0, le=4, description="Verified solutions per problem and model to judge."
    )
    limit: int = Field(default=20, ge=1, le=200, description="Use only the first N problems.")
    resume: bool = Field(default=False, description="Continue the run already in `out_dir`.")


def _invalid(error: ValidationError) -> str:
    return f"invalid arguments: {error}"


def _sample_verified_solutions(
    problems_file: str,
    out_dir: str,
    weak_k: int = 6,
    strong_k: int = 2,
    judge_per_model: int = 1,
    limit: int = 20,
    resume: bool = False,
) -> dict[str, Any]:
    """Sample math solutions from the weak and the strong model, keep the verified ones, measure them.

    `problems_file` (JSONL with `question` and a gold `answer` ending in `#### N`)
    and `out_dir` are paths inside the workspace. Returns coverage@k and
    diversity@k per model and k, the judged false-positive rate per model, and
    the SFT files written (`sft.jsonl`, `sft_weak.jsonl`, `sft_strong.jsonl`).
    Pass resume=True to continue an interrupted run in the same `out_dir`.
    """
    try:
        problems = confine(problems_file)
        out = confine(out_dir)
        context = SamplingContext(
            weak_k=weak_k, strong_k=strong_k, judge_per_model=judge_per_model, run_dir=str(out)
        )
        config = run_config(problems, context, DEFAULT_PARAMS)
        run = Run.open(GRAPH_NAME, out=out, resume=str(out) if resume else None, config=config)
        result, report = run_sampling(problems, run, context, limit=limit, show_progress=False)
    except ValueError as error:  # a refused path, bad input or run folder: tell the model
        raise ToolException(str(error)) from error
    return {
        **report,
        "processed": result.processed,
        "rejected": result.rejected,
        "out_dir": str(out),
        "sft_files": sorted(p.name for p in out.glob("sft*.jsonl")),
    }


sample_verified_solutions = StructuredTool.from_function(
    func=_sample_verified_solutions,
    name="sample_verified_solutions",
    args_schema=SamplingArgs,
    handle_tool_error=tool_error_text,
    handle_validation_error=_invalid,
)
