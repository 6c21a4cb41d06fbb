"""Numeric columns, encoded one of three ways chosen from the data.

* discrete: few distinct values; each frequent value is a token, rare values share
  a token that generation never samples.
* digit: fixed-precision values with a short digit span (e.g. 0.23 .. 5.01); a sign
  sub-column plus one sub-column per digit position, so exact values come back.
* binned: everything else; quantile bins, decoded uniformly inside the bin and
  rounded to the column's precision. Values repeated so often that they fill
  several quantiles keep a bin of their own, so mass points survive.

Before digit or binned encoding every value is clipped to protected bounds: the
k-th smallest and k-th largest value, never the extremes, so a single outlier
can neither be learned nor leak through the decoder.

With `noise` (private fits) every statistic comes from noisy histograms instead: see
`private_analysis` and `synthgraph.tabular.dp`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from synthgraph.tabular.dp import GRID_CELLS, TAIL, CountNoise

MISSING = 0
RARE = 1
FIRST_VALUE = 2
HEAD_POSITIVE = 1
HEAD_NEGATIVE = 2
MAX_DECIMALS = 8


def _decimals(values: np.ndarray) -> int:
    """Smallest number of decimals that represents every value exactly (up to MAX_DECIMALS)."""
    for decimals in range(MAX_DECIMALS + 1):
        scaled = values * 10.0**decimals
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6 * max(1.0, 10.0**decimals)):
            return decimals
    return MAX_DECIMALS


def protected_bounds(values: np.ndarray, rare_min_count: int) -> tuple[float, float]:
    """Bounds that at least `k` + 1 values share, so no single record defines them."""
    ordered = np.sort(values)
    k = min(max(rare_min_count, math.ceil(0.001 * len(ordered))), (len(ordered) - 1) // 2)
    return float(ordered[k]), float(ordered[len(ordered) - 1 - k])


def analyze(
    values: pd.Series,
    rare_min_count: int = 5,
    max_discrete: int = 50,
    max_digit_positions: int = 2,
    n_bins: int = 100,
    encoding: str = "auto",
    noise: CountNoise | None = None,
) -> dict[str, Any]:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    present = numbers.dropna().to_numpy()
    stats: dict[str, Any] = {
        "kind": "numeric",
        "dtype": str(values.dtype),
        "has_missing": bool(numbers.isna().any()),
    }
    if noise is not None:
        return private_analysis(present, len(numbers), stats, noise, rare_min_count, n_bins)
    if len(present) == 0:
        return {**stats, "encoding": "discrete", "values": []}
    decimals = _decimals(present)
    stats["decimals"] = decimals
    counts = pd.Series(present).value_counts()
    frequent = sorted(float(v) for v, c in counts.items() if c >= rare_min_count)
    lo, hi = protected_bounds(present, rare_min_count)
    stats.update({"min": lo, "max": hi})
    span = max(abs(lo), abs(hi))
    top_exponent = math.floor(math.log10(span)) if span >= 1 else 0
    positions = top_exponent + 1 + decimals

    if encoding == "auto":
        if len(counts) <= max_discrete and frequent:
            encoding = "discrete"
        elif positions <= max_digit_positions:
            encoding = "digit"
        else:
            encoding = "binned"
    if encoding == "discrete":
        return {**stats, "encoding": "discrete", "values": frequent}
    if encoding == "digit":
        return {**stats, "encoding": "digit", "top_exponent": top_exponent}
    clipped = np.clip(present, lo, hi)
    quantiles = np.quantile(clipped, np.linspace(0, 1, n_bins + 1))
    edges, repeats = np.unique(quantiles, return_counts=True)
    # An edge repeated by several quantiles is a mass point: it gets its own bin.
    points = [float(e) for e, r in zip(edges, repeats, strict=True) if r > 1]
    return {**stats, "encoding": "binned", "edges": [float(e) for e in edges], "points": points}


LOG2_RANGE = 64
"""Powers of two -2^64 .. 2^64 bound a column under privacy; further values are clipped."""
SPURIOUS = 0.001
"""How often an empty power of two may pass as a bound, at most."""


def private_analysis(
    present: np.ndarray,
    n_rows: int,
    stats: dict[str, Any],
    noise: CountNoise,
    rare_min_count: int,
    n_bins: int,
) -> dict[str, Any]:
    """Binned statistics from three noisy histograms, each a third of the column's budget.

    1. Bounds and missing: rows per signed power of two (plus zero, plus missing); the bounds
       are the outermost powers of two whose noisy count passes `rare_min_count` and a
       threshold no empty bucket passes but once in `1 / SPURIOUS` columns (else the fullest
       power of two). A column has missing values if their noisy count passes it too.
    2. Decimals: rows per number of decimals they need; the most that passes (else 0).
    3. Edges: rows per cell of up to `GRID_CELLS` equal cells between the bounds; the bin
       edges are quantiles of its noisy cumulative counts (negative counts taken as 0, outer
       cells an empty cell would pass once in two columns dropped), between the `TAIL`
       quantiles.

    `n_rows` (missing cells included) is public, as in DP-SGD; the count of present values
    is not.
    """
    noise = noise.split(3)
    # 4 * LOG2_RANGE + 1 buckets: negatives (largest magnitude first), zero, positives.
    exponent = np.floor(np.log2(np.abs(present), where=present != 0, out=np.zeros(len(present))))
    exponent = np.clip(exponent, -LOG2_RANGE, LOG2_RANGE - 1).astype(int) + LOG2_RANGE
    bucket = np.where(present > 0, 2 * LOG2_RANGE + 1 + exponent, 2 * LOG2_RANGE - 1 - exponent)
    bucket = np.where(present == 0, 2 * LOG2_RANGE, bucket)
    lows = np.concatenate(
        [
            -(2.0 ** np.arange(LOG2_RANGE, -LOG2_RANGE, -1)),
            [0.0],
            2.0 ** np.arange(-LOG2_RANGE, LOG2_RANGE),
        ]
    )
    highs = np.concatenate(
        [
            -(2.0 ** np.arange(LOG2_RANGE - 1, -LOG2_RANGE - 1, -1)),
            [0.0],
            2.0 ** np.arange(-LOG2_RANGE + 1, LOG2_RANGE + 1),
        ]
    )
    n_missing = n_rows - len(present)
    noisy = noise.counts(np.append(np.bincount(bucket, minlength=len(lows)), n_missing))
    threshold = max(rare_min_count, noise.bucket_threshold(len(noisy), SPURIOUS))
    stats["has_missing"] = bool(noisy[-1] >= threshold)
    fullest = int(np.argmax(noisy[:-1]))
    first, last = noise.outermost(noisy[:-1], threshold) or (fullest, fullest)
    lo, hi = float(lows[first]), float(highs[last])

    needed = np.full(len(present), MAX_DECIMALS)
    for decimals in range(MAX_DECIMALS, -1, -1):
        scaled = present * 10.0**decimals
        exact = np.isclose(scaled, np.round(scaled), rtol=0, atol=1e-6 * max(1.0, 10.0**decimals))
        needed[exact] = decimals
    noisy = noise.counts(np.bincount(needed, minlength=MAX_DECIMALS + 1))
    enough = np.flatnonzero(noisy >= noise.bucket_threshold(len(noisy), SPURIOUS))
    stats["decimals"] = int(enough[-1]) if len(enough) else 0

    n_cells = int(np.clip(n_rows * noise.epsilon / 4, 8, GRID_CELLS))
    grid = np.linspace(lo, hi, n_cells + 1)
    cells = np.clip(np.searchsorted(grid, present, side="right") - 1, 0, n_cells - 1)
    noisy = np.clip(noise.counts(np.bincount(cells, minlength=n_cells)), 0.0, None)
    # The bounds are coarse (powers of two): the outer cells are often empty, and their noise
    # would stretch the range.
    first, last = noise.outermost(noisy, noise.bucket_threshold(n_cells, 0.5)) or (0, n_cells - 1)
    noisy[:first], noisy[last + 1 :] = 0.0, 0.0
    cumulative = np.concatenate([[0.0], np.cumsum(noisy)]) / max(noisy.sum(), 1e-12)
    quantiles = np.clip(np.linspace(0, 1, n_bins + 1), TAIL, 1 - TAIL)
    edges = np.unique(np.interp(quantiles, cumulative, grid))
    return {
        **stats,
        "min": float(edges[0]),
        "max": float(edges[-1]),
        "encoding": "binned",
        "edges": [float(e) for e in edges],
        "points": [],
    }


def _digit_names(stats: dict[str, Any]) -> list[str]:
    return [f"E{e}" for e in range(stats["top_exponent"], -stats["decimals"] - 1, -1)]


def sub_columns(stats: dict[str, Any]) -> list[dict[str, Any]]:
    missing_suppressed = [] if stats["has_missing"] else [MISSING]
    if stats["encoding"] == "discrete":
        return [
            {
                "name": "value",
                "cardinality": FIRST_VALUE + len(stats["values"]),
                # Rare values are learned as a group but never generated.
                "suppress": [*missing_suppressed, RARE],
                "missing": MISSING,
            }
        ]
    if stats["encoding"] == "binned":
        return [
            {
                "name": "bin",
                "cardinality": 1 + _n_bins(stats),
                "suppress": missing_suppressed,
                "missing": MISSING,
            }
        ]
    head_suppressed = list(missing_suppressed)
    if stats["min"] >= 0:
        head_suppressed.append(HEAD_NEGATIVE)
    head = {"name": "sign", "cardinality": 3, "suppress": head_suppressed, "missing": MISSING}
    digits = [
        {"name": n, "cardinality": 10, "suppress": [], "missing": None} for n in _digit_names(stats)
    ]
    return [head, *digits]


def _bins(stats: dict[str, Any]) -> list[tuple[float, float]]:
    """Bins as (low, high); a point bin has low == high."""
    edges, points = stats["edges"], set(stats["points"])
    bins: list[tuple[float, float]] = []
    for i, edge in enumerate(edges):
        if edge in points:
            bins.append((edge, edge))
        if i + 1 < len(edges):
            bins.append((edge, edges[i + 1]))
    if not bins:
        bins.append((edges[0], edges[0]))
    return bins


def _n_bins(stats: dict[str, Any]) -> int:
    return len(_bins(stats))


def encode(values: pd.Series, stats: dict[str, Any]) -> dict[str, np.ndarray]:
    numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    missing = np.isnan(numbers)
    filled = np.where(missing, 0.0, numbers)
    if stats["encoding"] == "discrete":
        known = np.asarray(stats["values"], dtype=float)
        if len(known) == 0:
            codes = np.full(len(filled), RARE)
        else:
            position = np.searchsorted(known, filled).clip(0, len(known) - 1)
            codes = np.where(known[position] == filled, FIRST_VALUE + position, RARE)
        codes[missing] = MISSING
        return {"value": codes.astype(np.int64)}
    clipped = np.clip(filled, stats["min"], stats["max"])
    if stats["encoding"] == "binned":
        bins = _bins(stats)
        lows = np.array([b[0] for b in bins])
        highs = np.array([b[1] for b in bins])
        # The last bin whose low edge is <= value; point bins precede the interval
        # starting at the same edge, so an exact hit on a point picks the point.
        index = np.searchsorted(lows, clipped, side="right") - 1
        index = index.clip(0, len(bins) - 1)
        is_point_before = (
            (index > 0) & (lows[index - 1] == highs[index - 1]) & (lows[index - 1] == clipped)
        )
        index = np.where(is_point_before, index - 1, index)
        codes = 1 + index
        codes[missing] = MISSING
        return {"bin": codes.astype(np.int64)}
    scale = 10 ** stats["decimals"]
    integer = np.round(np.abs(clipped) * scale).astype(np.int64)
    head = np.where(clipped < 0, HEAD_NEGATIVE, HEAD_POSITIVE)
    head[missing] = MISSING
    out = {"sign": head.astype(np.int64)}
    for name in _digit_names(stats):
        position = int(name[1:]) + stats["decimals"]
        out[name] = (integer // 10**position) % 10
    return out


def _restore_dtype(numbers: np.ndarray, stats: dict[str, Any]) -> pd.Series:
    dtype = stats["dtype"]
    series = pd.Series(numbers)
    if "int" in dtype.lower():
        if series.isna().any():
            return series.round().astype("Int64")
        return series.round().astype(dtype)
    if stats.get("decimals") is not None:
        series = series.round(stats["decimals"])
    return series.astype(dtype) if dtype.startswith("float") else series


def decode(
    codes: dict[str, np.ndarray], stats: dict[str, Any], rng: np.random.Generator
) -> pd.Series:
    if stats["encoding"] == "discrete":
        tokens = codes["value"]
        lookup = np.concatenate([[np.nan, np.nan], np.asarray(stats["values"], dtype=float)])
        return _restore_dtype(lookup[tokens], stats)
    if stats["encoding"] == "binned":
        tokens = codes["bin"]
        bins = _bins(stats)
        lows = np.array([np.nan] + [b[0] for b in bins])
        highs = np.array([np.nan] + [b[1] for b in bins])
        numbers = lows[tokens] + rng.random(len(tokens)) * (highs[tokens] - lows[tokens])
        numbers = np.round(numbers, stats["decimals"])
        return _restore_dtype(np.clip(numbers, stats["min"], stats["max"]), stats)
    scale = 10 ** stats["decimals"]
    integer = np.zeros(len(codes["sign"]), dtype=np.int64)
    for name in _digit_names(stats):
        integer += codes[name] * 10 ** (int(name[1:]) + stats["decimals"])
    numbers = np.clip(
        integer / scale * np.where(codes["sign"] == HEAD_NEGATIVE, -1.0, 1.0),
        stats["min"],
        stats["max"],
    )
    numbers[codes["sign"] == MISSING] = np.nan
    return _restore_dtype(numbers, stats)
