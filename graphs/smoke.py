"""Smoke graph: one real structured call to the configured LLM.

It proves the whole path (settings → factory → endpoint → structured output)
end to end, and is what `make demo` ran before the first data graph landed.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from synthgraph.agents.llm import invoke_structured
from synthgraph.graphs.context import RunContext
from synthgraph.prompts import render_messages


# --- state ----------------------------------------------------------------------
class SmokeInput(TypedDict):
    description: str


class SmokeOutput(TypedDict):
    language: str
    reason: str


class SmokeState(SmokeInput, SmokeOutput, total=False):
    pass


class LanguagePick(BaseModel):
    language: str = Field(description="The name of one programming language")
    reason: str = Field(description="One sentence on why it fits")


# --- nodes ----------------------------------------------------------------------
def pick_language(state: SmokeState, runtime: Runtime[RunContext]) -> SmokeOutput:
    context = runtime.context or RunContext()
    messages = render_messages("common/smoke.md", description=state["description"])
    pick = invoke_structured(LanguagePick, messages, role="generator", **context.model_kwargs())
    return {"language": pick.language, "reason": pick.reason}


# --- edges ----------------------------------------------------------------------
builder = StateGraph(
    SmokeState, context_schema=RunContext, input_schema=SmokeInput, output_schema=SmokeOutput
)
builder.add_node("pick_language", pick_language)
builder.add_edge(START, "pick_language")
builder.add_edge("pick_language", END)

graph = builder.compile(name="smoke")
