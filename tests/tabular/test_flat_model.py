"""The flat TabularARGN: sampling, conditioning, imputation, privacy guards, persistence."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthgraph.tabular import TabularARGN

SECRETS = ["secret-1", "secret-2", "secret-3"]


def make_table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """`amount` depends strongly on `kind`, so a learned dependency is visible."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(["small", "large"], n, p=[0.6, 0.4])
    amount = np.where(kind == "small", rng.normal(10, 2, n), rng.normal(500, 50, n)).round(2)
    frame = pd.DataFrame(
        {
            "kind": kind,
            "amount": amount,
            "count": rng.integers(0, 8, n),
            "member": rng.random(n) < 0.3,
            "joined": pd.Timestamp("2020-01-01")
            + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
            "city": rng.choice(["Vienna", "Graz", "Linz"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "city"] = None
    frame.loc[: len(SECRETS) - 1, "city"] = SECRETS  # each occurs once: must never be generated
    frame.loc[len(SECRETS), "amount"] = 1e9  # a single outlier: must never leak
    return frame


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def model(table: pd.DataFrame) -> TabularARGN:
    return TabularARGN(max_epochs=15, seed=0).fit(table)


def test_samples_have_the_training_columns_and_dtypes(
    model: TabularARGN, table: pd.DataFrame
) -> None:
    synthetic = model.sample(400, seed=1)
    assert list(synthetic.columns) == list(table.columns)
    assert len(synthetic) == 400
    assert synthetic.dtypes.to_dict() == table.dtypes.to_dict()
    assert synthetic["city"].isna().any()  # missing values are part of the distribution
    assert not synthetic["kind"].isna().any()  # and never invented where there were none


def test_learns_the_dependency_between_columns(model: TabularARGN) -> None:
    synthetic = model.sample(1000, seed=2)
    large = synthetic["kind"] == "large"
    assert (synthetic.loc[large, "amount"] > 200).mean() > 0.9
    assert (synthetic.loc[~large, "amount"] < 200).mean() > 0.9
    assert 0.3 < large.mean() < 0.5


def test_rare_categories_and_outliers_never_appear(model: TabularARGN, table: pd.DataFrame) -> None:
    synthetic = model.sample(3000, seed=3)
    assert not synthetic["city"].isin(SECRETS).any()
    assert synthetic["amount"].max() <= model.flat.encoder.stats["amount"]["max"] < 1e9
    assert synthetic["amount"].max() < table["amount"].max()


def test_conditional_generation_keeps_fixed_values_exactly(model: TabularARGN) -> None:
    seed = pd.DataFrame({"kind": ["large"] * 50 + ["small"] * 50, "count": [7] * 100})
    synthetic = model.sample(seed_data=seed, seed=4)
    assert len(synthetic) == 100
    pd.testing.assert_series_equal(synthetic["kind"], seed["kind"])
    pd.testing.assert_series_equal(synthetic["count"], seed["count"])
    # Conditioning works in any column order: the later-listed `amount` follows `kind`.
    assert (synthetic["amount"][:50] > 200).mean() > 0.9
    assert (synthetic["amount"][50:] < 200).mean() > 0.9


def test_conditioning_on_a_later_column_predicts_an_earlier_one(model: TabularARGN) -> None:
    seed = pd.DataFrame({"amount": [520.0] * 40 + [9.5] * 40})
    synthetic = model.sample(seed_data=seed, seed=5)
    # Far above the base rates (40 % large, 60 % small).
    assert (synthetic["kind"][:40] == "large").mean() > 0.75
    assert (synthetic["kind"][40:] == "small").mean() > 0.75


def test_imputation_fills_gaps_and_keeps_known_cells(
    model: TabularARGN, table: pd.DataFrame
) -> None:
    rng = np.random.default_rng(6)
    # Tables with gaps hold nullable types: floats for counts, pandas' boolean for flags.
    holes = table.iloc[100:300].reset_index(drop=True).astype({"count": float, "member": "boolean"})
    gaps = pd.DataFrame(rng.random(holes.shape) < 0.3, columns=holes.columns)
    for column in holes.columns:
        holes.loc[gaps[column], column] = None
    imputed = model.impute(holes, seed=7)
    assert imputed.shape == holes.shape
    assert not imputed.drop(columns=["city"]).isna().any().any()
    assert not imputed["city"][gaps["city"]].isna().any()
    for column in holes.columns:
        known = holes[column].notna()
        assert (imputed.loc[known, column].to_numpy() == holes.loc[known, column].to_numpy()).all()
    # Imputed amounts follow the known kind.
    filled = gaps["amount"] & holes["kind"].notna()
    large = holes.loc[filled, "kind"] == "large"
    assert (imputed.loc[filled, "amount"][large] > 200).mean() > 0.8


def test_top_p_near_zero_always_picks_the_mode(model: TabularARGN) -> None:
    synthetic = model.sample(200, top_p=1e-6, seed=8)
    assert synthetic.drop(columns=["amount", "joined"]).nunique().max() == 1
    assert (synthetic["kind"] == "small").all()


def test_save_and_load_reproduce_samples(model: TabularARGN, tmp_path: Path) -> None:
    model.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"weights.safetensors", "model.json"}
    restored = TabularARGN.load(tmp_path / "model")
    pd.testing.assert_frame_equal(restored.sample(300, seed=9), model.sample(300, seed=9))
    seed = pd.DataFrame({"kind": ["large"] * 5})
    pd.testing.assert_frame_equal(
        restored.sample(seed_data=seed, seed=10), model.sample(seed_data=seed, seed=10)
    )


def test_load_restores_the_whole_training_config(tmp_path: Path) -> None:
    model = TabularARGN(max_epochs=1, weight_decay=0.05, patience=2).fit(make_table(100))
    model.save(tmp_path)
    restored = TabularARGN.load(tmp_path)
    assert restored.train_config == model.train_config
    assert restored.train_config.weight_decay == 0.05


def test_a_flat_model_has_no_context_to_sample(model: TabularARGN) -> None:
    with pytest.raises(RuntimeError, match="sequential"):
        model.sample_with_context(5)


def test_training_honours_limits_seed_and_progress() -> None:
    table = make_table(300, seed=1)
    events: list[dict] = []
    first = TabularARGN(max_epochs=2, seed=5, num_threads=1).fit(table, progress=events.append)
    second = TabularARGN(max_epochs=2, seed=5, num_threads=1).fit(table)
    assert first.summary["flat"]["epochs"] == 2
    assert {e["epoch"] for e in events} == {1, 2}
    assert any("val_loss" in e for e in events)
    pd.testing.assert_frame_equal(first.sample(50, seed=1), second.sample(50, seed=1))


def test_time_limit_stops_training_early() -> None:
    table = make_table(300, seed=2)
    model = TabularARGN(max_epochs=1000, max_minutes=1e-4, seed=0).fit(table)
    assert model.summary["flat"]["stop_reason"] == "max_minutes"
    assert len(model.sample(10)) == 10
