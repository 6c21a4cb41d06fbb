"""What every command shares: the console, progress bars, clear failures, tables."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from synthgraph.tools.log import redact
from synthgraph.tools.settings import Executor
from synthgraph.tools.usage import Budget

console = Console(stderr=True)
stdout = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command with a one-line reason (no traceback for user errors)."""
    # Plain text, never wrapped: a path or `[...]` in the message stays as it is, on one line.
    line = " ".join(redact(message).split())  # an endpoint's multi-line body stays one line
    console.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True)
    raise typer.Exit(code)


def crash(error: BaseException) -> NoReturn:
    """Stop on a bug or a failing endpoint: its traceback, redacted (endpoints echo API keys)."""
    sys.stderr.write(redact("".join(traceback.format_exception(error))))
    raise SystemExit(1)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or a bad option, not a bug: they get one line, no traceback."""
    # Imported on failure only, so `synthgraph --help` stays fast.
    from openai import AuthenticationError, NotFoundError, PermissionDeniedError

    from synthgraph.agents.agentinstruct import SkillError
    from synthgraph.agents.local_model import LocalModelError
    from synthgraph.tools.io import InputError
    from synthgraph.tools.runs import RunError
    from synthgraph.tools.workspace import WorkspaceError

    # The endpoint refused the key, the model or the URL: configuration, not a bug.
    refused = (AuthenticationError, PermissionDeniedError, NotFoundError)
    return (InputError, RunError, WorkspaceError, SkillError, LocalModelError, *refused)


def _endpoint_failed(error: BaseException) -> bool:
    from openai import APIError

    return isinstance(error, APIError)


class UserErrorsGroup(TyperGroup):
    """The root command: a user error from any command ends it with `fail` (one line, exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            if isinstance(error, _user_errors()):
                fail(str(error))
            if _endpoint_failed(error):  # still failing after every retry: say so in one line
                fail(f"the endpoint failed: {type(error).__name__}: {error}", code=1)
            raise


@contextmanager
def progress(transient: bool = False) -> Iterator[Progress]:
    """A rich progress display for long loops (one or more tasks)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        # Off a terminal a transient bar shows nothing but a stray blank line when it stops.
        disable=transient and not console.is_terminal,
    ) as bar:
        yield bar


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A summary table; print it with `stdout.print(...)`."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    return result


# --- options and the exit status every data command shares ---------------------------
_RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "resume": (
        Annotated[str | None, typer.Option(help="Continue this run (id or folder).")],
        None,
    ),
    "retry_rejects": (
        Annotated[
            bool,
            typer.Option(
                "--retry-rejects/--no-retry-rejects",
                help="On --resume, try again the inputs whose rejects are all retryable "
                "(endpoint down, rate-limited, garbage reply).",
            ),
        ],
        True,
    ),
    "dedupe_ids": (
        Annotated[
            bool,
            typer.Option(
                "--dedupe-ids",
                help="Drop later records that repeat an id (default: a repeat is an error).",
            ),
        ],
        False,
    ),
    "max_reject_rate": (
        Annotated[
            float,
            typer.Option(
                min=0.0, max=1.0, help="Exit 1 when more than this share of inputs is rejected."
            ),
        ],
        0.5,
    ),
    "max_cost": (
        Annotated[
            float | None,
            typer.Option(
                min=0.0,
                help="Stop admitting inputs before the run spends more than this many USD "
                "(all attempts); --resume with a higher cap goes on.",
            ),
        ],
        None,
    ),
    "max_total_tokens": (
        Annotated[
            int | None,
            typer.Option(min=0, help="Like --max-cost, in prompt plus completion tokens."),
        ],
        None,
    ),
    "cache": (
        Annotated[
            bool | None,
            typer.Option(
                "--cache/--no-cache",
                help="Reuse replies to identical requests (default: on for remote endpoints).",
                show_default=False,
            ),
        ],
        None,
    ),
    "batch": (
        Annotated[
            bool,
            typer.Option(
                "--batch", help="Send requests through the endpoint's Batch API (half price, slow)."
            ),
        ],
        False,
    ),
    "executor": (
        Annotated[
            Executor | None,
            typer.Option(
                help="thread: a thread pool; async: one event loop, for jobs with async graphs "
                "(default: SYNTHGRAPH_EXECUTOR, async); ray: blocks of inputs on a Ray cluster "
                "(SYNTHGRAPH_RAY_ADDRESS, else local Ray), for jobs that support it (personas); "
                "others run async.",
                show_default=False,
            ),
        ],
        None,
    ),
}


@dataclass(frozen=True)
class RunOptions:
    """What every run-folder command is also told: which attempt, what to retry, what to spend,
    when to fail. None of it shapes the data, so a `--resume` may change any of it."""

    resume: str | None = None
    retry_rejects: bool = True
    dedupe_ids: bool = False
    max_reject_rate: float = 0.5
    max_cost: float | None = None
    max_total_tokens: int | None = None
    cache: bool | None = None
    batch: bool = False
    executor: Executor | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.max_cost, self.max_total_tokens, self.cache, self.batch, self.executor)


def with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the shared run options added to its flags; it gets them as one
    `run_options: RunOptions` argument. Defined once, so every command spells them alike."""
    own = [
        parameter
        for name, parameter in inspect.signature(command, eval_str=True).parameters.items()
        if name != "run_options"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in _RUN_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> None:
        run_options = RunOptions(**{name: kwargs.pop(name) for name in _RUN_OPTIONS})
        command(*args, run_options=run_options, **kwargs)

    with_options.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return with_options


# Options that steer one attempt, not what the run makes: they may change on --resume.
_ATTEMPT_OPTIONS = {"out", "max_minutes", *_RUN_OPTIONS}


def resuming_as_started(ctx: typer.Context, resume: object) -> bool:
    """True on `--resume` with no option that shapes the data given: go on as the run started.

    A resume that names such options is checked against the run's config instead
    (`Run.open` refuses a difference, naming the keys), so repeating them is allowed.
    """
    if not resume:
        return False
    return not any(
        param.param_type_name == "option"
        and param.name not in _ATTEMPT_OPTIONS
        and getattr(ctx.get_parameter_source(param.name or ""), "name", None)
        in ("COMMANDLINE", "ENVIRONMENT")
        for param in ctx.command.params
    )


def report_run(run_dir: Path | str, options: RunOptions, resume_args: str | None = None) -> None:
    """Print what the run spent; exit 1 when it stopped at a cap, or when more than
    `--max-reject-rate` of its inputs are rejected.

    The figures are the manifest's (`usage`, `status`, `counts`), so what the command says
    agrees with what the run folder says.
    """
    from synthgraph.tools.runs import MANIFEST, REJECTS  # here: `--help` need not load pandas

    manifest = json.loads((Path(run_dir) / MANIFEST).read_text("utf-8"))
    usage = manifest.get("usage", {})
    if usage.get("rows"):
        stdout.print(usage_table(usage))
    resume = resume_args or f"--resume {run_dir}"
    if manifest.get("status") == "stopped":
        fail(
            f"stopped at {manifest.get('stopped')}: inputs past it were not started; "
            f"raise the cap and run with {resume} to finish",
            code=1,
        )
    counts = manifest.get("counts", {})
    inputs, rejected = counts.get("inputs", 0), counts.get("inputs_rejected", 0)
    if not inputs or rejected / inputs <= options.max_reject_rate:
        return
    retryable = counts.get("inputs_retryable", 0)
    hint = f"run with {resume} to retry" if retryable else f"see {Path(run_dir) / REJECTS}"
    fail(f"{rejected} of {inputs} inputs rejected ({retryable} retryable): {hint}", code=1)


def usage_table(usage: dict[str, Any]) -> Table:
    """Calls, cache hits, tokens and cost per role, stage and model, and the run's total."""
    fields = ("calls", "cache_hits", "prompt_tokens", "completion_tokens")
    rows = [
        [r["role"], r["stage"], r["model"], *(r[f] for f in fields), f"${r['cost_usd']:.4f}"]
        for r in [*usage["rows"], {"role": "total", "stage": "", "model": "", **usage["total"]}]
    ]
    columns = ["role", "stage", "model", "calls", "cache hits", "prompt tok", "completion tok"]
    return table("spent (all attempts)", [*columns, "cost"], rows)
