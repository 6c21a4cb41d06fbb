"""Issue 17: the response cache on Redis (`SYNTHGRAPH_CACHE_URL`), against a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from redis_server import redis_server

from synthgraph.agents.llm import invoke_text
from synthgraph.agents.local_model import free_port
from synthgraph.graphs.batch import run_batch
from synthgraph.tools.response_cache import (
    CACHE_HIT,
    CacheUnavailableError,
    RedisStore,
    ResponseCache,
    response_cache,
)
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Ledger, bound

PASSWORD = "hunter2-not-for-logs"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh redis-server of this test's own; the process's caches forget it afterwards."""
    with redis_server(tmp_path / "redis") as url:
        yield url
    response_cache.cache_clear()  # drop clients of a server that is gone


def _use_cache_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGRAPH_CACHE_URL", url)
    get_settings.cache_clear()
    response_cache.cache_clear()


def _reply(text: str) -> list[ChatGeneration]:
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    return [ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))]


def test_a_redis_store_round_trips_and_clears_only_its_own_keys(redis_url: str) -> None:
    store = RedisStore(redis_url)
    assert store.get("missing") is None
    store.put("k", json.dumps({"content": "réponse ✓"}, ensure_ascii=False))
    store.put("k2", "one")
    store.put("k2", "two")  # a later reply replaces the earlier one
    assert json.loads(store.get("k") or "") == {"content": "réponse ✓"}
    assert store.get("k2") == "two"

    other = RedisStore(redis_url, prefix="someone-else:")
    other.put("k", "theirs")
    store._client.mset({f"synthgraph:reply:bulk{n}": "x" for n in range(2500)})  # > one batch
    store.clear()
    assert store.get("k") is None and store.get("k2") is None and store.get("bulk0") is None
    assert store._client.keys("synthgraph:reply:*") == []
    assert other.get("k") == "theirs", "clear deletes its own prefix, nothing else"


def test_two_processes_on_one_redis_share_replies_sample_by_sample(redis_url: str) -> None:
    with bound(Ledger(), "input-1"):  # the first process: three samples of one request
        first = ResponseCache(RedisStore(redis_url))
        for k in range(3):
            assert first.lookup("prompt", "llm") is None
            first.update("prompt", "llm", _reply(f"sample {k}"))
    with bound(Ledger(), "input-1"):  # another process (or machine), its own client
        second = ResponseCache(RedisStore(redis_url))
        replies = [second.lookup("prompt", "llm") for _ in range(4)]
    assert [r[0].text for r in replies[:3] if r] == ["sample 0", "sample 1", "sample 2"]
    assert replies[3] is None, "a fourth sample was never asked: the endpoint answers it"
    hit = replies[0][0].message  # type: ignore[index]
    assert hit.response_metadata[CACHE_HIT] and hit.usage_metadata["input_tokens"] == 3
    with bound(Ledger(), "input-2"):  # the same request for another input is its own sample
        assert second.lookup("prompt", "llm") is None


def test_with_a_cache_url_a_second_run_is_answered_from_redis_and_no_sqlite_file_is_made(
    redis_url: str, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_cache_url(redis_url, monkeypatch)
    fake_server.script({"content": "first"}, {"content": "second"})
    with bound(Ledger()):
        assert invoke_text([("user", "hi")]).content == "first"
    response_cache.cache_clear()  # the second run as another process: a new client
    with bound(Ledger()) as ledger:
        again = invoke_text([("user", "hi")])
    assert again.content == "first" and again.response_metadata[CACHE_HIT]
    assert len(fake_server.requests) == 1
    assert ledger.to_manifest()["total"]["cache_hits"] == 1
    assert not get_settings().cache_path.exists(), "Redis holds the cache, not SQLite"
    assert RedisStore(redis_url)._client.keys("synthgraph:reply:*"), "the reply is in Redis"


def test_an_unreachable_cache_fails_the_first_call_clearly_without_its_password(
    fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    _use_cache_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", monkeypatch)
    fake_server.script({"content": "never asked"})
    with bound(Ledger()), pytest.raises(CacheUnavailableError) as raised:
        invoke_text([("user", "hi")])
    message = str(raised.value)
    assert message.startswith(f"the response cache at redis://127.0.0.1:{port}/0 (")
    assert "SYNTHGRAPH_CACHE_URL" in message and "refused" in message
    assert PASSWORD not in message
    assert fake_server.requests == [], "no silent fallback to an uncached endpoint"


def test_a_refused_password_is_one_clear_error_that_never_shows_the_password(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis", password="the-right-one") as url:
        wrong = url.replace("the-right-one", PASSWORD)
        with pytest.raises(CacheUnavailableError) as raised:
            RedisStore(wrong)
    shown = url.replace(":the-right-one@", "")
    assert str(raised.value).startswith(f"the response cache at {shown} (SYNTHGRAPH_CACHE_URL)")
    assert "password" in str(raised.value)  # what Redis said: a wrong password
    assert PASSWORD not in str(raised.value) and PASSWORD not in repr(raised.value.__cause__)


def test_a_run_whose_cache_is_down_rejects_retryably_and_a_resume_finishes(
    redis_url: str, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_server.script({"content": "ok"})
    items = ["a", "b", "c"]

    def process(item: str) -> list[dict[str, Any]]:
        return [{"source_id": item, "text": invoke_text([("user", item)]).content}]

    def attempt(resume: str | None) -> Run:
        run = Run.open("cache-down", out=tmp_path / "run", resume=resume, config={})
        run_batch(run, items, process, item_id=str, output="out.jsonl", show_progress=False)
        run.finish()
        return run

    _use_cache_url(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", monkeypatch)
    first = attempt(None)
    assert first.rejected().retryable == set(items), "the cache failed, not the inputs"
    rejects = (tmp_path / "run" / "rejects.jsonl").read_text()
    assert "CacheUnavailableError: the response cache at redis://127.0.0.1:" in rejects
    assert PASSWORD not in rejects
    assert fake_server.requests == []

    _use_cache_url(redis_url, monkeypatch)  # the cache is back
    attempt(str(tmp_path / "run"))
    written = [json.loads(line)["source_id"] for line in (tmp_path / "run" / "out.jsonl").open()]
    assert sorted(written) == items
    assert len(fake_server.requests) == len(items)
