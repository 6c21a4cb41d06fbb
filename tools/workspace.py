"""Path confinement for agent-facing tools: a model may only touch the workspace."""

from __future__ import annotations

from pathlib import Path

from synthgraph.tools.settings import get_settings


class WorkspaceError(ValueError):
    """A tool was asked for a path outside its workspace."""


def workspace_root() -> Path:
    root = get_settings().workspace.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def confine(path: str | Path, root: Path | None = None) -> Path:
    """Resolve `path` inside the workspace (relative paths are taken from its root).

    Raises `WorkspaceError` for anything that resolves outside, including via `..`
    or symlinks, so a tool-calling model cannot read or overwrite arbitrary files.
    """
    root = (root or workspace_root()).resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise WorkspaceError(f"{path}: outside the workspace {root}")
    return resolved
