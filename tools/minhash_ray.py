"""MinHash dedup on Ray Data: the local deduper's verdicts, its heavy stages on a cluster.

`RayMinHashDeduper` is a `MinHashDeduper` whose three array stages (the `_sign`,
`_batch_pairs` and `_score` hooks) run as Ray Data jobs; the rest is the local
`dedup`, so the verdicts (kept, nearest id, score) equal the local ones on the same
input and threshold by construction, and `commit` stores the kept texts as locally:

1. signatures → band keys: `map_batches` tokenises and signs blocks of texts;
2. earlier runs: the local check against the persistent index (`lookup` on the
   driver), the pairs it finds scored as in 4; a text near a stored one is dropped
   before anything below, as locally;
3. group by band → candidate pairs: one block per band (the blocks are the groups;
   a Ray Data groupby would shuffle what is already grouped, ~10x slower), each
   paired by the local rule on that band alone, so buckets larger than the local
   per-bucket limit give the same pairs; the driver merges the bands, each pair once;
4. exact-Jaccard check: `map_batches` over blocks of pairs runs the local scoring
   (signature estimate, then exact Jaccard of the token sets), with the signatures
   and token hashes put in the object store once;
5. the verdict: the local greedy pass over the verified pairs, on the driver.

Why not "connected components, one kept per component": the local rule is greedy
keep-first in input order, which differs. In a chain A~B~C with A≁C it keeps A and
C (B goes as a near copy of A, so nothing kept is near C), where one per component
keeps A alone. Running the greedy pass inside each component would give the local
verdicts too, but the pass is one loop over the verified pairs (under 0.1 s of a
100k-persona run), so splitting it by component would only add a stage.

The driver holds the signatures and token hashes (~0.6 KB per text) and the pairs;
the workers tokenise, sign, pair and score.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from synthgraph.tools.minhash import MinHashDeduper, PairSide, _unique

_SIGN_ROWS = 10_000  # texts per signing block
_SCORE_ROWS = 1 << 16  # pairs per scoring block (the local `_score` chunk)
# What the workers need of a deduper: its MinHash parameters, not the index.
_WORKER_STATE = ("threshold", "verify", "hasher", "bands", "rows")


def _dataset(columns: dict[str, np.ndarray | pa.Array], rows_per_block: int) -> Any:
    """A Ray Dataset of these columns, in blocks of `rows_per_block` rows."""
    table = pa.table(columns)
    step = max(1, rows_per_block)
    return ray.data.from_arrow(
        [table.slice(start, step) for start in range(0, max(len(table), 1), step)]
    )


def _collect(dataset: Any) -> pa.Table:
    """All rows of a dataset on the driver, as one table."""
    tables = ray.get(dataset.to_arrow_refs())
    return pa.concat_tables(tables).combine_chunks() if tables else pa.table({})


class RayMinHashDeduper(MinHashDeduper):
    """`MinHashDeduper` with signing, candidate pairing and scoring on Ray Data.

    Same arguments, verdicts and `commit` as the local deduper; call `synthgraph.tools.ray_support.init_ray` first.
    `block_rows` sets the texts per signing block (small values help tests).
    """

    def __init__(self, *args: Any, block_rows: int = _SIGN_ROWS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_rows = block_rows

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to every worker: the parameters only, never the (large) index.
        return {name: self.__dict__[name] for name in _WORKER_STATE}

    def _sign(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Band keys, token hashes, offsets and signatures, made by `map_batches` in blocks."""
        if not texts:
            return super()._sign(texts)

        def sign(batch: pa.Table) -> pa.Table:
            keys, tokens, offsets, sigs = MinHashDeduper._sign(self, batch["text"].to_pylist())
            return pa.table(
                {
                    "row": batch["row"],
                    "keys": pa.FixedSizeListArray.from_arrays(keys.ravel(), keys.shape[1]),
                    "sigs": pa.FixedSizeListArray.from_arrays(sigs.ravel(), sigs.shape[1]),
                    "tokens": pa.LargeListArray.from_arrays(offsets, tokens),
                }
            )

        texts_table = {"row": np.arange(len(texts)), "text": pa.array(texts, pa.large_string())}
        signed = _collect(
            _dataset(texts_table, self.block_rows).map_batches(sign, batch_format="pyarrow")
        ).sort_by("row")  # blocks finish in any order
        n = len(texts)
        lengths = pc.list_value_length(signed["tokens"]).to_numpy(zero_copy_only=False)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return (
            signed["keys"].combine_chunks().flatten().to_numpy().reshape(n, self.bands),
            signed["tokens"].combine_chunks().flatten().to_numpy().astype(np.uint64),
            offsets,
            signed["sigs"].combine_chunks().flatten().to_numpy().reshape(n, -1),
        )

    def _batch_pairs(self, keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (later, earlier) of `docs` sharing a band key, each once: one Ray block per band."""
        if not len(docs):
            return super()._batch_pairs(keys, docs)
        n = np.int64(len(keys))

        def pair(block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            one_band = copy.copy(self)  # the local pairing, on one band at a time
            one_band.bands = 1
            found = [np.zeros(0, np.int64)]
            for band in np.unique(block["band"]):
                mine = block["band"] == band
                rows = block["row"][mine]  # in input order, as the local pairing wants
                later, earlier = MinHashDeduper._batch_pairs(
                    one_band, block["key"][mine][:, None], np.arange(len(rows))
                )
                found.append(rows[later] * n + rows[earlier])
            return {"pair": np.concatenate(found)}

        bands = {
            "band": np.repeat(np.arange(self.bands), len(docs)),
            "row": np.tile(docs, self.bands),
            "key": keys[docs].T.ravel(),
        }
        # The blocks are the groups: one band each, and a batch is a whole block. (Ray
        # Data's groupby would shuffle what is already grouped, ~10x slower here.)
        pairs = _collect(
            _dataset(bands, len(docs)).map_batches(pair, batch_size=None, batch_format="numpy")
        )
        packed = _unique(pairs["pair"].to_numpy()) if len(pairs) else np.zeros(0, np.int64)
        return packed // n, packed % n

    def _score(self, a: PairSide, b: PairSide) -> np.ndarray:
        """The local `_score`, on blocks of pairs in `map_batches`."""
        if not len(a.rows):
            return super()._score(a, b)
        shared = ray.put((a.sigs, b.sigs, a.tokens, b.tokens))

        def score(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            sa, sb, ta, tb = ray.get(shared)
            block_a, block_b = PairSide(sa, batch["a"], ta), PairSide(sb, batch["b"], tb)
            scores = MinHashDeduper._score(self, block_a, block_b)
            return {"position": batch["position"], "score": scores}

        pairs = {"position": np.arange(len(a.rows)), "a": a.rows, "b": b.rows}
        scored = _collect(_dataset(pairs, _SCORE_ROWS).map_batches(score, batch_format="numpy"))
        scores = np.empty(len(a.rows))
        scores[scored["position"].to_numpy()] = scored["score"].to_numpy(zero_copy_only=False)
        return scores
