"""Group commit: the write buffer of a ``durability="batched"`` store and its flusher thread.

In batched mode, ``record_*`` calls for the append-only tables (:data:`BUFFERED_MODELS`) only
append the row to an in-memory buffer and return. A daemon thread commits the buffer in one
transaction, with one bulk statement per table, at most ``flush_interval`` seconds after the
oldest buffered row arrived (sooner once ``flush_rows`` rows are waiting). The store's own
reads flush first, so a store always reads its own writes.

Loss window: a crash (SIGKILL, power loss) loses the rows not committed yet: normally those
of the last ``flush_interval`` seconds plus a flush in progress. If the flusher falls behind
(a producer appending as fast as Python allows starves it of the GIL), a producer that finds
rows older than twice the interval, or ``4 * flush_rows`` rows waiting, commits them itself
before going on, so the window stays about ``2 * flush_interval`` plus two flushes.
``pending_writes`` says how many rows are at risk right now. ``flush()`` and ``close()`` make
everything durable, and so does a normal interpreter exit (an ``atexit`` hook closes every
open batched store).

Failures never drop rows silently: the rows of a failed flush go back to the head of the
buffer (order kept) and are retried by the next flush; the failure is reported as a
:class:`FlushError` by the next ``record_*`` call (which then buffers nothing), by ``flush()``
if its own retry fails too, or by ``close()``, which hands the unwritten rows back on the
error's ``rows`` attribute.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence

from .errors import StoreClosedError, StoreError
from .rows import (
    ArtifactBundleRow,
    BranchFlushRow,
    ContextProvenanceRecord,
    CorrectionAttemptRow,
    EnergyRecord,
    EscalationReportRecord,
    InterfaceSealRow,
    LlmRequestRecord,
    ProvisionalBranchRow,
    ReviewOutcomeRow,
    RewriteRecordRow,
    Row,
    SheafValidationRow,
    SrbnStepRecord,
    StructuralDigestRecord,
    TaskGraphEdgeRow,
    VerificationResultRow,
)

__all__ = [
    "BUFFERED_MODELS",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_FLUSH_ROWS",
    "DURABILITY_MODES",
    "FlushError",
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

BUFFERED_MODELS: frozenset[type[Row]] = frozenset(
    {
        EnergyRecord,
        LlmRequestRecord,
        SrbnStepRecord,
        CorrectionAttemptRow,
        StructuralDigestRecord,
        ContextProvenanceRecord,
        EscalationReportRecord,
        RewriteRecordRow,
        SheafValidationRow,
        ProvisionalBranchRow,
        InterfaceSealRow,
        BranchFlushRow,
        TaskGraphEdgeRow,
        ReviewOutcomeRow,
        VerificationResultRow,
        ArtifactBundleRow,
    }
)
"""Rows that batched mode buffers: the append-only tables with no unique key, whose only
possible failure is a session that does not exist (checked before buffering). Sessions, node
states (their Merkle commit is the durable path), branch lineage (checked in a transaction),
charters, plan revisions, repair footprints and budget envelopes are always written
synchronously."""


class FlushError(StoreError):
    """A group commit (``durability="batched"``) failed to write buffered rows.

    Attributes:
        rows: The rows that were not written. After a background or ``flush()`` failure they
            are still buffered and will be retried; from ``close()`` they are handed back
            (the store no longer holds them).
    """

    def __init__(self, message: str, *, rows: Sequence[Row] = ()) -> None:
        super().__init__(message, operation="flush")
        self.rows: tuple[Row, ...] = tuple(rows)


class WriteBuffer:
    """Rows waiting for the next group commit, and the daemon thread that commits them.

    The buffer only decides *when* to flush; ``flush`` (the store's) decides *how*: it takes
    the rows with :meth:`take` under the store's write lock, writes them, and on failure puts
    them back with :meth:`restore` and raises.
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
        self._error: BaseException | None = None  # a background flush failure, unreported
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _AT_EXIT[id(self)] = at_exit

    # --- producers ----------------------------------------------------------------------

    def add(self, row: Row) -> bool:
        """Buffer one row; True when the flusher is so far behind (``4 * max_rows`` rows, or
        rows older than twice the interval) that the caller should flush itself.

        Raises:
            FlushError: An earlier background flush failed (reported once; this row is not
                buffered; the failed rows are still buffered and will be retried).
            StoreClosedError: The buffer was stopped (the store is closing).
        """
        with self._cond:
            if self._error is not None:
                self._raise_error()
            if self._stopping:
                raise StoreClosedError("the store is closed; open a new SessionStore to use it")
            rows = self._rows
            rows.append(row)
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

    # --- the flush protocol (called by the store under its write lock) ------------------

    def take(self) -> list[Row]:
        """Remove and return every buffered row, oldest first."""
        with self._cond:
            rows, self._rows = self._rows, []
            self._in_flight = len(rows)
            return rows

    def restore(self, rows: list[Row]) -> None:
        """Put rows whose flush failed back at the head of the buffer."""
        with self._cond:
            self._in_flight = 0
            if rows:
                self._rows[:0] = rows
                self._oldest = time.monotonic()

    def flushed(self) -> None:
        """A flush wrote every row it took: any recorded failure lost nothing, forget it."""
        with self._cond:
            self._in_flight = 0
            if self._error is not None:
                self._error = None
                self._cond.notify()

    def failed(self, error: BaseException) -> None:
        """A flush the caller ran for rows it had already buffered failed: record it for the
        next call to report, as a background failure is (the rows stay buffered)."""
        with self._cond:
            if self._error is None:
                self._error = error

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        self._cond.notify()  # let the flusher retry
        raise FlushError(
            f"a background group commit failed ({error}); its {len(self._rows)} rows are "
            "still buffered and will be retried; this call wrote nothing",
            rows=self._rows,
        ) from error

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
                # Sleep until there is something to flush and no unreported failure.
                while not self._stopping and (not self._rows or self._error is not None):
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
                self._flush()
            except BaseException as exc:  # recorded, reported to the next caller
                with cond:
                    if self._stopping:
                        return
                    self._error = exc
                logger.warning("group commit failed; rows kept for retry: %s", exc)


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
