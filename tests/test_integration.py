"""The embedded model for real: doctor, one structured call through a graph."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synthgraph.agents.local_model import EMBEDDED_MODEL
from synthgraph.graphs.smoke import graph as smoke_graph

pytestmark = pytest.mark.integration


def test_doctor_reports_the_embedded_model_ready() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synthgraph.graphs.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["llm"]["ok"] is True and report["llm"]["embedded"] is True
    assert report["llm"]["model_sha256"] == EMBEDDED_MODEL.sha256
    assert report["embeddings"]["dimension"] == 384 and report["chroma"]["ok"] is True


def test_one_structured_call_to_the_embedded_model() -> None:
    result = smoke_graph.invoke({"description": "styling web pages"}, context=None)
    assert isinstance(result["language"], str) and result["language"].strip()
    assert isinstance(result["reason"], str) and len(result["reason"].split()) >= 3
