"""Runs: one folder per job with outputs, rejects, checkpoint and manifest.

`runs/<run-id>/` (or the `--out` folder) holds everything a job produced:
JSONL outputs, `rejects.jsonl`, `checkpoint.sqlite` (LangGraph's SQLite
checkpointer; Postgres instead when `SYNTHGRAPH_CHECKPOINT_URL` is set) and
`manifest.json` (config, versions, counts, timings).
Resuming opens the same folder again; outputs are append-only and the graphs
skip records whose ids are already written, so nothing runs twice.

Rejects are append-only too. A reject is *current* while its id is not done
in an output of the run (`Run.outputs`): when a resumed run retries a
retryable reject and the input succeeds, the old line stays as history but no
longer counts. `counts.rejects` in the manifest is the number of distinct
current reject ids, `counts.rejects_retryable` those whose every line is
retryable. `counts.inputs`, `counts.inputs_rejected` and
`counts.inputs_retryable` count the batch's inputs (see `graphs/batch.py`).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from synthgraph.tools.io import (
    InputError,
    InputProblem,
    JsonlWriter,
    RejectsWriter,
    content_id,
    done_ids,
    read_jsonl,
    write_json,
)
from synthgraph.tools.log import url_without_credentials
from synthgraph.tools.settings import get_settings
from synthgraph.tools.usage import Caps, Ledger, load_prices

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
CHECKPOINT = "checkpoint.sqlite"
LOCK = "run.lock"  # held by the one process working on the run
INPUT_IDS = "input_ids.jsonl"  # id and content hash of every input the run has taken on
POSTGRES_SETUP_LOCK = 7_310_012  # advisory lock: one process at a time creates the tables
_VERSIONED = ("synthgraph", "langgraph", "langchain-openai", "openai", "chromadb", "torch")


class RunError(ValueError):
    """A run folder that cannot be started or resumed as asked."""


@dataclass(frozen=True)
class Rejected:
    """Current reject ids (not done since), split by whether a retry may fix them."""

    final: frozenset[str]
    retryable: frozenset[str]
    """Ids whose every reject line says `retryable` (lines without the field are final)."""

    @property
    def all(self) -> frozenset[str]:
        return self.final | self.retryable


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

    def __init__(
        self,
        root: Path,
        run_id: str,
        graph: str,
        manifest: dict[str, Any],
        prices: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.root = root
        self.id = run_id
        self.graph = graph
        self.manifest = manifest
        self._started = time.monotonic()
        self.rejects = RejectsWriter(root / REJECTS)
        self.batch_inputs: dict[str, Literal["final", "retryable"] | None] = {}
        """This attempt's batch inputs (set by `run_batch`): id → why it is rejected, None if not."""
        settings = get_settings()
        self.ledger = Ledger.from_manifest(
            manifest.get("usage"),
            prices=load_prices(settings.prices_file) if prices is None else prices,
            caps=Caps(settings.max_cost, settings.max_total_tokens),
        )
        """Tokens, cost and cache hits of every attempt; the caps of this one."""
        self.stopped: str | None = None
        """Why this attempt stopped admitting inputs (a cap), if it did."""

    @classmethod
    def open(
        cls,
        graph: str,
        out: Path | None = None,
        resume: str | None = None,
        config: dict[str, Any] | None = None,
        upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Run:
        """Start a new run in `out` (default `runs/<id>`), or resume one by id or path.

        `upgrade` turns the config a resumed run was saved with into today's names before
        it is compared with `config`; nothing is written when the two differ."""
        runs_dir = get_settings().runs_dir
        prices = load_prices(get_settings().prices_file)  # a bad table fails before any lock
        if resume:
            root = _resumed_folder(resume, out)
            _hold(root)
            try:
                manifest = _read_manifest(root)
                if manifest.get("graph") != graph:
                    raise RunError(f"{root} is a {manifest.get('graph')!r} run, not {graph!r}")
                if upgrade is not None:
                    manifest["config"] = upgrade(manifest.get("config", {}))
                if config is not None:
                    _check_same_config(root, manifest.get("config", {}), config)
            except RunError:
                _release(root)  # a refused resume leaves the run as it was, free for the next
                raise
            manifest.setdefault("resumed_at", []).append(_now())
            run = cls(root, manifest["run_id"], graph, manifest, prices)
            run.save_manifest()
            return run

        run_id = new_run_id()
        root = out or runs_dir / run_id
        root.mkdir(parents=True, exist_ok=True)
        _hold(root)
        if (root / MANIFEST).exists():
            existing = _read_manifest(root).get("run_id")
            _release(root)
            raise RunError(
                f"{root} already holds run {existing}; pass --resume {root} to continue it "
                "or choose another --out"
            )
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
        run = cls(root, run_id, graph, manifest, prices)
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
        """Every id ever rejected, current or not (to write a reject only once)."""
        path = self.root / REJECTS
        return {str(r["id"]) for r in read_jsonl(path) if r.get("id")} if path.exists() else set()

    @property
    def outputs(self) -> dict[str, str]:
        """Outputs whose records mark inputs done: file name → id field (set by `run_batch`)."""
        return self.manifest.setdefault("outputs", {})

    def rejected(self, done: Collection[str] | None = None) -> Rejected:
        """Current reject ids: those not in `done` (default: every id done in `outputs`)."""
        if done is None:
            done = set().union(*(self.done(name, field) for name, field in self.outputs.items()))
        path = self.root / REJECTS
        final: set[str] = set()
        retryable: set[str] = set()
        for record in read_jsonl(path) if path.exists() else ():
            record_id = record.get("id")
            if record_id is None or str(record_id) in done:
                continue
            (retryable if record.get("retryable") is True else final).add(str(record_id))
        return Rejected(frozenset(final), frozenset(retryable - final))

    def reject_inputs(self, problems: Iterable[InputProblem], stage: str = "load") -> None:
        """Input records that cannot be used: rejected for good, once, and counted as inputs."""
        already = self.rejected_ids()
        for problem in problems:
            if problem.record not in already:
                self.rejects.reject(problem.record, stage, problem.cause)
            self.batch_inputs[problem.record] = "final"

    def import_rejects(self, rejections: Iterable[Mapping[str, Any]]) -> None:
        """A graph's rejects (parts of an input that failed while the rest was kept), each once:
        a resumed input's graph reports its earlier failures again."""
        rejections = list(rejections)
        if not rejections:  # the usual case: no need to read the rejects file per input
            return
        already = self.rejected_ids()
        for reject in rejections:
            if str(reject["id"]) not in already:
                self.rejects.reject(
                    str(reject["id"]), reject["stage"], reject["error"], reject.get("raw"),
                    retryable=bool(reject.get("retryable", False)),
                )  # fmt: skip
                already.add(str(reject["id"]))

    def check_inputs(self, contents: dict[str, str], source: str) -> None:
        """Remember each input id's content; an id this run took on with other content is bad input.

        Without this, resuming over an edited input would skip a changed record
        whose id is already done, and the outputs would silently mix versions.
        """
        path = self.root / INPUT_IDS
        known = {r["id"]: r["sha"] for r in read_jsonl(path)} if path.exists() else {}
        hashes = {record_id: content_id(text) for record_id, text in contents.items()}
        for record_id, sha in hashes.items():
            if known.get(record_id, sha) != sha:
                raise InputError(
                    f"{source}: record {record_id!r} differs from the record with that id this run "
                    "already took on; give it a new id, or start a new run"
                )
        with self.writer(INPUT_IDS) as writer:
            writer.write_many({"id": i, "sha": sha} for i, sha in hashes.items() if i not in known)

    @contextmanager
    def checkpointer(self) -> Iterator[Any]:
        """LangGraph's checkpointer for this run, redacted: Postgres at `SYNTHGRAPH_CHECKPOINT_URL`
        when set, else SQLite in the run folder.

        Thread ids start with the run id (see `graph_config`), so runs sharing one database never
        share a thread. A database that cannot be reached or set up is a `RunError`, raised before
        the graph runs.
        """
        from synthgraph.tools.checkpoints import RedactingSerializer

        url = get_settings().checkpoint_url
        if url:
            with _postgres_saver(url, RedactingSerializer()) as saver:
                yield saver
            return
        from langgraph.checkpoint.sqlite import SqliteSaver

        connection = sqlite3.connect(str(self.root / CHECKPOINT), check_same_thread=False)
        try:
            yield SqliteSaver(connection, serde=RedactingSerializer())
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
        rejected = self.rejected()
        self.manifest["counts"].update(counts)
        if self.batch_inputs:
            states = list(self.batch_inputs.values())
            self.manifest["counts"].update(
                inputs=len(states),
                inputs_rejected=sum(state is not None for state in states),
                inputs_retryable=states.count("retryable"),
            )
        self.manifest["counts"]["rejects"] = len(rejected.all)
        self.manifest["counts"]["rejects_retryable"] = len(rejected.retryable)
        self.timing("total", time.monotonic() - self._started)
        if self.stopped:
            status = "stopped"
            self.manifest["stopped"] = self.stopped
        else:
            self.manifest.pop("stopped", None)
        self.manifest["status"] = status
        self.manifest["finished_at"] = _now()
        self.save_manifest()
        self.rejects.close()
        _release(self.root)

    def save_manifest(self) -> None:
        self.manifest["usage"] = self.ledger.to_manifest()
        write_json(self.manifest, self.root / MANIFEST)


_held: dict[Path, int] = {}
"""Run folders this process holds: real path → the locked file's descriptor."""


@contextmanager
def _postgres_saver(url: str, serde: Any) -> Iterator[Any]:
    """LangGraph's `PostgresSaver` on one connection to `url`, its tables created if missing."""
    where = url_without_credentials(url)
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise RunError(f"SYNTHGRAPH_CHECKPOINT_URL must be a postgresql:// URL, not {where!r}")
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError as error:
        raise RunError(
            "SYNTHGRAPH_CHECKPOINT_URL is set but langgraph-checkpoint-postgres is not installed: "
            "pip install 'synthgraph[postgres]'"
        ) from error
    try:
        # The options of `PostgresSaver.from_conn_string`, which takes no serializer.
        connection = psycopg.Connection.connect(
            url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=10
        )
        try:
            saver = PostgresSaver(connection, serde=serde)
            # Runs starting at once on a new database would race to create the same tables. The
            # lock is polled: a waiting statement would deadlock with CREATE INDEX CONCURRENTLY.
            lock = "SELECT pg_try_advisory_lock(%s) AS locked"
            while connection.execute(lock, (POSTGRES_SETUP_LOCK,)).fetchone() != {"locked": True}:
                time.sleep(0.1)
            saver.setup()
            connection.execute("SELECT pg_advisory_unlock(%s)", (POSTGRES_SETUP_LOCK,))
        except BaseException:
            connection.close()
            raise
    except psycopg.Error as error:
        raise RunError(
            f"the checkpoint database at {where} (SYNTHGRAPH_CHECKPOINT_URL) failed: {error}"
        ) from error
    with connection:
        yield saver


def _hold(root: Path) -> None:
    """Lock the run folder for this process, or refuse: two processes on one run would both
    take the same pending inputs. The kernel drops the lock when the process dies (kill -9 too).
    The same process may open it again (a resume after a failed attempt in one session)."""
    key = root.resolve()
    if key in _held:
        return
    fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunError(
            f"{root} is in use by another process; wait for it to end, or choose another --out"
        ) from None
    _held[key] = fd


def _release(root: Path) -> None:
    fd = _held.pop(root.resolve(), None)
    if fd is not None:
        os.close(fd)


def _resumed_folder(resume: str, out: Path | None) -> Path:
    """The folder of the run to resume: a folder, or a run id under the runs folder."""
    root = Path(resume) if Path(resume).is_dir() else get_settings().runs_dir / resume
    if out is not None and out.resolve() != root.resolve() and (out / MANIFEST).exists():
        root = out
    if not (root / MANIFEST).exists():
        raise RunError(f"cannot resume {resume!r}: no {MANIFEST} in {root}")
    return root


def saved_config(resume: str, out: Path | None = None) -> dict[str, Any]:
    """The config a run was started with, read without taking the run (to read its inputs
    as it did before `Run.open`)."""
    return dict(_read_manifest(_resumed_folder(resume, out)).get("config", {}))


def _read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / MANIFEST).read_text("utf-8"))


def _check_same_config(root: Path, stored: dict[str, Any], config: dict[str, Any]) -> None:
    """Resuming with other options would mix two configurations in one run's outputs."""
    given = json.loads(json.dumps(config, default=str))  # compare as the manifest stores it
    differing = _config_differences(stored, given)
    if differing:
        shown = "; ".join(
            f"{key}: run {_short(old)}, now {_short(new)}" for key, old, new in differing[:5]
        )
        raise RunError(
            f"cannot resume {root}: its config differs ({shown}); "
            "resume with no options (the run's own are used), with all of them as they were, "
            "or start a new run"
        )


def _config_differences(stored: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, given value) where two configs differ; None: key missing."""
    if isinstance(stored, dict) and isinstance(given, dict):
        return [
            difference
            for name in sorted(set(stored) | set(given), key=str)
            for difference in _config_differences(
                stored.get(name), given.get(name), f"{prefix}{name}."
            )
        ]
    return [] if stored == given else [(prefix.rstrip("."), stored, given)]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
