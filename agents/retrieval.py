"""The query writer: one document in, sampled search queries out (Promptagator / InPars).

The prompt is built from a prompt file per style and the user's example set;
each sample is one chat completion asked for token log-probabilities, so the
InPars-v1 filter can later rank pairs by the query's mean token log-prob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage

from synthgraph.agents.llm import invoke_text
from synthgraph.prompts import load_prompt, render_messages
from synthgraph.tools.retrieval_data import ExampleSet, Style, shorten

GOOD_LABEL = re.compile(r"good question:\s*", re.IGNORECASE)
QUERY_LABEL = re.compile(r"^(relevant query|query|question|bad question)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class GeneratedQuery:
    query: str
    logprob: float | None
    """Mean token log-probability of the reply; None when the endpoint gave none."""


def query_messages(
    document: str, examples: ExampleSet, style: Style, max_doc_chars: int = 600
) -> list[tuple[str, str]]:
    """The chat prompt for one document: instructions, one user/assistant turn per example, the document.

    Examples go in as chat turns, not as one text block: a small model copies
    the last example's query from a block, but answers in kind after turns.
    """
    turns: list[tuple[str, str]] = []
    for example in examples.examples:
        turns += render_messages(
            f"retrieval/{style}_example.md",
            document=shorten(example.document, max_doc_chars),
            query=example.query,
            bad_query=example.bad_query or "",
        )
    task = examples.task or load_prompt("retrieval/default_task.md").strip()
    system, *target = render_messages(
        f"retrieval/{style}.md", task=task, document=shorten(document, max_doc_chars)
    )
    return [system, *turns, *target]


def clean_query(text: str) -> tuple[str, int]:
    """The query in a reply, and where it starts: after a `Good question:` label, first line, unquoted."""
    start = 0
    label = GOOD_LABEL.search(text)
    if label:
        start = label.end()
    line = text[start:].strip().strip("`").strip()
    line = line.splitlines()[0] if line else ""
    line = QUERY_LABEL.sub("", line)
    return line.strip().strip("\"'“”").strip(), start


def mean_logprob(reply: AIMessage, from_char: int = 0) -> float | None:
    """Mean log-probability of the reply's tokens from `from_char` on (OpenAI-style `logprobs`)."""
    logprobs: Any = reply.response_metadata.get("logprobs") or {}
    values: list[float] = []
    offset = 0
    for token in logprobs.get("content") or []:
        if offset >= from_char and token.get("logprob") is not None:
            values.append(float(token["logprob"]))
        offset += len(token.get("token") or "")
    return sum(values) / len(values) if values else None


def sample_queries(
    messages: list[tuple[str, str]],
    *,
    samples: int = 1,
    record_id: str | None = None,
    logprobs: bool = True,
    **model_kwargs: Any,
) -> list[GeneratedQuery]:
    """`samples` sampled queries for one prompt; duplicates and empty replies dropped.

    Without `logprobs` they are not asked for, so queries carry none (the InPars-v1 filter then skips).
    """
    # top_logprobs ≥ 1: llama-server returns no log-probs at 0 (and 20 alternatives when unset).
    asked = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
    found: dict[str, GeneratedQuery] = {}
    for _ in range(samples):
        reply = invoke_text(
            messages, role="generator", record_id=record_id, **asked, **model_kwargs
        )
        query, start = clean_query(str(reply.content))
        if query and query.lower() not in found:
            found[query.lower()] = GeneratedQuery(query, mean_logprob(reply, start))
    return list(found.values())
