"""TabularARGN on Ray Train: the one training loop, data-parallel (one local Ray per module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
import torch
from test_flat_model import make_table
from test_sequential import make_tables
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.tabular import TabularARGN, quality_report
from synthgraph.tabular.dp import DPConfig

EPOCHS = 8


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table(3000)


def _fixed_epochs() -> TabularARGN:
    """No early stop: both sides train exactly EPOCHS epochs."""
    return TabularARGN(max_epochs=EPOCHS, patience=EPOCHS, seed=0)


def _weights(model: TabularARGN) -> dict[str, torch.Tensor]:
    assert model.flat is not None
    return model.flat.net.state_dict()


def _accuracy(model: TabularARGN, table: pd.DataFrame) -> float:
    return quality_report(model.sample(len(table), seed=1), table)["accuracy"]["overall"]


def test_the_executor_is_checked_before_any_training(table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="executor"):
        TabularARGN().fit(table, executor="spark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        TabularARGN().fit(table, workers=2)
    with pytest.raises(ValueError, match="one process"):
        TabularARGN().fit(table, executor="ray", dp=DPConfig(epsilon=4.0))


def test_one_worker_trains_as_one_process_does(local_ray: None, table: pd.DataFrame) -> None:
    local = TabularARGN(max_epochs=2, seed=0).fit(table)
    on_ray = TabularARGN(max_epochs=2, seed=0).fit(table, executor="ray", workers=1)
    for name, value in _weights(local).items():
        torch.testing.assert_close(_weights(on_ray)[name], value, rtol=1e-4, atol=1e-5)
    assert on_ray.summary["flat"]["workers"] == 1


@pytest.fixture(scope="module")
def two_workers(local_ray: None, table: pd.DataFrame) -> tuple[TabularARGN, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    model = _fixed_epochs().fit(table, executor="ray", workers=2, progress=events.append)
    return model, events


def test_two_workers_reach_one_process_accuracy_at_equal_epochs(
    two_workers: tuple[TabularARGN, list[dict[str, Any]]], table: pd.DataFrame
) -> None:
    model, events = two_workers
    summary = model.summary["flat"]
    assert (summary["epochs"], summary["stop_reason"], summary["workers"]) == (
        EPOCHS,
        "max_epochs",
        2,
    )
    # Rank 0's events reach the driver: every epoch's, and some steps'.
    assert [e["epoch"] for e in events if "step" not in e] == list(range(1, EPOCHS + 1))
    assert any("step" in e for e in events)
    local = _fixed_epochs().fit(table)
    assert abs(_accuracy(model, table) - _accuracy(local, table)) <= 0.01


def test_a_fixed_seed_repeats_for_the_same_workers(
    two_workers: tuple[TabularARGN, list[dict[str, Any]]], table: pd.DataFrame
) -> None:
    again = _fixed_epochs().fit(table, executor="ray", workers=2)
    for name, value in _weights(two_workers[0]).items():
        assert torch.equal(_weights(again)[name], value), name


def test_a_sequential_model_trains_both_parts_on_ray(local_ray: None) -> None:
    context, events = make_tables(120)
    model = TabularARGN(max_epochs=1, seed=0).fit(
        events, context=context, context_key="customer", executor="ray", workers=2
    )
    assert {part: s["workers"] for part, s in model.summary.items()} == {
        "context": 2,
        "events": 2,
    }
    assert set(model.sample(5, seed=1).columns) == set(events.columns)


def test_the_command_trains_on_ray_workers_until_the_time_limit(
    local_ray: None, table: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "table.csv"
    table.to_csv(data, index=False)
    runner = CliRunner()
    fit = ["tabular", "fit", str(data), "-m", str(tmp_path / "model"), "--epochs", "50"]
    refused = runner.invoke(app, [*fit, "--executor", "thread", "--workers", "2"])
    assert refused.exit_code != 0 and "--workers is for --executor ray" in refused.output
    limited = [*fit, "--max-minutes", "0.0001", "--executor", "ray", "--workers", "2"]
    result = runner.invoke(app, limited)
    assert result.exit_code == 0, result.output
    # Every worker stops after the same step, or the others would wait for it forever.
    summary = TabularARGN.load(tmp_path / "model").summary["flat"]
    assert (summary["epochs"], summary["stop_reason"], summary["workers"]) == (
        1,
        "max_minutes",
        2,
    )
