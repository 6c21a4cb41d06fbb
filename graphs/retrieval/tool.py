"""The query-generation job as a LangChain tool, for other agents.

Corpus path in, run folder and counts out; paths are confined to the
workspace and sizes are bounded, so a tool-calling model can neither touch
other files nor start a run that never ends. Errors come back as text.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.graphs.retrieval.graph import RetrievalContext
from synthgraph.graphs.retrieval.job import PAIRS, generate_job
from synthgraph.tools.agent_tool import agent_tool, counts, workspace_relative
from synthgraph.tools.retrieval_data import Style
from synthgraph.tools.workspace import confine


class RetrievalQueriesArgs(BaseModel):
    """Arguments of `write_retrieval_queries` (paths are relative to the workspace)."""

    corpus_path: str = Field(
        description="A BEIR corpus.jsonl (`_id`, `text`) or a folder of .txt files."
    )
    output_dir: str = Field(
        description="A new folder for the run (pairs.jsonl, rejects.jsonl, ...)."
    )
    style: Style = Field(
        default="promptagator",
        description="promptagator, vanilla, gbq (a vague bad question) or contrast (a bad "
        "question that copies the document) prompts.",
    )
    examples_path: str | None = Field(
        default=None,
        description="Example set (JSONL or JSON with task + examples); unset: generic examples.",
    )
    per_doc: int = Field(default=1, ge=1, le=3, description="Queries sampled per document.")
    max_documents: int = Field(
        default=20, ge=1, le=100, description="Use at most this many documents."
    )


def write_retrieval_queries(
    corpus_path: str,
    output_dir: str,
    style: Style = "promptagator",
    examples_path: str | None = None,
    per_doc: int = 1,
    max_documents: int = 20,
) -> dict[str, Any]:
    """Queries for up to `max_documents` corpus documents; returns the pairs file and counts."""
    out = confine(output_dir)
    context = RetrievalContext(
        style=style,
        examples_path=str(confine(examples_path)) if examples_path else None,
        samples=per_doc,
        max_tokens=48,
    )
    summary = generate_job(
        confine(corpus_path), out, context=context, limit=max_documents, show_progress=False
    )
    return {
        "pairs_path": workspace_relative(out / PAIRS),
        **counts(summary, "documents", "pairs", "rejects"),
    }


def retrieval_tool() -> StructuredTool:
    return agent_tool(write_retrieval_queries, RetrievalQueriesArgs)
