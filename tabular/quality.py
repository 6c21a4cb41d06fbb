"""Fidelity and privacy of a synthetic table against its training data and a holdout.

Accuracy follows the common definition (as in mostlyai-qa): every column is binned
on the training data (10 quantile bins for numbers and datetimes, the 10 most
frequent values plus "other" for categories, missing as its own bin); a marginal's
accuracy is 1 - total variation distance between the training and the synthetic
distribution. Univariate accuracy averages single columns, bivariate accuracy all
column pairs, and the overall figure averages the two.

DCR share: the share of synthetic rows whose closest training row is closer than
their closest holdout row (ties count half). A generator that copies its training
data scores near 1; one that generalises scores near 0.5.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch

N_BINS = 10
TOP_CATEGORIES = 10
DCR_CATEGORIES = 50


def is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )


def _as_float(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values.astype("datetime64[ns]")
        return np.where(stamps.isna(), np.nan, stamps.astype("int64").astype(float))
    return pd.to_numeric(values, errors="coerce").astype(float).to_numpy()


def column_binner(training: pd.Series) -> Any:
    """A function mapping a column to integer bins learned from the training column."""
    if is_number(training) or pd.api.types.is_datetime64_any_dtype(training.dtype):
        present = _as_float(training)
        present = present[~np.isnan(present)]
        edges = (
            np.unique(np.quantile(present, np.linspace(0, 1, N_BINS + 1)))
            if len(present)
            else np.zeros(1)
        )

        def bin_numbers(values: pd.Series) -> np.ndarray:
            numbers = _as_float(values)
            bins = np.searchsorted(edges[1:-1], numbers, side="right") + 1
            return np.where(np.isnan(numbers), 0, bins)

        return bin_numbers
    top = training.dropna().astype(str).value_counts().index[:TOP_CATEGORIES].tolist()
    code_of = {value: i + 2 for i, value in enumerate(top)}

    def bin_categories(values: pd.Series) -> np.ndarray:
        codes = (
            values.astype(str).map(lambda v: code_of.get(v, 1)).to_numpy(dtype=np.int64, copy=True)
        )
        codes[values.isna().to_numpy()] = 0
        return codes

    return bin_categories


def _accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """1 - total variation distance between the empirical distributions of two code arrays."""
    pa = pd.Series(a).value_counts(normalize=True)
    pb = pd.Series(b).value_counts(normalize=True)
    both = pa.index.union(pb.index)
    return float(
        1 - 0.5 * np.abs(pa.reindex(both, fill_value=0) - pb.reindex(both, fill_value=0)).sum()
    )


def _features(frame: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Numbers as training quantile ranks in [0, 1], categories one-hot, missing flagged."""
    parts = []
    for column in reference.columns:
        ref, values = reference[column], frame[column]
        if is_number(ref) or pd.api.types.is_datetime64_any_dtype(ref.dtype):
            ordered = np.sort(_as_float(ref)[~np.isnan(_as_float(ref))])
            numbers = _as_float(values)
            rank = np.searchsorted(ordered, numbers) / max(len(ordered), 1)
            parts.append(np.where(np.isnan(numbers), 0.0, rank)[:, None])
            parts.append(np.isnan(numbers).astype(float)[:, None])
        else:
            top = ref.dropna().astype(str).value_counts().index[:DCR_CATEGORIES]
            strings = values.astype(str).where(values.notna(), None)
            parts.append(
                np.stack([(strings == v).to_numpy(dtype=float) for v in top], axis=1)
                if len(top)
                else np.zeros((len(values), 0))
            )
            parts.append(values.isna().to_numpy(dtype=float)[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32)


def _nearest(query: np.ndarray, base: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance from each query row to its closest base row."""
    # float64 and rounding: the fast matrix-product distance is not exactly 0 for equal rows.
    base_t = torch.from_numpy(base.astype(np.float64))
    out = [
        torch.cdist(torch.from_numpy(query[i : i + chunk].astype(np.float64)), base_t)
        .min(dim=1)
        .values
        for i in range(0, len(query), chunk)
    ]
    return np.round(torch.cat(out).numpy(), 6) if out else np.zeros(0)


def quality_report(
    synthetic: pd.DataFrame,
    training: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    max_rows: int = 10_000,
    seed: int = 0,
    distances: bool = False,
) -> dict[str, Any]:
    """Univariate and bivariate accuracy and, given a holdout, the DCR share.

    With `distances`, `report["dcr"]["distances"]` also holds each synthetic row's distance to
    its closest training row and to its closest holdout row (two arrays, for plots; not JSON).
    """
    rng = np.random.default_rng(seed)

    def cap(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        return (
            frame.iloc[rng.choice(len(frame), rows, replace=False)] if len(frame) > rows else frame
        )

    columns = [c for c in training.columns if c in synthetic.columns]
    trn, syn = cap(training[columns], max_rows), cap(synthetic[columns], max_rows)
    binners = {c: column_binner(trn[c]) for c in columns}
    trn_bins = {c: binners[c](trn[c]) for c in columns}
    syn_bins = {c: binners[c](syn[c]) for c in columns}
    univariate = {c: _accuracy(trn_bins[c], syn_bins[c]) for c in columns}
    bivariate = {
        f"{a}|{b}": _accuracy(trn_bins[a] * 1000 + trn_bins[b], syn_bins[a] * 1000 + syn_bins[b])
        for a, b in combinations(columns, 2)
    }
    uni = float(np.mean(list(univariate.values()))) if univariate else float("nan")
    bi = float(np.mean(list(bivariate.values()))) if bivariate else uni
    report: dict[str, Any] = {
        "accuracy": {"overall": (uni + bi) / 2, "univariate": uni, "bivariate": bi},
        "univariate": univariate,
        "rows": {"synthetic": len(synthetic), "training": len(training)},
    }
    if holdout is not None:
        size = min(len(training), len(holdout), max_rows)
        trn_d, hol_d = cap(training[columns], size), cap(holdout[columns], size)
        syn_d = cap(synthetic[columns], max_rows)
        to_training = _nearest(_features(syn_d, trn_d), _features(trn_d, trn_d))
        to_holdout = _nearest(_features(syn_d, trn_d), _features(hol_d, trn_d))
        share = float(np.mean(to_training < to_holdout) + 0.5 * np.mean(to_training == to_holdout))
        report["dcr"] = {
            "share": share,
            "median_to_training": float(np.median(to_training)),
            "median_to_holdout": float(np.median(to_holdout)),
            "identical_to_training": float(np.mean(to_training == 0)),
        }
        if distances:
            report["dcr"]["distances"] = (to_training, to_holdout)
        report["rows"]["holdout"] = len(holdout)
    return report
