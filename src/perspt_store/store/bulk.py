"""Bulk writes: ``record_many`` appends any mix of rows in one transaction, with one bulk
statement per table.

A table's rows go in as one statement: with pyarrow installed and at least
:data:`ARROW_MIN_ROWS` rows, an ``INSERT ... SELECT`` from an Arrow table (DuckDB scans it
without converting Python objects); otherwise ``INSERT ... SELECT unnest(?), unnest(?), ...``
with one list parameter per column (``TableMap.bulk_insert_sql``). Either way the rows keep
the order they were given in: the Arrow path draws the ids from the table's sequence first
and inserts them explicitly, in order; ``unnest`` draws them in list order.

Group commit's flushes (``durability="batched"``, ``store/_groupcommit.py``) write through
``_bulk_insert`` too.
"""

from __future__ import annotations

import importlib.util
import operator
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from .._mapping import TableMap, _unwrap_optional, table_map
from ..errors import SessionNotFoundError
from ..rows import (
    ROW_MODELS,
    BudgetEnvelopeRow,
    NodeStateRecord,
    Row,
    SessionRecord,
)
from ..schema import SEQUENCED_TABLES
from .commits import CommitLogMixin

ARROW_MIN_ROWS = 1_000
"""Below this many rows of a table, ``unnest`` lists beat building an Arrow table."""

_HAS_ARROW = importlib.util.find_spec("pyarrow") is not None

_SESSION_ID = operator.attrgetter("session_id")

_MODELS: frozenset[type[Row]] = frozenset(ROW_MODELS.values())

# Table order for the writes: sessions first (the other tables reference them), then the
# schema's order. Within a table, rows keep the order they were given in.
_WRITE_ORDER: dict[type[Row], int] = {model: i for i, model in enumerate(ROW_MODELS.values())}

_UPSERT_BUDGETS_SQL = table_map(BudgetEnvelopeRow).upsert_sql(
    "session_id", touch="updated_at", bulk=True
)


_ARROW_TYPES: dict[type[Row], list[Any]] = {}


def _arrow_types(mapping: TableMap[Any]) -> list[Any]:
    """The Arrow type of each column, from the model's field types."""
    types = _ARROW_TYPES.get(mapping.model)
    if types is None:
        import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

        types = []
        for name in mapping.columns:
            inner, _ = _unwrap_optional(mapping.model.model_fields[name].annotation)
            if name in mapping.json_lists or typing.get_origin(inner) is list or inner is str:
                types.append(pa.string())
            elif inner is bytes:
                types.append(pa.binary())
            elif inner is bool:
                types.append(pa.bool_())
            elif inner is int:
                types.append(pa.int64())
            elif inner is float:
                types.append(pa.float64())
            else:  # pragma: no cover - every model field is one of the above
                raise TypeError(f"no Arrow type for {mapping.table}.{name}: {inner!r}")
        _ARROW_TYPES[mapping.model] = types
    return types


class BulkMixin(CommitLogMixin):
    """``record_many``: many rows of any tables, atomically, one statement per table."""

    def record_many(self, rows: Iterable[Row]) -> int:
        """Write many rows of any of the 23 row models in one transaction.

        Each table gets one bulk statement; rows keep the order they were given in (ids and
        "latest" follow it), exactly as if they had been recorded one by one. Every row is
        written with the semantics of its single-row method:

        * :class:`NodeStateRecord` rows are committed to their session's Merkle log, in order
          (like ``record_node_state``);
        * :class:`SessionRecord` rows create sessions, which the other rows of the same
          batch may reference;
        * :class:`BudgetEnvelopeRow` rows are upserts (for a session given twice, the last
          row wins, like two ``upsert_budget_envelope`` calls);
        * charters, plan revisions and repair footprints are plain inserts (a duplicate key
          raises :class:`DuplicateRecordError`; ``record_plan_revision`` does not supersede
          either); everything else is appended.

        Sessions are checked once per batch, with one query, before anything is written. In
        a ``durability="batched"`` store the batch is committed synchronously (after the
        buffered rows). Inside ``transaction()`` it joins that transaction.

        Args:
            rows: Any iterable of row models, mixed types allowed.

        Returns:
            The number of rows written.

        Raises:
            TypeError: An item is not one of the 23 row models (nothing is written).
            SessionNotFoundError: A row names a session that neither exists nor is created
                by the batch (the first such session is named); nothing is written, and an
                enclosing transaction is not affected.
            DuplicateRecordError: A key (session, charter, plan revision, footprint) exists
                or repeats in the batch; nothing is written.
            ReadOnlyStoreError: The store is read-only.
        """
        self._check_writable(None)
        batch = rows if isinstance(rows, list) else list(rows)
        groups: dict[type[Row], list[Row]] = {}
        for row in batch:
            group = groups.get(type(row))
            if group is None:
                if type(row) not in _MODELS:
                    raise TypeError(
                        f"record_many accepts the 23 row models (perspt_store.ROW_MODELS), "
                        f"not {type(row).__name__}; nothing was written"
                    )
                groups[type(row)] = [row]
            else:
                group.append(row)
        if not groups:
            return 0
        self._check_sessions(batch, groups)

        def write() -> None:
            with self.transaction():
                for model in sorted(groups, key=_WRITE_ORDER.__getitem__):
                    group = groups[model]
                    if model is NodeStateRecord:
                        states: list[NodeStateRecord] = group  # type: ignore[assignment]
                        self._commit_node_states([(row, "commit") for row in states])
                    elif model is BudgetEnvelopeRow:
                        self._upsert_budgets(group)
                    else:
                        self._bulk_insert(group)

        # The batch is one transaction: if another handle on this file commits to one of its
        # sessions meanwhile, DuckDB undoes it whole and it runs again on the reloaded logs.
        self._retrying(write, commits=True)
        return len(batch)

    def _existing_sessions(self, session_ids: list[str]) -> set[str]:
        """Which of ``session_ids`` exist, in one query."""
        return {
            session_id
            for (session_id,) in self._execute(
                "SELECT session_id FROM sessions WHERE session_id IN (SELECT unnest(?))",
                [session_ids],
                table="sessions",
                operation="select",
            )
        }

    def _bulk_insert(self, rows: Sequence[Row]) -> None:
        """Append rows of one model in one statement, in order."""
        mapping = table_map(type(rows[0]))
        columns = mapping.encode_columns(rows)
        sessions = set(columns[mapping.columns.index("session_id")])  # every model has one
        session_id = sessions.pop() if len(sessions) == 1 else None
        if _HAS_ARROW and len(rows) >= ARROW_MIN_ROWS and mapping.table in SEQUENCED_TABLES:
            self._insert_arrow(mapping, columns, len(rows), session_id)
        elif len(rows) == 1:
            self._write(mapping.insert_sql, [c[0] for c in columns], table=mapping.table,
                        session_id=session_id)
        else:
            self._write(mapping.bulk_insert_sql, columns, table=mapping.table,
                        session_id=session_id)

    def _insert_arrow(
        self, mapping: TableMap[Any], columns: list[list[Any]], n: int, session_id: str | None
    ) -> None:
        import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

        table = mapping.table
        ids = self._reserve_ids(table, n)
        arrays = [pa.array(ids, pa.int64())]
        arrays += [pa.array(c, t) for c, t in zip(columns, _arrow_types(mapping), strict=True)]
        batch = pa.Table.from_arrays(arrays, names=["id", *mapping.columns])
        names = ", ".join(("id", *mapping.columns))
        view = f"_perspt_bulk_{table}"
        cursor = self._cursor()
        cursor.register(view, batch)
        try:
            self._write(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view}",
                        table=table, session_id=session_id)
        finally:
            cursor.unregister(view)

    def _reserve_ids(self, table: str, n: int) -> Sequence[int]:
        """Draw ``n`` values from the table's id sequence, ascending."""
        sequence = f"seq_{table}_id"
        low, high, count = self._execute(
            f"SELECT min(v), max(v), count(*) FROM (SELECT nextval('{sequence}') AS v "
            "FROM range(?))",
            [n],
            table=table,
            operation="insert",
        )[0]
        if count == n and high - low + 1 == n:
            return range(low, high + 1)
        rows = self._execute(  # pragma: no cover - only if the sequence is shared
            f"SELECT nextval('{sequence}') FROM range(?)", [n], table=table, operation="insert"
        )
        return sorted(v for (v,) in rows)  # pragma: no cover

    def _check_sessions(
        self, batch: Sequence[Row], groups: dict[type[Row], list[Row]]
    ) -> None:
        """Raise SessionNotFoundError for the first session the batch names that neither
        exists nor is created by the batch. One query."""
        sessions: list[SessionRecord] = groups.get(SessionRecord, [])  # type: ignore[assignment]
        created = {row.session_id for row in sessions}
        named: set[str | None] = set()
        for model, group in groups.items():
            if model is not SessionRecord:
                named.update(map(_SESSION_ID, group))
        named.discard(None)  # a lineage row may name no session
        wanted = sorted(str(s) for s in named - created)
        if not wanted:
            return
        found = self._existing_sessions(wanted)
        if len(found) == len(wanted):
            return
        for row in batch:  # name the first unknown one, in batch order
            if isinstance(row, SessionRecord):
                continue
            session_id: str | None = row.session_id  # type: ignore[attr-defined]
            if session_id is not None and session_id not in found and session_id not in created:
                raise SessionNotFoundError(session_id, table=row.__table__, operation="insert")

    def _upsert_budgets(self, rows: Sequence[Row]) -> None:
        last = {row.session_id: row for row in rows}  # type: ignore[attr-defined]
        mapping = table_map(BudgetEnvelopeRow)
        self._write(
            _UPSERT_BUDGETS_SQL,
            mapping.encode_columns(list(last.values())),
            table="budget_envelopes",
            operation="upsert",
            session_id=next(iter(last)) if len(last) == 1 else None,
        )
