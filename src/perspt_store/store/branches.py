"""Branches family: ``provisional_branches``, ``branch_lineage``, ``interface_seals``,
``branch_flushes``."""

from __future__ import annotations

from ..errors import SessionNotFoundError
from ..rows import BranchFlushRow, BranchLineageRow, InterfaceSealRow, ProvisionalBranchRow
from ._base import StoreBase

LIVE_STATES = ("active", "sealed")
"""Branch states that count as live; ``merged`` and ``flushed`` branches are not."""

# One statement, so the read of the live set and the state change are atomic (upstream read
# the set, then ran one UPDATE per branch). RETURNING gives exactly what changed.
FLUSH_BRANCHES_SQL = """
UPDATE provisional_branches SET state = 'flushed', updated_at = now()
WHERE session_id = ? AND parent_node_id = ? AND state IN ('active', 'sealed')
RETURNING id, branch_id
"""


class BranchesMixin(StoreBase):
    """Provisional branches, their lineage, interface seals and flushes."""

    # --- provisional_branches -------------------------------------------------------------

    def record_provisional_branch(self, record: ProvisionalBranchRow) -> None:
        """Append one provisional branch."""
        self._insert(record)

    def update_branch_state(
        self, branch_id: str, new_state: str, *, session_id: str | None = None
    ) -> int:
        """Set the state (and ``updated_at``) of every row with this ``branch_id``.

        Args:
            branch_id: The branch (not unique across sessions).
            new_state: active, sealed, merged or flushed.
            session_id: Only touch this session's rows (upstream touched every session's).

        Returns:
            The number of rows changed (0 when there is no such branch).
        """
        sql = "UPDATE provisional_branches SET state = ?, updated_at = now() WHERE branch_id = ?"
        params = [new_state, branch_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        (changed,) = self._write(
            sql, params, table="provisional_branches", operation="update"
        )[0]
        return int(changed)

    def get_provisional_branches(self, session_id: str) -> list[ProvisionalBranchRow]:
        """The session's branches in insertion order."""
        return self._select(ProvisionalBranchRow, "session_id = ?", [session_id], order_by="id")

    def get_live_branches_for_parent(
        self, session_id: str, parent_node_id: str
    ) -> list[ProvisionalBranchRow]:
        """The parent's ``active`` or ``sealed`` branches in insertion order."""
        return self._select(
            ProvisionalBranchRow,
            "session_id = ? AND parent_node_id = ? AND state IN ('active', 'sealed')",
            [session_id, parent_node_id],
            order_by="id",
        )

    def flush_branches_for_parent(self, session_id: str, parent_node_id: str) -> list[str]:
        """Mark the parent's live branches ``flushed`` atomically; returns their ids in
        insertion order. It does not write a ``branch_flushes`` row (see
        :meth:`record_branch_flush`)."""
        rows = self._write(
            FLUSH_BRANCHES_SQL,
            [session_id, parent_node_id],
            table="provisional_branches",
            operation="update",
        )
        return [branch_id for _, branch_id in sorted(rows)]

    # --- branch_lineage -------------------------------------------------------------------

    def record_branch_lineage(self, record: BranchLineageRow) -> None:
        """Append one lineage link. ``session_id`` is optional (upstream's table has none).

        Raises:
            SessionNotFoundError: ``session_id`` is given but no such session exists (the
                table has no foreign key, so the store checks).
        """
        with self.transaction():
            if record.session_id is not None and not self._session_exists(record.session_id):
                raise SessionNotFoundError(
                    record.session_id, table="branch_lineage", operation="insert"
                )
            self._insert(record)

    def get_child_branches(
        self, parent_branch_id: str, *, session_id: str | None = None
    ) -> list[str]:
        """The children of ``parent_branch_id`` in insertion order (one session's if given)."""
        sql = "SELECT child_branch_id FROM branch_lineage WHERE parent_branch_id = ?"
        params = [parent_branch_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        rows = self._execute(
            sql + " ORDER BY id", params, table="branch_lineage", operation="select"
        )
        return [child for (child,) in rows]

    def get_branch_lineage(self, session_id: str) -> list[BranchLineageRow]:
        """The lineage links recorded with this ``session_id``, in insertion order."""
        return self._select(BranchLineageRow, "session_id = ?", [session_id], order_by="id")

    # --- interface_seals ------------------------------------------------------------------

    def record_interface_seal(self, record: InterfaceSealRow) -> None:
        """Append one interface seal."""
        self._insert(record)

    def get_interface_seals(self, session_id: str, node_id: str) -> list[InterfaceSealRow]:
        """The node's seals in insertion order; the last is the most recent."""
        return self._select(
            InterfaceSealRow, "session_id = ? AND node_id = ?", [session_id, node_id],
            order_by="id",
        )

    def has_interface_seals(self, session_id: str, node_id: str) -> bool:
        """True if the node has at least one seal."""
        return (
            self._scalar(
                "SELECT 1 FROM interface_seals WHERE session_id = ? AND node_id = ? LIMIT 1",
                [session_id, node_id],
                table="interface_seals",
            )
            is not None
        )

    # --- branch_flushes -------------------------------------------------------------------

    def record_branch_flush(self, record: BranchFlushRow) -> None:
        """Append one flush decision."""
        self._insert(record)

    def get_branch_flushes(self, session_id: str) -> list[BranchFlushRow]:
        """The session's flushes in insertion order."""
        return self._select(BranchFlushRow, "session_id = ?", [session_id], order_by="id")
