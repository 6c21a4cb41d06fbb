"""Workspace confinement through symlinks: agent tools and graphs neither read nor write outside.

A link planted inside the workspace that leads out of it is refused wherever a
tool or a graph would follow it: in an input folder, in an output folder, or as
a file a graph input names. The CLI (a trusted user) still reads from anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fakes import scripted_model
from personas_fake_models import PromptAwareFake

from synthgraph.agents.llm import use_chat_models
from synthgraph.agents.personas import bundled_few_shot
from synthgraph.graphs.agentinstruct.tool import instruct_tool
from synthgraph.graphs.personas.tool import personas_tool
from synthgraph.graphs.retrieval.graph import RetrievalContext
from synthgraph.graphs.retrieval.graph import graph as retrieval_graph
from synthgraph.graphs.retrieval.job import generate_job
from synthgraph.graphs.retrieval.tool import retrieval_tool
from synthgraph.graphs.sampling.tool import sampling_tool
from synthgraph.graphs.synthesis.graph import SynthesisContext
from synthgraph.graphs.synthesis.graph import graph as synthesis_graph
from synthgraph.graphs.synthesis.tool import synthesis_tool
from synthgraph.graphs.tabular.graph import graph as tabular_graph
from synthgraph.graphs.tabular.tool import fit_tool, generate_tool, impute_tool, report_tool
from synthgraph.tools.dedup_tools import dedup_tool
from synthgraph.tools.io import InputError, JsonlWriter, write_json, write_table
from synthgraph.tools.workspace import WorkspaceError, confine, workspace_root

SECRET = "TOP-SECRET: the launch code is 0000"
PERSONA = {"id": "p1", "persona": "A nurse on a night shift."}
EXAMPLE = {"document": "An FTP client that resumes downloads.", "query": "ftp resume client"}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace with a file a model must never see or change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def workspace(outside: Path) -> Path:
    """Good inputs for every tool, and `in/`: a folder holding links out of the workspace."""
    root = workspace_root()
    (root / "texts").mkdir()
    (root / "texts" / "a.txt").write_text("A harmless text about sourdough bread.")
    (root / "personas.jsonl").write_text(json.dumps(PERSONA) + "\n")
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "A text."}) + "\n")
    (root / "problems.jsonl").write_text(
        json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n"
    )
    pd.DataFrame({"colour": ["red", "blue"] * 20, "size": [1.0, 2.0] * 20}).to_csv(
        root / "train.csv", index=False
    )
    (root / "in").mkdir()
    (root / "in" / "ok.txt").write_text("A harmless text about sourdough bread.")
    for name in ("leak.txt", "leak.jsonl", "leak.csv"):
        _link(root / "in" / name, outside / "secret.txt")
    return root


@pytest.fixture
def fake() -> Iterator[PromptAwareFake]:
    """Every role answers through one recording fake, so a leaked prompt would show."""
    model = PromptAwareFake()
    with use_chat_models(generator=model, judge=model, weak=model, strong=model):
        yield model


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


# (tool, arguments) where `in/` is an input folder holding a link out of the workspace.
READERS: dict[str, tuple[Callable[[dict[str, Any]], Any], dict[str, Any]]] = {
    "personas": (personas_tool().invoke, {"input_path": "in", "output_dir": "runs/p"}),
    "synthesis": (
        synthesis_tool().invoke,
        {"personas_path": "in", "task": "math", "output_dir": "runs/s"},
    ),
    "retrieval corpus": (
        retrieval_tool().invoke,
        {"corpus_path": "in", "output_dir": "runs/r"},
    ),
    "retrieval examples": (
        retrieval_tool().invoke,
        {"corpus_path": "corpus.jsonl", "output_dir": "runs/r", "examples_path": "in/leak.jsonl"},
    ),
    "agentinstruct": (instruct_tool().invoke, {"input_path": "in", "output_dir": "runs/a"}),
    "sampling": (sampling_tool().invoke, {"problems_file": "in", "out_dir": "runs/x"}),
    "dedup": (
        dedup_tool().invoke,
        {"input_path": "in/leak.jsonl", "field": "text", "output_path": "kept.jsonl"},
    ),
    "tabular fit": (
        fit_tool().invoke,
        {"data_path": "in/leak.csv", "model_dir": "model"},
    ),
    "tabular generate": (
        generate_tool().invoke,
        {"model_dir": "in", "output_path": "syn.csv"},
    ),
    "tabular report": (
        report_tool().invoke,
        {"synthetic_path": "in/leak.csv", "training_path": "in/leak.csv"},
    ),
}


@pytest.mark.parametrize("name", READERS)
def test_a_link_out_of_an_input_folder_is_refused_not_read(
    name: str, workspace: Path, fake: PromptAwareFake
) -> None:
    tool, arguments = READERS[name]
    reply = tool(arguments)
    assert isinstance(reply, str) and "outside the workspace" in reply
    assert fake.calls == []  # nothing, let alone the secret, reached the model
    written = [p for p in workspace.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any(SECRET in p.read_text(errors="ignore") for p in written)


def test_graphs_refuse_a_linked_file_or_folder_out_of_the_workspace(
    outside: Path, fake: PromptAwareFake
) -> None:
    root = workspace_root()
    (outside / "examples.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    _link(root / "examples.jsonl", outside / "examples.jsonl")
    _link(root / "tables" / "train.csv", outside / "secret.txt")
    document = {"document_id": "d1", "document": "A harmless text."}
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        retrieval_graph.invoke(document, context=RetrievalContext(examples_path="examples.jsonl"))
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        synthesis_graph.invoke(
            {"personas": [PERSONA]}, context=SynthesisContext(few_shot_file="examples.jsonl")
        )
    with pytest.raises(Exception, match="outside the workspace"):
        tabular_graph.invoke(
            {"training_path": "tables/train.csv", "model_dir": "model", "output_path": "syn.csv"}
        )
    assert fake.calls == []


# (tool, arguments, the output the link is planted at, relative to the workspace)
WRITERS: dict[str, tuple[Callable[[dict[str, Any]], Any], dict[str, Any], str]] = {
    "personas": (
        personas_tool().invoke,
        {"input_path": "texts", "output_dir": "runs/p"},
        "runs/p/personas.jsonl",
    ),
    "synthesis": (
        synthesis_tool().invoke,
        {"personas_path": "personas.jsonl", "task": "math", "output_dir": "runs/s"},
        "runs/s/items.jsonl",
    ),
    "retrieval": (
        retrieval_tool().invoke,
        {"corpus_path": "corpus.jsonl", "output_dir": "runs/r"},
        "runs/r/pairs.jsonl",
    ),
    "agentinstruct": (
        instruct_tool().invoke,
        {"input_path": "texts", "output_dir": "runs/a"},
        "runs/a/instructions.jsonl",
    ),
    "sampling": (
        sampling_tool().invoke,
        {"problems_file": "problems.jsonl", "out_dir": "runs/x"},
        "runs/x/samples.jsonl",
    ),
    "dedup": (
        dedup_tool().invoke,
        {"input_path": "personas.jsonl", "field": "persona", "output_path": "kept.jsonl"},
        "kept.jsonl",
    ),
    "tabular fit": (
        fit_tool().invoke,
        {"data_path": "train.csv", "model_dir": "model"},
        "model/weights.safetensors",
    ),
    "tabular generate": (
        generate_tool().invoke,
        {"model_dir": "model", "output_path": "syn.csv"},
        "syn.csv",
    ),
    "tabular impute": (
        impute_tool().invoke,
        {"model_dir": "model", "data_path": "train.csv", "output_path": "filled.csv"},
        "filled.csv",
    ),
    "tabular report": (
        report_tool().invoke,
        {"synthetic_path": "train.csv", "training_path": "train.csv", "report_path": "r.json"},
        "r.json",
    ),
}


@pytest.mark.parametrize("name", WRITERS)
def test_a_link_planted_where_a_tool_writes_is_refused(
    name: str, workspace: Path, outside: Path, fake: PromptAwareFake
) -> None:
    tool, arguments, planted = WRITERS[name]
    _link(workspace / planted, outside / "secret.txt")  # planted where the tool writes
    reply = tool(arguments)
    assert isinstance(reply, str) and "outside the workspace" in reply
    assert (outside / "secret.txt").read_text() == SECRET + "\n"
    assert fake.calls == []


def test_examples_path_outside_the_workspace_is_refused_by_the_retrieval_graph(
    outside: Path, fake: PromptAwareFake
) -> None:
    examples = outside / "examples.jsonl"
    examples.write_text(json.dumps(EXAMPLE) + "\n")
    document = {"document_id": "d1", "document": "A harmless text."}
    for path in (str(examples), "../../outside/examples.jsonl"):
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            retrieval_graph.invoke(document, context=RetrievalContext(examples_path=path))
    assert fake.calls == []


def test_the_cli_job_still_reads_examples_from_anywhere(outside: Path, tmp_path: Path) -> None:
    examples = outside / "examples.jsonl"
    examples.write_text(json.dumps(EXAMPLE) + "\n")
    corpus = outside / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "A text about chess engines."}) + "\n")
    with use_chat_models(generator=scripted_model("chess engine")):
        summary = generate_job(
            corpus,
            tmp_path / "run",
            context=RetrievalContext(examples_path=str(examples), logprobs=False),
            show_progress=False,
        )
    assert summary.pairs == 1
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["context"]["examples_path"] == str(examples)


def test_the_synthesis_tool_still_shows_its_bundled_examples(
    workspace: Path, fake: PromptAwareFake
) -> None:
    # The bundled file lies outside the workspace: the job reads it, the graph gets the items.
    reply = synthesis_tool().invoke(
        {
            "personas_path": "personas.jsonl",
            "task": "math",
            "output_dir": "runs/s",
            "few_shot": True,
        }
    )
    assert reply["items"] == 1
    assert "Examples of good answers" in fake.calls[0]
    # The graph (Studio, MCP) may name the shipped examples too: read-only package data.
    out = synthesis_graph.invoke(
        {"personas": [PERSONA]},
        context=SynthesisContext(task="math", few_shot_file=str(bundled_few_shot("math"))),
    )
    assert len(out["items"]) == 1 and "Examples of good answers" in fake.calls[-1]


def test_confine_follows_links_inside_the_workspace_and_through_linked_folders(
    outside: Path,
) -> None:
    root = workspace_root()
    (root / "real").mkdir()
    (root / "real" / "a.txt").write_text("fine")
    _link(root / "alias", root / "real")  # a link that stays inside is fine
    assert confine("alias") == root / "real"
    _link(root / "real" / "deep" / "leak.txt", outside / "secret.txt")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        confine("alias")  # found through the linked folder, too


def test_outputs_are_not_written_through_links(outside: Path, tmp_path: Path) -> None:
    secret = outside / "secret.txt"
    _link(tmp_path / "out.jsonl", secret)
    with pytest.raises(InputError, match="symbolic link"):
        JsonlWriter(tmp_path / "out.jsonl")
    # Atomic writes replace a link planted at the output or at its temporary file.
    _link(tmp_path / "report.json.tmp", secret)
    write_json({"ok": True}, tmp_path / "report.json")
    _link(tmp_path / "table.csv", secret)
    _link(tmp_path / "table.csv.tmp", secret)
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "table.csv")
    assert secret.read_text() == SECRET + "\n"
    assert not (tmp_path / "table.csv").is_symlink()
    assert json.loads((tmp_path / "report.json").read_text()) == {"ok": True}
    # A hard link is another name of the outside file: refused too.
    (tmp_path / "hard.jsonl").hardlink_to(secret)
    with pytest.raises(InputError, match="hard links"):
        JsonlWriter(tmp_path / "hard.jsonl")
    assert secret.read_text() == SECRET + "\n"


def test_the_retrieval_graph_takes_an_example_set_as_plain_json(fake: PromptAwareFake) -> None:
    # Studio and MCP send the context as JSON: the set arrives as a dict, not an ExampleSet.
    examples = {
        "task": "find the page",
        "examples": [{"document": "Tide tables.", "query": "tides"}],
    }
    out = retrieval_graph.invoke(
        {"document_id": "d1", "document": "A harmless text."},
        context=RetrievalContext(examples=examples),  # type: ignore[arg-type]
    )
    assert "tides" in fake.calls[0] and out["queries"]
