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
# opacus: DP-SGD on torch (the `dp` extra), imported only when a fit asks for privacy.
# ray: Ray Train (the `ray` extra), only in tabular/ray_train.py, imported for a Ray fit.
TABULAR_THIRD_PARTY = {"torch", "numpy", "pandas", "safetensors", "opacus", "ray"}
# Every feature is a package graphs/<feature>/ with these four parts (issue 15).
FEATURES = ("personas", "synthesis", "agentinstruct", "retrieval", "sampling", "tabular")
FEATURE_PARTS = ("graph.py", "job.py", "cli.py", "tool.py")
# What a feature's cli.py and tool.py may import from synthgraph.graphs besides their own feature.
SHARED_GRAPHS_MODULES = {
    "synthgraph.graphs.cli_support",
    "synthgraph.graphs.jobs",
    "synthgraph.graphs.batch",
    "synthgraph.graphs.context",
}
# Names issue 15 retired: one vocabulary for flags and context fields.
RETIRED_FLAGS = {"--max-records", "--dedup-method", "--dedup-namespace", "--dedup-threshold"}
RETIRED_FIELDS = {"max_records", "dedup_method", "dedup_namespace", "dedup_threshold"}


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


# --- issue 15: one shape for every feature ------------------------------------------------------


def _library_files() -> list[Path]:
    return [path for folder in FOLDERS for path in _python_files(folder)]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _graphs_modules(path: Path) -> set[str]:
    """The synthgraph.graphs modules `path` imports (`from pkg import module` names the module)."""
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                folder = ROOT / Path(*dotted.split(".")[1:])
                is_module = folder.with_suffix(".py").is_file() or folder.is_dir()
                names.add(dotted if is_module else node.module)
    return {name for name in names if name.startswith("synthgraph.graphs.")}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("feature", FEATURES)
def test_every_feature_has_a_graph_a_job_a_command_and_a_tool(feature: str) -> None:
    folder = ROOT / "graphs" / feature
    missing = [part for part in FEATURE_PARTS if not (folder / part).is_file()]
    assert not missing, f"graphs/{feature}/ lacks {', '.join(missing)}"


def test_graphs_subpackages_are_the_features() -> None:
    packages = {init.parent.name for init in (ROOT / "graphs").glob("*/__init__.py")}
    assert packages == set(FEATURES)


def test_only_the_root_cli_loads_a_feature_cli() -> None:
    feature_clis = {f"synthgraph.graphs.{feature}.cli" for feature in FEATURES}
    root = ROOT / "graphs" / "cli.py"
    for path in _library_files():
        if path == root:
            continue
        strings = {
            node.value
            for node in ast.walk(_tree(path))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        loaded = (_graphs_modules(path) | strings) & feature_clis
        assert not loaded, f"{_rel(path)} loads {sorted(loaded)}; only graphs/cli.py may"
    # The root reaches each feature's command (by import, or by name for a lazy import).
    root_text = root.read_text()
    unreachable = [name for name in sorted(feature_clis) if name not in root_text]
    assert not unreachable, f"graphs/cli.py does not load {unreachable}"


@pytest.mark.parametrize("part", ["cli.py", "tool.py"])
@pytest.mark.parametrize("feature", FEATURES)
def test_a_command_and_a_tool_import_only_their_feature_and_shared_modules(
    feature: str, part: str
) -> None:
    path = ROOT / "graphs" / feature / part
    if not path.is_file():
        pytest.fail(f"{_rel(path)} is missing")
    own = {f"synthgraph.graphs.{feature}.job", f"synthgraph.graphs.{feature}.graph"}
    foreign = _graphs_modules(path) - own - SHARED_GRAPHS_MODULES
    assert not foreign, (
        f"{_rel(path)} imports {sorted(foreign)}; it may import its own job (and graph) "
        f"and {sorted(SHARED_GRAPHS_MODULES)} only"
    )


def _calls_to(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def test_tools_are_built_only_by_agent_tool() -> None:
    home = ROOT / "tools" / "agent_tool.py"
    for path in _library_files():
        if path == home:
            continue
        tree = _tree(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(".tools"):
                names = {alias.name for alias in node.names}
                assert "tool" not in names, f"{_rel(path)} imports the @tool decorator"
            if isinstance(node, ast.Attribute) and node.attr in {"from_function", "as_tool"}:
                pytest.fail(f"{_rel(path)}:{node.lineno} builds a tool with {node.attr}")
        constructed = _calls_to(tree, "StructuredTool") + _calls_to(tree, "Tool")
        assert not constructed, f"{_rel(path)} constructs a tool; use agent_tool"


@pytest.mark.parametrize("feature", FEATURES)
def test_a_tool_module_has_factories_made_with_agent_tool(feature: str) -> None:
    path = ROOT / "graphs" / feature / "tool.py"
    if not path.is_file():
        pytest.fail(f"{_rel(path)} is missing")
    tree = _tree(path)
    assert "synthgraph.tools.agent_tool" in _imports(path), f"{_rel(path)} does not use agent_tool"
    factories = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            returns = ast.unparse(node.returns) if node.returns else ""
            if "StructuredTool" in returns or _calls_to(node, "agent_tool"):
                assert node.name.endswith("_tool") and returns == "StructuredTool", (
                    f"{_rel(path)}: {node.name}() must be `<name>_tool() -> StructuredTool` "
                    "(one tool a factory, no lists)"
                )
                factories.append(node.name)
        elif _calls_to(node, "agent_tool"):
            pytest.fail(f"{_rel(path)}:{node.lineno} builds a tool at import; use a factory")
    assert factories, f"{_rel(path)} has no `<name>_tool() -> StructuredTool` factory"


@pytest.mark.parametrize("feature", FEATURES)
def test_a_graph_module_ends_by_compiling_its_builder(feature: str) -> None:
    path = ROOT / "graphs" / feature / "graph.py"
    last = _tree(path).body[-1]
    assert (
        isinstance(last, ast.Assign)
        and [ast.unparse(target) for target in last.targets] == ["graph"]
        and isinstance(last.value, ast.Call)
        and ast.unparse(last.value.func) == "builder.compile"
        and [keyword.arg for keyword in last.value.keywords] == ["name"]
    ), f"{_rel(path)} must end with `graph = builder.compile(name=...)`"


def _deprecated_flags(tree: ast.Module) -> ast.Dict | None:
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "DEPRECATED_FLAGS":
            value = node.value  # type: ignore[union-attr]
            assert isinstance(value, ast.Dict), "DEPRECATED_FLAGS must be a dict literal"
            return value
    return None


@pytest.mark.parametrize("feature", FEATURES)
def test_a_command_module_lists_its_renamed_flags(feature: str) -> None:
    path = ROOT / "graphs" / feature / "cli.py"
    tree = _tree(path)
    renamed = _deprecated_flags(tree)
    assert renamed is not None, f"{_rel(path)} defines no DEPRECATED_FLAGS (old → new flag)"
    old = {ast.literal_eval(key) for key in renamed.keys if key is not None}
    new = {ast.literal_eval(value) for value in renamed.values}
    assert all(flag.startswith("--") for flag in old | new), f"{_rel(path)}: flags start with --"
    # The old spelling is the root CLI's to rewrite: no command of this module still takes it.
    keys = {id(key) for key in renamed.keys}
    still = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in old and id(node) not in keys
    }
    assert not still, f"{_rel(path)} still declares the renamed flags {sorted(still)}"


def _options(path: Path) -> list[tuple[str, str]]:
    """(flag, type) of every parameter of the typer commands in `path`."""
    options: list[tuple[str, str]] = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for arg in node.args.args + node.args.kwonlyargs:
            annotation = arg.annotation
            flags = ["--" + arg.arg.replace("_", "-")]
            if (
                isinstance(annotation, ast.Subscript)
                and ast.unparse(annotation.value) == "Annotated"
            ):
                kind, *metadata = annotation.slice.elts  # type: ignore[attr-defined]
                given = [
                    const.value
                    for call in metadata
                    if isinstance(call, ast.Call)
                    for const in call.args
                    if isinstance(const, ast.Constant) and str(const.value).startswith("--")
                ]
                flags, annotation = given or flags, kind
            options.extend((flag, ast.unparse(annotation) if annotation else "") for flag in flags)
    return options


@pytest.mark.parametrize("feature", FEATURES)
def test_flags_share_one_vocabulary(feature: str) -> None:
    path = ROOT / "graphs" / feature / "cli.py"
    for flag, kind in _options(path):
        assert flag not in RETIRED_FLAGS, f"{_rel(path)}: {flag} is retired"
        if flag == "--json":
            assert kind == "bool", f"{_rel(path)}: --json only prints JSON; a path is --out"
        if flag == "--resume":
            assert kind != "bool", f"{_rel(path)}: --resume takes a run id or folder"


def test_context_fields_share_one_vocabulary() -> None:
    for path in _library_files():
        for node in ast.walk(_tree(path)):
            name = (
                node.target.id
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                else node.arg
                if isinstance(node, ast.arg | ast.keyword)
                else None
            )
            assert name not in RETIRED_FIELDS, f"{_rel(path)}:{node.lineno} uses {name}"


def test_help_imports_neither_torch_nor_langgraph() -> None:
    probe = (
        "import sys\n"
        "from synthgraph.graphs.cli import app\n"
        "sys.argv = ['synthgraph', '--help']\n"
        "try:\n"
        "    app(standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'langgraph'})\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert "HEAVY []" in result.stdout, (
        f"synthgraph --help imported {result.stdout.splitlines()[-1]}"
    )
