"""Fine-tuning on CPU: the MiniLM bi-encoder and a MiniLM cross-encoder reranker.

Plain torch loops around sentence-transformers' models and losses (the
Trainer needs `datasets` and `accelerate`, which the project does not ship):

- bi-encoder: MultipleNegativesRankingLoss over (query, positive, hard
  negatives...), in-batch negatives included (optionally the cached, GradCache-style
  variant, for batches larger than memory allows); saved as a sentence-transformers
  folder that `synthgraph.tools.embeddings.get_embeddings(Path(folder))` loads.
  With a held-out share of the source documents, it runs several epochs, scores
  MRR@10 of the held-out queries after each and keeps the best epoch's weights.
- hard negatives from BM25 and the base dense model, guarded against false
  negatives: a candidate that scores nearly as high as the positive (by a
  cross-encoder, or else by the dense model) probably answers the query too.
- cross-encoder: there is no pre-trained reranker offline, so it starts from
  MiniLM with a fresh one-logit head and learns binary relevance from the
  same triples (positive → 1, each hard negative → 0).
- `reranker_scores`: the InPars-v2 filter's scores, from a given reranker or
  from cross-encoders cross-fitted on the pairs themselves.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgraph.tools.embeddings import bundled_minilm_path
from synthgraph.tools.io import content_id
from synthgraph.tools.log import get_logger
from synthgraph.tools.retrieval_filters import Pair, hard_negative_triples
from synthgraph.tools.retrieval_index import DenseIndex, Hits
from synthgraph.tools.retrieval_metrics import mrr_at_k

log = get_logger(__name__)
Triple = dict[str, Any]  # query, positive (text), negatives (texts)


@dataclass
class TrainReport:
    model_dir: str
    examples: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    epochs: int = 0
    """Epochs run (fewer than asked when the held-out score stopped improving)."""
    best_epoch: int = 0
    """The epoch whose weights were saved."""
    heldout_mrr: list[float] = field(default_factory=list)
    """MRR@10 of the held-out queries: the base model's, then after each epoch."""
    heldout: int = 0
    """Held-out triples (not trained on)."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _batches(items: Sequence[Triple], size: int, rng: random.Random) -> list[list[Triple]]:
    order = list(items)
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _loop(
    name: str,
    triples: Sequence[Triple],
    step: Callable[[list[Triple]], Any],
    parameters: Any,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    after_epoch: Callable[[int], bool] | None = None,
) -> tuple[int, float, float, int]:
    """AdamW with linear warm-up (10%) and decay; returns (steps, first loss, last loss, epochs run).

    `after_epoch(epoch)` runs after each epoch (from 1); True stops training there."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    total = max(1, epochs * -(-len(triples) // batch_size))
    warmup = max(1, total // 10)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    steps, first, last, window = 0, float("nan"), float("nan"), 0.0
    for epoch in range(1, epochs + 1):
        for batch in _batches(triples, batch_size, rng):
            loss = step(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            value = float(loss.detach())
            first = value if steps == 0 else first
            window = value if steps == 0 else 0.9 * window + 0.1 * value
            last = window
            steps += 1
            if steps % 20 == 0:
                log.info(f"{name}.step", step=steps, of=total, loss=round(window, 4))
        if after_epoch is not None and after_epoch(epoch):
            return steps, first, last, epoch
    return steps, first, last, epochs


def doc_key(triple: Triple) -> str:
    """The id of a triple's source document (its text's content id when the triple has none)."""
    return str(triple.get("source_id") or content_id(triple["positive"]))


def triple_documents(triples: Sequence[Triple]) -> dict[str, str]:
    """Every document of the triples, positives and negatives, by id."""
    documents: dict[str, str] = {}
    for t in triples:
        documents[doc_key(t)] = t["positive"]
        ids = t.get("negative_ids") or [content_id(n) for n in t["negatives"]]
        documents.update(zip(ids, t["negatives"], strict=True))
    return documents


def holdout_split(
    triples: Sequence[Triple], share: float, seed: int
) -> tuple[list[Triple], list[Triple]]:
    """(training, held-out) triples: a seeded `share` of the source documents is held out,
    with all of its queries, so no held-out document is trained on."""
    docs = sorted({doc_key(t) for t in triples})
    if share <= 0 or len(docs) < 2:
        return list(triples), []
    random.Random(seed).shuffle(docs)
    held = set(docs[: min(len(docs) - 1, max(1, round(share * len(docs))))])
    train = [t for t in triples if doc_key(t) not in held]
    return train, [t for t in triples if doc_key(t) in held]


def heldout_mrr(model: Any, held: Sequence[Triple], documents: Mapping[str, str]) -> float:
    """Mean MRR@10 of each held-out query's source document among `documents` (id → text)."""
    import torch

    ids = list(documents)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        doc_vectors, query_vectors = (
            model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            for texts in ([documents[i] for i in ids], [t["query"] for t in held])
        )
    model.train(was_training)
    top = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :10]
    reciprocal_ranks = [
        mrr_at_k([ids[j] for j in row], {doc_key(t): 1}, 10)
        for row, t in zip(top, held, strict=True)
    ]
    return float(np.mean(reciprocal_ranks))


def train_bi_encoder(
    triples: Sequence[Triple],
    out: Path,
    *,
    base: Path | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    negatives: int = 1,
    max_seq_length: int = 128,
    holdout_share: float = 0.0,
    patience: int = 1,
    cached_loss: bool = False,
    mini_batch_size: int = 16,
    seed: int = 13,
) -> TrainReport:
    """MiniLM (or `base`) fine-tuned with MultipleNegativesRankingLoss; saved to `out`.

    With `holdout_share`, that share of the source documents is held out; after each epoch
    the held-out queries' MRR@10 among all the triples' documents is measured, training stops
    once it has not improved for `patience` epochs, and the best epoch's weights are saved.
    `cached_loss` uses the GradCache variant (embeddings in mini-batches of `mini_batch_size`,
    gradients cached), so a batch may be larger than memory would allow.

    `max_seq_length` bounds training only (half of MiniLM's 256 tokens halves the CPU time);
    the saved model keeps the base's length, so it reads as much of a document as the base."""
    _offline()
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    if not triples:
        raise ValueError("no training triples")
    started = time.monotonic()
    model = SentenceTransformer(str(base or bundled_minilm_path()), device="cpu")
    base_length = model.max_seq_length
    model.max_seq_length = max_seq_length
    loss = (
        CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
        if cached_loss
        else MultipleNegativesRankingLoss(model)
    )
    model.train()

    def step(batch: list[Triple]) -> Any:
        columns = [[t["query"] for t in batch], [t["positive"] for t in batch]]
        columns += [[t["negatives"][i] for t in batch] for i in range(negatives)]
        features = [model.preprocess(column) for column in columns]
        return loss(features, torch.zeros(len(batch)))

    train, held = holdout_split(triples, holdout_share, seed)
    documents = triple_documents(triples)
    scores = [heldout_mrr(model, held, documents)] if held else []
    best: dict[str, Any] = {"epoch": 0, "state": None}

    def after_epoch(epoch: int) -> bool:
        if not held:
            best["epoch"] = epoch
            return False
        scores.append(heldout_mrr(model, held, documents))
        log.info("train.bi_encoder.epoch", epoch=epoch, heldout_mrr=round(scores[-1], 4))
        if best["state"] is None or scores[-1] > scores[best["epoch"]]:
            best.update(epoch=epoch, state=copy.deepcopy(model.state_dict()))
        return epoch - best["epoch"] >= patience

    usable = [t for t in train if len(t["negatives"]) >= negatives]
    if not usable:
        raise ValueError(f"no training triple has {negatives} negative(s)")
    steps, first, last, ran = _loop(
        "train.bi_encoder", usable, step, list(model.parameters()),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        after_epoch=after_epoch,
    )  # fmt: skip
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.max_seq_length = base_length
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return TrainReport(
        str(out), len(usable), steps, round(time.monotonic() - started, 1), first, last,
        epochs=ran, best_epoch=best["epoch"], heldout_mrr=[round(x, 4) for x in scores],
        heldout=len(held),
    )  # fmt: skip


def train_cross_encoder(
    triples: Sequence[Triple],
    out: Path,
    *,
    base: Path | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    negatives: int = 1,
    max_length: int = 128,
    min_steps: int = 80,
    seed: int = 13,
) -> TrainReport:
    """A cross-encoder initialised from MiniLM, trained with binary cross-entropy; saved to `out`.

    The head starts fresh on a bi-encoder checkpoint: measured on 900 Debian pairs, the loss stays
    at chance (0.69) for ~40 steps at 1e-4 and for all of 24 steps at 3e-5, then falls (0.44 by
    step 80). So small sets are repeated for at least `min_steps` steps."""
    _offline()
    import torch
    from sentence_transformers import CrossEncoder

    if not triples:
        raise ValueError("no training triples")
    started = time.monotonic()
    model = CrossEncoder(
        str(base or bundled_minilm_path()), num_labels=1, max_length=max_length, device="cpu"
    )
    model.train()
    bce = torch.nn.BCEWithLogitsLoss()
    # One example per (query, document): the positive and each of the first `negatives`.
    examples = [
        {"query": t["query"], "document": doc, "label": float(i == 0)}
        for t in triples
        for i, doc in enumerate([t["positive"], *t["negatives"][:negatives]])
    ]

    def step(batch: list[Triple]) -> Any:
        features = model.preprocess([(e["query"], e["document"]) for e in batch])
        logits = model(features)["scores"].view(-1)
        return bce(logits, torch.tensor([e["label"] for e in batch]))

    steps_per_epoch = math.ceil(len(examples) / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    steps, first, last, ran = _loop(
        "train.cross_encoder", examples, step, list(model.parameters()),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return TrainReport(
        str(out), len(examples), steps, round(time.monotonic() - started, 1), first, last,
        epochs=ran, best_epoch=ran,
    )  # fmt: skip


class Reranker:
    """A saved cross-encoder that scores (query, document) pairs; higher is more relevant."""

    def __init__(self, model_dir: Path, batch_size: int = 64) -> None:
        _offline()
        from sentence_transformers import CrossEncoder

        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self._model = CrossEncoder(str(model_dir), device="cpu")

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self._model.predict(
            list(pairs), batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return [float(s) for s in scores]

    def rerank(
        self, queries: Sequence[str], hits: Sequence[Hits], corpus: Mapping[str, str], depth: int
    ) -> list[Hits]:
        """Each query's result list with its top `depth` reordered by this model's score.

        One scoring call for all queries, so the model batches (and pads) across them."""
        heads = [found[:depth] for found in hits]
        scores = iter(
            self.score(
                [
                    (q, corpus[doc])
                    for q, head in zip(queries, heads, strict=True)
                    for doc, _ in head
                ]
            )
        )
        reranked: list[Hits] = []
        for head, found in zip(heads, hits, strict=True):
            head_scores = [next(scores) for _ in head]
            order = sorted(range(len(head)), key=lambda i: -head_scores[i])
            reranked.append([head[i] for i in order] + list(found[depth:]))
        return reranked


def reranker_scores(
    pairs: Sequence[Pair], corpus: dict[str, str], reranker: Path | None, out: Path, seed: int
) -> tuple[list[float], str]:
    """Cross-encoder scores of (query, source document): a given model, or cross-fitted MiniLMs.

    Cross-fitted: the pairs split in two halves by id, and each half is scored by a
    cross-encoder (saved under `out/reranker-fold<n>`) trained on the other half, so no
    pair scores itself. Returns the scores and a note saying which model scored them.
    """
    texts = [(p["query"], corpus[p["source_id"]]) for p in pairs]
    if reranker is not None:
        return Reranker(reranker).score(texts), f"scored by {reranker}"
    folds = [
        [i for i in range(len(pairs)) if int(pairs[i]["id"], 16) % 2 == fold] for fold in (0, 1)
    ]
    scores: list[float] = [0.0] * len(pairs)
    for fold, other in ((0, 1), (1, 0)):
        if not folds[fold] or not folds[other]:
            continue
        train = hard_negative_triples(
            [pairs[i] for i in folds[other]], corpus, 1, ("bm25",), None, seed
        )
        model_dir = out / f"reranker-fold{fold}"
        train_cross_encoder(train, model_dir, seed=seed)
        fold_scores = Reranker(model_dir).score([texts[i] for i in folds[fold]])
        for i, score in zip(folds[fold], fold_scores, strict=True):
            scores[i] = score
    return (
        scores,
        "cross-encoder from MiniLM, trained on the other half of the pairs (cross-fitted)",
    )


# --- hard negatives, guarded against false negatives ------------------------------
Scorer = Callable[[Sequence[tuple[str, str]]], list[float]]
"""Relevance of (query, document id) pairs; higher is more relevant."""
DENSE_GUARD_MARGIN = 0.03
"""Cosine: a negative within 0.03 of the positive (~95% of a typical positive's score) is dropped."""
RERANKER_GUARD_MARGIN = 0.0
"""Cross-encoder logits: a negative scored at least as high as the positive is dropped."""


def dense_scorer(index: DenseIndex) -> Scorer:
    """Cosine of the query's vector and the document's indexed vector."""
    position = {doc: i for i, doc in enumerate(index.doc_ids)}

    def score(pairs: Sequence[tuple[str, str]]) -> list[float]:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        vectors = dict(zip(queries, index.embeddings.encode(queries), strict=True))
        return [float(vectors[q] @ index.vectors[position[d]]) for q, d in pairs]

    return score


def reranker_scorer(reranker: Reranker, corpus: Mapping[str, str]) -> Scorer:
    """The cross-encoder's score of the query and the document's text."""
    return lambda pairs: reranker.score([(q, corpus[d]) for q, d in pairs])


def guard_negatives(
    triples: Sequence[Triple], score: Scorer, margin: float, count: int
) -> tuple[list[Triple], int]:
    """Each triple with at most `count` negatives that `score` says do not answer its query.

    A candidate scoring at least the positive's score minus `margin` is dropped as a likely
    false negative (an unlabelled document that answers the query too). Returns the triples
    and how many candidates were dropped."""
    pairs = [(t["query"], doc) for t in triples for doc in [t["source_id"], *t["negative_ids"]]]
    scores = iter(score(pairs))
    guarded, dropped = [], 0
    for t in triples:
        floor = next(scores) - margin
        keep = [i for i, _ in enumerate(t["negative_ids"]) if next(scores) < floor]
        dropped += len(t["negative_ids"]) - len(keep)
        keep = keep[:count]
        guarded.append(
            {
                **t,
                "negatives": [t["negatives"][i] for i in keep],
                "negative_ids": [t["negative_ids"][i] for i in keep],
            }
        )
    return guarded, dropped


def guarded_triples(
    triples: Sequence[Triple],
    corpus: dict[str, str],
    count: int,
    sources: Sequence[str],
    dense: Callable[[], DenseIndex],
    reranker: Path | None,
    seed: int,
) -> tuple[list[Triple], int, str]:
    """The triples' queries with fresh hard negatives from `corpus`, guarded.

    BM25 and/or the dense index (`sources`) propose `count` + 4 candidates each (the spare
    ones replace dropped false negatives); `reranker` (a cross-encoder folder) judges
    them, or else the dense model with a score margin. Returns the triples, the candidates
    dropped and a note naming the judge."""
    pairs = [{"query": t["query"], "source_id": doc_key(t)} for t in triples]
    candidates = hard_negative_triples(
        pairs, corpus, count + 4, sources, dense if "dense" in sources else None, seed
    )
    if reranker is not None:
        score, margin = reranker_scorer(Reranker(reranker), corpus), RERANKER_GUARD_MARGIN
        note = f"cross-encoder {reranker}, margin {margin}"
    else:
        # No pre-trained cross-encoder exists offline: the base dense model judges.
        score, margin = dense_scorer(dense()), DENSE_GUARD_MARGIN
        note = f"base dense model, cosine margin {margin}"
    guarded, dropped = guard_negatives(candidates, score, margin, count)
    return guarded, dropped, note
