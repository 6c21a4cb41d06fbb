"""Personas graph and `synthgraph personas`, driven by a prompt-aware fake chat model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from personas_fake_models import PromptAwareFake, persona_for_text
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.cli import app
from synthgraph.graphs.personas.graph import PersonasContext, graph
from synthgraph.graphs.personas.job import personas_job
from synthgraph.tools.io import InputError, read_jsonl

TEXTS = [
    {
        "id": "t-heart",
        "text": "High-intensity statins lowered LDL cholesterol in adults with coronary disease.",
    },
    {"id": "t-bread", "text": "Our bakery feeds its sourdough starter twice a day with rye flour."},
]


def run_graph(
    context: PersonasContext, fake: PromptAwareFake | None = None, **state: Any
) -> dict[str, Any]:
    with use_chat_models(generator=fake or PromptAwareFake()):
        return graph.invoke({"texts": TEXTS, **state}, context=context)


def test_text_to_persona_and_rounds_of_expansion_link_every_persona_to_its_parent() -> None:
    context = PersonasContext(relations=["colleague", "patient"], expand_rounds=2, dedup="none")
    out = run_graph(context)
    personas = out["personas"]
    # 2 texts × (1 + 2 + 4) personas: each persona expands along both relations, twice
    assert len(personas) == 14
    assert out["dropped"] == [] and out.get("rejects", []) == []
    by_id = {p["id"]: p for p in personas}
    assert len(by_id) == 14, "ids are unique"
    for persona in personas:
        assert set(persona) >= {
            "id",
            "persona",
            "role",
            "domain",
            "source_id",
            "input_id",
            "relation",
            "round",
        }
        assert persona["perspective"] == ("read" if persona["round"] == 0 else None)
        if persona["round"] == 0:
            assert persona["relation"] is None and persona["source_id"] == persona["input_id"]
            assert persona["input_id"] in {t["id"] for t in TEXTS}
        else:
            parent = by_id[persona["source_id"]]
            assert parent["round"] == persona["round"] - 1
            assert persona["relation"] in {"colleague", "patient"}
            assert persona["input_id"] == parent["input_id"]
            assert f"The {persona['relation']} of" in persona["persona"]
    assert {p["round"] for p in personas} == {0, 1, 2}


def test_persona_text_follows_the_input_and_ids_are_content_derived() -> None:
    first = run_graph(PersonasContext(expand_rounds=0, dedup="none"))["personas"]
    again = run_graph(PersonasContext(expand_rounds=0, dedup="none"))["personas"]
    assert [p["id"] for p in first] == [p["id"] for p in again]
    assert {p["persona"] for p in first} == {persona_for_text(t["text"]) for t in TEXTS}


def test_several_personas_per_text_and_an_expansion_limit() -> None:
    context = PersonasContext(
        personas_per_text=3, relations=["student"], expand_limit=2, dedup="none"
    )
    personas = run_graph(context)["personas"]
    assert sum(p["round"] == 0 for p in personas) == 6
    # one persona per perspective: who would read, write and like each text
    assert sorted(p["perspective"] for p in personas if p["round"] == 0) == sorted(
        ["read", "write", "like"] * 2
    )
    assert sum(p["round"] == 1 for p in personas) == 2


def test_seed_personas_are_expanded_without_being_output_again() -> None:
    seeds = [
        {
            "id": "p1",
            "persona": "A cardiologist who reviews statin trials.",
            "round": 0,
            "input_id": "t9",
        }
    ]
    context = PersonasContext(relations=["patient", "supplier"], dedup="none")
    with use_chat_models(generator=PromptAwareFake()):
        out = graph.invoke({"texts": [], "seed_personas": seeds}, context=context)
    assert [
        (p["relation"], p["source_id"], p["input_id"], p["round"]) for p in out["personas"]
    ] == [
        ("patient", "p1", "t9", 1),
        ("supplier", "p1", "t9", 1),
    ]


def test_a_reply_that_never_validates_is_a_reject_and_the_run_goes_on() -> None:
    fake = PromptAwareFake(bad=("sourdough", "'s student"))
    out = run_graph(PersonasContext(relations=["colleague", "student"], dedup="none"), fake)
    rejects = {r["stage"]: r for r in out["rejects"]}
    assert rejects["text_to_persona"]["id"] == "t-bread:read"
    assert "StructuredOutputError" in rejects["text_to_persona"]["error"]
    assert rejects["text_to_persona"]["raw"] == "not json at all"
    assert rejects["persona_to_persona"]["id"].endswith(":student")
    # the heart text still gives its persona and the colleague expansion
    assert sorted((p["round"], p["relation"]) for p in out["personas"]) == [
        (0, None),
        (1, "colleague"),
    ]


def test_dedup_node_drops_a_repeated_persona_and_names_its_match() -> None:
    texts = [*TEXTS, {"id": "t-heart-copy", "text": TEXTS[0]["text"] + " Again."}]
    with use_chat_models(generator=PromptAwareFake()):
        out = graph.invoke({"texts": texts}, context=PersonasContext(expand_rounds=0))
    kept = {p["input_id"]: p for p in out["personas"]}
    assert set(kept) == {"t-heart", "t-bread"}
    [dropped] = out["dropped"]
    assert dropped["input_id"] == "t-heart-copy"
    assert dropped["dedup"] == {
        "stage": "minhash",
        "kept": False,
        "nearest_id": kept["t-heart"]["id"],
        "score": 1.0,
    }
    assert all(p["dedup"]["kept"] for p in out["personas"])


# --- the job and the command -------------------------------------------------------
@pytest.fixture
def texts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for text in TEXTS:
        (folder / f"{text['id']}.txt").write_text(text["text"])
    (folder / "empty.txt").write_text("   ")
    return folder


def test_personas_job_writes_kept_dropped_rejects_and_a_rerun_adds_nothing(
    texts_dir: Path, tmp_path: Path
) -> None:
    context = PersonasContext(relations=["colleague"])
    with use_chat_models(generator=PromptAwareFake()):
        first = personas_job(texts_dir, tmp_path / "run1", context=context, show_progress=False)
    rerun_model = PromptAwareFake()
    with use_chat_models(generator=rerun_model):
        second = personas_job(texts_dir, tmp_path / "run2", context=context, show_progress=False)
    assert (first.texts, first.generated, first.kept + first.dropped) == (2, 4, 4)
    personas = list(read_jsonl(tmp_path / "run1" / "personas.jsonl"))
    assert len({p["id"] for p in personas}) == len(personas) == first.kept
    assert {p["source"] for p in personas if p["round"] == 0} == {"t-heart.txt", "t-bread.txt"}
    [reject] = read_jsonl(tmp_path / "run1" / "rejects.jsonl")
    assert (reject["id"], reject["stage"], reject["error"]) == ("empty.txt", "input", "empty file")
    manifest = json.loads((tmp_path / "run1" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["counts"]["kept"] == first.kept
    assert manifest["dedup"]["total"] == {
        "checked": 4,
        "kept": first.kept,
        "dropped": first.dropped,
    }
    # Same texts, new run: the persistent dedup memory already holds every persona, and
    # personas it holds are not expanded again (the model is asked for no relation).
    assert (second.generated, second.kept, second.dropped) == (2, 0, 2)
    assert not any("colleague" in prompt for prompt in rerun_model.calls)
    kept_ids = {p["id"] for p in personas}
    for dropped in read_jsonl(tmp_path / "run2" / "dropped.jsonl"):
        assert dropped["dedup"]["nearest_id"] in kept_ids and dropped["dedup"]["score"] >= 0.9


def test_resuming_a_finished_run_calls_no_model_and_writes_nothing(
    texts_dir: Path, tmp_path: Path
) -> None:
    fake = PromptAwareFake()
    context = PersonasContext(relations=["colleague"])
    with use_chat_models(generator=fake):
        personas_job(texts_dir, tmp_path / "run", context=context, show_progress=False)
        calls = len(fake.calls)
        before = (tmp_path / "run" / "personas.jsonl").read_text()
        again = personas_job(
            texts_dir, tmp_path / "run", resume=str(tmp_path / "run"), show_progress=False
        )
    assert len(fake.calls) == calls
    assert (tmp_path / "run" / "personas.jsonl").read_text() == before
    assert again.kept == len(before.splitlines())


def test_records_judged_when_a_kill_cut_the_dedup_stage_short_are_kept_once(
    texts_dir: Path, tmp_path: Path
) -> None:
    """The dedup memory is saved, then the kill lands before personas.jsonl is written.

    The memory holds every persona under this run's id, so the resume must not
    judge them duplicates of themselves.
    """
    run_dir = tmp_path / "run"
    with use_chat_models(generator=PromptAwareFake()):
        personas_job(
            texts_dir,
            run_dir,
            context=PersonasContext(relations=["colleague"]),
            show_progress=False,
        )
    kept = (run_dir / "personas.jsonl").read_text()
    (run_dir / "personas.jsonl").unlink()
    (run_dir / "dropped.jsonl").unlink()
    personas_job(
        texts_dir,
        run_dir,
        context=PersonasContext(relations=["colleague"]),
        resume=str(run_dir),
        show_progress=False,
    )
    again = list(read_jsonl(run_dir / "personas.jsonl"))
    assert sorted(p["id"] for p in again) == sorted(
        json.loads(line)["id"] for line in kept.splitlines()
    )


def test_jsonl_input_with_a_renamed_text_field_and_bad_records(tmp_path: Path) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text(
        '{"id": "a", "body": "Tomato seedlings go outside when nights stay warm."}\n'
        '{"id": "b", "title": "no body here"}\n'
        "not json\n"
    )
    with use_chat_models(generator=PromptAwareFake()):
        summary = personas_job(
            source,
            tmp_path / "run",
            context=PersonasContext(expand_rounds=0),
            text_field="body",
            show_progress=False,
        )
    assert (summary.texts, summary.kept, summary.rejects) == (1, 1, 2)
    causes = {r["id"]: r["error"] for r in read_jsonl(tmp_path / "run" / "rejects.jsonl")}
    assert causes == {
        "line 2": "field 'body' is missing or not text",
        "line 3": "not valid JSON (Expecting value)",
    }


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        personas_job(tmp_path / "nope", tmp_path / "run", show_progress=False)
    result = CliRunner().invoke(
        app, ["personas", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert "no such file or folder" in " ".join(result.output.split())


def test_the_command_prints_the_dedup_report(texts_dir: Path, tmp_path: Path) -> None:
    with use_chat_models(generator=PromptAwareFake()):
        result = CliRunner().invoke(
            app,
            ["personas", str(texts_dir), "--out", str(tmp_path / "run"), "--relations", "sibling"],
        )
    assert result.exit_code == 0, result.output
    assert "minhash" in result.output and "embedding" in result.output
    relations = {p["relation"] for p in read_jsonl(tmp_path / "run" / "generated.jsonl")}
    assert relations == {None, "sibling"}


def test_the_dedup_method_and_the_limit_are_the_runs_own_on_resume(
    texts_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = ["personas", str(texts_dir), "--out", str(run_dir), "--expand-rounds", "0"]
    with use_chat_models(generator=PromptAwareFake()):
        result = CliRunner().invoke(app, [*args, "--dedup", "minhash", "--limit", "1"])
        assert result.exit_code == 0, result.output
        assert "minhash" in result.output and "embedding" not in result.output
        config = json.loads((run_dir / "manifest.json").read_text())["config"]
        assert (config["context"]["dedup"], config["limit"]) == ("minhash", 1)
        again = personas_job(texts_dir, None, resume=str(run_dir), show_progress=False)
    assert again.texts == 1


def test_dedup_none_keeps_every_generated_persona_unjudged(texts_dir: Path, tmp_path: Path) -> None:
    context = PersonasContext(relations=["colleague"], dedup="none")
    with use_chat_models(generator=PromptAwareFake()):
        summary = personas_job(texts_dir, tmp_path / "run", context=context, show_progress=False)
    assert (summary.generated, summary.kept, summary.dropped, summary.stages) == (4, 4, 0, [])
    assert all("dedup" not in p for p in read_jsonl(tmp_path / "run" / "personas.jsonl"))
