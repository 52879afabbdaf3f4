"""The exception tree of perspt-store.

Every error a public method raises on purpose is a :class:`StoreError`; DuckDB's own
exceptions are translated at one boundary (``perspt_store.store._base``) and chained with
``from``, so ``err.__cause__`` keeps the engine's message. Bad field values are rejected
earlier, when a row model is built, with pydantic's ``ValidationError``.

```
StoreError                     anything the store refuses or cannot do
├── SessionNotFoundError       an operation names a session that does not exist
├── RecordNotFoundError        an operation names a row that does not exist (nothing is changed)
├── ReadOnlyStoreError         a write on a store opened read-only
├── StoreClosedError           use after close()
├── StoreLockedError           another process holds the database file
├── DuplicateRecordError       a primary or unique key that already exists
├── SchemaVersionError         the file's schema is newer than this library, or cannot be migrated
├── IntegrityError             a Merkle check failed (a proof, a log or a state root)
└── FlushError                 batched durability: buffered rows could not be written
```

A message that several places raise is made here, once: ``StoreClosedError()`` and
``SchemaVersionError.newer(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rows import Row

__all__ = [
    "DuplicateRecordError",
    "FlushError",
    "IntegrityError",
    "ReadOnlyStoreError",
    "RecordNotFoundError",
    "SchemaVersionError",
    "SessionNotFoundError",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
]


class StoreError(Exception):
    """Base class of every error perspt-store raises on purpose.

    Attributes:
        table: The table the failed operation touched, when there is one.
        operation: What was being done (``"insert"``, ``"select"``, ``"open"``, ...).
    """

    def __init__(
        self, message: str, *, table: str | None = None, operation: str | None = None
    ) -> None:
        super().__init__(message)
        self.table = table
        self.operation = operation


_WRITES = frozenset({"insert", "update", "delete", "write"})


class SessionNotFoundError(StoreError):
    """An operation names a session that does not exist; nothing was read or written.

    Args:
        session_id: The session named.
        table: The table the operation touched.
        operation: What was being done: a write (``"insert"``, ``"update"``, ...) says that
            nothing was written to ``table`` and how to create the session; anything else
            (a read, or None) only that the session does not exist.
    """

    def __init__(
        self, session_id: str, *, table: str | None = None, operation: str | None = None
    ) -> None:
        if operation in _WRITES:
            where = f" to {table}" if table else ""
            message = (
                f"session {session_id!r} does not exist, so nothing was written{where}; "
                "create it with create_session() first"
            )
        else:
            message = f"session {session_id!r} does not exist"
        super().__init__(message, table=table, operation=operation)
        self.session_id = session_id


class RecordNotFoundError(StoreError):
    """An operation names a row (a commit, a revision, ...) that does not exist."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a store opened with ``open_read_only``."""


class StoreClosedError(StoreError):
    """The store was used after ``close()``."""

    def __init__(
        self,
        message: str = "the store is closed; open a new SessionStore to use it",
        *,
        table: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message, table=table, operation=operation)


class StoreLockedError(StoreError):
    """Another process holds the database file read-write (DuckDB allows one writer process)."""


class DuplicateRecordError(StoreError):
    """A row with the same primary or unique key already exists; nothing was written."""


class SchemaVersionError(StoreError):
    """The file's schema is newer than this library understands, or could not be migrated."""

    @classmethod
    def newer(
        cls, version: object, supported: int, then: str, *, what: str = "the database",
        operation: str,
    ) -> SchemaVersionError:
        """The error for ``what`` at schema ``version``, newer than the ``supported`` one;
        ``then`` ends the message: what that means here and what to do."""
        return cls(
            f"{what} has schema version {version}, newer than this library's {supported}; "
            f"{then}",
            operation=operation,
        )


class IntegrityError(StoreError):
    """A Merkle check failed: a proof, the commit log or a state root does not match."""


class FlushError(StoreError):
    """A group commit (``durability="batched"``) could not write some buffered rows.

    When a flush fails, the store finds the rows that cause it and commits every other row:
    rows naming a session that no longer exists are set aside first (one query), then the
    rest is retried table by table, and a table whose rows still fail is split in halves
    until the failing rows are isolated (a few failed attempts per bad row). The rows that
    cannot be written leave the buffer for good (retrying them would fail forever) and are
    handed back on this error, raised once, by whichever comes first:

    * the next ``record_*`` call that would buffer a row (in any thread; that call then
      writes nothing);
    * ``flush()``;
    * ``close()`` (which closes the store anyway; at interpreter exit it is logged).

    Reads never raise it, and the store goes on working normally after it.

    Isolation stops early when the cause is not a row (the database or the connection
    failed: an I/O error, a fatal or internal engine error), or after
    :data:`~perspt_store.store._groupcommit.MAX_FAILED_ATTEMPTS` failed attempts in one flush; the
    rows not written by then are handed back too, whether or not they were at fault.

    Attributes:
        rows: The rows that were not written, in the order they were recorded (per
            thread). The store no longer holds them: record them again (e.g. with
            ``record_many``) once the cause is fixed, or keep them elsewhere.
    """

    def __init__(self, message: str, *, rows: Sequence[Row] = ()) -> None:
        super().__init__(message, operation="flush")
        self.rows: tuple[Row, ...] = tuple(rows)
