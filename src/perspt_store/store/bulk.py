"""Bulk writes: ``record_many`` appends any mix of rows in one transaction, with one bulk
statement per table.

Each table's rows go in as one ``INSERT ... SELECT unnest(?), unnest(?), ...`` with one list
parameter per column (``TableMap.bulk_insert_sql``), so ids follow the order the rows were
given and the cost per row is a few microseconds of encoding instead of a statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._mapping import table_map
from ..errors import SessionNotFoundError
from ..rows import (
    ROW_MODELS,
    BranchLineageRow,
    BudgetEnvelopeRow,
    NodeStateRecord,
    Row,
    SessionRecord,
)
from .commits import CommitLogMixin
from .planning import UPSERT_BUDGET_SQL

_MODELS: frozenset[type[Row]] = frozenset(ROW_MODELS.values())

# Table order for the writes: sessions first (the other tables reference them), then the
# schema's order. Within a table, rows keep the order they were given in.
_WRITE_ORDER: dict[type[Row], int] = {model: i for i, model in enumerate(ROW_MODELS.values())}

_UPSERT_BUDGETS_SQL = (
    UPSERT_BUDGET_SQL.replace("VALUES (?, ?, ?, ?, ?, ?, ?)", "SELECT " + ", ".join(
        "unnest(?)" for _ in range(7)
    ))
)


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
        with self.transaction():
            for model in sorted(groups, key=_WRITE_ORDER.__getitem__):
                group = groups[model]
                if model is NodeStateRecord:
                    self._commit_node_states([(row, "commit") for row in group])  # type: ignore[misc]
                elif model is BudgetEnvelopeRow:
                    self._upsert_budgets(group)
                else:
                    self._insert_rows(group)
        return len(batch)

    def _check_sessions(
        self, batch: Sequence[Row], groups: dict[type[Row], list[Row]]
    ) -> None:
        """Raise SessionNotFoundError for the first session the batch names that neither
        exists nor is created by the batch. One query."""
        created = {row.session_id for row in groups.get(SessionRecord, ())}  # type: ignore[attr-defined]
        named: set[str] = set()
        for model, group in groups.items():
            if model is SessionRecord or model is BranchLineageRow:  # lineage has no FK
                continue
            named.update([row.session_id for row in group])  # type: ignore[attr-defined]
        wanted = sorted(named - created)
        if not wanted:
            return
        found = {
            session_id
            for (session_id,) in self._execute(
                "SELECT session_id FROM sessions WHERE session_id IN (SELECT unnest(?))",
                [wanted],
                table="sessions",
                operation="select",
            )
        }
        if len(found) == len(wanted):
            return
        for row in batch:  # name the first unknown one, in batch order
            if isinstance(row, (SessionRecord, BranchLineageRow)):
                continue
            session_id: str = row.session_id  # type: ignore[attr-defined]
            if session_id not in found and session_id not in created:
                raise SessionNotFoundError(session_id, table=row.__table__)

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
