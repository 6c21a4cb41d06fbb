"""The AgentInstruct job as a LangChain tool: workspace paths in, paths and counts out.

Another agent hands over seed documents (inside the workspace) and gets back
where the instructions, rejects and Hugging Face dataset were written, with
the run's counts.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.agentinstruct.job import InstructOptions, instruct_job
from synthgraph.tools.agent_tool import agent_tool, workspace_relative
from synthgraph.tools.workspace import confine


class InstructArgs(BaseModel):
    """Arguments of `generate_instructions` (paths are relative to the workspace)."""

    input_path: str = Field(
        description="Seed documents: a folder of text/code files, or a JSONL/Parquet/CSV file."
    )
    output_dir: str = Field(description="A new folder for the run (instructions.jsonl, ...).")
    skills: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Skills to generate, e.g. reading_comprehension, coding, tool_use; empty: all shipped skills.",
    )
    instructions_per_seed: int = Field(
        default=1, ge=1, le=20, description="Instructions per seed and skill."
    )
    refine_rounds: int = Field(
        default=1, ge=0, le=5, description="Suggester-editor refinement rounds."
    )
    dedup: Literal["both", "minhash", "embedding", "none"] = Field(
        default="both",
        description="Near-duplicate removal: MinHash then embeddings, one of them, or none.",
    )


def generate_instructions(
    input_path: str,
    output_dir: str,
    skills: list[str] | None = None,
    instructions_per_seed: int = 1,
    refine_rounds: int = 1,
    dedup: str = "both",
) -> dict[str, Any]:
    """Seed documents → instruction data; returns the files written and the counts."""
    options = InstructOptions(
        skills=list(skills or []),
        instructions_per_seed=instructions_per_seed,
        refine_rounds=refine_rounds,
        dedup=dedup,
    )
    summary = instruct_job(
        confine(input_path), confine(output_dir), options=options, show_progress=False
    )
    return {
        "run_dir": workspace_relative(summary.run_dir),
        "instructions_path": workspace_relative(summary.instructions),
        "rejects_path": workspace_relative(summary.rejects),
        "dataset_dir": workspace_relative(summary.dataset),
        **{
            name: int(summary.counts.get(name, 0))
            for name in ("seeds", "jobs", "jobs_rejected", "instructions", "rejects")
        },
    }


def instruct_tool() -> StructuredTool:
    return agent_tool(generate_instructions, InstructArgs)
