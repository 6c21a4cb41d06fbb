"""Each registered graph keeps its shape: its mermaid drawing equals tests/snapshots/<name>.mmd.

A graph changed on purpose? Rewrite the snapshots and review their diff:
`SYNTHGRAPH_UPDATE_SNAPSHOTS=1 pytest tests/test_graph_shapes.py`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
REGISTRY: dict[str, dict[str, str]] = json.loads((ROOT / "langgraph.json").read_text())["graphs"]


def _drawing(name: str) -> str:
    """The graph registered as `name`, drawn with its subgraphs opened (xray)."""
    file, attribute = REGISTRY[name]["path"].split(":")
    module = "synthgraph." + file.removeprefix("./").removesuffix(".py").replace("/", ".")
    graph = getattr(importlib.import_module(module), attribute)
    return graph.get_graph(xray=True).draw_mermaid()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_graph_matches_its_mermaid_snapshot(name: str) -> None:
    snapshot = SNAPSHOTS / f"{name}.mmd"
    drawing = _drawing(name)
    if os.environ.get("SYNTHGRAPH_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        snapshot.write_text(drawing)
    assert snapshot.is_file(), f"no snapshot for {name}: run with SYNTHGRAPH_UPDATE_SNAPSHOTS=1"
    assert drawing == snapshot.read_text(), (
        f"graph {name} changed shape; if on purpose, rewrite {snapshot.relative_to(ROOT)} "
        "with SYNTHGRAPH_UPDATE_SNAPSHOTS=1 and review the diff"
    )


def test_every_snapshot_belongs_to_a_registered_graph() -> None:
    stale = {path.stem for path in SNAPSHOTS.glob("*.mmd")} - set(REGISTRY)
    assert not stale, f"snapshots of graphs no longer in langgraph.json: {sorted(stale)}"
