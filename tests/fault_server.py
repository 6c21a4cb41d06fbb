"""A fake OpenAI-compatible endpoint that answers any request and fails some on purpose.

`FaultyServer` answers every chat completion: with a JSON instance of the
request's `response_format` schema when one is given, with plain text
otherwise. A seeded share of requests fails instead (429 with Retry-After,
500, a garbage 200 body, truncated JSON, a hang past the client's timeout), so
the fault suite can drive whole jobs through every failure the retry layer
must absorb.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from dataclasses import dataclass
from typing import Any

from fakes import FakeOpenAIServer

_SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti", "ba", "de", "fi", "go", "hu", "ja")
_VOCABULARY = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("n", "s", "")]


@dataclass(frozen=True)
class FaultMix:
    """Share of requests that get each fault (the rest are answered well)."""

    rate_limited: float = 0.0  # 429 with Retry-After: 0
    server_error: float = 0.0  # 500
    garbage: float = 0.0  # 200 with a body that is not a completion
    truncated: float = 0.0  # 200 whose JSON content is cut in half
    hang: float = 0.0  # no answer until the client times out

    def pick(self, rng: random.Random) -> str | None:
        roll = rng.random()
        for name in ("rate_limited", "server_error", "garbage", "truncated", "hang"):
            share = getattr(self, name)
            if roll < share:
                return name
            roll -= share
        return None


class FaultyServer(FakeOpenAIServer):
    def __init__(self, faults: FaultMix | None = None, seed: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        self.faults = faults or FaultMix()
        self.delay = delay
        self._rng = random.Random(seed)
        self._serial = itertools.count()
        self._count_lock = threading.Lock()
        self.injected: dict[str, int] = {}

    def _next(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._count_lock:
            self.requests.append({"model": request.get("model")})  # bodies are not kept: 1000s
            serial = next(self._serial)
            fault = self.faults.pick(self._rng)
            if fault:
                self.injected[fault] = self.injected.get(fault, 0) + 1
        content = _answer(request, serial)
        if fault == "rate_limited":
            return {"status": 429, "headers": {"Retry-After": "0"}, "body": '{"error": "slow"}'}
        if fault == "server_error":
            return {"status": 500, "body": '{"error": "boom"}'}
        if fault == "garbage":
            return {"status": 200, "body": "<html>upstream hiccup</html>"}
        if fault == "truncated":
            return {"content": content[: max(1, len(content) // 2)], "delay": self.delay}
        if fault == "hang":
            return {"hang": True}
        return {"content": content, "delay": self.delay}


def _answer(request: dict[str, Any], serial: int) -> str:
    response_format = request.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema is not None:
        return json.dumps(instance(schema, schema, f"r{serial}"))
    return f"Answer {serial}: a plain reply with enough words to be a useful text number {serial}."


def instance(schema: dict[str, Any], root: dict[str, Any], tag: str) -> Any:
    """A value valid for `schema` (the subset pydantic emits), with unique text per `tag`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return instance(root.get("$defs", {})[name], root, tag)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance(schema[key][0], root, tag)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance(sub, root, f"{tag}-{name}") for name, sub in properties.items()}
    if kind == "array":
        items = schema.get("items", {"type": "string"})
        count = max(1, schema.get("minItems", 1))
        return [instance(items, root, f"{tag}-{i}") for i in range(count)]
    if kind == "integer":
        return schema.get("maximum", schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("maximum", schema.get("minimum", 1.0)))
    if kind == "boolean":
        return True
    if schema.get("pattern"):
        return "tool_" + "".join(c for c in tag.lower() if c.isalnum())[:40]
    words = random.Random(tag).choices(_VOCABULARY, k=14)
    text = f"{tag} " + " ".join(words)  # distinct texts, so dedup keeps most of them
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[: schema.get("maxLength", len(text))]
