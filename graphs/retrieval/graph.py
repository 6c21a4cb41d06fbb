"""Query generation for retriever training (Promptagator / InPars): one document → queries.

    START ─▶ prepare_prompt ─▶ write_queries ─▶ END

The prompt style (Promptagator few-shot, InPars vanilla, InPars GBQ, the
copy-vs-ask contrast), the example set and the number of sampled queries are
per-run knobs in the runtime context. `prepare_prompt` builds one chat prompt per
sample, each with the examples in its own order (seeded by document and sample),
and keeps them in the state, so Studio shows exactly what the model saw.
`synthgraph retrieval generate` runs this graph once per corpus document (see
`graphs/retrieval/job.py`); a document that yields no query is rejected there, whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from synthgraph.agents.retrieval import (
    example_orders,
    query_messages,
    reordered,
    sample_queries,
)
from synthgraph.graphs.context import RunContext
from synthgraph.tools.io import InputError
from synthgraph.tools.retrieval_data import (
    Example,
    ExampleSet,
    Style,
    default_examples_path,
    load_examples,
)
from synthgraph.tools.workspace import confine


# --- state ----------------------------------------------------------------------
class QueryRecord(TypedDict):
    query: str
    logprob: float | None
    sample: int


class RetrievalInput(TypedDict):
    document_id: str
    document: str


class RetrievalOutput(TypedDict):
    queries: list[QueryRecord]


class RetrievalState(RetrievalInput, RetrievalOutput, total=False):
    prompts: list[list[tuple[str, str]]]
    """One chat prompt per sample."""


# --- context --------------------------------------------------------------------
@dataclass
class RetrievalContext(RunContext):
    """Per-run knobs of query generation."""

    style: Style = "promptagator"
    """promptagator (task + few-shot), vanilla (InPars fixed examples), gbq (a vague bad question,
    then a good one) or contrast (a bad question that copies the document, then a good one)."""
    examples_path: str | None = None
    """Example set in the workspace (JSONL, or JSON with `task` and `examples`); unset: generic
    built-in examples."""
    examples: ExampleSet | None = None
    """The example set itself, read by the caller (the generate job reads `--examples` from
    anywhere); wins over `examples_path`."""
    samples: int = 1
    """Queries sampled per document, each from its own example ordering (duplicates dropped);
    more than one wants a temperature above 0."""
    max_doc_chars: int = 600
    """Documents (and examples) are cut to about this many characters in the prompt."""
    logprobs: bool = True
    """Ask for token log-probs (InPars-v1 filter). Off, llama-cpp-python's server answers 2-3x
    faster (it sorts the whole vocabulary in Python per token); llama-server barely slows."""


def context_examples(context: RetrievalContext, confined: bool = True) -> ExampleSet:
    """The run's example set. A path from graph input (Studio, MCP) must lie in the workspace;
    trusted callers such as the generate job pass `confined=False` and hand the set over in
    `examples`."""
    if isinstance(context.examples, dict):  # from Studio or MCP: the set as plain JSON
        raw = context.examples
        try:
            examples = tuple(Example(**example) for example in raw.get("examples", []))
        except TypeError as error:
            raise InputError(
                f"context.examples: each needs document and query ({error})"
            ) from error
        return ExampleSet(examples, raw.get("task"))
    if context.examples is not None:
        return context.examples
    if not context.examples_path:
        return load_examples(default_examples_path(), context.style)
    path = confine(context.examples_path) if confined else Path(context.examples_path)
    return load_examples(path, context.style)


# --- nodes ----------------------------------------------------------------------
def prepare_prompt(state: RetrievalState, runtime: Runtime[RetrievalContext]) -> RetrievalState:
    context = runtime.context or RetrievalContext()
    if not state.get("document", "").strip():
        raise InputError(f"document {state.get('document_id')!r}: empty text")
    examples = context_examples(context)
    orders = example_orders(len(examples.examples), context.samples, state["document_id"])
    prompts = [
        query_messages(
            state["document"], reordered(examples, order), context.style, context.max_doc_chars
        )
        for order in orders
    ]
    return {"prompts": prompts}


def write_queries(state: RetrievalState, runtime: Runtime[RetrievalContext]) -> RetrievalOutput:
    context = runtime.context or RetrievalContext()
    found = sample_queries(
        state["prompts"],
        record_id=state["document_id"],
        logprobs=context.logprobs,
        **context.model_kwargs(),
    )
    return {
        "queries": [{"query": q.query, "logprob": q.logprob, "sample": q.sample} for q in found]
    }


# --- builder ----------------------------------------------------------------------
builder = StateGraph(
    RetrievalState, RetrievalContext, input_schema=RetrievalInput, output_schema=RetrievalOutput
)
builder.add_sequence([prepare_prompt, write_queries])
builder.add_edge(START, "prepare_prompt")
builder.add_edge("write_queries", END)

graph = builder.compile(name="retrieval")
