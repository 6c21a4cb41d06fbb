"""A real Postgres for tests: a fresh cluster in a temporary folder, on a free loopback port."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from redis_server import cannot_run_here

from synthgraph.agents.llama_registry import stop_process
from synthgraph.agents.local_model import free_port

STARTUP_LIMIT = 60.0  # seconds; a server that never answers fails the test, never hangs it
USER = "synthgraph"  # the cluster's superuser


def _binaries() -> Path | None:
    """The folder of `initdb` and `postgres`: on PATH, or where Debian's packages put them."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


def _system_user() -> str | None:
    """Whom the server runs as: Postgres refuses root, so the `postgres` (or `nobody`) user
    when we are root; None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    cannot_run_here("running as root with neither a `postgres` nor a `nobody` user for the server")


@contextmanager
def postgres_server(password: str) -> Iterator[str]:
    """Start Postgres (user `synthgraph`, `password`), yield its URL once it accepts connections,
    stop it afterwards and delete its files.

    Without Postgres the test cannot run here (see `cannot_run_here`).
    """
    binaries = _binaries()
    if binaries is None:
        cannot_run_here(
            "Postgres not found: apt-get install postgresql-15 (`make test` does as root)"
        )
    user = _system_user()
    # Not under pytest's tmp_path: the server's user must be able to reach its folder.
    folder = Path(tempfile.mkdtemp(prefix="synthgraph-postgres-"))
    try:
        data = folder / "data"
        (folder / "password").write_text(password)
        if user is not None:
            shutil.chown(folder, user)
            shutil.chown(folder / "password", user)
        initdb = [
            *(str(binaries / "initdb"), "-D", str(data), "-U", USER, "--no-sync"),
            *("--auth", "scram-sha-256", "--pwfile", str(folder / "password")),
        ]
        subprocess.run(initdb, user=user, cwd=folder, check=True, capture_output=True)
        port = free_port()
        command = [
            *(str(binaries / "postgres"), "-D", str(data), "-p", str(port)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="),
            *("-c", "fsync=off"),  # a test cluster: nothing to keep across a crash of the machine
        ]
        log = (folder / "postgres.log").open("wb")
        server = subprocess.Popen(
            command, user=user, cwd=folder, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres"
            deadline = time.monotonic() + STARTUP_LIMIT
            while not _accepts(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    output = (folder / "postgres.log").read_text(errors="replace")
                    raise RuntimeError(f"postgres did not start: {output}")
                time.sleep(0.1)
            yield url
        finally:
            server.send_signal(signal.SIGINT)  # fast shutdown: clients still connected go
            stop_process(server)
            log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _accepts(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=1).close()
        return True
    except Exception:  # psycopg.OperationalError while it starts
        return False


def create_database(url: str, name: str) -> str:
    """A new empty database on the server at `url`; returns its URL."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rpartition("/")[0] + f"/{name}"
