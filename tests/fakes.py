"""Test doubles: scripted LangChain chat models and a fake OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from synthgraph.tools.settings import get_settings


def scripted_model(*replies: str | dict[str, Any] | AIMessage) -> GenericFakeChatModel:
    """A fake chat model that answers with these replies in order (dicts become JSON)."""
    messages = [
        r
        if isinstance(r, AIMessage)
        else AIMessage(content=r if isinstance(r, str) else json.dumps(r))
        for r in replies
    ]
    return GenericFakeChatModel(messages=iter(messages))


class FakeOpenAIServer:
    """A scriptable OpenAI-compatible HTTP server on loopback.

    Queue replies with `script(...)`; each request takes the next one (the last
    one repeats). A reply is a dict with any of: `status` (default 200),
    `content` (assistant text), `body` (raw response text, e.g. malformed JSON),
    `headers`, `delay` (seconds before answering), `hang` (never answer).
    Every request body is kept in `requests`.
    """

    def __init__(self, port: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self._send(
                    200,
                    json.dumps(
                        {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                    ),
                    {},
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                request["_auth"] = self.headers.get("authorization")
                reply = fake._next(request)
                if reply.get("hang"):
                    fake._stop.wait(30)
                    return
                if reply.get("delay"):
                    fake._stop.wait(reply["delay"])
                body = reply.get("body")
                if body is None:
                    body = json.dumps(fake.completion(reply.get("content", "ok"), request))
                self._send(reply.get("status", 200), body, reply.get("headers", {}))

            def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *replies: dict[str, Any]) -> FakeOpenAIServer:
        with self._lock:
            self.replies.extend(replies)
        return self

    def _next(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(request)
            if not self.replies:
                return {}
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    @staticmethod
    def completion(content: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def start(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def serve(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, timeout: float = 2
) -> Iterator[FakeOpenAIServer]:
    """Start a fake endpoint, point the settings at it, and stop it after the test."""
    server.start()
    monkeypatch.setenv("SYNTHGRAPH_BASE_URL", server.base_url)
    monkeypatch.setenv("SYNTHGRAPH_API_KEY", "sk-test-fake-key-0000")
    monkeypatch.setenv("SYNTHGRAPH_MODEL", "fake-model")
    monkeypatch.setenv("SYNTHGRAPH_TIMEOUT", str(timeout))
    get_settings.cache_clear()
    yield server
    server.stop()
    get_settings.cache_clear()
