"""A real redis-server for tests: on a free loopback port, keeping nothing on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

from synthgraph.agents.llama_registry import stop_process
from synthgraph.agents.local_model import free_port

STARTUP_LIMIT = 30.0  # seconds; a server that never answers fails the test, never hangs it


def cannot_run_here(reason: str) -> NoReturn:
    """A server a test needs is missing and cannot be installed here (`make test` installs it
    when run as root). Outside CI that skips the test; under CI (`CI` set) it fails it, so a
    green CI never stands on a skipped test."""
    if os.environ.get("CI"):
        pytest.fail(f"CI cannot run this test: {reason}")
    pytest.skip(reason)


@contextmanager
def redis_server(folder: Path, password: str | None = None) -> Iterator[str]:
    """Start redis-server (requiring `password` if given), yield its URL once it answers PING,
    stop it afterwards.

    Without redis-server the test cannot run here (see `cannot_run_here`).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        cannot_run_here(
            "redis-server not found: apt-get install redis-server (`make test` does as root)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "redis.log"
    command = [
        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)),
        *("--save", "", "--appendonly", "no", "--logfile", str(log)),
        *(("--requirepass", password) if password else ()),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            deadline = time.monotonic() + STARTUP_LIMIT
            while not _answers(client):
                if server.poll() is not None or time.monotonic() > deadline:
                    output = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start: {output}")
                time.sleep(0.05)
        yield url
    finally:
        stop_process(server)


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # redis.ConnectionError, or BusyLoadingError while it starts
        return False
