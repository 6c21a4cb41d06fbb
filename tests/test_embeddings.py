"""MiniLM embeddings (offline) and Chroma, persistent and as a client of a real server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from synthgraph.agents.local_model import free_port
from synthgraph.tools.embeddings import get_chroma_client, get_embeddings
from synthgraph.tools.settings import get_settings


def test_minilm_embeddings_are_normalised_and_meaningful() -> None:
    embeddings = get_embeddings()
    vectors = embeddings.encode(
        ["A nurse caring for patients.", "A nurse who cares for patients.", "Stock market taxes."]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > 0.85 > vectors[0] @ vectors[2]
    assert (
        len(embeddings.embed_query("x")) == 384 and len(embeddings.embed_documents(["a", "b"])) == 2
    )


def _nearest(client) -> tuple[str, float]:
    collection = client.get_or_create_collection(
        "test",
        embedding_function=get_embeddings().as_chroma_function(),
        metadata={"hnsw:space": "cosine"},
    )
    collection.add(
        ids=["a", "b"],
        documents=["A baker who makes sourdough bread.", "A pilot flying cargo planes."],
    )
    found = collection.query(query_texts=["Someone who bakes sourdough loaves."], n_results=1)
    return found["ids"][0][0], found["distances"][0][0]


def test_persistent_chroma_under_the_data_dir(isolated_settings: Path) -> None:
    nearest, distance = _nearest(get_chroma_client())
    assert nearest == "a" and distance < 0.3
    assert (isolated_settings / "chroma").is_dir()
    # A second client on the same folder sees the same data (persistence).
    again = get_chroma_client().get_collection(
        "test", embedding_function=get_embeddings().as_chroma_function()
    )
    assert again.count() == 2


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    binary = Path(os.sys.executable).parent / "chroma"
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_chroma_url_switches_to_an_http_client(
    chroma_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_CHROMA_URL", chroma_server)
    get_settings.cache_clear()
    client = get_chroma_client()
    assert type(client).__name__ != "PersistentClient" and client.heartbeat() > 0
    nearest, _ = _nearest(client)
    assert nearest == "a"
