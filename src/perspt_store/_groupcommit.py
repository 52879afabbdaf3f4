"""Group commit: the write buffer of a ``durability="batched"`` store and its flusher thread.

In batched mode, ``record_*`` calls for the append-only tables (:data:`BUFFERED_MODELS`) only
append the row to an in-memory buffer and return. A daemon thread commits the buffer in one
transaction, with one bulk statement per table, at most ``flush_interval`` seconds after the
oldest buffered row arrived (sooner once ``flush_rows`` rows are waiting).

Reads: a thread reads its own writes. A read (or ``sql()``) by a thread that has rows
buffered first commits the buffer; a read by a thread with nothing buffered neither commits
nor waits for the write lock, and sees what is committed (rows other threads buffered appear
once flushed). Writes that are not buffered (node states, ``record_many``,
``transaction()``, …) commit the whole buffer first, so they follow every row acknowledged
before them.

Loss window: a crash (SIGKILL, power loss) loses the rows not committed yet: normally those
of the last ``flush_interval`` seconds plus a flush in progress. If the flusher falls behind
(a producer appending as fast as Python allows starves it of the GIL), a producer that finds
rows older than twice the interval, or ``4 * flush_rows`` rows waiting, commits them itself
before going on, so the window stays about ``2 * flush_interval`` plus two flushes.
``pending_writes`` says how many rows are at risk right now. ``flush()`` and ``close()`` make
everything durable, and so does a normal interpreter exit (an ``atexit`` hook closes every
open batched store).

A row that cannot be written never blocks the others, and is never dropped silently: see
:class:`FlushError`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence

from .errors import FlushError, StoreClosedError
from .rows import ROW_MODELS, Row
from .schema import SEQUENCED_TABLES

__all__ = [
    "BUFFERED_MODELS",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_FLUSH_ROWS",
    "DURABILITY_MODES",
    "MAX_FAILED_ATTEMPTS",
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

# The append-only tables (ids from a sequence, no natural key) that are written synchronously
# all the same, and why.
_SYNCHRONOUS_TABLES = frozenset(
    {
        "node_states",  # its Merkle commit is the durable path
        "branch_lineage",  # checked in a transaction (it has no foreign key)
        "repair_footprints",  # footprint_id is unique: a duplicate must fail on the call
    }
)

BUFFERED_MODELS: frozenset[type[Row]] = frozenset(
    ROW_MODELS[table] for table in SEQUENCED_TABLES if table not in _SYNCHRONOUS_TABLES
)
"""Rows that batched mode buffers: the append-only tables with no unique key, whose only
possible failure is a session that does not exist (checked before buffering). Sessions, node
states (their Merkle commit is the durable path), branch lineage (checked in a transaction),
charters, plan revisions, repair footprints and budget envelopes are always written
synchronously."""


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
        self._rows: list[Row] = []
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

    def add(self, row: Row) -> bool:
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

    def take(self) -> list[Row]:
        """Remove and return every buffered row, oldest first."""
        with self._cond:
            rows, self._rows = self._rows, []
            self._in_flight = len(rows)
            self._taken = self._tickets
            return rows

    def restore(self, rows: list[Row]) -> None:
        """Put rows back at the head of the buffer: a flush was interrupted (e.g. by
        KeyboardInterrupt) before it wrote them or decided they cannot be written."""
        with self._cond:
            self._in_flight = 0
            if rows:
                self._rows[:0] = rows
                self._oldest = time.monotonic()

    def flushed(self, failed: Sequence[tuple[Row, BaseException]] = ()) -> None:
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
            for row, cause in failed:
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
