"""Assembling a chunked GGUF, and clear failures when serving it goes wrong."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from synthgraph.agents.local_model import (
    EMBEDDED_MODEL,
    ChunkedModel,
    LocalModelError,
    LocalServer,
    assemble,
    chunk_files,
    verified_sha256,
)
from synthgraph.tools.settings import Settings


def _chunk_packages(root: Path, prefix: str, chunks: list[list[bytes]]) -> tuple[str, ...]:
    names = []
    for index, parts in enumerate(chunks, start=1):
        name = f"{prefix}_part{index}"
        data = root / name / "data"
        data.mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        for number, part in enumerate(parts):
            (data / f"part{index * 10 + number:02d}.bin").write_bytes(part)
        names.append(name)
    return tuple(names)


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ChunkedModel, bytes]:
    site = tmp_path / "site"
    chunks = [[b"GGUF", b"-head-"], [b"body" * 1000], [b"tail"]]
    packages = _chunk_packages(site, "fakemodel", chunks)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(b"".join(c) for c in chunks)
    model = ChunkedModel(
        "fake", "fake.gguf", packages, len(whole), hashlib.sha256(whole).hexdigest()
    )
    return model, whole


def test_chunks_are_concatenated_in_order_and_verified(chunked, tmp_path: Path) -> None:
    model, whole = chunked
    target = assemble(model, tmp_path / "cache")
    assert target.read_bytes() == whole
    assert verified_sha256(target) == model.sha256
    stamp = target.stat().st_mtime_ns
    assert assemble(model, tmp_path / "cache").stat().st_mtime_ns == stamp  # assembled once


def test_a_wrong_hash_leaves_no_file_and_says_what_was_expected(chunked, tmp_path: Path) -> None:
    model, _ = chunked
    wrong = ChunkedModel(model.name, model.file_name, model.packages, model.size, "0" * 64)
    with pytest.raises(LocalModelError, match=r"expected .* bytes and 0000"):
        assemble(wrong, tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert not (models / "fake.gguf").exists() and not (models / "fake.gguf.part").exists()


def test_missing_chunk_packages_are_named_with_the_remedy() -> None:
    model = ChunkedModel("x", "x.gguf", ("no_such_chunk_pkg_1",), 1, "0" * 64)
    with pytest.raises(
        LocalModelError, match=r"no-such-chunk-pkg-1.*\.\[local\].*SYNTHGRAPH_LOCAL_MODEL"
    ):
        chunk_files(model)


def test_embedded_model_chunks_are_installed_and_pinned() -> None:
    files = chunk_files(EMBEDDED_MODEL)
    assert len(files) >= 6
    assert sum(f.stat().st_size for f in files) == EMBEDDED_MODEL.size


def test_a_server_that_cannot_start_reports_model_port_and_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    settings = Settings(cache_dir=tmp_path / "cache", local_startup_timeout=60)
    server = LocalServer(bad, settings)
    with pytest.raises(LocalModelError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with code" in message and str(bad) in message
    assert f"port {server.port}" in message and str(server.log_path) in message
    assert sys.executable in server.command()
