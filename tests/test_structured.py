"""The structured-output helper with LangChain fake chat models."""

from __future__ import annotations

import pytest
from fakes import scripted_model
from pydantic import BaseModel, Field

from synthgraph.agents.llm import StructuredOutputError, invoke_structured, use_chat_models
from synthgraph.graphs.smoke import graph as smoke_graph


class Persona(BaseModel):
    persona: str
    role: str = Field(min_length=2)


def test_valid_reply_is_returned_as_the_schema() -> None:
    model = scripted_model({"persona": "A nurse in a rural clinic.", "role": "nurse"})
    result = invoke_structured(Persona, [("user", "who?")], model=model, method="json_mode")
    assert result == Persona(persona="A nurse in a rural clinic.", role="nurse")


def test_code_fences_are_tolerated() -> None:
    model = scripted_model('```json\n{"persona": "p", "role": "chef"}\n```')
    assert (
        invoke_structured(Persona, [("user", "who?")], model=model, method="json_mode").role
        == "chef"
    )


def test_validation_failure_is_reasked_then_succeeds() -> None:
    model = scripted_model({"persona": "p", "role": "x"}, {"persona": "p", "role": "pilot"})
    assert (
        invoke_structured(Persona, [("user", "who?")], model=model, method="json_mode").role
        == "pilot"
    )


def test_bounded_reasking_ends_in_one_typed_error_with_the_raw_text() -> None:
    model = scripted_model("no json here", "still none", "nope")
    with pytest.raises(StructuredOutputError) as caught:
        invoke_structured(Persona, [("user", "who?")], model=model, method="json_mode")
    assert caught.value.raw == "nope"
    assert len(caught.value.errors) == 3  # first try + settings.structured_retries (2)


def test_graph_runs_with_an_overridden_role_model() -> None:
    fake = scripted_model({"language": "Fortran", "reason": "It is fast at numbers."})
    with use_chat_models(generator=fake):
        result = smoke_graph.invoke({"description": "numeric simulations"})
    assert result == {"language": "Fortran", "reason": "It is fast at numbers."}
