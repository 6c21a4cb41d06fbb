"""The personas and synthesis graphs on the embedded model, for real (three calls)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from synthgraph.agents.personas import bundled_few_shot
from synthgraph.graphs.personas.graph import PersonasContext
from synthgraph.graphs.personas.graph import graph as personas_graph
from synthgraph.graphs.synthesis.graph import SynthesisContext
from synthgraph.graphs.synthesis.graph import graph as synthesis_graph

pytestmark = pytest.mark.integration
TEXT = Path(__file__).resolve().parents[1] / "examples" / "texts" / "kubernetes_outage.txt"


def test_a_text_gives_a_persona_its_colleague_and_a_math_problem() -> None:
    context = PersonasContext(
        relations=["colleague"], expand_rounds=1, dedup="none", max_tokens=160
    )
    out = personas_graph.invoke(
        {"texts": [{"id": "outage", "text": TEXT.read_text()}]}, context=context
    )
    assert out.get("rejects", []) == []
    [persona, colleague] = sorted(out["personas"], key=lambda p: p["round"])
    assert persona["source_id"] == "outage" and persona["relation"] is None
    assert colleague["source_id"] == persona["id"] and colleague["relation"] == "colleague"
    for record in (persona, colleague):
        assert len(record["persona"].split()) >= 5 and record["role"] and record["domain"]

    items = synthesis_graph.invoke(
        {"personas": [persona]},
        context=SynthesisContext(
            task="math",
            max_tokens=400,
            temperature=0.0,
            few_shot_file=str(bundled_few_shot("math")),
        ),
    )
    [item] = items["items"]
    assert item["persona_id"] == persona["id"]
    assert re.search(r"\d", item["item"]["problem"]) and item["item"]["answer"].strip()
