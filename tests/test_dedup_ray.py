"""MinHash dedup on Ray Data gives the local deduper's verdicts (one local Ray for the module)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.tools.dedup import dropped_path
from synthgraph.tools.io import write_records
from synthgraph.tools.minhash import MinHashDeduper, MinHashVerdicts
from synthgraph.tools.minhash_ray import RayMinHashDeduper

WORDS = [f"w{i}" for i in range(400)]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def _edit(words: list[str], rng: random.Random, count: int) -> list[str]:
    out = list(words)
    for _ in range(count):
        out[rng.randrange(len(out))] = rng.choice(WORDS)
    return out


def _texts(seed: int, n: int) -> list[str]:
    """Originals of 20 distinct words, exact copies, near copies (1-3 words replaced),
    a chain A~B~C with A≁C, a wordless text, and 70 copies of one text (a bucket
    larger than the local pairing's per-bucket limit)."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(n):
        roll = rng.random()
        if texts and roll < 0.15:
            texts.append(rng.choice(texts))
        elif texts and roll < 0.4:
            texts.append(" ".join(_edit(rng.choice(texts).split(), rng, rng.randint(1, 3))))
        else:
            texts.append(" ".join(rng.sample(WORDS, 20)))
    a = rng.sample(WORDS, 20)
    b = [*a[:19], "chain1"]  # J(a, b) = 19/21
    c = [*b[:18], "chain2", b[19]]  # J(b, c) = 19/21, J(a, c) = 18/22
    texts[5:5] = [" ".join(a), " ".join(b), " ".join(c)]
    texts.insert(9, "!!! ...")
    texts.extend([texts[1]] * 70)
    return texts


def _assert_same(local: MinHashVerdicts, distributed: MinHashVerdicts) -> None:
    assert distributed.kept.tolist() == local.kept.tolist()
    assert distributed.has_tokens.tolist() == local.has_tokens.tolist()
    assert distributed.nearest_id == local.nearest_id
    np.testing.assert_array_equal(distributed.score, local.score)  # NaN where NaN
    assert distributed.candidates == local.candidates


@pytest.mark.parametrize("threshold", [0.9, 0.7])
def test_same_verdicts_as_local(local_ray: None, threshold: float) -> None:
    for seed, n in [(0, 60), (1, 300)]:
        texts = _texts(seed, n)
        ids = [f"d{i}" for i in range(len(texts))]
        local = MinHashDeduper(threshold).dedup(texts, ids)
        # Small blocks: signing and scoring run over several blocks and workers.
        distributed = RayMinHashDeduper(threshold, block_rows=37).dedup(texts, ids)
        _assert_same(local, distributed)
        assert not local.kept.all()
        if threshold == 0.9:  # the chain: A kept, B dropped as near A, C kept (A≁C, B gone)
            assert local.kept[5:8].tolist() == [True, False, True]
            assert local.nearest_id[6] == "d5"


def test_earlier_runs_and_commit(local_ray: None, tmp_path: Path) -> None:
    texts = _texts(2, 200)
    ids = [f"d{i}" for i in range(len(texts))]
    path = tmp_path / "index.npz"
    first = RayMinHashDeduper(path=path, owner="run1")
    first.commit(first.dedup(texts[:120], ids[:120]).kept)  # the store, written by Ray's commit

    # The next run sees the store: texts near stored ones are dropped first, as locally;
    # a text stored by this owner under its own id is not its own duplicate.
    later_texts, later_ids = texts[100:], ids[100:]
    local = MinHashDeduper(path=path, owner="run1").dedup(later_texts, later_ids)
    distributed = RayMinHashDeduper(path=path, owner="run1").dedup(later_texts, later_ids)
    _assert_same(local, distributed)
    only_stored = set(ids[:100])  # not in this call: a match there comes from the store
    assert any(
        not k and n in only_stored for k, n in zip(local.kept, local.nearest_id, strict=True)
    )


def test_empty_input(local_ray: None, tmp_path: Path) -> None:
    deduper = RayMinHashDeduper(path=tmp_path / "index.npz")
    verdicts = deduper.dedup([], [])
    assert verdicts.kept.tolist() == [] and verdicts.candidates == 0
    deduper.commit(verdicts.kept)
    assert len(MinHashDeduper(path=tmp_path / "index.npz").index) == 0


def test_cli_executor_ray_writes_what_local_writes(local_ray: None, tmp_path: Path) -> None:
    texts = _texts(3, 100)
    source = tmp_path / "in.jsonl"
    write_records([{"id": f"r{i}", "text": t} for i, t in enumerate(texts)], source)
    written: dict[str, tuple[str, str]] = {}
    for executor in ("thread", "ray"):
        out = tmp_path / f"{executor}.jsonl"
        options = ["--method", "minhash", "--namespace", executor, "--executor", executor]
        result = CliRunner().invoke(
            app, ["dedup", str(source), "-f", "text", "-o", str(out), *options]
        )
        assert result.exit_code == 0, result.output
        written[executor] = (out.read_text(), dropped_path(out).read_text())
    assert written["ray"] == written["thread"]
    assert written["ray"][1]  # some were dropped
