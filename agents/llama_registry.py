"""One embedded llama-server per model and machine, shared by every synthgraph process.

The registry (`server.json` in the cache dir) maps a GGUF path to the server
that serves it. Each process using a server leaves a file named by its PID in
the server's `clients/` folder. A small supervisor process (this module run as
`python -m synthgraph.agents.llama_registry`, in a session of its own) starts
llama-server so that the kernel kills it if the supervisor dies, and stops it
a few seconds after its last client is gone, kill -9'd clients included.
Registry changes happen under one fcntl lock, so two CLIs started together
share one server.

Standard library only (and the lock): the supervisor stays small for as long as the server runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from synthgraph.tools.locks import file_lock

# Seconds with no live client before the supervisor stops the server: long
# enough for a client that just found the server to register.
IDLE_GRACE = 3.0
POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


# --- processes ----------------------------------------------------------------


def start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot), or None if there is no such process.

    Stored beside a PID so that a reused PID is not taken for the process that died.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Field 3 is the state: a zombie has exited, it only waits to be reaped.
    return None if fields[0] == "Z" else fields[19]


def is_alive(pid: int, started: str | None) -> bool:
    return started is not None and start_time(pid) == started


# --- the registry -------------------------------------------------------------


def registry_lock(registry: Path) -> contextlib.AbstractContextManager[None]:
    return file_lock(registry.with_suffix(".lock"))


def read_registry(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def write_registry(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(path)


def entry_alive(entry: dict[str, Any]) -> bool:
    """Both the supervisor and the server of a registry entry still run."""
    return is_alive(int(entry["supervisor_pid"]), entry.get("supervisor_started")) and is_alive(
        int(entry["pid"]), entry.get("pid_started")
    )


# --- clients ------------------------------------------------------------------


def add_client(server_dir: Path, pid: int | None = None) -> None:
    pid = pid or os.getpid()
    clients = server_dir / "clients"
    clients.mkdir(parents=True, exist_ok=True)
    (clients / str(pid)).write_text(start_time(pid) or "")


def remove_client(server_dir: Path, pid: int | None = None) -> None:
    (server_dir / "clients" / str(pid or os.getpid())).unlink(missing_ok=True)


def live_clients(server_dir: Path) -> list[int]:
    """PIDs of the clients still running; files of dead ones are removed."""
    alive: list[int] = []
    for file in (server_dir / "clients").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            if is_alive(int(file.name), file.read_text().strip() or None):
                alive.append(int(file.name))
            else:
                file.unlink(missing_ok=True)
    return alive


# --- the supervisor -------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """In the child before exec: the kernel sends SIGKILL when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def supervise(server_dir: Path, registry: Path, command: list[str], log_file: Path) -> int:
    """Run `command` until no client of `server_dir` is alive, or SIGTERM.

    Returns the server's exit code if it exited by itself, else 0.
    Prints the server's PID and start time on stdout, then closes stdout.
    """
    parent = os.getpid()
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _die_with_parent(parent),
        )
    print(process.pid, start_time(process.pid), flush=True)
    sys.stdout.close()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the clients
    idle_since: float | None = None
    exit_code = 0
    while process.poll() is None and not stopping:
        time.sleep(POLL_SECONDS)
        if live_clients(server_dir):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_GRACE:
            # Under the lock: a client registering now either was counted above, or
            # finds no entry and starts a new server.
            with registry_lock(registry):
                if not live_clients(server_dir):
                    _forget(registry)
                    stop_process(process)
                    break
            idle_since = None
    else:
        # The server exited (its code is ours), or SIGTERM. While it starts, its entry is
        # not written yet and the starting client holds the lock: nothing to remove then.
        exit_code = process.poll() or 0
        if _forget(registry, write=False):
            with registry_lock(registry):
                _forget(registry)
        stop_process(process)
    shutil.rmtree(server_dir, ignore_errors=True)
    return exit_code


def _forget(registry: Path, write: bool = True) -> bool:
    """Whether the registry holds this supervisor's entry; with `write`, drop it (under the lock)."""
    entries = read_registry(registry)
    kept = {k: v for k, v in entries.items() if v.get("supervisor_pid") != os.getpid()}
    if write and len(kept) < len(entries):
        write_registry(registry, kept)
    return len(kept) < len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description="Supervise one llama-server for synthgraph.")
    parser.add_argument("--dir", type=Path, required=True, help="the server's folder")
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sys.exit(supervise(args.dir, args.registry, command, args.log))


if __name__ == "__main__":
    main()
