"""AgentInstruct: skills as data, the three flows, the record and dedup, with fake chat models.

The graph runs its branches in parallel, so the fake models answer by what the
prompt asks (not by call order): `PromptRules` maps a phrase of the prompt to
a reply.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import scripted_model
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from synthgraph.agents.agentinstruct import (
    SkillError,
    UnusableReplyError,
    list_skills,
    load_skill,
    sample_instruction_types,
    sample_transformations,
    suggest_refinements,
    transform_seed,
)
from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.agentinstruct.graph import AgentInstructContext, excerpt, graph
from synthgraph.prompts import load_prompt
from synthgraph.tools.io import content_id

SEED = {
    "id": "s1",
    "text": "Cats sleep up to sixteen hours a day. They hunt at dawn and dusk.",
    "source": "cats.txt",
}
GOOD = {"reasons": "The answer matches the text.", "correct": True, "score": 5}
BAD = {"reasons": "The answer contradicts the text.", "correct": False, "score": 1}


class PromptRules(BaseChatModel):
    """A chat model whose reply is chosen by a function of the prompt text; it records every prompt."""

    reply_for: Callable[[str], str | dict[str, Any]]
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "prompt-rules"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        prompt = "\n".join(str(m.content) for m in messages)
        with _lock:
            self.prompts.append(prompt)
        reply = self.reply_for(prompt)
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


_lock = threading.Lock()


def quoted(prompt: str) -> str:
    """The text between the prompt's first pair of triple quotes (the seed, or the transformed text)."""
    return prompt.split('"""', 2)[1].strip() if prompt.count('"""') >= 2 else ""


def generator_reply(prompt: str) -> str:
    """Plausible replies per agent, each echoing its input so different inputs give different outputs."""
    if "Give 1 or 2 concrete suggestions" in prompt:
        return "- Require combining the sleep and hunting facts."
    if "Rewrite the task following the suggestions" in prompt:
        current = prompt.split("Current task: ", 1)[1].split("\n", 1)[0]
        return f"Task: Using both facts, when are cats awake and hunting? (was: {current})"
    if "Write one task of this type" in prompt:
        kind = prompt.split("Task type: ", 1)[1].split(" —", 1)[0]
        return f"Instruction: Question about {kind}: what does this say: {quoted(prompt)[:60]}?"
    if "Task:" in prompt and '{"calls"' in prompt:
        return '{"calls": [{"name": "get_cat", "arguments": {}}]}'
    if "Task:" in prompt:
        return "Cats hunt at dawn and dusk."
    if "Reply with JSON only" in prompt:
        return '```json\n[{"name": "get_cat", "description": "A cat", "parameters": {"type": "object", "properties": {}}}]\n```'
    return f"Rewritten: {quoted(prompt)}"


def models(
    judge: Callable[[str], dict[str, Any]] | None = None,
    generator: Callable[[str], str] | None = None,
):
    return PromptRules(reply_for=generator or generator_reply), PromptRules(
        reply_for=judge or (lambda _: GOOD)
    )


def run_graph(
    seeds: list[dict[str, Any]] | None = None,
    skills: list[str] | None = None,
    judge: Callable[[str], dict[str, Any]] | None = None,
    generator: Callable[[str], str] | None = None,
    **context: Any,
) -> tuple[dict[str, Any], PromptRules, PromptRules]:
    fake_generator, fake_judge = models(judge, generator)
    context.setdefault("dedup", "minhash")
    with use_chat_models(generator=fake_generator, judge=fake_judge):
        result = graph.invoke(
            {"seeds": seeds or [SEED], "skills": skills or ["reading_comprehension"]},
            context=AgentInstructContext(**context),
        )
    return result, fake_generator, fake_judge


# --- skills as data -------------------------------------------------------------------
def test_the_five_skills_ship_with_transformations_taxonomy_and_suggestions() -> None:
    assert {
        "reading_comprehension",
        "text_modification",
        "coding",
        "tool_use",
        "open_domain_qa",
    } <= set(list_skills())
    reading = load_skill("reading_comprehension")
    assert set(reading.transformations) == {
        "argument_passage", "debate", "conversation", "meeting_transcript", "poem",
        "satirical_passage", "instructional_passage", "long_text", "key_points_passage",
    }  # fmt: skip
    assert len(reading.taxonomy) >= 20 and len(load_skill("text_modification").taxonomy) >= 18
    for name in list_skills():
        skill = load_skill(name)
        assert skill.transformations and skill.taxonomy and skill.refinement_suggestions
    assert load_skill("tool_use").transformed_format == "json"


def test_unknown_skill_is_a_clear_error() -> None:
    with pytest.raises(SkillError, match="unknown skill 'juggling'"):
        load_skill("juggling")
    with (
        pytest.raises(SkillError, match="juggling"),
        use_chat_models(generator=models()[0], judge=models()[1]),
    ):
        graph.invoke({"seeds": [SEED], "skills": ["juggling"]})


@pytest.fixture
def new_skill() -> Iterator[str]:
    """A skill added by files only, removed again after the test."""
    import synthgraph.prompts as prompts_package

    name = f"zz_limericks_{threading.get_ident()}"
    folder = Path(prompts_package.__file__).parent / "skills" / name
    (folder / "transformations").mkdir(parents=True)
    (folder / "skill.json").write_text(
        json.dumps(
            {
                "description": "Limerick writing.",
                "refinement_suggestions": ["Add a rhyme constraint."],
            }
        )
    )
    (folder / "taxonomy.json").write_text(
        json.dumps({"write_limerick": "Ask for a limerick about the text."})
    )
    (folder / "transformations" / "fable.md").write_text("Retell as a fable:\n{{ seed }}\n")
    (folder / "record.md").write_text(
        "[system]\nYou write limericks.\n\n[user]\n{{ instruction }}\n"
    )
    load_skill.cache_clear()
    load_prompt.cache_clear()
    try:
        yield name
    finally:
        shutil.rmtree(folder)
        load_skill.cache_clear()
        load_prompt.cache_clear()


def test_a_skill_added_as_files_runs_through_the_graph(new_skill: str) -> None:
    assert new_skill in list_skills()
    result, generator, _ = run_graph(skills=[new_skill], refine_rounds=0)
    [record] = result["instructions"]
    assert record["skill"] == new_skill and record["transformation"] == "fable"
    assert record["instruction_type"] == "write_limerick"
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert any(p.startswith("Retell as a fable:\nCats sleep") for p in generator.prompts)


# --- content transformation: routing -------------------------------------------------------
def test_routing_all_applies_every_transformation_of_the_skill() -> None:
    result, _, _ = run_graph(routing="all", instructions_per_seed=9, refine_rounds=0, dedup="none")
    assert {r["transformation"] for r in result["instructions"]} == set(
        load_skill("reading_comprehension").transformations
    )


def test_routing_sample_takes_k_distinct_transformations_reproducibly() -> None:
    skill = load_skill("reading_comprehension")
    first = sample_transformations(skill, 3, random.Random("a"))
    assert len(set(first)) == 3 and first == sample_transformations(skill, 3, random.Random("a"))
    result, _, _ = run_graph(
        routing="sample", transformations_per_seed=2, instructions_per_seed=2, refine_rounds=0
    )
    assert len({r["transformation"] for r in result["instructions"]}) == 2


def test_routing_llm_uses_the_models_choice() -> None:
    def generator(prompt: str) -> str:
        if "Pick the 2 best-fitting transformations" in prompt:
            return json.dumps({"transformations": ["poem", "debate"]})
        return generator_reply(prompt)

    result, _, _ = run_graph(
        generator=generator,
        routing="llm",
        transformations_per_seed=2,
        instructions_per_seed=2,
        refine_rounds=0,
    )
    assert {r["transformation"] for r in result["instructions"]} == {"poem", "debate"}


def test_routing_llm_that_never_names_a_real_transformation_is_rejected_not_fatal() -> None:
    def generator(prompt: str) -> str:
        if "best-fitting transformations" in prompt:
            name = "interpretive dance" if "reading_comprehension" in prompt else "code_snippet"
            return json.dumps({"transformations": [name]})
        return generator_reply(prompt)

    result, _, _ = run_graph(
        generator=generator,
        routing="llm",
        skills=["reading_comprehension", "coding"],
        refine_rounds=0,
    )
    assert [r["skill"] for r in result["instructions"]] == ["coding"]
    [rejected] = [r for r in result["rejects"] if r["stage"] == "route"]
    assert (
        rejected["id"] == "s1/reading_comprehension"
        and "StructuredOutputError" in rejected["error"]
    )


def test_tool_use_needs_json_function_specs() -> None:
    result, _, _ = run_graph(
        skills=["tool_use"], refine_rounds=0, generator=lambda p: "Sorry, no JSON today."
    )
    assert result["instructions"] == []
    [rejected] = result["rejects"]
    assert rejected["stage"] == "transform" and "not valid JSON" in rejected["error"]
    assert rejected["raw"] == "Sorry, no JSON today."


def test_json_cut_at_max_tokens_is_named_as_such() -> None:
    cut = AIMessage(
        content='```json\n[{"name": "apt_get", "description": "Install',
        response_metadata={"finish_reason": "length"},
    )
    with (
        use_chat_models(generator=scripted_model(cut)),
        pytest.raises(UnusableReplyError, match="cut at max_tokens"),
    ):
        transform_seed(load_skill("tool_use"), "function_specs", "apt installs packages.")


# --- seed instruction generation -------------------------------------------------------------
def test_taxonomy_sampling_is_distinct_until_the_taxonomy_runs_out() -> None:
    skill = load_skill("tool_use")  # six types
    four = sample_instruction_types(skill, 4, random.Random(1))
    assert len(set(four)) == 4
    nine = sample_instruction_types(skill, 9, random.Random(1))
    assert len(nine) == 9 and set(nine) == set(skill.taxonomy)


def test_instructions_per_seed_are_spread_over_the_transformed_texts() -> None:
    result, _, _ = run_graph(
        routing="sample",
        transformations_per_seed=2,
        instructions_per_seed=5,
        refine_rounds=0,
        dedup="none",
    )
    per_transformation: dict[str, int] = {}
    for record in result["instructions"]:
        per_transformation[record["transformation"]] = (
            per_transformation.get(record["transformation"], 0) + 1
        )
    assert sorted(per_transformation.values()) == [2, 3]


def test_judge_rejection_sends_the_pair_to_rejects_with_reasons() -> None:
    result, _, judge = run_graph(judge=lambda _: BAD, refine_rounds=2)
    assert result["instructions"] == []
    [rejected] = result["rejects"]
    assert rejected["stage"] == "judge"
    assert (
        "correct=False, score=1" in rejected["error"]
        and "contradicts the text" in rejected["error"]
    )
    assert "Cats hunt at dawn and dusk." in rejected["raw"]
    assert len(judge.prompts) == 1  # no refinement of a rejected pair


def test_low_score_is_rejected_even_when_marked_correct() -> None:
    result, _, _ = run_graph(judge=lambda _: {**GOOD, "score": 2}, min_score=3, refine_rounds=0)
    assert result["instructions"] == [] and result["rejects"][0]["stage"] == "judge"


# --- refinement -------------------------------------------------------------------------------
def test_refinement_runs_n_rounds_and_keeps_every_version() -> None:
    result, generator, judge = run_graph(refine_rounds=2)
    [record] = result["instructions"]
    assert record["refinement_rounds"] == 2
    assert [v["round"] for v in record["versions"]] == [0, 1, 2]
    assert all(v["accepted"] for v in record["versions"])
    assert record["versions"][1]["suggestions"].startswith("- Require combining")
    assert record["instruction"].startswith("Using both facts, when are")  # label stripped
    assert len(judge.prompts) == 3
    assert sum("Give 1 or 2 concrete suggestions" in p for p in generator.prompts) == 2


def test_refinement_stops_when_the_judge_rejects_an_edit_and_keeps_the_last_good_version() -> None:
    def judge(prompt: str) -> dict[str, Any]:
        return BAD if "awake and hunting" in prompt else GOOD

    result, generator, _ = run_graph(judge=judge, refine_rounds=3)
    [record] = result["instructions"]
    assert record["refinement_rounds"] == 0
    assert [(v["round"], v["accepted"]) for v in record["versions"]] == [(0, True), (1, False)]
    assert record["versions"][1]["judge"]["correct"] is False
    assert record["instruction"].startswith("Question about")
    assert record["messages"][-1]["content"] == "Cats hunt at dawn and dusk."
    assert sum("Give 1 or 2 concrete suggestions" in p for p in generator.prompts) == 1


def test_a_skill_without_refinement_ideas_gets_the_generic_ones() -> None:
    skill = dataclasses.replace(load_skill("coding"), refinement_suggestions=())
    generator, _ = models()
    with use_chat_models(generator=generator):
        suggest_refinements(
            skill, "def f(): pass", "Explain f in one sentence.", "It does nothing."
        )
    assert load_prompt("agentinstruct/ideas.md").strip() in generator.prompts[0]


def test_zero_refine_rounds_skips_the_suggester() -> None:
    result, generator, _ = run_graph(refine_rounds=0)
    assert result["instructions"][0]["refinement_rounds"] == 0
    assert not any("concrete suggestions" in p for p in generator.prompts)


def test_a_failed_edit_keeps_the_record_at_its_last_good_version() -> None:
    def generator(prompt: str) -> str:
        return (
            "   "
            if "Rewrite the task following the suggestions" in prompt
            else generator_reply(prompt)
        )

    result, _, _ = run_graph(generator=generator, refine_rounds=2)
    [record] = result["instructions"]
    assert record["refinement_rounds"] == 0
    assert "edit: UnusableReplyError" in record["versions"][1]["error"]


# --- record, dedup --------------------------------------------------------------------------
def test_record_has_chat_messages_and_provenance() -> None:
    result, _, _ = run_graph(
        skills=["reading_comprehension", "open_domain_qa", "tool_use"], refine_rounds=0
    )
    by_skill = {r["skill"]: r for r in result["instructions"]}
    reading = by_skill["reading_comprehension"]
    assert reading["seed_id"] == "s1" and reading["seed_source"] == "cats.txt"
    assert reading["instruction_type"] in load_skill("reading_comprehension").taxonomy
    assert reading["judge"] == {
        "score": 5,
        "correct": True,
        "reasons": "The answer matches the text.",
    }
    user = reading["messages"][0]
    assert user["role"] == "user" and reading["transformed_text"] in user["content"]
    qa_user = by_skill["open_domain_qa"]["messages"][0]["content"]
    assert by_skill["open_domain_qa"]["transformed_text"] not in qa_user  # open QA stands alone
    tool_system = by_skill["tool_use"]["messages"][0]
    assert tool_system["role"] == "system" and '"name": "get_cat"' in tool_system["content"]


def test_near_duplicate_instructions_are_removed_by_the_dedup_service() -> None:
    second = {"id": "s2", "text": "Cats sleep a lot and hunt at dawn.", "source": "cats2.txt"}
    result, _, _ = run_graph(
        seeds=[SEED, second],
        generator=lambda p: "What does the text say about cats?",
        refine_rounds=0,
    )
    assert len(result["instructions"]) == 1
    [duplicate] = [r for r in result["rejects"] if r["stage"] == "dedup"]
    assert (
        "near-duplicate of" in duplicate["error"]
        and duplicate["raw"] == "What does the text say about cats?"
    )


def test_empty_seed_is_rejected_and_the_others_go_on() -> None:
    result, _, _ = run_graph(seeds=[{"id": "blank", "text": "  "}, SEED], refine_rounds=0)
    assert [r["seed_id"] for r in result["instructions"]] == ["s1"]
    assert result["rejects"] == [
        {
            "id": "blank",
            "stage": "seed",
            "error": "the seed has no text",
            "raw": None,
            "retryable": False,
        }
    ]


def test_excerpt_cuts_long_seeds_at_a_break() -> None:
    first = "A first paragraph that is long enough to keep."
    text = first + "\n\n" + "word " * 100
    assert excerpt(text, 60) == first
    assert len(excerpt("word " * 100, 60)) <= 60
    assert excerpt("short", 60) == "short"


def test_studio_sees_the_three_flows_as_subgraphs() -> None:
    nodes = set(graph.get_graph(xray=True).nodes)
    for flow, node in [
        ("content_transformation", "route"),
        ("instruction_generation", "judge_pairs"),
        ("refinement", "judge_edit"),
    ]:
        assert f"{flow}:{node}" in nodes
    schema = graph.get_input_jsonschema()
    assert set(schema["properties"]) == {"seeds", "skills"}
    assert set(graph.get_output_jsonschema()["properties"]) == {"instructions", "rejects"}


def test_a_seed_without_an_id_gets_one_from_its_text() -> None:
    result, _, _ = run_graph(seeds=[{"text": SEED["text"]}], refine_rounds=0)  # type: ignore[list-item]
    [record] = result["instructions"]
    assert (
        record["seed_id"] == content_id(SEED["text"]) and record["seed_source"] == record["seed_id"]
    )


def test_a_fragment_instead_of_a_task_is_rejected_with_the_reason() -> None:
    def generator(prompt: str) -> str:
        return (
            "Task: Refactor code"
            if "Write one task of this type" in prompt
            else generator_reply(prompt)
        )

    result, _, judge = run_graph(generator=generator, refine_rounds=1)
    assert result["instructions"] == [] and judge.prompts == []
    [rejected] = result["rejects"]
    assert rejected["stage"] == "create" and "'Refactor code' is too short" in rejected["error"]
    assert rejected["raw"] == "Task: Refactor code"


def test_an_edit_that_repeats_the_suggestions_is_cut_to_the_task() -> None:
    def generator(prompt: str) -> str:
        if "Rewrite the task following the suggestions" in prompt:
            return "When are cats awake, and why then?\n\n**Suggestions:**\n1. Require combining facts."
        return generator_reply(prompt)

    result, _, _ = run_graph(generator=generator, refine_rounds=1)
    [record] = result["instructions"]
    assert record["instruction"] == "When are cats awake, and why then?"
    assert record["messages"][0]["content"].endswith("When are cats awake, and why then?")
