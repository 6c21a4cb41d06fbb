"""The embedded model: assembling its GGUF, building and sharing one llama-server.

Unit tests run the registry and supervisor for real around a stand-in server
(`fake_llama_server.py`); the `integration` variants do the same with the real
llama-server and GGUF.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synthgraph.agents.llama_build import (
    LLAMA_CPP_COMMIT,
    BuildError,
    cached_binary,
    cpu_fingerprint,
    llama_server_binary,
)
from synthgraph.agents.llama_registry import start_time
from synthgraph.agents.local_model import (
    EMBEDDED_MODEL,
    ChunkedModel,
    LocalModelError,
    LocalServer,
    assemble,
    chunk_files,
    local_endpoint,
    registry_path,
    release_all,
    resolve_model_path,
    verified_sha256,
)
from synthgraph.tools.settings import Settings, get_settings

TESTS = Path(__file__).resolve().parent


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


# --- building llama-server --------------------------------------------------------


def test_the_cached_build_is_keyed_by_llama_cpp_commit_and_cpu(tmp_path: Path) -> None:
    binary = cached_binary(tmp_path)
    assert binary.parent == tmp_path / "bin"
    assert LLAMA_CPP_COMMIT in binary.name and binary.name.endswith(cpu_fingerprint())


def test_a_missing_build_names_the_command_and_a_bad_binary_is_refused(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    with pytest.raises(BuildError, match="synthgraph build-server"):
        llama_server_binary(settings, build=False)
    not_executable = tmp_path / "llama-server"
    not_executable.write_text("")
    with pytest.raises(BuildError, match=r"SYNTHGRAPH_LLAMA_SERVER=.*not an executable"):
        llama_server_binary(Settings(cache_dir=tmp_path, llama_server=not_executable))


def test_the_server_command_has_slots_context_per_slot_threads_and_loopback() -> None:
    settings = Settings(local_slots=4, local_ctx=2048, local_threads=2)
    command = LocalServer(Path("/m/model.gguf"), settings, port=8123).command(Path("/b/ls"))
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "/b/ls"
    assert pairs["--parallel"] == "4" and pairs["--ctx-size"] == "8192"
    assert pairs["--threads"] == "2" and pairs["--host"] == "127.0.0.1"
    assert pairs["--port"] == "8123" and pairs["--model"] == "/m/model.gguf"


# --- one shared server per machine ----------------------------------------------------

CLIENT = """
import sys
from pathlib import Path

import httpx

from synthgraph.agents.local_model import local_endpoint
from synthgraph.tools.log import configure_logging

configure_logging(json_lines=True)  # to stderr: stdout is for the test
endpoint = local_endpoint(Path(sys.argv[1]))
print(endpoint.base_url, flush=True)
if sys.argv[2] == "request":
    body = {"model": endpoint.model, "max_tokens": 2000,
            "messages": [{"role": "user", "content": "Write a very long story."}]}
    print("requesting", flush=True)
    httpx.post(endpoint.base_url + "/chat/completions", json=body, timeout=600)
sys.stdin.read()
"""


@dataclass
class Machine:
    """Where the servers of one test live: the GGUF, the cache, the clients' environment."""

    kind: str  # "fake" or "real"
    model: Path
    env: dict[str, str]
    clients: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def registry(self) -> dict[str, dict]:
        path = Path(self.env["SYNTHGRAPH_CACHE_DIR"]) / "server.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def client(self, mode: str = "idle") -> subprocess.Popen[str]:
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(self.model), mode],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.clients.append(client)
        return client

    def server_pids(self) -> list[int]:
        """llama-server processes (not their supervisors) serving this test's GGUF."""
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            serves = "--model" in argv and argv[argv.index("--model") + 1] == str(self.model)
            if serves and "synthgraph.agents.llama_registry" not in argv:
                pids.append(int(proc.name))
        return pids


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.integration)])
def machine(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Machine]:
    """A cache of its own, and a GGUF path no other server serves, with a stand-in or real server."""
    model = tmp_path / "model.gguf"
    if request.param == "fake":
        binary = tmp_path / "llama-server"
        binary.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "fake_llama_server.py"}" "$@"\n'
        )
        binary.chmod(0o755)
        model.write_bytes(b"GGUF fake")
    else:
        binary = llama_server_binary(get_settings())  # the machine's build
        os.link(resolve_model_path(), model)
    env = {
        "SYNTHGRAPH_CACHE_DIR": str(tmp_path / "cache"),
        "SYNTHGRAPH_LLAMA_SERVER": str(binary),
        "SYNTHGRAPH_LOCAL_MODEL": str(model),
        "SYNTHGRAPH_LOCAL_SLOTS": "2",
        "SYNTHGRAPH_LOCAL_CTX": "1024",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = Machine(request.param, model, {**os.environ, **env})
    yield result
    for client in result.clients:
        client.kill()
        client.wait()
    release_all()
    if not wait_for(lambda: not result.server_pids(), 15):
        for pid in result.server_pids():
            os.kill(pid, signal.SIGKILL)
        pytest.fail("a server outlived its last client")


def test_two_clients_started_together_share_one_server(machine: Machine) -> None:
    clients = [machine.client(), machine.client()]
    urls = {client.stdout.readline().strip() for client in clients if client.stdout}
    assert len(urls) == 1 and urls.pop().startswith("http://127.0.0.1:")
    assert list(machine.registry) == [str(machine.model)]
    entry = machine.registry[str(machine.model)]
    assert entry["slots"] == 2 and entry["ctx_per_slot"] == 1024
    assert machine.server_pids() == [entry["pid"]]
    for client in clients:
        client.communicate("", timeout=60)
    # The last client is gone: the server follows within the supervisor's grace.
    assert wait_for(lambda: not machine.server_pids(), 10)
    assert machine.registry == {}


def test_a_client_killed_mid_request_leaves_no_server(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LLAMA_DELAY", "120")
    machine.env["FAKE_LLAMA_DELAY"] = "120"
    client = machine.client("request")
    assert client.stdout is not None
    client.stdout.readline()
    assert client.stdout.readline().strip() == "requesting"
    time.sleep(1)  # the request is being answered
    server = machine.registry[str(machine.model)]
    client.kill()
    client.wait()
    assert wait_for(lambda: not machine.server_pids(), 10)
    assert wait_for(lambda: start_time(server["supervisor_pid"]) is None, 5)
    assert machine.registry == {}


def test_a_killed_supervisor_takes_its_server_and_the_stale_entry_is_replaced(
    machine: Machine,
) -> None:
    first = local_endpoint()
    os.kill(first.server["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not machine.server_pids(), 10)  # PR_SET_PDEATHSIG
    assert machine.registry[str(machine.model)]["pid"] == first.server["pid"]  # stale now
    second = local_endpoint()
    assert second.server["pid"] != first.server["pid"]
    assert machine.server_pids() == [second.server["pid"]]
    assert machine.registry[str(machine.model)]["pid"] == second.server["pid"]


def test_a_server_that_cannot_start_reports_model_port_and_log(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    if machine.kind == "real":
        machine.model.unlink()  # the hard link only: the cached GGUF stays
        machine.model.write_bytes(b"not a gguf file")
    monkeypatch.setenv("FAKE_LLAMA_EXIT", "3")
    with pytest.raises(LocalModelError) as caught:
        local_endpoint()
    message = str(caught.value)
    log = registry_path(get_settings()).parent / "logs"
    assert "llama-server exited with code" in message and str(machine.model) in message
    assert "(model " in message and ", port " in message and str(log) in message
    assert "failed to load model" in message  # the log's last lines
    assert machine.registry == {} and not machine.server_pids()
