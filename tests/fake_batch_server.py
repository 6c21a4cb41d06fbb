"""A fake OpenAI Batch API on loopback: files, batches, polling, partial failures.

`FakeBatchServer` is a `FaultyServer` (a chat completion is answered with a valid instance of
its `response_format` schema) that also serves `POST /v1/files` (multipart upload),
`GET /v1/files/{id}/content`, `POST /v1/batches` and `GET /v1/batches/{id}`. A batch is
`validating` when created, `in_progress` at its first poll, and ends at its second poll
(or, while `hold` is set, at the first poll after `release()`). It answers every request line
as the chat endpoint would, except:
- `expire`: how many requests to leave unanswered, first ones first. As OpenAI does when the
  completion window passes, they go to the error file with code `batch_expired`, the
  answered ones to the output file, and the batch ends `expired`;
- `fail`: how many batches, first ones first, end `failed` with no file at all.
Chat requests sent straight to `/chat/completions` are counted in `requests`, as before.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from fakes import FakeOpenAIServer
from fault_server import FaultyServer, _answer


class FakeBatchServer(FaultyServer):
    def __init__(self, *, expire: int = 0, fail: int = 0, hold: bool = False) -> None:
        super().__init__()
        self.expire = expire
        self.fail = fail
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines: dict[str, list[dict[str, Any]]] = {}
        """Batch id → its request lines (`custom_id`, `body`), in the order created."""
        self.polls: Counter[str] = Counter()
        self._held = threading.Event()
        if not hold:
            self._held.set()
        self._ids = itertools.count()
        self._batch_lock = threading.Lock()
        chat_handler: Any = self.server.RequestHandlerClass
        fake = self

        class Handler(chat_handler):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                length = int(self.headers.get("content-length", 0))
                if path.endswith("/files"):
                    data = self.rfile.read(length)
                    self._send(200, json.dumps(fake.upload(self.headers["content-type"], data)), {})
                elif path.endswith("/batches"):
                    request = json.loads(self.rfile.read(length))
                    self._send(200, json.dumps(fake.create(request["input_file_id"])), {})
                else:
                    super().do_POST()

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[-1] == "content" and parts[-3] == "files":
                    self._send(200, fake.files[parts[-2]].decode(), {})
                elif parts[-2] == "batches":
                    self._send(200, json.dumps(fake.poll(parts[-1])), {})
                else:
                    super().do_GET()

        self.server.RequestHandlerClass = Handler

    # --- what tests read -----------------------------------------------------------
    @property
    def created(self) -> list[list[dict[str, Any]]]:
        """Each batch's request lines, in the order the batches were created."""
        with self._batch_lock:
            return list(self.lines.values())

    def release(self) -> None:
        """Let held batches end at their next poll."""
        self._held.set()

    # --- the API -------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        with self._batch_lock:
            return f"{prefix}-{next(self._ids)}"

    def upload(self, content_type: str, data: bytes) -> dict[str, Any]:
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        form: Any = BytesParser(policy=email_policy).parsebytes(head + data)
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in form.iter_parts()
        }
        assert fields["purpose"] == b"batch"
        file_id = self._new_id("file")
        self.files[file_id] = fields["file"]
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id]),
                "created_at": 0, "filename": "input.jsonl", "purpose": "batch",
                "status": "processed"}  # fmt: skip

    def create(self, input_file_id: str) -> dict[str, Any]:
        lines = [json.loads(line) for line in self.files[input_file_id].decode().splitlines()]
        assert all(line["url"] == "/v1/chat/completions" for line in lines)
        batch_id = self._new_id("batch")
        batch = {"id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions",
                 "input_file_id": input_file_id, "completion_window": "24h", "created_at": 0,
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "errors": None}  # fmt: skip
        with self._batch_lock:
            self.lines[batch_id] = lines
            self.batches[batch_id] = batch
        return batch

    def poll(self, batch_id: str) -> dict[str, Any]:
        with self._batch_lock:
            batch = self.batches[batch_id]
            self.polls[batch_id] += 1
            if batch["status"] == "validating":
                batch["status"] = "in_progress"
            elif batch["status"] == "in_progress" and self._held.is_set():
                self._end(batch, self.lines[batch_id])
            return dict(batch)

    def _end(self, batch: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        if self.fail:
            self.fail -= 1
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "server_error",
                               "message": "the batch failed"}]}  # fmt: skip
            return
        answered, expired = [], []
        for line in lines:
            if self.expire:
                self.expire -= 1
                expired.append({"id": f"req-{line['custom_id']}", "custom_id": line["custom_id"],
                                "response": None, "error": {"code": "batch_expired",
                                "message": "not executed before the window expired"}})  # fmt: skip
                continue
            body = FakeOpenAIServer.completion(
                _answer(line["body"], next(self._serial)), line["body"]
            )
            answered.append({"id": f"req-{line['custom_id']}", "custom_id": line["custom_id"],
                             "response": {"status_code": 200, "body": body}, "error": None})  # fmt: skip
        batch["status"] = "expired" if expired else "completed"
        for key, records in (("output_file_id", answered), ("error_file_id", expired)):
            if records:
                file_id = f"file-{batch['id']}-{key}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in records).encode()
                batch[key] = file_id
