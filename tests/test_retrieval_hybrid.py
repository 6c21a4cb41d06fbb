"""Hybrid retrieval (BM25 + dense, a dev-tuned mix of scores) and the overlap profile of queries."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.retrieval import job
from synthgraph.graphs.retrieval.job import PAIRS, eval_job, filter_job
from synthgraph.tools.io import write_records
from synthgraph.tools.retrieval_data import BeirSet
from synthgraph.tools.retrieval_filters import overlap_profile, word_overlaps
from synthgraph.tools.retrieval_index import mix
from synthgraph.tools.retrieval_training import Reranker
from synthgraph.tools.runs import Run

BEIR = Path(__file__).parent / "retrieval_beir"
HYBRID = "BM25 + MiniLM (base) (hybrid)"


def test_the_mix_scales_each_list_then_weighs_them() -> None:
    bm25 = [("x", 9.0), ("y", 5.0), ("w", 1.0)]  # scaled: x 1, y 0.5, w 0
    dense = [("y", 0.9), ("z", 0.8), ("x", 0.4)]  # scaled: y 1, z 0.8, x 0
    mixed = mix([bm25, dense], (0.5, 0.5))
    # y is good in both (0.25 + 0.5) and beats x and z, each good in one list only.
    assert [doc for doc, _ in mixed] == ["y", "x", "z", "w"]
    assert mixed[0][1] == pytest.approx(0.75) and mixed[1][1] == pytest.approx(0.5)
    # The heavier list leads; equal scores keep the same order whichever list comes first.
    assert [doc for doc, _ in mix([bm25, dense], (0.1, 0.9))][:2] == ["y", "z"]
    assert mix([[("a", 1.0)], [("b", 2.0)]], (0.5, 0.5)) == [("a", 0.5), ("b", 0.5)]
    assert mix([[("b", 2.0)], [("a", 1.0)]], (0.5, 0.5)) == [("a", 0.5), ("b", 0.5)]
    assert mix([[], []], (0.5, 0.5)) == []


def test_the_hybrid_weight_is_tuned_toward_the_list_that_ranks_the_answers_first() -> None:
    tuning = BeirSet(corpus={}, queries={"q": "query"}, qrels={"q": {"answer": 1}})
    wrong_first = [[("a", 3.0), ("b", 2.0), ("answer", 1.0)]]
    right_first = [[("answer", 3.0), ("c", 2.0), ("a", 1.0)]]
    assert job._tuned_weight(wrong_first, right_first, tuning) > 0.5
    assert job._tuned_weight(right_first, wrong_first, tuning) < 0.5
    # Nothing to choose between: an even mix.
    assert job._tuned_weight(right_first, right_first, tuning) == 0.5


def test_hybrid_rows_carry_their_dense_weight() -> None:
    tuned = eval_job(BEIR, split="test")  # the folder has dev qrels to tune on
    assert tuned[2]["system"] == HYBRID and tuned[2]["dense_weight"] in job.HYBRID_WEIGHTS
    assert "dense_weight" not in tuned[0] and "dense_weight" not in tuned[1]
    even = eval_job(BEIR, split="test", tune_split=None)
    assert even[2]["dense_weight"] == 0.5


def test_tuning_on_the_scored_split_reuses_its_lists_with_the_same_result(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    shutil.copytree(BEIR, folder)
    shutil.copy(folder / "qrels" / "dev.tsv", folder / "qrels" / "tune.tsv")
    # The same queries under another split name are searched again; the rows must agree.
    assert eval_job(folder, split="dev") == eval_job(folder, split="dev", tune_split="tune")


class WordOverlapReranker(Reranker):
    """Scores by shared words, so no model is loaded."""

    def __init__(self, path: Path | None = None) -> None:
        pass

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [float(len(set(q.lower().split()) & set(d.lower().split()))) for q, d in pairs]


def test_eval_job_reports_the_hybrid_beside_each_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(job, "Reranker", WordOverlapReranker)
    rows = eval_job(BEIR, split="test", reranker=tmp_path, rerank=[HYBRID])
    assert [r["system"] for r in rows] == ["BM25", "MiniLM (base)", HYBRID, f"{HYBRID} + reranker"]
    for row in rows:
        assert row["queries"] == 3
        assert all(0 <= row[m] <= 1 for m in ("ndcg@10", "recall@100", "mrr@10"))
    # Without BM25 there is nothing to fuse.
    assert [r["system"] for r in eval_job(BEIR, split="test", bm25=False)] == ["MiniLM (base)"]


def test_overlap_is_the_share_of_query_words_in_the_document() -> None:
    document = "FtpDeck is a graphical FTP client with bookmarks."
    overlaps = word_overlaps(
        [
            (document, document),  # a copy of the document
            ("zebra quokka", document),  # nothing in common
            ("graphical ftp weather", document),  # 2 of 3 content words
            ("the of", document),  # stop words only: no content words
        ]
    )
    assert overlaps == [1.0, 0.0, pytest.approx(2 / 3), 0.0]


def test_overlap_profile_summarises_overlap_and_length() -> None:
    profile = overlap_profile(
        [("ftp client", "an ftp client"), ("ftp weather", "an ftp client"), ("x y z w", "doc")]
    )
    assert profile["queries"] == 3
    assert profile["overlap"] == {"mean": 0.5, "q1": 0.25, "median": 0.5, "q3": 0.75}
    assert profile["words"] == {"mean": 2.667, "q1": 2.0, "median": 2.0, "q3": 3.0}
    assert overlap_profile([]) == {"queries": 0}


def make_run(tmp_path: Path) -> Path:
    run = Run.open("retrieval", out=tmp_path / "run", config={"corpus": str(BEIR / "corpus.jsonl")})
    pairs = [
        ("01", "ftpdeck", "graphical ftp client", -0.1),
        ("02", "bakeplan", "recipes shopping lists", -0.2),
        ("03", "chesslab", "weather charts", -2.0),
        ("04", "tidefonts", "knitting patterns", -3.0),
    ]
    write_records(
        [
            {"id": i, "source_id": source, "query": query, "logprob": logprob}
            for i, source, query, logprob in pairs
        ],
        run.path(PAIRS),
    )
    return run.root


def test_filter_report_profiles_kept_dropped_and_real_queries(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    summary = filter_job(
        run_dir, filters=["logprob"], keep=0.5, negatives=1, negative_sources=("bm25",)
    )
    overlap = summary.overlap
    assert list(overlap) == ["kept", "dropped", "real"]
    assert overlap["kept"]["queries"] == 2 and overlap["kept"]["overlap"]["mean"] == 1.0
    assert overlap["dropped"]["queries"] == 2 and overlap["dropped"]["overlap"]["mean"] == 0.0
    # The dev queries of the fixture: "graphical ftp client" (3/3) and
    # "serif book fonts for Greek" (3/4: the document says "books").
    assert overlap["real"]["queries"] == 2 and overlap["real"]["overlap"]["mean"] == 0.875
    saved = json.loads((Path(summary.out_dir) / "filter_report.json").read_text())
    assert saved["overlap"] == overlap

    result = CliRunner().invoke(
        app,
        ["retrieval", "filter", str(run_dir), "--filters", "", "--negative-sources", "bm25"],
    )
    assert result.exit_code == 0, result.output
    assert all(group in result.stdout for group in ("kept", "dropped", "real"))


def test_no_real_group_for_a_corpus_outside_a_beir_folder(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text((BEIR / "corpus.jsonl").read_text())
    summary = filter_job(
        make_run(tmp_path), filters=[], corpus_path=corpus, negatives=1, negative_sources=("bm25",)
    )
    assert list(summary.overlap) == ["kept", "dropped"]
    assert summary.overlap["dropped"] == {"queries": 0}
