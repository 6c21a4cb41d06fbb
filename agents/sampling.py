"""The two LLM calls of compute-optimal sampling: solve a problem, judge a solution's reasoning."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from synthgraph.agents.llm import invoke_structured, invoke_text
from synthgraph.prompts import render_messages
from synthgraph.tools.settings import Role


class Solution(BaseModel):
    text: str
    model: str
    completion_tokens: int | None
    truncated: bool


class ReasoningVerdict(BaseModel):
    rationale: str = Field(
        description="One sentence: the first wrong step, or why every step holds"
    )
    reasoning_correct: bool = Field(description="True only if every step of the solution is right")


def solve(question: str, *, role: Role, record_id: str, **model_kwargs: Any) -> Solution:
    """One sampled step-by-step solution ending in `#### <number>`."""
    reply = invoke_text(
        render_messages("sampling/solve.md", problem=question),
        role=role,
        record_id=record_id,
        **model_kwargs,
    )
    usage = reply.usage_metadata or {}
    return Solution(
        text=str(reply.content).strip(),
        # The endpoint's own name for the model (provenance); fakes report none.
        model=str(reply.response_metadata.get("model_name") or role),
        completion_tokens=usage.get("output_tokens"),
        truncated=reply.response_metadata.get("finish_reason") == "length",
    )


def judge_reasoning(
    question: str, reference: str, solution: str, *, record_id: str, **model_kwargs: Any
) -> ReasoningVerdict:
    """The `judge` role's verdict on whether a right-answer solution also reasons right."""
    messages = render_messages(
        "sampling/judge.md", problem=question, reference=reference, solution=solution
    )
    return invoke_structured(
        ReasoningVerdict, messages, role="judge", record_id=record_id, **model_kwargs
    )
