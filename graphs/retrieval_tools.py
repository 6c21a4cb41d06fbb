"""The query-generation graph as a LangChain tool, for other agents.

Corpus path in, run folder and counts out; paths are confined to the
workspace and sizes are bounded, so a tool-calling model can neither touch
other files nor start a run that never ends. Errors come back as text.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from synthgraph.graphs.retrieval import RetrievalContext
from synthgraph.graphs.retrieval_cli import PAIRS, generate_job
from synthgraph.tools.io import InputError
from synthgraph.tools.log import tool_error_text
from synthgraph.tools.retrieval_data import Style
from synthgraph.tools.runs import RunError
from synthgraph.tools.workspace import confine, workspace_root


class RetrievalQueriesArgs(BaseModel):
    """Arguments of `write_retrieval_queries` (paths are relative to the workspace)."""

    corpus_path: str = Field(
        description="A BEIR corpus.jsonl (`_id`, `text`) or a folder of .txt files."
    )
    output_dir: str = Field(
        description="A new folder for the run (pairs.jsonl, rejects.jsonl, ...)."
    )
    style: Style = Field(
        default="promptagator", description="promptagator, vanilla or gbq prompts."
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
    try:
        args = RetrievalQueriesArgs(
            corpus_path=corpus_path, output_dir=output_dir, style=style,
            examples_path=examples_path, per_doc=per_doc, max_documents=max_documents,
        )  # fmt: skip
    except ValidationError as error:
        raise ToolException(
            "invalid arguments: " + "; ".join(e["msg"] for e in error.errors()[:5])
        ) from error
    try:
        context = RetrievalContext(
            style=args.style,
            examples_path=str(confine(args.examples_path)) if args.examples_path else None,
            samples=args.per_doc,
            max_tokens=48,
        )
        summary = generate_job(
            confine(args.corpus_path), confine(args.output_dir), context=context,
            limit=args.max_documents, show_progress=False,
        )  # fmt: skip
    except (InputError, RunError, ValueError) as error:
        raise ToolException(str(error)) from error
    root = workspace_root()
    return {
        "pairs_path": str((confine(args.output_dir) / PAIRS).relative_to(root)),
        "documents": summary.documents,
        "pairs": summary.pairs,
        "rejects": summary.rejects,
    }


retrieval_queries_tool = StructuredTool.from_function(
    func=write_retrieval_queries,
    name="write_retrieval_queries",
    description=(
        "Write search queries for the documents of a corpus (Promptagator / InPars prompts), giving "
        "(query, document) pairs to train a retriever. Returns the pairs file and counts."
    ),
    args_schema=RetrievalQueriesArgs,
    handle_tool_error=tool_error_text,
)
