"""The validators of instruction pairs (tools/instruction_checks.py): each accepts the form its
skill asks for and refuses a wrong one with the reason."""

from __future__ import annotations

import json

import pytest

from synthgraph.tools.instruction_checks import (
    CHECKS,
    Check,
    CheckFailed,
    check_extraction,
    check_fermi,
    check_json_schema,
    check_label,
    check_mcq,
    label_set,
    option_letters,
    repair_required,
    repair_tool_specs,
)

TEXT = "Ada Lovelace was born in London in 1815. She wrote the first published algorithm."


def test_the_known_validator_kinds() -> None:
    assert set(CHECKS) == {"mcq", "label", "extraction", "fermi", "json_schema"}


QUESTION = "Where was Ada Lovelace born?\n(A) Paris\n(B) London\n(C) Rome\n(D) Berlin"
REVIEWS = "Labels: positive, negative, or neutral\n\nReview: The battery died in a day."
CLASSIFY = "Classify the review."
EXTRACT = "Extract the person and the city as JSON."
ESTIMATE = "How many piano tuners work in Chicago?"

# (check, text, instruction, answer) of the form each skill asks for.
ACCEPTED = [
    (check_mcq, TEXT, QUESTION, "The text says she was born in London.\nAnswer: B"),
    (check_mcq, TEXT, QUESTION, "**Correct answer:** (B) London"),
    (check_mcq, TEXT, QUESTION, "The answer is B."),
    (check_mcq, TEXT, "Where was she born? A) Paris B) London C) Rome", "B) London"),
    (check_mcq, TEXT, "Where was she born?\nA. Paris\nB. London\nC. Rome", "B"),
    (check_mcq, TEXT, "Born where?\n- **A)** Paris\n- **B)** London\n- **C)** Rome", "Answer: (B)"),
    (check_label, REVIEWS, CLASSIFY, "negative"),
    (check_label, REVIEWS, CLASSIFY, "  Negative. "),
    (check_label, REVIEWS, CLASSIFY, '"negative"'),
    (check_label, REVIEWS, CLASSIFY, "Label: negative"),
    (check_extraction, TEXT, EXTRACT, '```json\n{"name": "Ada  Lovelace", "city": "london", "year": 1815}\n```'),
    (check_extraction, TEXT, EXTRACT, '{"people": [{"name": "Ada Lovelace"}], "work": "the first published\\nalgorithm", "died": null}'),
    (check_fermi, TEXT, ESTIMATE, "Chicago has 3 million people ...\nAnswer: about 2,000 piano tuners."),
    (check_fermi, TEXT, ESTIMATE, "Answer: 3 million litres per day"),
    (check_fermi, TEXT, ESTIMATE, "Answer: 1e6 kg"),
    (check_fermi, TEXT, ESTIMATE, "Answer: 2.5 x 10^6 people"),
    (check_fermi, TEXT, ESTIMATE, "Answer: roughly $3 million"),
    (check_fermi, TEXT, ESTIMATE, "**Answer: 40%**"),
]  # fmt: skip

# (check, text, instruction, answer, the reason given)
REFUSED = [
    (check_mcq, TEXT, "Where was she born?\n(A) Paris\n(B) London", "Answer: B", "at least 3"),
    (check_mcq, TEXT, "Where was she born? Name the city.", "Answer: B", "lists 0 options"),
    (check_mcq, TEXT, QUESTION, "She was born in London.", "names no option"),
    (check_mcq, TEXT, QUESTION, "Answer: B and C", "names 2 options"),
    (check_mcq, TEXT, QUESTION, "Answer: A\nOn reflection, Answer: B", "names 2 options"),
    (check_mcq, TEXT, QUESTION, "Answer: E", "option E, which the question does not list"),
    (check_label, REVIEWS, CLASSIFY, "somewhat negative", "not one of the labels: positive, negative, neutral"),
    (check_label, REVIEWS, CLASSIFY, "negative\nThe review complains about the battery.", "not one of the labels"),
    (check_label, "Review: The battery died in a day.", CLASSIFY, "negative", "no label set is stated"),
    (check_extraction, TEXT, EXTRACT, '{"name": "Ada Lovelace", "city": "Paris"}', "not found in the text: 'Paris'"),
    (check_extraction, TEXT, EXTRACT, "Name: Ada Lovelace", "the answer is not JSON"),
    (check_extraction, TEXT, EXTRACT, '["Ada Lovelace"]', "not a non-empty JSON object"),
    (check_extraction, TEXT, EXTRACT, "{}", "not a non-empty JSON object"),
    (check_fermi, TEXT, ESTIMATE, "Answer: 2000", "does not end with a number and a unit"),
    (check_fermi, TEXT, ESTIMATE, "Answer: many piano tuners", "does not end with a number and a unit"),
    (check_fermi, TEXT, ESTIMATE, "Answer: 2,000 tuners.\nThis is only a rough estimate.", "does not end with"),
    (check_fermi, TEXT, ESTIMATE, "", "does not end with a number and a unit"),
]  # fmt: skip


@pytest.mark.parametrize(("check", "text", "instruction", "answer"), ACCEPTED)
def test_a_validator_accepts_the_form_of_its_skill(
    check: Check, text: str, instruction: str, answer: str
) -> None:
    check(text, instruction, answer)


@pytest.mark.parametrize(("check", "text", "instruction", "answer", "reason"), REFUSED)
def test_a_validator_refuses_a_wrong_form_with_the_reason(
    check: Check, text: str, instruction: str, answer: str, reason: str
) -> None:
    with pytest.raises(CheckFailed, match=reason):
        check(text, instruction, answer)


def test_option_letters_stop_at_a_gap_and_ignore_sentence_ends() -> None:
    assert option_letters("(A) x\n(B) y\n(D) z") == ["A", "B"]
    assert option_letters("It needs vitamin A. Then B. Then C.") == []


def test_label_set_is_read_from_the_task_first() -> None:
    assert label_set(REVIEWS, "Classify it. Labels: spam | ham") == ["spam", "ham"]
    assert label_set("", "Labels: spam or ham. Reply with the label only.") == ["spam", "ham"]
    assert label_set(REVIEWS, "Classify it.") == ["positive", "negative", "neutral"]
    assert label_set("**Categories:** sports / politics", "") == ["sports", "politics"]


# --- json_schema (tool specs) ----------------------------------------------------------------
def spec(parameters: object, name: str = "get_weather") -> dict[str, object]:
    return {"name": name, "description": "Weather of a city.", "parameters": parameters}


GOOD_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
# What small models write: `"required": true` inside the properties.
MODEL_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "required": True},
        "days": {"type": "integer", "required": False},
        "options": {
            "type": "object",
            "required": True,
            "properties": {"units": {"type": "string", "required": True}},
        },
    },
}


def test_json_schema_accepts_valid_tool_specs() -> None:
    check_json_schema(json.dumps([spec(GOOD_PARAMETERS)]), "", "")
    check_json_schema(f"```json\n{json.dumps([spec(GOOD_PARAMETERS)])}\n```", "", "")


def test_required_true_inside_properties_is_repaired_into_the_required_list() -> None:
    assert repair_required(MODEL_PARAMETERS) == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "options": {
                "type": "object",
                "properties": {"units": {"type": "string"}},
                "required": ["units"],
            },
        },
        "required": ["city", "options"],
    }
    assert MODEL_PARAMETERS["properties"]["city"]["required"] is True  # the input is left alone
    specs = json.dumps([spec(MODEL_PARAMETERS)])
    check_json_schema(specs, "", "")  # repaired before it is checked
    repaired = json.loads(repair_tool_specs(specs))
    assert repaired[0]["parameters"]["required"] == ["city", "options"]
    assert repair_tool_specs("not json") == "not json"


@pytest.mark.parametrize(
    ("specs", "reason"),
    [
        ("[{", "not JSON"),
        ('{"name": "x"}', "not a non-empty JSON array"),
        ("[]", "not a non-empty JSON array"),
        (
            json.dumps([{"description": "d", "parameters": GOOD_PARAMETERS}]),
            "tool 0: no 'name'",
        ),
        (json.dumps([spec("city: str")]), r"tool 0 \(get_weather\): 'parameters' is not a JSON"),
        (
            json.dumps([spec({"type": "object", "properties": {"city": {"type": "strng"}}})]),
            "not a valid JSON Schema",
        ),
        (json.dumps([spec({"type": "string"})]), "parameters must be"),
        (
            json.dumps(
                [spec(GOOD_PARAMETERS), spec({**GOOD_PARAMETERS, "required": ["town"]}, "b")]
            ),
            r"tool 1 \(b\): required names unknown properties: town",
        ),
    ],
)
def test_json_schema_refuses_bad_tool_specs(specs: str, reason: str) -> None:
    with pytest.raises(CheckFailed, match=reason):
        check_json_schema(specs, "", "")
