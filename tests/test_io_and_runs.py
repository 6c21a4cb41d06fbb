"""The one writer/reader and run folders: torn lines, bad input, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthgraph.tools.io import (
    InputError,
    JsonlWriter,
    content_id,
    done_ids,
    load_texts,
    read_jsonl,
    read_table,
    write_table,
)
from synthgraph.tools.runs import Run, RunError


def test_torn_last_line_is_repaired_and_whole_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "te')  # killed mid-write
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    with JsonlWriter(path) as writer:
        writer.write_many([{"id": "c"}, {"id": "d"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c", "d"]
    assert done_ids(path) == {"a", "b", "c", "d"}


def test_malformed_line_in_the_middle_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_jsonl(path))


def test_load_texts_from_folder_reports_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("A text about tides.")
    (folder / "empty.txt").write_text("  \n")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "ignored.bin").write_bytes(b"\x00")
    records, problems = load_texts(folder)
    assert [r.text for r in records] == ["A text about tides."]
    assert records[0].id == content_id("A text about tides.")
    assert {(p.record, p.cause) for p in problems} == {
        ("empty.txt", "empty file"),
        ("latin1.txt", "not UTF-8 text"),
    }


def test_load_texts_from_jsonl_and_parquet(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        json.dumps({"id": "x1", "body": "one"}) + "\n{oops\n" + json.dumps({"body": 3}) + "\n"
    )
    records, problems = load_texts(jsonl, text_field="body")
    assert [(r.id, r.text) for r in records] == [("x1", "one")]
    assert [p.record for p in problems] == ["line 2", "line 3"]
    parquet = write_table(
        pd.DataFrame({"text": ["alpha", "beta"], "lang": ["en", "en"]}), tmp_path / "in.parquet"
    )
    records, _ = load_texts(parquet)
    assert [r.text for r in records] == ["alpha", "beta"] and records[0].meta == {"lang": "en"}
    with pytest.raises(InputError, match="--text-field"):
        load_texts(parquet, text_field="body")
    assert read_table(parquet).shape == (2, 2)


def test_run_open_resume_and_clear_errors(tmp_path: Path) -> None:
    run = Run.open("personas", out=tmp_path / "r", config={"rounds": 1})
    with run.writer("personas.jsonl") as writer:
        writer.write({"id": "p1", "source_id": "t1"})
    run.rejects.reject("t2", "text_to_persona", ValueError("bad"), raw="{")
    run.finish(personas=1)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["counts"] == {
        "personas": 1,
        "rejects": 1,
        "rejects_retryable": 0,
    }
    assert manifest["versions"]["langgraph"]

    with pytest.raises(RunError, match="already holds run"):
        Run.open("personas", out=tmp_path / "r")
    with pytest.raises(RunError, match="not 'instruct'"):
        Run.open("instruct", resume=str(tmp_path / "r"))
    with pytest.raises(RunError, match=r"no manifest\.json"):
        Run.open("personas", resume="nope")

    resumed = Run.open("personas", resume=str(tmp_path / "r"))
    assert resumed.id == run.id
    assert resumed.done("personas.jsonl", "source_id") == {"t1"} and resumed.rejected_ids() == {
        "t2"
    }
    with resumed.checkpointer() as saver:
        assert saver is not None
