"""Test doubles: scripted LangChain chat models and a fake OpenAI-compatible server."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage


def scripted_model(*replies: str | dict[str, Any] | AIMessage) -> GenericFakeChatModel:
    """A fake chat model that answers with these replies in order (dicts become JSON)."""
    messages = [
        r if isinstance(r, AIMessage) else AIMessage(content=r if isinstance(r, str) else json.dumps(r))
        for r in replies
    ]
    return GenericFakeChatModel(messages=iter(messages))
