"""The AgentInstruct graph as a LangChain tool: paths in, paths and counts out.

Another agent hands over a seeds file or folder (inside the workspace) and gets
back where the instructions, rejects and Hugging Face dataset were written,
with the run's counts. Paths are confined to the workspace.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field

from synthgraph.graphs.agentinstruct_cli import run_instruct
from synthgraph.tools.io import InputError
from synthgraph.tools.log import tool_error_text
from synthgraph.tools.runs import RunError
from synthgraph.tools.workspace import WorkspaceError, confine


class GenerateInstructionsInput(BaseModel):
    seeds: str = Field(
        description="Seed documents: a folder of text/code files, or a JSONL/Parquet/CSV file (workspace path)."
    )
    out: str = Field(description="Run folder to write (workspace path); must not hold another run.")
    skills: list[str] = Field(
        default_factory=list,
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
    seeds: str,
    out: str,
    skills: list[str] | None = None,
    instructions_per_seed: int = 1,
    refine_rounds: int = 1,
    dedup: str = "both",
) -> dict[str, Any]:
    """Turn seed documents into instruction data; returns output paths and counts."""
    from synthgraph.agents.agentinstruct import SkillError

    try:
        result = run_instruct(
            confine(seeds),
            confine(out),
            skills=skills or None,
            instructions_per_seed=instructions_per_seed,
            refine_rounds=refine_rounds,
            dedup=dedup,
            show_progress=False,
        )
    except (WorkspaceError, InputError, SkillError, RunError) as error:
        raise ToolException(str(error)) from error
    return {
        "run_dir": str(result.run_dir),
        "instructions": str(result.instructions),
        "rejects": str(result.rejects),
        "dataset": str(result.dataset),
        "counts": result.counts,
    }


generate_instructions_tool = StructuredTool.from_function(
    generate_instructions,
    name="generate_instructions",
    description=(
        "AgentInstruct: rewrite seed documents per skill, create instruction/answer pairs of sampled "
        "types, have a judge check them, refine them, drop near-duplicates. Returns the paths of "
        "instructions.jsonl (chat messages with provenance), rejects.jsonl and a Hugging Face dataset."
    ),
    args_schema=GenerateInstructionsInput,
    handle_tool_error=tool_error_text,
)
