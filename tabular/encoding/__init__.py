"""Turn a table into a matrix of categorical codes and back.

Every column is handled by the module of its type (`categorical`, `numeric`,
`datetime`), each with the same three steps: `analyze` learns JSON-serialisable
statistics, `encode` maps values to one or more integer sub-columns, `decode`
maps codes back to values of the original dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from synthgraph.tabular.dp import CountNoise
from synthgraph.tabular.encoding import categorical, datetime, numeric

MODULES: dict[str, ModuleType] = {
    "categorical": categorical,
    "numeric": numeric,
    "datetime": datetime,
}


@dataclass(frozen=True)
class EncodingOptions:
    """Knobs of the encoders; defaults suit tables of a few thousand rows and up."""

    rare_min_count: int = 5
    max_discrete: int = 50
    max_digit_positions: int = 2
    n_bins: int = 100
    rare: str = "sample"
    """What a categorical value seen under `rare_min_count` times comes back as (see
    `categorical.RARE_MODES`)."""

    def to_dict(self) -> dict[str, int | str]:
        return {
            "rare": self.rare,
            "rare_min_count": self.rare_min_count,
            "max_discrete": self.max_discrete,
            "max_digit_positions": self.max_digit_positions,
            "n_bins": self.n_bins,
        }


def column_kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values.dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(values.dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return "datetime"
    return "categorical"


def analyze_column(
    values: pd.Series, options: EncodingOptions, noise: CountNoise | None = None
) -> dict[str, Any]:
    """The column's statistics; with `noise`, differentially private (see `synthgraph.tabular.dp`)."""
    kind = column_kind(values)
    if noise is not None and kind == "datetime":
        raise ValueError(
            f"column {values.name!r}: differential privacy does not cover datetime columns; "
            "convert them to numbers or leave them out"
        )
    if kind == "numeric":
        return numeric.analyze(
            values,
            rare_min_count=options.rare_min_count,
            max_discrete=options.max_discrete,
            max_digit_positions=options.max_digit_positions,
            n_bins=options.n_bins,
            noise=noise,
        )
    if kind == "categorical":
        return categorical.analyze(
            values, rare_min_count=options.rare_min_count, rare=options.rare, noise=noise
        )
    return MODULES[kind].analyze(values, rare_min_count=options.rare_min_count)


@dataclass
class TableEncoder:
    """Column statistics plus the layout of the sub-columns they produce."""

    columns: list[str]
    stats: dict[str, dict[str, Any]]
    sub_columns: list[dict[str, Any]] = field(init=False)
    column_of_sub: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.sub_columns = []
        self.column_of_sub = []
        for index, column in enumerate(self.columns):
            stats = self.stats[column]
            for sub in MODULES[stats["kind"]].sub_columns(stats):
                self.sub_columns.append({**sub, "column": column})
                self.column_of_sub.append(index)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, options: EncodingOptions, noise: CountNoise | None = None
    ) -> TableEncoder:
        """Statistics of every column; `noise` (private fits) is shared evenly by the columns."""
        columns = [str(c) for c in frame.columns]
        share = noise.split(len(columns)) if noise is not None and columns else None
        stats = {str(c): analyze_column(frame[c], options, share) for c in frame.columns}
        return cls(columns=columns, stats=stats)

    @property
    def cardinalities(self) -> list[int]:
        return [sub["cardinality"] for sub in self.sub_columns]

    def sub_indices(self, column: str) -> list[int]:
        target = self.columns.index(column)
        return [i for i, c in enumerate(self.column_of_sub) if c == target]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Codes of shape (rows, sub-columns); columns absent from `frame` stay 0."""
        codes = np.zeros((len(frame), len(self.sub_columns)), dtype=np.int64)
        for column in self.columns:
            if column not in frame.columns:
                continue
            stats = self.stats[column]
            encoded = MODULES[stats["kind"]].encode(frame[column].reset_index(drop=True), stats)
            for index in self.sub_indices(column):
                codes[:, index] = encoded[self.sub_columns[index]["name"]]
        return codes

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        decoded = {}
        for column in self.columns:
            stats = self.stats[column]
            parts = {self.sub_columns[i]["name"]: codes[:, i] for i in self.sub_indices(column)}
            decoded[column] = (
                MODULES[stats["kind"]].decode(parts, stats, rng).reset_index(drop=True)
            )
        return pd.DataFrame(decoded)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEncoder:
        return cls(columns=list(data["columns"]), stats=dict(data["stats"]))
