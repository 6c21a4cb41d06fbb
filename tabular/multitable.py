"""Multi-table synthesis: a tree of tables linked by foreign keys, every key resolving.

A schema names each table, its primary key and at most one foreign key to a parent table.
A root table gets a flat TabularARGN. A child table gets a sequential one: the child rows of
one parent row are that parent's events and the parent row is their context, so the number of
children per parent and their values follow the source, conditioned on the parent row and on
the earlier siblings. Keys are never learned: sampling numbers the rows of each table afresh
and gives each child row its synthetic parent's new key, so every foreign key resolves.

The schema is a JSON (or YAML) file, read by the tabular job (table paths are relative to it)::

    {"tables": {
      "players": {"path": "players.csv", "primary_key": "id"},
      "seasons": {"path": "seasons.csv", "primary_key": "season_id",
                  "foreign_key": {"column": "player_id", "parent": "players"}}}}
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from synthgraph.tabular.argn import TabularARGN
from synthgraph.tabular.training import ProgressCallback

FORMAT = "synthgraph.tabular.multitable/1"
SCHEMA_FILE = "schema.json"
KEY = "__parent_key__"
"""The name a parent's primary key and its children's foreign key share inside a child model."""
# Table names become folder names of the saved model.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TABLE_FIELDS = {"path", "primary_key", "foreign_key"}
_QUANTILES = {"p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9}


@dataclass(frozen=True)
class ForeignKey:
    column: str
    parent: str


@dataclass(frozen=True)
class TableSpec:
    name: str
    primary_key: str | None = None
    foreign_key: ForeignKey | None = None
    path: Path | None = None

    @property
    def keys(self) -> list[str]:
        """The key columns: regenerated when sampling, never learned."""
        fk = self.foreign_key.column if self.foreign_key is not None else None
        return [c for c in (self.primary_key, fk) if c is not None]


@dataclass(frozen=True)
class Schema:
    tables: dict[str, TableSpec]
    """Every table, parents before their children."""
    source: str = "schema"
    """Where the schema came from, named in every error about it."""

    @classmethod
    def from_dict(cls, data: Any, source: str = "schema", base: Path | None = None) -> Schema:
        """A schema from its parsed form; anything wrong is a ValueError naming `source`."""
        if not isinstance(data, dict) or set(data) != {"tables"}:
            raise ValueError(f'{source}: a schema is an object with one field, "tables"')
        items = data["tables"]
        if not isinstance(items, dict) or not items:
            raise ValueError(f'{source}: "tables" must map table names to tables')
        tables = {
            str(name): _table_spec(str(name), item, source, base) for name, item in items.items()
        }
        depth = {name: _depth(tables, name, source) for name in tables}
        return cls({name: tables[name] for name in sorted(tables, key=depth.__getitem__)}, source)

    def to_dict(self) -> dict[str, Any]:
        """The structure without the paths: a saved model does not need the source files."""
        tables: dict[str, Any] = {}
        for name, spec in self.tables.items():
            item: dict[str, Any] = {"primary_key": spec.primary_key}
            if spec.foreign_key is not None:
                item["foreign_key"] = {
                    "column": spec.foreign_key.column,
                    "parent": spec.foreign_key.parent,
                }
            tables[name] = item
        return {"tables": tables}

    def parent(self, name: str) -> TableSpec | None:
        foreign_key = self.tables[name].foreign_key
        return None if foreign_key is None else self.tables[foreign_key.parent]


def _table_spec(name: str, item: Any, source: str, base: Path | None) -> TableSpec:
    where = f"{source}: table {name!r}"
    if not _TABLE_NAME.fullmatch(name):
        raise ValueError(f"{where}: use letters, digits, '_', '.' and '-' in table names")
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object")
    unknown = sorted(set(item) - _TABLE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {', '.join(unknown)}")
    primary_key = item.get("primary_key")
    if primary_key is not None and not isinstance(primary_key, str):
        raise ValueError(f"{where}: primary_key must be a column name")
    foreign_key = None
    if item.get("foreign_key") is not None:
        fk = item["foreign_key"]
        if (
            not isinstance(fk, dict)
            or set(fk) != {"column", "parent"}
            or not all(isinstance(v, str) for v in fk.values())
        ):
            raise ValueError(f'{where}: foreign_key must be {{"column": ..., "parent": ...}}')
        foreign_key = ForeignKey(column=fk["column"], parent=fk["parent"])
        if foreign_key.column == primary_key:
            raise ValueError(f"{where}: the foreign key cannot be the primary key")
    path = item.get("path")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"{where}: path must be a string")
    return TableSpec(
        name=name,
        primary_key=primary_key,
        foreign_key=foreign_key,
        path=None if path is None else (base / path if base is not None else Path(path)),
    )


def _depth(tables: dict[str, TableSpec], name: str, source: str) -> int:
    """How many ancestors the table has; an unknown or keyless parent or a cycle is an error."""
    chain = [name]
    while (foreign_key := tables[chain[-1]].foreign_key) is not None:
        parent = foreign_key.parent
        where = f"{source}: table {chain[-1]!r}"
        if parent not in tables:
            raise ValueError(f"{where}: its foreign key's parent {parent!r} is not in the schema")
        if tables[parent].primary_key is None:
            raise ValueError(f"{where}: its parent {parent!r} has no primary_key to refer to")
        if parent in chain:
            cycle = " -> ".join([*chain[chain.index(parent) :], parent])
            raise ValueError(f"{source}: the foreign keys form a cycle: {cycle}")
        chain.append(parent)
    return len(chain) - 1


# ------------------------------------------------------------------ integrity


@dataclass
class TableIntegrity:
    rows: int
    duplicate_keys: int
    """Rows whose primary key is missing or repeats an earlier row's."""
    orphans: int
    """Rows whose foreign key is missing or matches no parent row."""
    child_counts: dict[str, float] | None
    """Rows of this table per parent row (None: a root table)."""
    source_child_counts: dict[str, float] | None
    """The same in the training tables, when known."""


def check_integrity(
    schema: Schema,
    tables: Mapping[str, pd.DataFrame],
    source_counts: Mapping[str, dict[str, float]] | None = None,
) -> dict[str, TableIntegrity]:
    """Key problems and child counts per table; `source_counts` is a model's `source_counts`."""
    counts = child_counts(schema, tables)
    report = {}
    for name, spec in schema.tables.items():
        frame = tables[name]
        report[name] = TableIntegrity(
            rows=len(frame),
            duplicate_keys=int(_bad_primary_keys(frame, spec).sum()),
            orphans=int(_orphans(schema, tables, name).sum()),
            child_counts=counts.get(name),
            source_child_counts=None if source_counts is None else source_counts.get(name),
        )
    return report


def child_counts(schema: Schema, tables: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """For each child table, its rows per parent row: mean, quantiles and the share with none."""
    stats = {}
    for name, spec in schema.tables.items():
        parent = schema.parent(name)
        if parent is None or spec.foreign_key is None or parent.primary_key is None:
            continue
        per_parent = (
            tables[name][spec.foreign_key.column]
            .value_counts()
            .reindex(tables[parent.name][parent.primary_key], fill_value=0)
            .to_numpy(dtype=float)
        )
        if len(per_parent) == 0:
            per_parent = np.zeros(1)
        stats[name] = {
            "mean": float(per_parent.mean()),
            "zero_share": float((per_parent == 0).mean()),
            **{label: float(np.quantile(per_parent, q)) for label, q in _QUANTILES.items()},
            "max": float(per_parent.max()),
        }
    return stats


def _bad_primary_keys(frame: pd.DataFrame, spec: TableSpec) -> pd.Series:
    if spec.primary_key is None:
        return pd.Series(False, index=frame.index)
    key = frame[spec.primary_key]
    return key.isna() | key.duplicated()


def _orphans(schema: Schema, tables: Mapping[str, pd.DataFrame], name: str) -> pd.Series:
    spec, parent = schema.tables[name], schema.parent(name)
    frame = tables[name]
    if parent is None or spec.foreign_key is None or parent.primary_key is None:
        return pd.Series(False, index=frame.index)
    parent_keys = tables[parent.name][parent.primary_key].dropna()
    return ~frame[spec.foreign_key.column].isin(parent_keys)


def _checked(
    schema: Schema, tables: Mapping[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The training tables without orphan rows (a warning says how many), and those counts.

    Missing tables or key columns, repeated primary keys and tables with nothing but keys are
    ValueErrors naming the schema and the table.
    """
    frames: dict[str, pd.DataFrame] = {}
    orphans = {}
    for name, spec in schema.tables.items():  # parents first: a dropped row orphans its children
        where = f"{schema.source}: table {name!r}"
        if name not in tables:
            raise ValueError(f"{where}: no such table given")
        frame = tables[name].reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        missing = [c for c in spec.keys if c not in frame.columns]
        if missing:
            raise ValueError(f"{where}: no column {', '.join(map(repr, missing))}")
        if frame.empty:
            raise ValueError(f"{where}: no rows")
        if len(frame.columns) == len(spec.keys):
            raise ValueError(f"{where}: no columns besides its keys, so nothing to learn")
        if KEY in frame.columns:
            raise ValueError(f"{where}: the column name {KEY!r} is reserved")
        bad = int(_bad_primary_keys(frame, spec).sum())
        if bad:
            raise ValueError(
                f"{where}: {bad} rows have a missing or repeated primary key {spec.primary_key!r}"
            )
        frames[name] = frame
        orphan = _orphans(schema, frames, name)
        orphans[name] = int(orphan.sum())
        if orphans[name]:
            warnings.warn(
                f"{where}: dropped {orphans[name]} of {len(frame)} rows whose foreign key "
                "matches no parent row",
                stacklevel=3,
            )
            frames[name] = frame[~orphan.to_numpy()].reset_index(drop=True)
    return frames, orphans


# ---------------------------------------------------------------------- model


def _context(parent: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """A parent table as its children's context: its own foreign key out, its key as KEY."""
    columns = [parent.foreign_key.column] if parent.foreign_key is not None else []
    return frame.drop(columns=columns).rename(columns={parent.primary_key: KEY})


def _new_keys(n_rows: int, dtype: str) -> pd.Series:
    """Keys 1..n, numbers if the source's keys were, else their text."""
    keys = pd.Series(np.arange(1, n_rows + 1))
    return keys.astype(dtype) if pd.api.types.is_numeric_dtype(dtype) else keys.astype(str)


@dataclass
class MultiTableModel:
    schema: Schema
    models: dict[str, TabularARGN]
    columns: dict[str, list[str]]
    """Each table's columns in the source's order."""
    key_dtypes: dict[str, str]
    """The dtype of each primary key in the source."""
    rows: dict[str, int]
    """Training rows per table."""
    source_counts: dict[str, dict[str, float]]
    """`child_counts` of the training tables."""
    orphans: dict[str, int]
    """Source rows dropped because their foreign key matched no parent row."""

    def sample(
        self,
        parent_rows: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> dict[str, pd.DataFrame]:
        """Every table: `parent_rows` rows per root table (default: as many as the source),
        then each child table's rows for the synthetic parent rows, with fresh keys."""
        rng = np.random.default_rng(seed)
        out: dict[str, pd.DataFrame] = {}
        for name, spec in self.schema.tables.items():
            model, parent = self.models[name], self.schema.parent(name)
            table_seed = int(rng.integers(2**31))
            if parent is None or spec.foreign_key is None:
                n_rows = self.rows[name] if parent_rows is None else parent_rows
                frame = model.sample(n_rows, temperature=temperature, top_p=top_p, seed=table_seed)
            else:
                _, frame = model.sample_with_context(
                    context=_context(parent, out[parent.name]),
                    temperature=temperature,
                    top_p=top_p,
                    seed=table_seed,
                )
                frame = frame.rename(columns={KEY: spec.foreign_key.column})
            if spec.primary_key is not None:
                frame[spec.primary_key] = _new_keys(len(frame), self.key_dtypes[name])
            out[name] = frame[self.columns[name]]
        return out

    def save(self, directory: str | Path) -> Path:
        """Each table's model in a folder of its name, beside `schema.json`."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.models.items():
            model.save(path / name)
        meta = {
            "format": FORMAT,
            "schema": self.schema.to_dict(),
            "columns": self.columns,
            "key_dtypes": self.key_dtypes,
            "rows": self.rows,
            "source_counts": self.source_counts,
            "orphans": self.orphans,
        }
        (path / SCHEMA_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        path = Path(directory)
        meta_path = path / SCHEMA_FILE
        meta = json.loads(meta_path.read_text("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: does not hold a {FORMAT} model")
        schema = Schema.from_dict(meta["schema"], source=str(meta_path))
        return cls(
            schema=schema,
            models={name: TabularARGN.load(path / name) for name in schema.tables},
            columns=meta["columns"],
            key_dtypes=meta["key_dtypes"],
            rows=meta["rows"],
            source_counts=meta["source_counts"],
            orphans=meta["orphans"],
        )


def fit_schema(
    schema: Schema,
    tables: Mapping[str, pd.DataFrame],
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> MultiTableModel:
    """One TabularARGN per table of `schema`, parents first; `options` go to each model.

    `tables` holds each table by name. Root tables are fitted flat, without their primary
    key; each child table as a sequential model keyed by its foreign key, with its parent table
    (without the parent's keys) as context, and without its own primary key.
    """
    frames, orphans = _checked(schema, tables)
    models = {}
    for name, spec in schema.tables.items():
        model, parent = TabularARGN(**options), schema.parent(name)
        frame = frames[name].drop(columns=[spec.primary_key] if spec.primary_key else [])
        staged = None if progress is None else _tagged(progress, name)
        if parent is None or spec.foreign_key is None:
            model.fit(frame, progress=staged)
        else:
            model.fit(
                frame.rename(columns={spec.foreign_key.column: KEY}),
                context=_context(parent, frames[parent.name]),
                context_key=KEY,
                progress=staged,
            )
        models[name] = model
    return MultiTableModel(
        schema=schema,
        models=models,
        columns={name: list(frame.columns) for name, frame in frames.items()},
        key_dtypes={
            name: str(frames[name][spec.primary_key].dtype)
            for name, spec in schema.tables.items()
            if spec.primary_key is not None
        },
        rows={name: len(frame) for name, frame in frames.items()},
        source_counts=child_counts(schema, frames),
        orphans=orphans,
    )


def _tagged(progress: ProgressCallback, table: str) -> ProgressCallback:
    return lambda event: progress({**event, "table": table})
