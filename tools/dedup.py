"""The dedup service: MinHash on words (stage 1), then MiniLM embeddings in Chroma (stage 2).

Works on any text field of any records. Both stages are greedy in input
order: a record is dropped when it is too similar to a record kept before it,
in this call or in an earlier run of the same namespace. Earlier runs are
remembered in two stores, both keyed by the namespace: the MinHash index
(`<data_dir>/dedup/<namespace>.minhash.npz`, or Redis with `SYNTHGRAPH_MINHASH_URL`,
see `synthgraph.tools.minhash_store`) and a Chroma collection `dedup-<namespace>`
(cosine space). So rerunning on the same input keeps nothing.

Nothing is written until a call has finished: a failed run leaves both stores
as they were, so retrying it does not drop records against their own ghosts.
A caller killed after that, before it wrote the verdicts, is covered by the
`owner` of the stored entries (see `DedupService`).

Concurrent runs on one namespace: each call holds an exclusive OS file lock
(`<data_dir>/dedup/<namespace>.lock`) from loading the stores, through judging,
to storing its kept records, so the next writer loads and judges against them;
read-only calls (`remember=False`) share the lock. That is safe for processes
and threads on one machine with a local filesystem. Several machines sharing a
data dir (NFS, object storage) are not: flock does not hold across them. With
`SYNTHGRAPH_MINHASH_URL` the lock is in Redis instead (every call takes it
exclusively), so writers on any machines (with a Chroma server,
`SYNTHGRAPH_CHROMA_URL`) exclude each other.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from synthgraph.tools.io import InputError, content_id, read_jsonl, read_table, write_records
from synthgraph.tools.minhash import MinHashDeduper, MinHashStore, Verify
from synthgraph.tools.minhash_store import FileMinHashStore, RedisMinHashStore

Method = Literal["minhash", "embedding", "both"]
Stage = Literal["minhash", "embedding"]
METHODS: tuple[Method, ...] = ("minhash", "embedding", "both")
ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

_NAMESPACE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?$")
_EMBED_CHUNK = 512  # texts encoded and compared per step (progress granularity)


class Encoder(Protocol):
    """What stage 2 needs from an embeddings model: unit-length float32 rows."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class StageCount:
    checked: int = 0
    dropped: int = 0

    @property
    def kept(self) -> int:
        return self.checked - self.dropped


@dataclass
class DedupResult:
    """Records (each with a `dedup` dict) split into kept and dropped, and counts per stage."""

    kept: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    stages: dict[str, StageCount] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.kept) + len(self.dropped)

    def summary_rows(self) -> list[list[Any]]:
        """Rows `[stage, checked, kept, dropped]` for a summary table."""
        rows: list[list[Any]] = [
            [name, c.checked, c.kept, c.dropped] for name, c in self.stages.items()
        ]
        rows.append(["total", self.total, len(self.kept), len(self.dropped)])
        return rows


class DedupService:
    """Near-duplicate removal for one namespace (one persistent memory of kept records).

    `threshold` is the Jaccard similarity of word sets for the MinHash stage
    and the cosine similarity for the embedding stage: a record scoring at
    least that against a kept record is dropped.

    `owner` (e.g. a run id) tags what this service stores. A record is never a
    duplicate of an entry stored by the same owner under the record's own id:
    that entry is the record itself, stored by an attempt that was killed
    before its caller wrote the verdict (stores are written first). So a
    resumed job gets the same verdicts again; record ids must be unique per owner.
    """

    def __init__(
        self,
        namespace: str = "default",
        threshold: float = 0.9,
        method: Method = "both",
        *,
        verify: Verify = "exact",
        bands: tuple[int, int] | None = None,
        data_dir: Path | None = None,
        embeddings: Encoder | None = None,
        chroma_client: Any | None = None,
        max_batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        owner: str | None = None,
        minhash_url: str | None = None,
        deduper: type[MinHashDeduper] = MinHashDeduper,
    ) -> None:
        if not _NAMESPACE.match(namespace):
            raise ValueError(
                f"namespace {namespace!r}: use 1-100 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.namespace = namespace
        self.threshold = threshold
        self.method = method
        self.verify = verify
        self.bands = bands
        from synthgraph.tools.settings import get_settings

        settings = get_settings()
        self.owner = owner
        folder = Path(data_dir or settings.data_dir) / "dedup"
        self.minhash_path = folder / f"{namespace}.minhash.npz"
        minhash_url = minhash_url or settings.minhash_url
        self.store: MinHashStore = (
            RedisMinHashStore(minhash_url, namespace)
            if minhash_url
            else FileMinHashStore(self.minhash_path, folder / f"{namespace}.lock")
        )
        self.deduper = deduper  # the MinHash stage: local, or on Ray (`minhash_ray`)
        self.collection_name = f"dedup-{namespace}"
        self._embeddings = embeddings
        self._client = chroma_client
        # Our own client on a local folder (not a caller's, not a server): creation is guarded.
        self._chroma_dir = None if chroma_client or settings.chroma_url else settings.chroma_dir
        self._max_batch_size = max_batch_size
        self._progress = progress

    # --- stores ---------------------------------------------------------------

    @property
    def embeddings(self) -> Encoder:
        if self._embeddings is None:
            from synthgraph.tools.embeddings import get_embeddings

            self._embeddings = get_embeddings()
        return self._embeddings

    @property
    def client(self) -> Any:
        if self._client is None:
            from synthgraph.tools.embeddings import get_chroma_client

            self._client = get_chroma_client()
        return self._client

    def collection(self) -> Any:
        # Vectors always come from us, so no embedding function: Chroma's default
        # one would download a model at run time.
        client = self.client  # opened first: opening takes the same lock
        with self._creating():
            return client.get_or_create_collection(
                self.collection_name,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )

    def _creating(self) -> contextlib.AbstractContextManager[None]:
        """Two processes creating one collection in a local Chroma at once: the second fails."""
        if self._chroma_dir is None:
            return contextlib.nullcontext()
        from synthgraph.tools.embeddings import chroma_open_lock

        return chroma_open_lock(self._chroma_dir)

    def max_batch_size(self) -> int:
        return self._max_batch_size or int(self.client.get_max_batch_size())

    def reset(self) -> None:
        """Forget every record kept in this namespace (both stores)."""
        from chromadb.errors import NotFoundError

        with self.store.lock():
            with contextlib.suppress(NotFoundError):
                self.client.delete_collection(self.collection_name)
            self.store.reset()

    # --- the service ------------------------------------------------------------

    def dedup(
        self,
        records: Iterable[dict[str, Any]],
        field: str,
        id_field: str = "id",
        remember: bool = True,
    ) -> DedupResult:
        """Judge `records` on the text in `field`; ids come from `id_field` (else the position).

        With `remember=False` the stores are only read: kept records are not added.

        Returns copies of the records, each with a `dedup` dict:
        `{"stage", "kept", "nearest_id", "score"}` — the stage that decided,
        and the most similar kept record it was compared with and its score
        (None when no earlier record came close enough to be compared).
        """
        rows = list(records)
        texts: list[str] = []
        ids: list[str] = []
        for position, record in enumerate(rows):
            text = record.get(field)
            if not isinstance(text, str):
                raise ValueError(
                    f"record {record.get(id_field, position)!r}: field {field!r} is missing or not text"
                )
            texts.append(text)
            ids.append(str(record.get(id_field, position)))
        n = len(rows)
        kept = np.ones(n, dtype=bool)
        stage: list[Stage | None] = [None] * n
        nearest: list[str | None] = [None] * n
        score = np.full(n, np.nan)
        stages: dict[str, StageCount] = {}

        if self.owner and len(set(ids)) < len(ids):
            raise ValueError(f"owner {self.owner!r}: record ids must be unique within a call")
        # Load, judge and store under one lock: a concurrent writer's kept records
        # are either all in the stores we load, or it judges against all of ours.
        with self.store.lock(shared=not remember):
            minhash: MinHashDeduper | None = None
            if self.method in ("minhash", "both"):
                minhash = self.deduper(
                    self.threshold,
                    bands=self.bands,
                    verify=self.verify,
                    owner=self.owner,
                    store=self.store,
                )
                self._report("minhash", 0, n)
                verdicts = minhash.dedup(texts, ids)
                self._report("minhash", n, n)
                kept &= verdicts.kept
                judged = np.flatnonzero(verdicts.has_tokens)
                for i in judged.tolist():
                    stage[i], nearest[i], score[i] = (
                        "minhash",
                        verdicts.nearest_id[i],
                        verdicts.score[i],
                    )
                stages["minhash"] = StageCount(
                    checked=len(judged), dropped=int((~verdicts.kept).sum())
                )

            vectors: np.ndarray | None = None
            if self.method in ("embedding", "both"):
                survivors = np.flatnonzero(kept)
                emb_kept, emb_nearest, emb_score, vectors = self._embedding_stage(
                    [texts[i] for i in survivors], [ids[i] for i in survivors]
                )
                for j, i in enumerate(survivors.tolist()):
                    stage[i], nearest[i], score[i] = "embedding", emb_nearest[j], emb_score[j]
                kept[survivors] = emb_kept
                stages["embedding"] = StageCount(
                    checked=len(survivors), dropped=int((~emb_kept).sum())
                )

            # Remember the kept records only once every stage has finished.
            if remember and vectors is not None and len(vectors):
                self._add_vectors(vectors, [ids[i] for i in np.flatnonzero(kept)])
            if remember and minhash is not None:
                minhash.commit(kept)

        result = DedupResult(kept=[], dropped=[], stages=stages)
        for i, record in enumerate(rows):
            verdict = {
                "stage": stage[i],
                "kept": bool(kept[i]),
                "nearest_id": nearest[i],
                "score": None if np.isnan(score[i]) else round(float(score[i]), 4),
            }
            (result.kept if kept[i] else result.dropped).append({**record, "dedup": verdict})
        return result

    def _report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)

    def _embedding_stage(
        self, texts: list[str], ids: list[str]
    ) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
        """Keep flags, nearest ids, cosine scores, and the vectors of the kept texts."""
        n = len(texts)
        kept = np.ones(n, dtype=bool)
        nearest: list[str | None] = [None] * n
        score = np.full(n, np.nan)
        collection = self.collection() if n else None
        earlier = collection.count() if collection is not None else 0
        kept_vectors = np.zeros((0, 0), np.float32)  # this call's kept vectors, in order
        kept_count = 0
        self._report("embedding", 0, n)
        for start in range(0, n, _EMBED_CHUNK):
            chunk = np.asarray(
                self.embeddings.encode(texts[start : start + _EMBED_CHUNK]), dtype=np.float32
            )
            size = len(chunk)
            best = np.full(size, -np.inf)
            best_id: list[str | None] = [None] * size
            # Earlier runs: the nearest neighbour in Chroma (cosine distance = 1 - similarity),
            # skipping the record's own entry (one at most, see `_chroma_id`).
            if earlier:
                found = collection.query(
                    query_embeddings=chunk,
                    n_results=min(earlier, 2 if self.owner else 1),
                    include=["metadatas", "distances"],
                )
                for j in range(size):
                    itself = self._chroma_id(ids[start + j])
                    for key, distance, metadata in zip(
                        found["ids"][j], found["distances"][j], found["metadatas"][j], strict=True
                    ):
                        if key != itself:
                            best[j], best_id[j] = 1.0 - distance, str(metadata["record_id"])
                            break
            # Earlier chunks of this call: exact, in numpy.
            if kept_count:
                previous_ids = [ids[i] for i in np.flatnonzero(kept[:start])]
                sims = chunk @ kept_vectors[:kept_count].T
                top = sims.argmax(axis=1)
                for j in range(size):
                    if sims[j, top[j]] > best[j]:
                        best[j], best_id[j] = sims[j, top[j]], previous_ids[top[j]]
            # Within the chunk: greedy in order, against the rows kept so far.
            inner = chunk @ chunk.T
            kept_here: list[int] = []
            for j in range(size):
                if kept_here:
                    sims_here = inner[j, kept_here]
                    top_here = int(sims_here.argmax())
                    if sims_here[top_here] > best[j]:
                        best[j], best_id[j] = sims_here[top_here], ids[start + kept_here[top_here]]
                if best_id[j] is not None:
                    nearest[start + j], score[start + j] = best_id[j], min(float(best[j]), 1.0)
                if best[j] >= self.threshold:
                    kept[start + j] = False
                else:
                    kept_here.append(j)
            if not kept_vectors.size:
                kept_vectors = np.empty((n, chunk.shape[1]), np.float32)
            kept_vectors[kept_count : kept_count + len(kept_here)] = chunk[kept_here]
            kept_count += len(kept_here)
            self._report("embedding", start + size, n)
        return kept, nearest, score, kept_vectors[:kept_count]

    def _chroma_id(self, record_id: str) -> str | None:
        """With an owner, one Chroma entry per (owner, record id): a rerun replaces its own.

        Without one, record ids need not be unique across inputs, and each entry
        gets a random Chroma id (None here).
        """
        return content_id(self.owner, record_id, length=32) if self.owner else None

    def _add_vectors(self, vectors: np.ndarray, ids: list[str]) -> None:
        """Add kept vectors to the collection, in writes no larger than Chroma accepts."""
        collection = self.collection()
        step = self.max_batch_size()
        for start in range(0, len(ids), step):
            batch_ids = ids[start : start + step]
            collection.upsert(
                ids=[self._chroma_id(record_id) or uuid.uuid4().hex for record_id in batch_ids],
                embeddings=vectors[start : start + step],
                metadatas=[{"record_id": record_id} for record_id in batch_ids],
            )


# --- files ------------------------------------------------------------------------------


def default_namespace(field: str) -> str:
    """The field name, made safe: personas and instructions do not share a memory by default."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", field).strip("-_.")[:100] or "default"


def dropped_path(out: Path) -> Path:
    """Where dropped records go: `<out stem>.dropped.jsonl` beside `out`."""
    return out.with_name(f"{out.stem}.dropped.jsonl")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL, Parquet or CSV file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return list(read_jsonl(path))
    return read_table(path).to_dict("records")


def dedup_file(
    service: DedupService,
    input_path: Path,
    field: str,
    out: Path,
    id_field: str = "id",
    reset: bool = False,
) -> DedupResult:
    """Dedup a file: kept records to `out` (.jsonl or .parquet), dropped to `dropped_path(out)`."""
    if out.suffix.lower() not in {".jsonl", ".ndjson", ".parquet"}:
        raise InputError(f"{out}: the output must be .jsonl or .parquet")
    if out.resolve() in {input_path.resolve(), dropped_path(input_path).resolve()} or (
        dropped_path(out).resolve() == input_path.resolve()
    ):  # the input would be overwritten before it is fully judged
        raise InputError(f"{out}: the output must not be the input file; choose another --out")
    records = read_records(input_path)
    if records and not any(field in r for r in records[:100]):
        raise InputError(
            f"{input_path}: no field {field!r} (fields: {', '.join(map(str, records[0]))})"
        )
    if reset:
        service.reset()
    result = service.dedup(records, field=field, id_field=id_field)
    write_records(result.kept, out)
    write_records(result.dropped, dropped_path(out))
    return result
