"""Where the MinHash index of a dedup namespace persists: a local file, or Redis for many writers.

Both are `MinHashStore`s, opened by `MinHashDeduper(store=...)`:
- `FileMinHashStore`: `<namespace>.minhash.npz`, read whole into memory and rewritten whole on
  each commit, under an OS file lock. One machine, local filesystem.
- `RedisMinHashStore` (`SYNTHGRAPH_MINHASH_URL=redis://...`): processes on any machines
  share one index, and each reads only the band buckets and documents its batch touches.

Redis layout, under `synthgraph:minhash:<namespace>:`:
- `params`: "bands rows num_perm seed" (a reader with other settings is refused);
- `count`: how many documents are committed; documents are numbered 0, 1, ... in commit order;
- `docs`: hash, document number → owner, id and token hashes (`_pack`);
- `bands`: hash, band number (2 bytes) + band key (8 bytes) → the numbers of the documents in
  that bucket (int64 little-endian, appended);
- `lock`: the writers' lock.

Concurrency. A writer holds the lock (SET NX PX with a random token, redis-py's `Lock`, renewed
by a thread while held) from reading the index, through judging its batch, to storing what it
kept. So the next writer judges against all of it, and two writers never both keep
near-duplicates of each other. Writes are fenced: every write is a Lua script that first checks
that the lock still holds this writer's token, so a writer whose lock expired (a long pause) can
write nothing, and its commit fails instead of racing the new holder.

A commit is atomic: documents and bucket entries are written past `count` (invisible: readers
ignore numbers ≥ `count`), then one script moves `count`. A writer killed before that leaves
entries past `count` that the next commit overwrites (documents) or that point at a document
they do not match (bucket entries): a false candidate, which verification rejects.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synthgraph.tools.locks import file_lock
from synthgraph.tools.log import url_without_credentials
from synthgraph.tools.minhash import (
    IndexMismatchError,
    MinHashIndex,
    StoredDocuments,
    _unique,
)

LOCK_SECONDS = 30.0  # a killed writer's lock frees itself this long after its last renewal
LOCK_POLL = 0.02  # seconds between two tries of a waiting writer
_WRITE_CHUNK = 2048  # documents per Lua call: Redis does nothing else while one runs
_READ_CHUNK = 16_384  # fields per HMGET

# KEYS[1] lock, KEYS[2] docs; ARGV[1] token, then number, record pairs.
_PUT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""
# KEYS[1] lock, KEYS[2] bands; ARGV[1] token, ARGV[2] fields (10 bytes each), ARGV[3] document
# numbers (8 bytes each): two strings, not an argument per entry, which costs the client more.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 0, #ARGV[3] / 8 - 1 do
  local field = string.sub(ARGV[2], 10 * i + 1, 10 * i + 10)
  local bucket = redis.call('HGET', KEYS[2], field) or ''
  redis.call('HSET', KEYS[2], field, bucket .. string.sub(ARGV[3], 8 * i + 1, 8 * i + 8))
end
return 1
"""
# KEYS[1] lock, KEYS[2] count; ARGV[1] token, ARGV[2] count read at the start, ARGV[3] new count.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""


class MinHashStoreError(RuntimeError):
    """The shared MinHash store failed or was lost (a writer's lock expired)."""


class FileMinHashStore:
    """`path` (.npz) with an OS file lock beside it (see `synthgraph.tools.locks`)."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self.lock_path = lock_path

    def lock(self, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.lock_path, shared=shared)

    def open(self, bands: int, rows: int, num_perm: int, seed: int) -> MinHashIndex:
        return MinHashIndex.load(self.path, bands, rows, num_perm, seed)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.lock_path.unlink()  # leave nothing behind (`file_lock` allows it)


class RedisMinHashStore:
    """One namespace's index in a Redis database (`redis://[:password@]host:port/db`).

    The store is also its own `BandIndex` once opened. It PINGs when built, so a server that
    is down fails before any work; errors name the server, never the password.
    """

    def __init__(self, url: str, namespace: str, timeout: float = 10.0) -> None:
        try:
            import redis  # the `redis` extra; only when a MinHash URL is set
        except ImportError as error:
            raise MinHashStoreError(
                "SYNTHGRAPH_MINHASH_URL is set but the redis client is not installed: "
                "pip install 'synthgraph[redis]'"
            ) from error
        self.where = url_without_credentials(url)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, ValueError)
        self._prefix = f"synthgraph:minhash:{namespace}:"
        self._client: Any = self._call(
            redis.Redis.from_url, url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        self._call(self._client.ping)
        self._put = self._client.register_script(_PUT)
        self._append = self._client.register_script(_APPEND)
        self._publish = self._client.register_script(_PUBLISH)
        self._token: bytes | None = None  # while this store holds the lock
        self.bands = 0  # set by `open`

    def _key(self, name: str) -> str:
        return self._prefix + name

    # --- MinHashStore ---------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Hold the namespace's lock, renewed every third of `LOCK_SECONDS` until released.

        Always exclusive (`shared` is ignored): readers wait for a writer's whole call, as
        with the file store, and there are few of them.
        """
        token = uuid.uuid4().hex.encode()
        held = self._client.lock(
            self._key("lock"), timeout=LOCK_SECONDS, sleep=LOCK_POLL, thread_local=False
        )
        self._call(held.acquire, token=token)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LOCK_SECONDS / 3):
                try:
                    held.reacquire()
                except Exception:  # lost or unreachable: the fenced writes will fail
                    return

        renewer = threading.Thread(target=renew, name="minhash-lock", daemon=True)
        renewer.start()
        self._token = token
        try:
            yield
        finally:
            self._token = None
            stop.set()
            renewer.join()
            with contextlib.suppress(*self._errors):  # an expired lock is already free
                held.release()

    def open(self, bands: int, rows: int, num_perm: int, seed: int) -> RedisMinHashStore:
        params = f"{bands} {rows} {num_perm} {seed}"
        if not self._call(self._client.set, self._key("params"), params, nx=True):
            stored = self._call(self._client.get, self._key("params")).decode()
            if stored != params:
                raise IndexMismatchError(
                    f"the MinHash store at {self.where} was built with (bands, rows, num_perm, "
                    f"seed) = ({stored.replace(' ', ', ')}), not ({params.replace(' ', ', ')}); "
                    "use the same settings or reset the namespace"
                )
        self.bands = bands
        return self

    def reset(self) -> None:
        """Delete this namespace's keys except the lock (its holder releases it)."""
        names = [self._key(name) for name in ("params", "count", "docs", "bands")]
        self._call(self._client.delete, *names)

    # --- BandIndex ------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._call(self._client.get, self._key("count")) or 0)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(self)  # read first: documents committed after it are not looked at
        if not count or not len(keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        fields = _bucket_fields(keys)
        buckets = self._read("bands", [fields[i : i + 10] for i in range(0, len(fields), 10)])
        found = [(i // self.bands, np.frombuffer(b, "<i8")) for i, b in enumerate(buckets) if b]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        docs = np.concatenate([d for _, d in found]).astype(np.int64)
        query = np.repeat([q for q, _ in found], [len(d) for _, d in found]).astype(np.int64)
        visible = docs < count
        packed = _unique(query[visible] * np.int64(count) + docs[visible])
        return packed // count, packed % count

    def documents(self, docs: np.ndarray) -> StoredDocuments:
        names = [str(d).encode() for d in docs.tolist()]
        ids: list[str] = []
        owners: list[str] = []
        tokens: list[np.ndarray] = [np.zeros(0, np.uint64)]
        for name, value in zip(names, self._read("docs", names), strict=True):
            if value is None:
                raise MinHashStoreError(
                    f"the MinHash store at {self.where} has no document {name.decode()}"
                )
            owner, record_id, hashes = _unpack(value)
            owners.append(owner)
            ids.append(record_id)
            tokens.append(hashes)
        lengths = [len(t) for t in tokens[1:]]
        offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)].astype(np.int64)
        return StoredDocuments(ids, owners, np.concatenate(tokens), offsets)

    def add(self, documents: StoredDocuments, keys: np.ndarray) -> None:
        """Write the documents past `count`, then move `count` over them (see the module)."""
        ids, owners, tokens, offsets = (
            documents.ids, documents.owners, documents.tokens, documents.offsets,
        )  # fmt: skip
        if not len(ids):
            return
        start = len(self)
        fields = _bucket_fields(keys)
        # One entry per (document, band), in the order of `_bucket_fields`.
        numbers = np.repeat(np.arange(start, start + len(ids), dtype="<i8"), self.bands).tobytes()
        size = self.bands  # entries per document
        for first in range(0, len(ids), _WRITE_CHUNK):
            last = min(first + _WRITE_CHUNK, len(ids))
            records: list[bytes] = []
            for i in range(first, last):
                hashes = tokens[offsets[i] : offsets[i + 1]]
                records += [str(start + i).encode(), _pack(owners[i], ids[i], hashes)]
            self._fenced(self._put, "docs", records)
            chunk = [
                fields[10 * size * first : 10 * size * last],
                numbers[8 * size * first : 8 * size * last],
            ]
            self._fenced(self._append, "bands", chunk)
        self._fenced(self._publish, "count", [str(start).encode(), str(start + len(ids)).encode()])

    # --- reads and fenced writes ----------------------------------------------------

    def _read(self, hash_name: str, fields: list[bytes]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for start in range(0, len(fields), _READ_CHUNK):
            chunk = fields[start : start + _READ_CHUNK]
            values += self._call(self._client.hmget, self._key(hash_name), chunk)
        return values

    def _fenced(self, script: Any, name: str, args: list[bytes]) -> None:
        """Run a write script on key `name`; it writes only while this store holds the lock."""
        keys = [self._key("lock"), self._key(name)]
        if not self._call(script, keys=keys, args=[self._held_token(), *args]):
            raise self._lost()

    def _held_token(self) -> bytes:
        if self._token is None:
            raise MinHashStoreError(
                f"writing to the MinHash store at {self.where} needs its lock: `with store.lock():`"
            )
        return self._token

    def _lost(self) -> MinHashStoreError:
        return MinHashStoreError(
            f"lost the lock of the MinHash store at {self.where} (held longer than it could "
            "renew it?): nothing of this batch was stored; run it again"
        )

    def _call(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except self._errors as error:
            raise MinHashStoreError(
                f"the MinHash store at {self.where} (SYNTHGRAPH_MINHASH_URL) failed: {error}"
            ) from error


def _bucket_fields(keys: np.ndarray) -> bytes:
    """Hash fields of `keys` row by row, 10 bytes each: band number and band key, little-endian."""
    n, bands = keys.shape
    packed = np.empty((n, bands, 10), np.uint8)
    packed[:, :, :2] = np.arange(bands, dtype="<u2").view(np.uint8).reshape(bands, 2)
    packed[:, :, 2:] = keys.astype("<u8").view(np.uint8).reshape(n, bands, 8)
    return packed.tobytes()


_HEADER = struct.Struct("<II")  # bytes of owner, bytes of id


def _pack(owner: str, record_id: str, hashes: np.ndarray) -> bytes:
    who, name = owner.encode(), record_id.encode()
    return _HEADER.pack(len(who), len(name)) + who + name + hashes.astype("<u8").tobytes()


def _unpack(value: bytes) -> tuple[str, str, np.ndarray]:
    owner_size, id_size = _HEADER.unpack_from(value)
    start = _HEADER.size
    owner = value[start : start + owner_size].decode()
    record_id = value[start + owner_size : start + owner_size + id_size].decode()
    hashes = np.frombuffer(value, "<u8", offset=start + owner_size + id_size).astype(np.uint64)
    return owner, record_id, hashes
