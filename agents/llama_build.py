"""llama.cpp's `llama-server`, built from source once per machine and cached.

The source is the llama.cpp tree vendored in a pinned llama-cpp-python sdist,
fetched from PyPI with pip (pip's cache makes a rebuild offline). The build is
static (one file) and tuned for this CPU (`GGML_NATIVE`), so the cached binary
is keyed by the llama.cpp commit, the build options and a hash of the CPU's
feature flags: a home folder shared with another CPU gets a build of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from synthgraph.tools.locks import file_lock
from synthgraph.tools.log import get_logger
from synthgraph.tools.settings import Settings, get_settings

log = get_logger(__name__)

SOURCE_PACKAGE = "llama-cpp-python"
SOURCE_VERSION = "0.3.36"
# The llama.cpp commit that sdist vendors (its CHANGELOG); the tree has no .git to tell.
LLAMA_CPP_COMMIT = "0c1e57098"
BUILD_OPTIONS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained file in the cache
    "-DGGML_NATIVE=ON",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",  # loopback HTTP only
    "-DLLAMA_BUILD_UI=OFF",  # no web UI: nothing to download, less to compile
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
    "-DLLAMA_BUILD_NUMBER=0",
)


class BuildError(RuntimeError):
    """llama-server could not be built or found; the message says why and what to do."""


def cpu_fingerprint() -> str:
    """A short hash of the CPU's feature flags (a native build may not run on another CPU)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags = next(
        (line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("flags")), ""
    )
    return hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]


def build_key() -> str:
    options = hashlib.sha256("\n".join(BUILD_OPTIONS).encode()).hexdigest()[:8]
    return f"{LLAMA_CPP_COMMIT}-{options}-{cpu_fingerprint()}"


def cached_binary(cache_dir: Path) -> Path:
    return cache_dir / "bin" / f"llama-server-{build_key()}"


def llama_server_binary(settings: Settings | None = None, *, build: bool = True) -> Path:
    """`SYNTHGRAPH_LLAMA_SERVER` if set, else the cached build (built now if missing)."""
    settings = settings or get_settings()
    if settings.llama_server:
        path = settings.llama_server.expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BuildError(f"SYNTHGRAPH_LLAMA_SERVER={path}: not an executable file")
        return path
    binary = cached_binary(settings.cache_dir)
    if binary.is_file():
        return binary
    if not build:
        raise BuildError(f"llama-server is not built yet ({binary}); run `synthgraph build-server`")
    return build_llama_server(settings.cache_dir)


def build_options(binary: Path, settings: Settings | None = None) -> list[str] | None:
    """The CMake options of a binary this module built; None for one the user gave."""
    settings = settings or get_settings()
    return list(BUILD_OPTIONS) if binary == cached_binary(settings.cache_dir) else None


def binary_version(binary: Path) -> str:
    """What `llama-server --version` says (version, commit, compiler)."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return "; ".join(lines[-2:]) or f"unknown (exit code {result.returncode})"


def _tool(name: str) -> str | None:
    """A build tool on PATH or beside this Python (pip's `cmake` and `ninja` packages)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


def _run(command: list[str], log_path: Path, what: str, cwd: Path | None = None) -> None:
    """Run a build step, its output appended to `log_path`; log progress every 10%."""
    step = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja: [12/206]
    percent_seen = -10
    with log_path.open("a") as log_file:
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            match = step.match(line)
            if match:
                percent = 100 * int(match[1]) // int(match[2])
                if percent >= percent_seen + 10:
                    percent_seen = percent - percent % 10
                    log.info("llama_server.build", step=what, percent=percent)
        if process.wait() != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise BuildError(
                f"{what} failed (exit code {process.returncode}); full log: {log_path}\n{tail}"
            )


def _fetch_source(work: Path, log_path: Path) -> Path:
    """The vendored llama.cpp tree of the pinned sdist, extracted under `work`."""
    spec = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--dest", str(work), spec],
        log_path, f"pip download {spec}",
    )  # fmt: skip
    sdist = next(work.glob("*.tar.gz"), None)
    if sdist is None:
        raise BuildError(f"pip download {spec} left no .tar.gz in {work}; see {log_path}")
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        archive.extractall(work, members=members, filter="data")
    return work / prefix


def build_llama_server(cache_dir: Path) -> Path:
    """Build llama-server into the cache, once (other processes wait for the same build)."""
    binary = cached_binary(cache_dir)
    with file_lock(binary.with_name(".build.lock")):
        if binary.is_file():
            return binary
        cmake = _tool("cmake")
        if cmake is None:
            raise BuildError(
                "building llama-server needs CMake and a C++ compiler: install cmake "
                "(apt-get install cmake, or pip install cmake), or set SYNTHGRAPH_LLAMA_SERVER "
                "to a llama-server binary, or SYNTHGRAPH_BASE_URL to an endpoint"
            )
        work = cache_dir / "build" / build_key()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log_path = cache_dir / "logs" / "llama-server-build.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        log.info(
            "llama_server.build",
            step="start",
            llama_cpp=LLAMA_CPP_COMMIT,
            note="one time, about 10 minutes on 2 cores",
            log_file=str(log_path),
        )
        started = time.monotonic()
        source = _fetch_source(work, log_path)
        ninja = _tool("ninja")
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        build = work / "build"
        _run([cmake, "-S", str(source), "-B", str(build), *generator, *BUILD_OPTIONS],
             log_path, "cmake configure")  # fmt: skip
        jobs = str(len(os.sched_getaffinity(0)))
        _run([cmake, "--build", str(build), "--target", "llama-server", "--parallel", jobs],
             log_path, "cmake build")  # fmt: skip
        built = build / "bin" / "llama-server"
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(binary.name + ".tmp")
        shutil.copy2(built, tmp)
        tmp.replace(binary)
        shutil.rmtree(work, ignore_errors=True)
        log.info(
            "llama_server.build",
            step="done",
            binary=str(binary),
            minutes=round((time.monotonic() - started) / 60, 1),
        )
        return binary


if __name__ == "__main__":
    print(build_llama_server(get_settings().cache_dir))
