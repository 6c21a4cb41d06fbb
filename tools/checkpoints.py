"""What goes into `checkpoint.sqlite`: LangGraph's serializer, with secrets redacted.

Checkpoints hold node outputs and the errors of failed tasks, and an endpoint
may echo the API key in an error. Imported lazily by `Run.checkpointer`:
LangGraph's serializer is slow to import.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from synthgraph.tools.log import redact


class RedactingSerializer(JsonPlusSerializer):
    """`JsonPlusSerializer` whose stored bytes never hold a secret."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        kind, data = super().dumps_typed(obj)
        if redact(data) == data:  # nearly always: store exactly what LangGraph would
            return kind, data
        return super().dumps_typed(redact(obj))
