"""Fine-tuning on CPU: the MiniLM bi-encoder and a MiniLM cross-encoder reranker.

Plain torch loops around sentence-transformers' models and losses (the
Trainer needs `datasets` and `accelerate`, which the project does not ship):

- bi-encoder: MultipleNegativesRankingLoss over (query, positive, hard
  negatives...), in-batch negatives included; saved as a sentence-transformers
  folder that `synthgraph.tools.embeddings.get_embeddings(Path(folder))` loads.
- cross-encoder: there is no pre-trained reranker offline, so it starts from
  MiniLM with a fresh one-logit head and learns binary relevance from the
  same triples (positive → 1, each hard negative → 0).
- `reranker_scores`: the InPars-v2 filter's scores, from a given reranker or
  from cross-encoders cross-fitted on the pairs themselves.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthgraph.tools.embeddings import bundled_minilm_path
from synthgraph.tools.log import get_logger
from synthgraph.tools.retrieval_filters import Pair, hard_negative_triples
from synthgraph.tools.retrieval_index import Hits

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
) -> tuple[int, float, float]:
    """AdamW with linear warm-up (10%) and decay; returns (steps, first loss, last loss)."""
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
    for _ in range(epochs):
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
    return steps, first, last


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
    seed: int = 13,
) -> TrainReport:
    """MiniLM (or `base`) fine-tuned with MultipleNegativesRankingLoss; saved to `out`.

    `max_seq_length` bounds training only (half of MiniLM's 256 tokens halves the CPU time);
    the saved model keeps the base's length, so it reads as much of a document as the base."""
    _offline()
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if not triples:
        raise ValueError("no training triples")
    started = time.monotonic()
    model = SentenceTransformer(str(base or bundled_minilm_path()), device="cpu")
    base_length = model.max_seq_length
    model.max_seq_length = max_seq_length
    loss = MultipleNegativesRankingLoss(model)
    model.train()

    def step(batch: list[Triple]) -> Any:
        columns = [[t["query"] for t in batch], [t["positive"] for t in batch]]
        columns += [[t["negatives"][i] for t in batch] for i in range(negatives)]
        features = [model.preprocess(column) for column in columns]
        return loss(features, torch.zeros(len(batch)))

    usable = [t for t in triples if len(t["negatives"]) >= negatives]
    steps, first, last = _loop(
        "train.bi_encoder", usable, step, list(model.parameters()),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
    )  # fmt: skip
    model.max_seq_length = base_length
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return TrainReport(
        str(out), len(usable), steps, round(time.monotonic() - started, 1), first, last
    )


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
    steps, first, last = _loop(
        "train.cross_encoder", examples, step, list(model.parameters()),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return TrainReport(
        str(out), len(examples), steps, round(time.monotonic() - started, 1), first, last
    )


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
