"""What every command shares: the console, progress bars, clear failures, tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

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

console = Console(stderr=True)
stdout = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command with a one-line reason (no traceback for user errors)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


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
