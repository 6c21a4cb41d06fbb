"""The root command: feature commands load lazily, and a renamed flag's old spelling still works."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from synthgraph.graphs import cli
from synthgraph.graphs.cli import FEATURE_COMMANDS, _renamed_flags, app


def test_help_lists_every_feature_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in FEATURE_COMMANDS:
        assert name in result.output


def test_every_registered_command_loads_and_shows_its_help() -> None:
    for name in FEATURE_COMMANDS:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f"synthgraph {name}" in result.output


def test_old_flag_spelling_is_rewritten_with_a_warning(capsys) -> None:  # type: ignore[no-untyped-def]
    renamed = {"--max-records": "--limit"}
    args = ["in.jsonl", "--max-records", "3", "--max-records=4", "--", "--max-records"]
    assert _renamed_flags(args, renamed, {"--limit"}) == [
        "in.jsonl", "--limit", "3", "--limit=4", "--", "--max-records",
    ]  # fmt: skip
    assert "--max-records is deprecated; use --limit" in capsys.readouterr().err
    # A value is a value, even when it spells an old flag.
    assert _renamed_flags(["--text-field", "--max-records"], renamed, {"--text-field"}) == [
        "--text-field", "--max-records",
    ]  # fmt: skip


def test_a_feature_command_runs_with_its_deprecated_flag(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, int] = {}

    def count(limit: int = typer.Option(0, "--limit")) -> None:
        seen["limit"] = limit

    module = type(
        "Module",
        (),
        {"count_command": staticmethod(count), "DEPRECATED_FLAGS": {"--max": "--limit"}},
    )
    monkeypatch.setitem(FEATURE_COMMANDS, "count", ("fake.module", "count_command", "Count."))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: module)
    result = CliRunner().invoke(app, ["count", "--max", "5"])
    assert result.exit_code == 0, result.output
    assert seen == {"limit": 5}
