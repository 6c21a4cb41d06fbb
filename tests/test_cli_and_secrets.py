"""The CLI against a fake endpoint, and no API key in any log line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer

from synthgraph.agents.llm import invoke_text
from synthgraph.tools.log import configure_logging, get_logger
from synthgraph.tools.settings import get_settings

SECRET = "sk-test-do-not-leak-7f3a9c21e4"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synthgraph.graphs.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_doctor_json_against_an_endpoint_never_prints_the_key(
    fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = {
        "SYNTHGRAPH_BASE_URL": fake_server.base_url,
        "SYNTHGRAPH_API_KEY": SECRET,
        "SYNTHGRAPH_DATA_DIR": str(tmp_path / "data"),
    }
    result = _cli("--log-json", "--log-level", "DEBUG", "doctor", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["llm"] == {**report["llm"], "ok": True, "embedded": False, "model_sha256": None}
    assert report["config"]["api_key_set"] is True
    assert SECRET not in result.stdout + result.stderr
    assert any(
        json.loads(line)["event"] == "doctor.start"
        for line in result.stderr.splitlines()
        if line.startswith("{")
    )


def test_doctor_fails_when_the_endpoint_is_down(tmp_path: Path) -> None:
    env = {
        "SYNTHGRAPH_BASE_URL": "http://127.0.0.1:9/v1",
        "SYNTHGRAPH_DATA_DIR": str(tmp_path / "data"),
        "SYNTHGRAPH_TIMEOUT": "2",
    }
    result = _cli("doctor", "--json", env=env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["llm"]["ok"] is False


def test_a_known_api_key_appears_in_no_log_line(
    fake_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", SECRET)
    get_settings.cache_clear()
    configure_logging(json_lines=True, level="DEBUG")
    try:
        log = get_logger("test")
        log.info("config", api_key=SECRET, headers={"Authorization": f"Bearer {SECRET}"})
        log.warning("call failed", error=f"401 invalid key {SECRET} for this project")
        logging.getLogger("openai").warning("stdlib line mentioning %s", SECRET)
        fake_server.script(
            {"status": 500, "body": json.dumps({"error": {"message": f"bad key {SECRET}"}})},
            {"content": "fine"},
        )
        assert invoke_text([("user", "hi")]).content == "fine"
        assert fake_server.requests[0]["_auth"] == f"Bearer {SECRET}"  # it was used...
    finally:
        logging.getLogger().handlers.clear()
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) >= 4
    assert all(SECRET not in line for line in lines)  # ...and never shown
    assert any("**redacted**" in line for line in lines)


def test_a_library_logging_debug_of_its_own_accord_stays_quiet_at_info(
    capfd: pytest.CaptureFixture[str],
) -> None:
    chatty = logging.getLogger("chatty-library")
    chatty.setLevel(logging.DEBUG)  # as bm25s does on import
    configure_logging(json_lines=True, level="INFO")
    try:
        chatty.debug("building an index")
        chatty.warning("something is wrong")
    finally:
        logging.getLogger().handlers.clear()
        chatty.setLevel(logging.NOTSET)
    _, err = capfd.readouterr()
    assert "building an index" not in err and "something is wrong" in err
