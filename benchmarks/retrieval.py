"""Benchmark: Promptagator-style training data → fine-tuned MiniLM on the Debian set.

The whole loop on `/work/shared/data/debian-descriptions` (BEIR layout):
generate queries for a seeded random sample of corpus documents (never from
the queries file) with the embedded model, filter, mine hard negatives, train
the bi-encoder on unfiltered and on filtered pairs, train a cross-encoder
reranker, and evaluate on dev (and on test with --test). Every stage is
resumable: run it again and it continues where it stopped.

    python benchmarks/retrieval.py --docs 2000 --gen-minutes 40           # dev only
    python benchmarks/retrieval.py --stages eval --test                   # report test once
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from synthgraph.graphs.retrieval import RetrievalContext
from synthgraph.graphs.retrieval_cli import PAIRS, generate_job

DATA = Path("/work/shared/data/debian-descriptions")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "retrieval" / "software_packages.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("data/bench/retrieval"))
    parser.add_argument("--docs", type=int, default=2000, help="corpus documents to write queries for")
    parser.add_argument("--gen-minutes", type=float, default=40.0, help="time budget of generation")
    parser.add_argument("--stages", default="generate,filter,train,eval")
    parser.add_argument("--test", action="store_true", help="also evaluate on test (do it once, at the end)")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    generation = args.out / "generation"
    timings: dict[str, float] = {}

    if "generate" in stages:
        started = time.monotonic()
        context = RetrievalContext(
            style="promptagator", examples_path=str(EXAMPLES), samples=1, max_tokens=32, max_doc_chars=400
        )
        resume = str(generation) if (generation / "manifest.json").exists() else None
        summary = generate_job(
            args.data / "corpus.jsonl",
            generation,
            context=context,
            limit=args.docs,
            resume=resume,
            max_minutes=args.gen_minutes,
            show_progress=False,
        )
        timings["generate"] = time.monotonic() - started
        print(f"generate: {summary.pairs} pairs, {summary.rejects} rejects, stopped early: {summary.stopped_early}")
    pairs = sum(1 for _ in (generation / PAIRS).open()) if (generation / PAIRS).exists() else 0
    print(json.dumps({"pairs": pairs, "timings": timings, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
