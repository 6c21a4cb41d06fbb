"""The personas job as a LangChain tool, for other agents.

Paths in, paths and counts out; every path is confined to the workspace and
every size is bounded, so a tool-calling model can neither touch other files
nor start a run that never ends. Errors come back to the model as text.
(The dedup service's tool is `synthgraph.tools.dedup_tools.dedup_tool`.)
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.personas.graph import DEFAULT_RELATIONS, PersonasContext
from synthgraph.graphs.personas.job import DROPPED, PERSONAS, personas_job
from synthgraph.tools.agent_tool import agent_tool, counts, workspace_relative
from synthgraph.tools.runs import REJECTS
from synthgraph.tools.workspace import confine


class PersonasArgs(BaseModel):
    """Arguments of `personas_from_texts` (paths are relative to the workspace)."""

    input_path: str = Field(
        description="A folder of .txt files, or a JSONL/Parquet/CSV file with a 'text' field."
    )
    output_dir: str = Field(
        description="A new folder for the run (personas.jsonl, dropped.jsonl, ...)."
    )
    expand_rounds: int = Field(default=1, ge=0, le=2, description="Persona-to-Persona rounds.")
    relations: list[str] = Field(
        default=list(DEFAULT_RELATIONS),
        min_length=1,
        max_length=5,
        description="Relations to expand along.",
    )
    personas_per_text: int = Field(default=1, ge=1, le=3)
    limit: int = Field(default=20, ge=1, le=100, description="Use at most this many input texts.")


def personas_from_texts(
    input_path: str,
    output_dir: str,
    expand_rounds: int = 1,
    relations: list[str] | None = None,
    personas_per_text: int = 1,
    limit: int = 20,
) -> dict[str, Any]:
    """Texts → personas → expansions → dedup; returns the files written and the counts."""
    source, out = confine(input_path), confine(output_dir)
    context = PersonasContext(
        personas_per_text=personas_per_text,
        relations=list(relations or DEFAULT_RELATIONS),
        expand_rounds=expand_rounds,
    )
    summary = personas_job(source, out, context=context, limit=limit, show_progress=False)
    return {
        "personas_path": workspace_relative(out / PERSONAS),
        "dropped_path": workspace_relative(out / DROPPED),
        "rejects_path": workspace_relative(out / REJECTS),
        **counts(summary, "texts", "generated", "kept", "dropped", "rejects"),
    }


def personas_tool() -> StructuredTool:
    return agent_tool(personas_from_texts, PersonasArgs)
