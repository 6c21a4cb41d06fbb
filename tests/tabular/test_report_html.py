"""`tabular report` as pictures: report.html shows a PNG for every plot, all inside its folder."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.tabular.job import report_job
from synthgraph.graphs.tabular.tool import report_tool
from synthgraph.tools import tabular_plots
from synthgraph.tools.workspace import workspace_root

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["size", "colour", "when", "weird/../name", "<b>bold</b>"]


def make_table(rows: int, seed: int) -> pd.DataFrame:
    """Numbers (with gaps), a category, datetimes, and names a path or a page must not obey."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 3, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, rows), "D"),
            "weird/../name": rng.integers(0, 4, rows),
            "<b>bold</b>": rng.choice(["x", "y"], rows),
        }
    )
    frame.loc[::9, "size"] = None
    return frame


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "tables"
    folder.mkdir()
    paths = {name: folder / f"{name}.parquet" for name in ("training", "synthetic", "holdout")}
    for seed, path in enumerate(paths.values()):
        make_table(200, seed).to_parquet(path)
    return paths


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def shown_images(page: Path) -> list[str]:
    """The images report.html shows, each checked to be a PNG file in the page's folder."""
    parser = Images()
    parser.feed(page.read_text("utf-8"))
    assert "b" not in parser.tags  # a column name is text, never markup
    for source in parser.sources:
        image = (page.parent / source).resolve()
        assert image.parent == page.parent.resolve(), source
        assert image.read_bytes()[:8] == PNG, source
    return parser.sources


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_page_shows_every_plot_and_writes_only_its_folder(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    html_dir = tmp_path / "out" / "pictures"
    summary = report_job(
        tables["synthetic"],
        tables["training"],
        holdout=tables["holdout"],
        report_path=tmp_path / "out" / "report.json",
        html_dir=html_dir,
    )

    assert summary.html_path == html_dir / "report.html"
    images = shown_images(summary.html_path)
    marginals = [name for name in images if name.startswith("marginal_")]
    assert len(marginals) == len(COLUMNS) == len(set(marginals))
    assert "marginal_003_weird_name.png" in marginals  # no separator, no dots: stays in the folder
    assert {"associations.png", "dcr.png"} <= set(images)
    assert files_under(html_dir) == {html_dir / name for name in [*images, "report.html"]}
    assert files_under(tmp_path) - before == files_under(html_dir) | {tmp_path / "out/report.json"}

    page = summary.html_path.read_text("utf-8")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "weird/../name" in page
    assert f"{summary.dcr_share:.4f}" in page
    assert all(f"{value:.4f}" in page for value in summary.accuracy.values())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "distances" not in report["dcr"]  # the arrays feed the plot, not the JSON


def test_without_a_holdout_there_is_no_dcr_histogram(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    summary = report_job(tables["synthetic"], tables["training"], html_dir=tmp_path / "pictures")
    assert summary.html_path is not None
    images = shown_images(summary.html_path)
    assert "dcr.png" not in images and "associations.png" in images
    assert summary.dcr_share is None


def test_event_tables_add_sequence_plots_and_many_columns_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tabular_plots, "MAX_COLUMNS", 3)
    paths = []
    for seed, name in enumerate(("training", "synthetic")):
        rng = np.random.default_rng(seed)
        events = make_table(150, seed)
        events.insert(0, "person", rng.integers(0, 30, len(events)))
        paths.append(tmp_path / f"{name}.parquet")
        events.to_parquet(paths[-1])

    summary = report_job(paths[1], paths[0], html_dir=tmp_path / "pictures", key="person")

    assert summary.html_path is not None
    images = shown_images(summary.html_path)
    assert len([name for name in images if name.startswith("marginal_")]) == 3  # the key aside
    assert {"sequence_lengths.png", "sequence_coherence.png"} <= set(images)
    assert "the first 3 of 5 columns" in summary.html_path.read_text("utf-8")


def test_the_command_writes_the_pictures(tables: dict[str, Path], tmp_path: Path) -> None:
    args = ["tabular", "report", "-s", str(tables["synthetic"]), "-t", str(tables["training"])]
    result = CliRunner().invoke(
        app, [*args, "--holdout", str(tables["holdout"]), "--html", str(tmp_path / "pictures")]
    )
    assert result.exit_code == 0, result.output
    assert "DCR share" in result.output
    images = shown_images(tmp_path / "pictures" / "report.html")
    assert "dcr.png" in images and len(images) == len(COLUMNS) + 2


@pytest.mark.parametrize(
    ("content", "cause"), [(b"\xff\xfe\x00garbage\x80", "not UTF-8"), (b"", "no rows")]
)
def test_bad_input_is_still_one_line(
    tables: dict[str, Path], tmp_path: Path, content: bytes, cause: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    result = CliRunner().invoke(
        app,
        [
            "tabular",
            "report",
            "-s",
            str(bad),
            "-t",
            str(tables["training"]),
            "--html",
            str(tmp_path / "p"),
        ],
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}") and cause in lines[0]
    assert not (tmp_path / "p").exists()


def test_the_tool_writes_pictures_inside_the_workspace_only(tmp_path: Path) -> None:
    root = workspace_root()
    make_table(100, 0).to_parquet(root / "train.parquet")
    make_table(100, 1).to_parquet(root / "syn.parquet")
    tool = report_tool()
    arguments = {"synthetic_path": "syn.parquet", "training_path": "train.parquet"}

    reply = tool.invoke({**arguments, "html_dir": "pictures"})
    assert reply["html_path"] == "pictures/report.html"
    assert (root / "pictures" / "marginal_000_size.png").is_file()

    outside = tmp_path / "outside"
    refused = tool.invoke({**arguments, "html_dir": str(outside)})
    assert "outside the workspace" in refused
    (root / "linked").symlink_to(outside, target_is_directory=True)
    outside.mkdir()
    assert "outside the workspace" in tool.invoke({**arguments, "html_dir": "linked"})
    assert not any(outside.iterdir())
