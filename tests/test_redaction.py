"""Secrets never reach disk or output, even when the endpoint echoes the API key back."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool, ToolException
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from test_cli_and_secrets import _cli

from synthgraph.tools.io import RejectsWriter, read_jsonl, write_json
from synthgraph.tools.log import (
    REDACTED,
    configure_logging,
    get_logger,
    redact,
    tool_error_text,
)
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings

# No `sk-` or `Bearer` in front: only the configured key tells redaction it is one.
GATEWAY_KEY = "gw-7f3a9c21e4d0b8"


@pytest.fixture
def gateway_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", GATEWAY_KEY)
    get_settings.cache_clear()
    return GATEWAY_KEY


@dataclass(frozen=True)
class Note:
    text: str
    count: int


def test_redact_masks_known_keys_and_key_like_tokens_everywhere(gateway_key: str) -> None:
    assert redact(f"401: key {gateway_key} is invalid") == f"401: key {REDACTED} is invalid"
    assert redact("Authorization: Bearer abc.def-123456") == f"Authorization: {REDACTED}"
    assert redact("use sk-proj-0123456789abcdef") == f"use {REDACTED}"
    assert redact(f"caf\xe9 {gateway_key}".encode("latin-1")) == f"caf\xe9 {REDACTED}".encode(
        "latin-1"
    )  # any bytes round-trip unchanged but for the key
    record = {
        "error": [f"echo {gateway_key}", (1, f"x{gateway_key}")],
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": "anything"},
        "max_tokens": 512,
        "total_tokens": 3,
        "api_key_set": True,
    }
    assert redact(record) == {
        "error": [f"echo {REDACTED}", (1, f"x{REDACTED}")],
        "headers": {"Authorization": REDACTED, "x-api-key": REDACTED},
        "max_tokens": 512,
        "total_tokens": 3,
        "api_key_set": True,
    }
    message = redact(AIMessage(content=f"the key is {gateway_key}"))
    assert isinstance(message, AIMessage) and message.content == f"the key is {REDACTED}"
    assert redact(Note(f"k={gateway_key}", 2)) == Note(f"k={REDACTED}", 2)
    assert redact(7) == 7 and redact(None) is None
    assert redact("no secret here, 42 tokens") == "no secret here, 42 tokens"


def test_redact_follows_the_settings_and_leaves_placeholder_keys_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", "ollama")  # a placeholder, also a common word
    get_settings.cache_clear()
    assert redact("served by ollama") == "served by ollama"
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", "first-key-0001")
    get_settings.cache_clear()
    assert redact("first-key-0001 second-key-0002") == f"{REDACTED} second-key-0002"
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", "second-key-0002")
    get_settings.cache_clear()
    assert redact("first-key-0001 second-key-0002") == f"first-key-0001 {REDACTED}"


def test_rejects_and_manifests_are_written_redacted(gateway_key: str, tmp_path: Path) -> None:
    class EchoError(Exception):
        raw = f"raw reply naming {gateway_key}"

    with RejectsWriter(tmp_path / "rejects.jsonl") as rejects:
        rejects.reject("r1", "call", EchoError(f"401 for key {gateway_key}"))
    [reject] = read_jsonl(tmp_path / "rejects.jsonl")
    assert reject["error"] == f"EchoError: 401 for key {REDACTED}"
    assert reject["raw"] == f"raw reply naming {REDACTED}"
    write_json({"config": {"note": gateway_key, "max_tokens": 8}}, tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    assert manifest == {"config": {"note": REDACTED, "max_tokens": 8}}


def test_checkpoints_are_serialized_redacted(gateway_key: str, tmp_path: Path) -> None:
    run = Run.open("personas", out=tmp_path / "run")
    plain = JsonPlusSerializer()
    state = {"rejects": [{"error": f"401 {gateway_key}"}], "messages": [AIMessage(content="hi")]}
    clean = {"personas": [{"id": "p1", "persona": "A tide-pool biologist."}]}
    with run.checkpointer() as saver:
        serde = saver.serde
        assert serde.dumps_typed(clean) == plain.dumps_typed(clean)  # untouched when clean
        restored = serde.loads_typed(serde.dumps_typed(state))
        assert restored["rejects"] == [{"error": f"401 {REDACTED}"}]
        assert restored["messages"][0].content == "hi"
        error = serde.loads_typed(serde.dumps_typed(PermissionError(f"denied {gateway_key}")))
        assert gateway_key not in str(error)


@pytest.mark.parametrize("json_lines", [True, False])
def test_logged_tracebacks_are_redacted(
    gateway_key: str, capfd: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    configure_logging(json_lines=json_lines)
    try:
        raise PermissionError(f"401: the gateway got {gateway_key}")
    except PermissionError:
        get_logger("test").exception("call.failed")
        logging.getLogger("openai").exception("stdlib too")
    out, err = capfd.readouterr()
    assert err.count("PermissionError") >= 2 and err.count(REDACTED) >= 2
    assert gateway_key not in out + err


def test_tool_errors_reach_the_model_redacted(gateway_key: str) -> None:
    def failing(path: str) -> str:
        """Always fails, quoting the key."""
        raise ToolException(f"{path}: endpoint said {gateway_key}")

    tool = StructuredTool.from_function(failing, handle_tool_error=tool_error_text)
    assert tool.invoke({"path": "a.txt"}) == f"a.txt: endpoint said {REDACTED}"


# --- end to end: an endpoint that echoes the Authorization header in its 401 ---------------
def _files_holding(secret: str, *roots: Path) -> list[Path]:
    needle = secret.encode()
    return [
        path
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


@pytest.mark.parametrize("secret", ["sk-test-SECRET123456", GATEWAY_KEY])
def test_an_echoed_key_reaches_no_file_and_no_output(
    fake_server: FakeOpenAIServer, tmp_path: Path, secret: str
) -> None:
    # The gateway quotes the header it received, and the bare key too.
    echo = {"message": f"invalid api key {secret}", "received": f"Authorization: Bearer {secret}"}
    fake_server.script({"status": 401, "body": json.dumps({"error": echo})})
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("Tide pools hold anemones and crabs.")
    (texts / "b.txt").write_text("A recipe for sourdough bread with a long cold proof.")
    data, run_dir, cache = tmp_path / "data", tmp_path / "run", tmp_path / "cache"
    env = {
        "SYNTHGRAPH_BASE_URL": fake_server.base_url,
        "SYNTHGRAPH_API_KEY": secret,
        "SYNTHGRAPH_DATA_DIR": str(data),
        "SYNTHGRAPH_CACHE_DIR": str(cache),
    }

    personas = _cli(
        "--log-json", "--log-level", "DEBUG", "personas", str(texts), "--out", str(run_dir),
        "--expand-rounds", "0", env=env,
    )  # fmt: skip
    asked = _cli("--log-json", "--log-level", "DEBUG", "ask", "x", env=env)

    assert fake_server.requests and {r["_auth"] for r in fake_server.requests} == {
        f"Bearer {secret}"
    }  # the key was sent, and echoed back...
    rejects = list(read_jsonl(run_dir / "rejects.jsonl"))  # every text failed: the 401
    assert len(rejects) == 2 and all(REDACTED in r["error"] for r in rejects)
    assert (run_dir / "checkpoint.sqlite").exists()
    # A refused key is configuration, not a bug: one line, exit 2, no traceback.
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert asked.stderr.strip().splitlines()[-1].startswith("error: Error code: 401")
    # ...but it is in no file and in no output.
    assert _files_holding(secret, data, run_dir, cache) == []
    for result in (personas, asked):
        assert secret not in result.stdout + result.stderr
