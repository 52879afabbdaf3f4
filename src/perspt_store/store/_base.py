"""Connection, lifecycle, transactions, and the one boundary where DuckDB errors are translated.

Threads: a DuckDB connection raises if two threads use it at once, so every thread gets its own
cursor (a connection to the same database instance) and writes are serialised by one re-entrant
lock. ``transaction()`` holds that lock from BEGIN to COMMIT, so a transaction never interleaves
with another thread's writes; reads never take the lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import importlib.util
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar, cast, overload

import duckdb

from .. import _engine, _publish
from .._mapping import CHECK_COLUMN, TableMap, legacy_key, table_map
from ..errors import (
    DuplicateRecordError,
    ReadOnlyStoreError,
    SchemaVersionError,
    SessionNotFoundError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from ..rowlist import RowList, decodable
from ..rows import Row
from ..schema import (
    META_TABLE,
    SCHEMA_VERSION,
    TABLES,
    init_schema,
    order_key,
    read_schema_version,
)
from ._groupcommit import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_FLUSH_ROWS,
    DURABILITY_MODES,
    Buffered,
    GroupCommit,
    GroupCommitHost,
)

R = TypeVar("R", bound=Row)
T = TypeVar("T")
P = ParamSpec("P")

_HAS_ARROW = importlib.util.find_spec("pyarrow") is not None
PathLike = str | os.PathLike[str]

if TYPE_CHECKING:
    from .commits import SessionLog

MEMORY = ":memory:"

_ALL_LEGACY = 2**62  # an unmigrated upstream file opened read-only: every row is upstream's


def default_data_dir() -> Path:
    """``<platform local data dir>/perspt`` (``$XDG_DATA_HOME/perspt`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_data_path(roaming=False)) / "perspt"


# The columns of each table's key that a caller's rows can repeat (``id`` columns come from
# sequences, never from a caller): what a duplicate-key error names. Checked against the
# schema by tests/test_errors_seen.py.
_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "budget_envelopes": ("session_id",),
    "feature_charters": ("charter_id",),
    META_TABLE: ("key",),
    "plan_revisions": ("revision_id",),
    "repair_footprints": ("footprint_id",),
    "sessions": ("session_id",),
}

# What an operation was doing, in words: (with a table, without one).
_DOING: dict[str, tuple[str, str]] = {
    "select": ("reading {table}", "reading"),
    "insert": ("writing {table}", "writing"),
    "update": ("updating {table}", "updating"),
    "delete": ("deleting from {table}", "deleting"),
    "export": ("exporting {table}", "exporting"),
    "import": ("importing {table}", "importing"),
    "create view": ("creating the view {table}", "creating a view"),
    "migrate": ("migrating {table}", "migrating the database"),
    "open": ("opening the database", "opening the database"),
    "commit": ("committing the transaction", "committing the transaction"),
    "begin transaction": ("starting a transaction", "starting a transaction"),
    "rollback": ("rolling back the transaction", "rolling back the transaction"),
    "sql": ("running the SQL", "running the SQL"),
    "flush": ("writing buffered rows", "writing buffered rows"),
    "read manifest": ("reading the lake manifest", "reading the lake manifest"),
}


def _doing(operation: str, table: str | None) -> str:
    """``operation`` on ``table`` in words: ``("select", "merkle_log")`` is "reading
    merkle_log"; an operation without words is said as given."""
    words = _DOING.get(operation)
    if words is None:
        return f"{operation} on {table}" if table else operation
    return words[0].format(table=table) if table else words[1]


def _key_in_words(table: str | None, text: str, *, named: bool) -> str:
    """The key DuckDB quotes in a duplicate-key message, in words: ``charter_id 'ch-1'``.
    ``named``: the text names its columns (``"a: x"``), else it is the bare values (``"x"``).
    """
    columns = _KEY_COLUMNS.get(table or "")
    if columns:
        pattern = ", ".join(f"{re.escape(c)}: (.*)" if named else "(.*)" for c in columns)
        found = re.fullmatch(pattern, text, re.DOTALL)
        if found:
            return " and ".join(
                f"{column} {value!r}" for column, value in zip(columns, found.groups(), strict=True)
            )
    return f"the key {text!r}"


def translate_error(
    exc: duckdb.Error, *, table: str | None, operation: str, session_id: str | None = None
) -> StoreError:
    """Map a DuckDB exception to the store's error tree (the caller chains it with ``from``).

    The message says what was being done, in words ("reading merkle_log failed: ...",
    "writing node_states failed: ..."), and a duplicate names its key.
    """
    message = str(exc)
    where = _doing(operation, table)
    if isinstance(exc, duckdb.ConstraintException):
        if "foreign key" in message.lower() and session_id is not None:
            return SessionNotFoundError(session_id, table=table, operation=operation)
        # A key already committed: 'Duplicate key "a: x" violates primary key constraint.'
        # One repeated within the statement or the transaction: '... constraint violation:
        # duplicate key "x"' (bare values; values may hold quotes, so match greedily).
        committed = re.search(
            r'Duplicate key "(.*)" violates (?:primary key|unique) constraint', message, re.DOTALL
        )
        repeated = re.search(r'duplicate key "(.*)"\s*$', message, re.DOTALL)
        if committed or repeated or "unique" in message.lower():
            if committed:
                detail = f"a row with {_key_in_words(table, committed.group(1), named=True)} "
                detail += "already exists"
            elif repeated:
                detail = f"{_key_in_words(table, repeated.group(1), named=False)} is given "
                detail += "twice in this batch or transaction"
            else:
                detail = f"a row with the same key already exists ({message})"
            return DuplicateRecordError(
                f"{where} failed: {detail}; nothing was written", table=table, operation=operation
            )
    # Before the read-only check: a lock held by a read-only process comes with DuckDB's hint
    # that a read-only open would work.
    if "Could not set lock" in message or "Conflicting lock" in message:
        return StoreLockedError(
            "the database file is locked by another process (DuckDB allows one writer "
            "process and no readers beside it); stop that process or read a published snapshot",
            table=table,
            operation=operation,
        )
    if "read-only" in message or "read only" in message:
        return ReadOnlyStoreError(
            f"{where} failed: the store is read-only", table=table, operation=operation
        )
    if table is not None:  # the store's own SQL: a missing object means an unmigrated file
        no_table = re.search(r"Table with name (\S+) does not exist", message)
        no_column = re.search(
            r'Referenced column "([^"]+)" not found|does not have a column named "([^"]+)"', message
        )
        what = (
            f"the database has no table {no_table.group(1)!r}"
            if no_table
            else f"table {table!r} has no column {no_column.group(1) or no_column.group(2)!r}"
            if no_column
            else None
        )
        if what is not None:
            return StoreError(
                f"{where} failed: {what}; the file was written by an older perspt-store and "
                "is not migrated yet: open it read-write once with SessionStore.open() to "
                "migrate it in place",
                table=table,
                operation=operation,
            )
    return StoreError(f"{where} failed: {message}", table=table, operation=operation)


RACE_ATTEMPTS = 100
"""How often a write runs again after another store handle on the same file (same process,
same engine) wrote the same rows first; each retry means that handle made progress."""


class CommitRaceError(StoreError):
    """Commits computed against a session's log that another store handle on the file has
    extended since (found before anything was written)."""


def lost_a_race(exc: StoreError) -> bool:
    """True if a write failed only because another handle on the file wrote first: commits
    to a log that has moved on (:class:`CommitRaceError`), or DuckDB's write-write conflict
    on a row."""
    if isinstance(exc, CommitRaceError):
        return True
    cause = exc.__cause__
    if isinstance(cause, StoreError):  # already said inside a transaction: still a race
        return lost_a_race(cause)
    return isinstance(cause, duckdb.TransactionException) and "Conflict" in str(cause)


def consistent(method: Callable[P, T]) -> Callable[P, T]:
    """Run a store read method in one snapshot (:meth:`StoreBase.consistent_read`): for
    every public read that runs more than one statement."""

    @functools.wraps(method)
    def read(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, StoreBase)
        with store.consistent_read():
            return method(*args, **kwargs)

    return read


class _ThreadState(threading.local):
    """What one thread is doing with the store. The class attributes are every thread's
    defaults, so reading one never misses (a miss on a ``threading.local`` costs about half
    a microsecond, on every buffered write)."""

    cursor: duckdb.DuckDBPyConnection | None = None
    depth = 0  # transaction() nesting
    doomed = False  # a write inside the transaction failed
    reading = False  # inside consistent_read()
    draining = False  # committing the group-commit buffer
    view_open = False  # a live view's sql() left its read-only transaction open
    io_refused = False  # an event loop's thread: no DuckDB call, no write lock (WouldBlock)
    drain_owed = False  # a buffered write found the flusher behind while io_refused


class WouldBlock(Exception):
    """Internal: a call made with I/O refused on this thread (``_local.io_refused``, set by
    ``AsyncSessionStore`` on its event loop's thread) needed a DuckDB cursor; raised before it
    changed anything, so the caller runs the call again on a worker thread."""


class _SameProcessWriter(Exception):
    """Internal: a read-only open found this process holding the file read-write."""


# EXPLAIN is not a read: EXPLAIN ANALYZE runs the statement it explains.
_READING_STATEMENTS = frozenset({duckdb.StatementType.SELECT})
# Table functions a SELECT may call that write: a checkpoint rewrites the file.
_WRITING_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint"})
# Words that may make a statement write (an over-approximation: it only decides whether the
# publisher republishes; refusing writes on a read-only store is the engine's job).
_MAY_WRITE = re.compile(
    r"\b(insert|update|delete|merge|copy|create|drop|alter|truncate|nextval|setval|"
    r"checkpoint|vacuum|attach|detach|import|export|call|pragma|set|reset|use|begin|commit)\b",
    re.IGNORECASE,
)


def _statement_types(query: str) -> list[duckdb.StatementType]:
    try:
        return [statement.type for statement in duckdb.extract_statements(query)]
    except duckdb.Error as exc:
        raise translate_error(exc, table=None, operation="sql") from exc


def _function_names(tree: str) -> set[str]:
    """The names of every function in a ``json_serialize_sql`` parse tree."""
    names: set[str] = set()
    pending: list[Any] = [json.loads(tree)]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            name = node.get("function_name")
            if isinstance(name, str):
                names.add(name.lower())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return names


def _damaged(path: Path, message: str) -> str:
    """What to say, and what to do, when DuckDB finds a damaged block on open."""
    text = f"{path} is damaged and DuckDB cannot read it ({message})"
    snapshot = _publish.snapshot_path(path)
    if snapshot.exists():
        return (
            f"{text}; its read snapshot {snapshot} holds every write committed up to its last "
            f"publish: recover with `perspt-store --db NEW.db import {snapshot}` and keep the "
            "damaged file for inspection (see Reliability in the docs)"
        )
    return f"{text}; restore it from a backup or an exported lake (see Reliability in the docs)"


class StoreBase:
    """Lifecycle, threads, transactions and the generic SQL helpers the families build on."""

    def __init__(
        self,
        path: PathLike | duckdb.DuckDBPyConnection | None = None,
        *,
        read_only: bool = False,
        sessions_dir: PathLike | None = None,
        publish_interval: float | None = _publish.DEFAULT_PUBLISH_INTERVAL,
        durability: str = "immediate",
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
    ) -> None:
        """Open (or create) a store.

        Args:
            path: A database file, ``":memory:"``, an open ``duckdb`` connection (borrowed:
                ``close()`` leaves it open), or None for :meth:`default_db_path`.
            read_only: Open the file read-only: it must exist, nothing is ever written to it,
                and every write raises :class:`ReadOnlyStoreError`.
            sessions_dir: Where session artifact directories go. Defaults to ``sessions/``
                beside the database file (the platform data dir for in-memory stores).
            publish_interval: For a read-write file store: publish a read snapshot
                ``<db>.snapshot`` at most every this many seconds (when something was
                written) and on close, so other processes can read while this one writes
                (see :meth:`open_read_only`); None publishes nothing. Ignored otherwise.
            durability: ``"immediate"`` (default): every write is committed when it returns.
                ``"batched"``: group commit; ``record_*`` calls of the append-only tables
                (and ``record_node_state``, whose commit is computed at the call) return
                once buffered and a background thread commits them in bulk, at most
                ``flush_interval`` seconds later (see :mod:`perspt_store.store._groupcommit`).
                A thread reads its own writes: its reads (and ``sql()``) first commit the
                buffer if it holds rows this thread recorded. A thread with nothing buffered
                reads without committing or waiting for the write lock, and sees committed
                rows only: rows other threads buffered appear once flushed. Writes that are
                not buffered, and ``transaction()``, commit the whole buffer first. A row
                that a flush cannot write is handed back (:class:`FlushError`) while every
                other row commits.
            flush_interval: Batched mode: the longest a buffered row waits to be committed.
            flush_rows: Batched mode: flush as soon as this many rows are buffered.

        Raises:
            StoreError: The file is missing (read-only), not a DuckDB database, or unreadable.
            StoreLockedError: Another process holds the file.
            SchemaVersionError: A migration failed (the file is left as it was).
            ValueError: ``durability``, ``flush_interval`` or ``flush_rows`` is invalid.
        """
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self._group: GroupCommit | None = None  # group commit (batched mode) only
        self._lock = threading.RLock()
        # Each session's commit-log trees as of its last commit (store.commits); written
        # under the lock, dropped whenever a transaction rolls back.
        self._commit_logs: dict[str, SessionLog] = {}
        self._local = _ThreadState()
        # One cursor per thread that used the store; a thread's is closed once it has exited
        # (checked when another thread makes its first), so they never pile up.
        self._cursors: dict[threading.Thread, duckdb.DuckDBPyConnection] = {}
        self._cursors_lock = threading.Lock()  # never the write lock: reads must not wait
        self._closed = False
        self._read_only = read_only
        self._owns_conn = not isinstance(path, duckdb.DuckDBPyConnection)
        self._write_refusal: StoreError | None = (
            ReadOnlyStoreError("the store was opened read-only; open it read-write to write")
            if read_only
            else None
        )
        self._publisher: _publish.Publisher | None = None
        self.snapshot_path: Path | None = None
        """The published snapshot this store reads instead of ``path`` (see ``is_snapshot``)."""
        self.snapshot_time: _dt.datetime | None = None
        """When the snapshot this store reads was taken (UTC); None for a live view."""
        self._shared_instance = False  # read-only view of this process's own writer
        if isinstance(path, duckdb.DuckDBPyConnection):
            self.path: Path | None = None
            self._conn = path
        else:
            self.path = None if str(path) == MEMORY else Path(path or self.default_db_path())
            try:
                self._conn = self._connect(self.path, read_only)
            except StoreLockedError as exc:
                if not read_only or self.path is None:
                    raise
                # Another process writes the file: read its latest published snapshot.
                self._conn, self.snapshot_path = _publish.open_snapshot(self.path, exc)
                self.snapshot_time = _publish.read_snapshot_time(self._conn)
                self._write_refusal = ReadOnlyStoreError(
                    f"this store reads a snapshot of {self.path} published by the process "
                    "writing it; it cannot be written"
                )
            except _SameProcessWriter as shared:
                # This process already holds the file read-write: share that engine instance
                # (a live view); the store refuses writes and sql() runs only SELECTs.
                self._conn = shared.args[0]
                self._shared_instance = True
        if sessions_dir is not None:
            self._sessions_dir = Path(sessions_dir)
        elif self.path is not None:
            self._sessions_dir = self.path.parent / "sessions"
        else:
            self._sessions_dir = default_data_dir() / "sessions"
        try:
            self._conn.execute("SET TimeZone = 'UTC'")
            self.schema_version = self._prepare_schema()
            self._legacy_marks = self._load_legacy_marks()
            if self.path is not None and self._owns_conn and not self.read_only:
                _publish.remove_stale_temporaries(self.path)  # left by a killed publisher
                if publish_interval is not None:
                    self._publisher = _publish.Publisher(self._conn, self.path, publish_interval)
            if durability == "batched" and self._write_refusal is None:
                # The host is the whole SessionStore (its bulk writes are BulkMixin's);
                # StoreBase is never instantiated on its own.
                host = cast(GroupCommitHost, self)
                self._group = GroupCommit(host, interval=flush_interval, max_rows=flush_rows)
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------------------

    @staticmethod
    def default_db_path() -> Path:
        """``<platform local data dir>/perspt/perspt.db``; computes the path, creates nothing."""
        return default_data_dir() / "perspt.db"

    @staticmethod
    def _connect(path: Path | None, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Connect to ``path`` (None: a new in-memory database) with extension auto-install
        and auto-load off, so no file makes DuckDB reach for the network.

        Raises:
            StoreError: Saying, with the path, why the file cannot be opened: missing
                (read-only), a directory, under a regular file, not a DuckDB database,
                permission denied, damaged, ...
            StoreLockedError: Another process holds the file.
            _SameProcessWriter: A read-only open of a file this process holds read-write;
                its argument is a connection to that engine instance.
        """
        if path is None:
            return _engine.connect(MEMORY)
        exists = _engine.check_database_file(path, create=not read_only)
        if read_only and not exists:
            raise StoreError(f"no database at {path}; nothing was created", operation="open")
        try:
            if not exists:
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreError(
                f"cannot create {path}: {_engine.os_reason(exc)}{where}", operation="open"
            ) from exc
        try:
            if not exists:
                # Create new files in the storage format of upstream's engine (DuckDB 1.5.4),
                # so the Rust crate can open them, with small blocks (every table and index
                # claims whole blocks): both are fixed at creation.
                _engine.connect(path, new_file=True).close()
            return _engine.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            message = " ".join(str(exc).split())
            if "different configuration" in message:
                shared = None
                if read_only:  # this process holds the file read-write: share its instance
                    with contextlib.suppress(duckdb.Error):
                        shared = _engine.connect(path)
                if shared is not None:
                    raise _SameProcessWriter(shared) from exc
                raise StoreError(
                    f"cannot open {path}: this process already has it open with other "
                    "settings (read-only, or through a duckdb connection of its own); close "
                    "that first, or pass that connection to SessionStore",
                    operation="open",
                ) from exc
            if "Could not set lock" in message or "Conflicting lock" in message:
                raise translate_error(exc, table=None, operation="open") from exc
            if "Corrupt database file" in message:
                raise StoreError(_damaged(path, message), operation="open") from exc
            if "not a valid DuckDB database" in message:
                raise StoreError(f"{path} is not a DuckDB database", operation="open") from exc
            if read_only and _engine.needs_core_functions(exc):
                raise StoreError(
                    f"cannot open {path} read-only: its write-ahead log holds a schema change "
                    "(a process stopped before its checkpoint) that DuckDB replays only with "
                    "its built-in core_functions loaded; open it read-write once "
                    "(SessionStore.open) to replay it",
                    operation="open",
                ) from exc
            if "xtension" in message:
                raise StoreError(
                    f"cannot open {path}: DuckDB would need an extension to read it, and the "
                    f"store never installs or loads one on its own ({message})",
                    operation="open",
                ) from exc
            os_error = re.search(r'(?:open|read from) file "[^"]*": (.+)$', message)
            if os_error:
                reason = os_error.group(1).rstrip(".!")
                raise StoreError(
                    f"cannot open {path}: {reason[:1].lower()}{reason[1:]}", operation="open"
                ) from exc
            raise StoreError(
                f"cannot open {path} as a DuckDB database: {message}", operation="open"
            ) from exc

    def _prepare_schema(self) -> int | None:
        try:
            version = read_schema_version(self._conn)
            if version is not None and version > SCHEMA_VERSION:
                self._write_refusal = self._write_refusal or SchemaVersionError.newer(
                    version, SCHEMA_VERSION, "it is open read-only: upgrade perspt-store to write",
                    operation="open",
                )
                return version
            if self._read_only:
                return version
            return init_schema(self._conn)
        except duckdb.Error as exc:
            raise translate_error(exc, table=None, operation="open") from exc

    def _load_legacy_marks(self) -> dict[str, int]:
        """Per table, the highest id (rowid for sessions) that upstream wrote."""
        if self.schema_version == 0:  # unmigrated upstream file (read-only)
            return dict.fromkeys(TABLES, _ALL_LEGACY)
        if self.schema_version is None:
            return {}
        rows = dict(
            self._conn.execute(
                f"SELECT key, value FROM {META_TABLE} WHERE key LIKE 'legacy_max_%'"
            ).fetchall()
        )
        # sessions has no id: its mark counts rowid, or row_order from ROW_ORDER_VERSION on.
        stale = "rowid" if order_key("sessions", self.schema_version) != "rowid" else "row_order"
        rows.pop(f"legacy_max_{stale}:sessions", None)
        return {key.split(":", 1)[1]: int(value) for key, value in rows.items()}

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """True when the store refuses writes (opened read-only, or a newer schema)."""
        return self._write_refusal is not None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def is_snapshot(self) -> bool:
        """True when this read-only store reads the snapshot another process published
        (``snapshot_path``, taken at ``snapshot_time``) because that process holds the file."""
        return self.snapshot_path is not None

    @property
    def staleness(self) -> float | None:
        """Seconds since the snapshot this store reads was taken: writes committed since may
        be missing. ``0.0`` for a live view of the database itself; None if unknown."""
        if not self.is_snapshot:
            return 0.0
        return _publish.staleness(self.snapshot_time)

    @property
    def publisher(self) -> _publish.Publisher | None:
        """The background publisher of this read-write file store's read snapshot, if any."""
        return self._publisher

    @property
    def durability(self) -> str:
        """``"batched"`` when writes are group-committed, else ``"immediate"``."""
        return "immediate" if self._group is None else "batched"

    @property
    def pending_writes(self) -> int:
        """Batched mode: rows recorded but not committed yet (what a crash now would lose);
        always 0 in immediate mode."""
        return 0 if self._group is None else self._group.pending

    def flush(self) -> None:
        """Make every buffered write durable now (batched mode; a no-op in immediate mode).

        Raises:
            FlushError: Some buffered rows could not be written, in this flush or in an
                earlier one not reported yet: every other row was committed; the rows that
                failed left the buffer and are on the error's ``rows`` (reported once).
            StoreError: Called inside ``transaction()`` in batched mode (the buffer is
                committed on its own, never as part of a caller's transaction).
            StoreClosedError: The store is closed.
        """
        if self._closed:
            raise StoreClosedError()
        group = self._group
        if group is None:
            return
        if self.in_transaction:
            raise StoreError(
                "flush() cannot run inside transaction(): buffered rows are committed on "
                "their own; call it after the block",
                operation="flush",
            )
        group.drain()
        group.buffer.report()

    def close(self) -> None:
        """Close the store and every per-thread cursor; idempotent.

        In batched mode it first commits every buffered row and stops the flusher thread.
        Calling it inside a ``transaction()`` block is refused and changes nothing (closing
        would lose the block's writes, and other threads' buffered rows must not join it):
        close the store after the block.

        Raises:
            StoreError: Called inside ``transaction()`` (on this thread), or, in batched
                mode, inside ``consistent_read()``; the store stays open and the block goes
                on.
            FlushError: Batched mode: some buffered rows could not be written (every other
                row was committed). The store is closed anyway; the error's ``rows`` hold
                the rows that were not written.
        """
        if self.in_transaction and not self._closed:
            raise StoreError(
                "close() inside transaction() is refused: it would lose the block's writes; "
                "nothing was changed: close the store after the block",
                operation="close",
            )
        if self._group is not None and self._local.reading:
            raise StoreError(  # its buffered rows cannot commit inside a read transaction
                "close() inside consistent_read() is refused in batched mode; nothing was "
                "changed: close the store after the block",
                operation="close",
            )
        group = self._group
        buffer = None if group is None else group.buffer
        if group is not None and buffer is not None and not self._closed:
            buffer.stop()  # from now on record_* raises StoreClosedError
            group.drain()
        unwritten: list[Buffered] = []
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if buffer is not None:
                unwritten = buffer.take()  # only if a flush was interrupted
            if self._publisher is not None:
                self._publisher.close()  # stops its thread, publishes the final state
            with self._cursors_lock:
                for cursor in self._cursors.values():
                    with contextlib.suppress(duckdb.Error):
                        cursor.close()
                self._cursors.clear()
            if self._owns_conn:
                with contextlib.suppress(duckdb.Error):
                    self._conn.close()
        if buffer is not None:
            buffer.join()
            closed = StoreClosedError("the store closed before they were written")
            buffer.flushed([(row, closed) for row in unwritten])
            buffer.report("; the store is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        mode = "closed" if self._closed else ("read-only" if self.read_only else "read-write")
        return f"<{type(self).__name__} {where} ({mode})>"

    # --- connection plumbing ------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the shared database instance."""
        if self._closed:
            raise StoreClosedError()
        cursor: duckdb.DuckDBPyConnection | None = self._local.cursor
        if cursor is None or self._local.io_refused:
            if self._local.io_refused:
                raise WouldBlock()
            with self._cursors_lock:
                if self._closed:
                    raise StoreClosedError()
                for thread in [t for t in self._cursors if not t.is_alive()]:
                    with contextlib.suppress(duckdb.Error):
                        self._cursors.pop(thread).close()
                cursor = self._conn.cursor()
                cursor.execute("SET TimeZone = 'UTC'")
                if self.snapshot_path is not None:  # the snapshot is attached, not opened
                    cursor.execute(f"USE {_publish.SNAPSHOT_ALIAS}")
                self._cursors[threading.current_thread()] = cursor
            self._local.cursor = cursor
        return cursor

    def _check_may_wait(self) -> None:
        """Raise :class:`WouldBlock` on a thread whose I/O is refused (the async store's event
        loop, during a buffered write): before waiting for the write lock, which another
        thread's transaction may hold for as long as it likes, as before touching DuckDB."""
        if self._local.io_refused:
            raise WouldBlock()

    def _check_writable(self, table: str | None) -> None:
        if self._closed:
            raise StoreClosedError()
        if self._write_refusal is not None:
            refusal = self._write_refusal
            raise type(refusal)(str(refusal), table=table, operation="write")

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """Run any SQL and return a DuckDB relation (``fetchall()``, ``df()``, ``pl()``,
        ``arrow()``).

        The relation lives on the calling thread's cursor: use it in that thread.

        On a read-only store only SELECT (and EXPLAIN) statements run, and they run where the
        engine itself refuses writes (a read-only file, or a read-only transaction on a live
        view of a file this process writes), so a write hidden in a CTE is refused too.

        Raises:
            ReadOnlyStoreError: The store is read-only and the query is not a read.
            StoreError: DuckDB rejected the query.
        """
        if self._group is not None:
            self._group.drain_pending()
        cursor = self._cursor()
        if self._write_refusal is not None:
            kinds = _statement_types(query)
            if not set(kinds) <= _READING_STATEMENTS:
                raise ReadOnlyStoreError(
                    "the store is read-only: sql() runs only SELECT statements here, not "
                    + ", ".join(sorted({k.name for k in kinds} - {"SELECT"})),
                    operation="sql",
                )
            self._end_view(cursor)  # a failed read may have left its transaction aborted
            writing = self._functions_called(cursor, query) & _WRITING_FUNCTIONS
            if writing:
                raise ReadOnlyStoreError(
                    f"the store is read-only: sql() does not run {', '.join(sorted(writing))}()",
                    operation="sql",
                )
            if self._shared_instance and not self._reading_here():
                # The relation is fetched after this returns: its read-only transaction
                # stays open until this thread's next call ends it (_end_view).
                self._end_view(cursor)
                self._run_control(cursor, "BEGIN TRANSACTION READ ONLY")
                self._local.view_open = True
        try:
            relation = cursor.sql(query, params=params)
        except duckdb.Error as exc:
            raise translate_error(exc, table=None, operation="sql") from exc
        if _MAY_WRITE.search(query):
            self._logs_may_have_changed()
            self._changed()
        return relation

    def _logs_may_have_changed(self) -> None:
        """A statement the store did not write may have changed commit logs: the cached
        ones are checked against the database before the next commit."""
        self._commit_logs.clear()

    def _functions_called(self, cursor: duckdb.DuckDBPyConnection, query: str) -> set[str]:
        """Every function a SELECT calls, from DuckDB's own parse tree."""
        try:
            rows = cursor.execute("SELECT json_serialize_sql(?)", [query]).fetchall()
        except duckdb.Error as exc:
            raise translate_error(exc, table=None, operation="sql") from exc
        return _function_names(rows[0][0])

    def _reading_here(self) -> bool:
        """True inside a ``transaction()`` or ``consistent_read()`` on this thread."""
        return self.in_transaction or self._local.reading

    def _end_view(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """End the read-only transaction a live view's ``sql()`` left open on this thread."""
        if self._local.view_open:
            self._local.view_open = False
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")

    def _changed(self) -> None:
        """Something was (or may have been) committed: the publisher publishes it."""
        if self._publisher is not None:
            self._publisher.note_change()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically: all of them commit, or none if the block raises.

        Example:
            >>> with store.transaction():
            ...     store.record_energy(e1)
            ...     store.record_energy(e2)

        Nesting joins the outer transaction (DuckDB has no savepoints). If an inner block
        raises, the whole transaction is rolled back when the outermost block exits; if the
        exception was caught in between, that exit raises :class:`StoreError` instead of
        committing half of the work. The write lock is held throughout, so other threads'
        writes wait and never interleave.

        Raises:
            ReadOnlyStoreError: The store is read-only.
            StoreError: The commit failed, or a write inside the block failed and the block
                went on (nothing was committed).
        """
        self._check_writable(None)
        self._check_may_wait()
        with self._lock:
            if self._group is not None and not self.in_transaction:
                # Buffered rows commit first, on their own: under the lock, so no commit
                # another thread buffers can slip in before the transaction's own commits
                # (its seqs would be taken).
                self._group.drain_pending(everyone=True)
            cursor = self._cursor()
            if self.in_transaction:
                self._local.depth += 1
                try:
                    yield
                except BaseException:
                    self._local.doomed = True
                    raise
                finally:
                    self._local.depth -= 1
                return
            self._run_control(cursor, "BEGIN TRANSACTION")
            self._local.depth, self._local.doomed = 1, False
            try:
                yield
            except BaseException:
                # Roll back, but never let a rollback error mask the caller's exception.
                self._rolled_back(cursor)
                raise
            finally:
                self._local.depth = 0
            if self._local.doomed:
                self._rolled_back(cursor)
                raise StoreError(
                    "a write inside this transaction failed, so nothing was committed",
                    operation="commit",
                )
            try:
                cursor.execute("COMMIT")
            except duckdb.Error as exc:
                self._rolled_back(cursor)
                raise translate_error(exc, table=None, operation="commit") from exc
            self._changed()

    def _rolled_back(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        self._commit_logs.clear()  # they may hold commits that are now undone

    @staticmethod
    def _run_control(cursor: duckdb.DuckDBPyConnection, statement: str) -> None:
        try:
            cursor.execute(statement)
        except duckdb.Error as exc:
            raise translate_error(exc, table=None, operation=statement.lower()) from exc

    @property
    def in_transaction(self) -> bool:
        """True inside a ``transaction()`` block on this thread."""
        return self._local.depth > 0

    @contextlib.contextmanager
    def consistent_read(self) -> Iterator[None]:
        """Run the block's reads in one snapshot of the database.

        Every read method that runs several statements already does this on its own; use
        it to group *several* calls, e.g. a session and its node states as of one moment,
        while other threads or store handles commit. Inside a ``transaction()`` the block
        joins it (and sees its writes); nested blocks join the outer one. Writes inside
        the block raise :class:`ReadOnlyStoreError`.

        Example:
            >>> with store.consistent_read():
            ...     session = store.get_session("s-1")
            ...     nodes = store.get_latest_node_states("s-1")
        """
        if self._reading_here():
            yield
            return
        if self._group is not None:
            self._group.drain_pending()  # read your writes: they commit before the snapshot
        cursor = self._cursor()
        self._end_view(cursor)
        self._run_control(cursor, "BEGIN TRANSACTION READ ONLY")
        self._local.reading = True
        try:
            yield
        finally:
            self._local.reading = False
            with contextlib.suppress(duckdb.Error):  # nothing was written: nothing to lose
                cursor.execute("ROLLBACK")

    # --- generic helpers used by the families -------------------------------------------

    @overload
    def _execute(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        table: str | None,
        operation: str,
        session_id: str | None = None,
        arrow: Literal[False] = False,
    ) -> list[tuple[Any, ...]]: ...

    @overload
    def _execute(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        table: str | None,
        operation: str,
        session_id: str | None = None,
        arrow: Literal[True],
    ) -> Any: ...

    def _execute(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        table: str | None,
        operation: str,
        session_id: str | None = None,
        arrow: bool = False,
    ) -> Any:
        """Run one statement on this thread's cursor and fetch its rows, translating errors:
        the one path every statement takes.

        Returns:
            The rows as tuples, or with ``arrow`` as a ``pyarrow.Table`` (which needs
            pyarrow, and outlives the connection).
        """
        if self._shared_instance and not self._reading_here():
            # A live view shares the writer's engine: only a read-only transaction keeps
            # it from writing.
            with self.consistent_read():
                return self._execute(  # type: ignore[call-overload]
                    sql, params, table=table, operation=operation, session_id=session_id,
                    arrow=arrow,
                )
        if self._group is not None:
            self._group.drain_pending()  # read your writes: commit buffered rows first
        cursor = self._cursor()
        try:
            if arrow:  # a relation: DuckDB copies a DB-API result once more for Arrow
                return cursor.sql(sql, params=params).to_arrow_table()
            # Always fetch: DuckDB 2.0 refuses new work while a result is unfinished.
            return cursor.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            if self.in_transaction:
                self._local.doomed = True
            raise translate_error(
                exc, table=table, operation=operation, session_id=session_id
            ) from exc

    def _write(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        table: str,
        operation: str = "insert",
        session_id: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one write statement under the write lock (autocommitted unless in a
        transaction)."""
        self._check_writable(table)
        self._check_may_wait()
        with self._lock:
            if self.in_transaction:
                return self._execute(
                    sql, params, table=table, operation=operation, session_id=session_id
                )
            rows = self._retrying(
                lambda: self._execute(
                    sql, params, table=table, operation=operation, session_id=session_id
                )
            )
            self._changed()
            return rows

    def _retrying(self, write: Callable[[], T], *, commits: bool = False) -> T:
        """Run ``write`` (a statement or a whole transaction) again when another store handle
        on this file won a race with it (:func:`lost_a_race`): DuckDB undid it whole, so
        running it again is safe. With ``commits``, the cached commit logs are reloaded
        first (they are behind). Inside a caller's transaction nothing can be run again: the
        error says so.
        """
        for attempt in range(RACE_ATTEMPTS):
            try:
                return write()
            except StoreError as exc:
                if not lost_a_race(exc):
                    raise
                if commits:
                    self._commit_logs.clear()
                if self.in_transaction:
                    raise StoreError(
                        "another store handle on this file wrote the same rows while this "
                        "transaction ran (a commit to the same session, or the same row "
                        f"updated); nothing of the transaction will be committed: run it "
                        f"again ({exc})",
                        table=exc.table,
                        operation=exc.operation,
                    ) from exc
                if attempt == RACE_ATTEMPTS - 1:
                    raise
                # The winner may still hold its transaction open: back off, up to ~5 s.
                time.sleep(min(0.0005 * 2**attempt, 0.05))
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, row: Row) -> None:
        """Append one row; columns come from the model's fields, by name.

        In batched mode, rows of the append-only tables are buffered instead (outside a
        transaction or a consistent read) once their session is known to exist.
        """
        if self._group is not None and self._group.offer(row):
            return
        self._insert_rows([row])

    def _insert_rows(self, rows: Sequence[Row], *, returning_ids: bool = False) -> list[int]:
        """Append rows of one model in one statement, in order.

        Returns:
            The new rows' ids, in the rows' order, if ``returning_ids``; else ``[]``.
        """
        mapping = table_map(type(rows[0]))
        if len(rows) == 1:
            sql, params = mapping.insert_sql, mapping.encode(rows[0])
        else:
            sql, params = mapping.bulk_insert_sql, mapping.encode_columns(rows)
        sessions = {getattr(row, "session_id", None) for row in rows}
        result = self._write(
            sql + (" RETURNING id" if returning_ids else ""),
            params,
            table=mapping.table,
            session_id=sessions.pop() if len(sessions) == 1 else None,
        )
        # Sequence values are drawn in list order; RETURNING's order is not promised.
        return sorted(row_id for (row_id,) in result) if returning_ids else []

    def _select(
        self,
        model: type[R],
        where: str = "",
        params: Sequence[Any] = (),
        *,
        order_by: str = "",
        latest_per: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[R]:
        """Read rows of one table as models.

        Args:
            model: The row model (it names the table and the columns).
            where: A SQL predicate over the table's columns, with ``?`` placeholders.
            params: Values for the placeholders.
            order_by: An ORDER BY list; every caller gives a total order.
            latest_per: Keep only the last-inserted row (highest ``id``) per value of this
                column, e.g. ``"node_id"`` for "latest per node".
            limit: LIMIT, if any.
            offset: OFFSET.
        """
        mapping = table_map(model)
        legacy = self._legacy(mapping.table)
        check = self._check_column(mapping, legacy)
        sql, values = mapping.select(
            where, params, order_by=order_by, latest_per=latest_per, limit=limit,
            offset=offset, legacy=legacy, extra=check,
        )
        rows = self._execute(sql, values, table=mapping.table, operation="select")
        return mapping.read(rows, checked=bool(check))

    def _select_rows(
        self, model: type[R], where: str, params: Sequence[Any], *, order_by: str,
        latest_per: str | None = None,
    ) -> RowList[R]:
        """:meth:`_select` as a :class:`RowList` whose models are built on first touch.

        Rows the lazy build cannot take (see :meth:`_fetch_arrow`) are read eagerly by
        :meth:`_select`, which reports a rejected row now rather than on first touch; both
        reads in one snapshot.
        """
        with self.consistent_read():
            table = self._fetch_arrow(
                model, where, params, order_by=order_by, latest_per=latest_per
            )
            if table is not None:
                return RowList.from_arrow(table_map(model), table)
            return RowList(
                self._select(model, where, params, order_by=order_by, latest_per=latest_per)
            )

    def _fetch_arrow(
        self, model: type[Row], where: str, params: Sequence[Any], *, order_by: str,
        latest_per: str | None = None,
    ) -> Any:
        """The rows :meth:`_select` would read, as an Arrow table for
        :meth:`RowList.from_arrow`, in one statement; None when the lazy build cannot take
        them (no pyarrow, another schema version, rows upstream wrote, a row that fails the
        model's check, a timestamp outside Python's range)."""
        mapping = table_map(model)
        check = self._check_column(mapping, self._legacy(mapping.table))
        if not check or not _HAS_ARROW:
            return None
        import pyarrow.compute as pc

        sql, values = mapping.select(
            where, params, order_by=order_by, latest_per=latest_per, extra=check
        )
        table = self._execute(sql, values, table=mapping.table, operation="select", arrow=True)
        passed = table[CHECK_COLUMN]
        table = table.drop_columns([CHECK_COLUMN])
        if table.num_rows and not (
            pc.all(pc.fill_null(passed, False)).as_py() and decodable(table)
        ):
            return None
        return table

    def _check_column(
        self, mapping: TableMap[Any], legacy: tuple[str, int] | None
    ) -> tuple[str, ...]:
        """The ``extra`` that selects the mapping's check (``TableMap.read(checked=True)``):
        only on a file with this library's schema, whose column types the check relies on,
        and without legacy decoding (the check reads the raw columns)."""
        check = mapping.check_sql
        if check is None or legacy is not None or self.schema_version != SCHEMA_VERSION:
            return ()
        return (f"({check}) AS {CHECK_COLUMN}",)

    def _order_column(self, table: str) -> str:
        """The column that orders ``table`` by insertion in this file (see ``order_key``)."""
        return order_key(table, self.schema_version)

    def _legacy(self, table: str) -> tuple[str, int] | None:
        """``(key column, mark)`` if the table holds rows upstream wrote, else None."""
        mark = self._legacy_marks.get(table)
        if mark is None:
            return None
        key = legacy_key(table, self.schema_version)
        return None if key is None else (key, mark)

    def _select_one(
        self, model: type[R], where: str, params: Sequence[Any], *, order_by: str = ""
    ) -> R | None:
        rows = self._select(model, where, params, order_by=order_by, limit=1)
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Sequence[Any] = (), *, table: str | None) -> Any:
        rows = self._execute(sql, list(params), table=table, operation="select")
        return rows[0][0] if rows else None

    def _session_exists(self, session_id: str) -> bool:
        return (
            self._scalar(
                "SELECT 1 FROM sessions WHERE session_id = ?", [session_id], table="sessions"
            )
            is not None
        )
