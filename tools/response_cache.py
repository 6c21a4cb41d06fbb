"""The response cache: a request asked again is answered from disk (or Redis), not the endpoint.

It is LangChain's cache interface (`BaseCache`), set on every `ChatOpenAI` the one LLM factory
builds, so the key is what the endpoint would see:
- LangChain's `llm_string`: endpoint, model, sampling parameters, response format or tools
  (less the timeout and retry count, which do not change a reply);
- the messages;
- the input it is asked for, and its sample index there: the k-th identical request of one
  input is sample k, so k samples at temperature > 0 stay k distinct replies, and a re-run
  gets the same k back whatever order its threads run in.

A changed prompt file changes the messages of the calls it feeds, and only those miss.
The store is SQLite under the data dir, or Redis when `SYNTHGRAPH_CACHE_URL` is set (shared by
processes and machines). It holds prompts' hashes and replies (redacted), never keys.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from langchain_core.caches import BaseCache
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation

from synthgraph.tools.log import redact, url_without_credentials
from synthgraph.tools.usage import current_input, current_ledger

CACHE_HIT = "synthgraph_cache_hit"
"""Set in a cached reply's `response_metadata`, so the ledger counts a hit, not a call."""

# Parts of LangChain's llm_string that do not change what the endpoint answers.
_NOT_IN_KEY = {"request_timeout", "max_retries", "openai_api_key", "http_client"}


_reserved: ContextVar[dict[str, str] | None] = ContextVar("synthgraph_samples", default=None)
"""Sample indexes the current request (with its retries) took: request key → `<input>#<k>`."""


@contextmanager
def reserving_samples() -> Iterator[None]:
    """One async request and its retries: a retry asks for the sample index its first try took.

    Sync requests keep it per thread; on an event loop many requests share one thread, so the
    async path keeps it in a context variable (LangChain runs the cache's async lookups in
    copies of the caller's context, which share this dict)."""
    token = _reserved.set({})
    try:
        yield
    finally:
        _reserved.reset(token)


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...
    def clear(self) -> None: ...


_opening = threading.Lock()


class SqliteStore:
    """One table in one file; WAL, so several processes may read and write it at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        # Workers start together and may each open the store: one at a time turns on WAL.
        with _opening, self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, value TEXT)"
            )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, value))

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM replies")


class CacheUnavailableError(RuntimeError):
    """The Redis cache (`SYNTHGRAPH_CACHE_URL`) failed. The record is not at fault, so its
    reject is retryable: `--resume` asks again once the cache answers."""

    retryable = True


class RedisStore:
    """Keys under one prefix in a Redis database (`redis://[:password@]host:port/db`).

    It PINGs when built, so an unreachable or refusing server fails a run's first call, before
    any request reaches the endpoint; the timeouts keep a silent host from hanging it.
    Its errors name the server, never the password.
    """

    def __init__(self, url: str, prefix: str = "synthgraph:reply:", timeout: float = 5.0) -> None:
        try:
            import redis  # the `redis` extra; only when a cache URL is set
        except ImportError as error:
            raise CacheUnavailableError(
                "SYNTHGRAPH_CACHE_URL is set but the redis client is not installed: "
                "pip install 'synthgraph[redis]'"
            ) from error
        self.where = url_without_credentials(url)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, ValueError)
        self._prefix = prefix
        self._client = self._call(
            redis.Redis.from_url,
            url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        self._call(self._client.ping)

    def get(self, key: str) -> str | None:
        value = self._call(self._client.get, self._prefix + key)
        return value if isinstance(value, str) else None

    def put(self, key: str, value: str) -> None:
        self._call(self._client.set, self._prefix + key, value)

    def clear(self) -> None:
        self._call(self._delete_all)

    def _delete_all(self) -> None:
        """Delete this store's keys (and only these), a thousand per command."""
        batch: list[str] = []
        for key in self._client.scan_iter(f"{self._prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._client.delete(*batch)
                batch.clear()
        if batch:
            self._client.delete(*batch)

    def _call(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except self._errors as error:
            raise CacheUnavailableError(
                f"the response cache at {self.where} (SYNTHGRAPH_CACHE_URL) failed: {error}"
            ) from error


class ResponseCache(BaseCache):
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending = threading.local()
        self._samples: dict[str, int] = {}  # sample indexes outside any run
        self._lock = threading.Lock()

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        request = request_key(prompt, llm_string)
        pending = self._reservations()
        # A retry of a request that failed keeps its sample index.
        sample = pending[request] if request in pending else self._next_sample(request)
        pending[request] = sample  # `update` stores the reply under it; a retry keeps it
        value = self.store.get(f"{request}:{sample}")
        if value is None:
            return None
        pending.pop(request, None)
        return [_generation(item) for item in json.loads(value)]

    def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
        request = request_key(prompt, llm_string)
        pending = self._reservations()
        sample = pending.pop(request) if request in pending else self._next_sample(request)
        # Redacted like checkpoints: an endpoint that echoes a key must not put it on disk.
        replies = redact([_stored(g) for g in return_val if isinstance(g, ChatGeneration)])
        if replies:
            self.store.put(f"{request}:{sample}", json.dumps(replies, ensure_ascii=False))

    def clear(self, **kwargs: Any) -> None:
        self.store.clear()

    def _reservations(self) -> dict[str, str]:
        """Sample indexes taken by the request in progress (and not stored yet)."""
        scoped = _reserved.get()
        if scoped is not None:
            return scoped
        samples: dict[str, str] = self._pending.__dict__.setdefault("samples", {})
        return samples

    def _next_sample(self, request: str) -> str:
        """`<input id>#<k>`: which input asked, and how many times it asked this before."""
        scope = f"{current_input()}\x00{request}"
        ledger = current_ledger()
        if ledger is not None:
            index = ledger.next_sample(scope)
        else:
            with self._lock:
                index = self._samples[scope] = self._samples.get(scope, -1) + 1
        return f"{current_input()}#{index}"


def request_key(prompt: str, llm_string: str) -> str:
    """A hash of what the endpoint would be asked (see the module's docstring)."""
    model, _, params = llm_string.partition("---")
    try:
        serialized = json.loads(model)
        kwargs = serialized.get("kwargs", {})
        serialized["kwargs"] = {k: v for k, v in kwargs.items() if k not in _NOT_IN_KEY}
        model = json.dumps(serialized, sort_keys=True)
    except (ValueError, AttributeError):
        pass  # not LangChain's serialized form: key on it as it is
    return hashlib.sha256(f"{model}\n{params}\n{prompt}".encode()).hexdigest()


def _stored(generation: ChatGeneration) -> dict[str, Any]:
    message = generation.message
    return {
        "content": message.content,
        "tool_calls": getattr(message, "tool_calls", []),
        "response_metadata": _json_safe(message.response_metadata),
        "usage_metadata": _json_safe(getattr(message, "usage_metadata", None)),
        "generation_info": _json_safe(generation.generation_info),
    }


def _generation(item: dict[str, Any]) -> ChatGeneration:
    message = AIMessage(
        content=item["content"],
        tool_calls=item.get("tool_calls") or [],
        response_metadata={**(item.get("response_metadata") or {}), CACHE_HIT: True},
        usage_metadata=item.get("usage_metadata"),
    )
    return ChatGeneration(message=message, generation_info=item.get("generation_info"))


def _json_safe(value: Any) -> Any:
    """`value` if it survives JSON (metadata may hold client objects), else None."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=4)
def response_cache(path: Path | None, url: str | None) -> ResponseCache:
    """The process's cache on one store: Redis at `url`, or SQLite at `path`.

    A Redis that does not answer raises `CacheUnavailableError` (never cached: the next call
    tries again); a run asked for a shared cache never silently goes on without it."""
    if url:
        return ResponseCache(RedisStore(url))
    assert path is not None
    return ResponseCache(SqliteStore(path))
