"""Retries with backoff, one concurrency cap and one request-rate limiter.

`ChatOpenAI` is built with `max_retries=0` so that this module is the only
place that decides what is retried: timeouts, connection errors, 408/409/429
(honouring `Retry-After`), 5xx and a 200 whose body is not a chat completion
(`MalformedReplyError`), with exponential backoff and jitter. The limits are
shared by every agent in the process, so a fan-out of fifty `Send`s still
respects the endpoint's capacity. `is_retryable` is also what marks a reject
retryable, so `--resume` tries that input again.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar

import httpx
import openai
from typing_extensions import TypedDict  # pydantic (Studio schemas) needs it before Python 3.12

from synthgraph.tools.log import get_logger
from synthgraph.tools.settings import Settings, get_settings
from synthgraph.tools.usage import current_ledger

T = TypeVar("T")
log = get_logger(__name__)

_RETRY_STATUS = {408, 409, 429}


class RateLimiter:
    """At most `per_minute` acquisitions per rolling minute (evenly spaced)."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            time.sleep(wait)


class Limits:
    """The process-wide concurrency cap and optional requests-per-minute limiter."""

    def __init__(self, max_concurrency: int, requests_per_minute: float | None) -> None:
        self.semaphore = threading.BoundedSemaphore(max(1, max_concurrency))
        self.rate = RateLimiter(requests_per_minute) if requests_per_minute else None


@lru_cache(maxsize=8)
def _limits(max_concurrency: int, requests_per_minute: float | None) -> Limits:
    return Limits(max_concurrency, requests_per_minute)


def effective_concurrency(settings: Settings) -> int:
    """The embedded llama-server decodes `local_slots` requests at once: keep its slots
    busy and queue the rest here, where a waiting request cannot time out (unless the
    user set a cap)."""
    if settings.embedded and "max_concurrency" not in settings.model_fields_set:
        return settings.local_slots
    return settings.max_concurrency


def get_limits(settings: Settings | None = None) -> Limits:
    settings = settings or get_settings()
    return _limits(effective_concurrency(settings), settings.requests_per_minute)


class MalformedReplyError(openai.APIError):
    """The endpoint answered 200 with a body that is not a chat completion (a proxy's HTML
    page, an empty body, no `choices`): a fault of the endpoint, retried like a 5xx."""

    raw: str | None = None
    """The body as it came (a reject keeps it)."""


def not_a_completion(body: bytes) -> str | None:
    """What is wrong with a chat-completion response body; None when it is one."""
    try:
        data = json.loads(body)
    except ValueError:
        return "a body that is not JSON"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    choices = data.get("choices")
    if not isinstance(choices, list):
        return "a JSON object without 'choices'"
    return None if choices else "an empty 'choices' list"


class CheckedHttpClient(openai.DefaultHttpxClient):
    """The HTTP client of every chat model: a 200 that is not a completion raises
    `MalformedReplyError` here, instead of a JSON, type or index error deep in the
    SDK that would look like a bad record."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        if (
            kwargs.get("stream")
            or response.status_code != 200
            or not request.url.path.endswith("/chat/completions")
        ):
            return response
        problem = not_a_completion(response.content)
        if problem is None:
            return response
        excerpt = response.content[:200].decode("utf-8", "replace")
        response.close()
        error = MalformedReplyError(
            f"the endpoint answered 200 with {problem}: {excerpt!r}", request, body=None
        )
        error.raw = response.content.decode("utf-8", "replace")  # the rejects file keeps it
        raise error


@lru_cache(maxsize=1)
def checked_http_client() -> CheckedHttpClient:
    """One client for the process: its connection pool is shared by every model object."""
    return CheckedHttpClient()


def is_retryable(error: BaseException) -> bool:
    """Whether a later try may succeed: the endpoint failed, not the record.

    An error that wraps others may say so itself with a boolean `retryable` attribute.
    """
    declared = getattr(error, "retryable", None)
    if isinstance(declared, bool):
        return declared
    retried = (
        openai.APITimeoutError,
        openai.APIConnectionError,
        MalformedReplyError,
        httpx.TransportError,
    )
    if isinstance(error, retried):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in _RETRY_STATUS or error.status_code >= 500
    return False


def retry_after_seconds(error: BaseException) -> float | None:
    """The server's `Retry-After` (seconds or an HTTP date), if it sent one."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, settings: Settings, error: BaseException | None = None) -> float:
    """Retry-After when given, else exponential backoff with full jitter; capped."""
    hinted = retry_after_seconds(error) if error is not None else None
    if hinted is not None:
        return min(hinted, settings.backoff_max)
    ceiling = min(settings.backoff_max, settings.backoff_base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    record_id: str | None = None,
    settings: Settings | None = None,
) -> T:
    """Run one LLM request under the shared limits, retrying transient failures.

    Raises the last error once `max_retries` retries are spent, or at once for
    errors a retry cannot fix (400, 401, 404, ...).
    """
    settings = settings or get_settings()
    limits = get_limits(settings)
    ledger = current_ledger()
    # In batch mode a request waits for its batch and is never sent: it takes no slot or rate.
    limited = ledger is None or not ledger.batch
    attempt = 0
    while True:
        if limits.rate and limited:
            limits.rate.acquire()
        try:
            with limits.semaphore if limited else nullcontext():
                result = call()
            if attempt:
                log.info("llm.recovered", what=what, record_id=record_id, attempts=attempt + 1)
            return result
        except Exception as error:
            if not is_retryable(error) or attempt >= settings.max_retries:
                log.warning(
                    "llm.failed",
                    what=what,
                    record_id=record_id,
                    attempts=attempt + 1,
                    error=f"{type(error).__name__}: {error}",
                )
                raise
            delay = backoff_delay(attempt, settings, error)
            log.warning(
                "llm.retry",
                what=what,
                record_id=record_id,
                attempt=attempt + 1,
                status=getattr(error, "status_code", None),
                error=type(error).__name__,
                delay=round(delay, 3),
            )
            time.sleep(delay)
            attempt += 1


class Rejection(TypedDict):
    """One thing a graph could not make: the one shape of a reject in graph state and in files."""

    id: str
    stage: str
    error: str
    raw: str | None
    retryable: bool
    """The endpoint failed (down, rate-limited, garbage reply): a later try may succeed."""


def rejection(
    record_id: str, stage: str, error: BaseException | str, raw: str | None = None
) -> Rejection:
    """The reject of `record_id` at `stage`; an exception's `raw` reply and retryability are kept."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        "id": record_id,
        "stage": stage,
        "error": message,
        "raw": raw or getattr(error, "raw", None),
        "retryable": not isinstance(error, str) and is_retryable(error),
    }
