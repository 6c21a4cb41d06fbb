"""The tabular jobs: fit a TabularARGN, sample from it, impute with it, score a synthetic table.

Each job reads its tables (CSV, Parquet or JSONL by extension) with the one reader, calls
`synthgraph.tabular`, writes its outputs and returns a summary dataclass. Paths are taken as
given: the command trusts its user, the tool and the graph confine theirs to the workspace
first. Bad input (an empty table, an unknown column, a folder without a model) is an
`InputError`, which the root command prints as one line and the tool returns to the model.
Unlike the LLM features, a tabular job has no run folder: one call is one model or one table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from synthgraph.tabular import TabularARGN, quality_report
from synthgraph.tabular.argn import META_FILE, TrainExecutor
from synthgraph.tabular.constraints import (
    Constraint,
    ConstraintError,
    check_columns,
    constraint_from_dict,
)
from synthgraph.tabular.dp import DEFAULT_DELTA, DEFAULT_MAX_GRAD_NORM, DPConfig
from synthgraph.tabular.encoding.categorical import RareMode
from synthgraph.tabular.multitable import (
    SCHEMA_FILE,
    MultiTableModel,
    Schema,
    TableIntegrity,
    check_integrity,
    fit_schema,
)
from synthgraph.tabular.training import DEFAULT_EPOCHS, ProgressCallback
from synthgraph.tools.io import InputError, read_table, reading, write_json, write_table
from synthgraph.tools.tabular_plots import write_report_html
from synthgraph.tools.workspace import confine


@dataclass
class FitSummary:
    model_dir: Path
    rows: int
    columns: list[str]
    sequential: bool
    epochs: int
    """Epochs of the main part: the flat table, or the events of a sequential model."""
    stop_reason: str
    seconds: float
    parts: dict[str, dict[str, Any]]
    """Training summary per part ("flat", or "context" and "events"), without the loss history."""
    violations: dict[str, int] = field(default_factory=dict)
    """Training rows breaking each constraint (allowed there, only counted)."""
    privacy: dict[str, Any] | None = None
    """A private fit's spent ε, δ and noise (see `synthgraph.tabular.dp`); None: not private."""


@dataclass
class SampleSummary:
    output_path: Path
    rows: int
    columns: list[str]
    violations: dict[str, int] = field(default_factory=dict)
    """Rows breaking each of the model's constraints: 0 unless given cells already break one."""


@dataclass
class ImputeSummary:
    output_path: Path
    rows: int
    filled_cells: int


@dataclass
class ReportSummary:
    accuracy: dict[str, float]
    """Overall, univariate and bivariate accuracy."""
    dcr_share: float | None
    """Share of synthetic rows closer to training than to holdout rows (None: no holdout)."""
    report_path: Path | None
    """The full report (per column and pair), when one was asked for."""
    html_path: Path | None
    """The report as pictures (report.html beside its PNGs), when one was asked for."""
    privacy: dict[str, Any] | None = None
    """The model's differential privacy record, when a private model was given."""


@dataclass
class SchemaFitSummary:
    model_dir: Path
    tables: dict[str, dict[str, Any]]
    """Per table: rows, epochs, stop reason, seconds, and its parent (None: a root table)."""
    orphans: dict[str, int]
    """Training rows dropped per table because their foreign key matched no parent row."""


@dataclass
class SchemaSampleSummary:
    output_dir: Path
    tables: dict[str, Path]
    integrity: dict[str, TableIntegrity]
    """Per table: rows, repeated keys and orphans (0 by construction), and child counts per
    parent row, synthetic beside the source's."""


def as_dict(summary: Any, path: Callable[[Path], str] = str) -> dict[str, Any]:
    """A summary as plain data; `path` writes its paths (tool and graph: workspace-relative)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return path(value) if isinstance(value, Path) else value

    return plain(asdict(summary))


def fit_job(
    data: Path,
    model_dir: Path,
    *,
    context: Path | None = None,
    key: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    max_minutes: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    constraints: Path | None = None,
    rare: RareMode = "sample",
    dp_epsilon: float | None = None,
    dp_delta: float = DEFAULT_DELTA,
    dp_max_grad_norm: float = DEFAULT_MAX_GRAD_NORM,
    executor: TrainExecutor = "local",
    workers: int = 1,
) -> FitSummary:
    """Train a TabularARGN on `data` (an event table keyed by `key`, with an optional `context`
    table) and save it to `model_dir`; a flat model honours the `constraints` file's rules.
    With `dp_epsilon` a flat fit is (ε, δ)-differentially private (`synthgraph.tabular.dp`).
    `executor="ray"` trains on `workers` Ray Train workers (`synthgraph.tabular.ray_train`)."""
    frame = _read(data, need_rows=True)
    context_frame = _read(context, need_rows=True) if context is not None else None
    rules = read_constraints(constraints, frame) if constraints is not None else None
    if executor == "ray":
        try:
            from synthgraph.tools.ray_support import init_ray
        except ImportError as error:
            raise InputError("--executor ray needs Ray: pip install 'synthgraph[ray]'") from error
        init_ray()
    model = TabularARGN(
        max_epochs=epochs, max_minutes=max_minutes, seed=seed, num_threads=threads, rare=rare
    )
    with _refused_input():
        dp = None if dp_epsilon is None else DPConfig(dp_epsilon, dp_delta, dp_max_grad_norm)
        try:
            model.fit(
                frame,
                context=context_frame,
                context_key=key,
                progress=progress,
                constraints=rules,
                dp=dp,
                executor=executor,
                workers=workers,
            )
        except ConstraintError as error:  # a rule the table cannot honour: the file's fault
            raise InputError(f"{constraints}: {error}") from error
    model.save(model_dir)
    parts = {
        part: {name: value for name, value in summary.items() if name != "history"}
        for part, summary in model.summary.items()
    }
    main = parts.get("flat") or parts["events"]
    return FitSummary(
        model_dir=model_dir,
        rows=len(frame),
        columns=[str(c) for c in frame.columns],
        sequential=model.is_sequential,
        epochs=main["epochs"],
        stop_reason=main["stop_reason"],
        seconds=main["seconds"],
        parts=parts,
        violations=model.source_violations,
        privacy=model.privacy,
    )


def fit_schema_job(
    schema_path: Path,
    model_dir: Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    max_minutes: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    within: Path | None = None,
) -> SchemaFitSummary:
    """Fit one model per table of a multi-table schema (`synthgraph.tabular.multitable`) and
    save them to `model_dir`; `within` confines the schema's table paths (tool and graph)."""
    schema, tables = read_schema(schema_path, within=within)
    with _refused_input():
        model = fit_schema(
            schema,
            tables,
            progress=progress,
            max_epochs=epochs,
            max_minutes=max_minutes,
            seed=seed,
            num_threads=threads,
        )
    model.save(model_dir)
    fitted = {}
    for name, table_model in model.models.items():
        part = table_model.summary.get("flat") or table_model.summary["events"]
        parent = schema.parent(name)
        fitted[name] = {
            "rows": model.rows[name],
            "parent": None if parent is None else parent.name,
            **{k: part[k] for k in ("epochs", "stop_reason", "seconds")},
        }
    return SchemaFitSummary(model_dir=model_dir, tables=fitted, orphans=model.orphans)


def read_schema(path: Path, within: Path | None = None) -> tuple[Schema, dict[str, pd.DataFrame]]:
    """A schema file (JSON, or YAML by extension) and its tables, read from paths relative to
    it (each confined to `within` when given); anything wrong is an `InputError`."""
    with reading(path):
        text = path.read_bytes().decode("utf-8")
        try:
            data = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else None
        except yaml.YAMLError as error:
            raise InputError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
        if data is None:
            data = json.loads(text)
    with _refused_input():
        schema = Schema.from_dict(data, source=str(path), base=path.parent)
    tables = {}
    for name, spec in schema.tables.items():
        if spec.path is None:
            raise InputError(f"{path}: table {name!r} has no path")
        table_path = spec.path if within is None else confine(spec.path, root=within)
        tables[name] = _read(table_path, need_rows=True)
    return schema, tables


def is_schema_model(model_dir: Path) -> bool:
    """Whether `model_dir` holds a multi-table model (saved by `fit_schema_job`)."""
    return (model_dir / SCHEMA_FILE).is_file()


def sample_schema_job(
    model_dir: Path,
    out_dir: Path,
    *,
    rows: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> SchemaSampleSummary:
    """Sample every table of a multi-table model into `out_dir/<table>.csv`: `rows` rows per
    root table (default: as many as its source), then the children of those rows."""
    try:
        model = MultiTableModel.load(model_dir)
    except (ValueError, KeyError, OSError) as error:
        raise InputError(f"{model_dir}: not a readable multi-table model ({error})") from error
    with _refused_input():
        synthetic = model.sample(rows, seed=seed, temperature=temperature, top_p=top_p)
    paths = {}
    for name, frame in synthetic.items():
        paths[name] = out_dir / f"{name}.csv"
        write_table(frame, paths[name])
    return SchemaSampleSummary(
        output_dir=out_dir,
        tables=paths,
        integrity=check_integrity(model.schema, synthetic, model.source_counts),
    )


def read_constraints(path: Path, frame: pd.DataFrame) -> list[Constraint]:
    """The constraints of a JSON file (a list of objects, see `synthgraph.tabular.constraints`)
    on the columns of `frame`; anything wrong with it is an `InputError` naming the file."""
    with reading(path):
        items = json.loads(path.read_bytes().decode("utf-8"))
    if not isinstance(items, list):
        raise InputError(f"{path}: not a JSON list of constraints")
    try:
        rules = [constraint_from_dict(item) for item in items]
        check_columns(rules, [str(c) for c in frame.columns])
    except ConstraintError as error:
        raise InputError(f"{path}: {error}") from error
    return rules


def sample_job(
    model_dir: Path,
    out: Path,
    *,
    rows: int | None = None,
    given: Path | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_rows: int | None = None,
) -> SampleSummary:
    """Write a synthetic table to `out`: `rows` new rows (entities, for a sequential model), or
    one per row of the `given` table, whose cells are kept (a sequential model's context rows).

    `max_rows` bounds the given table (agent tools bound their work; the command does not).
    """
    model = _load(model_dir)
    frame = _read(given, max_rows=max_rows) if given is not None else None
    with _refused_input():
        if frame is None:
            synthetic = model.sample(rows, temperature=temperature, top_p=top_p, seed=seed)
        elif model.is_sequential:
            synthetic = model.sample(context=frame, temperature=temperature, top_p=top_p, seed=seed)
        else:
            synthetic = model.sample(
                seed_data=frame, temperature=temperature, top_p=top_p, seed=seed
            )
    write_table(synthetic, out)
    return SampleSummary(
        output_path=out,
        rows=len(synthetic),
        columns=list(synthetic.columns),
        violations=model.violations(synthetic),
    )


def impute_job(
    model_dir: Path,
    data: Path,
    out: Path,
    *,
    seed: int | None = None,
    max_rows: int | None = None,
) -> ImputeSummary:
    """Fill the missing cells of `data` with a flat model's draws; known cells stay."""
    model = _load(model_dir)
    frame = _read(data, max_rows=max_rows)
    with _refused_input():
        imputed = model.impute(frame, seed=seed)
    write_table(imputed, out)
    filled = int(frame.isna().sum().sum() - imputed.isna().sum().sum())
    return ImputeSummary(output_path=out, rows=len(imputed), filled_cells=filled)


def report_job(
    synthetic: Path,
    training: Path,
    *,
    holdout: Path | None = None,
    report_path: Path | None = None,
    html_dir: Path | None = None,
    key: str | None = None,
    model_dir: Path | None = None,
) -> ReportSummary:
    """Accuracy and (with a holdout) DCR share of `synthetic`; the full report to `report_path`,
    and its plots with `report.html` to `html_dir` (an event table's `key` adds sequence plots).
    The model in `model_dir`, when given, adds its differential privacy record ("privacy")."""
    privacy = _load(model_dir).privacy if model_dir is not None else None
    training_table = _read(training, need_rows=True)
    if key is not None and key not in training_table.columns:
        raise InputError(f"{training}: no column {key}")
    tables = {synthetic: _read(synthetic, need_rows=True)}
    if holdout is not None:
        tables[holdout] = _read(holdout, need_rows=True)
    for path, table in tables.items():  # compared column by column with the training table
        missing = [str(c) for c in training_table.columns if c not in table.columns]
        if missing:
            raise InputError(f"{path}: no column {', '.join(missing)} of {training}")
    report = quality_report(
        tables[synthetic],
        training_table,
        tables[holdout] if holdout is not None else None,
        distances=html_dir is not None,
    )
    distances = report.get("dcr", {}).pop("distances", None)
    if model_dir is not None:
        report["privacy"] = privacy
    if report_path is not None:
        write_json(report, report_path)
    html_path = None
    if html_dir is not None:
        html_path = write_report_html(
            report,
            tables[synthetic],
            training_table,
            html_dir,
            title=f"Quality of {synthetic.name} against {training.name}",
            key=key,
            distances=distances,
        )
    return ReportSummary(
        accuracy=report["accuracy"],
        dcr_share=report.get("dcr", {}).get("share"),
        report_path=report_path,
        html_path=html_path,
        privacy=privacy,
    )


def _read(path: Path, *, need_rows: bool = False, max_rows: int | None = None) -> pd.DataFrame:
    """A flat table; an empty one (with `need_rows`) or one over `max_rows` is an `InputError`."""
    frame = read_table(path, flat=True)
    if need_rows and frame.empty:
        raise InputError(f"{path}: no rows")
    if max_rows is not None and len(frame) > max_rows:
        raise InputError(f"{path}: {len(frame)} rows; the limit is {max_rows}")
    return frame


def _load(model_dir: Path) -> TabularARGN:
    """A saved model; a folder that holds none is an `InputError`."""
    if not (model_dir / META_FILE).is_file():
        raise InputError(f"{model_dir}: no saved model here (no {META_FILE}; see `tabular fit`)")
    try:
        return TabularARGN.load(model_dir)
    except (ValueError, KeyError, OSError) as error:
        raise InputError(f"{model_dir}: not a readable model ({error})") from error


@contextmanager
def _refused_input() -> Iterator[None]:
    """The model refuses input it cannot use (an unknown column, a missing key) with a
    ValueError: for the command and the tool, that is bad input, said in one line."""
    try:
        yield
    except InputError:
        raise
    except ValueError as error:
        raise InputError(str(error)) from error
