"""How the dashboard reads the database: read-only, one snapshot per request, and never for
long.

DuckDB lets a single process hold a file read-write, and then nobody else can open it; while
any process holds it read-only, no writer can open it either. Opening costs a connection
(tens of milliseconds), so the dashboard keeps one read-only store open between requests, but
only while pages are being read: it is closed ``hold`` seconds after the last request ends.
An agent that starts meanwhile gets ``StoreLockedError`` from its open and can retry (see
docs/dashboard.md). When an agent holds the file, :meth:`SessionStore.open_read_only`
reads the snapshot the agent publishes beside it; holding that blocks nobody.

A store is replaced as soon as the files change (:meth:`StoreReader.fingerprint`: a few
``stat`` calls), so a request never reads an older state than the files hold; the old store
is closed once the requests still using it finish.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .._publish import SNAPSHOT_SUFFIX
from ..errors import StoreError
from ..store import SessionStore

__all__ = ["StoreReader"]

# DuckDB's write-ahead log sits beside the file; a commit changes it before a checkpoint
# folds it into the file.
_WAL_SUFFIX = ".wal"

Fingerprint = tuple[tuple[int, int, int], ...]


class StoreReader:
    """Read-only access to the database at ``path``, shared by concurrent requests."""

    def __init__(self, path: str | os.PathLike[str], *, hold: float = 1.0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"no database at {self.path}; record a sample with "
                f"`perspt-store --db {self.path} demo`"
            )
        self.hold = hold
        self._lock = threading.Lock()
        self._store: SessionStore | None = None
        self._store_print: Fingerprint | None = None
        self._users: dict[int, int] = {}  # id(store) -> requests using it
        self._retired: dict[int, SessionStore] = {}
        self._prints: dict[int, Fingerprint] = {}  # id(store) -> the files when it opened
        self._last_release = 0.0
        self._closer: threading.Timer | None = None

    @contextlib.contextmanager
    def read(self) -> Iterator[SessionStore]:
        """A read-only store whose reads inside the block all see one snapshot.

        Raises:
            StoreLockedError: A writer holds the file and has published no snapshot yet.
        """
        store = self._acquire()
        try:
            with store.consistent_read():
                yield store
        finally:
            self._release(store)

    def fingerprint(self) -> Fingerprint:
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

    def version_of(self, store: SessionStore) -> Fingerprint:
        """The files' fingerprint when ``store`` (one this reader handed out) was opened:
        what it reads is exactly what they held then."""
        return self._prints[id(store)]

    def close(self) -> None:
        """Close the held store now (the next request opens it again)."""
        with self._lock:
            if self._store is not None:
                self._retire_current()

    def _acquire(self) -> SessionStore:
        with self._lock:
            current = self.fingerprint()
            if self._store is not None and current != self._store_print:
                self._retire_current()  # the files changed: read them anew
            if self._store is None:
                self._store = SessionStore.open_read_only(self.path)
                self._store_print = current
                self._prints[id(self._store)] = current
            store = self._store
            self._users[id(store)] = self._users.get(id(store), 0) + 1
            return store

    def _release(self, store: SessionStore) -> None:
        with self._lock:
            key = id(store)
            self._users[key] -= 1
            if self._users[key] == 0 and key in self._retired:
                del self._users[key]
                self._prints.pop(key, None)
                self._retired.pop(key).close()
            self._last_release = time.monotonic()
            if self._closer is None and self._store is not None:
                self._closer = threading.Timer(self.hold, self._close_when_idle)
                self._closer.daemon = True
                self._closer.start()

    def _close_when_idle(self) -> None:
        with self._lock:
            self._closer = None
            if self._store is None:
                return
            idle = time.monotonic() - self._last_release
            if idle >= self.hold and self._users.get(id(self._store), 0) == 0:
                self._retire_current()
            else:  # used since: look again when the hold runs out
                self._closer = threading.Timer(max(self.hold - idle, 0.01), self._close_when_idle)
                self._closer.daemon = True
                self._closer.start()

    def _retire_current(self) -> None:
        """Stop handing out the current store; close it now or when its last user ends."""
        store, self._store, self._store_print = self._store, None, None
        assert store is not None
        if self._users.get(id(store), 0) == 0:
            self._users.pop(id(store), None)
            self._prints.pop(id(store), None)
            store.close()
        else:
            self._retired[id(store)] = store
