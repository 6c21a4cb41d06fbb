"""`langgraph dev` serves our graphs: run one through the SDK, list them through /mcp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeOpenAIServer

from synthgraph.agents.local_model import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.studio


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, FakeOpenAIServer]]:
    binary = shutil.which("langgraph", path=str(Path(os.sys.executable).parent))
    assert binary, "langgraph-cli is part of the studio extra, installed by `make test`"
    fake = FakeOpenAIServer().start()
    port = free_port()
    env = {
        **os.environ,
        "SYNTHGRAPH_BASE_URL": fake.base_url,
        "SYNTHGRAPH_API_KEY": "sk-fake-studio",
        "SYNTHGRAPH_DATA_DIR": str(tmp_path / "data"),
        "LANGSMITH_TRACING": "false",
    }
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(
        [binary, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(
                "langgraph dev did not start: " + (tmp_path / "dev.log").read_text()[-3000:]
            )
        yield url, fake
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        fake.stop()


def test_graph_runs_through_the_sdk_and_is_listed_as_an_mcp_tool(dev_server) -> None:
    from langgraph_sdk import get_sync_client

    url, fake = dev_server
    fake.script(
        {"content": json.dumps({"language": "Go", "reason": "Simple concurrency for servers."})}
    )
    client = get_sync_client(url=url)
    result = client.runs.wait(None, "smoke", input={"description": "network servers"})
    assert result == {"language": "Go", "reason": "Simple concurrency for servers."}

    registry = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    response = httpx.post(
        f"{url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={"accept": "application/json, text/event-stream"},
        timeout=30,
    )
    tools = {tool["name"]: tool for tool in response.json()["result"]["tools"]}
    assert set(registry) <= set(tools)
    assert tools["smoke"]["inputSchema"]["required"] == ["description"]
