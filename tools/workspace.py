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
    A folder is confined with everything in it: jobs list folders and open the
    files they find (inputs) or write into them (outputs), following links, so a
    link inside that leads out of the workspace is refused as well.
    """
    root = (root or workspace_root()).resolve()
    candidate = Path(path)
    resolved = _inside((candidate if candidate.is_absolute() else root / candidate).resolve(), root)
    if resolved.is_dir():
        _confine_entries(resolved, root, {resolved})
    return resolved


def _inside(resolved: Path, root: Path, shown: str | Path | None = None) -> Path:
    if resolved != root and root not in resolved.parents:
        raise WorkspaceError(f"{shown or resolved}: outside the workspace {root}")
    return resolved


def _confine_entries(folder: Path, root: Path, seen: set[Path]) -> None:
    """Refuse any link under `folder` that leads out of `root`; linked folders are checked too."""
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise WorkspaceError(f"{folder}: cannot be listed ({error.strerror})") from error
    for entry in entries:
        real = entry.resolve() if entry.is_symlink() else entry
        _inside(real, root, shown=f"{entry} (a link)")
        if real.is_dir() and real not in seen:
            seen.add(real)
            _confine_entries(real, root, seen)
