"""The compute-matched sampling budget of "Smaller, Weaker, Yet Better" (arXiv 2408.16737).

Generating one token with a P-parameter decoder costs about 2·P FLOPs, so a
solution of T tokens costs 2·P·T. At a fixed budget every model can afford
budget / (problems · cost per solution) samples per problem, and a weak-cheap
model gets P_SE / P_WC times as many samples as a strong-expensive one. For
API models the same arithmetic runs on money: price per token instead of 2·P.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field, model_validator

from synthgraph.tools.agent_tool import agent_tool
from synthgraph.tools.io import InputError

Unit = Literal["flops", "usd"]


class ModelCost(BaseModel):
    """What one generated token of a model costs: its parameters, or its price."""

    name: str
    params: float | None = Field(default=None, gt=0, description="Parameter count, e.g. 1.5e9")
    usd_per_million_tokens: float | None = Field(default=None, gt=0, description="Output price")

    @model_validator(mode="after")
    def _one_cost(self) -> ModelCost:
        if self.params is None and self.usd_per_million_tokens is None:
            raise ValueError(f"model {self.name!r}: give params or usd_per_million_tokens")
        return self

    def cost_per_token(self, unit: Unit) -> float:
        if unit == "flops":
            if self.params is None:
                raise ValueError(f"model {self.name!r}: a FLOPs budget needs its parameter count")
            return 2.0 * self.params
        if self.usd_per_million_tokens is None:
            raise ValueError(f"model {self.name!r}: a money budget needs its price per token")
        return self.usd_per_million_tokens / 1e6


class ModelPlan(BaseModel):
    name: str
    cost_per_solution: float
    cost_per_problem_sample: float
    samples_per_problem: int
    spent: float


class BudgetPlan(BaseModel):
    """How many samples per problem each model affords at the same budget."""

    unit: Unit
    budget: float
    problems: int
    tokens_per_solution: float
    models: list[ModelPlan]
    ratio: float = Field(description="Samples of the cheapest model per sample of the dearest")

    def rows(self) -> list[list[str]]:
        """The plan as table rows: model, cost per solution, samples per problem, spent."""
        return [
            [m.name, f"{m.cost_per_solution:.3g}", str(m.samples_per_problem), f"{m.spent:.3g}"]
            for m in self.models
        ]


def plan_budget(
    models: list[ModelCost],
    budget: float,
    problems: int,
    tokens_per_solution: float,
    unit: Unit = "flops",
) -> BudgetPlan:
    """Samples per problem for each model, each spending at most `budget` in `unit`."""
    if not all(math.isfinite(v) and v > 0 for v in (budget, problems, tokens_per_solution)):
        raise InputError("budget, problems and tokens_per_solution must be positive and finite")
    if not models:
        raise InputError("give at least one model")
    plans: list[ModelPlan] = []
    for model in models:
        per_solution = model.cost_per_token(unit) * tokens_per_solution
        per_problem_sample = per_solution * problems
        # The small epsilon keeps an exactly affordable budget from flooring one short.
        affordable = budget / per_problem_sample * (1 + 1e-9)
        if not math.isfinite(affordable) or not math.isfinite(per_problem_sample):
            raise InputError(f"{model.name}: the budget buys no finite number of samples")
        samples = math.floor(affordable)
        plans.append(
            ModelPlan(
                name=model.name,
                cost_per_solution=per_solution,
                cost_per_problem_sample=per_problem_sample,
                samples_per_problem=samples,
                spent=samples * per_problem_sample,
            )
        )
    costs = [p.cost_per_solution for p in plans]
    return BudgetPlan(
        unit=unit,
        budget=budget,
        problems=problems,
        tokens_per_solution=tokens_per_solution,
        models=plans,
        ratio=max(costs) / min(costs),
    )


def matched_budget(
    strong: ModelCost,
    strong_k: int,
    problems: int,
    tokens_per_solution: float,
    unit: Unit = "flops",
) -> float:
    """The budget that buys `strong_k` samples per problem from the strong model."""
    return strong.cost_per_token(unit) * tokens_per_solution * problems * strong_k


class BudgetArgs(BaseModel):
    """Arguments of `plan_sampling_budget`."""

    models: list[ModelCost] = Field(
        min_length=1, max_length=8, description="Each model's parameter count or output price."
    )
    budget: float = Field(gt=0, description="FLOPs, or USD with unit 'usd'.")
    problems: int = Field(ge=1, description="Number of problems.")
    tokens_per_solution: float = Field(
        default=200, gt=0, description="Expected tokens per solution."
    )
    unit: Unit = "flops"


def plan_sampling_budget(
    models: list[ModelCost],
    budget: float,
    problems: int,
    tokens_per_solution: float = 200,
    unit: Unit = "flops",
) -> dict[str, Any]:
    """Plan compute-matched sampling: how many solutions per problem each model can afford.

    What to give and what it returns is described to the model in
    `prompts/tools/plan_sampling_budget.md`.
    """
    return plan_budget(models, budget, problems, tokens_per_solution, unit).model_dump()


def sampling_budget_tool() -> StructuredTool:
    """`plan_sampling_budget` as a tool: arithmetic only, no files."""
    return agent_tool(plan_sampling_budget, BudgetArgs)
