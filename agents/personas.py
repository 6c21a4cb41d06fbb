"""The LLM calls behind the personas and synthesis graphs.

Text-to-Persona and Persona-to-Persona follow PersonaHub (arXiv 2406.20094):
a text says who would read, write, like or dislike it, and a persona says who
stands around it (colleague, patient, supplier, ...). Synthesis turns one
persona and a task into one item. Every reply goes through
`invoke_structured`, so a malformed answer is re-asked, never half-parsed.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, Field, field_validator

from synthgraph.agents.llm import StructuredOutputError, invoke_structured
from synthgraph.prompts import fill, load_prompt, render_messages
from synthgraph.tools.io import InputError, content_id, read_jsonl
from synthgraph.tools.text import clip

TASKS = ("math", "instruction", "knowledge", "npc", "tool")
# Failures that belong to one record (a reply that never validated, or was cut
# at max_tokens, both StructuredOutputError): the node rejects that record and
# the run goes on.
RECORD_ERRORS: tuple[type[Exception], ...] = (StructuredOutputError, ValueError)


# --- personas -------------------------------------------------------------------
class PersonaDraft(BaseModel):
    """One persona as the model writes it (the prompt explains the fields, so the schema is bare)."""

    persona: str = Field(min_length=20, max_length=600)
    role: str = Field(min_length=2, max_length=80)
    domain: str = Field(min_length=2, max_length=60)


PERSPECTIVES = ("read", "write", "like", "dislike")
"""Text-to-Persona asks once per perspective: who would read, write, like or dislike the text."""


def call_seed(*parts: str) -> int:
    """A sampling seed derived from content: the same input samples the same reply.

    That is what makes a rerun on the same texts regenerate the same personas,
    which the persistent dedup store then recognises as duplicates.
    """
    return int(content_id(*parts, length=8), 16) % 2**31


def text_to_persona_messages(
    text: str, perspective: str = "read", max_chars: int = 1200
) -> list[tuple[str, str]]:
    """Text-to-Persona: ask for one person likely to `perspective` (read, write, like,
    dislike) `text`. Send with `invoke_structured(PersonaDraft, ...)` or its async twin."""
    return render_messages(
        "personas/text_to_persona.md", text=clip(text, max_chars), perspective=perspective
    )


def related_persona_messages(persona: str, relation: str) -> list[tuple[str, str]]:
    """Persona-to-Persona: ask for the `relation` (colleague, patient, ...) of `persona`."""
    return render_messages("personas/persona_to_persona.md", persona=persona, relation=relation)


# --- synthesis items -------------------------------------------------------------
class MathItem(BaseModel):
    problem: str = Field(min_length=20)
    answer: str = Field(min_length=1)

    @field_validator("problem")
    @classmethod
    def has_numbers(cls, value: str) -> str:
        # Small models drift into essays; a problem with no quantity cannot be solved.
        if not any(c.isdigit() for c in value):
            raise ValueError("the problem states no numbers: give every quantity needed, in digits")
        return value


class InstructionItem(BaseModel):
    prompt: str = Field(min_length=10)


class KnowledgeItem(BaseModel):
    title: str = Field(min_length=3)
    article: str = Field(min_length=40)


class NpcItem(BaseModel):
    name: str = Field(min_length=2)
    background: str = Field(min_length=10)
    personality: str = Field(min_length=2)
    goal: str = Field(min_length=5)
    greeting: str = Field(min_length=2)


class ToolItem(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    description: str = Field(min_length=10)
    parameters: dict[str, Any]

    @field_validator("parameters")
    @classmethod
    def is_object_json_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked here so a bad schema is re-asked by invoke_structured, not written.
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as error:
            raise ValueError(f"parameters is not a valid JSON Schema: {error.message}") from error
        if value.get("type") != "object" or not isinstance(value.get("properties"), dict):
            raise ValueError('parameters must be {"type": "object", "properties": {...}}')
        return value


ITEM_SCHEMAS: dict[str, type[BaseModel]] = {
    "math": MathItem,
    "instruction": InstructionItem,
    "knowledge": KnowledgeItem,
    "npc": NpcItem,
    "tool": ToolItem,
}


def load_few_shot(path: Path | str, task: str, limit: int = 3) -> list[dict[str, Any]]:
    """Few-shot examples for `task` from a JSONL file; each line must validate as the task's item."""
    schema = ITEM_SCHEMAS[task]
    examples: list[dict[str, Any]] = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            schema.model_validate(row)
        except ValueError as error:
            raise InputError(
                f"{path}: example {number} is not a valid {task} item: {error}"
            ) from error
        examples.append(row)
        if len(examples) == limit:
            break
    return examples


def bundled_few_shot(task: str) -> Path:
    """The few-shot file shipped for `task` (prompts/synthesis/few_shot/<task>.jsonl)."""
    return Path(
        str(resources.files("synthgraph.prompts").joinpath(f"synthesis/few_shot/{task}.jsonl"))
    )


def format_examples(examples: list[dict[str, Any]], task: str) -> str:
    """The examples block of a synthesis prompt ('' for zero-shot)."""
    if not examples:
        return ""
    fields = list(ITEM_SCHEMAS[task].model_fields)
    template = load_prompt("synthesis/example.md").strip()
    blocks = []
    for example in examples:
        answer = {k: example[k] for k in fields if k in example}
        block = fill(
            template, persona=example.get("persona"), answer=json.dumps(answer, ensure_ascii=False)
        )
        # An example without a persona shows its answer only (the template's last line).
        blocks.append(block if example.get("persona") else block.splitlines()[-1])
    return "\n" + fill(load_prompt("synthesis/examples.md"), examples="\n\n".join(blocks)) + "\n"


def synthesize_item(
    persona: str,
    task: str,
    examples: list[dict[str, Any]] | None = None,
    *,
    record_id: str | None = None,
    **model_kwargs: Any,
) -> BaseModel:
    """One item of `task` written for (and from the point of view of) `persona`."""
    if task not in ITEM_SCHEMAS:
        raise ValueError(f"unknown task {task!r} (one of {', '.join(TASKS)})")
    messages = render_messages(
        f"synthesis/{task}.md", persona=persona, examples=format_examples(examples or [], task)
    )
    return invoke_structured(
        ITEM_SCHEMAS[task], messages, role="generator", record_id=record_id, **model_kwargs
    )
