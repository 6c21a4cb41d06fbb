"""The paper's data metrics, their plots, and the SFT export of verified solutions.

Definitions (arXiv 2408.16737, section 3), per model and per k, where a
problem's first k samples are those with `sample_index < k`:

- coverage@k: the share of problems with at least one correct solution among k;
- diversity@k: the average, over all problems, of the number of unique correct
  solutions among k (unique: same text up to case and spacing);
- false-positive rate: the share of kept (answer-correct) solutions whose
  reasoning is wrong, over those the judge looked at.

A sample record is what the sampling graph writes: `problem_id`, `role`,
`model`, `sample_index`, `text`, `completion_tokens`, `correct`, `answer`,
`gold`, `method` and `judge` (None, or `reasoning_correct` and `rationale`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synthgraph.tools.sampling_answers import solution_key

Sample = Mapping[str, Any]


class KRow(BaseModel):
    """One model at one k."""

    role: str
    model: str
    k: int
    problems: int
    coverage: float
    diversity: float
    flops_per_problem: float


class FalsePositives(BaseModel):
    role: str
    model: str
    kept: int
    judged: int
    false_positives: int
    rate: float | None


def _by_role(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[str(sample["role"])].append(sample)
    return dict(grouped)


def _by_problem(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[str(sample["problem_id"])].append(sample)
    return dict(grouped)


def coverage_at_k(samples: Iterable[Sample], k: int) -> float:
    """Share of problems with at least one correct solution among their first k samples."""
    problems = _by_problem(samples)
    if not problems:
        return 0.0
    covered = sum(
        any(s["correct"] for s in group if int(s["sample_index"]) < k)
        for group in problems.values()
    )
    return covered / len(problems)


def diversity_at_k(samples: Iterable[Sample], k: int) -> float:
    """Average number of unique correct solutions per problem among the first k samples."""
    problems = _by_problem(samples)
    if not problems:
        return 0.0
    unique = [
        len(
            {
                solution_key(str(s["text"]))
                for s in group
                if s["correct"] and int(s["sample_index"]) < k
            }
        )
        for group in problems.values()
    ]
    return sum(unique) / len(problems)


def tokens_of(sample: Sample) -> int:
    """Generated tokens of a sample; ~4 characters a token when the endpoint reported none."""
    reported = sample.get("completion_tokens")
    return int(reported) if reported else max(1, len(str(sample["text"])) // 4)


def false_positive_rate(samples: Iterable[Sample]) -> tuple[int, int, float | None]:
    """(judged, false positives, rate) over kept samples that carry a judge verdict."""
    judged = [
        s
        for s in samples
        if s["correct"] and (s.get("judge") or {}).get("reasoning_correct") is not None
    ]
    wrong = sum(not s["judge"]["reasoning_correct"] for s in judged)
    return len(judged), wrong, (wrong / len(judged) if judged else None)


def metrics_by_k(samples: Iterable[Sample], params: Mapping[str, float]) -> list[KRow]:
    """coverage@k and diversity@k for every model and every k up to its samples per problem.

    Compute per problem at k is k · 2·P · (mean generated tokens per sample).
    """
    rows: list[KRow] = []
    for role, group in sorted(_by_role(samples).items()):
        problems = _by_problem(group)
        max_k = max(int(s["sample_index"]) for s in group) + 1
        mean_tokens = sum(tokens_of(s) for s in group) / len(group)
        for k in range(1, max_k + 1):
            rows.append(
                KRow(
                    role=role,
                    model=str(group[0].get("model", role)),
                    k=k,
                    problems=len(problems),
                    coverage=coverage_at_k(group, k),
                    diversity=diversity_at_k(group, k),
                    flops_per_problem=k * 2.0 * params.get(role, 0.0) * mean_tokens,
                )
            )
    return rows


def false_positives_by_role(samples: Iterable[Sample]) -> list[FalsePositives]:
    rows: list[FalsePositives] = []
    for role, group in sorted(_by_role(samples).items()):
        judged, wrong, rate = false_positive_rate(group)
        rows.append(
            FalsePositives(
                role=role,
                model=str(group[0].get("model", role)),
                kept=sum(bool(s["correct"]) for s in group),
                judged=judged,
                false_positives=wrong,
                rate=rate,
            )
        )
    return rows


def plot_metrics(rows: list[KRow], out_dir: Path) -> list[Path]:
    """Two PNGs: coverage and diversity against k, and against compute (FLOPs per problem)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for x_field, x_label, name in (
        ("k", "samples per problem (k)", "metrics_vs_k.png"),
        ("flops_per_problem", "compute per problem (FLOPs, 2·P·tokens)", "metrics_vs_compute.png"),
    ):
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for axis, metric, label in (
            (axes[0], "coverage", "coverage@k"),
            (axes[1], "diversity", "diversity@k"),
        ):
            for role in sorted({r.role for r in rows}):
                mine = [r for r in rows if r.role == role]
                axis.plot(
                    [getattr(r, x_field) for r in mine],
                    [getattr(r, metric) for r in mine],
                    marker="o",
                    label=f"{role} ({mine[0].model})",
                )
            axis.set_ylim(0, 1.05 if metric == "coverage" else None)
            axis.set_xlabel(x_label)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def sft_records(samples: Iterable[Sample], questions: Mapping[str, str]) -> list[dict[str, Any]]:
    """Verified solutions as chat SFT records (problem → solution), with provenance fields."""
    records: list[dict[str, Any]] = []
    for sample in samples:
        if not sample["correct"]:
            continue
        problem_id = str(sample["problem_id"])
        records.append(
            {
                "messages": [
                    {"role": "user", "content": questions[problem_id]},
                    {"role": "assistant", "content": sample["text"]},
                ],
                "id": sample["id"],
                "problem_id": problem_id,
                "model": sample.get("model"),
                "role": sample["role"],
                "sample_index": sample["sample_index"],
                "verification": {
                    "correct": True,
                    "answer": sample["answer"],
                    "gold": sample["gold"],
                    "method": sample["method"],
                },
                "judge": sample.get("judge"),
            }
        )
    return records


def build_report(run_dir: Path, params: Mapping[str, float]) -> dict[str, Any]:
    """Metrics (`metrics.json`), plots and SFT exports of a sampling run folder.

    Writes `sft.jsonl` (every verified solution) and `sft_<role>.jsonl` per model,
    the files the paper's three fine-tuning regimes start from.
    """
    from synthgraph.tools.io import InputError, read_jsonl, write_json, write_records

    samples_path = run_dir / "samples.jsonl"
    if not samples_path.exists():
        raise InputError(f"{run_dir}: no samples.jsonl (is this a sampling run folder?)")
    samples = list(read_jsonl(samples_path))
    questions = {str(p["id"]): str(p["question"]) for p in read_jsonl(run_dir / "problems.jsonl")}
    rows = metrics_by_k(samples, params)
    false_positives = false_positives_by_role(samples)
    plots = plot_metrics(rows, run_dir) if rows else []
    sft = sft_records(samples, questions)
    write_records(sft, run_dir / "sft.jsonl")
    for role in sorted({s["role"] for s in samples}):
        write_records([r for r in sft if r["role"] == role], run_dir / f"sft_{role}.jsonl")
    report = {
        "problems": len({s["problem_id"] for s in samples}),
        "params": dict(params),
        "by_k": [r.model_dump() for r in rows],
        "false_positives": [f.model_dump() for f in false_positives],
        "sft_records": len(sft),
        "plots": [p.name for p in plots],
    }
    write_json(report, run_dir / "metrics.json")
    return report
