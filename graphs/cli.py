"""The `synthgraph` command line.

Foundation commands live here (`doctor`, `serve`, `ask`); each data graph adds
its command group from its own `*_cli.py` module at the bottom of this file.
"""

from __future__ import annotations

import json
import signal
from typing import Annotated, Any

import typer

from synthgraph.graphs.cli_support import (
    UserErrorsGroup,
    console,
    crash,
    fail,
    stdout,
    table,
)
from synthgraph.tools.log import configure_logging, get_logger
from synthgraph.tools.settings import get_settings

app = typer.Typer(
    name="synthgraph",
    help="A multi-agent synthetic-data factory built on LangGraph.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=UserErrorsGroup,
)
log = get_logger(__name__)


@app.callback()
def main_options(
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines (default when not a TTY).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Configure logging once, for every command."""
    configure_logging(json_lines=True if log_json else None, level=log_level)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check configuration, the LLM endpoint (or embedded model), embeddings, Chroma and torch."""
    from synthgraph.graphs.doctor import run_checks

    settings = get_settings()
    log.info("doctor.start", endpoint=settings.base_url or "embedded")
    report = run_checks(settings)
    if as_json:
        stdout.print_json(json.dumps(report, default=str))
    else:
        rows: list[list[Any]] = []
        for name, result in report.items():
            details = {k: v for k, v in result.items() if k != "ok"}
            status = "[green]ok[/]" if result.get("ok") else "[red]FAIL[/]"
            rows.append([name, status, "\n".join(f"{k}: {v}" for k, v in details.items())])
        stdout.print(table("synthgraph doctor", ["check", "status", "details"], rows))
    if not report["llm"]["ok"]:
        raise typer.Exit(1)


@app.command()
def serve(
    port: Annotated[
        int | None, typer.Option(help="Port on loopback (default: a free one).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A GGUF file (default: the embedded model).")
    ] = None,
) -> None:
    """Serve the local model until Ctrl-C (llama-server, OpenAI-compatible, loopback only).

    Other synthgraph processes on this machine (Studio, a second CLI) share the
    same server; or point any client at the printed base URL. The server stops
    once this command and every other process using it are gone.
    """
    import time
    from pathlib import Path

    from synthgraph.agents.llama_registry import entry_alive
    from synthgraph.agents.local_model import LocalModelError, local_endpoint, release_all

    settings = get_settings()
    path = Path(model).expanduser() if model else None
    if path is not None and not path.is_file():
        fail(f"--model {path}: no such GGUF file")
    try:
        endpoint = local_endpoint(path, settings, port=port)
    except LocalModelError as error:
        fail(str(error))
    server = endpoint.server

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        note = " (already running: --port ignored)" if port and port != server["port"] else ""
        console.print(
            f"[green]serving[/] {endpoint.model} at [bold]{endpoint.base_url}[/]{note}: "
            f"{server['slots']} slots, log {server['log']}"
        )
        console.print(
            "synthgraph processes on this machine share it by themselves; other clients use "
            "the URL above. Ctrl-C stops serving; the server stops when no process uses it."
        )
        while entry_alive(server):
            time.sleep(1)
        fail(f"llama-server stopped; see {server['log']}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        release_all()


@app.command("build-server")
def build_server() -> None:
    """Build llama.cpp's llama-server for the embedded model, once (about 10 minutes on 2 cores)."""
    from synthgraph.agents.llama_build import BuildError, llama_server_binary

    try:
        stdout.print(str(llama_server_binary(get_settings())))
    except BuildError as error:
        fail(str(error))


@app.command()
def ask(
    description: Annotated[
        str, typer.Argument(help="Describe a job; the model names a language for it.")
    ],
) -> None:
    """One real structured call through the smoke graph (a quick end-to-end check)."""
    from synthgraph.agents.llm import StructuredOutputError
    from synthgraph.graphs.smoke import graph

    try:
        result = graph.invoke({"description": description})
    except StructuredOutputError as error:
        fail(f"the model gave no valid answer: {error}")
    stdout.print_json(json.dumps(result))


# --- command groups of the data graphs -------------------------------------------

from synthgraph.graphs.dedup_cli import dedup_command  # noqa: E402

app.command("dedup")(dedup_command)

from synthgraph.graphs.personas_cli import personas_command, synthesize_command  # noqa: E402

app.command("personas")(personas_command)
app.command("synthesize")(synthesize_command)

from synthgraph.graphs.agentinstruct_cli import instruct_command, instruct_export_command  # noqa: E402

app.command("instruct")(instruct_command)
app.command("instruct-export")(instruct_export_command)

from synthgraph.graphs.sampling_cli import sampling_app  # noqa: E402

app.add_typer(sampling_app, name="sampling")

from synthgraph.graphs.retrieval_cli import retrieval_app  # noqa: E402

app.add_typer(retrieval_app, name="retrieval")

from synthgraph.graphs.tabular_cli import app as tabular_app  # noqa: E402

app.add_typer(tabular_app, name="tabular")


def main() -> None:
    try:
        app()
    except Exception as error:  # not a user error (those end in `fail`): never Typer's traceback
        crash(error)


if __name__ == "__main__":
    main()
