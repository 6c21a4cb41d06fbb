"""Skills are data: every shipped skill folder passes one schema, a malformed one is a clear
error naming the file and the field, and a skill's rubric, examples and validator reach the
agents and the graph."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agentinstruct import run_graph

import synthgraph.prompts as prompts_package
from synthgraph.agents.agentinstruct import (
    GENERIC_FOLDER,
    SKILLS_FOLDER,
    SkillError,
    list_skills,
    load_skill,
)
from synthgraph.prompts import list_prompts, load_prompt, render_messages
from synthgraph.tools.instruction_checks import CHECKS

SEED_TEXT = "Cats sleep up to sixteen hours a day. They hunt at dawn and dusk."


# --- every shipped skill ---------------------------------------------------------------
@pytest.mark.parametrize("name", list_skills())
def test_shipped_skill_passes_the_schema(name: str) -> None:
    skill = load_skill(name)  # skill.json and taxonomy.json against their schemas
    assert skill.description and skill.refinement_suggestions
    assert skill.validator is None or skill.validator in CHECKS
    if skill.validator == "json_schema":  # it checks the transformed text as JSON tool specs
        assert skill.transformed_format == "json"
    assert skill.taxonomy, f"{name}: no instruction types"
    missing = sorted(set(skill.taxonomy) - set(skill.examples))
    assert not missing, f"{name}/taxonomy.json: instruction types without an example: {missing}"


@pytest.mark.parametrize("name", list_skills())
def test_every_transformation_prompt_renders_with_a_seed(name: str) -> None:
    skill = load_skill(name)
    assert skill.transformations
    for transformation in skill.transformations:
        messages = render_messages(skill.transformation_prompt(transformation), seed=SEED_TEXT)
        assert any(SEED_TEXT in text for _, text in messages), transformation
        assert messages[-1][0] == "user", transformation


@pytest.mark.parametrize("name", list_skills())
def test_a_skills_own_prompt_files_override_generic_ones(name: str) -> None:
    generic = {p.rsplit("/", 1)[1] for p in list_prompts(GENERIC_FOLDER)}
    own = {p.rsplit("/", 1)[1] for p in list_prompts(f"{SKILLS_FOLDER}/{name}")}
    unknown = own - generic - {"skill.json", "taxonomy.json"}
    assert not unknown, f"{name}: files that override no generic prompt: {sorted(unknown)}"
    for file in own & generic:  # an override gets the values the generic prompt gets, no more
        names = placeholders(f"{SKILLS_FOLDER}/{name}/{file}")
        extra = names - placeholders(f"{GENERIC_FOLDER}/{file}")
        assert not extra, f"{name}/{file}: placeholders no agent fills: {sorted(extra)}"


def placeholders(prompt: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", load_prompt(prompt)))


# --- the loader on a malformed skill --------------------------------------------------------
SkillMaker = Callable[..., str]


@pytest.fixture
def make_skill() -> Iterator[SkillMaker]:
    """Writes skill folders (removed after the test): `make_skill(skill_json, taxonomy_json)`."""
    made: list[Path] = []

    def make(config: dict[str, Any], taxonomy: dict[str, Any]) -> str:
        name = f"zz_check_{threading.get_ident()}_{len(made)}"
        folder = Path(prompts_package.__file__).parent / SKILLS_FOLDER / name
        made.append(folder)
        (folder / "transformations").mkdir(parents=True)
        (folder / "skill.json").write_text(json.dumps(config))
        (folder / "taxonomy.json").write_text(json.dumps(taxonomy))
        (folder / "transformations" / "habits.md").write_text("Describe the habits:\n{{ seed }}\n")
        load_skill.cache_clear()
        load_prompt.cache_clear()
        return name

    try:
        yield make
    finally:
        for folder in made:
            shutil.rmtree(folder)
        load_skill.cache_clear()
        load_prompt.cache_clear()


LABELS = {
    "description": "Classify where a cat spends its time.",
    "validator": "label",
    "judge_rubric": "The label must match the place the text states.",
    "answer_format": "Reply with the label only.",
}
TYPES = {
    "place": {
        "description": "Ask where the animal spends its time.",
        "example": "Is the dog indoor or outdoor? Labels: indoor, outdoor",
    }
}


def test_taxonomy_in_the_old_and_the_new_form(make_skill: SkillMaker) -> None:
    old = load_skill(make_skill({"description": "d"}, {"place": "Ask where."}))
    assert old.taxonomy == {"place": "Ask where."} and old.examples == {}
    assert old.validator is None and old.judge_rubric == ""
    new = load_skill(make_skill(LABELS, TYPES))
    assert new.taxonomy == {"place": "Ask where the animal spends its time."}
    assert new.examples == {"place": TYPES["place"]["example"]}
    assert new.validator == "label" and new.judge_rubric == LABELS["judge_rubric"]


@pytest.mark.parametrize(
    ("config", "taxonomy", "message"),
    [
        ({**LABELS, "validator": "regex"}, TYPES, r"skill\.json: field 'validator': 'regex' is not one of"),
        ({**LABELS, "judge_rubric": 5}, TYPES, r"skill\.json: field 'judge_rubric': 5 is not of type 'string'"),
        ({**LABELS, "refinement_suggestions": "be harder"}, TYPES, r"skill\.json: field 'refinement_suggestions'"),
        ({**LABELS, "transformed_format": "xml"}, TYPES, r"skill\.json: field 'transformed_format'"),
        ({**LABELS, "validtor": "label"}, TYPES, r"skill\.json: .*'validtor' was unexpected"),
        ({"judge_rubric": "r"}, TYPES, r"skill\.json: 'description' is a required property"),
        (LABELS, {}, r"taxonomy\.json: .*(empty|few properties)"),
        (LABELS, {"place": {"example": "x"}}, r"taxonomy\.json: field 'place'"),
        (LABELS, {"place": ["Ask where."]}, r"taxonomy\.json: field 'place'"),
    ],
)  # fmt: skip
def test_a_malformed_skill_names_the_file_and_the_field(
    make_skill: SkillMaker, config: dict[str, Any], taxonomy: dict[str, Any], message: str
) -> None:
    name = make_skill(config, taxonomy)
    with pytest.raises(SkillError, match=f"{name}/{message}"):
        load_skill(name)


# --- rubric, example and validator in the graph -----------------------------------------------
def cat_generator(answer: Callable[[str], str]) -> Callable[[str], str]:
    """Replies per agent for a labelling skill; `answer(task)` answers a task."""

    def reply(prompt: str) -> str:
        if "Write one task of this type" in prompt:
            return "Classify where the cat spends its days. Labels: indoor, outdoor"
        if "Give 1 or 2 concrete suggestions" in prompt:
            return "- Ask about the nights instead."
        if "Rewrite the task following the suggestions" in prompt:
            return "Classify where the cat spends its nights. Labels: indoor, outdoor"
        if "Task:" in prompt:
            return answer(prompt.split("Task:", 1)[1])
        return "The cat sleeps indoors all day and hunts outdoors at night."

    return reply


def test_rubric_and_example_reach_the_agents_only_when_the_skill_has_them(
    make_skill: SkillMaker,
) -> None:
    with_both = make_skill(LABELS, TYPES)
    without = make_skill({**LABELS, "judge_rubric": ""}, {"place": "Ask where."})
    result, generator, judge = run_graph(
        skills=[with_both, without],
        generator=cat_generator(lambda _: "Indoor"),
        refine_rounds=0,
        dedup="none",
    )
    assert len(result["instructions"]) == 2 and not result["rejects"]
    creates = [p for p in generator.prompts if "Write one task of this type" in p]
    assert sum(TYPES["place"]["example"] in p for p in creates) == 1
    assert sum("An example of this type" in p for p in creates) == 1
    assert sum(LABELS["judge_rubric"] in p for p in judge.prompts) == 1


def test_a_pair_the_validator_refuses_is_rejected_before_the_judge(make_skill: SkillMaker) -> None:
    name = make_skill(LABELS, TYPES)
    result, _, judge = run_graph(
        skills=[name],
        generator=cat_generator(lambda _: "It stays inside, mostly."),
        refine_rounds=0,
    )
    assert result["instructions"] == [] and judge.prompts == []
    [reject] = result["rejects"]
    assert reject["stage"] == "validate" and reject["retryable"] is False
    assert (
        "CheckFailed" in reject["error"]
        and "not one of the labels: indoor, outdoor" in reject["error"]
    )
    assert reject["raw"].startswith("Classify where the cat spends its days.")


def test_an_edit_the_validator_refuses_keeps_the_last_good_version(make_skill: SkillMaker) -> None:
    name = make_skill(LABELS, TYPES)

    def answer(task: str) -> str:
        return "At night it is outside." if "nights" in task else "indoor"

    result, _, judge = run_graph(skills=[name], generator=cat_generator(answer), refine_rounds=2)
    [record] = result["instructions"]
    first, failed = record["versions"]
    assert first["accepted"] and record["messages"][-1]["content"] == "indoor"
    assert failed["accepted"] is False and failed["error"].startswith("validate: CheckFailed")
    assert len(judge.prompts) == 1  # the refused edit was never judged
