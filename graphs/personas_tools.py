"""The personas and synthesis graphs as LangChain tools, for other agents.

Paths in, paths and counts out; every path is confined to the workspace and
every size is bounded, so a tool-calling model can neither touch other files
nor start a run that never ends. Errors come back to the model as text.
(The dedup service's tool is `synthgraph.tools.dedup_tools.dedup_tool`.)
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from synthgraph.agents.personas import bundled_few_shot
from synthgraph.graphs.personas import DEFAULT_RELATIONS, PersonasContext
from synthgraph.graphs.personas_cli import DROPPED, ITEMS, PERSONAS, personas_job, synthesis_job
from synthgraph.graphs.synthesis import SynthesisContext
from synthgraph.tools.log import tool_error_text
from synthgraph.tools.runs import REJECTS, RunError
from synthgraph.tools.workspace import confine, workspace_root

Task = Literal["math", "instruction", "knowledge", "npc", "tool"]


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
    max_texts: int = Field(
        default=20, ge=1, le=100, description="Use at most this many input texts."
    )


class SynthesisArgs(BaseModel):
    """Arguments of `synthesize_from_personas` (paths are relative to the workspace)."""

    personas_path: str = Field(
        description="A personas.jsonl (fields id, persona) inside the workspace."
    )
    task: Task = Field(description="What to write for each persona.")
    output_dir: str = Field(description="A new folder for the run (items.jsonl, ...).")
    per_persona: int = Field(default=1, ge=1, le=5, description="Items per persona.")
    max_personas: int = Field(
        default=20, ge=1, le=100, description="Use at most this many personas."
    )
    few_shot: bool = Field(
        default=False, description="Show the bundled example items to the model."
    )


def _explain(error: ValidationError) -> str:
    """A validation error as the model should read it: which argument, and what is wrong."""
    return "invalid arguments: " + "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5]
    )


def _relative(path: Any) -> str:
    return str(confine(path).relative_to(workspace_root()))


def personas_from_texts(
    input_path: str,
    output_dir: str,
    expand_rounds: int = 1,
    relations: list[str] | None = None,
    personas_per_text: int = 1,
    max_texts: int = 20,
) -> dict[str, Any]:
    """Texts → personas → expansions → dedup; returns the files written and the counts."""
    try:
        source, out = confine(input_path), confine(output_dir)
        context = PersonasContext(
            personas_per_text=personas_per_text,
            relations=list(relations or DEFAULT_RELATIONS),
            expand_rounds=expand_rounds,
        )
        summary = personas_job(
            source, out, context=context, max_records=max_texts, show_progress=False
        )
    except (ValueError, RunError) as error:  # bad path or input: tell the model
        raise ToolException(str(error)) from error
    return {
        "personas_path": _relative(out / PERSONAS),
        "dropped_path": _relative(out / DROPPED),
        "rejects_path": _relative(out / REJECTS),
        "texts": summary.texts,
        "generated": summary.generated,
        "kept": summary.kept,
        "dropped": summary.dropped,
        "rejects": summary.rejects,
    }


def synthesize_from_personas(
    personas_path: str,
    task: Task,
    output_dir: str,
    per_persona: int = 1,
    max_personas: int = 20,
    few_shot: bool = False,
) -> dict[str, Any]:
    """Personas × task → items; returns the files written and the counts."""
    try:
        source, out = confine(personas_path), confine(output_dir)
        context = SynthesisContext(
            task=task,
            per_persona=per_persona,
            few_shot_file=str(bundled_few_shot(task)) if few_shot else None,
        )
        summary = synthesis_job(
            source, out, context=context, max_records=max_personas, show_progress=False
        )
    except (ValueError, RunError) as error:
        raise ToolException(str(error)) from error
    return {
        "items_path": _relative(out / ITEMS),
        "rejects_path": _relative(out / REJECTS),
        "personas": summary.personas,
        "items": summary.items,
        "rejects": summary.rejects,
    }


def personas_tool() -> StructuredTool:
    return StructuredTool.from_function(
        func=personas_from_texts,
        name="personas_from_texts",
        description=(
            "Infer personas (who reads, writes, likes or dislikes each text) from texts in the "
            "workspace, expand them through relations (colleague, student, ...), and drop near-duplicates "
            "of each other and of personas kept in earlier runs. Returns output paths and counts."
        ),
        args_schema=PersonasArgs,
        handle_tool_error=tool_error_text,
        handle_validation_error=_explain,
    )


def synthesis_tool() -> StructuredTool:
    return StructuredTool.from_function(
        func=synthesize_from_personas,
        name="synthesize_from_personas",
        description=(
            "Write data items from each persona's point of view: math problems with answers, user "
            "instructions, knowledge articles, game NPC sheets or JSON tool specs. Returns the items "
            "file path and counts."
        ),
        args_schema=SynthesisArgs,
        handle_tool_error=tool_error_text,
        handle_validation_error=_explain,
    )
