"""Runs: one folder per job with outputs, rejects, checkpoint and manifest.

`runs/<run-id>/` (or the `--out` folder) holds everything a job produced:
JSONL outputs, `rejects.jsonl`, `checkpoint.sqlite` (LangGraph's SQLite
checkpointer) and `manifest.json` (config, versions, counts, timings).
Resuming opens the same folder again; outputs are append-only and the graphs
skip records whose ids are already written, so nothing runs twice.
"""

from __future__ import annotations

import platform
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from synthgraph.tools.io import (
    JsonlWriter,
    RejectsWriter,
    count_records,
    done_ids,
    read_jsonl,
    write_json,
)
from synthgraph.tools.settings import get_settings

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
CHECKPOINT = "checkpoint.sqlite"
_VERSIONED = ("synthgraph", "langgraph", "langchain-openai", "openai", "chromadb", "torch")


class RunError(ValueError):
    """A run folder that cannot be started or resumed as asked."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


class Run:
    """A job's folder. Create with `Run.open(...)`."""

    def __init__(self, root: Path, run_id: str, graph: str, manifest: dict[str, Any]) -> None:
        self.root = root
        self.id = run_id
        self.graph = graph
        self.manifest = manifest
        self._started = time.monotonic()
        self.rejects = RejectsWriter(root / REJECTS)

    @classmethod
    def open(
        cls,
        graph: str,
        out: Path | None = None,
        resume: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Run:
        """Start a new run in `out` (default `runs/<id>`), or resume one by id or path."""
        runs_dir = get_settings().runs_dir
        if resume:
            root = Path(resume) if Path(resume).is_dir() else runs_dir / resume
            if out is not None and out.resolve() != root.resolve() and (out / MANIFEST).exists():
                root = out
            if not (root / MANIFEST).exists():
                raise RunError(f"cannot resume {resume!r}: no {MANIFEST} in {root}")
            manifest = _read_manifest(root)
            if manifest.get("graph") != graph:
                raise RunError(f"{root} is a {manifest.get('graph')!r} run, not {graph!r}")
            manifest.setdefault("resumed_at", []).append(_now())
            run = cls(root, manifest["run_id"], graph, manifest)
            run.save_manifest()
            return run

        run_id = new_run_id()
        root = out or runs_dir / run_id
        if (root / MANIFEST).exists():
            existing = _read_manifest(root).get("run_id")
            raise RunError(
                f"{root} already holds run {existing}; pass --resume {root} to continue it "
                "or choose another --out"
            )
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "run_id": run_id,
            "graph": graph,
            "created_at": _now(),
            "config": config or {},
            "versions": package_versions(),
            "counts": {},
            "timings": {},
            "status": "running",
        }
        run = cls(root, run_id, graph, manifest)
        run.save_manifest()
        return run

    # --- files --------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / name

    def writer(self, name: str) -> JsonlWriter:
        return JsonlWriter(self.root / name)

    def done(self, name: str, id_field: str = "id") -> set[str]:
        """Ids already in output `name`: skip them when resuming."""
        return done_ids(self.root / name, id_field)

    def rejected_ids(self) -> set[str]:
        path = self.root / REJECTS
        return {str(r["id"]) for r in read_jsonl(path) if r.get("id")} if path.exists() else set()

    @contextmanager
    def checkpointer(self) -> Iterator[Any]:
        """LangGraph's SQLite checkpointer for this run (thread id: the run id)."""
        from langgraph.checkpoint.sqlite import SqliteSaver

        connection = sqlite3.connect(str(self.root / CHECKPOINT), check_same_thread=False)
        try:
            yield SqliteSaver(connection)
        finally:
            connection.close()

    def graph_config(self, **extra: Any) -> dict[str, Any]:
        """Config for `graph.invoke(..., config)`: thread id and run metadata."""
        configurable = {"thread_id": self.id, **extra.pop("configurable", {})}
        return {"configurable": configurable, "run_name": f"{self.graph}:{self.id}", **extra}

    # --- manifest -----------------------------------------------------------
    def count(self, **counts: int) -> None:
        self.manifest["counts"].update(counts)
        self.save_manifest()

    def timing(self, stage: str, seconds: float) -> None:
        self.manifest["timings"][stage] = round(self.manifest["timings"].get(stage, 0) + seconds, 3)

    def finish(self, status: str = "done", **counts: int) -> None:
        self.manifest["counts"].update(counts)
        self.manifest["counts"]["rejects"] = count_records(self.root / REJECTS)
        self.timing("total", time.monotonic() - self._started)
        self.manifest["status"] = status
        self.manifest["finished_at"] = _now()
        self.save_manifest()
        self.rejects.close()

    def save_manifest(self) -> None:
        write_json(self.manifest, self.root / MANIFEST)


def _read_manifest(root: Path) -> dict[str, Any]:
    import json

    return json.loads((root / MANIFEST).read_text("utf-8"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
