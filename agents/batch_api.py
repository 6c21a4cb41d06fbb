"""Batch mode (`--batch`): a run's chat requests go through the endpoint's Batch API.

- `batch_http_client()` is the HTTP client of every chat model in a batch run (`agents/llm.py`
  picks it). Its transport does not send a chat completion: it hands the body to the run's
  `Collector`, blocks the calling thread until the batch answers, and returns the answer as
  the HTTP response. So everything above it (structured output, re-asking, retries, the
  response cache, the ledger, rejects) works unchanged. A request the batch did not answer
  (expired, cancelled, a failed batch) comes back as a 503: `call_with_retries` asks again,
  and the request goes alone into a later batch.
- The `Collector` (one per run: `collecting(run)`, opened by the executor) gathers the
  requests of a LangGraph super-step. It submits them once no request came for
  `batch_quiet_seconds`, or once it holds `batch_size`: one JSONL file and one batch per
  endpoint and model (a batch takes one model), each request's `custom_id` being
  `run:record:node:k`. It records the batch in the run's `batches.jsonl` before polling it
  (with backoff up to `batch_poll_seconds`), then hands each waiting thread its answer.
- Resume: the batches of an earlier attempt that were never collected are polled to their
  end and their answers kept by the hash of the request body. A request with the same body
  (the graph is seeded and upstream replies come from the cache) takes that answer at once,
  with no new batch.

The Batch API is OpenAI's (`/v1/files`, `/v1/batches`); vLLM's `run-batch` reads the same JSONL.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import httpx2  # the openai client's HTTP library (not httpx)
import openai
from langchain_core.runnables import ensure_config

from synthgraph.agents.resilience import CheckedHttpClient, call_with_retries, is_retryable
from synthgraph.tools.io import InputError, read_jsonl
from synthgraph.tools.log import get_logger
from synthgraph.tools.runs import Run
from synthgraph.tools.settings import Settings, get_settings
from synthgraph.tools.usage import current_input, current_ledger

log = get_logger(__name__)

BATCHES = "batches.jsonl"
"""In the run folder: one line per submitted batch, and one `{batch_id, collected}` once read."""
CHAT_PATH: Final = "/v1/chat/completions"
NO_BATCH_API = (
    "the embedded model has no Batch API: --batch needs an endpoint (SYNTHGRAPH_BASE_URL)"
)
_ENDED = {"completed", "failed", "expired", "cancelled"}

Result = tuple[int, Any]
"""An answer as the endpoint would have sent it: HTTP status and JSON body."""


def body_hash(body: Mapping[str, Any]) -> str:
    """What a request asks, whatever its key order: how a resumed run finds its answer."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def unanswered(why: str) -> Result:
    """A request the batch did not answer: a 503, so it is retried (alone, in a later batch)."""
    return 503, {"error": {"message": why, "type": "batch_unanswered"}}


def results_of(jsonl: str) -> dict[str, Result]:
    """custom_id → answer, from a batch's output or error file."""
    results: dict[str, Result] = {}
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        response = item.get("response") or {}
        if response.get("status_code") is not None:
            results[item["custom_id"]] = (int(response["status_code"]), response.get("body"))
        else:  # expired or cancelled: no response, only why
            error = item.get("error") or {}
            why = f"the batch did not answer it ({error.get('code')}: {error.get('message')})"
            results[item["custom_id"]] = unanswered(why)
    return results


@dataclass
class _Request:
    custom_id: str
    base_url: str
    body: dict[str, Any]
    digest: str
    result: Result | None = None
    answered: threading.Event = field(default_factory=threading.Event)

    def answer(self, result: Result) -> None:
        self.result = result
        self.answered.set()


class Collector:
    """A run's requests in batches: collect, submit, record, poll, answer (see the module)."""

    def __init__(self, run: Run, settings: Settings) -> None:
        self.run = run
        self.settings = settings
        self._lock = threading.Condition()
        self._pending: list[_Request] = []
        self._asked: dict[str, _Request] = {}
        """custom_id → a request a thread waits on, submitted or not."""
        self._last_arrival = 0.0
        self._closed = False
        self._counters: Counter[tuple[str, str]] = Counter()
        self._recovered: dict[str, list[Result]] = {}
        """Body hash → answers of earlier attempts' batches, each taken once."""
        self._awaited: Counter[str] = Counter()
        """Body hashes in earlier attempts' batches still being polled."""
        self._flusher = self._start(self._flush_loop)
        for entry in self._uncollected():
            self._awaited.update(entry["requests"].values())
            self._start(self._recover, entry)

    # --- the calling threads ---------------------------------------------------------
    def ask(self, base_url: str, body: dict[str, Any], record: str, node: str) -> Result:
        """The answer to one chat request, once its batch (or an earlier attempt's) has it."""
        digest = body_hash(body)
        with self._lock:
            while self._awaited[digest] and not self._recovered.get(digest) and not self._closed:
                self._lock.wait()
            if self._recovered.get(digest):
                return self._recovered[digest].pop()
            if self._closed:
                raise RuntimeError("the run's batch collector is closed")
            k = self._counters[(record, node)]
            self._counters[(record, node)] += 1
            request = _Request(f"{self.run.id}:{record}:{node}:{k}", base_url, body, digest)
            self._pending.append(request)
            self._asked[request.custom_id] = request
            self._last_arrival = time.monotonic()
            self._lock.notify_all()
        request.answered.wait()
        with self._lock:
            self._asked.pop(request.custom_id, None)
        assert request.result is not None
        return request.result

    def close(self) -> None:
        """Stop collecting, and free the threads still waiting (the run was interrupted): the
        batches they wait on are in `batches.jsonl`, and a resume polls them."""
        with self._lock:
            self._closed = True
            self._pending = []
            left = list(self._asked.values())
            self._lock.notify_all()
        self._flusher.join()
        for request in left:
            request.answer(unanswered("the run stopped before its batch answered"))

    # --- submitting ------------------------------------------------------------------
    def _flush_loop(self) -> None:
        """Submit what is pending once it is quiet, or full."""
        size, quiet = self.settings.batch_size, self.settings.batch_quiet_seconds
        with self._lock:
            while not self._closed:
                wait = self._last_arrival + quiet - time.monotonic()
                if not self._pending or (wait > 0 and len(self._pending) < size):
                    self._lock.wait(wait if self._pending else None)
                    continue
                taken, self._pending = self._pending[:size], self._pending[size:]
                groups: dict[tuple[str, str], list[_Request]] = {}
                for request in taken:  # a batch takes one endpoint and one model
                    key = (request.base_url, str(request.body.get("model")))
                    groups.setdefault(key, []).append(request)
                for (base_url, _), group in groups.items():
                    self._start(self._one_batch, base_url, group)

    def _one_batch(self, base_url: str, group: list[_Request]) -> None:
        client = _client(base_url, self.settings)
        try:
            batch_id = self._submit(client, base_url, group)
        except Exception as error:  # nothing was submitted: each request fails as the call did
            status = error.status_code if isinstance(error, openai.APIStatusError) else 503
            for request in group:
                request.answer((status, {"error": {"message": f"batch submission: {error}"}}))
            return
        results, why = self._collect(client, batch_id)
        for request in group:
            request.answer(results.get(request.custom_id) or unanswered(why))
        self._write({"batch_id": batch_id, "collected": True})

    def _submit(self, client: openai.OpenAI, base_url: str, group: list[_Request]) -> str:
        lines = [
            {"custom_id": r.custom_id, "method": "POST", "url": CHAT_PATH, "body": r.body}
            for r in group
        ]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        upload = call_with_retries(
            lambda: client.files.create(file=(f"{self.run.id}.jsonl", data), purpose="batch"),
            what="batch.upload",
        )
        batch = call_with_retries(
            lambda: client.batches.create(
                input_file_id=upload.id, endpoint=CHAT_PATH, completion_window="24h"
            ),
            what="batch.create",
        )
        # Recorded before polling: a killed run polls this batch again instead of resubmitting.
        requests = {r.custom_id: r.digest for r in group}
        self._write(
            {"batch_id": batch.id, "file_id": upload.id, "base_url": base_url, "requests": requests}
        )
        log.info("batch.submitted", batch_id=batch.id, requests=len(group))
        return batch.id

    # --- polling and reading -----------------------------------------------------------
    def _collect(self, client: openai.OpenAI, batch_id: str) -> tuple[dict[str, Result], str]:
        """Poll a batch to its end; its answers by custom_id, and why the others have none."""
        delay = min(1.0, self.settings.batch_poll_seconds)
        try:
            while True:
                try:
                    batch = client.batches.retrieve(batch_id)
                    if batch.status in _ENDED:
                        break
                except Exception as error:  # an outage must not resubmit (and pay) twice
                    if not is_retryable(error):
                        raise
                    log.warning("batch.poll_failed", batch_id=batch_id, error=str(error))
                time.sleep(delay)
                delay = min(delay * 2, self.settings.batch_poll_seconds)
            results: dict[str, Result] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    text = call_with_retries(
                        lambda f=file_id: client.files.content(f).text, what="batch.download"
                    )
                    results.update(results_of(text))
        except Exception as error:
            log.warning("batch.unreadable", batch_id=batch_id, error=str(error))
            return {}, f"batch {batch_id} could not be read: {error}"
        errors = [e.message for e in (batch.errors.data or [])] if batch.errors else []
        log.info(
            "batch.ended", batch_id=batch_id, status=batch.status, answers=len(results),
            errors=errors,
        )  # fmt: skip
        return results, f"batch {batch_id} ended {batch.status} without an answer to it"

    def _uncollected(self) -> list[dict[str, Any]]:
        path = self.run.path(BATCHES)
        if not path.exists():
            return []
        submitted: dict[str, dict[str, Any]] = {}
        for entry in read_jsonl(path):
            if entry.get("collected"):
                submitted.pop(entry["batch_id"], None)
            else:
                submitted[entry["batch_id"]] = entry
        return list(submitted.values())

    def _recover(self, entry: dict[str, Any]) -> None:
        """An earlier attempt's batch: its answers wait for the requests that ask the same."""
        results, _ = self._collect(_client(entry["base_url"], self.settings), entry["batch_id"])
        with self._lock:
            for custom_id, digest in entry["requests"].items():
                self._awaited[digest] -= 1
                result = results.get(custom_id)
                if result is not None and result[0] == 200:  # the others are asked again
                    self._recovered.setdefault(digest, []).append(result)
            self._lock.notify_all()
        log.info("batch.recovered", batch_id=entry["batch_id"], answers=len(results))
        self._write({"batch_id": entry["batch_id"], "collected": True})

    # --- helpers -----------------------------------------------------------------------
    def _write(self, line: dict[str, Any]) -> None:
        with self.run.writer(BATCHES) as batches:  # one append per line: a kill tears none
            batches.write(line)

    def _start(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name="synthgraph-batch")
        thread.start()
        return thread


def _client(base_url: str, settings: Settings) -> openai.OpenAI:
    """The endpoint's Files and Batches API; retries are `call_with_retries`' (and the poll's)."""
    return openai.OpenAI(
        base_url=base_url, api_key=settings.api_key_value, timeout=settings.timeout, max_retries=0
    )


_collectors: dict[int, Collector] = {}
"""id(run ledger) → its collector: the transport finds it from the thread's ledger."""


@contextmanager
def collecting(run: Run) -> Iterator[Collector]:
    """Send the chat requests of `run`'s workers through the Batch API while in the block."""
    settings = get_settings()
    if settings.embedded:
        raise InputError(NO_BATCH_API)
    collector = Collector(run, settings)
    _collectors[id(run.ledger)] = collector
    try:
        yield collector
    finally:
        _collectors.pop(id(run.ledger), None)
        collector.close()


class _BatchTransport(httpx2.BaseTransport):
    """Answers a chat completion from the run's batches instead of sending it."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        collector = _collectors.get(id(current_ledger()))
        path = request.url.path
        if collector is None or request.method != "POST" or not path.endswith("/chat/completions"):
            raise RuntimeError(
                f"batch mode sends chat completions of a run only, not {request.url}"
            )
        base_url = str(request.url.copy_with(query=None)).removesuffix("/chat/completions")
        node = ensure_config().get("metadata", {}).get("langgraph_node", "direct")
        status, body = collector.ask(
            base_url, json.loads(request.read()), current_input() or "direct", str(node)
        )
        return httpx2.Response(status, json=body, request=request)


@lru_cache(maxsize=1)
def batch_http_client() -> CheckedHttpClient:
    """The chat models' client in batch mode: the same checks, answers from batches."""
    return CheckedHttpClient(transport=_BatchTransport())
