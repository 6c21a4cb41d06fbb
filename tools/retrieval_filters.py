"""Filters over generated (query, document) pairs, and hard-negative mining.

Each filter takes pairs (dicts with `id`, `source_id`, `query`, ...) and the
scores it needs, and returns the kept pairs with a `FilterReport` of how many
it removed. Scoring (reranker, retriever) happens in the caller, so the
keep/drop rules here are plain and testable.

- InPars-v1: keep the top fraction by the generator's mean token log-prob.
- InPars-v2: keep the top fraction by a cross-encoder's relevance score.
- Promptagator round-trip: keep a pair when a retriever returns its source
  document in the top k for the query.
- Usefulness: keep a pair when the retrievers rank its source low but not absent
  (hard but answerable), a round-trip at a looser depth that also drops easy pairs.
- Overlap: drop a query that copies its document more than the few-shot examples'
  queries copy theirs (`overlap_limit`).

The kept pairs become training triples (query, positive, hard negatives) with
`hard_negative_triples`, which mines BM25 and/or dense negatives.
`overlap_profile` summarises how much queries copy their documents, to compare
kept, dropped and real queries.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgraph.tools.retrieval_index import Bm25Index, Hits, Retriever, content_words

Pair = dict[str, Any]


@dataclass
class FilterReport:
    name: str
    before: int
    kept: int
    note: str = ""

    @property
    def removed(self) -> int:
        return self.before - self.kept


def keep_top(
    pairs: Sequence[Pair], scores: Sequence[float | None], keep_fraction: float
) -> list[Pair]:
    """The best-scored `keep_fraction` of pairs (unscored pairs rank last), in input order."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], not {keep_fraction}")
    if len(scores) != len(pairs):
        raise ValueError(f"{len(scores)} scores for {len(pairs)} pairs")
    keep = math.ceil(len(pairs) * keep_fraction)
    order = sorted(range(len(pairs)), key=lambda i: math.inf if scores[i] is None else -scores[i])  # type: ignore[operator]
    chosen = set(order[:keep])
    return [pair for i, pair in enumerate(pairs) if i in chosen]


def logprob_filter(
    pairs: Sequence[Pair], keep_fraction: float, requested: bool = True
) -> tuple[list[Pair], FilterReport]:
    """InPars-v1. Skipped (everything kept) when no pair carries a log-prob; `requested`
    says whether generation asked for them, so the note names the right cause."""
    scores = [p.get("logprob") for p in pairs]
    if pairs and all(s is None for s in scores):
        note = (
            "skipped: the endpoint returned no log-probabilities"
            if requested
            else "skipped: queries were generated without log-probabilities (--no-logprobs)"
        )
        return list(pairs), FilterReport("logprob", len(pairs), len(pairs), note)
    kept = keep_top(pairs, scores, keep_fraction)
    return kept, FilterReport(
        "logprob", len(pairs), len(kept), f"top {keep_fraction:.0%} by mean token log-prob"
    )


def reranker_filter(
    pairs: Sequence[Pair], scores: Sequence[float], keep_fraction: float, note: str = ""
) -> tuple[list[Pair], FilterReport]:
    """InPars-v2: keep the top fraction by the reranker's score of (query, source document)."""
    kept = keep_top(pairs, list(scores), keep_fraction)
    return kept, FilterReport(
        "reranker", len(pairs), len(kept), note or f"top {keep_fraction:.0%} by reranker score"
    )


def roundtrip_filter(
    pairs: Sequence[Pair], hits: Sequence[Hits], k: int, note: str = ""
) -> tuple[list[Pair], FilterReport]:
    """Promptagator: keep a pair when its source document is in the retriever's top k for its query."""
    if len(hits) != len(pairs):
        raise ValueError(f"{len(hits)} result lists for {len(pairs)} pairs")
    kept = [
        pair
        for pair, found in zip(pairs, hits, strict=True)
        if pair["source_id"] in {doc for doc, _ in found[:k]}
    ]
    return kept, FilterReport(
        "roundtrip", len(pairs), len(kept), note or f"source document in the top {k}"
    )


def source_rank(source_id: str, hits: Hits) -> int | None:
    """The 1-based rank of the source document in a result list; None when it is absent."""
    for rank, (doc, _) in enumerate(hits, start=1):
        if doc == source_id:
            return rank
    return None


def useful_filter(
    pairs: Sequence[Pair],
    rankings: Sequence[Sequence[Hits]],
    min_rank: int,
    max_rank: int,
    note: str = "",
) -> tuple[list[Pair], FilterReport]:
    """Keep hard-but-answerable pairs: the best rank of the source over the retrievers
    (`rankings`: one result list per pair from each) lies in [min_rank, max_rank].

    A source a retriever already ranks above `min_rank` teaches it little; one none
    finds in the top `max_rank` may not be answered by its query at all.
    """
    if not 1 <= min_rank <= max_rank:
        raise ValueError(f"need 1 <= min rank <= max rank, not {min_rank}..{max_rank}")
    if any(len(hits) != len(pairs) for hits in rankings):
        raise ValueError(f"need one result list per pair from each retriever ({len(pairs)})")
    kept = []
    for i, pair in enumerate(pairs):
        ranks = [source_rank(pair["source_id"], hits[i][:max_rank]) for hits in rankings]
        best = min((rank for rank in ranks if rank is not None), default=None)
        if best is not None and best >= min_rank:
            kept.append(pair)
    return kept, FilterReport(
        "useful", len(pairs), len(kept), note or f"source ranked {min_rank}..{max_rank}"
    )


def overlap_filter(
    pairs: Sequence[Pair], overlaps: Sequence[float], limit: float, note: str = ""
) -> tuple[list[Pair], FilterReport]:
    """Keep a pair when its query's word overlap with its document (`word_overlaps`) is at most `limit`."""
    kept = [pair for pair, overlap in zip(pairs, overlaps, strict=True) if overlap <= limit]
    return kept, FilterReport(
        "overlap", len(pairs), len(kept), note or f"word overlap at most {limit:.2f}"
    )


def overlap_limit(examples: Sequence[tuple[str, str]], percentile: float = 90) -> float:
    """The `percentile` of the (query, document) examples' word overlap: the most a generated
    query may copy its document while still looking like the examples."""
    return float(np.percentile(word_overlaps(examples), percentile))


def mine_negatives(
    positive_id: str,
    ranked: Sequence[Hits],
    corpus: Mapping[str, str],
    count: int,
    rng: random.Random | None = None,
) -> list[str]:
    """`count` hard-negative ids: the best-ranked documents of each retriever in turn, never the positive.

    `ranked` holds one result list per retriever (e.g. BM25 and dense) for the
    pair's query. Documents with the positive's exact text are skipped too (a
    duplicate is not a negative). When the lists run dry, random corpus
    documents fill the rest, so every triple has the same number of negatives.
    """
    positive_text = corpus.get(positive_id)
    chosen: list[str] = []

    def usable(doc_id: str) -> bool:
        return (
            doc_id != positive_id and doc_id not in chosen and corpus.get(doc_id) != positive_text
        )

    depth = max((len(hits) for hits in ranked), default=0)
    for rank in range(depth):
        for hits in ranked:
            if len(chosen) < count and rank < len(hits) and usable(hits[rank][0]):
                chosen.append(hits[rank][0])
    others = [doc for doc in corpus if usable(doc)]
    rng = rng or random.Random(0)
    while len(chosen) < count and others:
        pick = others.pop(rng.randrange(len(others)))
        if usable(pick):
            chosen.append(pick)
    return chosen


def hard_negative_triples(
    pairs: Sequence[Pair],
    corpus: dict[str, str],
    count: int,
    sources: Sequence[str],
    dense_index: Callable[[], Retriever] | None,
    seed: int,
) -> list[dict[str, Any]]:
    """(query, positive, negatives) with BM25 and/or dense hard negatives, never the positive.

    `dense_index` builds the dense index on first use (encoding a corpus is slow), so
    callers that mine only BM25 negatives never pay for it.
    """
    queries = [p["query"] for p in pairs]
    depth = count + 10
    ranked: list[list[Hits]] = []
    if "bm25" in sources:
        ranked.append(Bm25Index(corpus).search(queries, depth))
    if "dense" in sources and dense_index is not None:
        ranked.append(dense_index().search(queries, depth))
    rng = random.Random(seed)
    triples = []
    for i, pair in enumerate(pairs):
        negative_ids = mine_negatives(pair["source_id"], [r[i] for r in ranked], corpus, count, rng)
        triples.append(
            {
                "query": pair["query"],
                "positive": corpus[pair["source_id"]],
                "negatives": [corpus[n] for n in negative_ids],
                "source_id": pair["source_id"],
                "negative_ids": negative_ids,
            }
        )
    return triples


def word_overlaps(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Per (query, document): the share of the query's content words (BM25's words)
    that occur in the document; 0 for a query without content words."""
    queries = content_words([query for query, _ in pairs])
    documents = content_words([document for _, document in pairs])
    overlaps = []
    for query, document in zip(queries, documents, strict=True):
        known = set(document)
        overlaps.append(sum(word in known for word in query) / len(query) if query else 0.0)
    return overlaps


def overlap_profile(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Word overlap with the document and query length in words, of (query, document)
    pairs: mean and quartiles of each (just the count when there are no pairs)."""
    if not pairs:
        return {"queries": 0}

    def spread(values: Sequence[float]) -> dict[str, float]:
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return {
            "mean": round(float(np.mean(values)), 3),
            "q1": round(float(q1), 3),
            "median": round(float(median), 3),
            "q3": round(float(q3), 3),
        }

    return {
        "queries": len(pairs),
        "overlap": spread(word_overlaps(pairs)),
        "words": spread([len(query.split()) for query, _ in pairs]),
    }
