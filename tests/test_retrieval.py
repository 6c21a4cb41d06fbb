"""Retrieval training data: prompts, graph, filters, negatives, metrics, training, eval, CLI."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer, scripted_model
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

from synthgraph.agents.llm import use_chat_models
from synthgraph.agents.retrieval import clean_query, mean_logprob, query_messages
from synthgraph.graphs.cli import app
from synthgraph.graphs.retrieval.cli import DEPRECATED_FLAGS
from synthgraph.graphs.retrieval.graph import RetrievalContext, graph
from synthgraph.graphs.retrieval.job import (
    PAIRS,
    TRIPLES,
    eval_job,
    filter_job,
    generate_job,
    train_job,
)
from synthgraph.graphs.retrieval.tool import retrieval_tool
from synthgraph.tools.embeddings import get_embeddings
from synthgraph.tools.io import InputError, read_jsonl, write_records
from synthgraph.tools.retrieval_data import Example, ExampleSet, load_beir, load_examples
from synthgraph.tools.retrieval_filters import (
    keep_top,
    logprob_filter,
    mine_negatives,
    reranker_filter,
    roundtrip_filter,
)
from synthgraph.tools.retrieval_index import Bm25Index, DenseIndex
from synthgraph.tools.retrieval_metrics import evaluate_rankings, mrr_at_k, ndcg_at_k, recall_at_k
from synthgraph.tools.retrieval_training import Reranker, train_bi_encoder, train_cross_encoder
from synthgraph.tools.runs import RunError

BEIR = Path(__file__).parent / "retrieval_beir"
EXAMPLES = ExampleSet(
    (
        Example("Quillpad is a terminal text editor.", "terminal text editor", "an editor"),
        Example("Skylog collects logs over the network.", "network log collector", "logging"),
    ),
    task="Write the package summary.",
)


def reply(text: str, logprobs: list[tuple[str, float]] | None = None) -> AIMessage:
    """An AIMessage shaped like langchain-openai's, with OpenAI-style token log-probs."""
    content = [{"token": t, "logprob": p} for t, p in logprobs or []]
    return AIMessage(
        content=text, response_metadata={"logprobs": {"content": content} if logprobs else None}
    )


# --- prompts ----------------------------------------------------------------------
def test_promptagator_prompt_has_task_example_turns_and_document() -> None:
    messages = query_messages("Tide is a serif font family.", EXAMPLES, "promptagator")
    roles = [role for role, _ in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0][1].startswith("Write the package summary.")
    assert messages[1][1] == "Document: Quillpad is a terminal text editor."
    assert messages[2][1] == "terminal text editor"
    assert messages[-1][1] == "Document: Tide is a serif font family."


def test_vanilla_prompt_ignores_the_task_and_gbq_shows_bad_then_good() -> None:
    vanilla = query_messages("Doc.", EXAMPLES, "vanilla")
    assert "Write the package summary." not in vanilla[0][1]
    assert vanilla[2] == ("assistant", "terminal text editor")
    gbq = query_messages("Doc.", EXAMPLES, "gbq")
    assert gbq[2] == ("assistant", "Bad question: an editor\nGood question: terminal text editor")
    assert "bad question" in gbq[0][1].lower()


def test_prompt_shortens_long_documents() -> None:
    long_document = "word " * 500
    messages = query_messages(long_document, EXAMPLES, "promptagator", max_doc_chars=100)
    assert len(messages[-1][1]) < 130
    assert messages[-1][1].endswith("...")


def test_example_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "examples.jsonl"
    good.write_text(json.dumps({"document": "d", "query": "q"}) + "\n")
    assert load_examples(good, "promptagator").examples == (Example("d", "q", None),)
    with pytest.raises(InputError, match="example 1: GBQ examples need a `bad_query`"):
        load_examples(good, "gbq")
    too_many = tmp_path / "many.jsonl"
    too_many.write_text(
        "".join(json.dumps({"document": "d", "query": "q"}) + "\n" for _ in range(9))
    )
    with pytest.raises(InputError, match="at most 8"):
        load_examples(too_many, "promptagator")
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"task": "t", "examples": [{"document": "d"}]}))
    with pytest.raises(InputError, match="example 1: field 'query' is missing"):
        load_examples(missing, "vanilla")


def test_bundled_example_sets_load() -> None:
    root = Path(__file__).parent.parent / "examples" / "retrieval"
    assert load_examples(root / "software_packages.json", "gbq").task
    assert len(load_examples(root / "software_packages_gbq.jsonl", "gbq").examples) == 3


# --- replies ----------------------------------------------------------------------
def test_clean_query_strips_labels_quotes_and_extra_lines() -> None:
    assert clean_query('"ftp client"\nmore text')[0] == "ftp client"
    assert clean_query("Query: ftp client")[0] == "ftp client"
    text = "Bad question: what\nGood question: which ftp client resumes downloads"
    query, start = clean_query(text)
    assert query == "which ftp client resumes downloads"
    assert text[start:].startswith("which")


def test_mean_logprob_averages_only_the_good_question_tokens() -> None:
    message = reply("ab cd", [("ab", -1.0), (" cd", -3.0)])
    assert mean_logprob(message) == pytest.approx(-2.0)
    assert mean_logprob(message, from_char=2) == pytest.approx(-3.0)
    assert mean_logprob(reply("no logprobs")) is None


# --- graph and generate job -------------------------------------------------------
def test_graph_samples_queries_and_drops_duplicates() -> None:
    fake = scripted_model(
        reply("ftp client", [("ftp", -0.5), (" client", -0.1)]),
        reply("FTP client", [("FTP", -0.2)]),
        reply("graphical ftp tool", [("x", -1.0)]),
    )
    with use_chat_models(generator=fake):
        result = graph.invoke(
            {"document_id": "ftpdeck", "document": "FtpDeck is a graphical FTP client."},
            context=RetrievalContext(samples=3),
        )
    assert result == {
        "queries": [
            {"query": "ftp client", "logprob": pytest.approx(-0.3), "sample": 0},
            {"query": "graphical ftp tool", "logprob": -1.0, "sample": 2},
        ]
    }


@pytest.mark.parametrize("logprobs", [True, False])
def test_log_probs_are_asked_only_when_wanted(
    fake_server: FakeOpenAIServer, logprobs: bool
) -> None:
    fake_server.script({"content": "ftp client"})
    result = graph.invoke(
        {"document_id": "ftpdeck", "document": "FtpDeck is a graphical FTP client."},
        context=RetrievalContext(logprobs=logprobs),
    )
    request = fake_server.requests[-1]
    assert ("logprobs" in request, "top_logprobs" in request) == (logprobs, logprobs)
    assert result["queries"][0]["query"] == "ftp client"
    # The fake endpoint never returns log-probs: the filter will say so and skip.
    assert result["queries"][0]["logprob"] is None


def test_generate_job_writes_pairs_rejects_bad_records_and_resumes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [json.loads(line) for line in (BEIR / "corpus.jsonl").read_text().splitlines()[:3]]
    corpus.write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
        + json.dumps({"_id": "empty", "text": ""})
        + "\n"
    )
    out = tmp_path / "run"
    with use_chat_models(generator=scripted_model("query one", "query two", "")):
        summary = generate_job(corpus, out, context=RetrievalContext(), show_progress=False)
    pairs = list(read_jsonl(out / PAIRS))
    rejects = list(read_jsonl(out / "rejects.jsonl"))
    assert summary.pairs == 2 and len(pairs) == 2
    assert {p["source_id"] for p in pairs} < {r["_id"] for r in rows}
    assert sorted(r["error"] for r in rejects) == [
        "ValueError: the model wrote no usable query",
        "field 'text' is missing or not text",
    ]
    with use_chat_models(generator=scripted_model()):  # nothing left to ask
        again = generate_job(corpus, out, resume=str(out), show_progress=False)
    assert again.skipped == 3 and again.pairs == 2
    assert len(list(read_jsonl(out / "rejects.jsonl"))) == 2  # the bad record is rejected once


def test_generate_job_resumes_only_on_the_corpus_it_started_with(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with use_chat_models(generator=scripted_model("query one", "query two", "query three")):
        generate_job(BEIR / "corpus.jsonl", out, limit=1, seed=5, show_progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text((BEIR / "corpus.jsonl").read_text())
    with pytest.raises(RunError, match="it was started on"):
        generate_job(other, out, resume=str(out), show_progress=False)
    # Without knobs a resume keeps the run's own (limit 1, seed 5): nothing is left to do.
    with use_chat_models(generator=scripted_model()):
        again = generate_job(BEIR / "corpus.jsonl", out, resume=str(out), show_progress=False)
    assert (again.documents, again.skipped, again.pairs) == (1, 1, 1)


# --- filters ----------------------------------------------------------------------
def pairs_with(logprobs: list[float | None]) -> list[dict[str, object]]:
    return [
        {"id": f"{i:x}", "source_id": f"doc{i}", "query": f"q{i}", "logprob": lp}
        for i, lp in enumerate(logprobs)
    ]


def test_logprob_filter_keeps_the_most_likely_queries() -> None:
    kept, report = logprob_filter(pairs_with([-2.0, -0.1, None, -0.5]), keep_fraction=0.5)
    assert [p["source_id"] for p in kept] == ["doc1", "doc3"]
    assert (report.before, report.kept, report.removed) == (4, 2, 2)


def test_logprob_filter_is_skipped_without_logprobs() -> None:
    kept, report = logprob_filter(pairs_with([None, None]), keep_fraction=0.5)
    assert len(kept) == 2 and report.removed == 0 and report.note.startswith("skipped")
    assert "endpoint" in report.note
    _, not_asked = logprob_filter(pairs_with([None]), keep_fraction=0.5, requested=False)
    assert "--no-logprobs" in not_asked.note


def test_reranker_filter_keeps_top_scores_in_input_order() -> None:
    kept, report = reranker_filter(
        pairs_with([None] * 5), [0.1, 0.9, 0.5, 0.8, 0.2], keep_fraction=0.6
    )
    assert [p["source_id"] for p in kept] == ["doc1", "doc2", "doc3"]
    assert report.removed == 2
    with pytest.raises(ValueError, match="keep fraction"):
        keep_top(pairs_with([None]), [1.0], 0)


def test_roundtrip_filter_needs_the_source_in_the_top_k() -> None:
    pairs = pairs_with([None, None, None])
    hits = [[("doc0", 1.0)], [("x", 2.0), ("doc1", 1.0)], [("x", 2.0), ("y", 1.5), ("doc2", 1.0)]]
    kept, report = roundtrip_filter(pairs, hits, k=2)
    assert [p["source_id"] for p in kept] == ["doc0", "doc1"]
    assert report.removed == 1


# --- negatives --------------------------------------------------------------------
def test_mined_negatives_never_include_the_positive_or_its_duplicates() -> None:
    rng = random.Random(7)
    corpus = {f"d{i}": f"text {i}" for i in range(30)}
    corpus["copy"] = corpus["d0"]  # same text as the positive: not a negative
    for _ in range(200):
        ranked = [[(doc, 1.0) for doc in rng.sample(list(corpus), 12)] for _ in range(2)]
        ranked[0].insert(0, ("d0", 9.0))
        negatives = mine_negatives("d0", ranked, corpus, count=5, rng=rng)
        assert "d0" not in negatives and "copy" not in negatives
        assert len(negatives) == len(set(negatives)) == 5


def test_mined_negatives_interleave_sources_then_fill_at_random() -> None:
    corpus = {d: d for d in ("pos", "a", "b", "c", "d", "e")}
    ranked = [[("pos", 3.0), ("a", 2.0)], [("b", 2.0), ("a", 1.0)]]
    assert mine_negatives("pos", ranked, corpus, count=2) == ["b", "a"]
    filled = mine_negatives("pos", ranked, corpus, count=4)
    assert filled[:2] == ["b", "a"] and set(filled[2:]) <= {"c", "d", "e"}


# --- metrics ----------------------------------------------------------------------
def test_metrics_match_hand_computed_values() -> None:
    relevance = {"a": 1, "b": 2}
    ranked = ["x", "b", "y", "a"]
    # DCG = 2/log2(3) + 1/log2(5); ideal DCG = 2/log2(2) + 1/log2(3)
    expected = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, relevance, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranked, relevance, 1) == 0.0
    assert recall_at_k(ranked, relevance, 2) == 0.5
    assert recall_at_k(ranked, relevance, 100) == 1.0
    assert mrr_at_k(ranked, relevance, 10) == 0.5
    assert mrr_at_k(ranked, relevance, 1) == 0.0
    scores = evaluate_rankings(
        {"q1": ["a"], "q2": ["z", "c"]}, {"q1": {"a": 1}, "q2": {"c": 1}, "q3": {"c": 0}}
    )
    assert scores["queries"] == 2
    assert scores["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


# --- indexes, filter job, training, eval -------------------------------------------
def test_bm25_and_dense_find_the_obvious_document(tmp_path: Path) -> None:
    corpus = load_beir(BEIR).corpus
    assert Bm25Index(corpus).search(["chess engine"], 3)[0][0][0] == "chesslab"
    dense = DenseIndex(corpus, cache_dir=tmp_path)
    assert dense.search(["recipes and shopping lists"], 2)[0][0][0] == "bakeplan"
    assert len(list(tmp_path.glob("vectors-*.npz"))) == 1  # cached for the next index
    assert DenseIndex(corpus, cache_dir=tmp_path).vectors.tobytes() == dense.vectors.tobytes()


def make_run(tmp_path: Path, pairs: list[dict[str, object]]) -> Path:
    from synthgraph.tools.runs import Run

    run = Run.open("retrieval", out=tmp_path / "run", config={"corpus": str(BEIR / "corpus.jsonl")})
    write_records(pairs, run.path(PAIRS))
    return run.root


def test_filter_job_counts_each_filter_and_exports_triples(tmp_path: Path) -> None:
    pairs = [
        {
            "id": "01",
            "source_id": "ftpdeck",
            "query": "graphical ftp client bookmarks",
            "logprob": -0.2,
        },
        {
            "id": "02",
            "source_id": "bakeplan",
            "query": "recipe manager shopping list",
            "logprob": -0.4,
        },
        {"id": "03", "source_id": "chesslab", "query": "weather charts", "logprob": -0.3},
        {"id": "04", "source_id": "tidefonts", "query": "fonts", "logprob": -3.0},
        {"id": "05", "source_id": "not-in-corpus", "query": "x", "logprob": -0.1},
    ]
    run_dir = make_run(tmp_path, pairs)
    summary = filter_job(run_dir, filters=["logprob", "roundtrip"], keep=0.75, top_k=1, negatives=2)
    assert [(f["name"], f["before"], f["kept"]) for f in summary.filters] == [
        ("logprob", 4, 3),
        ("roundtrip", 3, 2),
    ]
    triples = list(read_jsonl(Path(summary.out_dir) / TRIPLES))
    assert [t["source_id"] for t in triples] == ["ftpdeck", "bakeplan"]
    for triple in triples:
        assert len(triple["negatives"]) == 2 and triple["source_id"] not in triple["negative_ids"]
    st_rows = list(read_jsonl(Path(summary.out_dir) / "train_st.jsonl"))
    assert set(st_rows[0]) == {"anchor", "positive", "negative_1", "negative_2"}
    rejects = list(read_jsonl(run_dir / "rejects.jsonl"))
    assert rejects[0]["id"] == "05" and "not in the corpus" in rejects[0]["error"]


TINY_TRIPLES = [
    {"query": "ftp client", "positive": "FtpDeck is an FTP client.", "negatives": ["Serif fonts."]},
    {
        "query": "chess game",
        "positive": "ChessLab is a chess game.",
        "negatives": ["A recipe book."],
    },
]


def test_train_job_refuses_a_folder_without_triples(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no train_triples\.jsonl"):
        train_job(tmp_path, tmp_path / "model")
    write_records([], tmp_path / TRIPLES)
    with pytest.raises(InputError, match="no training triples"):
        train_job(tmp_path, tmp_path / "model")


def test_trained_bi_encoder_loads_through_the_embeddings_factory(tmp_path: Path) -> None:
    report = train_bi_encoder(TINY_TRIPLES, tmp_path / "model", batch_size=2, max_seq_length=32)
    assert report.steps == 1 and report.examples == 2
    embeddings = get_embeddings(tmp_path / "model")
    assert embeddings.encode(["ftp client"]).shape == (1, 384)
    # The short length was for training only: the saved model reads as far as the base does.
    assert embeddings.model.max_seq_length == 256


def test_cross_encoder_repeats_a_small_set_up_to_min_steps(tmp_path: Path) -> None:
    triples = TINY_TRIPLES
    # 4 examples in batches of 2 make 2 steps an epoch; 3 steps at least need 2 epochs.
    report = train_cross_encoder(
        triples, tmp_path / "reranker", batch_size=2, max_length=32, min_steps=3
    )
    assert report.examples == 4 and report.steps == 4
    assert (
        len(Reranker(tmp_path / "reranker").score([("ftp client", "FtpDeck is an FTP client.")]))
        == 1
    )


class WordOverlapReranker(Reranker):
    """Scores by shared words, so the expected order is known (no model is loaded)."""

    def __init__(self) -> None:
        pass

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [float(len(set(q.split()) & set(d.split()))) for q, d in pairs]


def test_rerank_reorders_only_the_head_of_each_query() -> None:
    corpus = {"a": "fonts", "b": "ftp client", "c": "ftp client tool", "d": "chess game"}
    hits = [[("a", 0.9), ("b", 0.8), ("c", 0.7)], [("b", 0.9), ("d", 0.5)]]
    reranked = WordOverlapReranker().rerank(["ftp client", "chess game"], hits, corpus, depth=2)
    # Query 1: b beats a in the head, c stays below the depth; query 2: d rises.
    assert [[doc for doc, _ in found] for found in reranked] == [["b", "a", "c"], ["d", "b"]]


def test_eval_job_scores_bm25_and_the_base_model() -> None:
    rows = eval_job(BEIR, split="test")
    assert [r["system"] for r in rows] == ["BM25", "MiniLM (base)", "BM25 + MiniLM (base) (hybrid)"]
    assert all(r["queries"] == 3 and 0 < r["ndcg@10"] <= 1 for r in rows)


def test_cli_eval_and_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["retrieval", "eval", str(BEIR), "--split", "dev", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["system"] for r in json.loads(result.stdout)] == [
        "BM25",
        "MiniLM (base)",
        "BM25 + MiniLM (base) (hybrid)",
    ]
    missing = runner.invoke(app, ["retrieval", "eval", str(tmp_path)])
    assert missing.exit_code == 2 and "no corpus.jsonl" in " ".join(missing.output.split())
    not_a_model = runner.invoke(app, ["retrieval", "eval", str(BEIR), "--model", str(tmp_path)])
    assert not_a_model.exit_code == 2
    assert "not a sentence-transformers model folder" in " ".join(not_a_model.output.split())
    (tmp_path / TRIPLES).write_text("")
    no_triples = runner.invoke(
        app, ["retrieval", "train", str(tmp_path), "--out", str(tmp_path / "m")]
    )
    assert no_triples.exit_code == 2 and "no training triples" in no_triples.output
    assert "Traceback" not in no_triples.output
    assert DEPRECATED_FLAGS == {}  # every retrieval flag already speaks the shared vocabulary
    bad_style = runner.invoke(
        app, ["retrieval", "generate", str(BEIR / "corpus.jsonl"), "--style", "poetry"]
    )
    assert bad_style.exit_code == 2 and "--style must be one of" in " ".join(
        bad_style.output.split()
    )


def test_langchain_tool_runs_the_graph_inside_the_workspace(isolated_settings: Path) -> None:
    workspace = isolated_settings
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "corpus.jsonl").write_text((BEIR / "corpus.jsonl").read_text())
    with use_chat_models(generator=scripted_model("ftp client", "chess game")):
        result = retrieval_tool().invoke(
            {"corpus_path": "corpus.jsonl", "output_dir": "queries", "max_documents": 2}
        )
    assert result == {"pairs_path": "queries/pairs.jsonl", "documents": 2, "pairs": 2, "rejects": 0}
    outside = retrieval_tool().invoke({"corpus_path": "/etc/passwd", "output_dir": "x"})
    assert "outside the workspace" in outside
    too_many = retrieval_tool().invoke(
        {"corpus_path": "corpus.jsonl", "output_dir": "y", "max_documents": 1000}
    )
    assert too_many.startswith("invalid arguments: max_documents")


@pytest.mark.integration
def test_embedded_model_writes_a_query_with_logprobs() -> None:
    document = "FtpDeck is a graphical FTP client. It resumes broken downloads and keeps bookmarks."
    result = graph.invoke(
        {"document_id": "ftpdeck", "document": document},
        context=RetrievalContext(
            max_tokens=24,
            examples=load_examples(
                BEIR.parent.parent / "examples" / "retrieval" / "software_packages.json",
                "promptagator",
            ),
        ),
    )
    assert len(result["queries"]) == 1
    query = result["queries"][0]
    assert query["query"] and "\n" not in query["query"]
    assert query["logprob"] is not None and query["logprob"] <= 0
