"""Ranking metrics as BEIR reports them: nDCG@k, Recall@k, MRR@k (means over queries).

nDCG uses graded gains `rel` and the discount `1 / log2(rank + 1)`; the ideal
ranking sorts the judged documents by relevance. Only judgements above 0
count as relevant. Queries without any relevant document are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(rank + 2) for rank, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, r in relevance.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevance.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 of `rankings` (query id → doc ids, best first)."""
    judged = [q for q, rel in qrels.items() if any(r > 0 for r in rel.values())]
    if not judged:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}
    scores = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for query in judged:
        ranked = rankings.get(query, [])
        scores["ndcg@10"] += ndcg_at_k(ranked, qrels[query], 10)
        scores["recall@100"] += recall_at_k(ranked, qrels[query], 100)
        scores["mrr@10"] += mrr_at_k(ranked, qrels[query], 10)
    return {**{name: value / len(judged) for name, value in scores.items()}, "queries": len(judged)}


def score_hits(
    system: str,
    query_ids: Sequence[str],
    hits: Sequence[Sequence[tuple[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """One row of an evaluation: `system`'s metrics from its result lists, one per query id."""
    rankings = {q: [doc for doc, _ in found] for q, found in zip(query_ids, hits, strict=True)}
    return {"system": system, **evaluate_rankings(rankings, qrels)}
