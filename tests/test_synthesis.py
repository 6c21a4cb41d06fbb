"""Persona-driven synthesis graph and `synthgraph synthesize`, with scripted fake models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import scripted_model
from jsonschema import Draft202012Validator
from personas_fake_models import PromptAwareFake
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.agents.personas import (
    ITEM_SCHEMAS,
    TASKS,
    bundled_few_shot,
    format_examples,
    load_few_shot,
)
from synthgraph.graphs.cli import app
from synthgraph.graphs.synthesis.graph import SynthesisContext, graph
from synthgraph.graphs.synthesis.job import synthesis_job
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.workspace import workspace_root

PERSONAS = [
    {
        "id": "p-nurse",
        "persona": "A night-shift nurse who prepares medication doses on a cardiology ward.",
    },
    {
        "id": "p-baker",
        "persona": "A baker who runs a small sourdough bakery and prices every loaf by hand.",
    },
]
TOOL = {
    "name": "convert_dose",
    "description": "Convert a dose between milligrams and millilitres.",
    "parameters": {
        "type": "object",
        "properties": {"mg": {"type": "number", "description": "Dose in milligrams"}},
        "required": ["mg"],
    },
}


def test_math_items_carry_persona_task_and_problem_with_answer() -> None:
    fake = PromptAwareFake()
    with use_chat_models(generator=fake):
        out = graph.invoke(
            {"personas": PERSONAS}, context=SynthesisContext(task="math", per_persona=2)
        )
    items = out["items"]
    assert len(items) == 4 and len({i["id"] for i in items}) == 4
    assert sorted(i["persona_id"] for i in items) == ["p-baker", "p-baker", "p-nurse", "p-nurse"]
    for item in items:
        assert item["task"] == "math" and item["few_shot"] is False
        assert set(item["item"]) == {"problem", "answer"}
        persona = next(p for p in PERSONAS if p["id"] == item["persona_id"])
        assert persona["persona"][:40] in item["item"]["problem"]  # written for this persona


@pytest.mark.parametrize(
    ("task", "reply"),
    [
        ("instruction", {"prompt": "Can you check this dose calculation for me?"}),
        ("knowledge", {"title": "Night shifts", "article": "Night shifts change how nurses plan their breaks and meals."}),
        ("npc", {"name": "Ada", "background": "A ward nurse for twenty years.", "personality": "calm", "goal": "Keep every patient safe.", "greeting": "Need something, dear?"}),
        ("tool", TOOL),
    ],
)  # fmt: skip
def test_every_task_gives_its_item(task: str, reply: dict[str, object]) -> None:
    with use_chat_models(generator=scripted_model(reply)):
        out = graph.invoke({"personas": PERSONAS[:1]}, context=SynthesisContext(task=task))
    [item] = out["items"]
    assert (
        item["task"] == task
        and item["item"] == ITEM_SCHEMAS[task].model_validate(reply).model_dump()
    )


def test_a_tool_spec_with_an_invalid_json_schema_is_re_asked() -> None:
    broken = {**TOOL, "parameters": {"type": "object", "properties": {"mg": {"type": "decimal"}}}}
    with use_chat_models(generator=scripted_model(broken, TOOL)):
        out = graph.invoke({"personas": PERSONAS[:1]}, context=SynthesisContext(task="tool"))
    [item] = out["items"]
    Draft202012Validator.check_schema(item["item"]["parameters"])
    assert item["item"]["parameters"]["properties"]["mg"]["type"] == "number"


def test_an_item_that_never_validates_is_a_reject_naming_its_persona() -> None:
    with use_chat_models(generator=scripted_model("no", "still no", "nope")):
        out = graph.invoke({"personas": PERSONAS[:1]}, context=SynthesisContext(task="math"))
    assert out.get("items", []) == []
    [reject] = out["rejects"]
    assert reject["persona_id"] == "p-nurse" and reject["stage"] == "synthesize.math"
    assert reject["raw"] == "nope"


def test_few_shot_examples_from_a_file_go_into_the_prompt() -> None:
    fake = PromptAwareFake()
    few_shot = "math_examples.jsonl"  # a workspace path: the graph reads files only there
    (workspace_root() / few_shot).write_text(bundled_few_shot("math").read_text())
    with use_chat_models(generator=fake):
        out = graph.invoke(
            {"personas": PERSONAS[:1]}, context=SynthesisContext(few_shot_file=few_shot)
        )
    assert out["items"][0]["few_shot"] is True
    assert "Examples of good answers" in fake.calls[0] and "130 mg per dose" in fake.calls[0]


@pytest.mark.parametrize("task", TASKS)
def test_bundled_few_shot_files_hold_valid_items(task: str) -> None:
    assert load_few_shot(bundled_few_shot(task), task)


def test_a_bad_few_shot_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "too short"}\n')
    with pytest.raises(InputError, match="example 1 is not a valid math item"):
        load_few_shot(bad, "math")


def test_synthesis_job_writes_items_once_and_resume_skips_done_personas(tmp_path: Path) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps(p) + "\n" for p in PERSONAS) + '{"id": "x"}\n')
    fake = PromptAwareFake()
    with use_chat_models(generator=fake):
        summary = synthesis_job(
            personas, tmp_path / "run", context=SynthesisContext(per_persona=2), show_progress=False
        )
        calls = len(fake.calls)
        again = synthesis_job(
            personas, tmp_path / "run", resume=str(tmp_path / "run"), show_progress=False
        )
    assert (summary.personas, summary.items, summary.rejects) == (2, 4, 1)
    assert len(fake.calls) == calls and again.items == 4
    items = list(read_jsonl(tmp_path / "run" / "items.jsonl"))
    assert len({i["id"] for i in items}) == 4
    [reject] = read_jsonl(tmp_path / "run" / "rejects.jsonl")
    assert reject["id"] == "line 3" and "persona" in reject["error"]


def test_a_resumed_synthesis_keeps_its_limit(tmp_path: Path) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps(p) + "\n" for p in PERSONAS))
    with use_chat_models(generator=PromptAwareFake()):
        first = synthesis_job(personas, tmp_path / "run", limit=1, show_progress=False)
        again = synthesis_job(personas, None, resume=str(tmp_path / "run"), show_progress=False)
    assert (first.personas, first.items, again.personas, again.items) == (1, 1, 1, 1)


def test_examples_without_a_persona_show_their_answer_only() -> None:
    example = {"problem": "A box holds 6 eggs. How many boxes do 30 eggs fill?", "answer": "5"}
    block = format_examples([example, {"persona": "A farmer.", **example}], "math")
    assert block.count("Example answer: ") == 2 and block.count("Example persona: ") == 1
    assert "Example persona: A farmer.\nExample answer: {" in block


def test_the_synthesize_command(tmp_path: Path) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text(json.dumps(PERSONAS[0]) + "\n")
    runner = CliRunner()
    bad = runner.invoke(
        app,
        ["synthesize", "--personas", str(personas), "--task", "poem", "--out", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2 and "unknown task 'poem'" in bad.output
    with use_chat_models(generator=PromptAwareFake()):
        result = runner.invoke(
            app,
            [
                "synthesize",
                "--personas",
                str(personas),
                "--task",
                "tool",
                "--out",
                str(tmp_path / "run"),
                "--few-shot",
                "bundled",
            ],
        )
    assert result.exit_code == 0, result.output
    [item] = read_jsonl(tmp_path / "run" / "items.jsonl")
    assert item["task"] == "tool" and item["few_shot"] is True
    Draft202012Validator.check_schema(item["item"]["parameters"])


class _CutReplies(PromptAwareFake):
    """Every reply runs into max_tokens (the OpenAI client then raises instead of answering)."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        from openai import LengthFinishReasonError
        from openai.types import CompletionUsage
        from openai.types.chat import ChatCompletion

        usage = CompletionUsage(completion_tokens=220, prompt_tokens=180, total_tokens=400)
        completion = ChatCompletion(
            id="x", choices=[], created=0, model="m", object="chat.completion", usage=usage
        )
        raise LengthFinishReasonError(completion=completion)


def test_a_reply_cut_at_max_tokens_is_a_reject_not_a_crash() -> None:
    with use_chat_models(generator=_CutReplies()):
        out = graph.invoke({"personas": PERSONAS}, context=SynthesisContext(task="math"))
    assert out.get("items", []) == []
    assert sorted(r["persona_id"] for r in out["rejects"]) == ["p-baker", "p-nurse"]
    assert all("max_tokens" in r["error"] for r in out["rejects"])


def test_a_math_problem_without_numbers_is_re_asked() -> None:
    essay = {
        "problem": "A nurse thinks about how to plan the ward's night shift well.",
        "answer": "Plan ahead.",
    }
    good = {
        "problem": "A nurse gives 2 doses of 130 mg a day. How many mg in 3 days?",
        "answer": "780 mg",
    }
    with use_chat_models(generator=scripted_model(essay, good)):
        out = graph.invoke({"personas": PERSONAS[:1]}, context=SynthesisContext(task="math"))
    assert out["items"][0]["item"] == good
