"""The package layout and its layering rules hold for every file in the tree."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("agents", "graphs", "tools", "tabular", "prompts")
# Which synthgraph layers each layer may import (graphs may import all).
ALLOWED = {
    "prompts": {"prompts"},
    "tabular": {"tabular"},
    "tools": {"tools", "prompts", "tabular"},
    "agents": {"agents", "tools", "prompts", "tabular"},
    "graphs": set(FOLDERS),
}
TABULAR_THIRD_PARTY = {"torch", "numpy", "pandas", "safetensors"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_package_folder_is_installed_under_synthgraph() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    package_dir = setuptools["package-dir"]
    for folder in FOLDERS:
        assert package_dir[f"synthgraph.{folder}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            dotted = ".".join(init.parent.relative_to(ROOT).parts)
            assert f"synthgraph.{dotted}" in declared, (
                f"{init.parent} is not listed in pyproject.toml"
            )


@pytest.mark.parametrize("layer", FOLDERS)
def test_layers_import_only_what_they_may(layer: str) -> None:
    for path in _python_files(layer):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "synthgraph" and len(parts) > 1:
                assert parts[1] in ALLOWED[layer], f"{path.relative_to(ROOT)} imports {name}"
            assert parts[0] not in FOLDERS, f"{path.relative_to(ROOT)} imports the bare name {name}"


def test_tabular_uses_only_torch_numpy_pandas() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in _python_files("tabular"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in stdlib | TABULAR_THIRD_PARTY | {"synthgraph"}, (
                f"{path.relative_to(ROOT)} imports {name}"
            )


def test_console_script_and_graph_registry() -> None:
    import json

    assert _pyproject()["project"]["scripts"]["synthgraph"] == "synthgraph.graphs.cli:main"
    registry = json.loads((ROOT / "langgraph.json").read_text())
    for name, entry in registry["graphs"].items():
        file, attribute = entry["path"].split(":")
        assert (ROOT / file).is_file(), name
        assert entry.get("description"), f"graph {name} needs a description"
        module = "synthgraph." + file.removeprefix("./").removesuffix(".py").replace("/", ".")
        compiled = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert compiled.get_input_jsonschema()["properties"], f"graph {name} has no input schema"


def test_ruff_bans_bare_folder_imports(tmp_path: Path) -> None:
    probe = ROOT / "tools" / "_ban_probe.py"
    probe.write_text("import tools\n")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", str(probe)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    finally:
        probe.unlink()
    assert result.returncode != 0 and "TID251" in result.stdout
