"""Group commit, whole: the write buffer of a ``durability="batched"`` store, its flusher
thread, when a statement must commit the buffer first, and how a flush commits it.

:class:`GroupCommit` is what a batched store owns (``StoreBase._group``); the store asks it
to take rows (:meth:`GroupCommit.offer`), to commit what a statement must follow
(:meth:`GroupCommit.drain_pending`) and to flush (:meth:`GroupCommit.drain`).

In batched mode, ``record_*`` calls for the append-only tables (:data:`BUFFERED_MODELS`) only
append the row to an in-memory buffer and return. ``record_node_state`` computes its Merkle
commit at the call (seq, leaf hash, state and log roots: the same :class:`NodeCommit` it
returns in immediate mode) and buffers the row with it (:class:`BufferedCommit`); the flush
writes the row, its ``merkle_log`` entry and the session's new ``merkle_root`` together. A
daemon thread commits the buffer in one transaction, with one bulk statement per table, at
most ``flush_interval`` seconds after the oldest buffered row arrived (sooner once
``flush_rows`` rows are waiting).

Reads: a thread reads its own writes. A read (or ``sql()``) by a thread that has rows
buffered first commits the buffer; a read by a thread with nothing buffered neither commits
nor waits for the write lock, and sees what is committed (rows other threads buffered appear
once flushed). Writes that are not buffered (``record_many``, ``transaction()``, rollbacks,
updates, …) commit the whole buffer first, so they follow every row acknowledged before them.

Loss window: a crash (SIGKILL, power loss) loses the rows not committed yet: normally those
of the last ``flush_interval`` seconds plus a flush in progress. If the flusher falls behind
(a producer appending as fast as Python allows starves it of the GIL), a producer that finds
rows older than twice the interval, or ``4 * flush_rows`` rows waiting, commits them itself
before going on, so the window stays about ``2 * flush_interval`` plus two flushes.
Node-state commits share that window: a crash loses a buffered commit with its row (never
one without the other), and since the flush writes in order and never splits commits, every
session's log after a crash is a prefix of the commits returned, and verifies. A buffered
commit whose session vanished before the flush is handed back (with every later buffered
commit of that session) as a :class:`FlushError`; the next commit continues the stored log.
Another store handle committing to the same session while commits are buffered makes the
flush fail the same way (its seqs are taken): write a session from one handle.
``pending_writes`` says how many rows are at risk right now. ``flush()`` and ``close()`` make
everything durable, and so does a normal interpreter exit (an ``atexit`` hook closes every
open batched store).

A row that cannot be written never blocks the others, and is never dropped silently: see
:class:`FlushError`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import duckdb

from ..commitlog import NodeCommit
from ..errors import FlushError, SessionNotFoundError, StoreClosedError, StoreError
from ..rows import ROW_MODELS, NodeStateRecord, Row

__all__ = [
    "BUFFERED_MODELS",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_FLUSH_ROWS",
    "DURABILITY_MODES",
    "MAX_FAILED_ATTEMPTS",
    "BufferedCommit",
    "GroupCommit",
    "GroupCommitHost",
    "WriteBuffer",
]

logger = logging.getLogger("perspt_store")

DURABILITY_MODES = ("immediate", "batched")
"""``immediate``: every write commits before it returns (the default). ``batched``: group
commit, see this module."""

DEFAULT_FLUSH_INTERVAL = 0.05
"""Seconds between a row being buffered and its commit, at most (plus one flush)."""

DEFAULT_FLUSH_ROWS = 10_000
"""Buffered rows that trigger a flush before the interval is up."""


def _buffered(model: type[Row]) -> bool:
    """Whether batched mode buffers rows of ``model``: only if nothing but a missing
    session (checked before buffering) can make the row fail at the flush."""
    return (
        "id" in model.__db_columns__  # append-only: the id comes from a sequence
        and not model.__unique__  # no key a duplicate could break on at the flush
        and model.model_fields["session_id"].is_required()  # its session is a foreign key
        and model is not NodeStateRecord  # a commit to the Merkle log: the durable path
    )


BUFFERED_MODELS: frozenset[type[Row]] = frozenset(filter(_buffered, ROW_MODELS.values()))
"""Rows that batched mode buffers: the append-only tables with no unique key and a required
session, whose only possible failure is a session that does not exist (checked before
buffering). Node states are buffered too, with their commit (:class:`BufferedCommit`).
Sessions, branch lineage (its session is optional: no foreign key; checked in a
transaction), charters, plan revisions, repair footprints and budget envelopes are always
written synchronously."""


@dataclass(frozen=True, slots=True)
class BufferedCommit:
    """A node-state row and the Merkle commit computed for it when it was recorded: the
    flush writes the row, its log entry and the session's new root together."""

    __table__: ClassVar[str] = "node_states"

    record: NodeStateRecord
    commit: NodeCommit

    @property
    def session_id(self) -> str:
        return self.record.session_id


Buffered = Row | BufferedCommit
"""What the buffer holds: a row, or a node-state row with its commit."""


MAX_FAILED_ATTEMPTS = 200
"""Failed attempts one flush makes to isolate bad rows before it hands back the rest."""


class WriteBuffer:
    """Rows waiting for the next group commit, and the daemon thread that commits them.

    The buffer only decides *when* to flush; ``flush`` (the store's) decides *how*: under the
    store's write lock it takes the rows with :meth:`take`, writes what it can, and ends with
    :meth:`flushed` (naming the rows it could not write) or, if it was interrupted before
    deciding, :meth:`restore`.

    Every row gets a ticket (its number in arrival order); each thread remembers the ticket of
    the last row it buffered, so :meth:`owes_current_thread` tells, without a lock, whether
    the calling thread has rows that are not committed yet (read your own writes).
    """

    def __init__(
        self,
        flush: Callable[[], None],
        *,
        interval: float,
        max_rows: int,
        name: str,
        at_exit: Callable[[], None],
    ) -> None:
        if not interval > 0:
            raise ValueError(f"flush_interval must be > 0 seconds, not {interval!r}")
        if max_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, not {max_rows!r}")
        self._flush = flush
        self.interval = interval
        self.max_rows = max_rows
        self._rows: list[Buffered] = []
        self._in_flight = 0  # rows taken by a flush that has not finished
        self._oldest = 0.0  # monotonic time the oldest buffered row arrived
        self._cond = threading.Condition(threading.Lock())
        self._tickets = 0  # rows ever buffered (the last row's ticket)
        self._taken = 0  # every row up to this ticket was taken by a flush...
        self._done = 0  # ...and up to this one, the flush finished (written or handed back)
        self._mine = threading.local()  # .ticket: the last row this thread buffered
        self._failed: list[Row] = []  # rows a flush could not write, not reported yet
        self._causes: dict[str, None] = {}  # why, one line per distinct cause, in order
        self._cause: BaseException | None = None  # the first of them
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _AT_EXIT[id(self)] = at_exit

    # --- producers ----------------------------------------------------------------------

    def add(self, row: Buffered) -> bool:
        """Buffer one row; True when the flusher is so far behind (``4 * max_rows`` rows, or
        rows older than twice the interval) that the caller should flush itself.

        Raises:
            FlushError: Rows an earlier flush could not write are handed back (reported
                once; this row is not buffered).
            StoreClosedError: The buffer was stopped (the store is closing).
        """
        with self._cond:
            if self._failed:
                self._raise_failure("; this call wrote nothing")
            if self._stopping:
                raise StoreClosedError()
            rows = self._rows
            rows.append(row)
            self._tickets += 1
            self._mine.ticket = self._tickets
            n = len(rows)
            if n == 1:
                self._oldest = time.monotonic()
                self._cond.notify()
            elif n >= self.max_rows:
                self._cond.notify()
                return n >= 4 * self.max_rows
            elif n % 64 == 0:  # a cheap, periodic look at the clock
                # The flusher is behind (busy, or starved of the GIL by this producer): the
                # producer commits itself, which bounds the loss window and the memory.
                return time.monotonic() - self._oldest > 2 * self.interval
        return False

    @property
    def pending(self) -> int:
        """How many rows are not committed yet (buffered, or in a flush still running)."""
        return len(self._rows) + self._in_flight

    def owes_current_thread(self) -> bool:
        """True if the calling thread buffered rows that no flush has finished with yet."""
        return getattr(self._mine, "ticket", 0) > self._done

    # --- the flush protocol (called by the store under its write lock) ------------------

    def take(self) -> list[Buffered]:
        """Remove and return every buffered row, oldest first."""
        with self._cond:
            rows, self._rows = self._rows, []
            self._in_flight = len(rows)
            self._taken = self._tickets
            return rows

    def restore(self, rows: list[Buffered]) -> None:
        """Put rows back at the head of the buffer: a flush was interrupted (e.g. by
        KeyboardInterrupt) before it wrote them or decided they cannot be written."""
        with self._cond:
            self._in_flight = 0
            if rows:
                self._rows[:0] = rows
                self._oldest = time.monotonic()

    def flushed(self, failed: Sequence[tuple[Buffered, BaseException]] = ()) -> None:
        """The flush finished with every row it took: written, or (``failed``, in order,
        with the cause of each) handed back to the next caller (:class:`FlushError`)."""
        if failed:
            logger.warning(
                "group commit: %d buffered rows could not be written; they are handed back "
                "to the next record_*, flush() or close() (FlushError): %s",
                len(failed), failed[0][1],
            )
        with self._cond:
            self._in_flight = 0
            self._done = max(self._done, self._taken)
            for item, cause in failed:
                row = item.record if isinstance(item, BufferedCommit) else item
                self._failed.append(row)
                self._causes[f"{type(row).__name__}: {cause}"] = None
                if self._cause is None:
                    self._cause = cause

    def report(self, tail: str = "") -> None:
        """Raise the :class:`FlushError` for rows not written since the last report, if any
        (and forget them: each is reported once); ``tail`` ends its message."""
        with self._cond:
            if self._failed:
                self._raise_failure(tail)

    def _raise_failure(self, tail: str) -> None:
        rows, causes, cause = self._failed, list(self._causes), self._cause
        self._failed, self._causes, self._cause = [], {}, None
        shown = "; ".join(causes[:3]) + (f"; and {len(causes) - 3} more" if len(causes) > 3 else "")
        raise FlushError(
            f"a group commit could not write {len(rows)} buffered "
            f"row{'s' if len(rows) != 1 else ''} ({shown}); every other buffered row was "
            f"committed; the rows were removed from the buffer and are handed back on this "
            f"error's rows{tail}",
            rows=rows,
        ) from cause

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the flusher (it finishes a flush in progress); idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        _AT_EXIT.pop(id(self), None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the flusher thread to exit (call after :meth:`stop`, without holding the
        store's write lock)."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                # Sleep until there is something to flush.
                while not self._stopping and not self._rows:
                    cond.wait()
                if self._stopping:
                    return
                # Then until the oldest row is `interval` old or the buffer is full.
                while not self._stopping and len(self._rows) < self.max_rows:
                    remaining = self._oldest + self.interval - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                if self._stopping:
                    return
            try:
                self._flush()  # isolates bad rows itself; raises only if interrupted
            except BaseException as exc:  # the rows were restored: retried after the interval
                logger.warning("group commit interrupted; rows kept for retry: %r", exc)


class GroupCommitHost(Protocol):
    """What group commit uses of its store (``SessionStore``: ``StoreBase`` and
    ``BulkMixin``). Every name is the store's own; group commit lives inside ``store/``."""

    _lock: threading.RLock
    _local: Any  # the store's per-thread state: .reading, .draining
    _closed: bool
    _commit_logs: dict[str, Any]  # the commit logs cached by store.commits

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def _check_writable(self, table: str | None) -> None: ...

    def _check_may_wait(self) -> None: ...

    def _cursor(self) -> duckdb.DuckDBPyConnection: ...

    def _bulk_insert(self, rows: Sequence[Row]) -> None: ...

    def _persist_commits(self, items: Sequence[tuple[NodeStateRecord, NodeCommit]]) -> None: ...

    def _existing_sessions(self, session_ids: list[str]) -> set[str]: ...


class GroupCommit:
    """A batched store's group commit: its :class:`WriteBuffer` and flusher thread, the
    sessions known to exist, and the flush that commits the buffer.

    Threads: :meth:`offer` runs on the producer's thread without the write lock; a flush
    (:meth:`drain`) holds the store's write lock from start to end, so flushes never
    interleave with other writes or each other.
    """

    def __init__(self, store: GroupCommitHost, *, interval: float, max_rows: int) -> None:
        self._store = store
        self.known_sessions: set[str] = set()  # committed sessions seen by batched writes
        self.buffered_commits = 0  # node-state commits buffered or in a flush (write lock)
        self.buffer = WriteBuffer(
            self.drain,
            interval=interval,
            max_rows=max_rows,
            name=f"perspt-store-flusher-{id(store):x}",
            at_exit=store.close,
        )

    @property
    def pending(self) -> int:
        """Rows recorded but not committed yet."""
        return self.buffer.pending

    # --- producers ----------------------------------------------------------------------

    def offer(self, row: Row) -> bool:
        """Buffer ``row`` if batched mode buffers it here (a :data:`BUFFERED_MODELS` row,
        outside a transaction or a consistent read); False if the caller writes it itself.

        Raises:
            SessionNotFoundError: The row's session does not exist (nothing is buffered).
            FlushError: Rows an earlier flush could not write (this row is not buffered).
        """
        store = self._store
        if type(row) not in BUFFERED_MODELS or store.in_transaction or store._local.reading:
            return False
        store._check_writable(row.__table__)
        session_id: str | None = getattr(row, "session_id", None)
        if session_id is not None:
            self.require_session(session_id, row.__table__)
        self.add(row)
        return True

    def takes_now(self) -> bool:
        """True if a write on this thread may be buffered now (outside a transaction or a
        consistent read)."""
        return not (self._store.in_transaction or self._store._local.reading)

    def require_session(self, session_id: str, table: str) -> None:
        """Raise :class:`SessionNotFoundError` unless the session exists (a committed one,
        looked up once: forgotten if a flush finds it gone). Reads without committing the
        buffer or taking the write lock."""
        if session_id in self.known_sessions:
            return
        from ._base import translate_error  # _base imports this module

        try:
            found = self._store._cursor().execute(
                "SELECT 1 FROM sessions WHERE session_id = ?", [session_id]
            ).fetchall()
        except duckdb.Error as exc:
            raise translate_error(exc, table="sessions", operation="select") from exc
        if not found:
            raise SessionNotFoundError(session_id, table=table, operation="insert")
        self.known_sessions.add(session_id)

    def add(self, item: Buffered) -> None:
        """Buffer a checked row or commit; commit the buffer here if the flusher is far
        behind (bounds memory and the loss window)."""
        behind = self.buffer.add(item)
        if isinstance(item, BufferedCommit):
            self.buffered_commits += 1  # the caller holds the write lock: no flush between
        if behind:
            if self._store._local.io_refused:  # on an event loop: its caller drains on a worker
                self._store._local.drain_owed = True
            else:
                self.drain()  # rows it cannot write are reported by the next call

    # --- when a statement must commit the buffer first -----------------------------------

    def drain_pending(self, *, everyone: bool = False) -> None:
        """Before a statement: commit buffered rows it must see or follow.

        Read your writes: if the calling thread has rows not committed yet, the buffer is
        committed (all of it: one group commit). A thread with nothing buffered does not
        commit and does not wait for the write lock: its reads see what is committed.
        Writes (``everyone``, or a statement run while this thread holds the write lock)
        commit the buffer if it holds anybody's rows, so a synchronous write follows every
        row acknowledged before it. Never inside a transaction, a consistent read or a flush.
        """
        store, buffer = self._store, self.buffer
        local = store._local
        if store.in_transaction or local.draining or local.reading:
            return
        if everyone or store._lock._is_owned():  # type: ignore[attr-defined]
            if buffer.pending:
                self.drain()
        elif buffer.owes_current_thread():
            self.drain(owed_only=True)

    # --- the flush ----------------------------------------------------------------------

    def drain(self, *, owed_only: bool = False) -> None:
        """Commit every buffered row, one bulk statement per table, isolating the rows that
        cannot be written (:meth:`_commit`).

        Holds the write lock, so flushes never interleave with other writes or each other
        (and a flush in progress finishes before the next one starts). Never runs inside a
        transaction: buffered rows, other threads' included, commit on their own. Rows that
        cannot be written leave the buffer and are reported once, as a :class:`FlushError`,
        by the next ``record_*``, ``flush()`` or ``close()`` (:meth:`WriteBuffer.report`).

        Args:
            owed_only: Do nothing if, once the lock is held, the calling thread's rows are
                committed already (a flush finished them while this thread waited).

        Raises:
            StoreError: Called inside ``transaction()`` or ``consistent_read()``, or a
                transaction could not begin (the rows stay buffered).
        """
        store, buffer = self._store, self.buffer
        if store.in_transaction or store._local.reading:
            raise StoreError(
                "buffered rows are committed on their own, never inside a transaction() or "
                "consistent_read() block",
                operation="flush",
            )
        store._check_may_wait()
        with store._lock:
            if store._closed or (owed_only and not buffer.owes_current_thread()):
                return
            rows = buffer.take()
            if not rows:
                buffer.flushed()
                return
            committed = [False] * len(rows)
            store._local.draining = True
            try:
                failed = self._commit(rows, committed)
            except BaseException:  # interrupted: keep what was not committed
                buffer.restore([row for row, done in zip(rows, committed, strict=True)
                                if not done])
                raise
            finally:
                store._local.draining = False
            for item, _ in failed:
                if isinstance(item, BufferedCommit):  # the cached log holds it: reload
                    store._commit_logs.pop(item.session_id, None)
            self.buffered_commits -= sum(isinstance(row, BufferedCommit) for row in rows)
            buffer.flushed(failed)

    def _write(self, rows: Sequence[Buffered]) -> None:
        """Append rows of any buffered models, one bulk statement per table, each table's
        rows in order, and node-state commits with their log entries and roots (inside the
        flush's transaction)."""
        groups: dict[type[Buffered], list[Any]] = {}
        for row in rows:
            group = groups.get(type(row))
            if group is None:
                groups[type(row)] = [row]
            else:
                group.append(row)
        for kind, group in groups.items():
            if kind is BufferedCommit:
                self._store._persist_commits([(c.record, c.commit) for c in group])
            else:
                self._store._bulk_insert(group)

    def _commit(
        self, rows: Sequence[Buffered], committed: list[bool]
    ) -> list[tuple[Buffered, BaseException]]:
        """Commit buffered rows (group commit), isolating those that cannot be written.

        One transaction for all of them; if it fails, the rows naming a session that no
        longer exists are set aside (one query) and the rest retried; if that fails too,
        each table's rows in a transaction of their own, and a table's rows that fail are
        split in halves, recursively, until the failing rows stand alone (node-state
        commits are never split: they fail together, so each session's log stays a prefix
        of what was recorded). Every other row is
        committed, each table's rows in their order. Isolation stops when the failure is
        not about rows (the engine or the connection failed) or after
        :data:`MAX_FAILED_ATTEMPTS` failed attempts; the rows not committed by then are
        returned with the others. Call under the write lock, outside any transaction.

        Args:
            rows: The rows, in buffer order.
            committed: One flag per row, set as the row's transaction commits (so that a
                caller interrupted by ``KeyboardInterrupt`` knows which rows to keep).

        Returns:
            The rows not written, in buffer order, each with the error that stopped it.

        Raises:
            StoreError: A transaction could not even begin (nothing was attempted; the
                rows not committed yet are neither written nor returned).
        """
        failed: dict[int, BaseException] = {}
        budget = [MAX_FAILED_ATTEMPTS]

        def attempt(indices: list[int]) -> BaseException | None:
            try:
                with self._store.transaction():
                    self._write([rows[i] for i in indices])
            except Exception as exc:
                if isinstance(exc, StoreError) and exc.operation == "begin transaction":
                    raise
                return exc
            for i in indices:
                committed[i] = True
            return None

        def isolate(indices: list[int], split: Callable[[list[int]], list[list[int]]]) -> None:
            for part in split(indices):
                if not part:
                    continue
                error = attempt(part)
                if error is None:
                    continue
                budget[0] -= 1
                if len(part) == 1 or all(isinstance(rows[i], BufferedCommit) for i in part):
                    # Commits are never split: a later commit of a session must not land
                    # without an earlier one (the log stays a prefix).
                    for i in part:
                        failed[i] = error
                elif _not_about_rows(error) or budget[0] <= 0:
                    raise _GiveUp(error)
                else:
                    isolate(part, _halves)

        everything = list(range(len(rows)))
        error = attempt(everything)
        if error is None:
            return []
        try:
            if _not_about_rows(error):
                raise _GiveUp(error)
            rest = self._set_aside_missing_sessions(rows, failed)
            if rest and (not failed or attempt(rest) is not None):
                isolate(rest, _by_table(rows))
        except _GiveUp as stop:
            cause = stop.args[0]
            if not _not_about_rows(cause):
                cause = StoreError(
                    f"not isolated: the flush gave up after {MAX_FAILED_ATTEMPTS} failed "
                    f"attempts (the last: {cause})",
                    operation="flush",
                )
            for i in everything:
                if not committed[i] and i not in failed:
                    failed[i] = cause
        return [(rows[i], failed[i]) for i in sorted(failed)]

    def _set_aside_missing_sessions(
        self, rows: Sequence[Buffered], failed: dict[int, BaseException]
    ) -> list[int]:
        """Record in ``failed`` the rows naming a session that does not exist (any longer:
        it was deleted behind the store's back) and forget those sessions; return the
        indices of the other rows."""
        named = sorted({s for row in rows if (s := getattr(row, "session_id", None)) is not None})
        if not named:
            return list(range(len(rows)))
        try:
            found = self._store._existing_sessions(named)
        except StoreError:  # the halving will find them
            return list(range(len(rows)))
        rest = []
        for i, row in enumerate(rows):
            session_id = getattr(row, "session_id", None)
            if session_id is not None and session_id not in found:
                failed[i] = SessionNotFoundError(
                    session_id, table=row.__table__, operation="insert"
                )
                self.known_sessions.discard(session_id)  # a later record_* checks again
            else:
                rest.append(i)
        return rest


class _GiveUp(Exception):
    """Internal: stop isolating bad rows (args[0]: the last error)."""


_NOT_ABOUT_ROWS = (
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.IOException,
    duckdb.ConnectionException,
)


def _not_about_rows(error: BaseException) -> bool:
    """True if ``error`` says the engine or the connection failed, not a row."""
    return isinstance(error, _NOT_ABOUT_ROWS) or isinstance(error.__cause__, _NOT_ABOUT_ROWS)


def _halves(indices: list[int]) -> list[list[int]]:
    middle = len(indices) // 2
    return [indices[:middle], indices[middle:]]


def _by_table(rows: Sequence[Buffered]) -> Callable[[list[int]], list[list[int]]]:
    """Split indices into one list per model (first appearance first), or in halves if
    they are all of one model (their transaction just failed as a whole)."""

    def split(indices: list[int]) -> list[list[int]]:
        groups: dict[type[Buffered], list[int]] = {}
        for i in indices:
            groups.setdefault(type(rows[i]), []).append(i)
        return list(groups.values()) if len(groups) > 1 else _halves(indices)

    return split


_AT_EXIT: dict[int, Callable[[], None]] = {}
"""id(buffer) -> the owning store's close(), for buffers still open."""


@atexit.register
def _close_open_stores() -> None:
    """Make every open batched store durable at a normal interpreter exit."""
    for close in list(_AT_EXIT.values()):
        try:
            close()
        except Exception as exc:  # nothing left to raise to; say what was lost
            logger.error("closing a batched store at exit failed: %s", exc)
