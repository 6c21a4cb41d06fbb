"""Pictures of a tabular quality report: PNG plots and one HTML page that shows them.

`write_report_html` draws, from the training and synthetic tables and the report of
`synthgraph.tabular.quality_report`:

- one marginal per column (at most `MAX_COLUMNS`): the share of rows per bin, training beside
  synthetic, binned as the accuracy bins them (10 training quantiles for numbers and datetimes,
  the 10 most frequent values plus "other" for categories, missing as its own bin);
- two association heatmaps, training and synthetic: Cramér's V between every two plotted
  columns on the same bins, so numbers, datetimes and categories are measured alike;
- given the DCR distances, their histogram: to the closest training row and to the closest
  holdout row;
- given an entity key (event tables), sequence lengths, and the distinct values per entity of
  each column (a cheap view of coherence: how much a column changes within one sequence).

A report that carries a model's privacy record (`tabular report --model`) shows its ε and δ
first among the figures.

Column names are user data: a file is named by the column's position and its name reduced to
`[A-Za-z0-9_-]`, and every text in the page is HTML-escaped. Files are written whole and
replace, never follow, a link planted at their name.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from synthgraph.tabular.dp import privacy_rows
from synthgraph.tabular.quality import column_binner, is_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_COLUMNS = 30
MAX_ROWS = 10_000
"""Rows of each table the marginals and heatmaps are drawn from (a uniform sample)."""
REPORT_FILE = "report.html"
LABEL_CHARS = 24


@dataclass
class Section:
    title: str
    caption: str
    images: list[tuple[str, str]] = field(default_factory=list)
    """(file name in the folder, alternative text)."""


def write_report_html(
    report: dict[str, Any],
    synthetic: pd.DataFrame,
    training: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
    key: str | None = None,
    distances: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write the plots and `report.html` into `out_dir`; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = [c for c in training.columns if c in synthetic.columns and c != key]
    columns = shared[:MAX_COLUMNS]
    trn, syn = _sample(training[columns]), _sample(synthetic[columns])
    codes = {}
    for column in columns:
        binner = column_binner(trn[column])
        codes[column] = binner(trn[column]), binner(syn[column])
    shown = f"all {len(shared)} columns"
    if len(columns) < len(shared):
        shown = f"the first {MAX_COLUMNS} of {len(shared)} columns"
    if key is not None:
        shown += f" besides the key {key}"
    if max(len(training), len(synthetic)) > MAX_ROWS:
        shown += f", from a sample of {MAX_ROWS:,} rows of each table"
    with _plain_text():
        marginals = Section(
            "Marginals",
            f"Share of rows per bin, training beside synthetic, for {shown}: 10 "
            "training quantile bins for numbers and datetimes, the 10 most frequent values "
            "plus other for categories, missing as its own bin (the bins of the accuracy).",
        )
        for i, column in enumerate(columns):
            name = f"marginal_{i:03d}_{_slug(column)}.png"
            accuracy = report["univariate"].get(column)
            _save(_marginal(str(column), trn[column], *codes[column], accuracy), out_dir / name)
            marginals.images.append((name, f"marginal of {column}"))
        association = Section(
            "Associations",
            f"Cramér's V between every two of {shown}, on the same bins: 0 independent, 1 one "
            "column determines the other. Training on the left, synthetic on the right.",
        )
        if len(columns) > 1:
            _save(_heatmaps([str(c) for c in columns], codes), out_dir / "associations.png")
            association.images.append(("associations.png", "association heatmaps"))
        sections = [marginals, association]
        if distances is not None:
            _save(_dcr_histogram(*distances, report["dcr"]["share"]), out_dir / "dcr.png")
            sections.append(
                Section(
                    "Distance to closest record",
                    "Each synthetic row's distance to its closest training row and to its "
                    "closest holdout row. A generator that generalises draws the two alike.",
                    [("dcr.png", "DCR histogram")],
                )
            )
        if key is not None:
            sections.append(_sequences(training, synthetic, key, columns, out_dir))
    page = out_dir / REPORT_FILE
    _write(_page(title, report, sections).encode("utf-8"), page)
    return page


def _sample(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sample(MAX_ROWS, random_state=0) if len(frame) > MAX_ROWS else frame


def _slug(column: object) -> str:
    """A file-name part: never a separator, a dot or anything else a path could use."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(column))[:40].strip("_") or "column"


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _value(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return f"{value:.4g}"


def _bin_label(training: pd.Series, codes: np.ndarray, code: int) -> str:
    """What a bin holds: a value range (numbers, datetimes), a category, other, or missing."""
    values = training[codes == code]
    if code == 0:
        return "missing"
    if is_number(training) or pd.api.types.is_datetime64_any_dtype(training.dtype):
        return f"{_value(values.min())}–{_value(values.max())}" if len(values) else f"bin {code}"
    return _short(values.iloc[0]) if code > 1 else "other"


def _marginal(
    name: str, training: pd.Series, trn: np.ndarray, syn: np.ndarray, accuracy: float | None
) -> Figure:
    bins = np.union1d(trn, syn)
    labels = [_bin_label(training, trn, int(code)) for code in bins]
    figure, axis = _figure(max(5.0, 0.45 * len(bins) + 2), 3.6)
    x = np.arange(len(bins))
    axis.bar(x - 0.2, [np.mean(trn == b) for b in bins], 0.4, label="training")
    axis.bar(x + 0.2, [np.mean(syn == b) for b in bins], 0.4, label="synthetic")
    axis.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
    axis.set_ylabel("share of rows")
    score = "" if accuracy is None else f" (accuracy {accuracy:.3f})"
    axis.set_title(_short(name) + score, fontsize=10)
    axis.legend(fontsize=8)
    return figure


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Association of two code arrays, 0 (independent) to 1; 0 when either is constant."""
    _, rows = np.unique(a, return_inverse=True)
    _, cols = np.unique(b, return_inverse=True)
    counts = np.zeros((rows.max() + 1, cols.max() + 1))
    np.add.at(counts, (rows, cols), 1)
    if min(counts.shape) < 2:
        return 0.0
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (counts.sum() * (min(counts.shape) - 1))))


def _heatmaps(names: list[str], codes: dict[Any, tuple[np.ndarray, np.ndarray]]) -> Figure:
    size = min(3.0 + 0.35 * len(names), 12.0)
    figure, axes = _figure(2 * size + 1, size, panels=2)
    pairs = list(codes.values())
    for side, (axis, label) in enumerate(zip(axes, ("training", "synthetic"), strict=True)):
        matrix = np.eye(len(names))
        for i, j in combinations(range(len(names)), 2):
            matrix[i, j] = matrix[j, i] = _cramers_v(pairs[i][side], pairs[j][side])
        image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ticks = np.arange(len(names))
        axis.set_xticks(ticks, [_short(n) for n in names], rotation=90, fontsize=7)
        axis.set_yticks(ticks, [_short(n) for n in names], fontsize=7)
        axis.set_title(f"{label}: Cramér's V", fontsize=10)
        if len(names) <= 10:  # room for the numbers
            for i, j in np.ndindex(matrix.shape):
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    return figure


def _dcr_histogram(to_training: np.ndarray, to_holdout: np.ndarray, share: float) -> Figure:
    figure, axis = _figure(6.5, 3.8)
    edges = np.histogram_bin_edges(np.concatenate([to_training, to_holdout]), bins=30)
    axis.hist(to_training, edges, alpha=0.55, label="to the closest training row")
    axis.hist(to_holdout, edges, alpha=0.55, label="to the closest holdout row")
    axis.set_xlabel("distance")
    axis.set_ylabel("synthetic rows")
    axis.set_title(f"DCR share {share:.3f} (0.5: as close to holdout as to training)", fontsize=10)
    axis.legend(fontsize=8)
    return figure


def _sequences(
    training: pd.DataFrame, synthetic: pd.DataFrame, key: str, columns: list[Any], out_dir: Path
) -> Section:
    """Sequence lengths and distinct values per entity, training against synthetic."""
    trn, syn = training.groupby(key, dropna=False), synthetic.groupby(key, dropna=False)
    lengths = trn.size(), syn.size()
    figure, axis = _figure(6.5, 3.8)
    longest = int(max(lengths[0].max(), lengths[1].max()))
    edges = np.arange(0.5, longest + 1.5) if longest <= 60 else 30
    for values, label in zip(lengths, ("training", "synthetic"), strict=True):
        axis.hist(
            values, edges, density=True, alpha=0.55, label=f"{label} ({len(values)} entities)"
        )
    axis.set_xlabel("rows per entity")
    axis.set_ylabel("share of entities")
    axis.legend(fontsize=8)
    _save(figure, out_dir / "sequence_lengths.png")
    section = Section(
        "Sequences",
        f"Rows per entity (key {key}), and for each column the mean number of distinct values "
        "within one entity: 1 means the column never changes inside a sequence.",
        [("sequence_lengths.png", "sequence lengths")],
    )
    if columns:
        distinct = [g[columns].nunique(dropna=False).mean() for g in (trn, syn)]
        figure, axis = _figure(6.5, max(3.0, 0.3 * len(columns) + 1.2))
        y = np.arange(len(columns))
        axis.barh(y - 0.2, distinct[0].to_numpy(), 0.4, label="training")
        axis.barh(y + 0.2, distinct[1].to_numpy(), 0.4, label="synthetic")
        axis.set_yticks(y, [_short(c) for c in columns], fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("distinct values per entity (mean)")
        axis.legend(fontsize=8)
        _save(figure, out_dir / "sequence_coherence.png")
        section.images.append(("sequence_coherence.png", "distinct values per entity"))
    return section


@contextmanager
def _plain_text() -> Iterator[None]:
    """Column names are drawn as written: a `$` in one is not the start of a formula."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, Any]:
    """A figure not registered with pyplot: no window, no global state to close."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, panels)


def _save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _write(buffer.getvalue(), path)


def _write(data: bytes, path: Path) -> None:
    """Whole-file write; a link planted at `path` or its temporary name is replaced."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_bytes(data)
    tmp.replace(path)


def _page(title: str, report: dict[str, Any], sections: list[Section]) -> str:
    esc = html.escape
    accuracy = report["accuracy"]
    rows = privacy_rows(report["privacy"]) if "privacy" in report else []
    rows += [(f"{name} accuracy", f"{value:.4f}") for name, value in accuracy.items()]
    dcr = report.get("dcr")
    if dcr is not None:
        rows += [
            ("DCR share (0.5 is ideal)", f"{dcr['share']:.4f}"),
            ("median distance to training", f"{dcr['median_to_training']:.4f}"),
            ("median distance to holdout", f"{dcr['median_to_holdout']:.4f}"),
            ("share identical to a training row", f"{dcr['identical_to_training']:.4f}"),
        ]
    rows += [(f"{name} rows", f"{count:,}") for name, count in report["rows"].items()]
    figures = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    per_column = "".join(
        f"<tr><th>{esc(str(c))}</th><td>{v:.4f}</td></tr>" for c, v in report["univariate"].items()
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<h2>Figures</h2><table>{figures}</table>",
        f"<details><summary>Accuracy per column</summary><table>{per_column}</table></details>",
    ]
    for section in sections:
        body.append(f"<h2>{esc(section.title)}</h2><p>{esc(section.caption)}</p>")
        body += [
            f'<img src="{esc(name)}" alt="{esc(alt)}" loading="lazy">'
            for name, alt in section.images
        ]
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em}"
        "img{max-width:100%;margin:4px;vertical-align:top}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px}"
        "th{text-align:left;font-weight:normal}td{text-align:right}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
