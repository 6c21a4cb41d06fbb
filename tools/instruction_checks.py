"""Checks of an instruction pair's form, one per kind of skill (no LLM).

A skill whose output has a checkable form names a check in its `skill.json`
("validator"); the AgentInstruct graph runs it on each (instruction, answer)
pair before the judge, so a pair of the wrong form is rejected without an LLM
call. Each check is `check(text, instruction, answer) -> None` and raises
`CheckFailed` with the reason; `text` is the transformed text the pair is about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from synthgraph.tools.text import strip_code_fence


class CheckFailed(ValueError):
    """A pair whose form is wrong for its skill; the message says why."""


# --- mcq --------------------------------------------------------------------------
# An option opens a line: "(A) ...", "A) ...", "A. ..." or "A: ...". Inside a line only
# "(A)" and "A)" count, since "A." also ends sentences ("vitamin A.").
_OPTION_AT_LINE = re.compile(r"^[ \t*_-]*\(?([A-H])[).:]\**[ \t]", re.M)
_OPTION_INLINE = re.compile(r"(?:^|\s)\(?([A-H])\)[ \t]", re.M)
# Where the answer names its choice: "Answer: B", "**Correct answer:** (B) ...", "The answer is B".
_ANSWER_LINE = re.compile(
    r"(?i:answer)\W*?(?i:\s+is)?[\s:*]*(?i:option\s+)?\(?([A-Z])\b\)?"
    r"(?:\s*(?:,|/|&|(?i:and|or))\s*\(?([A-Z])\b\)?)?"
)
# An answer that is just the option: "B", "(B)", "B) Paris".
_BARE_CHOICE = re.compile(r"^\W*\(?([A-Z])(?:[).:]|\s*$)")


def option_letters(instruction: str) -> list[str]:
    """The option letters the instruction lists, in order (A, B, C, ... without gaps)."""
    found = set(_OPTION_AT_LINE.findall(instruction)) | set(_OPTION_INLINE.findall(instruction))
    letters: list[str] = []
    for letter in "ABCDEFGH":
        if letter not in found:
            break
        letters.append(letter)
    return letters


def check_mcq(text: str, instruction: str, answer: str) -> None:
    """The instruction lists at least 3 options and the answer names exactly one of them."""
    letters = option_letters(instruction)
    if len(letters) < 3:
        raise CheckFailed(
            f"the question lists {len(letters)} options (A), (B), ...; a multiple-choice question needs at least 3"
        )
    named = _ANSWER_LINE.findall(answer)
    if not named:
        bare = _BARE_CHOICE.match(answer)
        named = [(bare.group(1), "")] if bare else []
    if not named:
        raise CheckFailed(
            "the answer names no option; it should end with a line 'Answer: <letter>'"
        )
    choices = {letter for pair in named for letter in pair if letter}
    if len(choices) != 1:
        raise CheckFailed(
            f"the answer names {len(choices)} options ({', '.join(sorted(choices))}), not one"
        )
    [choice] = choices
    if choice not in letters:
        raise CheckFailed(
            f"the answer names option {choice}, which the question does not list ({', '.join(letters)})"
        )


# --- label ------------------------------------------------------------------------
# "Labels: a, b, c" anywhere in a line, up to the line's or the sentence's end.
_LABEL_SET = re.compile(r"\b(?:labels|categories|classes|label\s+set)\W*?:\s*(.+)$", re.I | re.M)
_ANSWER_PREFIX = re.compile(r"^(?:label|category|class|answer)\s*:\s*", re.I)


def label_set(text: str, instruction: str) -> list[str]:
    """The labels stated by the instruction, else by the text ("Labels: a, b, c")."""
    for source in (instruction, text):
        stated = _LABEL_SET.search(source)
        if stated:
            listed = stated.group(1).split(". ")[0]
            labels = [_bare(label) for label in re.split(r",|\||;|/|\bor\b", listed)]
            return [label for label in labels if label]
    return []


def check_label(text: str, instruction: str, answer: str) -> None:
    """The answer is exactly one label of the stated set (case-insensitive)."""
    labels = label_set(text, instruction)
    if len(labels) < 2:
        raise CheckFailed("no label set is stated (a line 'Labels: a, b, c' in the text or task)")
    given = _bare(_ANSWER_PREFIX.sub("", _bare(answer)))
    if given.casefold() not in {label.casefold() for label in labels}:
        raise CheckFailed(
            f"the answer {given[:80]!r} is not one of the labels: {', '.join(labels)}"
        )


def _bare(value: str) -> str:
    """A label without surrounding space, quotes, emphasis or a final full stop."""
    return value.strip().strip("\"'`*").strip().rstrip(".").strip()


# --- extraction ---------------------------------------------------------------------
def check_extraction(text: str, instruction: str, answer: str) -> None:
    """The answer is a JSON object and every string in it occurs in the text."""
    data = _parsed(answer, "the answer")
    if not isinstance(data, dict) or not data:
        raise CheckFailed("the answer is not a non-empty JSON object")
    haystack = _normalised(text)
    missing = [value for value in _strings(data) if _normalised(value) not in haystack]
    if missing:
        raise CheckFailed(
            f"values not found in the text: {', '.join(repr(v[:60]) for v in missing[:3])}"
        )


def _parsed(text: str, what: str) -> Any:
    """The JSON of `text` (inside a code fence, if any); not JSON fails the check."""
    try:
        return json.loads(strip_code_fence(text))
    except json.JSONDecodeError as error:
        raise CheckFailed(f"{what} is not JSON ({error.msg})") from error


def _strings(data: Any) -> Iterator[str]:
    """Every non-blank string value in nested JSON data (keys are not values)."""
    if isinstance(data, str):
        if data.strip():
            yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


def _normalised(value: str) -> str:
    return " ".join(value.split()).casefold()


# --- fermi ----------------------------------------------------------------------------
# A number as estimates are written: 2,000 / 3.5 / 1e6 / 2.5 x 10^6, optionally "3 million".
_ESTIMATE = (
    r"\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+|\s*[x×*]\s*10\s*\^\s*[-+]?\d+)?"
    r"(?:\s*(?:hundred|thousand|million|billion|trillion|[kKMB]|bn)\b)?"
)
# ... ending the answer, followed by up to five unit words ("piano tuners", "litres per day"),
# or preceded by a currency sign ("$3 million").
_FERMI_END = re.compile(
    rf"(?:{_ESTIMATE}\s*(?:%|°\w*|[^\W\d_][\w/²³°-]*(?:\s+[^\W\d_][\w/²³°-]*){{0,4}})"
    rf"|[$€£¥]\s*{_ESTIMATE})$"
)


def check_fermi(text: str, instruction: str, answer: str) -> None:
    """The answer ends with a number and its unit ("Answer: 2,000 piano tuners")."""
    lines = [line for line in answer.splitlines() if line.strip()]
    last = lines[-1].strip().strip("*_`").rstrip(".!").strip() if lines else ""
    if not _FERMI_END.search(last):
        raise CheckFailed(
            f"the answer does not end with a number and a unit (last line: {last[:80]!r})"
        )


# --- json_schema (tool specs) ---------------------------------------------------------
def repair_required(schema: Any) -> Any:
    """The schema with `"required": true` inside a property moved into the object's `required` list.

    Small models write `{"properties": {"city": {"type": "string", "required": true}}}`,
    which is not JSON Schema; nested object schemas are repaired too.
    """
    if isinstance(schema, list):
        return [repair_required(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    repaired = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        listed = schema.get("required")
        required = list(listed) if isinstance(listed, list) else []
        cleaned = {}
        for name, prop in properties.items():
            flag = prop.get("required") if isinstance(prop, dict) else None
            if isinstance(flag, bool):  # a flag, not JSON Schema: move it to the list
                prop = {key: value for key, value in prop.items() if key != "required"}
                if flag and name not in required:
                    required.append(name)
            cleaned[name] = prop
        repaired["properties"] = cleaned
        if required:
            repaired["required"] = required
    # Flags are moved before descending, so a nested object's own list is built from its own.
    return {key: repair_required(value) for key, value in repaired.items()}


def repair_tool_specs(specs_text: str) -> str:
    """The tool specs with each `parameters` repaired (see `repair_required`), pretty-printed;
    a text that is not a JSON array of specs is returned as is, for the check to report."""
    try:
        specs = _parsed(specs_text, "the tool specs")
    except CheckFailed:
        return specs_text
    if not isinstance(specs, list):
        return specs_text
    repaired = [
        {**spec, "parameters": repair_required(spec["parameters"])}
        if isinstance(spec, dict) and "parameters" in spec
        else spec
        for spec in specs
    ]
    return json.dumps(repaired, ensure_ascii=False, indent=1)


def check_json_schema(text: str, instruction: str, answer: str) -> None:
    """The text is a JSON array of tool specs {name, description, parameters}, each `parameters`
    a valid JSON Schema of an object (after `repair_required`)."""
    specs = _parsed(text, "the tool specs")
    if not isinstance(specs, list) or not specs:
        raise CheckFailed("the tool specs are not a non-empty JSON array")
    for index, spec in enumerate(specs):
        name = spec.get("name") if isinstance(spec, dict) else None
        where = (
            f"tool {index} ({name})" if isinstance(name, str) and name.strip() else f"tool {index}"
        )
        if not (isinstance(name, str) and name.strip()):
            raise CheckFailed(f"{where}: no 'name'")
        if not isinstance(spec.get("description"), str):
            raise CheckFailed(f"{where}: no 'description' text")
        parameters = repair_required(spec.get("parameters"))
        if not isinstance(parameters, dict):
            raise CheckFailed(f"{where}: 'parameters' is not a JSON object")
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as error:
            raise CheckFailed(
                f"{where}: parameters is not a valid JSON Schema: {error.message}"
            ) from error
        if parameters.get("type") != "object" or not isinstance(parameters.get("properties"), dict):
            raise CheckFailed(
                f'{where}: parameters must be {{"type": "object", "properties": {{...}}}}'
            )
        unknown = set(parameters.get("required", [])) - set(parameters["properties"])
        if unknown:
            raise CheckFailed(
                f"{where}: required names unknown properties: {', '.join(sorted(unknown))}"
            )


Check = Callable[[str, str, str], None]

CHECKS: dict[str, Check] = {
    "mcq": check_mcq,
    "label": check_label,
    "extraction": check_extraction,
    "fermi": check_fermi,
    "json_schema": check_json_schema,
}
"""The validator kinds a skill may name, and their checks."""
