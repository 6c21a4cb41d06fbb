"""Retries, backoff, rejects: against a real ChatOpenAI client and a fake HTTP endpoint."""

from __future__ import annotations

import json

import openai
import pytest
from fakes import FakeOpenAIServer
from pydantic import BaseModel
from structlog.testing import capture_logs

from synthgraph.agents.llm import StructuredOutputError, invoke_structured, invoke_text
from synthgraph.agents.resilience import (
    RateLimiter,
    backoff_delay,
    effective_concurrency,
    retry_after_seconds,
)
from synthgraph.graphs.batch import run_batch
from synthgraph.tools.io import read_jsonl
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings


class Answer(BaseModel):
    answer: int


def test_two_429s_and_a_500_then_success(fake_server: FakeOpenAIServer) -> None:
    fake_server.script(
        {
            "status": 429,
            "body": '{"error": {"message": "slow down"}}',
            "headers": {"Retry-After": "0"},
        },
        {
            "status": 429,
            "body": '{"error": {"message": "slow down"}}',
            "headers": {"Retry-After": "0"},
        },
        {"status": 500, "body": '{"error": {"message": "boom"}}'},
        {"content": "hello"},
    )
    with capture_logs() as logs:
        reply = invoke_text([("user", "hi")], record_id="r1")
    assert reply.content == "hello"
    assert len(fake_server.requests) == 4
    retries = [entry for entry in logs if entry["event"] == "llm.retry"]
    assert [entry["status"] for entry in retries] == [429, 429, 500]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert all(entry["record_id"] == "r1" for entry in retries)
    assert any(entry["event"] == "llm.recovered" and entry["attempts"] == 4 for entry in logs)


def test_timeout_is_retried(fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGRAPH_TIMEOUT", "0.5")
    get_settings.cache_clear()
    fake_server.script({"hang": True}, {"content": "late but fine"})
    assert invoke_text([("user", "hi")]).content == "late but fine"
    assert len(fake_server.requests) == 2


def test_client_errors_are_not_retried(fake_server: FakeOpenAIServer) -> None:
    fake_server.script({"status": 400, "body": '{"error": {"message": "bad request"}}'})
    with pytest.raises(openai.BadRequestError):
        invoke_text([("user", "hi")])
    assert len(fake_server.requests) == 1


def test_retries_stop_after_the_limit(
    fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_MAX_RETRIES", "2")
    get_settings.cache_clear()
    fake_server.script({"status": 503, "body": '{"error": {"message": "down"}}'})
    with pytest.raises(openai.InternalServerError):
        invoke_text([("user", "hi")])
    assert len(fake_server.requests) == 3


def test_invalid_json_reply_is_reasked_with_the_error(fake_server: FakeOpenAIServer) -> None:
    fake_server.script(
        {"content": "forty-two"}, {"content": '{"answer": "many"}'}, {"content": '{"answer": 42}'}
    )
    assert invoke_structured(Answer, [("user", "6*7?")]).answer == 42
    assert len(fake_server.requests) == 3
    # The re-ask shows the model its own reply and what was wrong with it.
    last = fake_server.requests[-1]["messages"]
    assert last[-2]["content"] == '{"answer": "many"}'
    assert "answer" in last[-1]["content"] and "integer" in last[-1]["content"]


def test_remote_endpoints_get_json_schema_response_format(fake_server: FakeOpenAIServer) -> None:
    fake_server.script({"content": '{"answer": 1}'})
    invoke_structured(Answer, [("user", "1?")])
    response_format = fake_server.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"


def test_a_failing_record_goes_to_rejects_and_the_run_goes_on(
    fake_server: FakeOpenAIServer, tmp_path
) -> None:
    # The endpoint fails for good on "poison" and answers everything else.
    fake_server.script({"content": "fine"})
    original_next = fake_server._next

    def route(request: dict) -> dict:
        original_next(request)
        if "poison" in json.dumps(request["messages"]):
            return {"status": 500, "body": '{"error": {"message": "always broken"}}'}
        return {"content": "fine"}

    fake_server._next = route  # type: ignore[method-assign]
    run = Run.open("test", out=tmp_path / "run")
    items = ["a", "poison", "b", "c"]

    def process(text: str) -> list[dict]:
        reply = invoke_text([("user", text)], record_id=text)
        return [{"source_id": text, "reply": reply.content}]

    result = run_batch(
        run, items, process, item_id=lambda t: t, output="out.jsonl", workers=2, show_progress=False
    )
    run.finish()
    assert (result.processed, result.rejected, result.written) == (4, 1, 3)
    outputs = {r["source_id"] for r in read_jsonl(run.path("out.jsonl"))}
    assert outputs == {"a", "b", "c"}
    [reject] = list(read_jsonl(run.path("rejects.jsonl")))
    assert reject["id"] == "poison" and reject["stage"] == "process"
    assert "500" in reject["error"] and "always broken" in reject["error"]

    assert reject["retryable"] is True  # a 500 after every retry: the endpoint's fault

    # Resuming skips what is written; the retryable reject is tried again (and fails again).
    again = run_batch(
        Run.open("test", resume=str(tmp_path / "run")),
        items,
        process,
        item_id=lambda t: t,
        output="out.jsonl",
        show_progress=False,
    )
    assert (again.processed, again.skipped, again.retried, again.rejected) == (1, 3, 1, 1)
    assert {r["source_id"] for r in read_jsonl(run.path("out.jsonl"))} == {"a", "b", "c"}


def test_retry_after_header_forms() -> None:
    class Response:
        def __init__(self, value: str) -> None:
            self.headers = {"retry-after": value}

    class Error(Exception):
        def __init__(self, value: str) -> None:
            self.response = Response(value)

    assert retry_after_seconds(Error("3")) == 3.0
    assert retry_after_seconds(Error("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    settings = get_settings()
    assert backoff_delay(0, settings, Error("1000")) == settings.backoff_max
    for attempt in range(6):
        ceiling = min(settings.backoff_max, settings.backoff_base * 2**attempt)
        assert ceiling / 2 <= backoff_delay(attempt, settings) <= ceiling


def test_rate_limiter_spaces_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("synthgraph.agents.resilience.time.sleep", slept.append)
    limiter = RateLimiter(per_minute=600)  # one every 0.1 s
    for _ in range(3):
        limiter.acquire()
    assert len(slept) == 2 and all(0 < s <= 0.2 for s in slept)


def test_a_reply_cut_at_max_tokens_fails_the_record_without_reasking(
    fake_server: FakeOpenAIServer,
) -> None:
    cut = FakeOpenAIServer.completion('{"answer": 4', {})
    cut["choices"][0]["finish_reason"] = "length"
    fake_server.script({"body": json.dumps(cut)})
    with pytest.raises(StructuredOutputError, match="cut at max_tokens"):
        invoke_structured(Answer, [("user", "2+2?")])
    assert len(fake_server.requests) == 1


def test_embedded_model_gets_one_request_per_server_slot_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SYNTHGRAPH_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("SYNTHGRAPH_LOCAL_SLOTS", "6")
    get_settings.cache_clear()
    assert effective_concurrency(get_settings()) == 6
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "3")
    get_settings.cache_clear()
    assert effective_concurrency(get_settings()) == 3
