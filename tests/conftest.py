"""Shared fixtures: an isolated data dir per test and scripted fake chat models."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fakes import FakeOpenAIServer, serve

from synthgraph.tools.settings import get_settings


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data dir, Chroma and workspace; settings re-read."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("SYNTHGRAPH_DATA_DIR", str(data_dir))
    monkeypatch.delenv("SYNTHGRAPH_CHROMA_URL", raising=False)
    # A developer's shared stores must not receive the tests' data.
    monkeypatch.delenv("SYNTHGRAPH_CHECKPOINT_URL", raising=False)
    monkeypatch.delenv("SYNTHGRAPH_CACHE_URL", raising=False)
    monkeypatch.delenv("SYNTHGRAPH_MINHASH_URL", raising=False)
    monkeypatch.delenv("SYNTHGRAPH_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SYNTHGRAPH_EXECUTOR", raising=False)
    monkeypatch.setenv("SYNTHGRAPH_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("SYNTHGRAPH_BACKOFF_MAX", "0.05")
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()
    # A command run in a test configures logging onto its captured stream; drop it.
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A scripted OpenAI-compatible endpoint; settings point at it."""
    yield from serve(FakeOpenAIServer(), monkeypatch)
