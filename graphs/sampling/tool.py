"""The sampling job as a LangChain tool, for agents that build reasoning data."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.sampling.graph import SamplingContext
from synthgraph.graphs.sampling.job import sampling_job
from synthgraph.tools.agent_tool import agent_tool, counts, workspace_relative
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


def sample_verified_solutions(
    problems_file: str,
    out_dir: str,
    weak_k: int = 6,
    strong_k: int = 2,
    judge_per_model: int = 1,
    limit: int = 20,
    resume: bool = False,
) -> dict[str, Any]:
    """Sample math solutions from the weak and the strong model, keep the verified ones, measure them.

    What it returns is described to the model in `prompts/tools/sample_verified_solutions.md`.
    """
    problems, out = confine(problems_file), confine(out_dir)
    context = SamplingContext(weak_k=weak_k, strong_k=strong_k, judge_per_model=judge_per_model)
    summary = sampling_job(
        problems, out, context, resume=str(out) if resume else None, limit=limit,
        show_progress=False,
    )  # fmt: skip
    return {
        **summary.report,
        **counts(summary, "processed", "rejected"),
        "out_dir": workspace_relative(summary.run_dir),
        "sft_files": sorted(p.name for p in out.glob("sft*.jsonl")),
    }


def sampling_tool() -> StructuredTool:
    return agent_tool(sample_verified_solutions, SamplingArgs)
