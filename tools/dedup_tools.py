"""The dedup service as a LangChain tool, for agents: files only inside the workspace."""

from __future__ import annotations

from typing import Literal

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field

from synthgraph.tools.dedup import DedupService, dedup_file, default_namespace, dropped_path
from synthgraph.tools.workspace import confine, workspace_root


class DedupArgs(BaseModel):
    """Arguments of the `dedup_records` tool (paths are relative to the workspace)."""

    input_path: str = Field(description="JSONL or Parquet file of records, inside the workspace.")
    field: str = Field(description="The text field to compare, e.g. 'persona'.")
    output_path: str = Field(description="Where kept records go (.jsonl or .parquet).")
    method: Literal["minhash", "embedding", "both"] = Field(
        default="both",
        description="minhash: same words; embedding: same meaning; both: minhash first.",
    )
    threshold: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Drop at Jaccard (minhash) or cosine (embedding) ≥ this.",
    )


def dedup_records(
    input_path: str,
    field: str,
    output_path: str,
    method: Literal["minhash", "embedding", "both"] = "both",
    threshold: float = 0.9,
) -> str:
    """Remove near-duplicate records; returns a one-line summary naming both output files."""
    try:
        source, out = confine(input_path), confine(output_path)
        service = DedupService(default_namespace(field), threshold, method)
        result = dedup_file(service, source, field, out)
    except ValueError as error:  # bad path, field or file: tell the model, do not crash the graph
        raise ToolException(str(error)) from error
    root = workspace_root()
    per_stage = ", ".join(
        f"{name} dropped {c.dropped} of {c.checked}" for name, c in result.stages.items()
    )
    return (
        f"kept {len(result.kept)} of {result.total} ({per_stage}); "
        f"kept: {out.relative_to(root)}, dropped: {dropped_path(out).relative_to(root)}"
    )


def dedup_tool() -> StructuredTool:
    """A LangChain tool over `DedupService` (errors come back to the model as text)."""
    return StructuredTool.from_function(
        func=dedup_records,
        name="dedup_records",
        description=(
            "Remove near-duplicate records from a JSONL or Parquet file in the workspace, "
            "comparing one text field by words (MinHash) and meaning (embeddings). Records kept "
            "in earlier runs count too, so rerunning on the same data keeps nothing."
        ),
        args_schema=DedupArgs,
        handle_tool_error=True,
        handle_validation_error=True,
    )
