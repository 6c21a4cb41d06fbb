"""An advisory file lock between processes (and threads) of one machine.

`fcntl.flock` on a lock file: each `file_lock` opens the file anew, so two
threads of one process exclude each other as two processes do. The kernel
drops the lock when its holder exits, even on SIGKILL, so a killed run never
leaves a stale lock. It only works on a local filesystem: flock over NFS or
between machines is not reliable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold `path` locked (exclusive, or shared with other readers) for the block.

    The holder of an exclusive lock may delete the lock file (to leave nothing
    behind); whoever was waiting on the deleted file then locks the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except FileNotFoundError:
                current = False
            if current:
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                return
