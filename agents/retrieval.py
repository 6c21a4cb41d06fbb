"""The query writer: one document in, sampled search queries out (Promptagator / InPars).

The prompt is built from a prompt file per style and the user's example set;
each sample is one chat completion asked for token log-probabilities, so the
InPars-v1 filter can later rank pairs by the query's mean token log-prob.
Samples of one document see the examples in different orders (`example_orders`),
so they differ by more than the sampling temperature.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.messages import AIMessage

from synthgraph.agents.llm import invoke_text
from synthgraph.prompts import load_prompt, render_messages
from synthgraph.tools.retrieval_data import ExampleSet, Style, copying_query, shorten

GOOD_LABEL = re.compile(r"good question:\s*", re.IGNORECASE)
QUERY_LABEL = re.compile(r"^(relevant query|query|question|bad question)\s*:\s*", re.IGNORECASE)
# The contrast style's example turns have GBQ's shape; only the bad question differs.
EXAMPLE_TURNS: dict[Style, str] = {"contrast": "gbq"}


@dataclass(frozen=True)
class GeneratedQuery:
    query: str
    logprob: float | None
    """Mean token log-probability of the reply; None when the endpoint gave none."""
    sample: int = 0
    """Which of the document's samples (example orderings) wrote it."""


def query_messages(
    document: str, examples: ExampleSet, style: Style, max_doc_chars: int = 600
) -> list[tuple[str, str]]:
    """The chat prompt for one document: instructions, one user/assistant turn per example, the document.

    Examples go in as chat turns, not as one text block: a small model copies
    the last example's query from a block, but answers in kind after turns.
    """
    turns: list[tuple[str, str]] = []
    for example in examples.examples:
        bad_query = copying_query(example) if style == "contrast" else example.bad_query
        turns += render_messages(
            f"retrieval/{EXAMPLE_TURNS.get(style, style)}_example.md",
            document=shorten(example.document, max_doc_chars),
            query=example.query,
            bad_query=bad_query or "",
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


def example_orders(count: int, samples: int, seed: str) -> list[list[int]]:
    """`samples` orderings of `count` examples: the given order first, then seeded shuffles,
    all distinct while there are permutations enough."""
    rng = random.Random(seed)
    orders = [list(range(count))]
    while len(orders) < samples:
        order = rng.sample(range(count), count)
        if order not in orders or len(orders) >= math.factorial(count):
            orders.append(order)
    return orders[:samples]


def reordered(examples: ExampleSet, order: Sequence[int]) -> ExampleSet:
    return replace(examples, examples=tuple(examples.examples[i] for i in order))


def sample_queries(
    prompts: Sequence[list[tuple[str, str]]],
    *,
    record_id: str | None = None,
    logprobs: bool = True,
    **model_kwargs: Any,
) -> list[GeneratedQuery]:
    """One sampled query per prompt (sample i from prompt i); duplicates and empty replies dropped.

    Without `logprobs` they are not asked for, so queries carry none (the InPars-v1 filter then skips).
    """
    # top_logprobs ≥ 1: llama-server returns no log-probs at 0 (and 20 alternatives when unset).
    asked = {"logprobs": True, "top_logprobs": 1} if logprobs else {}
    found: dict[str, GeneratedQuery] = {}
    for sample, messages in enumerate(prompts):
        reply = invoke_text(
            messages, role="generator", record_id=record_id, **asked, **model_kwargs
        )
        query, start = clean_query(str(reply.content))
        if query and query.lower() not in found:
            found[query.lower()] = GeneratedQuery(query, mean_logprob(reply, start), sample)
    return list(found.values())
