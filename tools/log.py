"""Structured logging: configured by the CLI only, never at import time.

The LangGraph server configures structlog itself, so library code only calls
`get_logger()`; `configure_logging()` is for entry points we own.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import BaseModel, SecretStr

from synthgraph.tools.settings import get_settings

# A field with one of these names holds a secret whatever its value ("max_tokens" does not).
_SECRET_KEYS = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE
)
# Provider keys and bearer tokens that may leak through error messages or URLs.
_SECRET_PATTERNS = r"\bsk-[A-Za-z0-9_\-]{8,}|\bBearer\s+[A-Za-z0-9._\-]{8,}"
# Shorter configured keys are placeholders (`ollama`, `EMPTY`): masking them would mangle data.
_MIN_SECRET_LENGTH = 8
REDACTED = "**redacted**"
T = TypeVar("T")


def get_logger(name: str | None = None, **bound: Any) -> Any:
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)


def _known_secrets() -> tuple[str, ...]:
    """The value of every `SecretStr` setting (the API keys of all roles), longest first."""
    try:
        settings = get_settings()
    except ValueError:  # invalid settings: nothing was sent anywhere with them yet
        return ()
    values = {
        value.get_secret_value()
        for value in (getattr(settings, name) for name in type(settings).model_fields)
        if isinstance(value, SecretStr)
    }
    return tuple(sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True))


@lru_cache(maxsize=8)
def _secrets_pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """One regex per set of known secrets (settings change in tests), compiled once."""
    return re.compile("|".join([*map(re.escape, secrets), _SECRET_PATTERNS]))


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, bytes):  # surrogateescape: any bytes round-trip unchanged
        text = value.decode("utf-8", "surrogateescape")
        return pattern.sub(REDACTED, text).encode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v, pattern)
            for k, v in value.items()
        }
    if isinstance(value, list | set | frozenset):
        return type(value)(_scrub(v, pattern) for v in value)
    if isinstance(value, tuple):
        items = [_scrub(v, pattern) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, BaseModel):  # chat messages, structured outputs
        names = list(type(value).model_fields)
        return value.model_copy(update={k: _scrub(getattr(value, k), pattern) for k in names})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value) if f.init]
        return dataclasses.replace(value, **{k: _scrub(getattr(value, k), pattern) for k in names})
    if isinstance(value, BaseException):  # serializers store it as its repr anyway
        return pattern.sub(REDACTED, repr(value))
    return value


def redact(value: T) -> T:
    """`value` without secrets: the configured API keys, `sk-...` keys and bearer tokens.

    Strings, bytes, dicts (a field named like `api_key` or `Authorization` is
    masked whole), lists, tuples, sets, pydantic models and dataclasses are
    copied with every string redacted; an exception becomes its redacted repr;
    other values come back as they are. Everything written to disk or printed
    passes through here: endpoints echo keys in their errors.
    """
    result: T = _scrub(value, _secrets_pattern(_known_secrets()))
    return result


def url_without_credentials(url: str) -> str:
    """`url` as it may be shown: no user, password or query (`?password=`)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def tool_error_text(error: Exception) -> str:
    """A failed tool's answer to the model (`handle_tool_error=`): the reason, redacted."""
    return redact(str(error))


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no API key, token or password reaches a log line."""
    for key in list(event):
        event[key] = REDACTED if _SECRET_KEYS.search(key) else redact(event[key])
    return event


def configure_logging(json_lines: bool | None = None, level: str = "INFO") -> None:
    """Pretty logs on a TTY, JSON lines otherwise (or when asked), to stderr.

    Run id, graph, node and record id are bound with `structlog.contextvars`,
    so every line says where it came from.
    """
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    # The handler filters too: a library that sets its own logger to DEBUG on import (bm25s
    # does) would otherwise print its debug records past the root's level.
    handler.setLevel(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays quiet unless something is wrong.
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "chromadb",
        "sentence_transformers",
        "urllib3",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
