"""Each metric against hand-computed values, the planner's arithmetic, plots and the SFT export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synthgraph.tools.io import write_records
from synthgraph.tools.sampling_budget import (
    ModelCost,
    matched_budget,
    plan_budget,
    sampling_budget_tool,
)
from synthgraph.tools.sampling_metrics import (
    build_report,
    coverage_at_k,
    diversity_at_k,
    false_positive_rate,
    metrics_by_k,
    sft_records,
)


def sample(
    problem: str, index: int, correct: bool, text: str, role: str = "weak", **extra: Any
) -> dict[str, Any]:
    return {
        "id": f"{problem}:{role}:{index}", "problem_id": problem, "role": role, "model": f"{role}-model",
        "sample_index": index, "text": text, "completion_tokens": 10, "correct": correct,
        "answer": "1", "gold": "1", "method": "####", "judge": None, **extra,
    }  # fmt: skip


# Three problems, three samples each (weak):
#   p1: wrong, right "A", right "a" (same as "A" up to case)  → first correct at index 1
#   p2: right "B", right "C", wrong                           → first correct at index 0
#   p3: wrong, wrong, wrong                                   → never covered
WEAK = [
    sample("p1", 0, False, "x"), sample("p1", 1, True, "A"), sample("p1", 2, True, " a "),
    sample("p2", 0, True, "B"), sample("p2", 1, True, "C"), sample("p2", 2, False, "y"),
    sample("p3", 0, False, "z"), sample("p3", 1, False, "w"), sample("p3", 2, False, "v"),
]  # fmt: skip


def test_coverage_at_k_by_hand() -> None:
    assert coverage_at_k(WEAK, 1) == pytest.approx(1 / 3)  # only p2
    assert coverage_at_k(WEAK, 2) == pytest.approx(2 / 3)  # p1 and p2
    assert coverage_at_k(WEAK, 3) == pytest.approx(2 / 3)


def test_diversity_at_k_by_hand() -> None:
    # k=1: p2 has 1 → 1/3; k=2: p1 1 + p2 2 = 3 → 1; k=3: p1 still 1 ("A" == " a "), p2 2 → 1.
    assert diversity_at_k(WEAK, 1) == pytest.approx(1 / 3)
    assert diversity_at_k(WEAK, 2) == pytest.approx(1.0)
    assert diversity_at_k(WEAK, 3) == pytest.approx(1.0)


def test_false_positive_rate_by_hand() -> None:
    judged = [
        sample(
            "p1", 1, True, "A", judge={"reasoning_correct": False, "rationale": "step 2 is wrong"}
        ),
        sample(
            "p2", 0, True, "B", judge={"reasoning_correct": True, "rationale": "all steps hold"}
        ),
        sample("p2", 1, True, "C", judge={"reasoning_correct": True, "rationale": "fine"}),
        sample("p2", 2, True, "D"),  # kept but not judged: not in the rate
        sample(
            "p3", 0, False, "z", judge={"reasoning_correct": False, "rationale": "wrong answer"}
        ),  # not kept
    ]
    assert false_positive_rate(judged) == (3, 1, pytest.approx(1 / 3))
    assert false_positive_rate(WEAK) == (0, 0, None)


def test_metrics_by_k_and_compute() -> None:
    strong = [sample("p1", 0, True, "S", role="strong"), sample("p2", 0, False, "T", role="strong"),
              sample("p3", 0, False, "U", role="strong")]  # fmt: skip
    rows = metrics_by_k(WEAK + strong, {"weak": 1e9, "strong": 3e9})
    assert [(r.role, r.k) for r in rows] == [("strong", 1), ("weak", 1), ("weak", 2), ("weak", 3)]
    strong_1, weak_3 = rows[0], rows[3]
    assert strong_1.coverage == pytest.approx(1 / 3)
    assert weak_3.coverage == pytest.approx(2 / 3)
    # Compute per problem: k · 2P · mean tokens (10) → strong k=1 and weak k=3 spend the same.
    assert strong_1.flops_per_problem == pytest.approx(1 * 2 * 3e9 * 10)
    assert weak_3.flops_per_problem == pytest.approx(strong_1.flops_per_problem)


def test_planner_arithmetic() -> None:
    weak, strong = ModelCost(name="weak", params=0.5e9), ModelCost(name="strong", params=1.5e9)
    # 100 problems, 200 tokens: a strong solution costs 2·1.5e9·200 = 6e11 FLOPs, a weak one 2e11.
    budget = matched_budget(strong, 2, problems=100, tokens_per_solution=200)
    assert budget == pytest.approx(1.2e14)
    plan = plan_budget([weak, strong], budget, problems=100, tokens_per_solution=200)
    assert [m.samples_per_problem for m in plan.models] == [6, 2]
    assert plan.models[1].cost_per_solution == pytest.approx(6e11)
    assert plan.ratio == pytest.approx(3.0)
    assert plan.models[0].spent == pytest.approx(1.2e14)
    # A budget just short of one more strong sample floors.
    assert plan_budget([strong], 1.7e14, 100, 200).models[0].samples_per_problem == 2


def test_planner_money_and_errors() -> None:
    cheap = ModelCost(name="mini", usd_per_million_tokens=0.6)
    dear = ModelCost(name="big", usd_per_million_tokens=10.0)
    plan = plan_budget(
        [cheap, dear], budget=12.0, problems=1000, tokens_per_solution=200, unit="usd"
    )
    # big: 10/1e6·200 = $0.002 a solution, $2 a sample over 1000 problems → 6; mini: $0.12 → 100.
    assert [m.samples_per_problem for m in plan.models] == [100, 6]
    assert plan.ratio == pytest.approx(10 / 0.6)
    with pytest.raises(ValueError, match="parameter count"):
        plan_budget([cheap], 1e15, 10, 200, unit="flops")
    with pytest.raises(ValueError, match="params or usd"):
        ModelCost(name="nothing")
    with pytest.raises(ValueError, match="positive"):
        plan_budget([dear], 0, 10, 200, unit="usd")


def test_planner_tool_returns_data() -> None:
    result = sampling_budget_tool().invoke(
        {"models": [{"name": "weak", "params": 0.5e9}, {"name": "strong", "params": 1.5e9}],
         "budget": 1.2e14, "problems": 100, "tokens_per_solution": 200}
    )  # fmt: skip
    assert [m["samples_per_problem"] for m in result["models"]] == [6, 2]
    assert result["ratio"] == pytest.approx(3.0)
    refused = sampling_budget_tool().invoke(
        {"models": [{"name": "weak", "usd_per_million_tokens": 1.0}], "budget": 1e14, "problems": 1}
    )
    assert refused == "model 'weak': a FLOPs budget needs its parameter count"
    assert "budget: Input should be greater than 0" in sampling_budget_tool().invoke(
        {"models": [{"name": "weak", "params": 1e9}], "budget": 0, "problems": 1}
    )


def test_sft_records_keep_only_verified() -> None:
    records = sft_records(WEAK, {"p1": "Q1", "p2": "Q2", "p3": "Q3"})
    assert len(records) == 4
    first = records[0]
    assert first["messages"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A"},
    ]
    assert (first["model"], first["sample_index"], first["verification"]["correct"]) == (
        "weak-model",
        1,
        True,
    )


def test_build_report_writes_metrics_plots_and_exports(tmp_path: Path) -> None:
    write_records(WEAK, tmp_path / "samples.jsonl")
    write_records([{"id": p, "question": f"Q {p}", "answer": "#### 1"} for p in ("p1", "p2", "p3")],
                  tmp_path / "problems.jsonl")  # fmt: skip
    report = build_report(tmp_path, {"weak": 0.5e9, "strong": 1.5e9})
    assert report["problems"] == 3 and report["sft_records"] == 4
    for name in ("metrics_vs_k.png", "metrics_vs_compute.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "metrics.json").read_text())["by_k"][2][
        "coverage"
    ] == pytest.approx(2 / 3)
    assert sum(1 for _ in (tmp_path / "sft_weak.jsonl").open()) == 4
