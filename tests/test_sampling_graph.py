"""The sampling graph and its run: verification, judging, rejects, resume, CLI and tool."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import scripted_model
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.cli import app
from synthgraph.graphs.sampling.graph import SamplingContext, graph
from synthgraph.graphs.sampling.job import sampling_job
from synthgraph.graphs.sampling.tool import sampling_tool
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.sampling_metrics import false_positive_rate

PROBLEM = {
    "id": "p1",
    "question": "Tom has 2 apples and buys 3 more. How many now?",
    "answer": "2+3=5\n#### 5",
}


def verdict(ok: bool) -> dict[str, object]:
    return {"rationale": "every step holds" if ok else "2*3 is not 5", "reasoning_correct": ok}


def write_problems(
    path: Path, rows: list[dict[str, str]], extra_lines: tuple[str, ...] = ()
) -> Path:
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines)
    )
    return path


def test_graph_samples_verifies_and_judges() -> None:
    weak = scripted_model(
        "2+3 = 5\n#### 5", "2*3 = 6\n#### 6", "Two and three make five.\n#### 5.0"
    )
    strong = scripted_model("2 + 3 = 5\n#### 5")
    # Judged in order: the strong model's kept solution, then the weak model's first kept one.
    judge = scripted_model(verdict(True), verdict(False))
    with use_chat_models(weak=weak, strong=strong, judge=judge):
        samples = graph.invoke(
            {"problem": PROBLEM}, context=SamplingContext(weak_k=3, strong_k=1, judge_per_model=1)
        )["samples"]
    by_id = {s["id"]: s for s in samples}
    assert sorted(by_id) == ["p1:strong:0", "p1:weak:0", "p1:weak:1", "p1:weak:2"]
    assert [by_id[f"p1:weak:{i}"]["correct"] for i in range(3)] == [True, False, True]
    assert by_id["p1:weak:1"]["answer"] == "6" and by_id["p1:weak:1"]["gold"] == "5"
    assert by_id["p1:strong:0"]["judge"] == verdict(True)
    assert by_id["p1:weak:0"]["judge"] == verdict(
        False
    )  # right answer, wrong reasoning: stored with why
    assert by_id["p1:weak:2"]["judge"] is None  # one judged per model and problem
    assert by_id["p1:weak:1"]["judge"] is None  # wrong answers are never judged


def replies(text: str, count: int) -> list[str]:
    return [text] * count


def test_run_rejects_bad_records_and_goes_on(tmp_path: Path) -> None:
    problems = write_problems(
        tmp_path / "problems.jsonl",
        [PROBLEM, {"id": "bad-gold", "question": "How many?", "answer": "#### several"},
         {"id": "p2", "question": "What is 10 - 4?", "answer": "#### 6"}],
        extra_lines=("{not json",),
    )  # fmt: skip
    weak = scripted_model("#### 5", "#### 6")
    strong = scripted_model("#### 5", AIMessage(content=""))  # p2's strong sample: no answer
    with use_chat_models(weak=weak, strong=strong):
        result = sampling_job(
            problems,
            tmp_path / "run",
            SamplingContext(weak_k=1, strong_k=1, judge_per_model=0),
            workers=1,
            show_progress=False,
        )
    report = result.report
    assert (result.processed, result.rejected, report["problems"]) == (2, 0, 2)
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "rejects.jsonl")}
    assert "no number in the gold answer 'several'" in rejects["bad-gold"]["error"]
    assert "not valid JSON" in rejects["line 4"]["error"]
    samples = {s["id"]: s for s in read_jsonl(tmp_path / "run" / "samples.jsonl")}
    assert samples["p2:strong:0"]["correct"] is False and samples["p2:strong:0"]["answer"] is None
    assert report["sft_records"] == 3


def interrupted_after(replies_before: list[str]) -> Iterator[AIMessage]:
    for text in replies_before:
        yield AIMessage(content=text)
    raise KeyboardInterrupt  # the user presses Ctrl-C mid-run


def test_resume_after_interruption(tmp_path: Path) -> None:
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}
        for i in range(1, 4)
    ]
    problems = write_problems(tmp_path / "problems.jsonl", rows)
    context = SamplingContext(weak_k=2, strong_k=1, judge_per_model=0)
    out = tmp_path / "run"

    # First attempt: q1 completes, then the weak model is interrupted during q2.
    weak = GenericFakeChatModel(messages=interrupted_after(["#### 2", "#### 2", "#### 4"]))
    strong = scripted_model("#### 2", "#### 4", "#### 6")
    with use_chat_models(weak=weak, strong=strong), pytest.raises(KeyboardInterrupt):
        sampling_job(problems, out, context, workers=1, show_progress=False)
    assert {s["problem_id"] for s in read_jsonl(out / "samples.jsonl")} == {"q1"}

    # Resume: only q2 and q3 are sampled (4 weak replies, 2 strong), nothing twice.
    weak = scripted_model("#### 4", "#### 5", "#### 6", "#### 6")
    strong = scripted_model("#### 4", "#### 6")
    with use_chat_models(weak=weak, strong=strong):
        result = sampling_job(
            problems, out, context, resume=str(out), workers=1, show_progress=False
        )
    report = result.report
    assert (result.skipped, result.processed) == (1, 2)
    ids = [s["id"] for s in read_jsonl(out / "samples.jsonl")]
    assert len(ids) == len(set(ids)) == 9
    weak_rows = [r for r in report["by_k"] if r["role"] == "weak"]
    assert [r["coverage"] for r in weak_rows] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert weak_rows[0]["diversity"] == pytest.approx(1.0)
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    # A later call limited to fewer problems than are done still reports and exports every one.
    limited = sampling_job(
        problems, out, context, resume=str(out), limit=1, show_progress=False
    ).report
    assert limited["problems"] == 3 and limited["sft_records"] == report["sft_records"]


def test_cli_plan_run_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    planned = runner.invoke(
        app,
        [
            "sampling",
            "plan",
            "--budget",
            "1.2e14",
            "--problems",
            "100",
            "--tokens-per-solution",
            "200",
            "--json",
        ],
    )
    assert planned.exit_code == 0, planned.output
    assert [m["samples_per_problem"] for m in json.loads(planned.stdout)["models"]] == [6, 2]

    problems = write_problems(tmp_path / "problems.jsonl", [PROBLEM])
    out = tmp_path / "run"
    # A budget for 1 problem at 100 tokens that buys 3 weak and 1 strong samples.
    with use_chat_models(weak=scripted_model(*replies("#### 5", 3)), strong=scripted_model("#### 5"),
                         judge=scripted_model(verdict(True), verdict(True))):  # fmt: skip
        ran = runner.invoke(
            app,
            [
                "sampling",
                "run",
                str(problems),
                "--out",
                str(out),
                "--budget",
                "3e11",
                "--tokens-per-solution",
                "100",
            ],
        )
    assert ran.exit_code == 0, ran.output
    assert "coverage@k" in ran.stdout
    assert len(list(read_jsonl(out / "samples.jsonl"))) == 4

    again = runner.invoke(app, ["sampling", "run", str(problems), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output

    reported = runner.invoke(app, ["sampling", "report", str(out), "--json"])
    assert reported.exit_code == 0, reported.output
    assert json.loads(reported.stdout)["false_positives"][1]["judged"] == 1

    missing = runner.invoke(app, ["sampling", "report", str(tmp_path)])
    assert missing.exit_code == 2 and "is this a sampling run folder" in " ".join(
        missing.output.split()
    )


def test_langchain_tool_runs_inside_the_workspace(isolated_settings: Path) -> None:
    isolated_settings.mkdir(parents=True, exist_ok=True)
    write_problems(isolated_settings / "problems.jsonl", [PROBLEM])
    with use_chat_models(weak=scripted_model("#### 5", "#### 4"), strong=scripted_model("#### 5")):
        result = sampling_tool().invoke(
            {
                "problems_file": "problems.jsonl",
                "out_dir": "runs/s1",
                "weak_k": 2,
                "strong_k": 1,
                "judge_per_model": 0,
            }
        )
    assert result["processed"] == 1 and result["sft_records"] == 2
    assert result["sft_files"] == ["sft.jsonl", "sft_strong.jsonl", "sft_weak.jsonl"]
    assert result["out_dir"] == "runs/s1"  # workspace-relative, never an absolute path
    refused = sampling_tool().invoke({"problems_file": "/etc/passwd", "out_dir": "runs/s2"})
    assert "outside the workspace" in refused


def test_cli_resumes_a_run_by_its_id(tmp_path: Path) -> None:
    second = {"id": "p2", "question": "What is 10 - 4?", "answer": "#### 6"}
    problems = write_problems(tmp_path / "problems.jsonl", [PROBLEM, second])
    args = ["sampling", "run", str(problems), "--weak-k", "1", "--strong-k", "1"]
    with use_chat_models(weak=scripted_model("#### 5"), strong=scripted_model("#### 5")):
        first = CliRunner().invoke(app, [*args, "--judge-per-model", "0", "--limit", "1"])
    assert first.exit_code == 0, first.output
    (run_dir,) = (tmp_path / "data" / "runs").iterdir()  # no --out: a new folder under runs/
    with use_chat_models(weak=scripted_model("#### 6"), strong=scripted_model("#### 6")):
        resumed = CliRunner().invoke(
            app, ["sampling", "run", str(problems), "--resume", run_dir.name]
        )
    assert resumed.exit_code == 0, resumed.output
    samples = Counter(s["problem_id"] for s in read_jsonl(run_dir / "samples.jsonl"))
    assert samples == {"p1": 2, "p2": 2}, "p2 with the run's own k, not the defaults"
    unknown = CliRunner().invoke(app, ["sampling", "run", str(problems), "--resume", "nope"])
    assert unknown.exit_code == 2 and "cannot resume 'nope'" in unknown.output


def test_bad_input_leaves_no_run_folder(tmp_path: Path) -> None:
    problems = write_problems(tmp_path / "problems.jsonl", [PROBLEM, PROBLEM])
    with pytest.raises(InputError, match="used by more than one record"):
        sampling_job(problems, tmp_path / "run", SamplingContext(), show_progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_embedded_model_solves_and_is_verified(tmp_path: Path) -> None:
    """Two real calls on the embedded model (it serves both roles here), no judge."""
    problems = write_problems(tmp_path / "problems.jsonl", [PROBLEM])
    context = SamplingContext(weak_k=1, strong_k=1, judge_per_model=0, max_tokens=96)
    result = sampling_job(problems, tmp_path / "run", context, show_progress=False)
    report = result.report
    assert (result.processed, result.rejected) == (1, 0)
    samples = list(read_jsonl(tmp_path / "run" / "samples.jsonl"))
    assert len(samples) == 2 and all(s["text"] and s["completion_tokens"] for s in samples)
    assert all(s["gold"] == "5" for s in samples)
    assert report["sft_records"] == sum(s["correct"] for s in samples)


def test_role_strong_routes_to_the_strong_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With SYNTHGRAPH_STRONG_LOCAL_MODEL on, role strong gets the 1.5B GGUF's server; others do not."""
    from synthgraph.agents import llm
    from synthgraph.agents.local_model import STRONG_MODEL, Endpoint
    from synthgraph.tools.settings import get_settings

    served: list[Path | None] = []

    def fake_endpoint(model_path: Path | None = None, settings: object = None) -> Endpoint:
        served.append(model_path)
        return Endpoint("http://127.0.0.1:9/v1", "m", model_path or tmp_path / "embedded.gguf")

    monkeypatch.setattr(llm, "local_endpoint", fake_endpoint)
    monkeypatch.setattr(llm, "assemble", lambda model, cache_dir: tmp_path / model.file_name)
    monkeypatch.setenv("SYNTHGRAPH_STRONG_LOCAL_MODEL", "true")
    get_settings.cache_clear()
    strong = llm.get_chat_model("strong", max_tokens=64)
    llm.get_chat_model("weak")
    assert served == [tmp_path / STRONG_MODEL.file_name, None]
    assert strong.extra_body == {"max_tokens": 64}  # type: ignore[attr-defined]


def test_a_judge_without_verdict_keeps_the_samples() -> None:
    # Every re-ask fails, twice.
    judge = scripted_model(*(["not json", "still not json", "nope"] * 2))
    with use_chat_models(
        weak=scripted_model("#### 5"), strong=scripted_model("#### 5"), judge=judge
    ):
        samples = graph.invoke(
            {"problem": PROBLEM}, context=SamplingContext(weak_k=1, strong_k=1, judge_per_model=1)
        )["samples"]
    strong, weak = samples  # sorted by role
    assert strong["correct"] and strong["judge"]["reasoning_correct"] is None
    assert "no valid reply" in strong["judge"]["error"] and strong["judge"]["raw"] == "nope"
    assert weak["correct"] and weak["judge"]["reasoning_correct"] is None
    assert false_positive_rate(samples) == (0, 0, None)  # no verdict is not a verdict
