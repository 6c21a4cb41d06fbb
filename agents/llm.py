"""The one LLM factory, and the calls every agent makes through it.

`get_chat_model(role)` returns a `ChatOpenAI` for any OpenAI-compatible
endpoint (OpenAI, vLLM, Ollama, llama.cpp), or for the embedded local model
when no endpoint is configured. `invoke_text` and `invoke_structured` add the
shared retries, limits and (for structured output) validation with re-asking.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import ensure_config
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from synthgraph.agents.batch_api import NO_BATCH_API, batch_http_client
from synthgraph.agents.local_model import STRONG_MODEL, assemble, local_endpoint
from synthgraph.agents.resilience import call_with_retries, checked_http_client
from synthgraph.prompts import fill, load_prompt
from synthgraph.tools.io import InputError
from synthgraph.tools.response_cache import CACHE_HIT, ResponseCache, response_cache
from synthgraph.tools.settings import Role, Settings, StructuredMethod, get_settings
from synthgraph.tools.text import strip_code_fence
from synthgraph.tools.usage import current_ledger

SchemaT = TypeVar("SchemaT", bound=BaseModel)
MessageLike = BaseMessage | tuple[str, str]


class StructuredOutputError(ValueError):
    """The model's reply never validated against the schema; `raw` is its last text."""

    def __init__(self, message: str, raw: str | None, errors: list[str]) -> None:
        super().__init__(message)
        self.raw = raw
        self.errors = errors


_overrides: dict[str, BaseChatModel] = {}


@contextmanager
def use_chat_models(**by_role: BaseChatModel) -> Iterator[None]:
    """Use these LangChain chat models for the named roles (tests, other providers).

    `with use_chat_models(generator=fake, judge=fake):` makes every agent in the
    block call `fake` instead of building a `ChatOpenAI`.
    """
    previous = dict(_overrides)
    _overrides.update(by_role)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(previous)


def get_chat_model(
    role: Role = "generator",
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> BaseChatModel:
    """A chat model for a role. No endpoint configured: the embedded local model."""
    if role in _overrides:
        return _overrides[role]
    settings = settings or get_settings()
    base_url = settings.base_url_for(role)
    ledger = current_ledger()
    batch = ledger is not None and ledger.batch
    if base_url is None:
        if batch:
            raise InputError(NO_BATCH_API)
        strong = role == "strong" and settings.strong_local_model
        endpoint = local_endpoint(
            assemble(STRONG_MODEL, settings.cache_dir) if strong else None, settings
        )
        base_url, model, api_key = endpoint.base_url, endpoint.model, "local"
        # llama.cpp's server reads `max_tokens`, not the `max_completion_tokens` ChatOpenAI sends.
        kwargs.setdefault("extra_body", {"max_tokens": max_tokens or settings.max_tokens})
    else:
        model = settings.model_for(role)
        api_key = settings.api_key_value
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        cache=_cache_for(settings),
        api_key=api_key,  # type: ignore[arg-type]
        temperature=settings.temperature if temperature is None else temperature,
        max_completion_tokens=max_tokens or settings.max_tokens,
        timeout=settings.timeout,
        max_retries=0,  # retries are ours: see synthgraph.agents.resilience
        # A garbage 200 is retried, not taken for a bad record; batch mode answers from batches.
        http_client=batch_http_client() if batch else checked_http_client(),
        **kwargs,
    )


def _cache_for(settings: Settings) -> ResponseCache | bool:
    """The response cache, or False: the run's `--no-cache`/`--cache` first, then settings;
    unset, on for remote endpoints (a reply costs money) and off for the embedded model."""
    ledger = current_ledger()
    wanted = ledger.cache if ledger is not None and ledger.cache is not None else settings.cache
    if wanted is None:
        wanted = not settings.embedded
    return response_cache(settings.cache_path, settings.cache_url) if wanted else False


def record_usage(role: Role, reply: Any, chat: BaseChatModel) -> None:
    """Put one reply's tokens in the run's ledger, under the LangGraph node that asked."""
    ledger = current_ledger()
    message = reply.get("raw") if isinstance(reply, dict) else reply
    if ledger is None or not isinstance(message, AIMessage):
        return
    metadata = message.response_metadata or {}
    usage = message.usage_metadata or {}
    model = metadata.get("model_name") or getattr(chat, "model_name", None) or "unknown"
    stage = ensure_config().get("metadata", {}).get("langgraph_node", "direct")
    ledger.record(
        role,
        str(model),
        str(stage),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        cached=bool(metadata.get(CACHE_HIT)),
    )


def structured_method(settings: Settings | None = None) -> StructuredMethod:
    """json_schema unless set: remote endpoints and the embedded llama-server (as a grammar)
    both take it; json_mode is for servers that reject it, such as llama_cpp.server."""
    settings = settings or get_settings()
    if settings.structured_method != "auto":
        return settings.structured_method
    return "json_schema"


def as_messages(messages: Sequence[MessageLike]) -> list[BaseMessage]:
    converted: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, BaseMessage):
            converted.append(message)
            continue
        role, text = message
        kind = {
            "system": SystemMessage,
            "user": HumanMessage,
            "human": HumanMessage,
            "assistant": AIMessage,
        }
        converted.append(kind[role](content=text))
    return converted


def invoke_text(
    messages: Sequence[MessageLike],
    *,
    role: Role = "generator",
    record_id: str | None = None,
    model: BaseChatModel | None = None,
    **model_kwargs: Any,
) -> AIMessage:
    """One chat completion with the shared retries and limits."""
    chat = model or get_chat_model(role, **model_kwargs)
    reply = call_with_retries(
        lambda: chat.invoke(as_messages(messages)), what=f"{role}.text", record_id=record_id
    )
    assert isinstance(reply, AIMessage)
    record_usage(role, reply, chat)
    return reply


def invoke_structured(
    schema: type[SchemaT],
    messages: Sequence[MessageLike],
    *,
    role: Role = "generator",
    record_id: str | None = None,
    model: BaseChatModel | None = None,
    method: StructuredMethod | None = None,
    **model_kwargs: Any,
) -> SchemaT:
    """A validated `schema` instance from any endpoint.

    Transport failures are retried by `call_with_retries`; a reply that is not
    valid JSON or fails validation is re-asked (bounded by
    `settings.structured_retries`) with the error shown to the model. Parsing
    retries live here because LangGraph's default RetryPolicy skips ValueError.
    """
    settings = get_settings()
    method = method or structured_method(settings)
    chat = model or get_chat_model(role, **model_kwargs)
    json_schema = schema.model_json_schema()
    schema_text = json.dumps(json_schema, ensure_ascii=False)
    conversation = as_messages(messages)
    runnable: Any
    if method == "json_mode":
        # Tell the model the shape, and give llama.cpp the schema so its grammar
        # constrains decoding to it (other json_mode servers ignore the field).
        conversation = _with_json_instructions(conversation, schema_text)
        runnable = chat.bind(response_format={"type": "json_object", "schema": json_schema})
    elif method == "json_schema":
        # Parsed here rather than by the client, so a bad reply is re-asked, not raised.
        response_format = {"name": schema.__name__, "schema": json_schema, "strict": False}
        runnable = chat.bind(
            response_format={"type": "json_schema", "json_schema": response_format}
        )
    else:
        runnable = chat.with_structured_output(schema, method=method, include_raw=True)

    errors: list[str] = []
    raw: str | None = None
    for _ in range(settings.structured_retries + 1):
        try:
            reply = call_with_retries(
                lambda asked=conversation: runnable.invoke(asked),
                what=f"{role}.structured",
                record_id=record_id,
            )
        except openai.LengthFinishReasonError as length_error:
            choices = length_error.completion.choices
            cut = choices[0].message.content if choices else None
            raise _cut_at_max_tokens(
                schema, cut or raw, [*errors, "cut at max_tokens"]
            ) from length_error
        record_usage(role, reply, chat)
        parsed, raw, error = _parse(schema, reply)
        if parsed is not None:
            return parsed
        if finish_reason(reply) == "length":
            raise _cut_at_max_tokens(schema, raw, [*errors, error])
        errors.append(error)
        conversation = [
            *conversation,
            AIMessage(content=raw or ""),
            HumanMessage(
                content=fill(
                    load_prompt("common/structured_retry.md"), error=error, schema=schema_text
                )
            ),
        ]
    raise StructuredOutputError(
        f"{schema.__name__}: no valid reply after {len(errors)} attempts ({errors[-1]})",
        raw,
        errors,
    )


def _with_json_instructions(messages: list[BaseMessage], schema_text: str) -> list[BaseMessage]:
    instructions = fill(load_prompt("common/json_instructions.md"), schema=schema_text)
    if messages and isinstance(messages[0], SystemMessage):
        first = SystemMessage(content=f"{messages[0].content}\n\n{instructions}")
        return [first, *messages[1:]]
    return [SystemMessage(content=instructions), *messages]


def _parse(schema: type[SchemaT], reply: Any) -> tuple[SchemaT | None, str | None, str]:
    """(object, raw text, error) from either a plain AIMessage or an include_raw dict."""
    if isinstance(reply, dict):  # with_structured_output(include_raw=True)
        raw_message = reply.get("raw")
        raw = _raw_text(raw_message)
        if reply.get("parsed") is not None:
            parsed = reply["parsed"]
            return (
                (parsed if isinstance(parsed, schema) else schema.model_validate(parsed)),
                raw,
                "",
            )
        return (
            None,
            raw,
            _describe(reply.get("parsing_error")) or "the reply held no parsable object",
        )
    raw = _raw_text(reply)
    try:
        return schema.model_validate_json(strip_code_fence(raw or "")), raw, ""
    except ValidationError as error:
        return None, raw, _describe(error)


def _cut_at_max_tokens(
    schema: type[BaseModel], raw: str | None, errors: list[str]
) -> StructuredOutputError:
    # Asking again with the same cap would be cut again: fail this record clearly.
    return StructuredOutputError(
        f"{schema.__name__}: the reply was cut at max_tokens before the JSON ended", raw, errors
    )


def finish_reason(reply: Any) -> str | None:
    """Why the model stopped (`stop`, `length`, ...), from a reply or an include_raw dict."""
    message = reply.get("raw") if isinstance(reply, dict) else reply
    return getattr(message, "response_metadata", {}).get("finish_reason")


def _raw_text(message: Any) -> str | None:
    if message is None:
        return None
    content = getattr(message, "content", message)
    if not content and getattr(message, "tool_calls", None):
        return json.dumps(message.tool_calls[0].get("args", {}))
    return content if isinstance(content, str) else json.dumps(content)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in error.errors()[:5]
        )
    return f"{type(error).__name__}: {error}"
