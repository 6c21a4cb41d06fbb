"""Bad input ends every command with one line naming the file, exit 2, and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result
from fakes import FakeOpenAIServer, scripted_model
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.cli import app
from synthgraph.graphs.retrieval.job import PAIRS, filter_job, generate_job
from synthgraph.tools.io import InputError, load_texts, read_jsonl, read_table
from synthgraph.tools.retrieval_data import corpus_documents, load_corpus

BEIR = Path(__file__).parent / "retrieval_beir"
GARBAGE = b"\xff\xfe\x00garbage\x80"

# Each command that reads a user file: its arguments, given the file and a scratch folder.
COMMANDS: dict[str, list[str]] = {
    "instruct": ["instruct", "{data}", "--out", "{tmp}/run"],
    "sampling run": ["sampling", "run", "{data}", "--out", "{tmp}/run"],
    "tabular fit": ["tabular", "fit", "{data}", "--model", "{tmp}/model"],
    "retrieval generate": ["retrieval", "generate", "{data}", "--out", "{tmp}/run"],
    "personas": ["personas", "{data}", "--out", "{tmp}/run"],
    "dedup": ["dedup", "{data}", "--field", "text", "--out", "{tmp}/kept.jsonl"],
}


def command_args(command: str, data: Path, tmp: Path) -> list[str]:
    return [arg.format(data=data, tmp=tmp) for arg in COMMANDS[command]]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args)


def assert_one_line_error(result: Result, path: Path, cause: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}") and cause in lines[0], lines[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_binary_input_is_one_line_naming_the_file(
    command: str, suffix: str, tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    data = tmp_path / f"input{suffix}"
    data.write_bytes(GARBAGE)
    result = invoke(command_args(command, data, tmp_path))
    cause = {".jsonl": "not UTF-8 text", ".csv": "not UTF-8 text", ".parquet": "not a Parquet"}
    assert_one_line_error(result, data, cause[suffix])
    assert fake_server.requests == []
    # read before anything is written: a corrected rerun with the same --out just works
    assert not any((tmp_path / name).exists() for name in ("run", "model", "kept.jsonl"))


def test_retrieval_eval_names_the_corpus_that_is_not_text(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_bytes(GARBAGE)
    (beir / "queries.jsonl").write_text((BEIR / "queries.jsonl").read_text())
    (beir / "qrels" / "test.tsv").write_text((BEIR / "qrels" / "test.tsv").read_text())
    result = invoke(["retrieval", "eval", str(beir)])
    assert_one_line_error(result, beir / "corpus.jsonl", "not UTF-8 text")
    assert result.stderr.startswith(f"error: {beir / 'corpus.jsonl'}:1: ")


@pytest.mark.parametrize("content", ["", "a,b\n"], ids=["empty", "header only"])
def test_tabular_fit_refuses_a_table_without_rows(tmp_path: Path, content: str) -> None:
    data = tmp_path / "table.csv"
    data.write_text(content)
    assert_one_line_error(invoke(command_args("tabular fit", data, tmp_path)), data, "no rows")
    empty_jsonl = tmp_path / "table.jsonl"
    empty_jsonl.write_text("")
    assert_one_line_error(
        invoke(command_args("tabular fit", empty_jsonl, tmp_path)), empty_jsonl, "no rows"
    )


@pytest.mark.parametrize("nested", [[[1, 2], [3]], [{"x": 1}, {"x": 2}]], ids=["list", "struct"])
def test_tabular_fit_refuses_nested_parquet_columns(tmp_path: Path, nested: list[object]) -> None:
    data = tmp_path / "nested.parquet"
    pd.DataFrame({"flat": ["a", "b"], "deep": nested}).to_parquet(data)
    result = invoke(command_args("tabular fit", data, tmp_path))
    assert_one_line_error(result, data, "row 1, column 'deep': a list or struct")


@pytest.mark.parametrize("command", ["instruct", "sampling run", "retrieval generate", "dedup"])
def test_empty_input_is_a_clean_run_of_nothing(
    command: str, tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    result = invoke(command_args(command, data, tmp_path))
    assert result.exit_code == 0, result.output
    assert fake_server.requests == []


def test_empty_input_gives_personas_nothing_to_do(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("")
    result = invoke([*command_args("personas", data, tmp_path), "--expand-rounds", "0"])
    assert result.exit_code == 0, result.output
    assert fake_server.requests == []


def test_a_beir_folder_means_its_corpus(tmp_path: Path) -> None:
    lines = (BEIR / "corpus.jsonl").read_text().splitlines()
    documents, problems = corpus_documents(BEIR)
    assert (len(documents), problems) == (len(lines), [])
    assert {d.id for d in documents} == {json.loads(line)["_id"] for line in lines}
    assert load_corpus(BEIR) == load_corpus(BEIR / "corpus.jsonl")

    # generate, then filter with the corpus the run names: the folder itself
    with use_chat_models(generator=scripted_model("ftp client", "chess game")):
        summary = generate_job(BEIR, tmp_path / "run", limit=2, show_progress=False)
    assert (summary.documents, summary.pairs) == (2, 2)
    assert len(list(read_jsonl(tmp_path / "run" / PAIRS))) == 2
    filtered = filter_job(tmp_path / "run", filters=[], negatives=1, negative_sources=("bm25",))
    assert filtered.triples == 2


# --- the readers ---------------------------------------------------------------------


def test_a_line_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"text": "fine"}\n\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"records\.jsonl:3: not UTF-8 text \(byte 0xe9\)"):
        list(read_jsonl(path))
    with pytest.raises(InputError, match=r"records\.jsonl:3: not UTF-8"):
        load_texts(path)


def test_read_table_names_the_file_and_the_cause(tmp_path: Path) -> None:
    parquet = tmp_path / "t.parquet"
    parquet.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"t\.parquet: not a Parquet file$"):
        read_table(parquet)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError, match=r"ragged\.csv: not valid CSV \(.*line 3"):
        read_table(ragged)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(InputError, match=r"folder\.csv: a folder, not a file"):
        read_table(folder)
    with pytest.raises(InputError, match=r"missing\.jsonl: no such file"):
        read_table(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_table(empty).empty


def test_blank_or_nested_ids_fall_back_to_content_ids(tmp_path: Path) -> None:
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": ["one", "two", "three"], "id": [None, "b", None]}).to_parquet(path)
    records, _ = load_texts(path)
    assert [r.id for r in records][1] == "b"
    assert "nan" not in {r.id for r in records} and "None" not in {r.id for r in records}
    nested = tmp_path / "nested.parquet"
    pd.DataFrame({"text": ["one"], "id": [[1, 2]]}).to_parquet(nested)
    assert len(load_texts(nested)[0][0].id) == 16


def test_tabular_sample_names_a_folder_without_a_model(tmp_path: Path) -> None:
    result = invoke(
        ["tabular", "sample", "--model", str(tmp_path), "--rows", "2", "--out", "x.csv"]
    )
    assert_one_line_error(result, tmp_path, "no saved model here")
