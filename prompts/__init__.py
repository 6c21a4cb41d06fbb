"""Prompt files and the one way to load and fill them.

A prompt is a text file under this folder. It may be split into chat roles by
lines that hold only `[system]`, `[user]` or `[assistant]`; a file with no
such line is one user message. Placeholders are `{{ name }}`; single braces
are left alone, so JSON examples need no escaping.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any

_ROLE_LINE = re.compile(r"^\[(system|user|assistant)\]\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptError(KeyError):
    """A prompt file is missing or a placeholder has no value."""


@lru_cache(maxsize=256)
def load_prompt(name: str) -> str:
    """The raw text of `prompts/<name>` (e.g. `personas/text_to_persona.md`)."""
    path = resources.files(__name__).joinpath(name)
    if not path.is_file():
        raise PromptError(f"no prompt file {name!r} under synthgraph.prompts")
    return path.read_text(encoding="utf-8")


def prompt_exists(name: str) -> bool:
    return resources.files(__name__).joinpath(name).is_file()


def list_prompts(folder: str) -> list[str]:
    """Names of the prompt files directly in `folder` (sorted)."""
    base = resources.files(__name__).joinpath(folder)
    if not base.is_dir():
        return []
    return sorted(f"{folder}/{p.name}" for p in base.iterdir() if p.is_file())


def fill(template: str, **values: Any) -> str:
    """Replace `{{ name }}` placeholders; a missing value is an error, not a blank."""

    def value_for(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise PromptError(f"prompt placeholder {{{{ {key} }}}} has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(value_for, template)


def render_messages(name: str, **values: Any) -> list[tuple[str, str]]:
    """The prompt as `(role, text)` chat messages, placeholders filled."""
    text = load_prompt(name)
    parts = _ROLE_LINE.split(text)
    if len(parts) == 1:
        return [("user", fill(text, **values).strip())]
    messages = [
        (role, fill(body, **values).strip())
        for role, body in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return [(role, body) for role, body in messages if body]
