"""Persona-driven synthesis: personas × a task → items written from each persona's view.

    START ─Send per (persona, k)─▶ write_item ─▶ END

Tasks (PersonaHub, arXiv 2406.20094): `math` (a problem and its answer),
`instruction` (a user prompt), `knowledge` (an article), `npc` (a game
character sheet), `tool` (a function spec whose parameters validate as JSON
Schema). Zero-shot by default; few-shot with a JSONL file of example items.
Every item record carries `id`, `persona_id`, `persona`, `task`, `item`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from synthgraph.agents.personas import (
    RECORD_ERRORS,
    bundled_few_shot,
    call_seed,
    load_few_shot,
    synthesize_item,
)
from synthgraph.agents.resilience import Rejection, rejection
from synthgraph.graphs.context import RunContext
from synthgraph.tools.io import content_id
from synthgraph.tools.workspace import confine


# --- state ----------------------------------------------------------------------
class SynthesisInput(TypedDict):
    personas: list[dict[str, Any]]
    """Persona records: at least `id` and `persona` (e.g. lines of personas.jsonl)."""


class SynthesisOutput(TypedDict):
    items: list[dict[str, Any]]
    rejects: list[Rejection]


class SynthesisState(SynthesisInput, total=False):
    items: Annotated[list[dict[str, Any]], operator.add]
    rejects: Annotated[list[Rejection], operator.add]


class ItemTask(TypedDict):
    persona: dict[str, Any]
    index: int


@dataclass
class SynthesisContext(RunContext):
    """Per-run knobs of the synthesis graph (Studio shows them as a form)."""

    task: str = "math"
    """math, instruction, knowledge, npc or tool."""
    per_persona: int = 1
    """Items written for each persona."""
    few_shot_file: str | None = None
    """JSONL of example items for the task (few-shot), in the workspace; unset: zero-shot."""
    few_shot: list[dict[str, Any]] | None = None
    """The example items themselves, read by the caller (the CLI reads `--few-shot` from
    anywhere); wins over `few_shot_file`."""
    few_shot_count: int = 2
    """At most this many examples from the file go into each prompt."""
    seed: int | None = 0
    """Base sampling seed mixed with persona and item index; None: unseeded."""


def _context(runtime: Runtime[SynthesisContext]) -> SynthesisContext:
    return runtime.context or SynthesisContext()


def context_few_shot(context: SynthesisContext, confined: bool = True) -> list[dict[str, Any]]:
    """The run's example items. A path from graph input (Studio, MCP) must lie in the workspace;
    trusted callers such as the CLI pass `confined=False` and hand the items over in `few_shot`."""
    if context.few_shot is not None:
        return context.few_shot[: context.few_shot_count]
    if not context.few_shot_file:
        return []
    path = Path(context.few_shot_file)
    shipped = bundled_few_shot(context.task).resolve()
    if confined and path.resolve() != shipped:  # the shipped examples are read-only package data
        path = confine(path)
    return load_few_shot(path, context.task, context.few_shot_count)


# --- nodes ----------------------------------------------------------------------
def write_item(task: ItemTask, runtime: Runtime[SynthesisContext]) -> dict[str, Any]:
    context = _context(runtime)
    persona, index = task["persona"], task["index"]
    item_id = content_id(persona["id"], context.task, str(index))
    examples = context_few_shot(context)
    model_kwargs: dict[str, Any] = dict(context.model_kwargs())
    if context.seed is not None:
        model_kwargs["seed"] = call_seed(str(context.seed), persona["id"], context.task, str(index))
    try:
        item = synthesize_item(
            persona["persona"], context.task, examples, record_id=item_id, **model_kwargs
        )
    except RECORD_ERRORS as error:
        reject = rejection(item_id, f"synthesize.{context.task}", error)
        return {"rejects": [{**reject, "persona_id": persona["id"]}]}
    record = {
        "id": item_id,
        "persona_id": persona["id"],
        "persona": persona["persona"],
        "task": context.task,
        "few_shot": bool(examples),
        "item": item.model_dump(),
    }
    return {"items": [record]}


# --- edges ----------------------------------------------------------------------
def fan_out_items(state: SynthesisState, runtime: Runtime[SynthesisContext]) -> list[Send] | str:
    per_persona = _context(runtime).per_persona
    sends = [
        Send("write_item", {"persona": persona, "index": index})
        for persona in state.get("personas", [])
        for index in range(per_persona)
    ]
    return sends or END


builder = StateGraph(
    SynthesisState, SynthesisContext, input_schema=SynthesisInput, output_schema=SynthesisOutput
)
builder.add_node(write_item)
builder.add_conditional_edges(START, fan_out_items, ["write_item", END])
builder.add_edge("write_item", END)

graph = builder.compile(name="synthesis")
