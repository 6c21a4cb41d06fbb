"""AgentInstruct agents and the skills they read from `prompts/skills/`.

A skill is a folder of data, never code: `skill.json` (description, answer
format, refinement ideas, optional judge rubric and validator), `taxonomy.json`
(instruction type -> description, or -> {"description", "example"}),
`transformations/<name>.md` (one content-transformation agent each) and,
optionally, a file overriding any generic prompt of `prompts/agentinstruct/`
(e.g. `record.md`, which lays out the final chat messages). Each agent below is
one LLM call; the graph in `synthgraph.graphs.agentinstruct.graph` wires them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel, Field, create_model

from synthgraph.agents.llm import finish_reason, invoke_structured, invoke_text
from synthgraph.prompts import list_prompts, load_prompt, prompt_exists, render_messages
from synthgraph.tools.instruction_checks import CHECKS, repair_tool_specs
from synthgraph.tools.text import strip_code_fence

SKILLS_FOLDER = "skills"
GENERIC_FOLDER = "agentinstruct"

# Completion caps per agent: the embedded model is slow, and each agent's
# output has a natural length (a task is short, a rewritten text is not).
TRANSFORM_TOKENS = 300
# A JSON text cut short is unusable, and small models write more items than asked.
JSON_TRANSFORM_TOKENS = 800
ROUTE_TOKENS = 80
INSTRUCTION_TOKENS = 150
ANSWER_TOKENS = 300
JUDGE_TOKENS = 200
SUGGEST_TOKENS = 150
# A task shorter than this is a fragment ("Refactor code"), not an instruction
# a model can learn from; small models produce such fragments often.
MIN_INSTRUCTION_WORDS = 5

# The one schema of a skill folder's JSON files; `load_skill` checks every skill against it.
_TEXT = {"type": "string", "pattern": r"\S"}
SKILL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": _TEXT,
        "instruction_hint": {"type": "string"},
        "answer_format": {"type": "string"},
        "transformed_format": {"enum": ["text", "json"]},
        "refinement_suggestions": {"type": "array", "items": _TEXT},
        "judge_rubric": {"type": "string"},
        "validator": {"enum": sorted(CHECKS)},
    },
    "required": ["description"],
    # A misspelt field would be ignored silently (a validator that never runs): refuse it.
    "additionalProperties": False,
}
# Instruction type -> description (the old form), or -> {"description", "example"}.
TAXONOMY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {
        "anyOf": [
            _TEXT,
            {
                "type": "object",
                "properties": {"description": _TEXT, "example": _TEXT},
                "required": ["description"],
                "additionalProperties": False,
            },
        ]
    },
}


class SkillError(ValueError):
    """A skill folder that is missing or malformed (names the file and the cause)."""


class UnusableReplyError(ValueError):
    """An agent's reply cannot be used (empty, or not the JSON the skill needs); `raw` is the reply."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Skill:
    """One skill, as read from `prompts/skills/<name>/`."""

    name: str
    description: str
    taxonomy: dict[str, str]
    """Instruction type -> its description."""
    transformations: tuple[str, ...]
    refinement_suggestions: tuple[str, ...]
    instruction_hint: str = ""
    answer_format: str = ""
    transformed_format: Literal["text", "json"] = "text"
    examples: dict[str, str] = field(default_factory=dict)
    """Instruction type -> one example instruction (for the types that have one)."""
    judge_rubric: str = ""
    """What a correct answer of this skill must satisfy, added to the judge's prompt."""
    validator: str | None = None
    """The form check of its pairs (a key of `tools.instruction_checks.CHECKS`), if any."""

    def prompt(self, name: str) -> str:
        """The skill's own `name` prompt if it ships one, else the generic one."""
        own = f"{SKILLS_FOLDER}/{self.name}/{name}"
        return own if prompt_exists(own) else f"{GENERIC_FOLDER}/{name}"

    def transformation_prompt(self, transformation: str) -> str:
        return f"{SKILLS_FOLDER}/{self.name}/transformations/{transformation}.md"


def list_skills() -> list[str]:
    """Names of the shipped skills: every folder under `prompts/skills/` with a `skill.json`."""
    base = resources.files("synthgraph.prompts").joinpath(SKILLS_FOLDER)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if p.is_dir() and p.joinpath("skill.json").is_file()
    )


@lru_cache(maxsize=64)
def load_skill(name: str) -> Skill:
    """Read and check one skill folder; a problem raises `SkillError` naming the file."""
    if name not in list_skills():
        raise SkillError(f"unknown skill {name!r} (shipped: {', '.join(list_skills())})")
    folder = resources.files("synthgraph.prompts").joinpath(SKILLS_FOLDER, name)
    config = _read_json(folder.joinpath("skill.json"), f"{name}/skill.json", SKILL_SCHEMA)
    taxonomy = _read_json(
        folder.joinpath("taxonomy.json"), f"{name}/taxonomy.json", TAXONOMY_SCHEMA
    )
    types = {
        kind: value if isinstance(value, dict) else {"description": value}
        for kind, value in taxonomy.items()
    }
    transformations = tuple(
        p.rsplit("/", 1)[1].removesuffix(".md")
        for p in list_prompts(f"{SKILLS_FOLDER}/{name}/transformations")
        if p.endswith(".md")
    )
    if not transformations:
        raise SkillError(f"{name}/transformations/: no .md transformation prompts")
    return Skill(
        name=name,
        description=config["description"],
        taxonomy={kind: value["description"] for kind, value in types.items()},
        examples={kind: value["example"] for kind, value in types.items() if "example" in value},
        transformations=transformations,
        refinement_suggestions=tuple(config.get("refinement_suggestions", [])),
        instruction_hint=config.get("instruction_hint", ""),
        answer_format=config.get("answer_format", ""),
        transformed_format=config.get("transformed_format", "text"),
        judge_rubric=config.get("judge_rubric", ""),
        validator=config.get("validator"),
    )


def _read_json(file: Any, where: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The file's JSON, checked against `schema`; a problem names the file and the field."""
    if not file.is_file():
        raise SkillError(f"{where}: missing")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SkillError(f"{where}: not valid JSON ({error.msg}, line {error.lineno})") from error
    error = best_match(Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        field_path = "/".join(map(str, error.absolute_path))
        raise SkillError(
            f"{where}: " + (f"field {field_path!r}: " if field_path else "") + error.message
        )
    return data


# --- sampling (no LLM) ---------------------------------------------------------
def sample_transformations(skill: Skill, count: int, rng: random.Random) -> list[str]:
    """`count` distinct transformations of the skill, at random (all when count >= their number)."""
    if count >= len(skill.transformations):
        return list(skill.transformations)
    return rng.sample(list(skill.transformations), count)


def sample_instruction_types(skill: Skill, count: int, rng: random.Random) -> list[str]:
    """`count` instruction types: distinct while the taxonomy lasts, then drawn again."""
    types = list(skill.taxonomy)
    picked: list[str] = []
    while len(picked) < count:
        picked.extend(rng.sample(types, min(len(types), count - len(picked))))
    return picked


# --- agents (one LLM call each) -------------------------------------------------
def choose_transformations(
    skill: Skill, seed: str, count: int, *, record_id: str | None = None, **model_kwargs: Any
) -> list[str]:
    """The router agent: the model picks `count` transformations that fit this seed."""
    names = tuple(skill.transformations)
    choice_schema = create_model(
        "TransformationChoice",
        transformations=(
            list[Literal[names]],  # type: ignore[valid-type]
            Field(min_length=1, description="Transformation names"),
        ),
    )
    messages = render_messages(
        skill.prompt("route.md"),
        skill=skill.name,
        skill_description=skill.description,
        seed=seed,
        count=count,
        choices=", ".join(names),
    )
    choice = invoke_structured(
        choice_schema,
        messages,
        role="generator",
        record_id=record_id,
        **_cap(model_kwargs, ROUTE_TOKENS),
    )
    picked = list(dict.fromkeys(choice.transformations))  # type: ignore[attr-defined]
    return picked[:count]


def transform_seed(
    skill: Skill,
    transformation: str,
    seed: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """A content-transformation agent: the seed rewritten into a text suited to the skill."""
    messages = render_messages(skill.transformation_prompt(transformation), seed=seed)
    as_json = skill.transformed_format == "json"
    cap = JSON_TRANSFORM_TOKENS if as_json else TRANSFORM_TOKENS
    reply = invoke_text(messages, role="generator", record_id=record_id, **_cap(model_kwargs, cap))
    text = _text_of(reply.content, record_id, f"transformation {transformation!r}")
    if as_json:
        cut = finish_reason(reply) == "length"
        text = _json_text(text, record_id, f"transformation {transformation!r}", cut)
    if skill.validator == "json_schema":  # keep the specs repaired, not just checked
        text = repair_tool_specs(text)
    return text


def create_instruction(
    skill: Skill,
    text: str,
    instruction_type: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """An instruction-creation agent: one task of the given type about the text."""
    messages = render_messages(
        skill.prompt("create_instruction.md"),
        skill=skill.name,
        skill_description=skill.description,
        text=text,
        instruction_type=instruction_type.replace("_", " "),
        type_description=skill.taxonomy[instruction_type],
        type_example=(
            f"An example of this type (about another text): {skill.examples[instruction_type]}"
            if instruction_type in skill.examples
            else ""
        ),
        instruction_hint=skill.instruction_hint,
    )
    return _write_task(messages, record_id, "instruction", model_kwargs)


def answer_instruction(
    skill: Skill, text: str, instruction: str, *, record_id: str | None = None, **model_kwargs: Any
) -> str:
    """The answering agent (generator model), using the text as the source of truth."""
    messages = render_messages(
        skill.prompt("answer.md"),
        text=text,
        instruction=instruction,
        answer_format=skill.answer_format,
    )
    reply = invoke_text(
        messages, role="generator", record_id=record_id, **_cap(model_kwargs, ANSWER_TOKENS)
    )
    answer = _text_of(reply.content, record_id, "answer")
    if skill.transformed_format == "json":
        answer = _json_text(answer, record_id, "answer", finish_reason(reply) == "length")
    return answer


class Verdict(BaseModel):
    """The judge's check of one (instruction, answer) pair against the text."""

    # Bounded: on llama.cpp the schema becomes a grammar, so a rambling judge stops
    # at this length instead of running into the token cap mid-JSON.
    reasons: str = Field(max_length=240, description="One short sentence: what is right or wrong")
    correct: bool = Field(description="True when the answer solves the task correctly")
    score: int = Field(ge=1, le=5, description="1 (wrong or useless) to 5 (correct and complete)")


def judge_answer(
    skill: Skill,
    text: str,
    instruction: str,
    answer: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> Verdict:
    """The judge agent (judge role): is the answer correct against the text?"""
    messages = render_messages(
        skill.prompt("judge.md"),
        text=text,
        instruction=instruction,
        answer=answer,
        judge_rubric=skill.judge_rubric,
    )
    return invoke_structured(
        Verdict, messages, role="judge", record_id=record_id, **_cap(model_kwargs, JUDGE_TOKENS)
    )


def check_pair(skill: Skill, text: str, instruction: str, answer: str) -> None:
    """The skill's validator on one pair (no LLM); a pair of the wrong form raises `CheckFailed`."""
    if skill.validator:
        CHECKS[skill.validator](text, instruction, answer)


def suggest_refinements(
    skill: Skill,
    text: str,
    instruction: str,
    answer: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """The suggester: concrete ways to make the task harder or more specific."""
    # A skill without refinement ideas of its own gets the generic ones (`ideas.md`).
    ideas = (
        "\n".join(f"- {idea}" for idea in skill.refinement_suggestions)
        or load_prompt(skill.prompt("ideas.md")).strip()
    )
    messages = render_messages(
        skill.prompt("suggest.md"),
        skill=skill.name,
        ideas=ideas,
        text=text,
        instruction=instruction,
        answer=answer,
    )
    reply = invoke_text(
        messages, role="generator", record_id=record_id, **_cap(model_kwargs, SUGGEST_TOKENS)
    )
    return _text_of(reply.content, record_id, "suggestions")


def edit_instruction(
    skill: Skill,
    text: str,
    instruction: str,
    suggestions: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """The editor: the task rewritten to follow the suggestions."""
    messages = render_messages(
        skill.prompt("edit.md"), text=text, instruction=instruction, suggestions=suggestions
    )
    return _write_task(messages, record_id, "edited instruction", model_kwargs)


def ask_follow_up(
    skill: Skill,
    text: str,
    exchanges: list[tuple[str, str]],
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """The follow-up agent: the user's next question on the same text, after these
    (question, answer) exchanges."""
    conversation = "\n\n".join(f"user: {q}\n\nassistant: {a}" for q, a in exchanges)
    messages = render_messages(skill.prompt("follow_up.md"), text=text, conversation=conversation)
    return _write_task(messages, record_id, "follow-up question", model_kwargs)


def answer_in_conversation(
    skill: Skill,
    text: str,
    exchanges: list[tuple[str, str]],
    question: str,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> str:
    """The answering agent on a later turn: the text and first task as on turn one, then the
    exchanges since, then the new question."""
    (first_question, _), *_ = exchanges
    messages = render_messages(
        skill.prompt("answer.md"),
        text=text,
        instruction=first_question,
        answer_format=skill.answer_format,
    )
    for number, (asked, answered) in enumerate(exchanges):
        if number:
            messages.append(("user", asked))
        messages.append(("assistant", answered))
    messages.append(("user", question))
    reply = invoke_text(
        messages, role="generator", record_id=record_id, **_cap(model_kwargs, ANSWER_TOKENS)
    )
    return _text_of(reply.content, record_id, "follow-up answer")


def answer_without_text(
    skill: Skill, instruction: str, *, record_id: str | None = None, **model_kwargs: Any
) -> str:
    """A rival answer for a preference pair: the task answered without its text, which a
    text-grounded answer should beat."""
    messages = render_messages(
        skill.prompt("closed_book.md"), instruction=instruction, answer_format=skill.answer_format
    )
    reply = invoke_text(
        messages, role="generator", record_id=record_id, **_cap(model_kwargs, ANSWER_TOKENS)
    )
    return _text_of(reply.content, record_id, "rival answer")


def chat_messages(skill: Skill, text: str, instruction: str, answer: str) -> list[dict[str, str]]:
    """The training example in OpenAI chat format, laid out by the skill's `record.md`."""
    laid_out = render_messages(skill.prompt("record.md"), text=text, instruction=instruction)
    return [{"role": role, "content": content} for role, content in laid_out] + [
        {"role": "assistant", "content": answer}
    ]


# --- helpers ------------------------------------------------------------------------
def _write_task(
    messages: list[tuple[str, str]], record_id: str | None, what: str, model_kwargs: dict[str, Any]
) -> str:
    """The generator's task for these messages, without labels or trailers (see `_as_instruction`)."""
    reply = invoke_text(
        messages, role="generator", record_id=record_id, **_cap(model_kwargs, INSTRUCTION_TOKENS)
    )
    return _as_instruction(_text_of(reply.content, record_id, what), record_id)


def _cap(model_kwargs: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """The agent's own completion cap unless the run sets one."""
    return {"max_tokens": max_tokens, **model_kwargs}


def _text_of(content: Any, record_id: str | None, what: str) -> str:
    text = content if isinstance(content, str) else json.dumps(content)
    text = text.strip()
    if not text:
        raise UnusableReplyError(f"{record_id or 'record'}: the model gave an empty {what}")
    return text


_LABEL = re.compile(
    r"^\s*(\*\*)?(task|instruction|question|rewritten task|new task)(\*\*)?\s*:\s*(\*\*)?\s*", re.I
)


# Small models append the suggestions or an answer after the task: cut at such a line.
_TRAILER = re.compile(
    r"^\W*(suggestions?|answer|solution|explanation|note)\b\W*:?.*$", re.I | re.M | re.S
)


def _as_instruction(text: str, record_id: str | None) -> str:
    """The task without a leading 'Task:' label or wrapping quotes; a fragment is an error."""
    task = _LABEL.sub("", text, count=1).strip()
    trailer = _TRAILER.search(task, max(task.find("\n"), 0) + 1)  # never the first line
    if trailer:
        task = task[: trailer.start()].strip()
    if len(task) > 1 and task[0] == task[-1] and task[0] in "\"'":
        task = task[1:-1].strip()
    if len(task.split()) < MIN_INSTRUCTION_WORDS:
        raise UnusableReplyError(
            f"{record_id or 'record'}: the task {task!r} is too short (under {MIN_INSTRUCTION_WORDS} words)",
            raw=text,
        )
    return task


def _json_text(text: str, record_id: str | None, what: str, cut: bool = False) -> str:
    """The reply's JSON (fences removed), pretty-printed; not JSON is an error naming the record."""
    try:
        data = json.loads(strip_code_fence(text))
    except json.JSONDecodeError as error:
        cause = "the reply was cut at max_tokens" if cut else error.msg
        raise UnusableReplyError(
            f"{record_id or 'record'}: {what} is not valid JSON ({cause})", raw=text
        ) from error
    return json.dumps(data, ensure_ascii=False, indent=1)
