"""The shape every feature's job shares, and the seam an executor runs.

A feature's job (`graphs/<feature>/job.py`) takes the command's options, and:

1. opens its run folder with `open_job` (a new run with its config, or a resumed one with the
   config it started with);
2. loads its inputs with the one reader (`tools/io.py`); records it cannot use are rejected once;
3. hands the items and a per-item `process` (which invokes the feature's graph) to the executor,
   `graphs/batch.py` `run_batch`: resumable, bounded, one append per input, failures to rejects;
4. copies what its graph rejected inside an item into the run (`Run.import_rejects`);
5. finishes the run and returns a summary dataclass, which the command prints and the tool returns.

Commands (`cli.py`) and agent tools (`tool.py`) call the job; nothing else does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from synthgraph.agents.llm import StructuredOutputError
from synthgraph.tools.io import InputProblem
from synthgraph.tools.runs import Run
from synthgraph.tools.usage import Budget


def open_job(
    graph: str,
    config: dict[str, Any] | None,
    *,
    out: Path | None = None,
    resume: str | None = None,
    problems: Iterable[InputProblem] = (),
    budget: Budget | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Start a run of `graph` with `config`, or resume one; returns the run and its config.

    On resume, `config=None` (no options given) keeps the run's own config, and a config that
    is given must be the run's (`Run.open` names the keys that differ): one run never mixes
    two configurations. Input records that could not be read (`problems`) are rejected once.
    `budget` (caps, cache) steers this attempt only, so it may differ on resume.
    """
    if config is None and resume is None:
        raise ValueError(f"a new {graph} run needs its config")
    run = Run.open(graph, out=out, resume=resume, config=config, upgrade=current_names)
    if budget is not None:
        run.ledger.apply(budget)
    run.reject_inputs(problems, "input")
    return run, run.manifest["config"]


# Config keys renamed since a run may have started: old name → current name.
RENAMED_KEYS = {
    "max_records": "limit",
    "dedup_method": "dedup",
    "dedup_namespace": "namespace",
    "dedup_threshold": "threshold",
    "dedup_owner": "owner",
    "sampling_seed": "seed",
}


def current_names(config: Any) -> Any:
    """A saved config in today's vocabulary, so a run started by an earlier version resumes
    (`dedup` was a bool where it is now a method)."""
    if not isinstance(config, dict):
        return config
    renamed: dict[str, Any] = {}
    for key, value in config.items():
        name = RENAMED_KEYS.get(key, key)
        if name == "dedup" and isinstance(value, bool):
            value = "both" if value else "none"
        renamed[name] = current_names(value)
    return renamed


def nothing_from(what: str, failed: Iterable[Mapping[str, Any]]) -> StructuredOutputError:
    """The error of an input that gave nothing: every cause, and the first raw reply to look at."""
    failures = list(failed)
    errors = [str(r["error"]) for r in failures]
    raw = next((r["raw"] for r in failures if r.get("raw")), None)
    return StructuredOutputError(f"{what}: {'; '.join(errors)}", raw, errors)
