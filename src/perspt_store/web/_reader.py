"""How the dashboard reads the database without ever standing in an agent's way.

DuckDB lets one process hold a file read-write, and while any process holds it, even
read-only, no writer can open it: a dashboard that opened the file would make an agent's
open fail with ``StoreLockedError``. So the dashboard never opens the live file with DuckDB.
It reads a private copy, made with plain reads (which take no lock):

* when no process holds the file read-write, a copy of the file (and of its write-ahead log,
  if a writer that crashed left one), kept only if neither changed while it was copied;
* when a writer holds it, a copy of the snapshot the writer publishes beside it
  (``<db>.snapshot``, see :mod:`perspt_store._publish`); pages then say how old it is.

One copy serves every request until the files it came from change (a few ``stat`` calls per
request, and a look at the file locks when they changed); then the next request makes a new
one, and the old copy is closed and deleted once the requests still using it finish. A copy of
the file costs about as much as reading it once; it is made only when the file changed and no
writer holds it, i.e. after an agent finished.

Whether a writer holds the file is read from the kernel's table of file locks
(``/proc/locks`` on Linux, ``F_GETLK`` elsewhere on POSIX), which asks without locking.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import shutil
import struct
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._publish import SNAPSHOT_SUFFIX, read_snapshot_time, staleness
from ..errors import StoreError, StoreLockedError
from ..store import SessionStore
from ..store.internals import internals

__all__ = ["StoreReader", "writer_holds"]

# DuckDB's write-ahead log sits beside the file; a commit changes it before a checkpoint
# folds it into the file.
_WAL_SUFFIX = ".wal"
_COPY_ATTEMPTS = 3  # a copy that raced a writer is made again, then the snapshot is read

Mark = tuple[int, int, int]
Fingerprint = tuple[Mark, ...]


def _mark(path: str | os.PathLike[str]) -> Mark:
    """(inode, size, mtime) of a file, or zeros if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def writer_holds(path: str | os.PathLike[str]) -> bool:
    """Whether some process holds a write lock on ``path`` (DuckDB's read-write open), asked
    without taking or releasing any lock of this process."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        try:
            with open("/proc/locks", encoding="ascii", errors="replace") as locks:
                return any(
                    len(fields) > 5 and fields[3] == "WRITE" and fields[5] == device
                    for fields in (line.split() for line in locks)
                )
        except OSError:
            pass
    try:
        import fcntl
    except ImportError:  # Windows: a locked file cannot be copied, and the copy says so
        return False
    # Ask whether a read lock could be taken (only a write lock conflicts). Closing the
    # descriptor would drop this process's own locks on the file, but F_GETLK never reports
    # those, so a writer in this process is caught by the copy's change check instead.
    query = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK)


@dataclass
class _View:
    """One private copy, open read-only, and where it came from."""

    store: SessionStore
    files: list[Path]
    source: Fingerprint
    snapshot_time: _dt.datetime | None
    is_snapshot: bool
    users: int = 0
    retired: bool = False
    seen: Fingerprint | None = None  # the files' fingerprint when last found current

    def close(self) -> None:
        self.store.close()
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()


class StoreReader:
    """Read access to the database at ``path`` through private copies, shared by concurrent
    requests; never holds the file itself."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"no database at {self.path}; record a sample with "
                f"`perspt-store --db {self.path} demo`"
            )
        self._wal = Path(f"{self.path}{_WAL_SUFFIX}")
        self._snapshot = Path(f"{self.path}{SNAPSHOT_SUFFIX}")
        self._lock = threading.Lock()
        self._view: _View | None = None
        self._views: dict[int, _View] = {}  # id(store) -> its view, while open
        self._dir = Path(tempfile.mkdtemp(prefix="perspt-dashboard-"))
        self._names = itertools.count()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)

    @contextlib.contextmanager
    def read(self) -> Iterator[SessionStore]:
        """A read-only store whose reads inside the block all see one state of the files.

        Raises:
            StoreLockedError: A writer holds the file and has published no snapshot yet.
        """
        view = self._acquire()
        try:
            with view.store.consistent_read():
                yield view.store
        finally:
            self._release(view)

    def fingerprint(self) -> Fingerprint:
        """(inode, size, mtime) of the file, its WAL and its published snapshot: changes
        whenever a commit or a publish may have changed what a read returns."""
        return (_mark(self.path), _mark(self._wal), _mark(self._snapshot))

    def version_of(self, store: SessionStore) -> Fingerprint:
        """The state of the files ``store`` (one this reader handed out) is a copy of."""
        return self._views[id(store)].source

    def freshness(self, store: SessionStore) -> dict[str, Any]:
        """Whether ``store`` reads a writer's published snapshot, when that was taken, and
        its age in seconds (0.0 for a copy of the file itself)."""
        view = self._views[id(store)]
        return {
            "snapshot": view.is_snapshot,
            "snapshot_time": view.snapshot_time,
            "staleness": staleness(view.snapshot_time) if view.is_snapshot else 0.0,
        }

    def close(self) -> None:
        """Close and delete the copies (a later request makes a new one)."""
        with self._lock:
            if self._view is not None:
                self._retire(self._view)
                self._view = None

    # -- internals

    def _acquire(self) -> _View:
        with self._lock:
            files = self.fingerprint()
            view = self._view
            if view is not None and view.seen == files:
                # Nothing changed since the copy was made or last checked: still current.
                # (Reading the lock table costs milliseconds; a writer that has only opened
                # the file changed nothing, and its first commit or publish changes the files.)
                view.users += 1
                return view
            writing = writer_holds(self.path)
            source = self._source(writing)
            if view is not None and (view.is_snapshot != writing or view.source != source):
                self._retire(view)
                view = self._view = None
            if view is None:
                view = self._view = self._open_view(writing)
            view.seen = files if self._source(writing) == view.source else None
            view.users += 1
            return view

    def _release(self, view: _View) -> None:
        with self._lock:
            view.users -= 1
            if view.retired and view.users == 0:
                self._views.pop(id(view.store), None)
                view.close()

    def _retire(self, view: _View) -> None:
        view.retired = True
        if view.users == 0:
            self._views.pop(id(view.store), None)
            view.close()

    def _source(self, writing: bool) -> Fingerprint:
        if writing:
            return (_mark(self._snapshot),)
        return (_mark(self.path), _mark(self._wal))

    def _open_view(self, writing: bool) -> _View:
        if not writing:
            for _ in range(_COPY_ATTEMPTS):
                view = self._copy_file()
                if view is not None:
                    return view
                if writer_holds(self.path):
                    break  # an agent started meanwhile: read what it publishes
        return self._copy_snapshot()

    def _target(self) -> Path:
        return self._dir / f"view-{next(self._names)}.db"

    def _copy_file(self) -> _View | None:
        """A copy of the file (and its WAL), or None if either changed while copying."""
        before = self._source(False)
        target = self._target()
        files = [target, Path(f"{target}{_WAL_SUFFIX}")]
        try:
            shutil.copyfile(self.path, target)
            if before[1] != (0, 0, 0):
                shutil.copyfile(self._wal, files[1])
        except FileNotFoundError:  # the WAL was folded into the file meanwhile
            self._discard(files)
            return None
        except OSError as exc:  # e.g. Windows: the writer's lock forbids reading
            self._discard(files)
            if self._snapshot.exists():
                return None
            raise StoreLockedError(
                f"cannot read {self.path}: {exc}", operation="open"
            ) from exc
        if self._source(False) != before or writer_holds(self.path):
            self._discard(files)
            return None
        return self._register(target, files, before, snapshot=False)

    def _copy_snapshot(self) -> _View:
        source = self._source(True)
        target = self._target()
        try:
            shutil.copyfile(self._snapshot, target)
        except OSError as exc:
            self._discard([target])
            raise StoreLockedError(
                f"{self.path} is locked by another process (DuckDB allows one writer process "
                f"and no readers beside it), and it has published no read snapshot "
                f"({self._snapshot.name}) yet: open the writer with a publish_interval, or "
                "wait for its first publish",
                operation="open",
            ) from exc
        return self._register(target, [target], source, snapshot=True)

    def _register(
        self, target: Path, files: list[Path], source: Fingerprint, *, snapshot: bool
    ) -> _View:
        try:
            store = SessionStore.open_read_only(target)
        except BaseException:
            self._discard(files)
            raise
        # A copy of the published snapshot says when it was taken (the publisher stamps it).
        taken = read_snapshot_time(internals(store).cursor()) if snapshot else None
        view = _View(store, files, source, taken, snapshot)
        self._views[id(store)] = view
        return view

    @staticmethod
    def _discard(files: list[Path]) -> None:
        for path in files:
            with contextlib.suppress(OSError):
                path.unlink()
