"""The dedup service: MinHash stage, embedding stage (real MiniLM), persistence, Chroma batching."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from synthgraph.tools.dedup import DedupService
from synthgraph.tools.io import read_jsonl
from synthgraph.tools.minhash import (
    MinHashDeduper,
    MinHasher,
    MinHashIndex,
    choose_bands,
    jaccard,
    lsh_recall,
    pair_jaccard,
    token_hash,
    tokenize,
    tokenize_batch,
)

# Exact and near duplicates that words alone catch (same word sets or one word off in ~20).
SENTENCES = [
    (
        "p1",
        "A retired marine biologist in Lisbon who restores old sailing boats and teaches knot tying to kids on weekends.",
    ),
    (
        "p2",
        "A night-shift nurse from Oslo who paints watercolour landscapes and volunteers at the city animal shelter.",
    ),
    (
        "p3",
        "A retired marine biologist in Lisbon who restores old sailing boats and teaches knot tying to kids on weekends.",
    ),
    (
        "p4",
        "A retired marine biologist in lisbon who restores old sailing boats, and teaches knot tying to kids on weekends!",
    ),
    (
        "p5",
        "A data engineer in Nairobi who mentors university students and builds open-source irrigation sensors.",
    ),
    (
        "p6",
        "A night-shift nurse from Oslo who paints watercolour landscapes and volunteers at the city animal shelter too.",
    ),
    (
        "p7",
        "A young pastry chef in Osaka experimenting with fermented fruit and running a small bakery podcast.",
    ),
]
# Paraphrases: few shared words, same meaning (only embeddings catch them).
PARAPHRASES = [
    ("q1", "A retired physician in Lisbon who enjoys hiking and jazz."),
    ("q2", "A retired doctor in Lisbon who loves hiking and jazz."),
    ("q3", "A software engineer in Nairobi who mentors students."),
    ("q4", "A young chef in Osaka who experiments with fermented vegetables."),
    ("q5", "A young cook in Osaka experimenting with fermented vegetables."),
]


def _write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "persona": t}) + "\n" for i, t in rows))
    return path


def _verdicts(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r["dedup"] for r in records}


def documents(prefix: str, seed: int, count: int = 300) -> list[dict[str, str]]:
    """`count` distinct 20-word documents (random words of 50,000: no two alike)."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(50_000)]
    return [
        {"id": f"{prefix}{i}", "text": " ".join(rng.sample(vocabulary, 20))} for i in range(count)
    ]


class RandomEncoder:
    """Unit vectors that depend only on the text (no two texts alike): for store tests."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(token_hash(t)).normal(size=384) for t in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 384)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- MinHash building blocks --------------------------------------------------------


def test_band_choice_finds_pairs_at_the_threshold() -> None:
    bands, rows = choose_bands(0.9, 128)
    assert bands * rows <= 128
    assert lsh_recall(0.9, bands, rows) >= 0.99
    assert lsh_recall(0.92, bands, rows) >= 0.998
    assert lsh_recall(0.5, bands, rows) < 0.05  # few false candidates to verify
    # datasketch's own choice for threshold 0.9 would miss most such pairs
    reference = MinHashLSH(threshold=0.9, num_perm=128)
    assert lsh_recall(0.9, reference.b, reference.r) < 0.5


def test_fast_tokeniser_matches_the_reference() -> None:
    texts = [
        "Hello, World! hello_world 42 times.",
        "",
        "   ...   ",
        "Ünïcode café — naïve “quotes” don’t split oddly; ΣΟΦΙΑ σοφίας",
        "a\x01b separator inside",
        "tabs\tand\nnewlines",
        "non\u00a0breaking\u2003spaces – and dashes",
    ]
    for batch_texts in (texts, [t for t in texts if t.isascii()]):
        batch = tokenize_batch(batch_texts)
        assert len(batch.offsets) == len(batch_texts) + 1
        for i, text in enumerate(batch_texts):
            got = set(batch.hashes[batch.offsets[i] : batch.offsets[i + 1]].tolist())
            assert got == {token_hash(t) for t in tokenize(text)}, text


def test_minhash_estimate_is_close_to_exact_jaccard() -> None:
    rng = random.Random(7)
    vocabulary = [f"word{i}" for i in range(5000)]
    hasher = MinHasher(128, seed=1)
    errors, reference_errors = [], []
    for _ in range(300):
        a = rng.sample(vocabulary, 40)
        # replace k words: exact Jaccard (40 - k) / (40 + k)
        k = rng.randint(0, 20)
        b = a[k:] + rng.sample(vocabulary[-1000:], k)
        exact = jaccard(set(a), set(b))
        signatures = hasher.signatures(tokenize_batch([" ".join(a), " ".join(b)]))
        errors.append(float((signatures[0] == signatures[1]).mean()) - exact)
        ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
        ma.update_batch([w.encode() for w in a])
        mb.update_batch([w.encode() for w in b])
        reference_errors.append(ma.jaccard(mb) - exact)
    # unbiased, and as tight as datasketch (sd of the estimator ≤ 0.5 / sqrt(128) ≈ 0.044)
    assert abs(np.mean(errors)) < 0.01
    assert np.std(errors) < 0.045
    assert np.std(errors) < 1.3 * np.std(reference_errors)


def test_pair_jaccard_is_exact_and_ignores_repeated_words() -> None:
    batch = tokenize_batch(["a b c d", "a b c e", "x y", "a a b b c c d d"])
    tokens, offsets = batch.hashes, batch.offsets
    got = pair_jaccard(tokens, offsets, np.array([0, 0, 0]), tokens, offsets, np.array([1, 2, 3]))
    assert got.tolist() == pytest.approx([3 / 5, 0.0, 1.0])


def test_minhash_deduper_drops_near_duplicates_within_a_call() -> None:
    rng = random.Random(3)
    vocabulary = [f"w{i}" for i in range(20000)]
    base = [rng.sample(vocabulary, 30) for _ in range(400)]
    # one changed word in 30: Jaccard 29/31 = 0.935, dropped; five: 25/35 = 0.71, kept
    near = [[*b[1:], "near" + b[0]] for b in base[:100]]
    far = [b[5:] + [f"far{j}{b[0]}" for j in range(5)] for b in base[100:200]]
    texts = [" ".join(words) for words in base + near + far]
    ids = [f"d{i}" for i in range(len(texts))]
    for verify in ("exact", "signature"):
        verdicts = MinHashDeduper(0.9, verify=verify).dedup(texts, ids)
        dropped = set(np.flatnonzero(~verdicts.kept).tolist())
        if verify == "exact":
            assert dropped == set(range(400, 500))
        else:
            # The estimate has sd ≈ 0.022 at J = 0.935, so ~6% of these fall under 0.9:
            # the reason exact verification is the default.
            assert dropped <= set(range(400, 500)) and len(dropped) >= 85
        assert verdicts.nearest_id[400] == "d0"


def test_a_bucket_of_many_copies_keeps_only_the_first() -> None:
    texts = ["the very same persona text, over and over"] * 300 + ["something else entirely here"]
    texts[150] = texts[150].upper()  # same words
    verdicts = MinHashDeduper(0.9).dedup(texts, [f"c{i}" for i in range(len(texts))])
    assert np.flatnonzero(verdicts.kept).tolist() == [0, 300]
    assert set(verdicts.nearest_id[1:300]) == {"c0"}


def test_the_memory_holds_every_earlier_batch_in_memory_and_on_disk(tmp_path: Path) -> None:
    a, b = documents("a", seed=1), documents("b", seed=2)
    texts_b, ids_b = [d["text"] for d in b], [d["id"] for d in b]
    deduper = MinHashDeduper(0.9)
    for docs in (a, b):
        verdicts = deduper.dedup([d["text"] for d in docs], [d["id"] for d in docs])
        assert verdicts.kept.all()
        deduper.commit(verdicts.kept)
    # b was the second batch stored: its copies are found and named
    again = deduper.dedup(texts_b, ids_b)
    assert not again.kept.any() and again.nearest_id == ids_b
    # the same after a save and a reload, three batches deep
    path = tmp_path / "index.npz"
    for docs in (a, b, documents("c", seed=3)):
        stored = MinHashDeduper(0.9, path=path)
        stored.commit(stored.dedup([d["text"] for d in docs], [d["id"] for d in docs]).kept)
    reloaded = MinHashDeduper(0.9, path=path).dedup(texts_b, ids_b)
    assert not reloaded.kept.any() and reloaded.nearest_id == ids_b


def test_an_index_saved_before_owners_existed_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.npz"
    deduper = MinHashDeduper(0.9, path=path)
    deduper.commit(deduper.dedup(["one two three", "four five six"], ["x", "y"]).kept)
    with np.load(path) as stored:
        old = {name: stored[name] for name in stored.files if name != "owners"}
    np.savez(path, **old)
    bands, rows = choose_bands(0.9)
    assert MinHashIndex.load(path, bands, rows, 128, 1).owners == ["", ""]
    assert not MinHashDeduper(0.9, path=path, owner="run").dedup(["one two three"], ["x"]).kept[0]


# --- the service ----------------------------------------------------------------------


def test_jsonl_minhash_stage_names_the_nearest_match(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "personas.jsonl", SENTENCES)
    result = DedupService("unit", method="minhash").dedup(read_jsonl(path), field="persona")
    verdicts = _verdicts(result.kept + result.dropped)
    assert [r["id"] for r in result.dropped] == ["p3", "p4", "p6"]
    assert verdicts["p3"] == {"stage": "minhash", "kept": False, "nearest_id": "p1", "score": 1.0}
    assert (
        verdicts["p4"]["nearest_id"] == "p1" and verdicts["p4"]["score"] == 1.0
    )  # case, punctuation
    assert verdicts["p6"]["nearest_id"] == "p2" and 0.9 <= verdicts["p6"]["score"] < 1.0
    assert verdicts["p1"]["kept"] and verdicts["p1"]["stage"] == "minhash"
    assert result.stages["minhash"].dropped == 3
    assert result.kept[0]["persona"] == SENTENCES[0][1]  # records come back whole


def test_embedding_stage_catches_paraphrases_with_real_minilm(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "personas.jsonl", SENTENCES + PARAPHRASES)
    service = DedupService("both", method="both")
    result = service.dedup(read_jsonl(path), field="persona")
    verdicts = _verdicts(result.kept + result.dropped)
    assert {r["id"] for r in result.dropped} == {"p3", "p4", "p6", "q2", "q5"}
    assert verdicts["p3"]["stage"] == "minhash"
    assert verdicts["q2"]["stage"] == "embedding" and verdicts["q2"]["nearest_id"] == "q1"
    assert verdicts["q5"]["nearest_id"] == "q4" and verdicts["q5"]["score"] >= 0.9
    assert verdicts["q3"]["kept"] and verdicts["q3"]["stage"] == "embedding"
    assert result.stages["minhash"].dropped == 3 and result.stages["embedding"].dropped == 2
    assert result.stages["embedding"].checked == len(SENTENCES) + len(PARAPHRASES) - 3


def test_rerun_with_a_new_service_drops_everything(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "personas.jsonl", SENTENCES + PARAPHRASES)
    first = DedupService("persist").dedup(read_jsonl(path), field="persona")
    again = DedupService("persist").dedup(read_jsonl(path), field="persona")
    assert again.kept == []
    verdicts = _verdicts(again.dropped)
    # kept texts of the first run are found by stage 1 (same words), named by their id
    for record in first.kept:
        assert verdicts[record["id"]] == {
            "stage": "minhash",
            "kept": False,
            "nearest_id": record["id"],
            "score": 1.0,
        }
    # each stage remembers what it kept; paraphrases are only in the embedding store's reach
    assert (
        DedupService("persist", method="embedding").dedup(read_jsonl(path), field="persona").kept
        == []
    )
    words_only = DedupService("persist", method="minhash").dedup(read_jsonl(path), field="persona")
    assert [r["id"] for r in words_only.kept] == ["q2", "q5"]
    # a different namespace remembers nothing; reset forgets
    assert (
        len(DedupService("other", method="minhash").dedup(read_jsonl(path), field="persona").kept)
        == len(first.kept) + 2
    )  # q2 and q5 are only near-duplicates by meaning
    DedupService("persist").reset()
    assert len(DedupService("persist").dedup(read_jsonl(path), field="persona").kept) == len(
        first.kept
    )


def test_sequential_runs_remember_every_earlier_run(tmp_path: Path) -> None:
    """The CLI case: A, B, B (300 distinct documents each) keeps 300, 300, 0."""
    a, b = documents("a", seed=1), documents("b", seed=2)
    kept = [
        len(DedupService("runs", method="minhash").dedup(docs, field="text").kept)
        for docs in (a, b, b, a)
    ]
    assert kept == [300, 300, 0, 0]


def test_a_record_is_not_a_duplicate_of_its_own_entry_under_the_same_owner() -> None:
    """A job killed after the stores were written, before its verdicts were: same verdicts again."""
    records = documents("r", seed=4, count=20)

    def service(owner: str | None, method: str = "both") -> DedupService:
        return DedupService("owned", method=method, embeddings=RandomEncoder(), owner=owner)  # type: ignore[arg-type]

    assert len(service("run-1").dedup(records, field="text").kept) == 20
    again = service("run-1").dedup(records, field="text")
    assert len(again.kept) == 20
    assert all(r["dedup"]["nearest_id"] != r["id"] for r in again.kept)
    assert service("run-1").collection().count() == 20  # the rerun replaced its entries
    # another owner, or none, finds every record stored, under its own id
    for other in ("run-2", None):
        for method in ("minhash", "embedding"):
            result = service(other, method).dedup(records, field="text", remember=False)
            assert result.kept == []
            assert all(r["dedup"]["nearest_id"] == r["id"] for r in result.dropped)
    # a copy under another id is still a duplicate for the same owner
    copy = [{"id": "copy", "text": records[0]["text"]}]
    assert service("run-1").dedup(copy, field="text").dropped[0]["dedup"]["nearest_id"] == "r0"
    with pytest.raises(ValueError, match="unique"):
        service("run-1").dedup(records[:1] * 2, field="text")


def test_reset_forgets_everything_and_leaves_no_file(isolated_settings: Path) -> None:
    service = DedupService("gone", method="minhash")
    service.dedup(documents("g", seed=5, count=10), field="text")
    assert service.minhash_path.exists()
    service.reset()
    assert not list((isolated_settings / "dedup").iterdir())
    assert len(service.dedup(documents("g", seed=5, count=10), field="text").kept) == 10


def test_chroma_writes_are_batched_below_the_max_batch_size(tmp_path: Path) -> None:
    texts = [f"persona number {i} with a unique trait {i * 7919}" for i in range(23)]
    service = DedupService(
        "batches", method="embedding", embeddings=RandomEncoder(), max_batch_size=5
    )
    sizes: list[int] = []
    collection = service.collection()
    original_upsert = collection.upsert

    def spy_upsert(**kwargs: Any) -> None:
        sizes.append(len(kwargs["ids"]))
        original_upsert(**kwargs)

    collection.upsert = spy_upsert  # type: ignore[method-assign]
    service.collection = lambda: collection  # type: ignore[method-assign]
    result = service.dedup(({"id": str(i), "text": t} for i, t in enumerate(texts)), field="text")
    assert len(result.kept) == 23
    assert sizes == [5, 5, 5, 5, 3]
    assert collection.count() == 23
    assert service.max_batch_size() == 5
    assert DedupService("x").max_batch_size() > 100  # the real client's limit


def test_wordless_texts_pass_the_minhash_stage_and_bad_records_fail_clearly() -> None:
    records = [
        {"id": "a", "t": "..."},
        {"id": "b", "t": "..."},
        {"id": "c", "t": "real words here"},
    ]
    result = DedupService("empty", method="minhash").dedup(records, field="t")
    assert len(result.kept) == 3 and result.kept[0]["dedup"]["stage"] is None
    with pytest.raises(ValueError, match="field 'text'"):
        DedupService("empty", method="minhash").dedup([{"id": "x"}], field="text")
    with pytest.raises(ValueError, match="namespace"):
        DedupService("../escape")


# --- CLI and agent tool ------------------------------------------------------------------


def test_cli_writes_kept_and_dropped_and_prints_a_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from synthgraph.graphs.cli import app

    source = _write_jsonl(tmp_path / "personas.jsonl", SENTENCES)
    out = tmp_path / "out" / "kept.parquet"
    args = ["dedup", str(source), "--field", "persona", "--out", str(out), "--method", "minhash"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert "minhash" in run.stdout and "total" in run.stdout
    import pandas as pd

    assert pd.read_parquet(out)["id"].tolist() == ["p1", "p2", "p5", "p7"]
    dropped = list(read_jsonl(tmp_path / "out" / "kept.dropped.jsonl"))
    assert [(r["id"], r["dedup"]["nearest_id"]) for r in dropped] == [
        ("p3", "p1"),
        ("p4", "p1"),
        ("p6", "p2"),
    ]
    # rerunning on the same file keeps nothing; --reset starts over
    assert CliRunner().invoke(app, args).exit_code == 0
    assert pd.read_parquet(out).empty
    assert CliRunner().invoke(app, [*args, "--reset"]).exit_code == 0
    assert len(pd.read_parquet(out)) == 4
    bad = CliRunner().invoke(app, ["dedup", str(source), "--field", "nope", "--out", str(out)])
    assert bad.exit_code == 2 and "'nope'" in bad.output


def test_agent_tool_stays_in_the_workspace(isolated_settings: Path) -> None:
    from synthgraph.tools.dedup_tools import dedup_tool

    workspace = isolated_settings
    workspace.mkdir(parents=True, exist_ok=True)
    _write_jsonl(workspace / "personas.jsonl", SENTENCES)
    tool = dedup_tool()
    answer = tool.invoke(
        {
            "input_path": "personas.jsonl",
            "field": "persona",
            "output_path": "kept.jsonl",
            "method": "minhash",
        }
    )
    assert answer == {
        "kept_path": "kept.jsonl",
        "dropped_path": "kept.dropped.jsonl",
        "records": 7,
        "kept": 4,
        "dropped": {"minhash": 3},
    }
    assert len(list(read_jsonl(workspace / "kept.jsonl"))) == 4
    assert len(list(read_jsonl(workspace / "kept.dropped.jsonl"))) == 3
    escape = tool.invoke({"input_path": "../../etc/passwd", "field": "x", "output_path": "o.jsonl"})
    assert "outside the workspace" in escape
