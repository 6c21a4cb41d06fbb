"""Retriever training: held-out early stopping, guarded hard negatives, the cached loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.retrieval.job import TRIPLES
from synthgraph.tools import retrieval_training
from synthgraph.tools.io import write_records
from synthgraph.tools.retrieval_data import load_corpus
from synthgraph.tools.retrieval_filters import hard_negative_triples
from synthgraph.tools.retrieval_index import DenseIndex
from synthgraph.tools.retrieval_training import (
    guard_negatives,
    guarded_triples,
    holdout_split,
    train_bi_encoder,
)

BEIR = Path(__file__).parent / "retrieval_beir"
CORPUS = {
    "ftpdeck": "FtpDeck is a graphical FTP client that keeps a list of bookmarked servers.",
    # Planted: another document that answers the FtpDeck query at least as well.
    "ftpgui": "Graphical FTP client.",
    "fonts": "Tide is a family of serif fonts for printed books.",
    "chess": "ChessLab is a chess game with an engine and opening books.",
    "meteo": "A Python library that reads weather station data and plots rainfall charts.",
    "recipes": "BakePlan keeps recipes and writes shopping lists.",
}


def triple(query: str, source: str, negative: str) -> dict[str, Any]:
    return {
        "query": query,
        "positive": CORPUS[source],
        "negatives": [CORPUS[negative]],
        "source_id": source,
        "negative_ids": [negative],
    }


TRIPLES_4 = [
    triple("graphical ftp client", "ftpdeck", "fonts"),
    triple("chess game engine", "chess", "recipes"),
    triple("weather rainfall plots", "meteo", "chess"),
    triple("recipes shopping list", "recipes", "meteo"),
    triple("ftp bookmarks", "ftpdeck", "chess"),
]


def test_holdout_split_is_seeded_and_disjoint_by_source_document() -> None:
    train, held = holdout_split(TRIPLES_4, 0.25, seed=3)
    assert len(held) >= 1 and len(train) + len(held) == len(TRIPLES_4)
    # Both FtpDeck queries fall on one side: no held-out document is trained on.
    assert not {t["source_id"] for t in train} & {t["source_id"] for t in held}
    assert holdout_split(TRIPLES_4, 0.25, seed=3) == (train, held)
    assert holdout_split(TRIPLES_4, 0.0, seed=3) == (TRIPLES_4, [])


def test_guard_drops_a_negative_scored_near_the_positive() -> None:
    negative_ids = ["ftpgui", "fonts", "chess"]
    candidates = [
        {
            **triple("graphical ftp client", "ftpdeck", "fonts"),
            "negative_ids": negative_ids,
            "negatives": [CORPUS[d] for d in negative_ids],
        }
    ]
    scores = {"ftpdeck": 0.8, "ftpgui": 0.78, "fonts": 0.1, "chess": 0.5}
    guarded, dropped = guard_negatives(
        candidates, lambda pairs: [scores[d] for _, d in pairs], margin=0.05, count=1
    )
    # ftpgui is within the margin of the positive: dropped; the next candidate takes its place.
    assert dropped == 1
    assert guarded[0]["negative_ids"] == ["fonts"] and guarded[0]["negatives"] == [CORPUS["fonts"]]


def test_mined_negatives_exclude_a_planted_false_negative(tmp_path: Path) -> None:
    index = DenseIndex(CORPUS, cache_dir=tmp_path)
    pair = [triple("graphical ftp client", "ftpdeck", "fonts")]
    # Unguarded, BM25 proposes the planted document as the hardest negative...
    proposed = hard_negative_triples(pair, CORPUS, 3, ("bm25",), None, seed=1)
    assert proposed[0]["negative_ids"][0] == "ftpgui"
    # ...the dense judge scores it as high as the positive, so it is kept out.
    mined, dropped, note = guarded_triples(
        pair, CORPUS, 3, ("bm25", "dense"), lambda: index, None, seed=1
    )
    assert "ftpgui" not in mined[0]["negative_ids"] and len(mined[0]["negative_ids"]) == 3
    assert "ftpdeck" not in mined[0]["negative_ids"]
    assert dropped >= 1 and "dense model" in note


def test_early_stopping_saves_the_best_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import SentenceTransformer

    scripted = iter([0.2, 0.5, 0.9, 0.7, 0.95])  # base, then after epochs 1, 2, 3, ...
    fingerprints: list[float] = []

    def fake_mrr(model: Any, held: Any, documents: Any) -> float:
        fingerprints.append(float(next(model.parameters()).detach().sum()))
        return next(scripted)

    monkeypatch.setattr(retrieval_training, "heldout_mrr", fake_mrr)
    report = train_bi_encoder(
        TRIPLES_4, tmp_path / "model", epochs=5, batch_size=2, max_seq_length=32,
        holdout_share=0.25, learning_rate=1e-3,
    )  # fmt: skip
    # Epoch 3 did not beat epoch 2: training stops there and epoch 2's weights are saved.
    assert (report.epochs, report.best_epoch) == (3, 2)
    assert report.heldout_mrr == [0.2, 0.5, 0.9, 0.7] and report.heldout >= 1
    saved = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert float(next(saved.parameters()).detach().sum()) == pytest.approx(
        fingerprints[2], abs=1e-4
    )
    assert fingerprints[2] != pytest.approx(fingerprints[3], abs=1e-4)


def test_cli_train_mines_guarded_negatives_with_the_cached_loss(tmp_path: Path) -> None:
    folder = tmp_path / "filtered"
    corpus = load_corpus(BEIR / "corpus.jsonl")
    queries = {
        "ftpdeck": "graphical ftp client",
        "chesslab": "chess engine",
        "tidefonts": "serif fonts for books",
        "pymeteo": "weather station plots",
    }
    # No negatives yet: `train` mines them from the corpus.
    write_records(
        [
            {"query": q, "positive": corpus[doc], "negatives": [], "source_id": doc}
            for doc, q in queries.items()
        ],
        folder / TRIPLES,
    )
    result = CliRunner().invoke(
        app,
        [
            "retrieval", "train", str(folder), "--out", str(tmp_path / "model"),
            "--corpus", str(BEIR / "corpus.jsonl"), "--negative-sources", "bm25",
            "--epochs", "1", "--batch-size", "2", "--cached-loss", "--holdout-share", "0.25",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "negatives: bm25 over" in output and "judged by the base dense model" in output
    assert (tmp_path / "model" / "modules.json").is_file()
