"""Search over a corpus: BM25 (`bm25s`) and dense MiniLM, with one `search` shape.

Both return, per query, `(doc_id, score)` pairs best first; `mix` merges the
lists of several retrievers into one (a weighted sum of their normalised scores). Dense document
vectors can be cached per model and per text, so a benchmark encodes each
document once per model, not once per stage (nor again when the corpus grows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from synthgraph.tools.embeddings import MiniLMEmbeddings, get_embeddings
from synthgraph.tools.io import content_id

Hits = list[tuple[str, float]]


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> list[Hits]: ...


def content_words(texts: Sequence[str]) -> list[list[str]]:
    """The words BM25 matches on, per text: lower-cased, English stop words and
    one-letter tokens removed, no stemming."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def mix(rankings: Sequence[Hits], weights: Sequence[float]) -> Hits:
    """One query's result lists merged by a convex combination of their scores, each list's
    scaled to [0, 1] (its best 1, its worst 0): score = sum of weight * scaled score.

    BM25 and cosine scores live on different scales, so each list is scaled on its own; a
    document missing from a list adds nothing for it. Equal scores are ordered by document
    id, so the merged list is deterministic.
    """
    scores: dict[str, float] = {}
    for hits, weight in zip(rankings, weights, strict=True):
        if not hits:
            continue
        values = [score for _, score in hits]
        low, span = min(values), max(values) - min(values)
        for doc, score in hits:  # a list of equal scores: all of them its best
            scaled = (score - low) / span if span else 1.0
            scores[doc] = scores.get(doc, 0.0) + weight * scaled
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class Bm25Index:
    """Okapi BM25 over the corpus (English stop words removed, no stemming)."""

    def __init__(self, corpus: dict[str, str]) -> None:
        import bm25s

        self.doc_ids = list(corpus)
        self._model = bm25s.BM25()
        tokens = bm25s.tokenize(list(corpus.values()), stopwords="en", show_progress=False)
        self._model.index(tokens, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[Hits]:
        if not queries:
            return []
        k = min(k, len(self.doc_ids))
        # As strings, not ids: words the corpus never saw are then simply ignored.
        found, scores = self._model.retrieve(
            content_words(queries), k=k, show_progress=False, n_threads=1
        )
        return [
            [
                (self.doc_ids[int(i)], float(s))
                for i, s in zip(row, row_scores, strict=True)
                if s > 0
            ]
            for row, row_scores in zip(found, scores, strict=True)
        ]


class DenseIndex:
    """Cosine similarity between normalised MiniLM vectors (exact, in memory)."""

    def __init__(
        self,
        corpus: dict[str, str],
        embeddings: MiniLMEmbeddings | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.embeddings = embeddings or get_embeddings()
        self.doc_ids = list(corpus)
        self.vectors = self._corpus_vectors(list(corpus.values()), cache_dir)

    def _corpus_vectors(self, texts: list[str], cache_dir: Path | None) -> np.ndarray:
        """Vectors of `texts`; with a cache, only texts this model never encoded are encoded."""
        if cache_dir is None:
            return self.embeddings.encode(texts)
        model_key = content_id(str(Path(self.embeddings.model_path).resolve()))
        path = Path(cache_dir) / f"vectors-{model_key}.npz"
        cached: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as stored:
                cached = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
        keys = [content_id(text) for text in texts]
        missing = list(dict.fromkeys(i for i, key in enumerate(keys) if key not in cached))
        if missing:
            fresh = self.embeddings.encode([texts[i] for i in missing])
            cached.update({keys[i]: vector for i, vector in zip(missing, fresh, strict=True)})
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, keys=np.array(list(cached)), vectors=np.stack(list(cached.values())))
            tmp.replace(path)
        return np.stack([cached[key] for key in keys]).astype(np.float32)

    def search(self, queries: Sequence[str], k: int) -> list[Hits]:
        if not queries:
            return []
        k = min(k, len(self.doc_ids))
        results: list[Hits] = []
        query_vectors = self.embeddings.encode(list(queries))
        for start in range(0, len(query_vectors), 256):  # bounded memory for big corpora
            scores = query_vectors[start : start + 256] @ self.vectors.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            for row, candidates in zip(scores, top, strict=True):
                ranked = candidates[np.argsort(-row[candidates])]
                results.append([(self.doc_ids[i], float(row[i])) for i in ranked])
        return results
