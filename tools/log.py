"""Structured logging: configured by the CLI only, never at import time.

The LangGraph server configures structlog itself, so library code only calls
`get_logger()`; `configure_logging()` is for entry points we own.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from synthgraph.tools.settings import get_settings

_SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.IGNORECASE)
# Provider keys that may leak through error messages or URLs.
_SECRET_PATTERNS = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
REDACTED = "**redacted**"


def get_logger(name: str | None = None, **bound: Any) -> Any:
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)


def _known_secrets() -> list[str]:
    settings = get_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    return [key] if len(key) >= 4 else []


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return _SECRET_PATTERNS.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEYS.search(str(k)) else _scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no API key, token or password reaches a log line."""
    secrets = _known_secrets()
    for key in list(event):
        event[key] = REDACTED if _SECRET_KEYS.search(key) else _scrub(event[key], secrets)
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
