"""Vectorised MinHash over word 1-grams, and a persistent LSH band index.

Why our own MinHash instead of datasketch's per-document `MinHash.update`: that
updates one token at a time in Python; here a whole batch is tokenised by
Arrow, each distinct token is hashed once, the 128 permutations are applied to
the vocabulary in one numpy expression and per-document minima come from one
gather. Signatures are not interchangeable with datasketch's (different token
hash and permutation family), but they estimate the same Jaccard similarity;
the tests and `benchmarks/dedup.py` check that against datasketch.

Band choice: datasketch's `MinHashLSH(threshold=0.9)` picks 5 bands × 25 rows,
which makes only ~31% of pairs at Jaccard 0.9 candidates. `choose_bands`
instead picks the narrowest bands whose S-curve still finds `min_recall` of the
pairs at the threshold, and candidates are then verified, by exact Jaccard of
the token sets (default) or by the share of equal signature values.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUM_PERM = 128
Verify = Literal["exact", "signature"]

_U32_MAX = np.uint32(0xFFFFFFFF)
_SEP = "\x01"  # joins a batch into one string; never a word character
_WORD = re.compile(r"\w+")
_NON_WORD = re.compile(r"[^\w\x01]+")
# Fast path: keep [0-9a-z_], the separator and non-ASCII bytes, blank the rest.
# Same tokens as `\w+` for ASCII text, ~30x faster than re.sub.
_ASCII_TABLE = bytes(
    c if c == 1 or c >= 128 or chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(256)
)
_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for the band-key polynomial
_GATHER_BUDGET = 16_384  # tokens per signature chunk: 16k × 128 × 4 B = 8 MB, cache-sized
_TOKENIZE_CHUNK = 100_000  # documents per Arrow batch (bounds the joined string)
_BUCKET_PAIRS = 32  # see MinHashDeduper._batch_pairs


def tokenize(text: str) -> set[str]:
    """Reference tokeniser: the set of lower-cased `\\w+` words (the fast path matches it)."""
    return set(_WORD.findall(text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity of two sets (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def token_hash(token: str) -> int:
    """Stable 64-bit hash of one token (the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


# --- LSH parameters -----------------------------------------------------------


def lsh_recall(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard shares at least one band (the S-curve)."""
    return float(1.0 - (1.0 - similarity**rows) ** bands)


def choose_bands(
    threshold: float, num_perm: int = NUM_PERM, min_recall: float = 0.99
) -> tuple[int, int]:
    """(bands, rows) with the most rows per band whose recall at `threshold` is ≥ `min_recall`.

    More rows per band means fewer false candidates to verify; fewer means
    higher recall. For 128 permutations and 0.9 this gives 12 × 10: recall
    0.994 at J = 0.9 and 0.9989 at 0.92, while a pair at J = 0.5 becomes a
    candidate with probability 0.012 (14 × 9 would find 0.999 at 0.9 but make
    three times more loose candidates on templated personas).
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if lsh_recall(threshold, bands, rows) >= min_recall:
            best = (bands, rows)
    return best


# --- tokens and signatures -------------------------------------------------------


@dataclass
class TokenBatch:
    """Tokens of a batch: `vocab[codes[offsets[i]:offsets[i + 1]]]` are document i's token hashes."""

    vocab: np.ndarray  # uint64, one hash per distinct token
    codes: np.ndarray  # int32, every token occurrence in document order
    offsets: np.ndarray  # int64, n + 1

    @property
    def hashes(self) -> np.ndarray:
        return self.vocab[self.codes]


def tokenize_batch(texts: Sequence[str]) -> TokenBatch:
    """Tokenise many texts at once (lower-cased `\\w+` words, like `tokenize`)."""
    if not texts:
        return TokenBatch(np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(1, np.int64))
    big = _SEP.join(texts)
    if big.count(_SEP) != len(texts) - 1:  # a text contains the separator itself
        big = _SEP.join(t.replace(_SEP, " ") for t in texts)
    big = big.lower()
    if not big.isascii():  # the regex only for the texts that need it
        big = _SEP.join(t if t.isascii() else _NON_WORD.sub(" ", t) for t in big.split(_SEP))
    # Blank ASCII non-word bytes; bytes ≥ 128 (UTF-8 of words the regex kept) pass.
    big = big.encode("utf-8").translate(_ASCII_TABLE).decode("utf-8")
    docs = pa.array(big.split(_SEP), type=pa.large_string())
    # Only ASCII spaces separate words by now (the regex blanked Unicode ones).
    lists = pc.ascii_split_whitespace(docs)
    # Arrow keeps the empty strings around leading/trailing blanks: drop them.
    words = lists.flatten()
    real = pc.not_equal(words, "")
    owner = pc.filter(pc.list_parent_indices(lists), real).to_numpy()
    encoded = pc.dictionary_encode(pc.filter(words, real))
    vocab = np.fromiter(
        (token_hash(t) for t in encoded.dictionary.to_pylist()),
        dtype=np.uint64,
        count=len(encoded.dictionary),
    )
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=len(texts)), out=offsets[1:])
    return TokenBatch(vocab=vocab, codes=codes, offsets=offsets)


class MinHasher:
    """`num_perm` hash permutations `((a·x + b) mod 2^64) >> 32` of 64-bit token hashes."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        a, b = rng.integers(0, 2**64, size=(2, num_perm), dtype=np.uint64, endpoint=False)
        self.a = a | np.uint64(1)  # odd: a bijection mod 2**64
        self.b = b

    def permute(self, hashes: np.ndarray) -> np.ndarray:
        """(len(hashes), num_perm) uint32: each hash under each permutation."""
        return ((hashes[:, None] * self.a + self.b) >> np.uint64(32)).astype(np.uint32)

    def signatures(self, batch: TokenBatch) -> np.ndarray:
        """(n, num_perm) uint32 signatures; a document without tokens gets all 0xFFFFFFFF."""
        offsets = batch.offsets
        n = len(offsets) - 1
        lengths = np.diff(offsets)
        # Permute the vocabulary once, not every occurrence; the extra last row
        # is the padding value, so padded slots never win a minimum.
        table = np.vstack([self.permute(batch.vocab), np.full((1, self.num_perm), _U32_MAX)])
        pad_code = len(batch.vocab)
        out = np.full((n, self.num_perm), _U32_MAX, dtype=np.uint32)
        # Documents sorted by length and padded per chunk: one gather + min per
        # chunk, with little padding even when lengths vary a lot.
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        pos = 0
        while pos < len(order):
            longest = int(lengths[order[min(pos + 256, len(order)) - 1]])
            count = max(1, min(256, _GATHER_BUDGET // longest))
            docs = order[pos : pos + count]
            width = int(lengths[docs[-1]])
            columns = np.arange(width)
            mask = columns < lengths[docs][:, None]
            padded = np.full((len(docs), width), pad_code, dtype=np.int64)
            padded[mask] = batch.codes[(offsets[docs][:, None] + columns)[mask]]
            out[docs] = table[padded].min(axis=1)
            pos += count
        return out

    def signatures_of_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures from stored token hashes (for documents of earlier runs)."""
        vocab, codes = np.unique(hashes, return_inverse=True)
        return self.signatures(
            TokenBatch(vocab=vocab, codes=codes.astype(np.int32), offsets=offsets)
        )


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one key per band, a polynomial hash of its `rows` values."""
    grid = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    for row in range(rows):  # row by row: no (n, bands, rows) uint64 temporary
        keys *= _BAND_MIX
        keys += grid[:, :, row]
    return keys


# --- exact and estimated similarity of many pairs ---------------------------------


def _gather(
    values: np.ndarray, offsets: np.ndarray, docs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated segments `values[offsets[d]:offsets[d + 1]]` for each d, and their lengths."""
    starts = offsets[docs]
    lengths = offsets[docs + 1] - starts
    total = int(lengths.sum())
    # position of each output element inside its segment, plus its segment start
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[np.repeat(starts, lengths) + within], lengths


def pair_jaccard(
    tokens_a: np.ndarray,
    offsets_a: np.ndarray,
    docs_a: np.ndarray,
    tokens_b: np.ndarray,
    offsets_b: np.ndarray,
    docs_b: np.ndarray,
) -> np.ndarray:
    """Exact Jaccard of token-hash sets for pairs (docs_a[k], docs_b[k]); duplicates ignored."""
    pairs = len(docs_a)
    if pairs == 0:
        return np.zeros(0)
    values_a, lengths_a = _gather(tokens_a, offsets_a, docs_a)
    values_b, lengths_b = _gather(tokens_b, offsets_b, docs_b)
    vocab, codes = np.unique(np.concatenate([values_a, values_b]), return_inverse=True)
    width = np.int64(len(vocab))
    pair_a = np.repeat(np.arange(pairs, dtype=np.int64), lengths_a)
    pair_b = np.repeat(np.arange(pairs, dtype=np.int64), lengths_b)
    set_a = _unique(pair_a * width + codes[: len(values_a)])
    set_b = _unique(pair_b * width + codes[len(values_a) :])
    both = np.intersect1d(set_a, set_b, assume_unique=True)
    size_a = np.bincount(set_a // width, minlength=pairs)
    size_b = np.bincount(set_b // width, minlength=pairs)
    inter = np.bincount(both // width, minlength=pairs)
    union = size_a + size_b - inter
    return np.divide(inter, union, out=np.zeros(pairs), where=union > 0)


def signature_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard: the share of equal values, row by row."""
    return (sig_a == sig_b).mean(axis=-1)


# --- the persistent index -------------------------------------------------------------


class IndexMismatchError(ValueError):
    """A stored index was built with other MinHash parameters."""


@dataclass
class StoredDocuments:
    """Some stored documents: ids, owners, and token hashes `tokens[offsets[i]:offsets[i + 1]]`."""

    ids: list[str]
    owners: list[str]
    tokens: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(ids) + 1


@dataclass(frozen=True)
class PairSide:
    """One side of a batch of candidate pairs: pair k joins row `rows[k]` of this side's
    signatures and token sets (`tokens` = hashes, offsets) with the other side's."""

    sigs: np.ndarray
    rows: np.ndarray
    tokens: tuple[np.ndarray, np.ndarray]


class BandIndex(Protocol):
    """What `MinHashDeduper` needs of the kept documents of earlier runs.

    Documents are numbered 0, 1, ... in the order they were added, in every
    backend, so ties between equally close matches go the same way in each.
    """

    def __len__(self) -> int: ...

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (query row, stored document) sharing at least one band key, each once."""
        ...

    def documents(self, docs: np.ndarray) -> StoredDocuments:
        """The stored documents numbered `docs`, in that order (what scoring reads)."""
        ...

    def add(self, documents: StoredDocuments, keys: np.ndarray) -> None:
        """Store documents with their band keys (all or none, for a persistent backend)."""
        ...


class MinHashStore(Protocol):
    """Where one namespace's index persists, and the lock its writers take.

    A writer holds `lock()` from opening the index, through judging, to adding
    what it kept, so concurrent writers never both keep near-duplicates.
    Readers that add nothing may ask for a `shared` lock (a backend may give
    them an exclusive one).
    """

    def lock(self, shared: bool = False) -> AbstractContextManager[None]: ...

    def open(self, bands: int, rows: int, num_perm: int, seed: int) -> BandIndex:
        """The index, created if missing; `IndexMismatchError` if built with other parameters."""
        ...

    def reset(self) -> None:
        """Forget every stored document (call it holding the lock)."""
        ...


class MinHashIndex:
    """Kept documents of earlier runs, in memory (and in an .npz file when loaded from one).

    Token hashes (not signatures) are stored: they are smaller (~20 words vs
    128 values per persona), allow exact verification, and signatures can be
    recomputed from them. An owner is whoever stored the document ("" for none),
    see `MinHashDeduper`.
    """

    def __init__(self, bands: int, rows: int, num_perm: int, seed: int) -> None:
        self.params = np.array([bands, rows, num_perm, seed], dtype=np.int64)
        self.path: Path | None = None  # set by `load`: `add` saves there
        self.ids: list[str] = []
        self.owners: list[str] = []
        self.keys = np.zeros((0, bands), dtype=np.uint64)
        self.tokens = np.zeros(0, dtype=np.uint64)
        self.offsets = np.zeros(1, dtype=np.int64)
        self._sorted: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, documents: StoredDocuments, keys: np.ndarray) -> None:
        self.ids.extend(documents.ids)
        self.owners.extend(documents.owners)
        self.keys = np.concatenate([self.keys, keys])
        self.tokens = np.concatenate([self.tokens, documents.tokens])
        self.offsets = np.concatenate([self.offsets, documents.offsets[1:] + self.offsets[-1]])
        self._sorted = None
        if self.path:
            self.save(self.path)

    def documents(self, docs: np.ndarray) -> StoredDocuments:
        values, lengths = _gather(self.tokens, self.offsets, docs)
        return StoredDocuments(
            ids=[self.ids[d] for d in docs.tolist()],
            owners=[self.owners[d] for d in docs.tolist()],
            tokens=values,
            offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        )

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (query row, stored document) sharing at least one band key, each once."""
        if not len(self) or not len(keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self._sorted is None:
            self._sorted = []
            for band in range(self.keys.shape[1]):
                order = np.argsort(self.keys[:, band], kind="stable")
                self._sorted.append((self.keys[order, band], order))
        found_q: list[np.ndarray] = []
        found_d: list[np.ndarray] = []
        for band, (sorted_keys, order) in enumerate(self._sorted):
            lo = np.searchsorted(sorted_keys, keys[:, band], side="left")
            hi = np.searchsorted(sorted_keys, keys[:, band], side="right")
            counts = hi - lo
            if not counts.any():
                continue
            query = np.repeat(np.arange(len(keys)), counts)
            within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            found_q.append(query)
            found_d.append(order[np.repeat(lo, counts) + within])
        if not found_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        packed = _unique(np.concatenate(found_q) * np.int64(len(self)) + np.concatenate(found_d))
        return packed // len(self), packed % len(self)

    def save(self, path: Path) -> None:
        """Write atomically (a killed run leaves the previous index intact)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            params=self.params,
            ids=np.array(self.ids, dtype=np.str_),
            owners=np.array(self.owners, dtype=np.str_),
            keys=self.keys,
            tokens=self.tokens,
            offsets=self.offsets,
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, bands: int, rows: int, num_perm: int, seed: int) -> MinHashIndex:
        index = cls(bands, rows, num_perm, seed)
        index.path = path
        if not path.exists():
            return index
        with np.load(path) as stored:
            if not np.array_equal(stored["params"], index.params):
                raise IndexMismatchError(
                    f"{path} was built with (bands, rows, num_perm, seed) = {stored['params'].tolist()}, "
                    f"not {index.params.tolist()}; use the same settings or reset the namespace"
                )
            index.ids = stored["ids"].tolist()
            # Files written before owners existed: nobody owns their documents.
            index.owners = (
                stored["owners"].tolist() if "owners" in stored.files else [""] * len(index.ids)
            )
            index.keys = stored["keys"]
            index.tokens = stored["tokens"]
            index.offsets = stored["offsets"]
        return index


# --- the MinHash stage ------------------------------------------------------------------


@dataclass
class MinHashVerdicts:
    """Per input document: kept or not, and its nearest verified match (if any)."""

    kept: np.ndarray  # bool
    has_tokens: np.ndarray  # bool; documents without words are never judged here
    nearest_id: list[str | None]
    score: np.ndarray  # float, NaN where no candidate was verified
    candidates: int  # candidate pairs verified (a cost figure for benchmarks)


class MinHashDeduper:
    """Stage 1: drop documents whose Jaccard with a kept one is ≥ threshold.

    `dedup` compares each document with the stored index (earlier runs) and
    with the documents kept before it in the same call; `commit` stores the
    kept ones so later runs see them.

    With an `owner` (e.g. a run id), a document is never a duplicate of an entry
    that owner stored under the document's own id: that entry is the document
    itself, committed by an attempt killed before its caller wrote the verdict.

    The index of earlier runs is in memory (neither `path` nor `store`), in an
    .npz file (`path`), or in a `store` (see `synthgraph.tools.minhash_store`;
    hold its lock from building the deduper to `commit`).
    """

    def __init__(
        self,
        threshold: float = 0.9,
        num_perm: int = NUM_PERM,
        bands: tuple[int, int] | None = None,
        verify: Verify = "exact",
        seed: int = 1,
        path: Path | None = None,
        owner: str | None = None,
        store: MinHashStore | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if path and store is not None:
            raise ValueError("give the index a path or a store, not both")
        self.threshold = threshold
        self.verify = verify
        self.owner = owner or ""
        self.hasher = MinHasher(num_perm, seed)
        self.bands, self.rows = bands or choose_bands(threshold, num_perm)
        self.index: BandIndex
        if store is not None:
            self.index = store.open(self.bands, self.rows, num_perm, seed)
        elif path:
            self.index = MinHashIndex.load(path, self.bands, self.rows, num_perm, seed)
        else:
            self.index = MinHashIndex(self.bands, self.rows, num_perm, seed)
        self._pending: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None

    def _sign(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Band keys, token hashes, offsets and signatures of a batch."""
        n = len(texts)
        keys = np.empty((n, self.bands), np.uint64)
        sigs = np.empty((n, self.hasher.num_perm), np.uint32)
        offsets = np.zeros(n + 1, np.int64)
        tokens: list[np.ndarray] = [np.zeros(0, np.uint64)]
        for start in range(0, n, _TOKENIZE_CHUNK):
            stop = min(start + _TOKENIZE_CHUNK, n)
            batch = tokenize_batch(texts[start:stop])
            sigs[start:stop] = self.hasher.signatures(batch)
            keys[start:stop] = band_keys(sigs[start:stop], self.bands, self.rows)
            tokens.append(batch.hashes)
            offsets[start + 1 : stop + 1] = batch.offsets[1:] + offsets[start]
        return keys, np.concatenate(tokens), offsets, sigs

    def _batch_pairs(self, keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (later, earlier) of `docs` sharing a band key, each once.

        In a bucket, each member is paired with the first `_BUCKET_PAIRS` and the
        previous `_BUCKET_PAIRS` members: all pairs in the usual small buckets,
        and linear (not quadratic) work for a bucket of thousands of copies, whose
        first member is the kept one.
        """
        n = np.int64(len(keys))
        packed: list[np.ndarray] = []
        for band in range(self.bands):
            column = keys[docs, band]
            order = np.argsort(column, kind="stable")  # stable: bucket order = input order
            ranked = column[order]
            position = np.arange(len(ranked))
            first = np.maximum.accumulate(
                np.where(np.r_[True, ranked[1:] != ranked[:-1]], position, 0)
            )
            members = np.flatnonzero(position > first)
            rank = position[members] - first[members]
            head = np.minimum(rank, _BUCKET_PAIRS)  # partners at ranks 0 .. head-1
            tail_from = np.maximum(_BUCKET_PAIRS, rank - _BUCKET_PAIRS)
            tail = np.maximum(rank - tail_from, 0)  # partners at ranks tail_from .. rank-1
            later = np.concatenate([np.repeat(members, head), np.repeat(members, tail)])
            earlier = np.concatenate(
                [
                    np.repeat(first[members], head) + _ranges(head),
                    np.repeat(first[members] + tail_from, tail) + _ranges(tail),
                ]
            )
            packed.append(docs[order[later]] * n + docs[order[earlier]])
        if not packed:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        unique = _unique(np.concatenate(packed))
        return unique // n, unique % n

    def _score(self, a: PairSide, b: PairSide) -> np.ndarray:
        """Similarity of pairs (a.rows[k], b.rows[k]); NaN where the signature estimate rules one out.

        The estimate (share of equal values) is cheap; exact Jaccard is computed
        only for pairs whose estimate is within ~6 standard deviations of the
        threshold, so data with many loose candidates (templated text) stays fast.
        Work goes in chunks so millions of candidates need little memory.
        """
        t = self.threshold
        floor = t - 6.0 * np.sqrt(t * (1.0 - t) / self.hasher.num_perm) - 0.02
        scores = np.full(len(a.rows), np.nan)
        step = 1 << 16  # 64k pairs: 2 × 32 MB of gathered signatures
        for start in range(0, len(a.rows), step):
            rows_a, rows_b = a.rows[start : start + step], b.rows[start : start + step]
            estimate = signature_similarity(a.sigs[rows_a], b.sigs[rows_b])
            if self.verify == "signature":
                scores[start : start + len(rows_a)] = estimate
                continue
            close = np.flatnonzero(estimate >= floor)
            scores[start + close] = pair_jaccard(*a.tokens, rows_a[close], *b.tokens, rows_b[close])
        return scores

    def dedup(self, texts: Sequence[str], ids: Sequence[str]) -> MinHashVerdicts:
        n = len(texts)
        keys, tokens, offsets, sigs = self._sign(texts)
        has_tokens = np.diff(offsets) > 0
        kept = np.ones(n, dtype=bool)
        best = np.full(n, np.nan)
        nearest: list[str | None] = [None] * n

        # 1. Earlier runs: every stored document is a kept one, so one vectorised pass.
        query, stored = self.index.lookup(keys)
        ok = has_tokens[query]
        query, stored = query[ok], stored[ok]
        # `where` indexes `distinct`, the candidates read from the index (ascending,
        # so `where` orders matches as stored document numbers do).
        distinct, where = np.unique(stored, return_inverse=True)
        found = self.index.documents(distinct)
        if self.owner:
            itself = np.fromiter(
                (
                    found.owners[w] == self.owner and found.ids[w] == ids[q]
                    for q, w in zip(query.tolist(), where.tolist(), strict=True)
                ),
                dtype=bool,
                count=len(query),
            )
            query, where = query[~itself], where[~itself]
        stored_tokens = (found.tokens, found.offsets)
        stored_sigs = self.hasher.signatures_of_hashes(*stored_tokens)
        scores = self._score(
            PairSide(sigs, query, (tokens, offsets)), PairSide(stored_sigs, where, stored_tokens)
        )
        candidates = len(query)
        scored = ~np.isnan(scores)
        query, where, scores = query[scored], where[scored], scores[scored]
        order = np.lexsort((scores, query))  # each query's best match comes last
        last = np.r_[query[order][1:] != query[order][:-1], True][: len(order)]
        for q, w, s in zip(
            query[order][last], where[order][last], scores[order][last], strict=True
        ):
            best[q], nearest[q] = s, found.ids[w]
            kept[q] = s < self.threshold

        # 2. This call: greedy in input order over the verified pairs (a document is
        # dropped when one it matches was kept before it).
        later, earlier = self._batch_pairs(keys, np.flatnonzero(has_tokens))
        scores = self._score(
            PairSide(sigs, later, (tokens, offsets)), PairSide(sigs, earlier, (tokens, offsets))
        )
        candidates += len(later)
        scored = ~np.isnan(scores)
        later, earlier, scores = later[scored], earlier[scored], scores[scored]
        order = np.argsort(later, kind="stable")
        later, earlier, scores = later[order], earlier[order], scores[order]
        starts = np.flatnonzero(np.r_[True, later[1:] != later[:-1]])[: len(later)]
        stops = np.r_[starts[1:], len(later)][: len(starts)]
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            doc = int(later[start])
            if not kept[doc]:
                continue
            alive = np.where(kept[earlier[start:stop]], scores[start:stop], -1.0)
            top = int(alive.argmax())
            if alive[top] < 0:
                continue
            if np.isnan(best[doc]) or alive[top] > best[doc]:
                best[doc], nearest[doc] = alive[top], ids[int(earlier[start + top])]
            if alive[top] >= self.threshold:
                kept[doc] = False

        self._pending = (list(ids), keys, tokens, offsets)
        return MinHashVerdicts(kept, has_tokens, nearest, best, candidates)

    def commit(self, keep: np.ndarray) -> None:
        """Add the documents of the last `dedup` call selected by `keep` to the index (and its file or store)."""
        if self._pending is None:
            return
        ids, keys, tokens, offsets = self._pending
        self._pending = None
        docs = np.flatnonzero(keep & (np.diff(offsets) > 0))  # wordless texts are never indexed
        values, lengths = _gather(tokens, offsets, docs)
        kept = StoredDocuments(
            ids=[ids[d] for d in docs.tolist()],
            owners=[self.owner] * len(docs),
            tokens=values,
            offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        )
        self.index.add(kept, keys[docs])


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values. Sort-based: numpy 2's hash-based `np.unique` is
    ~10x slower than a sort on millions of 64-bit values."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..counts[0]-1, 0..counts[1]-1, ...]."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
