"""Constraints hold by construction in sampled tables; the source's breaches are only counted."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.tabular.job import fit_job
from synthgraph.tabular import TabularARGN
from synthgraph.tabular.constraints import (
    ConstraintError,
    FixedCombinations,
    Inequality,
    Range,
    Sum,
    ValueSet,
)
from synthgraph.tools.io import InputError

COUNTRY = {"Vienna": "Austria", "Graz": "Austria", "Munich": "Germany", "Zurich": "Switzerland"}
CONSTRAINTS = [
    FixedCombinations(columns=["city", "country"]),
    Inequality(low="start", high="end"),
    Range(column="price", min=10, max=400),
    Range(column="rating", min=2, max=8.5),
    ValueSet(column="status", values=["open", "closed"]),
    Sum(columns=["a", "b"], total="c"),
]
PLANTED = {"combination": 3, "inequality": 4, "sum": 5}


def make_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Every kind of constraint, each broken by a few planted rows."""
    rng = np.random.default_rng(seed)
    city = rng.choice(list(COUNTRY), n)
    start = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    frame = pd.DataFrame(
        {
            "city": city,
            "country": [COUNTRY[c] for c in city],
            "start": start,
            "end": start + pd.to_timedelta(rng.integers(0, 60, n), unit="D"),
            "price": rng.uniform(5, 500, n).round(2),  # binned
            "rating": rng.uniform(0, 9.9, n).round(1),  # sign and digits
            "status": rng.choice(["open", "closed", "pending"], n, p=[0.5, 0.4, 0.1]),
            "a": rng.integers(0, 100, n),
            "b": rng.integers(0, 1000, n),
        }
    )
    frame["c"] = frame["a"] + frame["b"]
    frame.loc[0:2, ["city", "country"]] = ["Vienna", "Germany"]  # too rare to be allowed
    frame.loc[3:6, "end"] = frame.loc[3:6, "start"] - pd.Timedelta(days=5)
    frame.loc[7:11, "c"] += 1
    return frame


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def model(table: pd.DataFrame) -> TabularARGN:
    return TabularARGN(max_epochs=2, seed=0).fit(table, constraints=CONSTRAINTS)


def test_the_sources_breaches_are_counted(model: TabularARGN, table: pd.DataFrame) -> None:
    assert list(model.source_violations.values()) == [
        PLANTED["combination"],
        PLANTED["inequality"],
        int(((table["price"] < 10) | (table["price"] > 400)).sum()),
        int(((table["rating"] < 2) | (table["rating"] > 8.5)).sum()),
        int((table["status"] == "pending").sum()),
        PLANTED["sum"],
    ]
    assert model.violations(table) == model.source_violations


def test_no_violations_in_10000_sampled_rows(model: TabularARGN, table: pd.DataFrame) -> None:
    synthetic = model.sample(10_000, seed=1)
    assert model.violations(synthetic) == {c.label(): 0 for c in CONSTRAINTS}
    assert list(synthetic.columns) == list(table.columns)
    assert synthetic.dtypes.to_dict() == table.dtypes.to_dict()
    assert set(zip(synthetic["city"], synthetic["country"], strict=True)) <= set(COUNTRY.items())
    assert (synthetic["start"] <= synthetic["end"]).all()
    assert synthetic["price"].between(10, 400).all()
    assert synthetic["rating"].between(2, 8.5).all()
    assert set(synthetic["status"]) == {"open", "closed"}
    assert (synthetic["a"] + synthetic["b"] == synthetic["c"]).all()
    # Masked, not clamped: values do not pile up on the bounds.
    assert (synthetic["rating"] == 2).mean() < 0.05
    assert (synthetic["start"] == synthetic["end"]).mean() < 0.1


def test_masks_alone_keep_exactly_encoded_columns_in_bounds(model: TabularARGN) -> None:
    assert model.flat is not None and model.constraints is not None
    encoder, n = model.flat.encoder, 3000
    codes = model.flat.draw(
        pd.DataFrame(index=range(n)),
        np.zeros((n, len(encoder.columns)), dtype=bool),
        1.0,
        1.0,
        torch.Generator().manual_seed(0),
        row_mask=model.constraints.mask(encoder),
    )
    drawn = encoder.decode(codes, np.random.default_rng(0)).assign(c=0)
    counts = model.violations(drawn)  # before any clamping; price is binned, so clamped later
    for constraint in CONSTRAINTS[:2] + CONSTRAINTS[3:5]:
        assert counts[constraint.label()] == 0, constraint


def test_given_cells_are_kept_and_their_breaches_counted(model: TabularARGN) -> None:
    given = pd.DataFrame(
        {
            "city": ["Vienna"] * 4 + ["Zurich"] * 4,
            "country": ["Germany"] * 4 + [None] * 4,
            "end": [pd.Timestamp("2021-06-01")] * 8,
            "c": [500] * 8,
        }
    )
    synthetic = model.sample(seed_data=given, seed=2)
    pd.testing.assert_series_equal(synthetic["country"], given["country"])
    pd.testing.assert_series_equal(synthetic["c"], given["c"])
    assert (synthetic["start"] <= synthetic["end"]).all()
    assert (synthetic["a"] + synthetic["b"] == 500).all()  # the last addend makes up the total
    counts = model.violations(synthetic)
    assert counts["combination of city, country"] == 8  # Vienna/Germany is rare, None unseen
    assert sum(counts.values()) == 8


def test_imputed_cells_keep_the_constraints(model: TabularARGN, table: pd.DataFrame) -> None:
    gaps = table.head(40).copy()
    gaps.loc[20:, "country"] = None
    gaps.loc[20:29, "end"] = None
    gaps.loc[20:29, "c"] = None
    gaps.loc[30:, "a"] = None
    imputed = model.impute(gaps, seed=3)
    tail = imputed.iloc[20:]
    assert (tail["country"] == tail["city"].map(COUNTRY)).all()
    assert (tail["start"] <= tail["end"]).all()
    assert (tail["a"] + tail["b"] == tail["c"]).all()
    assert model.violations(imputed.iloc[:20]) == model.violations(table.head(20))


def test_constraints_survive_save_and_load(model: TabularARGN, tmp_path: Path) -> None:
    loaded = TabularARGN.load(model.save(tmp_path / "model"))
    assert loaded.source_violations == model.source_violations
    synthetic = loaded.sample(2000, seed=4)
    assert sum(loaded.violations(synthetic).values()) == 0


def test_unusable_constraints_are_refused_before_training(table: pd.DataFrame) -> None:
    cases = [
        (Range(column="status", min=0), "needs numbers or datetimes"),
        (ValueSet(column="price", values=[10]), "categorical or few-valued numeric"),
        (ValueSet(column="status", values=["lost"]), "no value of it was learned"),
        (Inequality(low="a", high="c"), "a sum's total is derived"),
    ]
    for constraint, cause in cases:
        rules = [constraint, Sum(columns=["a", "b"], total="c")]
        with pytest.raises(ConstraintError, match=cause):
            TabularARGN(max_epochs=1).fit(table, constraints=rules)
    with pytest.raises(ConstraintError, match="flat tables"):
        TabularARGN(max_epochs=1).fit(table, context_key="city", constraints=CONSTRAINTS)


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b'[{"kind": "range", "column": "weight", "max": 3}]', "no column weight"),
        (b'[{"kind": "range", "column": "price", "top": 3}]', "unknown field top"),
        (b'[{"kind": "ratio"}]', "unknown constraint kind 'ratio'"),
        (b'{"kind": "range"}', "not a JSON list"),
        (b"[{kind: range}]", "not valid JSON"),
        (b'[{"kind": "value_set", "column": "status", "values": ["\xe9t\xe9"]}]', "not UTF-8"),
        (b'[{"kind": "range", "column": "status", "min": 1}]', "needs numbers or datetimes"),
    ],
)
def test_a_bad_constraints_file_is_one_input_error_naming_it(
    tmp_path: Path, content: bytes, cause: str
) -> None:
    make_table(60).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "rules.json").write_bytes(content)
    with pytest.raises(InputError) as raised:
        fit_job(
            tmp_path / "train.csv", tmp_path / "m", epochs=1, constraints=tmp_path / "rules.json"
        )
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "rules.json")) and cause in message
    assert "\n" not in message
    assert not (tmp_path / "m").exists()


def test_cli_fits_with_a_constraints_file_and_reports_the_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    make_table(200).to_parquet(tmp_path / "train.parquet")  # CSV would read dates as text
    rules = '[{"kind": "inequality", "low": "start", "high": "end"},'
    rules += ' {"kind": "sum", "columns": ["a", "b"], "total": "c"}]'
    (tmp_path / "rules.json").write_text(rules)
    model, out = str(tmp_path / "model"), tmp_path / "syn.parquet"
    args = ["tabular", "fit", str(tmp_path / "train.parquet"), "-m", model, "--epochs", "1"]
    fitted = runner.invoke(app, [*args, "--constraints", str(tmp_path / "rules.json")])
    assert fitted.exit_code == 0, fitted.output
    assert re.search(r"start <= end\s*│\s*4 ", fitted.output), fitted.output  # planted
    sampled = runner.invoke(
        app, ["tabular", "sample", "-m", model, "--rows", "500", "--seed", "0", "-o", str(out)]
    )
    assert sampled.exit_code == 0, sampled.output
    assert re.search(r"start <= end\s*│\s*0 ", sampled.output), sampled.output
    assert re.search(r"a \+ b = c\s*│\s*0 ", sampled.output), sampled.output
    synthetic = pd.read_parquet(out)
    assert (synthetic["start"] <= synthetic["end"]).all()
    assert (synthetic["a"] + synthetic["b"] == synthetic["c"]).all()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff[]")
    refused = runner.invoke(app, [*args, "--constraints", str(bad)])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.splitlines() == [
        f"error: {bad}: not UTF-8 text (byte 0xff); save it as UTF-8"
    ]


def test_the_fit_tool_takes_a_constraints_file_inside_the_workspace_only(tmp_path: Path) -> None:
    from synthgraph.graphs.tabular.tool import fit_tool
    from synthgraph.tools.workspace import workspace_root

    root = workspace_root()
    make_table(200).to_parquet(root / "train.parquet")
    (root / "rules.json").write_text('[{"kind": "sum", "columns": ["a", "b"], "total": "c"}]')
    fitted = fit_tool().invoke(
        {
            "data_path": "train.parquet",
            "model_dir": "m",
            "max_epochs": 1,
            "constraints_path": "rules.json",
        }
    )
    assert fitted["violations"] == {"a + b = c": 5}  # the planted ones
    outside = tmp_path / "rules.json"
    outside.write_text("[]")
    reply = fit_tool().invoke(
        {"data_path": "train.parquet", "model_dir": "m2", "constraints_path": str(outside)}
    )
    assert "outside the workspace" in reply and not (root / "m2").exists()
