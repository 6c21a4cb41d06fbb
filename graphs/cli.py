"""The `synthgraph` command line.

Foundation commands live here (`doctor`, `serve`, `build-server`, `ask`). Each feature's
commands live in `graphs/<feature>/cli.py` and are loaded only when that command runs
(`FEATURE_COMMANDS`), so `synthgraph --help` imports neither torch nor LangGraph.
"""

from __future__ import annotations

import difflib
import importlib
import json
import signal
from typing import Annotated, Any

import click
import typer
from rich.text import Text

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

# Command name → (module, attribute, one-line help). The attribute is a typer app (a command
# group) or a command function. The help is repeated here so that listing commands imports none.
FEATURE_COMMANDS: dict[str, tuple[str, str, str]] = {
    "dedup": (
        "synthgraph.graphs.dedup_cli",
        "dedup_command",
        "Drop near-duplicates: MinHash on words, then MiniLM embeddings in Chroma.",
    ),
    "personas": (
        "synthgraph.graphs.personas.cli",
        "personas_command",
        "Infer personas from texts, expand them through relations, dedup them (PersonaHub).",
    ),
    "synthesize": (
        "synthgraph.graphs.synthesis.cli",
        "synthesize_command",
        "Write task items (math, instruction, knowledge, npc, tool) from each persona's view.",
    ),
    "instruct": (
        "synthgraph.graphs.agentinstruct.cli",
        "instruct_command",
        "AgentInstruct: turn seed documents into instruction data (chat messages with provenance).",
    ),
    "instruct-export": (
        "synthgraph.graphs.agentinstruct.cli",
        "instruct_export_command",
        "Export AgentInstruct output as a Hugging Face dataset (Parquet + dataset card).",
    ),
    "sampling": (
        "synthgraph.graphs.sampling.cli",
        "sampling_app",
        "Weak-cheap vs strong-expensive sampling at a matched compute budget.",
    ),
    "retrieval": (
        "synthgraph.graphs.retrieval.cli",
        "retrieval_app",
        "Retrieval training data: generate queries, filter, train, evaluate.",
    ),
    "tabular": (
        "synthgraph.graphs.tabular.cli",
        "app",
        "TabularARGN synthetic tables: fit, sample, impute, report.",
    ),
}


class FeatureCommands(UserErrorsGroup):
    """The root group: feature commands are listed from `FEATURE_COMMANDS` and imported only
    when one runs; a renamed flag of that command (its module's `DEPRECATED_FLAGS`) is
    rewritten to the new spelling with a warning."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *FEATURE_COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in FEATURE_COMMANDS:
            return super().get_command(ctx, name)
        # For listing only: the help line, without importing the feature.
        summary = FEATURE_COMMANDS[name][2]
        return click.Command(name, help=summary, short_help=summary)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            name, command, rest = super().resolve_command(ctx, args)
        except typer.TyperException as error:  # typer's own click: its UsageError
            # Typer suggests from the commands it holds; the features are only named here.
            close = difflib.get_close_matches(args[0] if args else "", self.list_commands(ctx))
            message = getattr(error, "message", None)
            if close and isinstance(message, str) and "Did you mean" not in message:
                error.message += f" Did you mean {', '.join(repr(c) for c in close)}?"
            raise
        if name in FEATURE_COMMANDS:
            module = importlib.import_module(FEATURE_COMMANDS[name][0])
            command = _feature_command(name, getattr(module, FEATURE_COMMANDS[name][1]))
            renamed = getattr(module, "DEPRECATED_FLAGS", {})
            rest = _renamed_flags(rest, renamed, _options_with_values(command))
        return name, command, rest


def _feature_command(name: str, target: Any) -> click.Command:
    if isinstance(target, typer.Typer):
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer(pretty_exceptions_show_locals=False, add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


def _options_with_values(command: click.Command) -> set[str]:
    """Every option name of the command (and its subcommands) that takes a value."""
    names = {
        name
        for param in command.params
        # typer carries its own copy of click, so the kind is read, not type-checked
        if param.param_type_name == "option"
        and not getattr(param, "is_flag", False)
        and param.nargs != 0
        for name in param.opts
    }
    for sub in getattr(command, "commands", {}).values():
        names |= _options_with_values(sub)
    return names


def _renamed_flags(args: list[str], renamed: dict[str, str], with_values: set[str]) -> list[str]:
    """The old spelling of a renamed flag still works for one release, with a warning.
    An option's value is never rewritten, even when it spells an old flag."""
    result: list[str] = []
    value_next = False
    for position, arg in enumerate(args):
        if value_next:
            value_next = False
            result.append(arg)
            continue
        if arg == "--":  # everything after it is an argument, not a flag
            return [*result, *args[position:]]
        flag, equals, value = arg.partition("=")
        if flag in renamed:
            console.print(
                Text.assemble(
                    ("warning:", "bold yellow"), f" {flag} is deprecated; use {renamed[flag]}"
                ),
                soft_wrap=True,
            )
            flag = renamed[flag]
            arg = flag + equals + value
        value_next = not equals and flag in with_values
        result.append(arg)
    return result


app = typer.Typer(
    name="synthgraph",
    help="A multi-agent synthetic-data factory built on LangGraph.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=FeatureCommands,
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


def main() -> None:
    try:
        app()
    except Exception as error:  # not a user error (those end in `fail`): never Typer's traceback
        crash(error)


if __name__ == "__main__":
    main()
