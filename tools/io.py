"""The one reader and writer for records: JSONL (append-safe), Parquet, CSV.

JSONL outputs are append-only and flushed per write, so a killed run loses at
most the line being written; reopening a file repairs a torn last line. That,
plus `done_ids`, is what makes `--resume` exactly-once for every graph.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from synthgraph.tools.log import redact


class InputError(ValueError):
    """Bad input, naming the file, the record and the cause."""


def _cause(error: Exception) -> str | None:
    """What a reader's exception says about its input file (None: not about the input)."""
    import pyarrow  # only once something failed: it is slow to import

    detail = " ".join(str(error).split())  # libraries' messages span lines; ours is one
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.object[error.start]:#04x}); save it as UTF-8"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno})"
    if isinstance(error, pd.errors.ParserError):
        return f"not valid CSV ({detail})"
    if isinstance(error, pyarrow.ArrowException):
        if "magic bytes" in detail:
            return "not a Parquet file"
        return f"not a readable Parquet file ({detail})"
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, OSError):
        return f"cannot read it ({error.strerror or error})"
    return None


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Read `path` inside this: decode, parse and file errors become one `InputError` naming it."""
    try:
        yield
    except InputError:
        raise
    except Exception as error:
        cause = _cause(error)
        if cause is None:
            raise
        raise InputError(f"{path}: {cause}") from error


def content_id(*parts: str, length: int = 16) -> str:
    """A stable id derived from content (same text, same id, across runs)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a link, symbolic or hard, as the file itself (`InputError`).

    Outputs are opened this way, so a link planted where a run writes cannot
    send its records (or a tail repair) to a file somewhere else.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{path}: a symbolic link; outputs never go through links") from error
        raise
    if os.fstat(fd).st_nlink > 1:  # a hard link is a second name of a file that may lie elsewhere
        os.close(fd)
        raise InputError(f"{path}: has other hard links; outputs are never written through them")
    return fd


def _repair_tail(path: Path) -> None:
    """Cut a torn last line left by a killed writer, keeping every whole line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with os.fdopen(open_nofollow(path, os.O_RDWR), "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        cut = handle.read().rfind(b"\n") + 1
        handle.truncate(cut)


class JsonlWriter:
    """Thread-safe, append-only JSONL writer.

    Each `write_many` is one `O_APPEND` write of whole lines, so a killed
    process leaves either all of a batch or none of it: write one input's
    outputs in one call and their presence marks that input done.
    """

    def __init__(self, path: Path | str, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_tail(self.path)
        self._fd: int | None = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._lock = threading.Lock()
        self._fsync = fsync
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records]
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path}: writer is closed")
            view = memoryview(data)
            while view:  # regular files take it in one call; loop only for safety
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
            self.count += len(lines)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RejectsWriter(JsonlWriter):
    """Records that failed: id, stage, error, raw output, and whether a retry may fix it.

    `retryable` is decided by the caller from the exception (the endpoint was
    down, rate-limited or answered garbage); `--resume` retries those inputs.
    """

    def reject(
        self,
        record_id: str | None,
        stage: str,
        error: BaseException | str,
        raw: str | None = None,
        *,
        retryable: bool = False,
    ) -> None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if raw is None and not isinstance(error, str):
            raw = getattr(error, "raw", None)
        record = {
            "id": record_id,
            "stage": stage,
            "error": message,
            "raw": raw,
            "retryable": retryable,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.write(redact(record))  # endpoints echo API keys in their errors


def _jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None, bool]]:
    """(line number, record or None, problem or None, is the file's last, unterminated line).

    A line that is not UTF-8 stops the read: the file is not text, so no record of it is.
    """
    with reading(path), path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: {_cause(error)}") from error
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, None, f"not valid JSON ({error.msg})", not line.endswith("\n")
                continue
            if not isinstance(record, dict):
                yield number, None, f"expected a JSON object, got {type(record).__name__}", False
                continue
            yield number, record, None, False


def read_jsonl(path: Path | str) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a malformed line raises `InputError` naming it."""
    path = Path(path)
    for number, record, problem, torn in _jsonl_lines(path):
        if torn:
            return  # a torn last line from a killed writer: not data
        if problem:
            raise InputError(f"{path}:{number}: {problem}")
        assert record is not None
        yield record


def count_records(path: Path | str) -> int:
    """Records in a JSONL output (0 when it does not exist yet)."""
    path = Path(path)
    return sum(1 for _ in read_jsonl(path)) if path.exists() else 0


def done_ids(path: Path | str, id_field: str = "id") -> set[str]:
    """Ids already written to a JSONL output (empty when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return set()
    _repair_tail(path)
    return {str(r[id_field]) for r in read_jsonl(path) if r.get(id_field) is not None}


_NESTED = (list, tuple, dict, np.ndarray)


def read_table(path: Path | str, flat: bool = False) -> pd.DataFrame:
    """A CSV, Parquet or JSONL file as a DataFrame (an empty file: no rows).

    With `flat`, a cell holding a list or struct is an `InputError` naming its row and column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with reading(path):
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            try:
                frame = pd.read_csv(path)
            except pd.errors.EmptyDataError:
                frame = pd.DataFrame()
        elif suffix in {".jsonl", ".ndjson"}:
            frame = pd.DataFrame(list(read_jsonl(path)))
        else:
            raise InputError(
                f"{path}: unsupported table format {suffix!r} (use .csv, .parquet or .jsonl)"
            )
    if flat:
        for column in frame.select_dtypes(include="object").columns:
            nested = frame[column].map(lambda value: isinstance(value, _NESTED))
            if nested.any():
                raise InputError(
                    f"{path}: row {int(nested.argmax()) + 1}, column {column!r}: "
                    "a list or struct where a flat value is needed"
                )
    return frame


def write_table(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write a DataFrame as CSV, Parquet or JSONL (by extension), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a link planted at tmp goes, instead of being written through
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    elif suffix == ".csv":
        frame.to_csv(tmp, index=False)
    elif suffix in {".jsonl", ".ndjson"}:
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False, date_format="iso")
    else:
        raise InputError(f"{path}: unsupported table format {suffix!r}")
    tmp.replace(path)
    return path


def write_records(records: list[dict[str, Any]], path: Path | str) -> Path:
    """Write whole records at once (JSONL or Parquet by extension), atomically."""
    path = Path(path)
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with JsonlWriter(tmp, fsync=False) as writer:
            writer.write_many(records)
        tmp.replace(path)
        return path
    return write_table(pd.DataFrame(records), path)


def write_json(data: Any, path: Path | str) -> Path:
    """Pretty JSON, written atomically (manifests, reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a link planted at tmp goes, instead of being written through
    text = json.dumps(redact(data), indent=2, ensure_ascii=False, default=str)
    tmp.write_text(text + "\n", "utf-8")
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class TextRecord:
    """One input text with a stable id and where it came from."""

    id: str
    text: str
    source: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class InputProblem:
    """An input record that cannot be used, and why (goes to the rejects file)."""

    record: str
    cause: str


def load_texts(
    path: Path | str,
    text_field: str = "text",
    id_field: str = "id",
    suffixes: tuple[str, ...] = (".txt", ".md"),
) -> tuple[list[TextRecord], list[InputProblem]]:
    """Texts from a folder of files, a JSONL or a Parquet/CSV file.

    Bad records do not stop the load: each comes back as an `InputProblem`
    naming the record and the cause, so the run goes on without it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    records: list[TextRecord] = []
    problems: list[InputProblem] = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise InputError(f"{path}: no {', '.join(suffixes)} files in this folder")
        for file in files:
            name = str(file.relative_to(path))
            try:
                text = file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                problems.append(InputProblem(name, "not UTF-8 text"))
                continue
            if not text:
                problems.append(InputProblem(name, "empty file"))
                continue
            records.append(TextRecord(content_id(text), text, name, {"file": name}))
        return records, problems

    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        rows: Iterable[tuple[str, Any]] = _jsonl_rows(path, problems)
    elif suffix in {".parquet", ".csv"}:
        frame = read_table(path)
        if frame.empty:
            return records, problems
        if text_field not in frame.columns:
            raise InputError(
                f"{path}: no column {text_field!r} (columns: {', '.join(map(str, frame.columns))}); "
                "name the text column with --text-field"
            )
        rows = ((f"row {i + 1}", row) for i, row in enumerate(frame.to_dict("records")))
    elif suffix in suffixes:
        with reading(path):
            text = path.read_text(encoding="utf-8").strip()
        if not text:
            return records, [InputProblem(path.name, "empty file")]
        return [TextRecord(content_id(text), text, path.name, {"file": path.name})], problems
    else:
        raise InputError(
            f"{path}: unsupported input {suffix!r} (folder of .txt, .jsonl, .parquet, .csv)"
        )

    for where, row in rows:
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            problems.append(InputProblem(where, f"field {text_field!r} is missing or not text"))
            continue
        text = text.strip()
        raw_id = row.get(id_field)
        # A missing cell (None, NaN, "") or a nested one is no id: derive one from the text.
        given = pd.api.types.is_scalar(raw_id) and not pd.isna(raw_id) and raw_id != ""
        record_id = str(raw_id) if given else content_id(text)
        meta = {k: v for k, v in row.items() if k not in {text_field, id_field}}
        records.append(TextRecord(record_id, text, where, meta))
    return records, problems


def _jsonl_rows(path: Path, problems: list[InputProblem]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, record, problem, _ in _jsonl_lines(path):
        if record is None:
            problems.append(InputProblem(f"line {number}", problem or "unreadable"))
        else:
            yield f"line {number}", record
