"""The async executor: one event loop runs a job's inputs as tasks, with the thread
executor's bookkeeping, retries, caps and cache behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from personas_fake_models import PromptAwareFake
from pydantic import BaseModel
from test_personas_resume import TOPICS, _cli, _lines

from synthgraph.agents.llm import ainvoke_structured, ainvoke_text, use_chat_models
from synthgraph.graphs.batch import executor_for, run_batch
from synthgraph.graphs.personas.graph import PersonasContext
from synthgraph.graphs.personas.job import personas_job
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget, Ledger, bound

PERSONA = {
    "persona": "A harbour master who reads tide tables before every shift.",
    "role": "harbour master",
    "domain": "shipping",
}


class Draft(BaseModel):
    persona: str
    role: str
    domain: str


def _texts(folder: Path, count: int = 8) -> Path:
    folder.mkdir()
    for number, topic in enumerate(TOPICS[:count]):
        (folder / f"{number:02d}.txt").write_text(f"A short note number {number} about {topic}.")
    return folder


def _records(path: Path) -> list[dict[str, Any]]:
    return sorted(read_jsonl(path), key=lambda r: r["id"]) if path.exists() else []


@pytest.fixture
def cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("SYNTHGRAPH_MAX_CONCURRENCY", "3")
    get_settings.cache_clear()
    return 3


def test_the_async_run_makes_what_the_thread_run_makes(tmp_path: Path) -> None:
    texts = _texts(tmp_path / "texts")
    # One text's prompts never validate: its input is rejected, the same way on both executors.
    fake = PromptAwareFake(bad=("number 3 ",))
    runs = {}
    with use_chat_models(generator=fake):
        for executor in ("thread", "async"):
            context = PersonasContext(
                expand_rounds=1, relations=["colleague"], dedup="none", namespace=executor
            )
            summary = personas_job(
                texts, tmp_path / executor, context=context, show_progress=False,
                budget=Budget(executor=executor),  # type: ignore[arg-type]
            )  # fmt: skip
            runs[executor] = Path(summary.run_dir)
    thread, on_loop = runs["thread"], runs["async"]
    assert _records(on_loop / "generated.jsonl") == _records(thread / "generated.jsonl")
    assert len(_records(on_loop / "generated.jsonl")) == 7 * 2
    assert [(r["id"], r["retryable"]) for r in _records(on_loop / "rejects.jsonl")] == [
        (r["id"], r["retryable"]) for r in _records(thread / "rejects.jsonl")
    ]
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (thread, on_loop)]
    assert manifests[0]["counts"] == manifests[1]["counts"]
    assert manifests[1]["counts"]["inputs_rejected"] == 1
    # Every call is in the ledger under the node that made it, on the loop as in threads.
    assert manifests[0]["usage"]["rows"] == manifests[1]["usage"]["rows"]
    assert {row["stage"] for row in manifests[1]["usage"]["rows"]} == {
        "text_to_persona", "persona_to_persona",
    }  # fmt: skip


def test_each_job_gets_the_executor_it_supports(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert executor_for(Ledger(executor="ray"), settings, has_async=True, has_remote=True) == "ray"
    assert executor_for(Ledger(executor="ray"), settings, has_async=True) == "async"
    with pytest.raises(InputError, match="unknown executor"):
        executor_for(Ledger(executor="dask"), settings, has_async=True)  # type: ignore[arg-type]
    assert executor_for(Ledger(executor="async"), settings, has_async=True) == "async"
    assert executor_for(Ledger(executor="async"), settings, has_async=False) == "thread"
    assert executor_for(Ledger(executor="async", batch=True), settings, has_async=True) == "thread"
    monkeypatch.setenv("SYNTHGRAPH_EXECUTOR", "thread")
    get_settings.cache_clear()
    assert executor_for(Ledger(), get_settings(), has_async=True) == "thread"


def test_async_requests_retry_429_5xx_garbage_and_invalid_json(
    fake_server: FakeOpenAIServer,
) -> None:
    fake_server.script(
        {"status": 429, "body": '{"error": {"message": "slow down"}}', "headers": {"retry-after": "0"}},
        {"status": 502, "body": '{"error": {"message": "bad gateway"}}'},
        {"body": "<html>a proxy page</html>"},  # a 200 that is not a completion
        {"content": "not json at all"},  # a reply that does not validate: re-asked
        {"content": json.dumps(PERSONA)},
    )  # fmt: skip
    draft = asyncio.run(ainvoke_structured(Draft, [("user", "who reads tide tables?")]))
    assert draft.role == "harbour master"
    assert len(fake_server.requests) == 5
    reask = fake_server.requests[-1]["messages"]
    assert reask[-2]["content"] == "not json at all", "the bad reply is shown back to the model"


def test_async_failures_become_rejects_and_the_run_goes_on(tmp_path: Path) -> None:
    run = Run.open("test", out=tmp_path / "run")

    async def aprocess(item: str) -> list[dict[str, Any]]:
        if item == "bad":
            raise ValueError("no")
        await asyncio.sleep(0)
        return [{"source_id": item}]

    result = run_batch(
        run, ["a", "bad", "b"], lambda item: [], aprocess=aprocess, item_id=str,
        output="out.jsonl", show_progress=False,
    )  # fmt: skip
    assert (result.processed, result.rejected, result.written) == (3, 1, 2)
    assert sorted(r["source_id"] for r in read_jsonl(run.path("out.jsonl"))) == ["a", "b"]
    assert [(r["id"], r["retryable"]) for r in read_jsonl(run.path("rejects.jsonl"))] == [
        ("bad", False)
    ]


def test_a_caller_on_an_event_loop_can_run_a_batch(tmp_path: Path) -> None:
    run = Run.open("test", out=tmp_path / "run")

    async def aprocess(item: str) -> list[dict[str, Any]]:
        return [{"source_id": item}]

    async def caller() -> int:  # e.g. a tool called from an async agent's own loop
        batch = run_batch(run, ["a", "b"], lambda item: [], aprocess=aprocess, item_id=str, output="o.jsonl", show_progress=False)  # fmt: skip
        return batch.written

    assert asyncio.run(caller()) == 2


class _InFlight(BaseChatModel):
    """An async chat model that counts the requests it is answering at once."""

    now: int = 0
    most: int = 0

    @property
    def _llm_type(self) -> str:
        return "in-flight-fake"

    def _generate(self, messages: list[BaseMessage], *_: Any, **__: Any) -> ChatResult:
        raise AssertionError("the async path never calls the sync model")

    async def _agenerate(self, messages: list[BaseMessage], *_: Any, **__: Any) -> ChatResult:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])


def test_no_more_than_the_cap_of_requests_and_inputs_in_flight(tmp_path: Path, cap: int) -> None:
    model = _InFlight()

    async def many() -> None:
        await asyncio.gather(*(ainvoke_text([("user", f"q{n}")], model=model) for n in range(12)))

    asyncio.run(many())
    assert model.most == cap

    running, most = 0, 0

    async def aprocess(item: str) -> list[dict[str, Any]]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return [{"source_id": item}]

    run = Run.open("test", out=tmp_path / "run")
    items = [f"i{n}" for n in range(10)]
    run_batch(run, items, lambda item: [], aprocess=aprocess, item_id=str, output="o.jsonl", show_progress=False)  # fmt: skip
    assert most == cap


def test_identical_async_requests_of_one_input_are_samples_0_and_1(
    fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_CACHE", "true")
    get_settings.cache_clear()
    fake_server.script(
        {"status": 500, "body": '{"error": {"message": "oops"}}'},  # a retry keeps its index
        {"content": "one", "delay": 0.05},
        {"content": "two", "delay": 0.05},
    )

    async def twice() -> list[str]:
        with bound(Ledger(), "input-1"):
            replies = await asyncio.gather(
                *(ainvoke_text([("user", "same question")], temperature=1.0) for _ in range(2))
            )
        return [str(reply.content) for reply in replies]

    first = asyncio.run(twice())
    assert sorted(first) == ["one", "two"] and len(fake_server.requests) == 3
    again = asyncio.run(twice())  # a rerun: both samples from the cache, none asked
    assert sorted(again) == ["one", "two"] and len(fake_server.requests) == 3


def test_kill_9_and_resume_on_the_async_executor_gives_every_input_once(
    tmp_path: Path, isolated_settings: Path
) -> None:
    texts = _texts(tmp_path / "texts", count=12)
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "SYNTHGRAPH_DATA_DIR": str(isolated_settings),
        "SYNTHGRAPH_MAX_CONCURRENCY": "2",
    }
    args = [str(texts), "--out", str(run_dir), "--relations", "colleague", "--executor", "async"]
    first = _cli(0.2, *args, env=env)
    generated = run_dir / "generated.jsonl"
    deadline = time.monotonic() + 120
    while _lines(generated) < 6 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = generated.read_bytes().splitlines()

    resumed = _cli(0.0, *args, "--resume", str(run_dir), env=env)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    assert generated.read_bytes().splitlines()[: len(before)] == before
    per_input = Counter(r["input_id"] for r in read_jsonl(generated))
    assert len(per_input) == 12 and set(per_input.values()) == {2}
