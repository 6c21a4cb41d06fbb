"""The one LLM factory, and the calls every agent makes through it.

`get_chat_model(role)` returns a `ChatOpenAI` for any OpenAI-compatible
endpoint (OpenAI, vLLM, Ollama, llama.cpp), or for the embedded local model
when no endpoint is configured. `invoke_text` and `invoke_structured` add the
shared retries, limits and (for structured output) validation with re-asking;
`ainvoke_text` and `ainvoke_structured` do the same on an event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import Any, Generic, TypedDict, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import ensure_config
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from synthgraph.agents.batch_api import NO_BATCH_API, batch_http_client
from synthgraph.agents.local_model import STRONG_MODEL, assemble, local_endpoint
from synthgraph.agents.resilience import (
    acall_with_retries,
    call_with_retries,
    checked_async_http_client,
    checked_http_client,
)
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
    per_call = {
        "temperature": settings.temperature if temperature is None else temperature,
        "max_tokens": max_tokens or settings.max_tokens,  # sent as max_completion_tokens
        **kwargs,
    }
    endpoint = (
        model, base_url, api_key, settings.timeout, _cache_for(settings), batch,
        # Built on an event loop (async nodes): that loop's client, so its replies are checked too.
        None if batch else checked_async_http_client(),
    )  # fmt: skip
    if per_call.keys() <= _PER_CALL:
        return _chat_model(*endpoint).model_copy(update=per_call)
    return _build_chat_model(*endpoint, **per_call)


_PER_CALL = frozenset(
    {"temperature", "max_tokens", "seed", "extra_body", "logprobs", "top_logprobs", "n", "top_p"}
)
"""Request fields that change from call to call: set on a copy of a built model. Building a
ChatOpenAI makes its OpenAI clients (about 2.5 ms of CPU), a third of a fast request's cost."""


def _build_chat_model(
    model: str,
    base_url: str,
    api_key: str,
    timeout: float,
    cache: ResponseCache | bool,
    batch: bool,
    async_client: Any,
    **fields: Any,
) -> ChatOpenAI:
    """A model for one endpoint, cache and event loop, with any other `ChatOpenAI` fields."""
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        cache=cache,
        api_key=api_key,  # type: ignore[arg-type]
        timeout=timeout,
        max_retries=0,  # retries are ours: see synthgraph.agents.resilience
        # A garbage 200 is retried, not taken for a bad record; batch mode answers from batches.
        http_client=batch_http_client() if batch else checked_http_client(),
        http_async_client=async_client,
        **fields,
    )


_chat_model = lru_cache(maxsize=32)(_build_chat_model)
"""One built model per endpoint, cache and event loop (no other fields); `get_chat_model`
copies it with the call's `_PER_CALL` fields."""


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
    asked = as_messages(messages)
    reply = call_with_retries(lambda: chat.invoke(asked), what=f"{role}.text", record_id=record_id)
    return _text_reply(role, reply, chat)


async def ainvoke_text(
    messages: Sequence[MessageLike],
    *,
    role: Role = "generator",
    record_id: str | None = None,
    model: BaseChatModel | None = None,
    **model_kwargs: Any,
) -> AIMessage:
    """`invoke_text` on an event loop."""
    chat = model or get_chat_model(role, **model_kwargs)
    asked = as_messages(messages)
    reply = await acall_with_retries(
        lambda: chat.ainvoke(asked), what=f"{role}.text", record_id=record_id
    )
    return _text_reply(role, reply, chat)


def _text_reply(role: Role, reply: Any, chat: BaseChatModel) -> AIMessage:
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
    ask = _StructuredAsk(schema, messages, role, record_id, model, method, model_kwargs)
    while True:
        if (parsed := ask.take(ask.send())) is not None:
            return parsed


async def ainvoke_structured(
    schema: type[SchemaT],
    messages: Sequence[MessageLike],
    *,
    role: Role = "generator",
    record_id: str | None = None,
    model: BaseChatModel | None = None,
    method: StructuredMethod | None = None,
    **model_kwargs: Any,
) -> SchemaT:
    """`invoke_structured` on an event loop: the same re-asking, `acall_with_retries`."""
    ask = _StructuredAsk(schema, messages, role, record_id, model, method, model_kwargs)
    while True:
        if (parsed := ask.take(await ask.asend())) is not None:
            return parsed


@lru_cache(maxsize=256)
def _schema_text(schema: type[BaseModel]) -> str:
    """The JSON Schema of `schema`, built once (pydantic takes milliseconds per call)."""
    return json.dumps(schema.model_json_schema(), ensure_ascii=False)


class _Labels(TypedDict):
    what: str
    record_id: str | None


def _response_format(chat: BaseChatModel, response_format: dict[str, Any]) -> dict[str, Any]:
    """The bind kwargs that send `response_format`. To a ChatOpenAI it goes in `extra_body`,
    the same field of the same request body: as a named parameter the OpenAI SDK would walk the
    whole JSON schema on every request (about 7 ms of CPU each, a third of a request's cost)."""
    if isinstance(chat, ChatOpenAI):
        return {"extra_body": {**(chat.extra_body or {}), "response_format": response_format}}
    return {"response_format": response_format}


class _StructuredAsk(Generic[SchemaT]):
    """One structured request, sync or async alike: the bound model, the conversation to
    send next, and what the replies so far said (each bad one re-asked with its error)."""

    def __init__(
        self,
        schema: type[SchemaT],
        messages: Sequence[MessageLike],
        role: Role,
        record_id: str | None,
        model: BaseChatModel | None,
        method: StructuredMethod | None,
        model_kwargs: dict[str, Any],
    ) -> None:
        settings = get_settings()
        method = method or structured_method(settings)
        self.schema, self.role = schema, role
        self.labels: _Labels = {"what": f"{role}.structured", "record_id": record_id}
        self.chat = model or get_chat_model(role, **model_kwargs)
        self.schema_text = _schema_text(schema)
        json_schema = json.loads(self.schema_text)  # a copy of its own for the request
        self.conversation = as_messages(messages)
        self.runnable: Any
        if method == "json_mode":
            # Tell the model the shape, and give llama.cpp the schema so its grammar
            # constrains decoding to it (other json_mode servers ignore the field).
            self.conversation = _with_json_instructions(self.conversation, self.schema_text)
            self.runnable = self.chat.bind(
                **_response_format(self.chat, {"type": "json_object", "schema": json_schema})
            )
        elif method == "json_schema":
            # Parsed here rather than by the client, so a bad reply is re-asked, not raised.
            response_format = {"name": schema.__name__, "schema": json_schema, "strict": False}
            self.runnable = self.chat.bind(
                **_response_format(
                    self.chat, {"type": "json_schema", "json_schema": response_format}
                )
            )
        else:
            self.runnable = self.chat.with_structured_output(
                schema, method=method, include_raw=True
            )
        self.tries = settings.structured_retries + 1
        self.errors: list[str] = []
        self.raw: str | None = None

    def send(self) -> Any:
        asked = partial(self.runnable.invoke, self.conversation)
        with self._cut_guard():
            return call_with_retries(asked, **self.labels)

    async def asend(self) -> Any:
        asked = partial(self.runnable.ainvoke, self.conversation)
        with self._cut_guard():
            return await acall_with_retries(asked, **self.labels)

    @contextmanager
    def _cut_guard(self) -> Iterator[None]:
        """The client's own JSON parsing stopped at max_tokens: fail the record clearly."""
        try:
            yield
        except openai.LengthFinishReasonError as length_error:
            choices = length_error.completion.choices
            cut = choices[0].message.content if choices else None
            raise _cut_at_max_tokens(
                self.schema, cut or self.raw, [*self.errors, "cut at max_tokens"]
            ) from length_error

    def take(self, reply: Any) -> SchemaT | None:
        """The parsed reply, or None after adding the re-ask to the conversation; raises
        once every try is spent."""
        record_usage(self.role, reply, self.chat)
        parsed, self.raw, error = _parse(self.schema, reply)
        if parsed is not None:
            return parsed
        if finish_reason(reply) == "length":
            raise _cut_at_max_tokens(self.schema, self.raw, [*self.errors, error])
        self.errors.append(error)
        if len(self.errors) == self.tries:
            raise self._failed()
        retry = fill(
            load_prompt("common/structured_retry.md"), error=error, schema=self.schema_text
        )
        self.conversation = [
            *self.conversation,
            AIMessage(content=self.raw or ""),
            HumanMessage(content=retry),
        ]
        return None

    def _failed(self) -> StructuredOutputError:
        return StructuredOutputError(
            f"{self.schema.__name__}: no valid reply after {len(self.errors)} attempts "
            f"({self.errors[-1]})",
            self.raw,
            self.errors,
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
