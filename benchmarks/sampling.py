"""Compute-matched sampling on GSM8K with the two local models (arXiv 2408.16737 at small scale).

WC = Qwen2.5-Coder-0.5B-Instruct (role `weak`, the embedded model), SE =
Qwen2.5-Coder-1.5B-Instruct (role `strong`, the `local-strong` extra). At the
same FLOPs budget the WC model gets P_SE / P_WC = 3 times the samples: by
default WC k=6 against SE k=2. The SE model also judges (temperature 0) one
answer-correct solution per problem and model for the false-positive rate.

Resumable and bounded: problems go in chunks, each chunk is appended to the
run folder and the report is rewritten after it, so a killed run continues
with `--resume` and a run that hits `--minutes` still has a full report.

    nohup .venv/bin/python benchmarks/sampling.py --out data/bench/sampling \\
        > data/bench/sampling.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.jsonl"
# Lines 2 and 3 of the training split are the few-shot examples in prompts/sampling/solve.md.
FEW_SHOT_LINES = {2, 3}


def pick_problems(source: Path, count: int, seed: int, target: Path) -> Path:
    """`count` GSM8K problems drawn with a fixed seed (never the few-shot ones), as JSONL."""
    lines = source.read_text(encoding="utf-8").splitlines()
    candidates = [n for n in range(1, len(lines) + 1) if n not in FEW_SHOT_LINES]
    chosen = random.Random(seed).sample(candidates, count)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        for number in chosen:
            row = json.loads(lines[number - 1])
            out.write(json.dumps({"id": f"gsm8k-train-{number}", **row}) + "\n")
    return target


def dedicated_weak_model() -> Path:
    """A second name (hard link) for the embedded GGUF, so WC gets a server of its own.

    The registered embedded server is shared by every synthgraph process on the
    machine; measuring WC through its queue would time other people's work.
    """
    from synthgraph.agents.local_model import EMBEDDED_MODEL, assemble

    embedded = assemble(EMBEDDED_MODEL)
    link = embedded.parent / "bench" / embedded.name  # same file name: the same model alias
    if not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.hardlink_to(embedded)
    return link


def summary_markdown(report: dict[str, Any], seconds: float) -> str:
    """The compute-matched comparison as a Markdown table, and whether the paper's finding held.

    Matched pairs: SE at k against WC at ratio·k (the same FLOPs at the same
    tokens per solution), for every SE k that the run sampled.
    """
    by_k = {(r["role"], r["k"]): r for r in report["by_k"]}
    params = report["params"]
    ratio = round(params["strong"] / params["weak"])
    lines = [
        f"GSM8K train, {report['problems']} problems, {seconds / 60:.0f} min on the shared 2-core CPU.",
        "",
        "| budget | model | k | coverage@k | diversity@k | FLOPs/problem (measured tokens) |",
        "|---|---|---|---|---|---|",
    ]
    measured: list[str] = []
    coverage_held: list[bool] = []
    diversity_held: list[bool] = []
    strong_ks = sorted(k for role, k in by_k if role == "strong")
    for k in strong_ks:
        strong, weak = by_k[("strong", k)], by_k.get(("weak", ratio * k))
        if weak is None:
            continue
        for row in (weak, strong):
            lines.append(
                f"| SE k={k} | {row['role']} ({row['model']}) | {row['k']} | {row['coverage']:.3f} "
                f"| {row['diversity']:.3f} | {row['flops_per_problem']:.3g} |"
            )
        coverage_held.append(weak["coverage"] >= strong["coverage"])
        diversity_held.append(weak["diversity"] >= strong["diversity"])
        spent = weak["flops_per_problem"] / strong["flops_per_problem"]
        affordable = [
            r
            for (role, _), r in by_k.items()
            if role == "weak" and r["flops_per_problem"] <= strong["flops_per_problem"]
        ]
        if affordable:
            best = max(affordable, key=lambda r: r["k"])
            measured.append(
                f"SE k={k} ({strong['flops_per_problem']:.3g} FLOPs) buys WC k={best['k']}: coverage "
                f"{best['coverage']:.3f} vs {strong['coverage']:.3f}, diversity {best['diversity']:.3f} vs {strong['diversity']:.3f}"
            )
    lines += ["", "| model | kept | judged | wrong reasoning | FPR |", "|---|---|---|---|---|"]
    rates: dict[str, float | None] = {}
    for row in report["false_positives"]:
        rates[row["role"]] = row["rate"]
        rate = "-" if row["rate"] is None else f"{row['rate']:.3f}"
        lines.append(
            f"| {row['role']} ({row['model']}) | {row['kept']} | {row['judged']} | {row['false_positives']} | {rate} |"
        )
    fpr = (
        ("higher" if (rates.get("weak") or 0) > (rates.get("strong") or 0) else "not higher")
        if rates.get("weak") is not None and rates.get("strong") is not None
        else "not measured"
    )
    if coverage_held:
        lines += [
            "",
            f"The plan assumes equal tokens per solution (WC gets {ratio}× the samples); with the tokens "
            f"each model really generated, WC's samples cost {spent:.2f}× SE's FLOPs. At measured compute: "
            + "; ".join(measured)
            + ".",
        ]
    lines += [
        "",
        f"At a matched budget WC ≥ SE in coverage at {sum(coverage_held)} of {len(coverage_held)} matched "
        f"pairs and in diversity at {sum(diversity_held)} of {len(diversity_held)}; "
        f"WC's false-positive rate was {fpr} than SE's.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> None:
    """Recompute the report of a finished (or stopped) benchmark folder and its summary.md."""
    from synthgraph.tools.sampling_metrics import build_report

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    report = build_report(out, manifest["config"]["params"])
    summary = summary_markdown(report, float(manifest.get("timings", {}).get("total", 0.0)))
    (out / "summary.md").write_text(summary, encoding="utf-8")
    print(summary, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("data/bench/sampling"))
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--weak-k", type=int, default=6)
    parser.add_argument("--strong-k", type=int, default=2)
    parser.add_argument("--judge-per-model", type=int, default=1)
    parser.add_argument(
        "--judge-problems", type=int, default=10, help="judge only the first N problems"
    )
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=2, help="problems per report refresh")
    parser.add_argument("--minutes", type=float, default=45, help="start no new chunk after this")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", type=Path, default=GSM8K)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--shared-weak", action="store_true",
        help="use the registered embedded server for WC instead of a dedicated one",
    )  # fmt: skip
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite summary.md of --out and stop"
    )
    args = parser.parse_args()
    if args.summary_only:
        write_summary(args.out)
        return

    # Before the settings are read: the 1.5B serves role `strong`; on a shared
    # 2-core CPU a queued request can wait minutes, which is not a failure here.
    os.environ.setdefault("SYNTHGRAPH_STRONG_LOCAL_MODEL", "true")
    os.environ.setdefault("SYNTHGRAPH_TIMEOUT", "900")
    os.environ.setdefault("SYNTHGRAPH_MAX_CONCURRENCY", "4")
    if not args.shared_weak:
        os.environ.setdefault("SYNTHGRAPH_LOCAL_MODEL", str(dedicated_weak_model()))

    from synthgraph.tools.settings import get_settings

    get_settings.cache_clear()  # read again, with the variables above

    from synthgraph.agents.llm import get_chat_model, use_chat_models
    from synthgraph.graphs.sampling.graph import SamplingContext
    from synthgraph.graphs.sampling.job import DEFAULT_PARAMS, sampling_job
    from synthgraph.tools.log import configure_logging

    configure_logging(json_lines=True, level="WARNING")
    started = time.monotonic()
    problems_file = args.out / "input.jsonl"
    # The same seed draws the same problems first, so a resumed run may ask for more.
    pick_problems(args.source, args.problems, args.seed, problems_file)
    context = SamplingContext(
        max_tokens=args.max_tokens,
        weak_k=args.weak_k,
        strong_k=args.strong_k,
        judge_per_model=args.judge_per_model,
    )
    config = {
        **vars(args),
        "out": str(args.out),
        "source": str(args.source),
        "params": DEFAULT_PARAMS,
    }
    judge = get_chat_model("strong", temperature=0.0, max_tokens=context.judge_max_tokens)
    resume = str(args.out) if args.resume else None
    report: dict[str, object] = {}
    with use_chat_models(judge=judge):
        for limit in range(args.chunk, args.problems + args.chunk, args.chunk):
            if time.monotonic() - started > args.minutes * 60:
                print(f"time limit reached before problem {limit - args.chunk + 1}", flush=True)
                break
            chunk_started = time.monotonic()
            # The judge reads long prompts: checking the first problems bounds its cost.
            context.judge_per_model = args.judge_per_model if limit <= args.judge_problems else 0
            result = sampling_job(
                problems_file,
                args.out,
                context,
                resume=resume,
                config=config,
                limit=min(limit, args.problems),
                workers=2,
                show_progress=False,
            )
            resume = str(args.out)
            report = result.report
            print(
                json.dumps(
                    {
                        "problems_done": report["problems"],
                        "chunk_seconds": round(time.monotonic() - chunk_started, 1),
                        "elapsed_minutes": round((time.monotonic() - started) / 60, 1),
                        "written": result.written,
                        "rejected": result.rejected,
                    }
                ),
                flush=True,
            )
    if report:
        write_summary(args.out)


if __name__ == "__main__":
    main()
