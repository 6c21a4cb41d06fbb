"""Differential privacy: DP-SGD through Opacus, the private value analysis, the record, the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.tabular.graph import graph
from synthgraph.graphs.tabular.tool import fit_tool
from synthgraph.tabular import TabularARGN
from synthgraph.tabular.constraints import Range
from synthgraph.tabular.dp import ANALYSIS_SHARE, CountNoise, DPConfig
from synthgraph.tabular.encoding import categorical, numeric
from synthgraph.tools.workspace import workspace_root


def make_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[:2] = ["only-once", "only-twice"]
    colour[2] = "only-twice"
    return pd.DataFrame(
        {"colour": colour, "size": np.where(colour == "red", 10.0, 2.0) + rng.normal(0, 1, n)}
    )


def weights(model: TabularARGN) -> torch.Tensor:
    assert model.flat is not None
    return torch.cat([p.detach().flatten() for p in model.flat.net.parameters()])


def test_a_private_fit_spends_at_most_its_budget_and_saves_the_record(tmp_path: Path) -> None:
    model = TabularARGN(max_epochs=2).fit(make_table(), dp=DPConfig(epsilon=3.0, delta=1e-5))

    record = model.privacy
    assert record is not None
    assert 0 < record["epsilon"] <= 3.0 and record["target_epsilon"] == 3.0
    assert record["value_analysis_epsilon"] == pytest.approx(3.0 * ANALYSIS_SHARE)
    assert record["delta"] == 1e-5 and record["max_grad_norm"] == 1.0
    assert record["noise_multiplier"] > 0 and record["steps"] > 0
    summary = model.summary["flat"]
    assert summary["epochs"] == 2 and summary["stop_reason"] == "privacy_budget"
    assert summary["history"] == []  # training losses are not private: not saved
    # No category seen under the threshold reaches the model.
    assert model.flat is not None
    assert set(model.flat.encoder.stats["colour"]["categories"]) <= {"red", "green", "blue"}

    loaded = TabularARGN.load(model.save(tmp_path / "model"))
    assert loaded.privacy == model.privacy
    synthetic = loaded.sample(50, seed=0)
    assert list(synthetic.columns) == ["colour", "size"]
    assert not synthetic["colour"].isin(["only-once", "only-twice"]).any()
    assert TabularARGN(max_epochs=1).fit(make_table()).privacy is None


def test_the_noise_changes_the_model_and_the_seed_does_not_fix_it() -> None:
    table = make_table(200)
    plain = TabularARGN(max_epochs=1, seed=0).fit(table)
    private = [TabularARGN(max_epochs=1, seed=0).fit(table, dp=DPConfig(2.0)) for _ in range(2)]

    assert weights(private[0]).shape != weights(plain).shape or not torch.equal(
        weights(private[0]), weights(plain)
    )
    # Same seed, other noise: a known seed must not let anyone subtract the noise.
    assert not torch.equal(weights(private[0]), weights(private[1]))


def test_categories_below_the_noisy_threshold_are_dropped() -> None:
    values = pd.Series(
        ["common"] * 500 + ["fair"] * 60 + ["rare"] * 3 + [f"u{i}" for i in range(50)]
    )
    noise = CountNoise(epsilon=1.0, delta=1e-5, rng=np.random.default_rng(0))
    assert noise.threshold(5) == pytest.approx(1 + np.log(1 / 2e-5))

    stats = categorical.analyze(values, rare_min_count=5, noise=noise)

    assert stats["categories"] == ["common", "fair"]
    assert abs(stats["counts"][0] - 500) < 20 and abs(stats["counts"][1] - 60) < 20
    assert stats["has_rare"] and not stats["has_missing"]
    with_gaps = categorical.analyze(pd.concat([values, pd.Series([None] * 100)]), noise=noise)
    assert with_gaps["has_missing"]


def test_a_single_outlier_cannot_set_the_private_numeric_bounds() -> None:
    rng = np.random.default_rng(0)
    values = pd.Series(np.append(rng.normal(50, 5, 2000).round(1), 1e6))
    noise = CountNoise(epsilon=1.0, delta=1e-5, rng=np.random.default_rng(1))

    stats = numeric.analyze(values, noise=noise)

    assert stats["encoding"] == "binned" and stats["points"] == []
    assert 30 < stats["min"] < 45 and 55 < stats["max"] < 70
    assert stats["decimals"] == 1 and not stats["has_missing"]
    assert stats["edges"] == sorted(stats["edges"])


def test_what_privacy_does_not_cover_is_refused() -> None:
    table = make_table(100)
    events = table.assign(entity=np.arange(100) // 4)
    with pytest.raises(ValueError, match="flat tables only"):
        TabularARGN(max_epochs=1).fit(events, context_key="entity", dp=DPConfig(1.0))
    with pytest.raises(ValueError, match="constraints"):
        TabularARGN(max_epochs=1).fit(
            table, constraints=[Range("size", min=0.0, max=20.0)], dp=DPConfig(1.0)
        )
    dated = table.assign(day=pd.date_range("2024-01-01", periods=100))
    with pytest.raises(ValueError, match="datetime"):
        TabularARGN(max_epochs=1).fit(dated, dp=DPConfig(1.0))
    with pytest.raises(ValueError, match="epsilon"):
        DPConfig(epsilon=0)
    with pytest.raises(ValueError, match="delta"):
        DPConfig(epsilon=1.0, delta=1.0)


def test_cli_fit_with_dp_flags_and_the_report_shows_the_record(tmp_path: Path) -> None:
    runner = CliRunner()
    make_table(300, 0).to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "model"

    fitted = runner.invoke(
        app,
        [
            "tabular",
            "fit",
            str(tmp_path / "train.csv"),
            "--model",
            str(model),
            "--epochs",
            "1",
            "--dp-epsilon",
            "5",
            "--dp-delta",
            "1e-6",
            "--dp-max-grad-norm",
            "2",
        ],
    )
    assert fitted.exit_code == 0, fitted.output
    assert "differential privacy ε (spent)" in fitted.output
    record = json.loads((model / "model.json").read_text())["privacy"]
    assert record["epsilon"] <= 5 and record["delta"] == 1e-6 and record["max_grad_norm"] == 2

    sampled = runner.invoke(
        app,
        ["tabular", "sample", "-m", str(model), "--rows", "100", "--out", str(tmp_path / "s.csv")],
    )
    assert sampled.exit_code == 0, sampled.output
    reported = runner.invoke(
        app,
        [
            "tabular",
            "report",
            "--synthetic",
            str(tmp_path / "s.csv"),
            "--training",
            str(tmp_path / "train.csv"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "report.json"),
            "--html",
            str(tmp_path / "pictures"),
        ],
    )
    assert reported.exit_code == 0, reported.output
    assert json.loads((tmp_path / "report.json").read_text())["privacy"] == record
    page = (tmp_path / "pictures" / "report.html").read_text()
    assert "differential privacy ε (spent)" in page and f"{record['epsilon']:.3f}" in page

    refused = runner.invoke(
        app,
        ["tabular", "fit", str(tmp_path / "train.csv"), "-m", str(model), "--dp-epsilon", "0"],
    )
    assert refused.exit_code != 0


def test_the_tool_and_the_graph_take_the_same_dp_arguments() -> None:
    root = workspace_root()
    make_table(300, 0).to_csv(root / "train.csv", index=False)

    fitted = fit_tool().invoke(
        {"data_path": "train.csv", "model_dir": "m", "max_epochs": 1, "dp_epsilon": 4.0}
    )
    assert 0 < fitted["privacy"]["epsilon"] <= 4.0

    result = graph.invoke(
        {
            "training_path": "train.csv",
            "model_dir": "g",
            "output_path": "g.csv",
            "rows": 50,
            "max_epochs": 1,
            "dp_epsilon": 4.0,
            "dp_max_grad_norm": 0.5,
        }
    )
    assert result["fit"]["privacy"]["max_grad_norm"] == 0.5
    assert result["metrics"]["privacy"] == result["fit"]["privacy"]
