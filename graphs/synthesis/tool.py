"""The synthesis job as a LangChain tool, for other agents.

Paths in, paths and counts out; every path is confined to the workspace and
every size is bounded. Errors come back to the model as text.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.synthesis.graph import SynthesisContext
from synthgraph.graphs.synthesis.job import ITEMS, few_shot_file, synthesis_job
from synthgraph.tools.agent_tool import agent_tool, counts, workspace_relative
from synthgraph.tools.runs import REJECTS
from synthgraph.tools.workspace import confine

Task = Literal["math", "instruction", "knowledge", "npc", "tool"]


class SynthesisArgs(BaseModel):
    """Arguments of `synthesize_from_personas` (paths are relative to the workspace)."""

    personas_path: str = Field(
        description="A personas.jsonl (fields id, persona) inside the workspace."
    )
    task: Task = Field(description="What to write for each persona.")
    output_dir: str = Field(description="A new folder for the run (items.jsonl, ...).")
    per_persona: int = Field(default=1, ge=1, le=5, description="Items per persona.")
    limit: int = Field(default=20, ge=1, le=100, description="Use at most this many personas.")
    few_shot: bool = Field(
        default=False, description="Show the bundled example items to the model."
    )


def synthesize_from_personas(
    personas_path: str,
    task: Task,
    output_dir: str,
    per_persona: int = 1,
    limit: int = 20,
    few_shot: bool = False,
) -> dict[str, Any]:
    """Personas × task → items; returns the files written and the counts."""
    source, out = confine(personas_path), confine(output_dir)
    context = SynthesisContext(
        task=task,
        per_persona=per_persona,
        few_shot_file=few_shot_file(task, "bundled" if few_shot else None),
    )
    summary = synthesis_job(source, out, context=context, limit=limit, show_progress=False)
    return {
        "items_path": workspace_relative(out / ITEMS),
        "rejects_path": workspace_relative(out / REJECTS),
        **counts(summary, "personas", "items", "rejects"),
    }


def synthesis_tool() -> StructuredTool:
    return agent_tool(synthesize_from_personas, SynthesisArgs)
