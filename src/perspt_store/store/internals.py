"""What modules outside ``store/`` may use of a store's insides, and nothing more.

The lake (Parquet and Delta) and the frames read and write tables in bulk with their own
SQL; they need a few things the public API does not offer: this thread's cursor, a
consistent snapshot to export from, the legacy high-water marks that say which rows carry
upstream's encodings, a way to write imported rows under the store's write lock (retried,
translated, published) and to drop the cached commit log of a session they imported. The
async store runs buffered writes on its event loop's thread with I/O refused, and the
dashboard's reader reads when a copied snapshot was published with the publisher's code.
:func:`internals` hands those out; no module outside ``store/`` touches an underscore
attribute of the store (``tests/test_store_boundary.py`` checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import duckdb

from ._base import StoreBase

__all__ = ["IoRefused", "StoreInternals", "internals"]


class StoreInternals:
    """A store's insides, as far as the lake and the frames need them."""

    __slots__ = ("_store",)

    def __init__(self, store: StoreBase) -> None:
        self._store = store

    @property
    def legacy_marks(self) -> Mapping[str, int]:
        """Per table, the highest id (``row_order``/``rowid`` for sessions) upstream wrote:
        rows at or below it carry upstream's encodings. Read-only."""
        return MappingProxyType(self._store._legacy_marks)

    def order_column(self, table: str) -> str:
        """The column that orders ``table`` by insertion in this file."""
        return self._store._order_column(table)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the store's database (inside the caller's transaction or
        consistent read, if any).

        Raises:
            StoreClosedError: The store is closed.
        """
        return self._store._cursor()

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """This thread's cursor inside a consistent read, so every query sees the same
        committed state while other threads write; joins the caller's transaction or
        consistent read. Rows buffered in batched mode are committed first."""
        store = self._store
        if not store._reading_here():
            store.flush()
        with store.consistent_read():
            yield store._cursor()

    def check_writable(self) -> None:
        """Raise what a write would raise now (closed, read-only), before any work."""
        self._store._check_writable(None)

    def import_rows(
        self,
        sql: str,
        params: Sequence[Any] | None,
        *,
        table: str,
        session_id: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement that writes rows into ``table`` (an import), under the write
        lock: joined to the caller's transaction, else autocommitted, run again if another
        handle on the file won a race, and announced to the publisher. Errors come back as
        the store's (a missing ``session_id`` as :class:`SessionNotFoundError`).

        Call :meth:`drop_cached_log` for every session whose ``merkle_log`` rows it wrote.
        """
        return self._store._write(
            sql, params, table=table, operation="import", session_id=session_id
        )

    def io_refused(self) -> IoRefused:
        """On the thread that enters it, for the block: any call that needs DuckDB or the
        write lock raises :class:`~perspt_store.store._base.WouldBlock` before it changes
        anything. The async store runs batched mode's buffered writes on its event loop's
        thread this way. The context manager holds no state: one can be entered again, on
        any thread."""
        return IoRefused(self._store)

    def take_owed_drain(self) -> bool:
        """True (once) if a buffered write under :meth:`io_refused` found the buffer far
        behind: the caller owes the commit the sync store would have made (:meth:`drain`)."""
        local = self._store._local
        owed, local.drain_owed = local.drain_owed, False
        return bool(owed)

    def drain(self) -> None:
        """Commit the group-commit buffer now (batched mode; nothing otherwise)."""
        group = self._store._group
        if group is not None:
            group.drain()

    def drop_cached_log(self, session_id: str) -> None:
        """Forget the session's cached commit log (rows were written behind the store's
        commit code): the next commit, by this handle or another on the file, checks the
        stored log first."""
        self._store._commit_logs.pop(session_id, None)
        self._store._logs_may_have_changed()


class IoRefused:
    """:meth:`StoreInternals.io_refused`: a class rather than a generator, because the async
    store enters it at every buffered write (about 2 µs less a call)."""

    __slots__ = ("_store",)

    def __init__(self, store: StoreBase) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._local.io_refused = True

    def __exit__(self, *exc_info: object) -> None:
        self._store._local.io_refused = False


def internals(store: StoreBase) -> StoreInternals:
    """The internal interface of ``store`` for modules outside ``store/``."""
    return StoreInternals(store)
