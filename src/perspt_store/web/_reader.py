"""How the dashboard reads the database: briefly, read-only, one snapshot per request.

DuckDB lets a single process hold a file read-write, and then nobody else can open it; while
any process holds it read-only, no writer can open it either. So the dashboard never keeps
the file open: each request opens it with :meth:`SessionStore.open_read_only` (which falls
back to the writer's published ``<db>.snapshot`` when an agent holds the file), reads inside
one :meth:`~SessionStore.consistent_read`, and closes it. An agent can start at any time
except during those few milliseconds.

:meth:`StoreReader.fingerprint` tells cheaply (a few ``stat`` calls, no open) whether the
files changed, so the live-update stream only reads when something may have.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .._publish import SNAPSHOT_SUFFIX
from ..errors import StoreError
from ..store import SessionStore

__all__ = ["StoreReader"]

# DuckDB's write-ahead log sits beside the file; a commit changes it before a checkpoint
# folds it into the file.
_WAL_SUFFIX = ".wal"


class StoreReader:
    """Opens the database at ``path`` read-only for the length of one ``with read()``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"no database at {self.path}; record a sample with "
                f"`perspt-store --db {self.path} demo`"
            )

    @contextlib.contextmanager
    def read(self) -> Iterator[SessionStore]:
        """A read-only store, every read inside seeing one snapshot; closed on exit.

        Raises:
            StoreLockedError: A writer holds the file and has published no snapshot yet.
        """
        with SessionStore.open_read_only(self.path) as store, store.consistent_read():
            yield store

    def fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        """(inode, size, mtime) of the file, its WAL and its published snapshot: changes
        whenever a commit or a publish may have changed what a read returns."""
        marks = []
        for suffix in ("", _WAL_SUFFIX, SNAPSHOT_SUFFIX):
            try:
                st = os.stat(f"{self.path}{suffix}")
            except OSError:
                marks.append((0, 0, 0))
            else:
                marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(marks)
