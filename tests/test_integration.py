"""The embedded model for real: doctor, one structured call through a graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_serve_is_reused_by_other_processes_and_stops_cleanly(tmp_path) -> None:
    import os
    import signal
    import time

    from synthgraph.agents.llama_build import llama_server_binary
    from synthgraph.agents.local_model import (
        local_endpoint,
        registry_path,
        release_all,
        resolve_model_path,
    )
    from synthgraph.tools.settings import get_settings

    # The machine's llama-server build, but a registry of this test's own.
    env = {
        **os.environ,
        "SYNTHGRAPH_CACHE_DIR": str(tmp_path / "cache"),
        "SYNTHGRAPH_LLAMA_SERVER": str(llama_server_binary()),
    }
    # A hard link gives the model a path of its own, so no server this test process
    # already runs for the embedded model can answer in its place.
    model = tmp_path / "model.gguf"
    os.link(resolve_model_path(), model)
    env["SYNTHGRAPH_LOCAL_MODEL"] = str(model)
    serve = subprocess.Popen(
        [sys.executable, "-m", "synthgraph.graphs.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        settings = get_settings().model_copy(
            update={
                "cache_dir": tmp_path / "cache",
                "local_model": model,
                "llama_server": Path(env["SYNTHGRAPH_LLAMA_SERVER"]),
            }
        )
        registry = registry_path(settings)
        for _ in range(600):
            if registry.exists() and str(model.resolve()) in registry.read_text():
                break
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            time.sleep(0.2)
        entry = json.loads(registry.read_text())[str(model.resolve())]
        assert local_endpoint(model, settings).base_url == entry["base_url"]
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    # This process still uses the server; once it lets go, the server stops.
    assert str(model.resolve()) in json.loads(registry.read_text())
    release_all()
    for _ in range(100):
        if str(model.resolve()) not in json.loads(registry.read_text()):
            break
        time.sleep(0.2)
    assert str(model.resolve()) not in json.loads(registry.read_text())
