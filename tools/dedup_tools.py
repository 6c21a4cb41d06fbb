"""The dedup service as a LangChain tool, for agents: files only inside the workspace."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from synthgraph.tools.agent_tool import agent_tool, workspace_relative
from synthgraph.tools.dedup import DedupService, dedup_file, default_namespace, dropped_path
from synthgraph.tools.workspace import confine


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
) -> dict[str, Any]:
    """Remove near-duplicate records; returns both output files and the counts per stage."""
    source, out = confine(input_path), confine(output_path)
    service = DedupService(default_namespace(field), threshold, method)
    result = dedup_file(service, source, field, out)
    return {
        "kept_path": workspace_relative(out),
        "dropped_path": workspace_relative(dropped_path(out)),
        "records": result.total,
        "kept": len(result.kept),
        "dropped": {name: c.dropped for name, c in result.stages.items()},
    }


def dedup_tool() -> StructuredTool:
    """A LangChain tool over `DedupService` (errors come back to the model as text)."""
    return agent_tool(dedup_records, DedupArgs)
