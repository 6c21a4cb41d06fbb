"""Issue 17, batch mode: a run's chat requests through a fake OpenAI Batch API on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

import openai
import pytest
from fake_batch_server import FakeBatchServer
from fakes import serve
from langgraph.graph import StateGraph

from synthgraph.agents.batch_api import BATCHES, collecting
from synthgraph.agents.llm import get_chat_model, invoke_text
from synthgraph.agents.resilience import is_retryable
from synthgraph.graphs.personas.graph import PersonasContext
from synthgraph.graphs.personas.job import personas_job
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Budget, Ledger, bound

CONTEXT = PersonasContext(expand_rounds=0, dedup="none")
# The kill test's first attempt, in a process of its own: what `synthgraph personas --batch` runs.
ATTEMPT = """
import sys
from pathlib import Path
from synthgraph.graphs.personas.graph import PersonasContext
from synthgraph.graphs.personas.job import personas_job
from synthgraph.tools.usage import Budget
context = PersonasContext(expand_rounds=0, dedup="none")
personas_job(Path(sys.argv[1]), Path(sys.argv[2]), context=context, budget=Budget(batch=True),
             show_progress=False)
"""


@contextmanager
def batch_api(
    monkeypatch: pytest.MonkeyPatch, *, size: int = 100, quiet: float = 0.3, **options: Any
) -> Iterator[FakeBatchServer]:
    """A fake Batch API the settings point at, polled every 0.05 s."""
    monkeypatch.setenv("SYNTHGRAPH_BATCH_SIZE", str(size))
    monkeypatch.setenv("SYNTHGRAPH_BATCH_QUIET_SECONDS", str(quiet))
    monkeypatch.setenv("SYNTHGRAPH_BATCH_POLL_SECONDS", "0.05")
    yield from serve(FakeBatchServer(**options), monkeypatch)  # type: ignore[misc]


def _texts(folder: Path, count: int) -> Path:
    folder.mkdir()
    for n in range(count):
        (folder / f"{n}.txt").write_text(f"Text number {n}: a beekeeper's notes on {n + 3} hives.")
    return folder


def _batch_run(folder: Path) -> Run:
    run = Run.open("batch-test", out=folder, config={})
    run.ledger.apply(Budget(batch=True))
    return run


def _check_personas_run(run_dir: Path, texts: int, api: FakeBatchServer) -> None:
    """Every input once, every request through a batch, and every batch collected."""
    generated = list(read_jsonl(run_dir / "generated.jsonl"))
    assert len(generated) == texts and len({r["input_id"] for r in generated}) == texts
    assert api.requests == [], "no chat request reached the endpoint directly"
    usage = json.loads((run_dir / "manifest.json").read_text())["usage"]
    assert usage["by_role"]["generator"]["calls"] == texts
    assert usage["total"]["prompt_tokens"] == texts  # the fake's usage: one token each way
    lines = list(read_jsonl(run_dir / BATCHES))
    submitted = {line["batch_id"] for line in lines if "requests" in line}
    assert submitted == set(api.batches)
    assert submitted == {line["batch_id"] for line in lines if line.get("collected")}


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# --- whole runs ------------------------------------------------------------------------
def test_a_personas_run_completes_through_batches_and_an_expired_request_goes_again_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with batch_api(monkeypatch, size=5, quiet=1.0, expire=1) as api:
        personas_job(
            _texts(tmp_path / "texts", 5), tmp_path / "run", context=CONTEXT,
            budget=Budget(batch=True), show_progress=False,
        )  # fmt: skip

    _check_personas_run(tmp_path / "run", 5, api)
    first, *later = api.created
    assert len(first) == 5, "the five inputs' requests went in one batch"
    expired = first[0]  # the fake left the first request of the first batch unanswered
    assert any([line["body"] for line in batch] == [expired["body"]] for batch in later), (
        "the expired request was submitted again, alone"
    )
    assert sum(len(batch) for batch in api.created) == 6


def test_a_run_killed_while_polling_resumes_its_batch_without_resubmitting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    texts, run_dir = _texts(tmp_path / "texts", 4), tmp_path / "run"
    with batch_api(monkeypatch, hold=True) as api:
        with (tmp_path / "attempt.log").open("wb") as log:
            attempt = subprocess.Popen(
                [sys.executable, "-c", ATTEMPT, str(texts), str(run_dir)],
                env=dict(os.environ), stdout=log, stderr=log,
            )  # fmt: skip
            try:
                _wait_for(
                    lambda: (
                        sum(map(len, api.created)) == 4
                        and all(api.polls[batch_id] for batch_id in api.batches)
                    ),
                    "every request in a batch, each batch polled",
                )
            finally:
                attempt.send_signal(signal.SIGKILL)
                attempt.wait()
        submitted = len(api.batches)
        assert (run_dir / BATCHES).exists() and not list(read_jsonl(run_dir / "generated.jsonl"))

        api.release()  # the batch ends while no process polls it
        personas_job(
            texts, None, resume=str(run_dir), budget=Budget(batch=True), show_progress=False
        )

    assert len(api.batches) == submitted, "the resumed run created no new batch"
    _check_personas_run(run_dir, 4, api)


# --- the parts -------------------------------------------------------------------------
class _State(TypedDict):
    replies: list[str]


def test_custom_ids_name_the_run_the_record_the_node_and_the_kth_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def write(state: _State) -> dict[str, Any]:
        asked = [invoke_text([("user", f"say {word}")]).content for word in ("a", "b", "a")]
        return {"replies": asked}

    graph = StateGraph(_State).add_node(write).set_entry_point("write").compile()
    with batch_api(monkeypatch) as api:
        run = _batch_run(tmp_path / "run")
        with collecting(run), bound(run.ledger, "rec-1"):
            replies = graph.invoke({"replies": []})["replies"]
    assert len(replies) == 3 and all(replies)
    ids = [line["custom_id"] for batch in api.created for line in batch]
    assert ids == [f"{run.id}:rec-1:write:{k}" for k in range(3)]
    assert api.created[0][0]["body"]["messages"] == [{"role": "user", "content": "say a"}]


def test_requests_that_arrive_together_go_in_one_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with batch_api(monkeypatch, quiet=1.0) as api:
        run = _batch_run(tmp_path / "run")

        def ask(n: int) -> str:
            with bound(run.ledger, f"r{n}"):
                return str(invoke_text([("user", f"question {n}")]).content)

        with collecting(run), ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, range(4)))
    assert len(set(replies)) == 4
    assert [len(batch) for batch in api.created] == [4]
    assert {line["custom_id"] for line in api.created[0]} == {
        f"{run.id}:r{n}:direct:0" for n in range(4)
    }
    assert api.requests == []


def test_a_failed_batch_fails_each_of_its_requests_as_retryable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYNTHGRAPH_MAX_RETRIES", "0")
    with batch_api(monkeypatch, fail=1) as api:
        run = _batch_run(tmp_path / "run")
        with collecting(run), bound(run.ledger, "rec"):
            with pytest.raises(openai.APIStatusError) as failed:
                invoke_text([("user", "hello")])
            assert failed.value.status_code == 503 and is_retryable(failed.value)
            assert "ended failed" in str(failed.value)
            assert invoke_text([("user", "hello")]).content, "the next batch answers it"
    assert [len(batch) for batch in api.created] == [1, 1]


def test_the_embedded_model_has_no_batch_api(tmp_path: Path) -> None:
    get_settings.cache_clear()
    assert get_settings().embedded
    run = _batch_run(tmp_path / "run")
    with pytest.raises(InputError, match="the embedded model has no Batch API"), collecting(run):
        pass
    with bound(Ledger(batch=True)), pytest.raises(InputError, match="no Batch API"):
        get_chat_model("generator")
