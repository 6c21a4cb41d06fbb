"""Compute-optimal sampling: one problem → k solutions from a weak and a strong model, verified.

The graph handles one problem: the `weak` and `strong` roles each sample their
k solutions in parallel branches (temperature > 0), every solution's final
answer is extracted and checked against the gold answer, and the judge looks
at the reasoning of a few answer-correct ones (the false-positive check).

    START ─┬─ sample_weak ───┬─ verify_answers ─ judge_kept ─ END
           └─ sample_strong ─┘

The job over a problems file (runs, resume, metrics, plots, SFT export) is
`synthgraph.graphs.sampling.job`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from synthgraph.agents.llm import StructuredOutputError
from synthgraph.agents.sampling import judge_reasoning, solve
from synthgraph.graphs.context import RunContext
from synthgraph.tools.sampling_answers import gold_answer, verify
from synthgraph.tools.settings import Role

GRAPH_NAME = "sampling"


# --- state --------------------------------------------------------------------
class Problem(TypedDict):
    id: str
    question: str
    answer: str
    """The gold worked answer; its final number follows `#### ` (GSM8K style)."""


class SamplingInput(TypedDict):
    problem: Problem


class SamplingOutput(TypedDict):
    samples: list[dict[str, Any]]


class SamplingState(SamplingInput, SamplingOutput, total=False):
    drafts: Annotated[list[dict[str, Any]], operator.add]


# --- context ------------------------------------------------------------------
@dataclass
class SamplingContext(RunContext):
    """Per-run knobs of the sampling graph (Studio shows them as a form)."""

    weak_k: int = 6
    """Solutions per problem from the weak, cheap model (role `weak`)."""
    strong_k: int = 2
    """Solutions per problem from the strong, expensive model (role `strong`)."""
    judge_per_model: int = 1
    """Answer-correct solutions per problem and model whose reasoning the judge checks."""
    judge_max_tokens: int = 160
    """Length cap of the judge's verdict."""

    def __post_init__(self) -> None:
        if self.temperature is None:
            self.temperature = 0.7  # sampling needs temperature > 0; the paper's setting


# --- nodes --------------------------------------------------------------------
def _sample(role: Role, k: int, state: SamplingState, context: SamplingContext) -> dict[str, Any]:
    problem = state["problem"]
    drafts: list[dict[str, Any]] = []
    for index in range(k):
        sample_id = f"{problem['id']}:{role}:{index}"
        solution = solve(
            problem["question"], role=role, record_id=sample_id, **context.model_kwargs()
        )
        drafts.append(
            {
                "id": sample_id,
                "problem_id": problem["id"],
                "role": role,
                "model": solution.model,
                "sample_index": index,
                "text": solution.text,
                "completion_tokens": solution.completion_tokens,
                "truncated": solution.truncated,
            }
        )
    return {"drafts": drafts}


def sample_weak(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
    context = runtime.context or SamplingContext()
    return _sample("weak", context.weak_k, state, context)


def sample_strong(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
    context = runtime.context or SamplingContext()
    return _sample("strong", context.strong_k, state, context)


def verify_answers(state: SamplingState) -> dict[str, Any]:
    gold = gold_answer(state["problem"]["answer"])
    samples = []
    for draft in sorted(state.get("drafts", []), key=lambda d: (d["role"], d["sample_index"])):
        check = verify(draft["text"], gold, truncated=draft.get("truncated", False))
        samples.append(
            {**draft, "correct": check.correct, "answer": check.answer, "gold": check.gold,
             "method": check.method, "judge": None}
        )  # fmt: skip
    return {"samples": samples}


def judge_kept(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
    context = runtime.context or SamplingContext()
    problem = state["problem"]
    judged_per_role: dict[str, int] = {}
    samples = []
    for sample in state["samples"]:
        if sample["correct"] and judged_per_role.get(sample["role"], 0) < context.judge_per_model:
            judged_per_role[sample["role"]] = judged_per_role.get(sample["role"], 0) + 1
            try:
                verdict = judge_reasoning(
                    problem["question"], problem["answer"], sample["text"], record_id=sample["id"],
                    temperature=0.0, max_tokens=context.judge_max_tokens,
                ).model_dump()  # fmt: skip
            except StructuredOutputError as error:
                # A judge that gives no verdict must not cost the problem its samples.
                verdict = {
                    "reasoning_correct": None,
                    "rationale": None,
                    "error": str(error),
                    "raw": error.raw,
                }
            sample = {**sample, "judge": verdict}
        samples.append(sample)
    return {"samples": samples}


# --- builder ------------------------------------------------------------------
builder = StateGraph(
    SamplingState, SamplingContext, input_schema=SamplingInput, output_schema=SamplingOutput
)
builder.add_node(sample_weak)
builder.add_node(sample_strong)
builder.add_sequence((verify_answers, judge_kept))
builder.add_edge(START, "sample_weak")
builder.add_edge(START, "sample_strong")
builder.add_edge(["sample_weak", "sample_strong"], "verify_answers")
builder.add_edge("judge_kept", END)

graph = builder.compile(name=GRAPH_NAME)
