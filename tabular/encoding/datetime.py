"""Datetime columns: split into year, month, day, hour, minute, second sub-columns.

Each part is a small integer sub-column. The year sub-column carries the missing
token (0) for the whole value; the other parts are 0 on missing rows. Values are
clipped to protected bounds first (see `numeric.protected_bounds`), and parts that
never vary in training (e.g. the time of a pure date) are not modelled at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthgraph.tabular.encoding.numeric import protected_bounds

MISSING = 0
TIME_PARTS = ("hour", "minute", "second")
CARDINALITY = {"month": 13, "day": 32, "hour": 24, "minute": 60, "second": 60}


def _naive(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, errors="coerce")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    # Integer arithmetic below assumes nanoseconds, whatever unit the input used.
    return stamps.astype("datetime64[ns]")


def analyze(values: pd.Series, rare_min_count: int = 5) -> dict[str, Any]:
    stamps = _naive(values)
    present = stamps.dropna()
    tz = getattr(pd.to_datetime(values, errors="coerce").dt, "tz", None)
    stats: dict[str, Any] = {
        "kind": "datetime",
        "dtype": str(values.dtype),
        "tz": str(tz) if tz is not None else None,
        "has_missing": bool(stamps.isna().any()),
    }
    if len(present) == 0:
        return {
            **stats,
            "min": None,
            "max": None,
            "parts": ["year"],
            "min_year": 2000,
            "max_year": 2000,
        }
    nanos = present.astype("int64").to_numpy()
    lo, hi = protected_bounds(nanos, rare_min_count)
    clipped = pd.DatetimeIndex(pd.to_datetime(np.clip(nanos, lo, hi), unit="ns"))
    parts = ["year", "month", "day"]
    parts += [p for p in TIME_PARTS if (getattr(clipped, p) != 0).any()]
    # A time part is only kept with every coarser time part, so decoding is simple.
    if parts[-1] != "day":
        parts = ["year", "month", "day", *TIME_PARTS[: TIME_PARTS.index(parts[-1]) + 1]]
    return {
        **stats,
        "min": int(lo),
        "max": int(hi),
        "parts": parts,
        "min_year": int(clipped.year.min()),
        "max_year": int(clipped.year.max()),
    }


def sub_columns(stats: dict[str, Any]) -> list[dict[str, Any]]:
    year = {
        "name": "year",
        "cardinality": 1 + stats["max_year"] - stats["min_year"] + 1,
        "suppress": [] if stats["has_missing"] else [MISSING],
        "missing": MISSING,
    }
    rest = [
        {"name": part, "cardinality": CARDINALITY[part], "suppress": [], "missing": None}
        for part in stats["parts"][1:]
    ]
    return [year, *rest]


def encode(values: pd.Series, stats: dict[str, Any]) -> dict[str, np.ndarray]:
    stamps = _naive(values)
    missing = stamps.isna().to_numpy()
    if stats["min"] is None:
        return {"year": np.zeros(len(stamps), dtype=np.int64)}
    nanos = np.where(missing, stats["min"], stamps.astype("int64").to_numpy())
    clipped = pd.DatetimeIndex(
        pd.to_datetime(np.clip(nanos, stats["min"], stats["max"]), unit="ns")
    )
    out: dict[str, np.ndarray] = {}
    for part in stats["parts"]:
        codes = np.asarray(getattr(clipped, part), dtype=np.int64)
        if part == "year":
            codes = codes - stats["min_year"] + 1
        codes[missing] = MISSING
        out[part] = codes
    return out


def decode(
    codes: dict[str, np.ndarray], stats: dict[str, Any], rng: np.random.Generator
) -> pd.Series:
    missing = codes["year"] == MISSING
    frame = pd.DataFrame({"year": codes["year"] + stats["min_year"] - 1})
    for part in ("month", "day", *TIME_PARTS):
        frame[part] = codes.get(part, 0)
    frame["month"] = frame["month"].clip(1, 12)
    frame.loc[missing, ["year", "month"]] = [stats["min_year"], 1]
    month_start = pd.to_datetime(frame[["year", "month"]].assign(day=1))
    # Day 31 in a 30-day month becomes the month's last day instead of failing.
    frame["day"] = np.minimum(frame["day"].clip(lower=1), month_start.dt.days_in_month)
    stamps = pd.to_datetime(frame[["year", "month", "day", *TIME_PARTS]]).astype("datetime64[ns]")
    if stats["min"] is not None:
        nanos = np.clip(stamps.astype("int64").to_numpy(), stats["min"], stats["max"])
        stamps = pd.Series(pd.to_datetime(nanos, unit="ns"))
    stamps[missing] = pd.NaT
    if stats["tz"] is not None:
        stamps = stamps.dt.tz_localize("UTC").dt.tz_convert(stats["tz"])
    dtype = stats["dtype"]
    if dtype.startswith("datetime64") and stats["tz"] is None:
        return stamps.astype(dtype)
    return stamps
