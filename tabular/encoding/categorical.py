"""Categorical columns: one sub-column whose tokens are the frequent values.

Token 0 is "missing", token 1 is the protected rare token, tokens 2.. are the
values that occur at least `rare_min_count` times, most frequent first. A value
seen fewer times is never stored in the statistics, so a model can never
reproduce it. A drawn rare token comes back as the `rare` mode says:
- `sample` (the default): a frequent value, drawn in proportion to its training count;
- `token`: the marker `RARE_VALUE`;
- `missing`: a missing value.
Models saved before the mode existed keep `token`.

With `noise` (private fits, see `synthgraph.tabular.dp`) the counts are Laplace-noised first:
a category is kept if its noisy count passes the noise's threshold, and its noisy count is
its weight; missing cells are one more count, and the rare token is always allowed.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from synthgraph.tabular.dp import CountNoise

MISSING = 0
RARE = 1
FIRST_VALUE = 2
RARE_VALUE = "_RARE_"
RareMode = Literal["sample", "token", "missing"]
RARE_MODES: tuple[str, ...] = get_args(RareMode)
SUB = "cat"


def _as_key(value: Any) -> Any:
    """Values are stored as JSON scalars: booleans stay booleans, the rest become strings."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return str(value)


def analyze(
    values: pd.Series,
    rare_min_count: int = 5,
    rare: str = "sample",
    noise: CountNoise | None = None,
) -> dict[str, Any]:
    present = values.dropna()
    counts = present.map(_as_key).value_counts(sort=True)
    n_missing = int(values.isna().sum())
    if noise is None:
        frequent = [key for key, count in counts.items() if count >= rare_min_count]
        kept = [int(counts[key]) for key in frequent]
        has_missing, has_rare = n_missing > 0, len(frequent) < len(counts)
    else:
        # One histogram, each row in one cell (a value or missing): its noise costs ε once.
        noisy = noise.counts(np.append(counts.to_numpy(), n_missing))
        threshold = noise.threshold(rare_min_count)
        order = np.argsort(-noisy[:-1], kind="stable")
        frequent = [counts.index[i] for i in order if noisy[i] >= threshold]
        kept = [round(float(noisy[i])) for i in order if noisy[i] >= threshold]
        has_missing, has_rare = bool(noisy[-1] >= threshold), True
    return {
        "kind": "categorical",
        "dtype": str(values.dtype),
        "categories": frequent,
        "counts": kept,
        "rare": rare,
        "has_missing": bool(has_missing),
        "has_rare": bool(has_rare),
    }


def sub_columns(stats: dict[str, Any]) -> list[dict[str, Any]]:
    suppress = []
    if not stats["has_missing"]:
        suppress.append(MISSING)
    if not stats["has_rare"]:
        suppress.append(RARE)
    return [
        {
            "name": SUB,
            "cardinality": FIRST_VALUE + len(stats["categories"]),
            "suppress": suppress,
            "missing": MISSING,
        }
    ]


def encode(values: pd.Series, stats: dict[str, Any]) -> dict[str, np.ndarray]:
    token_of = {key: FIRST_VALUE + i for i, key in enumerate(stats["categories"])}
    missing = values.isna().to_numpy()
    keys = values.map(lambda v: None if pd.isna(v) else _as_key(v))
    codes = keys.map(lambda k: token_of.get(k, RARE)).to_numpy(dtype=np.int64, copy=True)
    codes[missing] = MISSING
    return {SUB: codes}


def decode(
    codes: dict[str, np.ndarray], stats: dict[str, Any], rng: np.random.Generator
) -> pd.Series:
    tokens = codes[SUB]
    lookup = np.empty(FIRST_VALUE + len(stats["categories"]), dtype=object)
    lookup[MISSING] = None
    lookup[RARE] = RARE_VALUE
    lookup[FIRST_VALUE:] = stats["categories"]
    decoded = pd.Series(lookup[tokens], dtype=object)
    rare = tokens == RARE
    mode = stats.get("rare", "token")
    if rare.any() and mode == "missing":
        decoded[rare] = None
    elif rare.any() and mode == "sample":
        weights = np.asarray(stats.get("counts") or [], dtype=float)
        decoded[rare] = (
            rng.choice(
                np.asarray(stats["categories"], dtype=object),
                int(rare.sum()),
                p=weights / weights.sum(),
            )
            if weights.sum() > 0
            else None
        )
    dtype = stats["dtype"]
    if dtype == "bool":
        # A boolean column can only hold missing values if training had them.
        return decoded.astype("boolean") if decoded.isna().any() else decoded.astype(bool)
    if dtype == "boolean":
        return decoded.astype("boolean")
    if dtype == "category":
        return decoded.astype("category")
    if dtype == "str" or dtype.startswith("string"):
        return decoded.astype(dtype)
    return decoded
