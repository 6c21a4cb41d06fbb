"""A scripted chat model for the personas and synthesis tests.

Sends run concurrently, so replies cannot come from a fixed queue; this fake
answers from the prompt instead: the same prompt always gets the same reply,
and the reply names what it was asked about, so tests can follow each record.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

_TEXT = re.compile(r'"""\n(.*?)\n"""', re.DOTALL)
_PERSPECTIVE = re.compile(r"Describe one person likely to (\w+) this text")
_PARENT = re.compile(r"^Persona: (.*)$", re.MULTILINE)
_RELATION = re.compile(r"who is this persona's (.+?)\.")


def persona_for_text(text: str, perspective: str = "read") -> str:
    """The persona the fake infers from a text: its first words make it traceable."""
    words = " ".join(text.split()[:6])
    return f"Someone who would {perspective} '{words}' and thinks about such texts every week."


def _last(pattern: re.Pattern[str], prompt: str) -> str | None:
    """The last match: prompts open with a worked example, the real question comes last."""
    found = pattern.findall(prompt)
    return found[-1] if found else None


class PromptAwareFake(BaseChatModel):
    """Answers personas, expansion and synthesis prompts; `bad` substrings get invalid JSON."""

    delay: float = 0.0
    bad: tuple[str, ...] = ()
    calls: list[str] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "prompt-aware-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        # The whole conversation, so a re-ask (last message) is answered like the question.
        prompt = "\n".join(str(m.content) for m in messages)
        with self.lock:
            self.calls.append(prompt)
        if self.delay:
            time.sleep(self.delay)
        reply = (
            "not json at all"
            if any(b in prompt for b in self.bad)
            else json.dumps(self.reply(prompt))
        )
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])

    @staticmethod
    def reply(prompt: str) -> dict[str, Any]:
        text, perspective = _last(_TEXT, prompt), _last(_PERSPECTIVE, prompt)
        if text and perspective:
            return {
                "persona": persona_for_text(text, perspective),
                "role": "reader",
                "domain": "reading",
            }
        parent, relation = _last(_PARENT, prompt), _last(_RELATION, prompt)
        if parent and relation:
            return {
                "persona": f"The {relation} of ({parent[:80]}) who knows them well.",
                "role": relation,
                "domain": "people",
            }
        if parent and "math problem" in prompt:
            return {
                "problem": f"How many weeks are in 3 years for ({parent[:40]})?",
                "answer": "156",
            }
        if parent and "tool" in prompt:
            return {
                "name": "look_up_schedule",
                "description": "Look up the schedule for a given day.",
                "parameters": {
                    "type": "object",
                    "properties": {"day": {"type": "string", "description": "ISO date"}},
                    "required": ["day"],
                },
            }
        if parent:
            return {"prompt": f"Please help me plan my week ({parent[:40]})."}
        return {}
