"""Beyond one machine: export sessions as a Parquet lake, and merge lakes into a store.

A *lake* is a directory any engine that reads Parquet can query (DuckDB, Polars, Spark,
Trino, …)::

    DIR/
      manifest.json                           what was exported, and each session's checkpoint
      sessions/session_id=<id>/data_0.parquet
      node_states/session_id=<id>/data_0.parquet
      …                                       one directory per table, hive-partitioned
      merkle_log/session_id=<id>/data_0.parquet

Every table (upstream's 23, ``merkle_log`` and ``merkle_root_overrides``) is written by
DuckDB's own ``COPY … (FORMAT parquet, PARTITION_BY (session_id))``; partition values are
URL-encoded as DuckDB writes them (``urllib.parse.quote(id, safe="")``). Columns are the
table's, with the stored values (ids too); rows upstream wrote into a migrated file are
decoded first, as the row models decode them. ``branch_lineage`` rows without a session are
not exported.

A lake keeps histories. Re-exporting a session replaces its partitions and manifest entry
(never appends to them) only when the store's commit log *extends* the checkpoint in the
manifest, as a Merkle consistency proof shows (and the session was created at the same
time); otherwise the export reports a conflict and leaves the lake's copy as it is. Other
sessions' partitions and entries are left alone.

Several exporters (processes, machines sharing the directory) may write into one lake at
the same time. Each writes its Parquet files into a staging directory of its own, then
takes the lake's lock (``.export.lock``, created with ``O_CREAT | O_EXCL``) for a short
critical section: it re-reads the manifest, checks that each session's log extends the
lake's copy, writes a journal (``.export-journal.json``), moves the partitions into place
and writes the manifest (both files written to a temporary file, then renamed over).
An exporter killed in the middle leaves the journal behind: whoever takes the lock next
finishes its moves (rolls forward) before doing anything else, so the lake never keeps a
mixture of two exports. A lock whose holder died on this machine is broken at once; any
other lock (another machine's, or one that cannot be read) once it has stayed unchanged
for ``_STALE_AFTER`` seconds (its holder refreshes it while it works).

:func:`import_lake` merges a lake, or another store file, into a store. Each session is
imported in one transaction, in the lake's insertion order, with new ids from the target's
sequences (``merkle_log.node_state_id`` remapped), then verified against its manifest
checkpoint; a session already in the store is skipped if it is identical, and reported as a
conflict otherwise (nothing of it is written).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import os
import random
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

import duckdb

from ._displayable import Displayable
from ._mapping import star
from .errors import (
    DuplicateRecordError,
    IntegrityError,
    ReadOnlyStoreError,
    RecordNotFoundError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
)
from .merkle import MerkleTree, verify_consistency
from .schema import SCHEMA_VERSION, SEQUENCED_TABLES, TABLES, order_key
from .store import SessionStore
from .store._arguments import require_store
from .store._base import PathLike, translate_error
from .store.commits import carry_entries_sql
from .store.internals import internals

__all__ = [
    "LAKE_FORMAT",
    "LAKE_TABLES",
    "MANIFEST",
    "ExportConflict",
    "ExportReport",
    "ImportReport",
    "SessionImport",
    "export_parquet",
    "import_lake",
    "lake_views",
    "partition_dir",
]

LAKE_FORMAT = "perspt-store-lake/1"
"""The ``format`` of a lake's manifest."""

MANIFEST = "manifest.json"
"""The manifest's file name, at the top of the lake."""

LAKE_TABLES: tuple[str, ...] = (*TABLES, "merkle_log", "merkle_root_overrides")
"""Every table a lake holds, parents first (the order an import writes them in)."""

_ID_TABLES = frozenset({*SEQUENCED_TABLES, "merkle_root_overrides"})
"""Tables whose ``id`` the target's sequence assigns anew on import."""

_ORDERED_NATURAL = ("feature_charters", "plan_revisions")
"""Natural-key tables that may hold several rows per session: their order is kept by
writing such a session's partition as one file, in insertion order."""

STATUSES = ("imported", "skipped", "conflict", "invalid")

_LOCK = ".export.lock"
"""The lake's lock file: held while an exporter swaps partitions and writes the manifest."""

_JOURNAL = ".export-journal.json"
"""What the lock's holder is moving into place; finished by the next holder if it died."""

_STAGING = "_staging-"
"""The prefix of an exporter's staging directory (``_staging-<host>-<pid>-<random>``)."""

_STALE_AFTER = 120.0
"""Seconds a lock (or lock breaker) must stay unchanged, content and modification time, as
seen by a waiting exporter's own clock, before it is taken for a dead holder's and broken.
A holder refreshes its lock's modification time at least once a second while it works. A
lock whose holder ran on this machine and is no longer running is broken at once."""

_ORPHAN_AFTER = 86400.0
"""Seconds after which a staging directory or temporary file of an exporter on another
machine is taken for a dead one's leftover and removed (this machine's: when its process
is gone)."""


def partition_dir(table: str, session_id: str) -> str:
    """The partition directory of a session's rows of ``table``, relative to the lake:
    ``table/session_id=<id URL-encoded as DuckDB writes it>``."""
    return f"{table}/session_id={quote(session_id, safe='')}"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- reports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportConflict:
    """A session :func:`export_parquet` did not write: the lake holds a history of it that
    the store's log does not extend."""

    session_id: str
    detail: str
    """A sentence saying why (the two logs' sizes and roots, or the two creation times)."""


@dataclass(frozen=True)
class ExportReport(Displayable):
    """What :func:`export_parquet` wrote. ``ok`` unless a session conflicted with the
    lake's copy (those were not written; the others were)."""

    _html_renderer: ClassVar[str] = "export_report_html"

    path: Path
    """The lake directory."""
    session_ids: list[str]
    """The sessions exported (their partitions and manifest entries were replaced)."""
    rows: dict[str, int]
    """Rows written per table (over the exported sessions); tables without rows left out."""
    manifest: dict[str, Any] = field(repr=False)
    """The lake's manifest after the export (every session in the lake)."""
    conflicts: list[ExportConflict] = field(default_factory=list)
    """Sessions not exported because the lake holds a history of them that the store's log
    does not extend; their partitions and manifest entries in the lake were left as they
    were."""

    @property
    def ok(self) -> bool:
        """True when no session conflicted with the lake's copy."""
        return not self.conflicts

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class SessionImport:
    """What :func:`import_lake` did with one session."""

    session_id: str
    status: str
    """``imported``; ``skipped`` (already in the store, identical); ``conflict`` (in the store
    with a different history, or a key another session of the store holds); ``invalid`` (the
    lake's rows do not match its manifest or fail verification). Only ``imported`` wrote."""
    detail: str
    """A sentence saying why (what differs, which key, which check failed)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows written per table (``imported`` only)."""


@dataclass(frozen=True)
class ImportReport(Displayable):
    """What :func:`import_lake` did, session by session. ``ok`` unless something conflicted
    or was invalid (those sessions were not written; the others were)."""

    _html_renderer: ClassVar[str] = "import_report_html"

    source: str
    sessions: list[SessionImport]

    def _ids(self, *statuses: str) -> list[str]:
        return [s.session_id for s in self.sessions if s.status in statuses]

    @property
    def imported(self) -> list[str]:
        """Sessions written into the store."""
        return self._ids("imported")

    @property
    def skipped(self) -> list[str]:
        """Sessions already in the store with the same history."""
        return self._ids("skipped")

    @property
    def conflicts(self) -> list[SessionImport]:
        """Sessions not written because they conflict or are invalid."""
        return [s for s in self.sessions if s.status in ("conflict", "invalid")]

    @property
    def rows(self) -> dict[str, int]:
        """Rows written per table, over every imported session."""
        total: dict[str, int] = {}
        for entry in self.sessions:
            for table, count in entry.rows.items():
                total[table] = total.get(table, 0) + count
        return total

    @property
    def ok(self) -> bool:
        """True when no session conflicted or was invalid."""
        return not self.conflicts

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{len(self._ids(status))} {status}" for status in STATUSES if self._ids(status)
        )
        return f"<ImportReport from {self.source}: {counts or 'no sessions'}>"


# --- manifest -------------------------------------------------------------------------------


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """The lake's manifest, None if there is none. Raises StoreError if it is not one."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is not a perspt-store lake manifest: {exc}",
                         operation="read manifest") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != LAKE_FORMAT or not \
            isinstance(manifest.get("sessions"), dict):
        raise StoreError(
            f"{path} is not a perspt-store lake manifest (format {LAKE_FORMAT!r} expected)",
            operation="read manifest",
        )
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError.newer(
            version, SCHEMA_VERSION, "upgrade perspt-store to use it",
            what=f"the lake at {directory}", operation="read manifest",
        )
    return manifest


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file atomically: a temporary file (named after this process, so a
    killed writer's leftover can be told from a live one's) renamed over it."""
    temporary = path.with_name(f".{path.name}.{_tag()}-{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a temporary file renamed over it)."""
    _write_json(directory / MANIFEST, manifest)


# --- the lake's lock --------------------------------------------------------------------------


def _host() -> str:
    return socket.gethostname()


def _tag() -> str:
    """``<host>-<pid>`` of this process, safe in a file name."""
    return f"{re.sub(r'[^A-Za-z0-9]', '_', _host())[:64]}-{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still run (True when it cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name == "nt" or pid <= 0:  # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    try:  # a zombie (killed, not yet reaped by its parent) runs no more
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _holder(content: bytes) -> tuple[str, int] | None:
    """The host and pid a lock file names, None if it cannot be read."""
    try:
        info = json.loads(content)
        host, pid = info["host"], info["pid"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return host, pid


def _look(path: Path) -> tuple[bytes, int] | None:
    """A lock file's content and modification time (ns); None if there is none (now)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None
    except PermissionError:  # Windows: being deleted
        if os.name == "nt":
            return None
        raise


def _create_exclusive(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` if it does not exist (atomically); False if it
    does."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return False
    except PermissionError:  # Windows: a file being deleted still blocks its name
        if os.name == "nt" and path.exists():
            return False
        raise
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    os.close(fd)
    return True


def _unlink(path: Path) -> None:
    """Remove a file if it is there (retrying a while on Windows, where an open file cannot
    be removed)."""
    for attempt in range(100):
        try:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if os.name != "nt" or attempt == 99:
                raise
            time.sleep(0.01)


class _LakeLock:
    """The lake's lock: a file created with ``O_CREAT | O_EXCL`` (atomic on local file
    systems, NFSv3+ and SMB), naming its holder's host, pid and a random token.

    A waiter polls. It breaks the lock when the holder ran on this machine and is gone, or
    when the lock has stayed unchanged (content and modification time, timed by the
    waiter's own clock, so machines' clocks need not agree) for ``_STALE_AFTER`` seconds;
    the holder refreshes the modification time at least once a second. Breaking takes a
    second lock file (``.export.lock.break``, broken by the same rule) and removes the lock
    only if it is still the one judged stale, so two waiters never remove a lock a third
    has just taken.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / _LOCK
        self._breaker = directory / f"{_LOCK}.break"
        self.content = json.dumps({
            "host": _host(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": _now(),
        }).encode()
        self._beat = 0.0

    def __enter__(self) -> _LakeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        first_seen: dict[tuple[str, bytes, int], float] = {}
        pause = 0.001
        while True:
            if _create_exclusive(self.path, self.content):
                self._beat = time.monotonic()
                return
            seen = _look(self.path)
            if seen is None:
                continue  # released meanwhile: try again at once
            if self._stale(self.path, seen, first_seen) and self._break(seen, first_seen):
                continue
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, 0.05)

    def _stale(
        self, path: Path, seen: tuple[bytes, int], first_seen: dict[tuple[str, bytes, int], float]
    ) -> bool:
        now = time.monotonic()
        since = first_seen.setdefault((path.name, *seen), now)
        if now - since >= _STALE_AFTER:
            return True
        holder = _holder(seen[0])
        return holder is not None and holder[0] == _host() and not _alive(holder[1])

    def _break(
        self, seen: tuple[bytes, int], first_seen: dict[tuple[str, bytes, int], float]
    ) -> bool:
        """Remove the stale lock ``seen``, one breaker at a time; True if it is gone."""
        if not _create_exclusive(self._breaker, self.content):
            other = _look(self._breaker)
            if (other is not None and self._stale(self._breaker, other, first_seen)
                    and _look(self._breaker) == other):
                _unlink(self._breaker)  # a breaker that died while breaking
            return False
        try:
            if _look(self.path) != seen:  # released, refreshed or taken meanwhile
                return False
            _unlink(self.path)
            return True
        finally:
            _unlink(self._breaker)

    def held(self) -> bool:
        """Whether the lock file is still this holder's."""
        seen = _look(self.path)
        return seen is not None and seen[0] == self.content

    def beat(self) -> None:
        """Refresh the lock's modification time (at most once a second), so waiters see
        that its holder is alive."""
        now = time.monotonic()
        if now - self._beat >= 1.0:
            self._beat = now
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self.held():
            _unlink(self.path)


# --- the journal: moving an export into place ---------------------------------------------------


def _apply(directory: Path, journal: dict[str, Any], beat: Callable[[], None]) -> dict[str, Any]:
    """Move the journal's staged partitions into place (the replaced ones into its staging
    directory) and merge its entries into the manifest; returns the manifest written.

    Every step is a rename that a repeat skips once done, so a holder of the lock can
    finish the journal of an exporter that died at any point (roll forward).
    """
    staging = directory / journal["staging"]
    replaced = staging / "_replaced"
    for sid, staged_tables in journal["staged"].items():
        staged = set(staged_tables)
        for table in LAKE_TABLES:
            target = directory / partition_dir(table, sid)
            source = staging / partition_dir(table, sid)
            if table in staged and not source.exists():
                continue  # moved into place already
            if target.exists():
                old = replaced / partition_dir(table, sid)
                old.parent.mkdir(parents=True, exist_ok=True)
                if old.exists():
                    shutil.rmtree(old)
                os.replace(target, old)
            if table in staged:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
            beat()
    manifest = _read_manifest(directory) or {"format": LAKE_FORMAT, "sessions": {}}
    sessions = dict(manifest["sessions"])
    sessions.update(journal["sessions"])
    manifest = {
        "format": LAKE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "library_version": journal["library_version"],
        "exported_at": journal["exported_at"],
        "layout": "<table>/session_id=<url-encoded session id>/*.parquet",
        "tables": list(LAKE_TABLES),
        "sessions": sessions,
    }
    _write_manifest(directory, manifest)
    return manifest


def _read_journal(directory: Path) -> dict[str, Any] | None:
    path = directory / _JOURNAL
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} cannot be read ({exc}); the lake needs a look by hand",
                         operation="export") from exc
    if not isinstance(journal, dict) or not {"staging", "staged", "sessions"} <= set(journal):
        raise StoreError(f"{path} is not an export journal; the lake needs a look by hand",
                         operation="export")
    return journal


def _orphaned(path: Path, tag: str) -> bool:
    """Whether an exporter's leftover named ``<host>-<pid>-<random>`` is a dead one's."""
    host, _, pid = tag.rpartition("-")[0].rpartition("-")
    if host and host == _tag().rpartition("-")[0] and pid.isdigit() and not _alive(int(pid)):
        return True
    try:
        return time.time() - path.lstat().st_mtime > _ORPHAN_AFTER
    except OSError:
        return False


def _check_held(lock: _LakeLock, directory: Path) -> None:
    """Raise StoreError unless ``lock`` is still ours (checked before each change)."""
    if not lock.held():
        raise StoreError(
            f"another exporter broke this one's lock on {directory} (it was taken for a "
            f"dead one's after {_STALE_AFTER:.0f} s without a sign of life); nothing was "
            "changed: export again",
            operation="export",
        )


def _recover(directory: Path, lock: _LakeLock) -> None:
    """Under the lock: finish an export that died after writing its journal, then remove
    what dead exporters left (staging directories, temporary files)."""
    journal = _read_journal(directory)
    if journal is not None:
        _check_held(lock, directory)
        _apply(directory, journal, lock.beat)
        _unlink(directory / _JOURNAL)
    for path in directory.iterdir():
        name = path.name
        if name.startswith(_STAGING) and _orphaned(path, name[len(_STAGING):]):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
            tag = name[: -len(".tmp")].rpartition(".")[2]
            if _orphaned(path, tag):
                _unlink(path)


def _finish_interrupted_export(directory: Path) -> None:
    """Before reading a lake: if an exporter died in the middle of moving an export into
    place, finish it (under the lock). Skipped when the lake cannot be written."""
    if not (directory / _JOURNAL).exists():
        return
    try:
        with _LakeLock(directory) as lock:
            _recover(directory, lock)
    except PermissionError:
        return
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return
        raise StoreError(f"finishing an interrupted export in {directory} failed: {exc}",
                         operation="import") from exc


# --- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _read_snapshot(store: SessionStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """This thread's cursor inside the store's consistent read, so every query sees the
    same committed state (a writer may go on in other threads); joins the caller's
    transaction or consistent read. Rows buffered in batched mode are committed first."""
    with internals(store).read_snapshot() as cursor:
        yield cursor


def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None, *,
         table: str | None, operation: str) -> list[tuple[Any, ...]]:
    try:
        return cursor.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise translate_error(exc, table=table, operation=operation) from exc


def _check_exportable(store: SessionStore) -> None:
    require_store(store)
    version = store.schema_version
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError.newer(
            version, SCHEMA_VERSION, "upgrade perspt-store to export it", operation="export"
        )
    if version is not None and version < SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version} (this library writes "
            f"{SCHEMA_VERSION}); open it read-write once with SessionStore.open() to migrate "
            "it in place, then export it",
            operation="export",
        )


def _select_sql(table: str, marks: Mapping[str, int], where: str) -> str:
    """Every column of ``table`` (upstream's rows decoded), filtered, in insertion order."""
    return f"SELECT {star(table, marks)} FROM {table} WHERE {where} ORDER BY {order_key(table)}"


def _named(
    available: list[str], session_ids: Iterable[str] | None, where: str, operation: str
) -> list[str]:
    """``session_ids`` (once each, in order), or every available session if None.

    Raises:
        RecordNotFoundError: Naming the first that is not available (nothing was done).
    """
    if session_ids is None:
        return available
    if isinstance(session_ids, str | bytes):  # its characters are no session ids
        raise TypeError(
            f"session_ids must be a list of session ids, not one: pass [{session_ids!r}]"
        )
    wanted = list(dict.fromkeys(session_ids))
    known = set(available)
    missing = [sid for sid in wanted if sid not in known]
    if missing:
        raise RecordNotFoundError(
            f"no session {missing[0]!r} in {where}; nothing was {operation}ed",
            table="sessions", operation=operation,
        )
    return wanted


class _SessionFacts(NamedTuple):
    ids: list[str]
    counts: dict[str, dict[str, int]]
    """Rows per session and table (tables without rows left out)."""
    leaves: dict[str, list[bytes]]
    """Each session's commit-log leaf hashes, in order."""
    created: dict[str, str | None]
    """Each session's ``created_at``, as text."""


def _session_facts(
    store: SessionStore, cursor: duckdb.DuckDBPyConnection, session_ids: Iterable[str] | None
) -> _SessionFacts:
    """The sessions to export (all by default, in creation order) and what an export
    checks of each, read through ``cursor`` inside the caller's snapshot.

    Raises:
        RecordNotFoundError: A named session is not in the store.
    """
    present = [sid for (sid,) in _run(
        cursor, f"SELECT session_id FROM sessions ORDER BY {order_key('sessions')}",
        None, table="sessions", operation="export")] if store.schema_version else []
    ids = _named(present, session_ids, "the store", "export")
    facts = _SessionFacts(ids, {sid: {} for sid in ids}, {sid: [] for sid in ids},
                          dict.fromkeys(ids))
    if not ids:
        return facts
    for table, sid, count in _run(cursor, _COUNTS_SQL, [ids], table=None, operation="export"):
        facts.counts[sid][table] = count
    for sid, leaf in _run(
        cursor, "SELECT session_id, leaf_hash FROM merkle_log WHERE session_id IN "
        "(SELECT unnest(?)) ORDER BY session_id, seq", [ids],
        table="merkle_log", operation="export",
    ):
        if leaf is None:  # bytes the store did not write (the view decodes them to NULL)
            raise IntegrityError(
                f"the commit log of session {sid!r} holds an entry the store did not write; "
                "nothing was exported: run verify_session",
                table="merkle_log", operation="export",
            )
        facts.leaves[sid].append(bytes(leaf))
    for sid, at in _run(
        cursor, "SELECT session_id, created_at FROM sessions WHERE session_id IN "
        "(SELECT unnest(?))", [ids], table="sessions", operation="export",
    ):
        facts.created[sid] = None if at is None else str(at)
    return facts


def export_parquet(
    store: SessionStore, directory: PathLike, session_ids: Iterable[str] | None = None
) -> ExportReport:
    """Write sessions to a Parquet lake at ``directory`` (see the module docs for its layout).

    Every table is written with DuckDB's ``COPY … PARTITION_BY (session_id)``, so any engine
    that reads hive-partitioned Parquet can query the sessions of many stores together (read
    ``session_id`` as VARCHAR: ``hive_types={'session_id': VARCHAR}`` in DuckDB). The
    manifest records the schema and library versions, and per session its Merkle checkpoint
    and row counts.

    The export reads one consistent snapshot of the store (a run may go on writing), works
    on a read-only store, and is idempotent: a session exported again has its partitions and
    manifest entry replaced, never duplicated.

    A lake keeps histories: a session already in the lake is replaced only when the store's
    commit log extends the manifest's checkpoint of it (a Merkle consistency proof; an equal
    log is re-exported) and it was created at the same time. Otherwise it is a conflict:
    reported in :attr:`ExportReport.conflicts`, not raised, and the lake's copy is left as
    it is; the other sessions are exported.

    Several exporters, in several processes or on several machines sharing the directory,
    may export into one lake at the same time: the partitions and manifest are swapped
    under the lake's lock (see the module docs), so no manifest entry is lost and no
    session is left a mixture of two exports.

    Args:
        store: The store to export (read-only is fine).
        directory: The lake directory; created if needed.
        session_ids: The sessions to export; all of them by default.

    Returns:
        What was written, and what conflicted (``report.ok`` is False then).

    Raises:
        RecordNotFoundError: A named session is not in the store (nothing was written).
        StoreError: The database is not migrated to this library's schema, the directory
            holds something that is not a lake manifest, or writing failed.
        SchemaVersionError: The store or the lake is newer than this library.

    Example:
        >>> report = ps.export_parquet(store, "lake/machine=a")  # doctest: +SKIP
    """
    from . import __version__

    _check_exportable(store)
    directory = Path(directory)
    # A Delta lake names its partitions as this lake does: replacing them would remove the
    # files its Delta logs point at.
    delta_tables = [t for t in (*LAKE_TABLES, "lake_checkpoints")
                    if (directory / t / "_delta_log").is_dir()]
    if delta_tables:
        raise StoreError(
            f"{directory} is a Delta lake (it has a Delta table {delta_tables[0]}); export the "
            "Parquet lake to another directory, or use export_delta", operation="export")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot export to {directory}: {exc}", operation="export") from exc
    _read_manifest(directory)  # refuse what is not a lake (or a newer one) before any work
    staging = directory / f"{_STAGING}{_tag()}-{uuid.uuid4().hex}"
    marks = internals(store).legacy_marks
    try:
        with _read_snapshot(store) as cursor:
            ids, counts, leaves, created = _session_facts(store, cursor, session_ids)
            when = _now()
            if ids:
                staging.mkdir()
                for table in LAKE_TABLES:
                    found = [(sid, counts[sid][table]) for sid in ids if table in counts[sid]]
                    if found:
                        _export_table(cursor, table, ids, found, marks, staging)
            entries = {
                sid: {
                    "exported_at": when,
                    "schema_version": SCHEMA_VERSION,
                    "library_version": __version__,
                    "created_at": created[sid],
                    "checkpoint": store.checkpoint(sid).to_dict(),
                    "rows": {table: counts[sid].get(table, 0) for table in LAKE_TABLES},
                }
                for sid in ids
            }
        with _LakeLock(directory) as lock:
            _recover(directory, lock)
            manifest = _read_manifest(directory) or {"format": LAKE_FORMAT, "sessions": {}}
            conflicts = [
                ExportConflict(sid, reason)
                for sid in ids
                if (reason := _conflict(
                    functools.partial(_lake_log, directory, sid),
                    manifest["sessions"].get(sid), entries[sid], leaves[sid])) is not None
            ]
            rejected = {c.session_id for c in conflicts}
            exported = [sid for sid in ids if sid not in rejected]
            if exported or not (directory / MANIFEST).exists():
                journal = {
                    "staging": staging.name,
                    "exported_at": when,
                    "library_version": __version__,
                    "sessions": {sid: entries[sid] for sid in exported},
                    "staged": {
                        sid: [t for t in LAKE_TABLES
                              if (staging / partition_dir(t, sid)).is_dir()]
                        for sid in exported
                    },
                }
                _check_held(lock, directory)
                _write_json(directory / _JOURNAL, journal)
                manifest = _apply(directory, journal, lock.beat)
                _unlink(directory / _JOURNAL)
    except OSError as exc:
        raise StoreError(f"exporting to {directory} failed: {exc}", operation="export") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows: dict[str, int] = {}
    for sid in exported:
        for table, count in counts[sid].items():
            rows[table] = rows.get(table, 0) + count
    return ExportReport(path=directory, session_ids=exported, rows=rows, manifest=manifest,
                        conflicts=conflicts)


def _commits(n: int) -> str:
    return f"{n} commit" if n == 1 else f"{n} commits"


def _lake_log(directory: Path, session_id: str, size: int, root: bytes) -> MerkleTree | None:
    """The lake's commit log of a session, read from its ``merkle_log`` files; None unless
    it is there and matches the manifest's checkpoint (``size`` commits, ``root``)."""
    files = _parquet(directory, "merkle_log", session_id)
    if files is None:
        return None
    try:
        with duckdb.connect() as connection:
            found = connection.execute(
                "SELECT leaf_hash FROM read_parquet(?, hive_partitioning=false) ORDER BY seq",
                [files],
            ).fetchall()
        tree = MerkleTree(bytes(leaf) for (leaf,) in found)
    except (duckdb.Error, TypeError, ValueError):
        return None
    return tree if tree.size == size and tree.root() == root else None


def _conflict(
    lake_log: Callable[[int, bytes], MerkleTree | None], there: Any, entry: dict[str, Any],
    leaves: list[bytes],
) -> str | None:
    """Why the store's copy of a session may not replace the lake's (``there``, its
    manifest entry), None if it may: the lake has no copy, or the store's log extends the
    lake's checkpoint (a consistency proof) and the session was created at the same time.
    ``lake_log(size, root)`` reads the lake's log of the session (None unless it matches)."""
    if there is None:
        return None
    kept = "; the lake's copy was left as it is"
    try:
        size = there["checkpoint"]["size"]
        root = bytes.fromhex(there["checkpoint"]["log_root"])
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(size)
    except (KeyError, TypeError, ValueError):
        return ("the lake's manifest entry for it has no readable checkpoint, so the store's "
                "log cannot be shown to extend it" + kept)
    tree = MerkleTree(leaves)
    ours = f"{_commits(tree.size)}, root {tree.root().hex()[:16]}…"
    theirs = f"{_commits(size)}, root {root.hex()[:16]}…"
    different = (f"the lake holds a different history of this session: the store's log "
                 f"({ours}) does not extend the lake's ({theirs})" + kept)
    if size > tree.size:
        # The store's log cannot extend a longer one; say whether it is behind (a prefix of
        # the lake's log, read from the lake's merkle_log files) or another history.
        lake = lake_log(size, root)
        if lake is None:
            return (f"the lake's copy has more commits than the store's log ({theirs}; the "
                    f"store {ours}), so the store's log does not extend it" + kept)
        if verify_consistency(tree.size, size, tree.root(), root,
                              lake.consistency_proof(tree.size, size)):
            return (f"the lake's copy has more commits than the store's log ({theirs}; the "
                    f"store {ours}): the store is behind, its log a prefix of the lake's"
                    + kept)
        return different
    if not verify_consistency(size, tree.size, root, tree.root(),
                              tree.consistency_proof(size, tree.size)):
        return different
    there_created, ours_created = there.get("created_at"), entry.get("created_at")
    if there_created is not None and ours_created is not None and there_created != ours_created:
        return (f"the lake's copy is another session with the same id (created "
                f"{there_created}; the store's {ours_created})" + kept)
    return None


_COUNTS_SQL = " UNION ALL ".join(
    f"SELECT '{table}', session_id, count(*) FROM {table} "
    "WHERE session_id IN (SELECT unnest($1)) GROUP BY session_id"
    for table in LAKE_TABLES
)
"""Rows per table and session, for a list of sessions, in one statement."""


def _export_table(
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    ids: list[str],
    found: list[tuple[str, int]],
    marks: Mapping[str, int],
    staging: Path,
) -> None:
    """COPY one table's rows of the sessions into ``staging``, partitioned by session."""
    query = _select_sql(table, marks, "session_id IN (SELECT unnest(?))")
    _run(
        cursor,
        f"COPY ({query}) TO {_literal(str(staging / table))} "
        "(FORMAT parquet, PARTITION_BY (session_id))",
        [ids], table=table, operation="export",
    )
    if table in _ORDERED_NATURAL:
        # PARTITION_BY does not keep row order; rewrite these as one file in order.
        for sid, count in found:
            if count < 2:
                continue
            partition = staging / partition_dir(table, sid)
            shutil.rmtree(partition, ignore_errors=True)
            partition.mkdir(parents=True)
            query = (
                f"SELECT * EXCLUDE (session_id, _order) FROM (SELECT {star(table, marks)}, "
                f"{order_key(table)} AS _order FROM {table} WHERE session_id = ?) ORDER BY _order"
            )
            _run(
                cursor,
                f"COPY ({query}) TO "
                f"{_literal(str(partition / 'data_0.parquet'))} (FORMAT parquet)",
                [sid], table=table, operation="export",
            )


# --- import ---------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: the lake's rows of a session do not match its manifest."""


def import_lake(
    store: SessionStore, source: PathLike, session_ids: Iterable[str] | None = None,
    *, as_of: int | _dt.datetime | None = None,
) -> ImportReport:
    """Merge a lake (a directory written by :func:`export_parquet`, or a Delta lake written
    by :func:`~perspt_store.delta.export_delta`), or another store's database file, into
    ``store``.

    Each session is imported in one transaction, in order of creation, rows in their
    insertion order: ids come from ``store``'s sequences (``merkle_log.node_state_id``
    follows its node state), timestamps are kept. Before it commits, the session is
    verified (``verify_session``) and its log checked against the manifest's checkpoint
    and row counts. So:

    * a session not in ``store`` is ``imported`` (or ``invalid``, and not written, if its
      rows do not match the manifest, e.g. a partly copied lake);
    * a session already in ``store`` with the same rows is ``skipped``: importing the same
      data twice adds nothing;
    * a session already in ``store`` with a different history, or whose unique keys
      (charter, revision, footprint ids) another session of ``store`` holds, is a
      ``conflict``: nothing of it is written, and the report says what differs.

    Conflicts do not raise: check ``report.ok`` (the command line exits 1).

    Args:
        store: A read-write store.
        source: A lake directory, or a DuckDB database file written by perspt-store (opened
            read-only, so a file another process is writing is read from its snapshot), or
            a Delta lake's ``file://`` URL.
        session_ids: Only these sessions of the source; all by default.
        as_of: A Delta lake only: import it as it was at this version of its
            ``lake_checkpoints`` table (an int) or at this time (a timezone-aware datetime).

    Raises:
        ReadOnlyStoreError: ``store`` is read-only.
        RecordNotFoundError: A named session is not in the source.
        StoreError: ``source`` is neither a lake nor a database file; or ``as_of`` is a
            version past the lake's latest, or a time before the lake was created.
        TypeError, ValueError: ``as_of`` is neither a version (an int, not negative) nor a
            timezone-aware datetime.
        SchemaVersionError: The source is newer than this library.
    """
    require_store(store)
    internals(store).check_writable()
    path = Path(source)
    from . import delta

    if isinstance(source, str) and "://" in source:  # a URL: a Delta lake
        return delta.import_delta(store, source, session_ids, as_of=as_of)
    if path.is_dir() and delta.is_delta_lake(path):
        return delta.import_delta(store, path, session_ids, as_of=as_of)
    if as_of is not None:
        raise StoreError(f"{path} is not a Delta lake: as_of reads a Delta lake's history",
                         operation="import")
    if path.is_dir():
        return _import_directory(store, path, session_ids)
    if path.is_file():
        with SessionStore.open_read_only(path) as other, \
                tempfile.TemporaryDirectory(prefix="perspt-lake-") as temporary:
            try:
                export_parquet(other, temporary, session_ids)
            except RecordNotFoundError as exc:
                raise RecordNotFoundError(
                    f"{str(exc).split(' in the store', 1)[0]} in {path}; nothing was imported",
                    table="sessions", operation="import",
                ) from exc
            report = _import_directory(store, Path(temporary), None)
        return ImportReport(source=str(path), sessions=report.sessions)
    raise StoreError(f"no lake directory or database file at {path}; nothing was imported",
                     operation="import")


def _import_directory(
    store: SessionStore, directory: Path, session_ids: Iterable[str] | None
) -> ImportReport:
    _finish_interrupted_export(directory)
    key = _manifest_key(directory)  # before reading: a change after it is seen as one
    manifest = _read_manifest(directory)
    if manifest is None:
        raise StoreError(
            f"{directory} is not a perspt-store lake: it has no {MANIFEST}; write one with "
            "export_parquet (perspt-store export --parquet DIR)",
            operation="import",
        )
    entries: dict[str, Any] = manifest["sessions"]
    names = _named(list(entries), session_ids, f"the lake at {directory}", "import")
    created = _created_at(store, directory, names)
    position = {sid: i for i, sid in enumerate(names)}
    names.sort(key=lambda sid: (created.get(sid) is None, created.get(sid) or _dt.datetime.min,
                                position[sid]))
    watch = _LakeWatch(directory, key, entries)
    results = [_import_watched(store, directory, sid, watch) for sid in names]
    return ImportReport(source=str(directory), sessions=results)


_READ_ATTEMPTS = 50
"""Times an import reads a session that an exporter keeps replacing before it gives up."""


def _manifest_key(directory: Path) -> tuple[int, int, int] | None:
    """What changes whenever the manifest is written (it is renamed over: a new file)."""
    try:
        stat = os.stat(directory / MANIFEST)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class _LakeWatch:
    """Tells whether an exporter replaced, or is replacing, a session of the lake while an
    import reads it. An export lists its sessions in the journal before it moves anything,
    and writes their new manifest entries (a new ``exported_at``) before it removes the
    journal; so if the session is in no journal before and after the read, and its entry is
    the same, no export of it overlapped the read."""

    def __init__(
        self, directory: Path, key: tuple[int, int, int] | None, entries: dict[str, Any]
    ) -> None:
        self.directory = directory
        self._key = key
        self._entries = entries

    def entry(self, session_id: str) -> Any:
        """The session's manifest entry as it is now (None if it has none)."""
        key = _manifest_key(self.directory)
        if key != self._key:
            manifest = _read_manifest(self.directory)
            self._key, self._entries = key, manifest["sessions"] if manifest else {}
        return self._entries.get(session_id)

    def busy(self, session_id: str) -> bool:
        """Whether an export of the session is moving it into place (its journal lists it)."""
        try:
            journal = _read_journal(self.directory)
        except StoreError:
            return True
        return journal is not None and session_id in journal.get("sessions", {})


def _import_watched(
    store: SessionStore, directory: Path, session_id: str, watch: _LakeWatch
) -> SessionImport:
    """Import a session, again if an exporter replaced it while it was read."""
    pause = 0.002
    for _ in range(_READ_ATTEMPTS):
        entry = watch.entry(session_id)
        if entry is None:
            return SessionImport(session_id, "invalid",
                                 "it is no longer in the lake's manifest; nothing was imported")
        if not watch.busy(session_id):

            def changed(entry: Any = entry) -> bool:
                # The journal first: an export removes it only after writing the manifest.
                return watch.busy(session_id) or watch.entry(session_id) != entry

            files = {t: f for t in LAKE_TABLES
                     if (f := _parquet(directory, t, session_id)) is not None}
            result = _import_session(store, session_id, entry, files, changed)
            if result is not None:
                return result
        time.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 2, 0.1)
    return SessionImport(
        session_id, "invalid",
        "an export was replacing it in the lake each time it was read (or one died doing so "
        "in a lake this process cannot write to); nothing was imported: import again",
    )


def _parquet(directory: Path, table: str, session_id: str) -> str | None:
    """The glob of a session's Parquet files of ``table``, None if it has none."""
    partition = directory / partition_dir(table, session_id)
    if not partition.is_dir() or not any(partition.glob("*.parquet")):
        return None
    return str(partition / "*.parquet")


def _created_at(
    store: SessionStore, directory: Path, names: list[str]
) -> dict[str, _dt.datetime]:
    created: dict[str, _dt.datetime] = {}
    cursor = internals(store).cursor()
    for sid in names:
        files = _parquet(directory, "sessions", sid)
        if files is None:
            continue
        try:
            found = _run(cursor,
                         "SELECT max(created_at) FROM read_parquet(?, hive_partitioning=false)",
                         [files], table="sessions", operation="import")
        except StoreError:  # replaced meanwhile: only the order is at stake; read it later
            continue
        if found and found[0][0] is not None:
            created[sid] = found[0][0]
    return created


class _Replaced(Exception):
    """Internal: an exporter replaced the session in the lake while it was read."""


def _import_session(
    store: SessionStore, session_id: str, entry: dict[str, Any], files: dict[str, Any],
    changed: Callable[[], bool],
) -> SessionImport | None:
    """Import one session from its ``files`` (per table, a glob or a list of Parquet
    files); None (nothing written) if ``changed()`` says an exporter replaced it in the
    lake while it was read."""
    if store.get_session(session_id) is not None:
        try:
            result = _compare(store, session_id, entry, files)
        except (ReadOnlyStoreError, StoreClosedError):
            raise
        except StoreError as exc:  # e.g. a lake file without a column the store has
            result = SessionImport(session_id, "invalid",
                                   f"it could not be compared with the store's copy: {exc}")
        return None if changed() else result
    if "sessions" not in files:
        return None if changed() else SessionImport(
            session_id, "invalid", "the lake has no sessions row for it (a partial copy?)")
    try:
        with store.transaction():
            written = _insert_session(store, session_id, files)
            _check_imported(store, session_id, entry, written)
            if changed():
                raise _Replaced
    except _Replaced:
        return None
    except _Invalid as exc:
        return None if changed() else SessionImport(
            session_id, "invalid", f"{exc}; nothing was imported")
    except DuplicateRecordError as exc:
        return None if changed() else SessionImport(
            session_id, "conflict",
            f"a key of this session is already used by another session of the store "
            f"({exc}); nothing was imported",
        )
    except (ReadOnlyStoreError, StoreClosedError):
        raise
    except StoreError as exc:
        return None if changed() else SessionImport(
            session_id, "invalid", f"its rows could not be read or written: {exc}")
    internals(store).drop_cached_log(session_id)
    total = sum(written.values())
    return SessionImport(session_id, "imported", f"{total} rows imported",
                         {t: n for t, n in written.items() if n})


def _insert_session(store: SessionStore, session_id: str, files: dict[str, str]) -> dict[str, int]:
    """Insert the session's rows, parents first; returns rows written per table."""
    written: dict[str, int] = {}
    old_ids: list[int] = []
    new_ids: list[int] = []
    for table, glob in files.items():
        if table in _ID_TABLES:
            # One new id per row, drawn from the target's sequence; the i-th smallest goes
            # to the row with the i-th smallest old id, so the order is kept.
            pairs = internals(store).import_rows(
                f"SELECT id, nextval('seq_{table}_id') FROM read_parquet(?, "
                "hive_partitioning=false)",
                [glob], table=table,
            )
            ids = sorted(new for _, new in pairs)
            result = internals(store).import_rows(
                f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (rn) "
                "REPLACE (list_extract($1, rn)::INTEGER AS id), $2 AS session_id FROM "
                "(SELECT *, row_number() OVER (ORDER BY id) AS rn "
                "FROM read_parquet($3, hive_partitioning=false)) ORDER BY rn",
                [ids, session_id, glob], table=table, session_id=session_id,
            )
            if table == "node_states":
                old_ids, new_ids = sorted(old for old, _ in pairs), ids
        elif table == "merkle_log":
            # The entries ride on the node-state rows just imported (merkle_log is a view).
            result = internals(store).import_rows(
                "CREATE TEMP TABLE perspt_entries AS SELECT $1 AS session_id, "
                "m.* REPLACE (r.new_id AS node_state_id), "
                "row_number() OVER (ORDER BY m.seq) AS entry_no "
                "FROM read_parquet($2, hive_partitioning=false) m "
                "JOIN (SELECT unnest($3) AS old_id, unnest($4) AS new_id) r "
                "ON m.node_state_id = r.old_id",
                [session_id, glob, old_ids, new_ids], table=table, session_id=session_id,
            )
            for statement in [*carry_entries_sql("perspt_entries"), "DROP TABLE perspt_entries"]:
                internals(store).import_rows(statement, None, table=table, session_id=session_id)
        else:
            # Rows keep the lake's order (the files are written in it); row_order, like an
            # id, is drawn anew from the target's sequence.
            result = internals(store).import_rows(
                f"INSERT INTO {table} BY NAME SELECT COLUMNS(lambda c: c NOT IN "
                "('filename', 'file_row_number', 'row_order')), $1 AS session_id "
                "FROM read_parquet($2, hive_partitioning=false, filename=true, "
                "file_row_number=true) ORDER BY filename, file_row_number",
                [session_id, glob], table=table, session_id=session_id,
            )
        written[table] = int(result[0][0]) if result else 0
    return written


def _check_imported(
    store: SessionStore, session_id: str, entry: dict[str, Any], written: dict[str, int]
) -> None:
    """Raise _Invalid unless what was written matches the manifest and verifies."""
    expected = entry.get("rows", {})
    wrong = [
        f"{table} {written.get(table, 0)} (manifest: {expected.get(table, 0)})"
        for table in LAKE_TABLES
        if written.get(table, 0) != expected.get(table, 0)
    ]
    if wrong:
        raise _Invalid(f"its rows do not match the lake's manifest: {', '.join(wrong)}")
    report = store.verify_session(session_id)
    if not report.ok:
        problems = "; ".join(f"{p.kind}: {p.detail}" for p in report.problems[:3])
        raise _Invalid(f"its Merkle log does not verify: {problems}")
    checkpoint = entry.get("checkpoint", {})
    ours = (report.log_size, report.log_root.hex(), report.state_root.hex())
    theirs = (checkpoint.get("size"), checkpoint.get("log_root"), checkpoint.get("state_root"))
    if ours != theirs:
        raise _Invalid(
            f"its Merkle log ({ours[0]} commits, root {ours[1][:16]}…) is not the manifest's "
            f"checkpoint ({theirs[0]} commits, root {str(theirs[1])[:16]}…)"
        )


def _digest_sql(columns: list[str]) -> str:
    """A struct of the row count and an order-sensitive digest of ``columns`` (one JSON
    object per row), with an ``{order}`` placeholder for the ORDER BY."""
    fields = ", ".join(f'"{c}" := "{c}"' for c in columns)
    return (
        "{{'n': count(*), 'digest': md5(coalesce(string_agg(to_json(struct_pack("
        + fields.replace("{", "{{").replace("}", "}}")
        + ")), chr(10) ORDER BY {order}), ''))}}"
    )


def _compare(
    store: SessionStore, session_id: str, entry: dict[str, Any], files: dict[str, str]
) -> SessionImport:
    """Skip a session the store already has if its rows are the lake's (ids aside), else
    report how they differ. One statement compares every table."""
    cursor = internals(store).cursor()
    parts: list[str] = []
    params: list[Any] = []
    columns = _table_columns(cursor)
    for table in LAKE_TABLES:
        selected = star(table, internals(store).legacy_marks)
        key = "seq" if table == "merkle_log" else order_key(table)
        # Ids and row_order are the store's own numbering; the order they give is compared.
        skip = {"id", "session_id", "row_order"} | (
            {"node_state_id"} if table == "merkle_log" else set()
        )
        digest = _digest_sql([c for c in columns[table] if c not in skip])
        ours = (
            f"(SELECT {digest.format(order='_order')} FROM (SELECT {selected}, {key} AS _order "
            f"FROM {table} WHERE session_id = ?))"
        )
        params.append(session_id)
        glob = files.get(table)
        if glob is None:
            theirs = "(SELECT {'n': 0, 'digest': md5('')})"
        else:
            order = (
                "seq" if table == "merkle_log" else "id" if table in _ID_TABLES
                else "filename, file_row_number"
            )
            theirs = (
                f"(SELECT {digest.format(order=order)} FROM read_parquet(?, "
                "hive_partitioning=false, filename=true, file_row_number=true))"
            )
            params.append(glob)
        parts.append(f"SELECT '{table}', {ours}, {theirs}")
    differs = [
        f"{table} (store {ours['n']} rows, lake {theirs['n']})"
        for table, ours, theirs in _run(
            cursor, " UNION ALL ".join(parts), params, table=None, operation="import"
        )
        if ours != theirs
    ]
    if not differs:
        return SessionImport(session_id, "skipped", "already in the store, identical")
    differs.sort(key=lambda text: LAKE_TABLES.index(text.split(" ", 1)[0]))
    checkpoint = entry.get("checkpoint", {})
    mine = store.checkpoint(session_id)
    log = (
        f"; commit log: store {mine.size} commits (root {mine.log_root.hex()[:16]}…), lake "
        f"{checkpoint.get('size')} (root {str(checkpoint.get('log_root'))[:16]}…)"
    )
    return SessionImport(
        session_id, "conflict",
        "already in the store with a different history: " + ", ".join(differs)
        + log + "; nothing was imported",
    )


def _table_columns(cursor: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Each lake table's columns in the store, in table order."""
    found: dict[str, list[str]] = {table: [] for table in LAKE_TABLES}
    for table, column in _run(
        cursor,
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = 'main' ORDER BY table_name, column_index",
        None, table=None, operation="import",
    ):
        if table in found and (table, column) != ("node_states", "merkle_commit"):
            found[table].append(column)  # a row's log entry is exported as merkle_log's
    return found


# --- reading lakes --------------------------------------------------------------------------


def lake_views(
    connection: duckdb.DuckDBPyConnection, *lakes: PathLike | str
) -> list[str]:
    """Create one view per table on ``connection`` over the Parquet files of every lake.

    Each view (``sessions``, ``node_states``, …, ``merkle_log``) reads
    ``<lake>/<table>/*/*.parquet`` of each lake given, hive-partitioned with ``session_id``
    as VARCHAR and columns matched by name, so one query spans every machine's sessions.
    A lake may be a local directory or a URL DuckDB can read (``s3://…``, with the httpfs
    extension loaded and credentials set on ``connection``); local lakes without a table's
    files are left out of its view.

    Returns:
        The views created (tables no lake has are skipped).

    Example:
        >>> con = duckdb.connect()  # doctest: +SKIP
        >>> lake_views(con, "lakes/machine=a", "lakes/machine=b")  # doctest: +SKIP
    """
    created = []
    for table in LAKE_TABLES:
        globs = []
        for lake in lakes:
            text = str(lake).rstrip("/")
            if "://" not in text and not any(Path(text, table).glob("*/*.parquet")):
                continue
            globs.append(f"{text}/{table}/*/*.parquet")
        if not globs:
            continue
        files = "[" + ", ".join(_literal(g) for g in globs) + "]"
        try:
            connection.execute(
                f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({files}, "
                "hive_partitioning=true, hive_types={'session_id': VARCHAR}, "
                "union_by_name=true)"
            )
        except duckdb.Error as exc:
            raise translate_error(exc, table=table, operation="create view") from exc
        created.append(table)
    return created
