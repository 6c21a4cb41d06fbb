"""Retryable rejects, the reject-rate exit, exactly-once input ids, resume config checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer, scripted_model
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import ChatResult
from pydantic import BaseModel
from typer.testing import CliRunner

from synthgraph.agents.llm import (
    StructuredOutputError,
    invoke_structured,
    invoke_text,
    use_chat_models,
)
from synthgraph.agents.resilience import MalformedReplyError, is_retryable
from synthgraph.graphs.agentinstruct.job import InstructOptions, instruct_job
from synthgraph.graphs.batch import run_batch
from synthgraph.graphs.cli import app
from synthgraph.graphs.sampling.tool import sampling_tool
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.runs import Run, RunError
from synthgraph.tools.settings import get_settings

TEXTS = {
    "a": "Tide tables for the northern harbour, printed every spring for skippers.",
    "b": "How to repair a cracked violin top with hide glue and patience.",
    "c": "Rail signalling basics: blocks, interlocking and the humble semaphore.",
}
DOWN = {"status": 503, "body": '{"error": {"message": "service unavailable"}}'}


class Answer(BaseModel):
    answer: int


@pytest.fixture
def few_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGRAPH_MAX_RETRIES", "1")
    get_settings.cache_clear()


def _texts(folder: Path) -> Path:
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


def _persona_replies(server: FakeOpenAIServer) -> None:
    """Answer each Text-to-Persona request with a persona naming its text (domain `topic-<key>`)."""
    original = server._next

    def route(request: dict[str, Any]) -> dict[str, Any]:
        original(request)
        prompt = json.dumps(request["messages"])
        key = next(key for key, text in TEXTS.items() if text in prompt)
        persona = f"A reader who studies topic {key} closely and writes about it every week."
        reply = {"persona": persona, "role": "reader", "domain": f"topic-{key}"}
        return {"content": json.dumps(reply)}

    server._next = route  # type: ignore[method-assign]


def _rejects(run_dir: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(run_dir / "rejects.jsonl"))


def _counts(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "manifest.json").read_text())["counts"]


def test_an_outage_rejects_retryably_exits_1_and_resume_does_every_input_once(
    fake_server: FakeOpenAIServer, few_retries: None, tmp_path: Path
) -> None:
    texts, run_dir = _texts(tmp_path / "texts"), tmp_path / "run"
    args = ["personas", str(texts), "--out", str(run_dir), "--expand-rounds", "0"]
    fake_server.script(DOWN)
    down = CliRunner().invoke(app, args)
    assert down.exit_code == 1, down.output
    assert f"3 of 3 inputs rejected (3 retryable): run with --resume {run_dir}" in " ".join(
        down.output.split()
    )
    rejects = _rejects(run_dir)
    assert len(rejects) == 3 and all(r["retryable"] for r in rejects)
    assert "503" in rejects[0]["error"]
    counts = _counts(run_dir)
    assert (counts["inputs"], counts["inputs_rejected"], counts["inputs_retryable"]) == (3, 3, 3)

    fake_server.requests.clear()
    _persona_replies(fake_server)
    back = CliRunner().invoke(app, [*args, "--resume", str(run_dir)])
    assert back.exit_code == 0, back.output
    assert len(fake_server.requests) == 3
    done = Counter(r["input_id"] for r in read_jsonl(run_dir / "generated.jsonl"))
    assert len(done) == 3 and set(done.values()) == {1}
    assert len(_rejects(run_dir)) == 3, "reject lines are history: append-only"
    counts = _counts(run_dir)
    assert (counts["inputs_rejected"], counts["rejects"], counts["rejects_retryable"]) == (0, 0, 0)

    fake_server.requests.clear()
    again = CliRunner().invoke(app, [*args, "--resume", str(run_dir)])
    assert again.exit_code == 0 and fake_server.requests == []


def test_retryable_rejects_are_retried_unless_told_not_and_final_ones_never(
    tmp_path: Path,
) -> None:
    run = Run.open("test", out=tmp_path / "run")
    failures = {"down": MalformedReplyError("garbage", None, body=None), "bad": ValueError("no")}

    def failing(item: str) -> list[dict[str, Any]]:
        if item in failures:
            raise failures[item]
        return [{"source_id": item}]

    first = run_batch(run, ["ok", "down", "bad"], failing, item_id=str, output="out.jsonl", show_progress=False)  # fmt: skip
    assert (first.rejected, first.inputs_rejected, first.inputs_retryable) == (2, 2, 1)
    assert {r["id"]: r["retryable"] for r in _rejects(run.root)} == {"down": True, "bad": False}

    kept = run_batch(
        run, ["ok", "down", "bad"], failing, item_id=str, output="out.jsonl",
        retry_rejects=False, show_progress=False,
    )  # fmt: skip
    assert (kept.processed, kept.skipped) == (0, 3)

    failures.clear()  # the endpoint is back; "bad" stays rejected for good
    retried = run_batch(run, ["ok", "down", "bad"], failing, item_id=str, output="out.jsonl", show_progress=False)  # fmt: skip
    assert (retried.processed, retried.retried, retried.inputs_rejected) == (1, 1, 1)
    run.finish()
    counts = _counts(run.root)
    assert (counts["rejects"], counts["rejects_retryable"], counts["inputs_rejected"]) == (1, 0, 1)
    assert sorted(r["source_id"] for r in read_jsonl(run.path("out.jsonl"))) == ["down", "ok"]


def test_a_repeated_id_is_refused_before_any_request(
    fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source = tmp_path / "texts.jsonl"
    rows = [{"id": "a", "text": TEXTS["a"]}, {"id": "b", "text": TEXTS["b"]}, {"id": "a", "text": TEXTS["c"]}]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["personas", str(source), "--out", str(tmp_path / "run"), "--expand-rounds", "0"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    message = " ".join(refused.output.split())
    assert str(source) in message and "'a'" in message and "--dedupe-ids" in message
    assert fake_server.requests == []

    _persona_replies(fake_server)
    deduped = CliRunner().invoke(app, [*args[:2], "--out", str(tmp_path / "run2"), "--expand-rounds", "0", "--dedupe-ids"])  # fmt: skip
    assert deduped.exit_code == 0, deduped.output
    generated = list(read_jsonl(tmp_path / "run2" / "generated.jsonl"))
    assert sorted(r["input_id"] for r in generated) == ["a", "b"]
    assert {r["input_id"]: r["domain"] for r in generated}["a"] == "topic-a", "first copy kept"


def test_resume_refuses_a_record_whose_content_changed_under_its_id(tmp_path: Path) -> None:
    run = Run.open("test", out=tmp_path / "run")
    run_batch(run, ["x"], lambda item: [{"source_id": "a"}], item_id=lambda _: "a", output="o.jsonl", show_progress=False)  # fmt: skip
    resumed = Run.open("test", resume=str(tmp_path / "run"))
    with pytest.raises(InputError, match="record 'a' differs"):
        run_batch(resumed, ["y"], lambda item: [], item_id=lambda _: "a", output="o.jsonl", source="in.jsonl", show_progress=False)  # fmt: skip


def test_sampling_resume_with_another_weak_k_is_refused_naming_it(tmp_path: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p1", "question": "2+3?", "answer": "5\n#### 5"}) + "\n")
    out = tmp_path / "run"
    args = ["sampling", "run", str(problems), "--out", str(out), "--strong-k", "1", "--judge-per-model", "0"]  # fmt: skip
    with use_chat_models(weak=scripted_model("#### 5"), strong=scripted_model("#### 5")):
        first = CliRunner().invoke(app, [*args, "--weak-k", "1"])
    assert first.exit_code == 0, first.output
    changed = CliRunner().invoke(app, [*args, "--weak-k", "2", "--resume", str(out)])
    assert changed.exit_code == 2
    assert "weak_k: run 1, now 2" in " ".join(changed.output.split())
    with pytest.raises(RunError, match=r"weak_k: run 1, now 3"):
        Run.open("sampling", resume=str(out), config={**_config(out), "weak_k": 3})

    # `--resume` with no data option goes on with the run's own settings, whatever the defaults.
    problems.write_text(
        problems.read_text()
        + json.dumps({"id": "p2", "question": "1+1?", "answer": "#### 2"})
        + "\n"
    )
    plain = ["sampling", "run", str(problems), "--resume", str(out)]
    with use_chat_models(weak=scripted_model("#### 2"), strong=scripted_model("#### 2")):
        resumed = CliRunner().invoke(app, plain)
    assert resumed.exit_code == 0, resumed.output
    samples = Counter(r["problem_id"] for r in read_jsonl(out / "samples.jsonl"))
    assert samples == {"p1": 2, "p2": 2}, "weak_k 1 + strong_k 1 for the new problem too"


def _config(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())["config"]


@pytest.mark.parametrize(
    "body",
    [
        "<html>502 bad gateway</html>",
        "",
        '{"id": "x", "object": "chat.completion"}',
        '{"id": "x", "object": "chat.completion", "choices": []}',
    ],
)
def test_a_garbage_200_is_retried_like_a_5xx(fake_server: FakeOpenAIServer, body: str) -> None:
    fake_server.script({"body": body}, {"content": "hello"})
    assert invoke_text([("user", "hi")]).content == "hello"
    assert len(fake_server.requests) == 2


def test_garbage_to_the_end_raises_a_retryable_error(
    fake_server: FakeOpenAIServer, few_retries: None
) -> None:
    fake_server.script({"body": "<html>oops</html>"})
    with pytest.raises(MalformedReplyError, match="not JSON") as raised:
        invoke_structured(Answer, [("user", "2+2?")])
    assert is_retryable(raised.value) and len(fake_server.requests) == 2


def test_an_always_truncated_reply_is_rejected_with_its_raw_output(
    fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    cut = FakeOpenAIServer.completion('{"persona": "A reader who', {})
    cut["choices"][0]["finish_reason"] = "length"
    fake_server.script({"body": json.dumps(cut)})
    with pytest.raises(StructuredOutputError) as raised:
        invoke_structured(Answer, [("user", "2+2?")])
    assert raised.value.raw == '{"persona": "A reader who'

    run_dir = tmp_path / "run"
    texts = _texts(tmp_path / "texts")
    result = CliRunner().invoke(app, ["personas", str(texts), "--out", str(run_dir), "--expand-rounds", "0"])  # fmt: skip
    assert result.exit_code == 1 and "(0 retryable)" in result.output
    rejects = _rejects(run_dir)
    assert len(rejects) == 3
    assert all(r["raw"] == '{"persona": "A reader who' and not r["retryable"] for r in rejects)


def test_sampling_tool_bounds_its_sizes(isolated_settings: Path) -> None:
    isolated_settings.mkdir(parents=True, exist_ok=True)
    for name, value in (("weak_k", 1000), ("strong_k", 1000), ("limit", 10_000)):
        refused = sampling_tool().invoke(
            {"problems_file": "problems.jsonl", "out_dir": "runs/s", name: value}
        )
        assert "invalid arguments" in refused and name in refused
    outside = sampling_tool().invoke({"problems_file": "../x.jsonl", "out_dir": "runs/s"})
    assert "outside the workspace" in outside


class Down(BaseChatModel):
    """A chat model whose endpoint answers garbage to everything."""

    @property
    def _llm_type(self) -> str:
        return "down"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise MalformedReplyError("the endpoint answered 200 with garbage", None, body=None)


def test_instruct_jobs_failed_by_the_endpoint_are_retryable(
    few_retries: None, tmp_path: Path
) -> None:
    seeds = _texts(tmp_path / "seeds")
    with use_chat_models(generator=Down(), judge=Down()):
        result = instruct_job(
            seeds,
            tmp_path / "run",
            options=InstructOptions(skills=["coding"], dedup="none"),
            show_progress=False,
        )
    rejects = _rejects(result.run_dir)
    assert len(rejects) == 3, "only the jobs' own rejects: they are tried again on resume"
    assert all(r["id"].endswith("/coding") and r["retryable"] for r in rejects)
    assert (result.counts["inputs_rejected"], result.counts["inputs_retryable"]) == (3, 3)


def test_inputs_that_cannot_be_read_count_toward_the_reject_rate(tmp_path: Path) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text(
        "".join(json.dumps({"id": f"p{i}", "name": "no persona"}) + "\n" for i in range(3))
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["synthesize", "--personas", str(personas), "--task", "math", "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "3 of 3 inputs rejected (0 retryable)" in " ".join(result.output.split())
    assert (_counts(out)["inputs"], _counts(out)["inputs_rejected"]) == (3, 3)


def test_an_endpoint_still_failing_after_retries_is_one_line_not_a_traceback(
    fake_server: FakeOpenAIServer, few_retries: None
) -> None:
    fake_server.script({"status": 500, "body": '{"error": "boom"}'})
    result = CliRunner().invoke(app, ["ask", "a job"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: the endpoint failed")


def test_a_run_folder_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = Run.open("personas", out=tmp_path / "run", config={})
    run.finish()
    holder = subprocess.Popen(
        [sys.executable, "-c", "from synthgraph.tools.runs import Run; import sys, time; "
         f"Run.open('personas', resume={str(tmp_path / 'run')!r}); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match="in use by another process"):
            Run.open("personas", resume=str(tmp_path / "run"))
        texts = _texts(tmp_path / "texts")
        busy = CliRunner().invoke(app, ["personas", str(texts), "--resume", str(tmp_path / "run")])
        assert busy.exit_code == 2 and "in use by another process" in busy.output
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops a killed holder's lock: the run can be taken again at once.
    Run.open("personas", resume=str(tmp_path / "run")).finish()
