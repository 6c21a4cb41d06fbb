"""Issue 16: the MinHash index in Redis (`SYNTHGRAPH_MINHASH_URL`) for many writers, against a
real redis-server: the file store's verdicts, memory across runs, and writers at once."""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pytest
from redis_server import redis_server

from synthgraph.tools import minhash_store
from synthgraph.tools.dedup import DedupService
from synthgraph.tools.minhash import (
    IndexMismatchError,
    MinHashDeduper,
    MinHashVerdicts,
    Verify,
    choose_bands,
    jaccard,
    tokenize,
)
from synthgraph.tools.minhash_store import MinHashStoreError, RedisMinHashStore

PASSWORD = "not-for-messages"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as url:
        yield url


def texts(prefix: str, count: int, seed: int, words: int = 30) -> list[str]:
    """`count` distinct texts of `words` words (random words of 20,000: no two near each other)."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20_000)]
    return [" ".join([f"{prefix}{i}", *rng.sample(vocabulary, words - 1)]) for i in range(count)]


def near(text: str, position: int = -1, word: str = "changed") -> str:
    """One word changed: Jaccard 29/31 = 0.935 with a 30-word `text`, 59/61 with 60."""
    words = text.split()
    words[position] = word
    return " ".join(words)


def batches() -> list[tuple[list[str], list[str]]]:
    """Three runs: new texts with copies and near copies inside and across runs, then a rerun."""
    base = texts("t", 300, seed=1)
    # Two kept texts (28/32 = 0.875 apart) equally near base[290] of the second run: a tie.
    tie = [near(base[290], 1, "a"), near(base[290], 2, "b")]
    first = base[:150] + [near(t) for t in base[:30]] + tie + ["", "!!"]  # "!!": no words
    second = base[150:] + [near(t) for t in base[100:200]] + base[:20] + [base[160].upper()]
    third = second
    return [
        (run, [f"r{k}-{i}" for i in range(len(run))])
        for k, run in enumerate((first, second, third))
    ]


def same(a: MinHashVerdicts, b: MinHashVerdicts) -> None:
    assert a.kept.tolist() == b.kept.tolist()
    assert a.has_tokens.tolist() == b.has_tokens.tolist()
    assert a.nearest_id == b.nearest_id
    np.testing.assert_array_equal(a.score, b.score)  # NaN where both had no candidate
    assert a.candidates == b.candidates


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_redis_gives_the_file_stores_verdicts_run_after_run(
    redis_url: str, tmp_path: Path, verify: Verify
) -> None:
    for number, (run, ids) in enumerate(batches()):
        on_file = MinHashDeduper(0.9, verify=verify, path=tmp_path / "index.npz")
        expected = on_file.dedup(run, ids)
        on_file.commit(expected.kept)
        store = RedisMinHashStore(redis_url, "same")  # each run a new client, as a new process
        with store.lock():
            in_redis = MinHashDeduper(0.9, verify=verify, store=store)
            verdicts = in_redis.dedup(run, ids)
            in_redis.commit(verdicts.kept)
        same(verdicts, expected)
        assert len(store) == len(on_file.index)
        if number == 1 and verify == "exact":  # it meets the first run's texts: stores were read
            assert not verdicts.kept[150:].any() and np.flatnonzero(~verdicts.kept[:150]) == [140]
            # the tie goes to the match stored last, in both stores
            assert verdicts.nearest_id[140] == "r0-181" and verdicts.score[140] == 29 / 31
    assert not verdicts.kept.any(), "a rerun keeps nothing"


def test_the_memory_outlives_each_client_and_knows_its_owners(redis_url: str) -> None:
    run = texts("m", 50, seed=2)
    ids = [f"m{i}" for i in range(len(run))]

    def once(owner: str | None, remember: bool = True) -> MinHashVerdicts:
        store = RedisMinHashStore(redis_url, "memory")
        with store.lock():
            deduper = MinHashDeduper(0.9, owner=owner, store=store)
            verdicts = deduper.dedup(run, ids)
            if remember:
                deduper.commit(verdicts.kept)
        return verdicts

    assert once("run-1").kept.all()
    # the same owner's own entries are the records themselves: a resumed run keeps them again
    assert once("run-1").kept.all()
    for other in ("run-2", None):  # anyone else finds each one stored, under its own id
        verdicts = once(other, remember=False)
        assert not verdicts.kept.any() and verdicts.nearest_id == ids
    # another namespace on the same server is another memory
    other_namespace = RedisMinHashStore(redis_url, "elsewhere")
    with other_namespace.lock():
        assert MinHashDeduper(0.9, store=other_namespace).dedup(run, ids).kept.all()


def test_a_store_built_with_other_settings_is_refused(redis_url: str) -> None:
    store = RedisMinHashStore(redis_url, "params")
    with store.lock():
        deduper = MinHashDeduper(0.9, store=store)
        deduper.commit(deduper.dedup(["one two three"], ["x"]).kept)
    with pytest.raises(
        IndexMismatchError,
        match=r"built with \(bands, rows, num_perm, seed\) = \(12, 10, 128, 1\), not",
    ):
        MinHashDeduper(0.8, store=RedisMinHashStore(redis_url, "params"))


def test_writes_need_the_lock_and_a_writer_that_lost_it_stores_nothing(redis_url: str) -> None:
    run = texts("l", 20, seed=3)
    ids = [f"l{i}" for i in range(len(run))]
    store = RedisMinHashStore(redis_url, "fenced")
    deduper = MinHashDeduper(0.9, store=store)
    with pytest.raises(MinHashStoreError, match="needs its lock"):
        deduper.commit(deduper.dedup(run, ids).kept)
    with store.lock():
        verdicts = deduper.dedup(run, ids)
        # the lock expired during a long pause, and another writer took it
        store._client.set(store._key("lock"), b"another writer's token")
        with pytest.raises(MinHashStoreError, match="lost the lock"):
            deduper.commit(verdicts.kept)
    assert len(store) == 0
    assert store._client.get(store._key("lock")) == b"another writer's token", "theirs, untouched"
    store._client.delete(store._key("lock"))
    with store.lock():  # what the lost writer wrote past the count is invisible, then replaced
        again = MinHashDeduper(0.9, store=store)
        verdicts = again.dedup(run, ids)
        assert verdicts.kept.all() and verdicts.candidates == 0
        again.commit(verdicts.kept)
    assert len(store) == 20


def test_a_live_writer_keeps_its_lock_past_the_expiry(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(minhash_store, "LOCK_SECONDS", 1.0)
    run = texts("k", 20, seed=7)
    store, other = RedisMinHashStore(redis_url, "renewed"), RedisMinHashStore(redis_url, "renewed")
    with store.lock():
        deduper = MinHashDeduper(0.9, store=store)
        verdicts = deduper.dedup(run, [f"k{i}" for i in range(len(run))])
        time.sleep(2.5)  # a long batch: past the expiry, the renewals keep the lock
        assert not other._client.lock(other._key("lock")).acquire(blocking=False)
        deduper.commit(verdicts.kept)
    assert len(store) == 20
    with other.lock():  # released at the end
        assert len(other) == 20


def test_an_unreachable_store_is_one_clear_error_without_its_password(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis", password="the-right-one") as url,
        pytest.raises(MinHashStoreError) as raised,
    ):
        RedisMinHashStore(url.replace("the-right-one", PASSWORD), "x")
    message = str(raised.value)
    assert message.startswith("the MinHash store at redis://127.0.0.1:")
    assert "SYNTHGRAPH_MINHASH_URL" in message and PASSWORD not in message


def test_the_service_keeps_its_memory_in_redis_and_reset_forgets_it(
    redis_url: str, isolated_settings: Path
) -> None:
    records = [{"id": f"s{i}", "text": t} for i, t in enumerate(texts("s", 40, seed=4))]

    def service() -> DedupService:
        return DedupService("served", method="minhash", minhash_url=redis_url)

    assert len(service().dedup(records, field="text").kept) == 40
    assert service().dedup(records, field="text").kept == []
    assert not (isolated_settings / "dedup").exists(), "Redis holds the index, not a file"
    service().reset()
    assert len(service().dedup(records, field="text").kept) == 40


# --- two writers at once -------------------------------------------------------------------


def _writer(url: str, data_dir: str, name: str, run: list[str], ready: Barrier) -> None:
    """One process: dedups `run` in batches of 10 into the namespace `shared`."""
    service = DedupService("shared", method="minhash", minhash_url=url, data_dir=Path(data_dir))
    ready.wait()  # both processes started: they write at once
    for first in range(0, len(run), 10):
        batch = [
            {"id": f"{name}{first + i}", "text": t} for i, t in enumerate(run[first : first + 10])
        ]
        service.dedup(batch, field="text")
        time.sleep(0.05)  # the job's other work between two batches: the other writer's turn


def test_two_processes_deduping_overlapping_texts_at_once_keep_no_near_duplicates(
    redis_url: str, tmp_path: Path
) -> None:
    # Each base text has a near copy (J = 0.967); one process gets the bases, the other the
    # copies in another order, so both judge each pair's two halves at about the same time.
    bases = texts("p", 300, seed=5, words=60)
    copies = [near(t) for t in bases]
    random.Random(6).shuffle(copies)
    alone = MinHashDeduper(0.9).dedup(bases + copies, [str(i) for i in range(600)])
    assert alone.kept.sum() == 300, "one process alone finds every pair (no LSH miss)"
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(2)
    writers = [
        spawn.Process(target=_writer, args=(redis_url, str(tmp_path), name, run, ready))
        for name, run in (("a", bases), ("b", copies))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
        assert writer.exitcode == 0

    store = RedisMinHashStore(redis_url, "shared").open(*choose_bands(0.9), 128, 1)
    kept_ids = store.documents(np.arange(len(store))).ids
    by_id = {f"a{i}": t for i, t in enumerate(bases)} | {f"b{i}": t for i, t in enumerate(copies)}
    kept = [tokenize(by_id[i]) for i in kept_ids]
    assert {i[0] for i in kept_ids} == {"a", "b"}, "both processes kept texts"
    near_pairs = [(a, b) for a, b in itertools.combinations(kept, 2) if jaccard(a, b) >= 0.9]
    assert near_pairs == []
    assert len(kept) == 300, "one text of each pair"
