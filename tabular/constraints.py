"""Constraints that hold by construction in sampled tables, not by rejection.

They are given to `TabularARGN.fit` and saved with the model, so every sample honours them.
Sampling draws sub-column by sub-column (`sampling.sample_codes`); before each draw the
`ConstraintMask` bans, per row, the tokens that could only decode to a breaking value:

* `ValueSet(column, values)`: tokens of other values (categorical or discrete numeric columns).
* `FixedCombinations(columns)`: the allowed combinations are those seen at least
  `rare_min_count` times in training (rarer ones are not learned, like rare categories, and a
  typo does not become a rule); a column of the group may only take values that, with the
  group's cells already known in that row, still form an allowed combination.
* `Range(column, min, max)` and `Inequality(low, high)` (numbers or datetimes): a token is
  allowed when the values it can still decode to (given the row's drawn sub-columns: sign and
  digits, year..second, a bin) meet the row's bounds; an inequality bounds one column by the
  other once that one is known, whichever is drawn first. Exact for discrete, digit and
  datetime encodings; a bin is uniform inside, so after decoding the value is clamped into the
  bounds (`enforce`), which also settles a `low` that fell in the same bin as `high`.
* `Sum(columns, total)`: `total` is not modelled at all; it is derived as the sum after
  decoding, rounded to the columns' precision and cast to the total's training dtype. Where
  the caller gives the total, the last drawn addend is derived instead (total - the others).

Missing cells break no range, value set, inequality or sum (as in SQL CHECK); a combination
includes its missing cells. Cells fixed by the caller (conditional generation, imputation)
are kept even when they break a constraint: a row left with no allowed token is drawn
unmasked, and `violations` counts it. Constraints that contradict each other are not resolved.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from synthgraph.tabular.encoding import MODULES, TableEncoder, column_kind
from synthgraph.tabular.encoding.categorical import _as_key
from synthgraph.tabular.encoding.datetime import _naive
from synthgraph.tabular.encoding.numeric import _bins, _decimals, _restore_dtype


class ConstraintError(ValueError):
    """A constraint that is malformed, names no column of the table, or cannot be used on it."""


@dataclass
class FixedCombinations:
    columns: list[str]
    allowed: list[list[Any]] | None = None
    """Learned by `fit`: the allowed combinations, as value keys (see `_keys`)."""
    kind: ClassVar[str] = "fixed_combinations"

    def label(self) -> str:
        return f"combination of {', '.join(self.columns)}"


@dataclass
class Inequality:
    low: str
    high: str
    kind: ClassVar[str] = "inequality"

    def label(self) -> str:
        return f"{self.low} <= {self.high}"


@dataclass
class Range:
    column: str
    min: float | str | None = None
    max: float | str | None = None
    """Numbers, or for a datetime column anything `pd.Timestamp` reads (naive means UTC)."""
    kind: ClassVar[str] = "range"

    def label(self) -> str:
        return f"{self.column} in [{self.min}, {self.max}]"


@dataclass
class ValueSet:
    column: str
    values: list[Any]
    kind: ClassVar[str] = "value_set"

    def label(self) -> str:
        return f"{self.column} in a set of {len(self.values)}"


@dataclass
class Sum:
    columns: list[str]
    total: str
    dtype: str | None = None
    decimals: int | None = None
    """Learned by `fit`: the total's dtype, and the decimals of the columns and the total."""
    kind: ClassVar[str] = "sum"

    def label(self) -> str:
        return f"{' + '.join(self.columns)} = {self.total}"


Constraint = FixedCombinations | Inequality | Range | ValueSet | Sum
KINDS: dict[str, type[Constraint]] = {
    c.kind: c for c in (FixedCombinations, Inequality, Range, ValueSet, Sum)
}


def constraint_from_dict(data: Any) -> Constraint:
    """A constraint from its JSON form, e.g. {"kind": "range", "column": "price", "min": 0}."""
    if not isinstance(data, dict):
        raise ConstraintError(f"a constraint is an object with a kind, not {data!r}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ConstraintError(f"unknown constraint kind {kind!r} (one of {', '.join(KINDS)})")
    cls = KINDS[kind]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names - {"kind"})
    if unknown:
        raise ConstraintError(f"{kind}: unknown field {', '.join(unknown)}")
    try:
        constraint = cls(**{k: v for k, v in data.items() if k != "kind"})
    except TypeError as error:  # a required field is absent
        raise ConstraintError(f"{kind}: {error}") from error
    for column in columns_of(constraint):
        if not isinstance(column, str):
            raise ConstraintError(f"{kind}: a column is named by a string, not {column!r}")
    return constraint


def constraint_to_dict(constraint: Constraint) -> dict[str, Any]:
    return {"kind": constraint.kind, **asdict(constraint)}


def columns_of(constraint: Constraint) -> list[str]:
    match constraint:
        case FixedCombinations(columns=columns):
            return list(columns)
        case Inequality(low=low, high=high):
            return [low, high]
        case Range(column=column) | ValueSet(column=column):
            return [column]
        case Sum(columns=columns, total=total):
            return [*columns, total]
    raise TypeError(constraint)


def check_columns(constraints: list[Constraint], columns: list[str]) -> None:
    """A ConstraintError naming the first constraint that names a column the table lacks."""
    for constraint in constraints:
        unknown = [c for c in columns_of(constraint) if c not in columns]
        if unknown:
            raise ConstraintError(
                f"constraint {constraint.label()}: no column {', '.join(unknown)}"
            )


class Constraints:
    """A model's constraints with what `fit` learned for them, and the table's column order."""

    def __init__(self, items: list[Constraint], columns: list[str]) -> None:
        self.items = items
        self.columns = columns

    @classmethod
    def fit(cls, items: list[Constraint], frame: pd.DataFrame, rare_min_count: int) -> Constraints:
        columns = [str(c) for c in frame.columns]
        check_columns(items, columns)
        totals = [c.total for c in items if isinstance(c, Sum)]
        fitted: list[Constraint] = []
        for constraint in items:
            if any(c in totals for c in columns_of(constraint)) and not isinstance(constraint, Sum):
                raise ConstraintError(f"constraint {constraint.label()}: a sum's total is derived")
            kinds = {column_kind(frame[c]) for c in columns_of(constraint)}
            if isinstance(constraint, Range | Inequality) and not kinds <= {"numeric", "datetime"}:
                raise ConstraintError(
                    f"constraint {constraint.label()}: needs numbers or datetimes, not text"
                    " (dates read from CSV are text: use Parquet)"
                )
            if isinstance(constraint, FixedCombinations):
                keys = _keys(frame, constraint.columns)
                counts = pd.Series(keys).value_counts()
                allowed = [list(k) for k, n in counts.items() if n >= rare_min_count]
                constraint = replace(constraint, allowed=allowed)
            if isinstance(constraint, Sum):
                if kinds != {"numeric"}:
                    raise ConstraintError(f"constraint {constraint.label()}: needs numeric columns")
                numbers = frame[columns_of(constraint)].apply(pd.to_numeric).to_numpy(float)
                present = numbers[~np.isnan(numbers)]
                decimals = _decimals(present) if len(present) else 0
                dtype = str(frame[constraint.total].dtype)
                constraint = replace(constraint, dtype=dtype, decimals=decimals)
            fitted.append(constraint)
        return cls(fitted, columns)

    @property
    def derived(self) -> list[str]:
        """The columns the model does not learn: they are computed from others."""
        return [c.total for c in self.items if isinstance(c, Sum)]

    def violations(self, frame: pd.DataFrame) -> dict[str, int]:
        """Rows of `frame` that break each constraint (by its label)."""
        counts = {}
        for constraint in self.items:
            counts[constraint.label()] = int(_breaking(constraint, frame).sum())
        return counts

    def mask(self, encoder: TableEncoder) -> ConstraintMask:
        return ConstraintMask(self, encoder)

    def enforce(self, frame: pd.DataFrame, free: dict[str, np.ndarray]) -> pd.DataFrame:
        """Clamp the drawn (`free`) cells of bounded columns, derive totals, order the columns.

        Masked sampling already keeps values in bounds except inside a bin, so this moves few.
        """
        out = frame.copy()
        for constraint in self.items:
            if isinstance(constraint, Range):
                column = out[constraint.column]
                low = _number(column_kind(column), constraint.min, -math.inf)
                high = _number(column_kind(column), constraint.max, math.inf)
                out[constraint.column] = _clip(column, low, high, free[constraint.column])
        for constraint in self.items:
            if isinstance(constraint, Inequality):
                first, second = constraint.low, constraint.high
                out[second] = _clip(out[second], _numbers(out[first]), math.inf, free[second])
                first_moves = free[first] & ~free[second]  # the caller gave `high`
                out[first] = _clip(out[first], -math.inf, _numbers(out[second]), first_moves)
            elif isinstance(constraint, Sum):
                _complete_sum(out, constraint, free)
        known = [c for c in self.columns if c in out.columns]
        return out[known + [c for c in out.columns if c not in known]]

    def to_dict(self) -> dict[str, Any]:
        return {"items": [constraint_to_dict(c) for c in self.items], "columns": self.columns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Constraints:
        return cls([constraint_from_dict(c) for c in data["items"]], list(data["columns"]))


class ConstraintMask:
    """The per-row mask hook of `sample_codes` for one encoder."""

    def __init__(self, constraints: Constraints, encoder: TableEncoder) -> None:
        self.encoder = encoder
        self.allowed: dict[int, torch.Tensor] = {}  # sub-column -> allowed tokens (value sets)
        self.groups: list[tuple[list[int], torch.Tensor]] = []  # sub-columns, allowed codes
        self.ranges: dict[str, tuple[float, float]] = {}
        self.inequalities: list[Inequality] = []
        for constraint in constraints.items:
            if isinstance(constraint, ValueSet):
                (sub,) = self._single_subs([constraint.column], constraint)
                frame = pd.DataFrame({constraint.column: constraint.values})
                tokens = encoder.encode(frame)[:, sub]
                allowed = torch.zeros(encoder.cardinalities[sub], dtype=torch.bool)
                allowed[torch.from_numpy(tokens)] = True
                allowed[_RARE] = False
                missing = encoder.sub_columns[sub]["missing"]
                allowed[missing] = True  # a missing cell is in no set, and breaks none
                if not bool(allowed[_RARE + 1 :].any()):
                    raise ConstraintError(
                        f"constraint {constraint.label()}: no value of it was learned"
                    )
                self.allowed[sub] = allowed
            elif isinstance(constraint, FixedCombinations):
                subs = self._single_subs(constraint.columns, constraint)
                table = pd.DataFrame(constraint.allowed or [], columns=constraint.columns)
                codes = encoder.encode(table)[:, subs]
                codes = codes[(codes != _RARE).all(axis=1)]
                if len(codes) == 0:
                    raise ConstraintError(
                        f"constraint {constraint.label()}: no combination is common"
                    )
                self.groups.append((subs, torch.from_numpy(codes)))
            elif isinstance(constraint, Range):
                kind = encoder.stats[constraint.column]["kind"]
                self.ranges[constraint.column] = (
                    _number(kind, constraint.min, -math.inf),
                    _number(kind, constraint.max, math.inf),
                )
            elif isinstance(constraint, Inequality):
                self.inequalities.append(constraint)

    def _single_subs(self, columns: list[str], constraint: Constraint) -> list[int]:
        stats = [self.encoder.stats[c] for c in columns]
        if any(s["kind"] != "categorical" and s.get("encoding") != "discrete" for s in stats):
            raise ConstraintError(
                f"constraint {constraint.label()}: needs categorical or few-valued numeric columns"
            )
        return [self.encoder.sub_indices(c)[0] for c in columns]

    def __call__(self, k: int, codes: torch.Tensor, known: torch.Tensor) -> torch.Tensor | None:
        rows, card = len(codes), self.encoder.cardinalities[k]
        allowed = torch.ones(rows, card, dtype=torch.bool)
        if k in self.allowed:
            allowed &= self.allowed[k]
        for subs, combos in self.groups:
            if k in subs:
                # A combination still fits a row when it agrees with every known cell.
                agrees = (codes[:, None, subs] == combos[None]) | ~known[:, None, subs]
                fits = agrees.all(dim=-1).to(torch.float32)
                onehot = torch.nn.functional.one_hot(combos[:, subs.index(k)], card)
                allowed &= (fits @ onehot.to(torch.float32)) > 0
        column = self.encoder.columns[self.encoder.column_of_sub[k]]
        low, high = self._bounds(column, codes.numpy(), known.numpy())
        if np.isfinite(low).any() or np.isfinite(high).any():
            subs = self.encoder.sub_indices(column)
            prefix = codes[:, subs[: subs.index(k)]].numpy()
            lowest, highest = self._token_values(column, prefix, card)
            fits = np.isnan(lowest) | ((highest >= low[:, None]) & (lowest <= high[:, None]))
            allowed &= torch.from_numpy(fits)
        if bool(allowed.all()):
            return None
        return torch.zeros(rows, card).masked_fill(~allowed, float("-inf"))

    def _bounds(
        self, column: str, codes: np.ndarray, known: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's bounds on `column`: its range, and the known side of its inequalities."""
        low, high = self.ranges.get(column, (-math.inf, math.inf))
        lows, highs = np.full(len(codes), low), np.full(len(codes), high)
        for constraint in self.inequalities:
            other = {constraint.low: constraint.high, constraint.high: constraint.low}.get(column)
            if other is None:
                continue
            subs = self.encoder.sub_indices(other)
            lowest, highest = self._values(other, codes[:, subs])
            ready = known[:, subs].all(axis=1)
            if column == constraint.high:
                lows = np.where(ready & ~np.isnan(lowest), np.fmax(lows, lowest), lows)
            else:
                highs = np.where(ready & ~np.isnan(highest), np.fmin(highs, highest), highs)
        return lows, highs

    def _token_values(
        self, column: str, prefix: np.ndarray, card: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, card) lowest and highest values each next token can still lead to."""
        if prefix.shape[1] == 0:  # the column's first sub-column: one empty prefix
            unique, inverse = prefix[:1], np.zeros(len(prefix), dtype=np.int64)
        else:
            unique, inverse = np.unique(prefix, axis=0, return_inverse=True)
        candidates = np.concatenate(
            [np.repeat(unique, card, axis=0), np.tile(np.arange(card), len(unique))[:, None]],
            axis=1,
        )
        lowest, highest = self._values(column, candidates)
        shape = (len(unique), card)
        inverse = inverse.reshape(-1)
        return lowest.reshape(shape)[inverse], highest.reshape(shape)[inverse]

    def _values(self, column: str, partial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest values rows whose first sub-columns are `partial` decode to
        (NaN: missing). Decoding is monotone in every sub-column, so the remaining
        sub-columns at their lowest and highest tokens give both ends."""
        stats = self.encoder.stats[column]
        subs = self.encoder.sub_indices(column)
        if stats["kind"] == "numeric" and stats["encoding"] == "binned":
            bins = np.array([(np.nan, np.nan), *_bins(stats)])
            ends = np.clip(bins[partial[:, 0]], stats["min"], stats["max"])
            return ends[:, 0], ends[:, 1]
        ends = []
        for fill in (0, None):
            parts = {}
            for i, sub in enumerate(subs):
                spec = self.encoder.sub_columns[sub]
                rest = spec["cardinality"] - 1 if fill is None else fill
                parts[spec["name"]] = partial[:, i] if i < partial.shape[1] else rest
            parts = {n: np.broadcast_to(v, len(partial)).copy() for n, v in parts.items()}
            decoded = MODULES[stats["kind"]].decode(parts, stats, np.random.default_rng(0))
            ends.append(_numbers(decoded))
        return np.fmin(*ends), np.fmax(*ends)


_RARE = 1  # the rare token of categorical and discrete numeric columns


def _keys(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    """Row tuples comparable across reads: numbers as floats, other values as JSON keys."""
    parts = []
    for column in columns:
        values = frame[column]
        if column_kind(values) == "numeric":
            parts.append([None if pd.isna(v) else float(v) for v in values])
        else:
            parts.append([None if pd.isna(v) else _as_key(v) for v in values])
    return list(zip(*parts, strict=True))


def _numbers(values: pd.Series) -> np.ndarray:
    """Values as floats (datetimes as UTC nanoseconds), NaN where missing."""
    if column_kind(values) == "datetime":
        stamps = _naive(values)
        nanos = stamps.to_numpy(dtype="datetime64[ns]").view("int64").astype(float)
        return np.where(stamps.isna().to_numpy(), np.nan, nanos)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _number(kind: str, value: Any, default: float) -> float:
    """A range bound of a column of `kind` on the scale of `_numbers`."""
    if value is None:
        return default
    if kind == "datetime":
        return float(_numbers(pd.Series([pd.Timestamp(value)]))[0])
    return float(value)


def _clip(values: pd.Series, low: Any, high: Any, where: np.ndarray) -> pd.Series:
    """`values` clipped in the rows `where` to [low, high]: floats or arrays on the scale of
    `_numbers` (NaN: no bound), so naive and zoned datetimes compare."""
    numbers = _numbers(values)
    if pd.api.types.is_integer_dtype(values.dtype):  # the nearest integer inside the bounds
        low, high = np.ceil(low), np.floor(high)
    clipped = np.fmin(np.fmax(numbers, low), high)
    moved = where & ~np.isnan(numbers) & (clipped != numbers)
    if not moved.any():
        return values
    index = values.index[moved]
    if column_kind(values) == "datetime":
        stamps = pd.to_datetime(clipped[moved].astype(np.int64), unit="ns")
        if values.dt.tz is not None:
            stamps = stamps.tz_localize("UTC").tz_convert(values.dt.tz)
        replacement = pd.Series(stamps, index=index).astype(values.dtype)
    else:
        replacement = pd.Series(clipped[moved], index=index).astype(values.dtype)
    out = values.copy()
    out[moved] = replacement
    return out


def _complete_sum(out: pd.DataFrame, constraint: Sum, free: dict[str, np.ndarray]) -> None:
    """Derive the total in place; where the caller gave it, the last drawn addend instead."""
    decimals = constraint.decimals or 0
    numbers = out[constraint.columns].apply(pd.to_numeric).to_numpy(float)
    total = _restore_dtype(
        np.round(numbers.sum(axis=1), decimals), {"dtype": constraint.dtype, "decimals": decimals}
    )
    drawn_total = free.get(constraint.total, np.ones(len(out), dtype=bool))
    if drawn_total.all():
        out[constraint.total] = total
        return
    out[constraint.total] = total.where(drawn_total, out[constraint.total])
    given = pd.to_numeric(out[constraint.total]).to_numpy(float)
    drawn = np.column_stack([free[c] for c in constraint.columns])
    last = drawn.shape[1] - 1 - np.argmax(drawn[:, ::-1], axis=1)
    for i, column in enumerate(constraint.columns):
        rows = ~drawn_total & drawn.any(axis=1) & (last == i)
        if rows.any():
            rest = np.round(given - np.delete(numbers, i, axis=1).sum(axis=1), decimals)
            stats = {"dtype": str(out[column].dtype), "decimals": decimals}
            out[column] = _restore_dtype(rest, stats).where(rows, out[column])


def _breaking(constraint: Constraint, frame: pd.DataFrame) -> np.ndarray:
    """Which rows of `frame` break `constraint`."""
    match constraint:
        case FixedCombinations(columns=columns, allowed=allowed):
            permitted = {tuple(a) for a in allowed or []}
            return np.array([k not in permitted for k in _keys(frame, columns)], dtype=bool)
        case Inequality(low=low, high=high):
            with np.errstate(invalid="ignore"):
                return _numbers(frame[low]) > _numbers(frame[high])
        case Range(column=column, min=lowest, max=highest):
            numbers, kind = _numbers(frame[column]), column_kind(frame[column])
            with np.errstate(invalid="ignore"):
                below = numbers < _number(kind, lowest, -math.inf)
                return below | (numbers > _number(kind, highest, math.inf))
        case ValueSet(column=column, values=values):
            column_values = frame[column]
            if column_kind(column_values) == "numeric":
                present = _numbers(column_values)
                inside = np.isin(present, np.asarray(values, dtype=float))
                return ~np.isnan(present) & ~inside
            keys = {_as_key(v) for v in values}
            return np.array(
                [not pd.isna(v) and _as_key(v) not in keys for v in column_values], dtype=bool
            )
        case Sum(columns=columns, total=total, decimals=decimals):
            numbers = frame[[*columns, total]].apply(pd.to_numeric).to_numpy(float)
            tolerance = 0.5 * 10.0 ** -(decimals or 0)
            with np.errstate(invalid="ignore"):
                off = np.abs(numbers[:, :-1].sum(axis=1) - numbers[:, -1]) >= tolerance
            return off & ~np.isnan(numbers).any(axis=1)
    raise TypeError(constraint)
