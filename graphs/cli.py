"""The `synthgraph` command line.

Foundation commands live here (`doctor`, `serve`, `ask`); each data graph adds
its command group from its own `*_cli.py` module at the bottom of this file.
"""

from __future__ import annotations

import json
import signal
from typing import Annotated, Any

import typer

from synthgraph.graphs.cli_support import console, fail, stdout, table
from synthgraph.tools.log import configure_logging, get_logger
from synthgraph.tools.settings import get_settings

app = typer.Typer(
    name="synthgraph",
    help="A multi-agent synthetic-data factory built on LangGraph.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
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
    """Serve the local model in the foreground (OpenAI-compatible, loopback only).

    Other synthgraph processes on this machine (Studio, a second CLI) find and
    reuse it; or point any client at the printed base URL.
    """
    from pathlib import Path

    from synthgraph.agents.local_model import (
        LocalModelError,
        LocalServer,
        register,
        resolve_model_path,
        unregister,
    )

    settings = get_settings()
    try:
        path = (
            Path(model).expanduser().resolve() if model else resolve_model_path(settings).resolve()
        )
        server = LocalServer(path, settings, port=port).start()
    except LocalModelError as error:
        fail(str(error))

    def interrupt(*_: Any) -> None:
        # Stopping happens below, outside the handler: Popen.wait is not reentrant.
        raise KeyboardInterrupt

    # Before registering: a client may send SIGTERM as soon as it finds the server.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        register(server)
        console.print(
            f"[green]serving[/] {server.alias} at [bold]{server.base_url}[/] "
            f"(log: {server.log_path})"
        )
        console.print(
            "synthgraph processes on this machine reuse it by themselves; other clients use the "
            "URL above (with synthgraph: SYNTHGRAPH_STRUCTURED_METHOD=json_mode). Ctrl-C stops."
        )
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.stop()
        unregister(server)


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
    app()


if __name__ == "__main__":
    main()
