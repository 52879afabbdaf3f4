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
└── IntegrityError             a Merkle check failed (a proof, a log or a state root)
```
"""

from __future__ import annotations

__all__ = [
    "DuplicateRecordError",
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


class StoreLockedError(StoreError):
    """Another process holds the database file read-write (DuckDB allows one writer process)."""


class DuplicateRecordError(StoreError):
    """A row with the same primary or unique key already exists; nothing was written."""


class SchemaVersionError(StoreError):
    """The file's schema is newer than this library understands, or could not be migrated."""


class IntegrityError(StoreError):
    """A Merkle check failed: a proof, the commit log or a state root does not match."""
