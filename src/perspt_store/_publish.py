"""Read snapshots: how a second process can look at a database while a writer holds it.

DuckDB lets one process open a file read-write, and then no other process can open it at all,
not even read-only ("Could not set lock on file"). So a read-write file store *publishes* a
consistent copy of itself beside the database, ``<db>.snapshot`` (e.g. ``perspt.db.snapshot``),
and :meth:`SessionStore.open_read_only` falls back to that copy when the file is locked.

Publishing (:func:`publish`):

1. ATTACH a new temporary file ``<db>.snapshot.tmp-<pid>-<n>`` beside the database;
2. in one read transaction (one consistent MVCC view of every committed write), copy each
   table with ``CREATE TABLE ... AS SELECT *`` (data and column types; constraints, indexes
   and sequences are left out: a snapshot is only ever read), and record in its
   ``perspt_store_meta`` table the time the view was taken (``snapshot_taken_at``, taken
   *before* the transaction started, so the view holds at least every write committed by then);
3. DETACH (which checkpoints and closes the file: no WAL is left beside it);
4. ``os.replace`` it over ``<db>.snapshot``: readers see the old file or the new one, never a
   partial one. A reader that already has the old snapshot open keeps reading it (POSIX keeps
   the unlinked inode alive; on Windows the replace fails while a reader holds the file, and
   the publisher retries at the next interval).

:class:`Publisher` runs this on a daemon thread at most every ``interval`` seconds, only when
something was committed since the last publish (and once after opening), never spending more
than about a fifth of its time publishing (on a large file the interval stretches to four times
the last copy's duration), and once more on ``close()``. Temporary files left by a process that
was killed mid-publish are removed when the database is next opened read-write.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import itertools
import logging
import os
import re
import threading
import time
import weakref
from pathlib import Path

import duckdb

from . import _engine
from .errors import StoreLockedError

__all__ = [
    "DEFAULT_PUBLISH_INTERVAL",
    "SNAPSHOT_ALIAS",
    "SNAPSHOT_SUFFIX",
    "Publisher",
    "open_snapshot",
    "publish",
    "read_snapshot_time",
    "remove_stale_temporaries",
    "snapshot_path",
    "staleness",
]

logger = logging.getLogger("perspt_store")

SNAPSHOT_SUFFIX = ".snapshot"
"""``<db><SNAPSHOT_SUFFIX>`` is the published read snapshot of ``<db>``."""

SNAPSHOT_ALIAS = "perspt_snapshot"
"""The name a snapshot is attached under in a reader (every cursor ``USE``s it)."""

DEFAULT_PUBLISH_INTERVAL = 2.0
"""Seconds between publishes of a read-write file store (when it was written to)."""

_TMP_INFIX = ".tmp-"
_MAX_DUTY_FACTOR = 4.0  # wait at least 4x the last publish's duration: <= ~20% busy
_META_TABLE = "perspt_store_meta"
# Tables are copied by name; only plain lower-case identifiers are ever put into SQL (every
# table of the schema is one). Anything else a user created is left out of the snapshot.
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_counter = itertools.count()


def snapshot_path(db: Path) -> Path:
    """Where the read snapshot of ``db`` is published: ``<db>.snapshot``."""
    return db.with_name(db.name + SNAPSHOT_SUFFIX)


def _temporaries(db: Path) -> list[Path]:
    prefix = db.name + SNAPSHOT_SUFFIX + _TMP_INFIX
    if not db.parent.is_dir():
        return []
    return [p for p in db.parent.iterdir() if p.name.startswith(prefix)]


def remove_stale_temporaries(db: Path) -> None:
    """Delete half-written snapshot files left by a publisher that was killed.

    Only call this while holding ``db`` read-write: no other process can be publishing then
    (another store of this process may be, so this process's own files are kept).
    """
    mine = f"{db.name}{SNAPSHOT_SUFFIX}{_TMP_INFIX}{os.getpid()}-"
    for path in _temporaries(db):
        if not path.name.startswith(mine):
            with contextlib.suppress(OSError):
                path.unlink()


def read_snapshot_time(conn: duckdb.DuckDBPyConnection) -> _dt.datetime | None:
    """When the snapshot opened on ``conn`` was taken (UTC), or None if it does not say."""
    try:
        row = conn.execute(
            f"SELECT value FROM {_META_TABLE} WHERE key = 'snapshot_taken_at'"
        ).fetchone()
    except duckdb.Error:
        return None
    return _dt.datetime.fromisoformat(row[0]) if row else None


def publish(conn: duckdb.DuckDBPyConnection, db: Path) -> _dt.datetime:
    """Publish a consistent copy of the database ``conn`` has open as ``<db>.snapshot``.

    Uses its own cursor, so it runs beside other threads' reads and writes; it sees only
    committed data.

    Returns:
        The time the copied view was taken (UTC): every write committed before it is in it.

    Raises:
        duckdb.Error, OSError: The copy or the rename failed; the previous snapshot stays.
    """
    tmp = db.with_name(f"{db.name}{SNAPSHOT_SUFFIX}{_TMP_INFIX}{os.getpid()}-{next(_counter)}")
    alias = f"perspt_snapshot_{os.getpid()}_{next(_counter)}"  # digits only: a safe name
    cursor = conn.cursor()
    try:
        cursor.execute(
            f"ATTACH ? AS {alias} {_engine.NEW_FILE_ATTACH}", [str(tmp)]
        ).fetchall()
        try:
            taken_at = _dt.datetime.now(_dt.UTC)
            cursor.execute("BEGIN TRANSACTION").fetchall()
            try:
                _copy_tables(cursor, alias, taken_at, db)
                cursor.execute("COMMIT").fetchall()
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.execute(f"DETACH {alias}").fetchall()
        os.replace(tmp, snapshot_path(db))
        return taken_at
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _copy_tables(
    cursor: duckdb.DuckDBPyConnection, alias: str, taken_at: _dt.datetime, db: Path
) -> None:
    tables = [
        name
        for (name,) in cursor.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND NOT temporary ORDER BY table_name"
        ).fetchall()
        if _PLAIN_IDENTIFIER.fullmatch(name)
    ]
    for table in tables:
        # Insertion order travels in the columns (id, row_order), not in the copy's rowids.
        cursor.execute(f"CREATE TABLE {alias}.{table} AS SELECT * FROM main.{table}").fetchall()
    views = cursor.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT internal AND NOT temporary ORDER BY view_name"
    ).fetchall()
    if views:  # merkle_log, among others: created in the copy, over the copy's tables
        ((home,),) = cursor.execute("SELECT current_database()").fetchall()
        cursor.execute(f"USE {alias}").fetchall()
        try:
            for (sql,) in views:
                cursor.execute(sql).fetchall()
        finally:
            cursor.execute(f'USE "{home.replace(chr(34), chr(34) * 2)}"').fetchall()
    if _META_TABLE not in tables:
        cursor.execute(
            f"CREATE TABLE {alias}.{_META_TABLE} (key VARCHAR, value VARCHAR)"
        ).fetchall()
    cursor.execute(
        f"INSERT INTO {alias}.{_META_TABLE} (key, value) VALUES "
        "('snapshot_taken_at', ?), ('snapshot_of', ?)",
        [taken_at.isoformat(), str(db)],
    ).fetchall()


class Publisher:
    """Publishes a read-write store's snapshot from a daemon thread (see the module doc).

    The store calls :meth:`note_change` after every committed write and :meth:`close` before
    it closes its connection.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, db: Path, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"publish_interval must be > 0 seconds (or None), not {interval!r}")
        self._conn = conn
        self._db = db
        self.interval = float(interval)
        self._changes = 1  # a fresh writer publishes once: an older snapshot may be stale
        self._published = 0
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self.last_published: _dt.datetime | None = None
        """When the last published snapshot's view was taken (UTC)."""
        self.last_duration = 0.0
        """How long the last publish took, in seconds."""
        self.publishes = 0
        """How many snapshots this publisher has written."""
        self._thread = threading.Thread(
            target=self._run, name=f"perspt-store-publisher:{db.name}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    @property
    def path(self) -> Path:
        """The snapshot file."""
        return snapshot_path(self._db)

    def note_change(self) -> None:
        """Something was committed: the next tick publishes."""
        self._changes += 1

    def _run(self) -> None:
        while not self._stop.wait(max(self.interval, _MAX_DUTY_FACTOR * self.last_duration)):
            try:
                self.publish_if_changed()
            except Exception as exc:  # keep publishing later; the old snapshot stays
                logger.warning("could not publish the read snapshot of %s: %s", self._db, exc)

    def publish_if_changed(self) -> bool:
        """Publish now if anything was committed since the last publish; True if it did."""
        with self._publish_lock:
            changes = self._changes
            if changes == self._published:
                return False
            started = time.perf_counter()
            self.last_published = publish(self._conn, self._db)
            self.last_duration = time.perf_counter() - started
            self._published = changes
            self.publishes += 1
            return True

    def stop(self) -> None:
        """Stop the thread (after a publish in progress); idempotent."""
        self._stop.set()
        _LIVE.discard(self)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Stop the thread and publish the final state (if it changed); idempotent."""
        self.stop()
        try:
            self.publish_if_changed()
        except Exception as exc:
            logger.warning("could not publish the final snapshot of %s: %s", self._db, exc)


_LIVE: weakref.WeakSet[Publisher] = weakref.WeakSet()


@atexit.register
def _stop_publishers() -> None:
    """At interpreter exit, let publishes in progress finish (stores left open publish no
    final snapshot; their last published one stays valid)."""
    for publisher in list(_LIVE):
        publisher.stop()


def open_snapshot(db: Path, cause: BaseException) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """Open the published snapshot of ``db`` read-only (``db`` itself is locked).

    Returns:
        The connection and the snapshot's path.

    Raises:
        StoreLockedError: There is no snapshot to fall back to (the writer publishes none:
            it was opened with ``publish_interval=None``, or has not published yet).
    """
    path = snapshot_path(db)
    conn = _engine.connect(":memory:")  # extensions off: a bad file never reaches the network
    try:
        # A rename swaps whole files: this opens either the previous snapshot or the next.
        # It is attached to a private in-memory instance rather than connected to by path:
        # DuckDB hands a second connect() to a path this process already has open the
        # existing instance, i.e. the snapshot as it was then, not the file there now.
        conn.execute(f"ATTACH ? AS {SNAPSHOT_ALIAS} (READ_ONLY)", [str(path)]).fetchall()
        conn.execute(f"USE {SNAPSHOT_ALIAS}").fetchall()
        return conn, path
    except duckdb.Error as exc:
        conn.close()
        missing = not path.exists()
        raise StoreLockedError(
            f"{db} is locked by another process (DuckDB allows one writer process and no "
            "readers beside it), and "
            + (
                f"it has published no read snapshot ({path.name}) yet: open the writer with "
                "a publish_interval, or wait for its first publish"
                if missing
                else f"its read snapshot {path} cannot be opened: {exc}"
            ),
            operation="open",
        ) from (cause if missing else exc)


def staleness(taken_at: _dt.datetime | None) -> float | None:
    """Seconds since ``taken_at`` (None if unknown)."""
    if taken_at is None:
        return None
    return (_dt.datetime.now(_dt.UTC) - taken_at).total_seconds()
