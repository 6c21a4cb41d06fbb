"""Round trips of every column type through analyze -> encode -> decode."""

import numpy as np
import pandas as pd
import pytest

from synthgraph.tabular.encoding import (
    EncodingOptions,
    TableEncoder,
    categorical,
    datetime,
    numeric,
)


def round_trip(frame: pd.DataFrame, **options: int) -> tuple[TableEncoder, pd.DataFrame]:
    encoder = TableEncoder.fit(frame, EncodingOptions(**options))
    return encoder, encoder.decode(encoder.encode(frame), np.random.default_rng(0))


def test_categorical_round_trip_keeps_values_missing_and_dtype() -> None:
    values = pd.Series(["red"] * 10 + ["blue"] * 6 + [None] * 5, dtype="str")
    encoder, decoded = round_trip(pd.DataFrame({"colour": values}))
    assert decoded["colour"].dtype == values.dtype
    pd.testing.assert_series_equal(decoded["colour"], values, check_names=False)
    assert encoder.stats["colour"]["categories"] == ["red", "blue"]


def test_rare_categories_become_the_protected_token_and_come_back_as_the_mode_says() -> None:
    values = pd.Series(["common"] * 30 + ["usual"] * 10 + ["secret-a", "secret-b"])
    rng = np.random.default_rng(0)
    for mode in categorical.RARE_MODES:
        stats = categorical.analyze(values, rare_min_count=5, rare=mode)
        assert "secret-a" not in stats["categories"]
        codes = categorical.encode(values, stats)["cat"]
        assert set(codes[-2:]) == {categorical.RARE}
        rare_codes = np.full(4000, categorical.RARE)
        decoded = categorical.decode({"cat": rare_codes}, stats, rng)
        if mode == "token":
            assert set(decoded) == {categorical.RARE_VALUE}
        elif mode == "missing":
            assert decoded.isna().all()
        else:  # a frequent value, in proportion: common 30 : usual 10
            assert set(decoded) == {"common", "usual"}
            assert 0.7 < (decoded == "common").mean() < 0.8
    legacy = categorical.analyze(values, rare_min_count=5)
    del legacy["rare"], legacy["counts"]  # a model saved before the modes: the token
    assert categorical.decode({"cat": np.array([1])}, legacy, rng).iloc[0] == categorical.RARE_VALUE


def test_boolean_round_trip_keeps_bool_dtype() -> None:
    values = pd.Series([True, False] * 10)
    _, decoded = round_trip(pd.DataFrame({"flag": values}))
    assert decoded["flag"].dtype == bool
    assert decoded["flag"].tolist() == values.tolist()


def test_discrete_integers_round_trip_with_missing() -> None:
    values = pd.Series([1, 2, 3, None] * 10, dtype="float64")
    encoder, decoded = round_trip(pd.DataFrame({"n": values}))
    assert encoder.stats["n"]["encoding"] == "discrete"
    pd.testing.assert_series_equal(decoded["n"], values, check_names=False)


def test_digit_encoding_round_trips_negative_decimals_exactly() -> None:
    rng = np.random.default_rng(1)
    values = pd.Series(np.round(rng.uniform(-9.9, 9.9, 500), 1))
    encoder, decoded = round_trip(pd.DataFrame({"v": values}))
    stats = encoder.stats["v"]
    assert stats["encoding"] == "digit"
    inside = values.between(stats["min"], stats["max"])
    np.testing.assert_allclose(decoded["v"][inside], values[inside])
    assert (decoded["v"] < 0).sum() > 100


def test_binned_large_numbers_stay_close_and_keep_integer_dtype() -> None:
    rng = np.random.default_rng(2)
    values = pd.Series(rng.integers(-5_000_000_000, 5_000_000_000, 2000))
    encoder, decoded = round_trip(pd.DataFrame({"big": values}))
    stats = encoder.stats["big"]
    assert stats["encoding"] == "binned"
    assert decoded["big"].dtype == np.int64
    inside = values.between(stats["min"], stats["max"])
    width = (stats["max"] - stats["min"]) / 20  # 100 quantile bins of a uniform: ~1% wide
    assert (np.abs(decoded["big"][inside] - values[inside]) <= width).all()


def test_mass_points_keep_their_own_bin() -> None:
    values = pd.Series([0.0] * 600 + list(np.linspace(1, 1000, 400)))
    encoder, decoded = round_trip(pd.DataFrame({"v": values}), max_discrete=10)
    assert encoder.stats["v"]["encoding"] == "binned"
    assert (decoded["v"][:600] == 0).all()


@pytest.mark.parametrize("kind", ["digit", "binned"])
def test_outliers_are_clipped_to_protected_bounds(kind: str) -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(0, 1, 1000), 1 if kind == "digit" else 4)
    values[0] = 99.0  # one outlier far outside everything else
    stats = numeric.analyze(pd.Series(values), rare_min_count=5)
    assert stats["encoding"] == kind
    assert stats["max"] < 5
    assert sorted(values)[-6] == stats["max"]  # the 5 largest are clipped away
    subs = numeric.sub_columns(stats)
    rng_codes = {s["name"]: rng.integers(0, s["cardinality"], 5000) for s in subs}
    rng_codes[subs[0]["name"]] = np.maximum(rng_codes[subs[0]["name"]], 1)  # no missing tokens
    decoded = numeric.decode(rng_codes, stats, rng)
    assert decoded.between(stats["min"], stats["max"]).all()


def test_rare_discrete_values_are_suppressed() -> None:
    values = pd.Series([1] * 50 + [2] * 50 + [777])
    stats = numeric.analyze(values)
    assert stats["encoding"] == "discrete" and 777.0 not in stats["values"]
    assert numeric.RARE in numeric.sub_columns(stats)[0]["suppress"]


def test_datetime_round_trip_with_time_parts_and_missing() -> None:
    rng = np.random.default_rng(4)
    stamps = pd.Series(
        pd.Timestamp("2021-03-01") + pd.to_timedelta(rng.integers(0, 10**8, 300), unit="s")
    )
    stamps[::10] = pd.NaT
    encoder, decoded = round_trip(pd.DataFrame({"t": stamps}))
    assert [s["name"] for s in encoder.sub_columns] == [
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
    ]
    stats = encoder.stats["t"]
    inside = stamps.isna() | stamps.astype("int64").between(stats["min"], stats["max"])
    pd.testing.assert_series_equal(decoded["t"][inside], stamps[inside], check_names=False)
    assert decoded["t"].dtype == stamps.dtype


def test_dates_without_time_model_only_date_parts() -> None:
    dates = pd.Series(pd.date_range("2000-01-31", periods=400, freq="D"))
    stats = datetime.analyze(dates)
    assert stats["parts"] == ["year", "month", "day"]
    # Day 31 of a 30-day month is repaired rather than failing.
    decoded = datetime.decode(
        {"year": np.array([1]), "month": np.array([4]), "day": np.array([31])},
        stats,
        np.random.default_rng(0),
    )
    assert decoded.iloc[0] == pd.Timestamp("2000-04-30")


def test_table_encoder_survives_json_round_trip() -> None:
    import json

    frame = pd.DataFrame({"a": ["x", "y"] * 20, "b": np.arange(40) * 1.5})
    encoder = TableEncoder.fit(frame, EncodingOptions())
    restored = TableEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(restored.encode(frame), encoder.encode(frame))
