"""Rewrite an older store file into the compact form new files have (16 KiB blocks).

DuckDB fixes a file's block size when it creates it. Files made before perspt-store used
16 KiB blocks have DuckDB's 256 KiB ones, and every table and index claims whole blocks, so
they are ten or more times bigger than they need be. :func:`compact` copies such a file,
verified on both sides, into a new one::

    1. open the file read-write (it migrates, and no other process may hold it) and verify
       every session's commit log: a file that fails is refused, untouched;
    2. copy the whole database (tables, sequences with their values, indexes) into
       ``<db>.compact-<pid>`` created with the new block size, with DuckDB's own
       ``COPY FROM DATABASE``;
    3. open the copy, check that every table holds as many rows and every session verifies
       to the same roots as before;
    4. keep the original as ``<db>.before-compact`` and move the copy into its place; the
       read snapshot beside the file is published anew.

Until step 4 the original is the database and the copy a temporary file, removed if
anything fails; after it, the original is still there to go back to.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from . import _engine, _publish
from .errors import IntegrityError, StoreError
from .schema import TABLES
from .store import SessionStore

__all__ = ["BACKUP_SUFFIX", "CompactReport", "compact"]

BACKUP_SUFFIX = ".before-compact"
"""Where :func:`compact` keeps the original file, beside the new one."""

_COUNTED = (*TABLES, "merkle_log", "merkle_root_overrides")


@dataclass(frozen=True)
class CompactReport:
    """What :func:`compact` did."""

    path: Path
    """The database, now compact."""
    original: Path
    """The original file, kept."""
    bytes_before: int
    bytes_after: int
    block_size_before: int
    sessions: int
    """Sessions verified before and after (every one of them)."""


def _fingerprint(store: SessionStore) -> tuple[dict[str, int], dict[str, tuple[bytes, bytes]]]:
    """Rows per table, and each session's log and state roots (verified)."""
    with store.consistent_read():
        counts = {t: int(store.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in _COUNTED}
        ids = [sid for (sid,) in store.sql("SELECT session_id FROM sessions").fetchall()]
        roots: dict[str, tuple[bytes, bytes]] = {}
        failed = []
        for session_id in ids:
            report = store.verify_session(session_id)
            if not report.ok:
                failed.append(session_id)
            roots[session_id] = (report.log_root, report.state_root)
    if failed:
        raise IntegrityError(
            f"{len(failed)} session(s) fail verification ({', '.join(map(repr, failed[:5]))}"
            f"{', ...' if len(failed) > 5 else ''}); nothing was compacted: run "
            "`perspt-store verify SESSION` to see why",
            operation="compact",
        )
    return counts, roots


def _block_size(path: Path) -> int:
    with contextlib.closing(_engine.connect(path, read_only=True)) as conn:
        return int(conn.execute("PRAGMA database_size").fetchall()[0][2])


def compact(path: str | os.PathLike[str]) -> CompactReport:
    """Rewrite the store file at ``path`` with 16 KiB blocks, verified before and after.

    The original is kept as ``<path>.before-compact`` (delete it once you are satisfied).

    Raises:
        StoreError: The file is missing, held by another process, or a backup from an
            earlier compaction is in the way; nothing changed.
        IntegrityError: A session fails verification, before (nothing changed) or in the
            copy (the copy is removed, nothing changed).
    """
    db = Path(path)
    backup = db.with_name(db.name + BACKUP_SUFFIX)
    if not db.is_file():
        raise StoreError(f"no database at {db}; nothing was compacted", operation="compact")
    if backup.exists():
        raise StoreError(
            f"{backup} exists (an earlier compaction's original): move or delete it first",
            operation="compact",
        )
    with SessionStore.open(db, publish_interval=None) as store:  # migrates; locks out others
        before = _fingerprint(store)
        store.sql("CHECKPOINT").fetchall()  # everything in the file, nothing in the WAL
    block_before = _block_size(db)
    size_before = db.stat().st_size
    tmp = db.with_name(f"{db.name}.compact-{os.getpid()}")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        with contextlib.closing(_engine.connect(tmp, new_file=True)) as conn:
            conn.execute("ATTACH ? AS perspt_compact_source (READ_ONLY)", [str(db)])
            conn.execute(f'COPY FROM DATABASE perspt_compact_source TO "{_alias(conn)}"')
            conn.execute("DETACH perspt_compact_source")
            conn.execute("CHECKPOINT")
        with SessionStore.open(tmp, publish_interval=None) as copy:
            after = _fingerprint(copy)
        if after != before:
            raise IntegrityError(
                "the compacted copy differs from the original (row counts or roots); "
                "nothing was changed",
                operation="compact",
            )
        os.replace(db, backup)
        os.replace(tmp, db)
    except BaseException:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    _publish.snapshot_path(db).unlink(missing_ok=True)  # the old snapshot's blocks were big
    SessionStore.open(db).close()  # publishes a fresh snapshot of the compact file
    return CompactReport(
        path=db,
        original=backup,
        bytes_before=size_before,
        bytes_after=db.stat().st_size,
        block_size_before=block_before,
        sessions=len(before[1]),
    )


def _alias(conn: duckdb.DuckDBPyConnection) -> str:
    """The catalog name of the connection's own (main) database."""
    return str(conn.execute("SELECT current_database()").fetchall()[0][0])
