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

import asyncio
import json
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar

import httpx
import httpx2  # the openai client's HTTP library (not httpx)
import openai
from typing_extensions import TypedDict  # pydantic (Studio schemas) needs it before Python 3.12

from synthgraph.tools.log import get_logger
from synthgraph.tools.response_cache import reserving_samples
from synthgraph.tools.settings import Settings, get_settings
from synthgraph.tools.usage import current_ledger

T = TypeVar("T")
log = get_logger(__name__)

_RETRY_STATUS = {408, 409, 429}


class RateLimiter:
    """At most `per_minute` acquisitions per rolling minute (evenly spaced), from threads and
    event loops alike: a slot is reserved under a lock held for no wait, then waited for."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take the next slot; how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        return wait

    def acquire(self) -> None:
        wait = self._reserve()
        if wait > 0:
            time.sleep(wait)

    async def aacquire(self) -> None:
        wait = self._reserve()
        if wait > 0:
            await asyncio.sleep(wait)


class Limits:
    """The process-wide concurrency cap and optional requests-per-minute limiter.

    Threads share one semaphore; each event loop gets its own asyncio semaphore of the same
    size (an asyncio primitive belongs to one loop). The rate limiter serves both."""

    def __init__(self, max_concurrency: int, requests_per_minute: float | None) -> None:
        self.size = max(1, max_concurrency)
        self.semaphore = threading.BoundedSemaphore(self.size)
        self.rate = RateLimiter(requests_per_minute) if requests_per_minute else None
        self._loop_semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self.gate: Callable[[], AbstractAsyncContextManager[Any]] | None = None
        """A Ray worker's cluster-wide slots (`graphs/ray_executor.py`): they cap and rate-limit
        the async requests of all workers at once, in place of this process's cap."""

    def async_slot(self) -> AbstractAsyncContextManager[Any]:
        """What an async request holds while it runs: the cluster's gate, else the loop's cap."""
        return self.gate() if self.gate else self.async_semaphore()

    def async_semaphore(self) -> asyncio.Semaphore:
        """The cap of the running event loop."""
        loop = asyncio.get_running_loop()
        semaphore = self._loop_semaphores.get(loop)
        if semaphore is None:
            semaphore = self._loop_semaphores[loop] = asyncio.Semaphore(self.size)
        return semaphore


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


def check_completion(request: httpx2.Request, response: httpx2.Response, stream: bool) -> None:
    """Raise `MalformedReplyError` for a read 200 chat-completion response that is not one."""
    if stream or response.status_code != 200 or not request.url.path.endswith("/chat/completions"):
        return
    problem = not_a_completion(response.content)
    if problem is None:
        return
    excerpt = response.content[:200].decode("utf-8", "replace")
    error = MalformedReplyError(
        f"the endpoint answered 200 with {problem}: {excerpt!r}", request, body=None
    )
    error.raw = response.content.decode("utf-8", "replace")  # the rejects file keeps it
    raise error


class CheckedHttpClient(openai.DefaultHttpxClient):
    """The HTTP client of every chat model: a 200 that is not a completion raises
    `MalformedReplyError` here, instead of a JSON, type or index error deep in the
    SDK that would look like a bad record."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        try:
            check_completion(request, response, bool(kwargs.get("stream")))
        except MalformedReplyError:
            response.close()
            raise
        return response


class CheckedAsyncHttpClient(openai.DefaultAsyncHttpxClient):
    """`CheckedHttpClient` for the async path."""

    async def send(self, request: Any, **kwargs: Any) -> Any:
        response = await super().send(request, **kwargs)
        try:
            check_completion(request, response, bool(kwargs.get("stream")))
        except MalformedReplyError:
            await response.aclose()
            raise
        return response


def _pool_limits() -> httpx2.Limits:
    """A kept-alive connection per request in flight (the SDK keeps 100): a wide fan-out
    must not reconnect for every request."""
    size = get_limits().size
    return httpx2.Limits(max_connections=max(1000, size), max_keepalive_connections=max(100, size))


@lru_cache(maxsize=1)
def checked_http_client() -> CheckedHttpClient:
    """One client for the process: its connection pool is shared by every model object."""
    return CheckedHttpClient(limits=_pool_limits())


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CheckedAsyncHttpClient] = (
    weakref.WeakKeyDictionary()
)


def checked_async_http_client() -> CheckedAsyncHttpClient | None:
    """The running event loop's client (its connections belong to that loop); None outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = CheckedAsyncHttpClient(limits=_pool_limits())
    return client


async def aclose_http_client() -> None:
    """Close the running event loop's client, before the loop ends."""
    client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


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


class _Attempts:
    """The retry policy of one request, shared by the sync and async loops: which limits
    apply, whether an error is retried and after how long, what is logged."""

    def __init__(self, what: str, record_id: str | None, settings: Settings | None) -> None:
        self.what, self.record_id = what, record_id
        self.settings = settings or get_settings()
        self.limits = get_limits(self.settings)
        ledger = current_ledger()
        # In batch mode a request waits for its batch and is never sent: it takes no slot or rate.
        self.limited = ledger is None or not ledger.batch
        self.rate = self.limits.rate if self.limited else None
        self.number = 0

    def succeeded(self) -> None:
        if self.number:
            log.info(
                "llm.recovered", what=self.what, record_id=self.record_id, attempts=self.number + 1
            )

    def delay_after(self, error: Exception) -> float:
        """How long to wait before the next try; raises `error` when there is none."""
        if not is_retryable(error) or self.number >= self.settings.max_retries:
            log.warning(
                "llm.failed",
                what=self.what,
                record_id=self.record_id,
                attempts=self.number + 1,
                error=f"{type(error).__name__}: {error}",
            )
            raise error
        delay = backoff_delay(self.number, self.settings, error)
        log.warning(
            "llm.retry",
            what=self.what,
            record_id=self.record_id,
            attempt=self.number + 1,
            status=getattr(error, "status_code", None),
            error=type(error).__name__,
            delay=round(delay, 3),
        )
        self.number += 1
        return delay


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
    attempts = _Attempts(what, record_id, settings)
    slot: AbstractContextManager[Any] = (
        attempts.limits.semaphore if attempts.limited else nullcontext()
    )
    while True:
        if attempts.rate:
            attempts.rate.acquire()
        try:
            with slot:
                result = call()
        except Exception as error:
            time.sleep(attempts.delay_after(error))
            continue
        attempts.succeeded()
        return result


async def acall_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    record_id: str | None = None,
    settings: Settings | None = None,
) -> T:
    """`call_with_retries` on an event loop: the same policy, the loop's cap, no thread.
    A retry keeps the request's sample index in the response cache."""
    attempts = _Attempts(what, record_id, settings)
    slot: AbstractAsyncContextManager[Any] = (
        attempts.limits.async_slot() if attempts.limited else nullcontext()
    )
    with reserving_samples():
        while True:
            if attempts.rate:
                await attempts.rate.aacquire()
            try:
                async with slot:
                    result = await call()
            except Exception as error:
                await asyncio.sleep(attempts.delay_after(error))
                continue
            attempts.succeeded()
            return result


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
