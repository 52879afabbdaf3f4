"""Planning family: ``feature_charters``, ``plan_revisions``, ``repair_footprints``,
``budget_envelopes``."""

from __future__ import annotations

from .._mapping import table_map
from ..rows import BudgetEnvelopeRow, FeatureCharterRow, PlanRevisionRow, RepairFootprintRow
from ._base import StoreBase

# Last write wins for all six values, including a limit set back to NULL; unlike upstream,
# updated_at moves too.
UPSERT_BUDGET_SQL = table_map(BudgetEnvelopeRow).upsert_sql("session_id", touch="updated_at")


class PlanningMixin(StoreBase):
    """Feature charters, plan revisions, repair footprints and budget envelopes."""

    # --- feature_charters -----------------------------------------------------------------

    def record_feature_charter(self, record: FeatureCharterRow) -> None:
        """Insert one charter.

        Raises:
            DuplicateRecordError: A charter with this ``charter_id`` exists.
        """
        self._insert(record)

    def get_feature_charter(self, session_id: str) -> FeatureCharterRow | None:
        """The session's newest charter (last recorded), or None."""
        return self._select_one(
            FeatureCharterRow, "session_id = ?", [session_id],
            order_by=f"created_at DESC, {self._order_column('feature_charters')} DESC",
        )

    # --- plan_revisions -------------------------------------------------------------------

    def record_plan_revision(self, record: PlanRevisionRow) -> None:
        """Insert one revision as given (see :meth:`replace_active_plan` to supersede).

        Raises:
            DuplicateRecordError: A revision with this ``revision_id`` exists.
        """
        self._insert(record)

    def get_active_plan_revision(self, session_id: str) -> PlanRevisionRow | None:
        """The ``active`` revision with the highest sequence (the newest on ties), or None."""
        return self._select_one(
            PlanRevisionRow,
            "session_id = ? AND status = 'active'",
            [session_id],
            order_by=f"sequence DESC, created_at DESC, {self._order_column('plan_revisions')} DESC",
        )

    def get_plan_revisions(self, session_id: str) -> list[PlanRevisionRow]:
        """All of the session's revisions by sequence, then insertion order."""
        return self._select(
            PlanRevisionRow, "session_id = ?", [session_id],
            order_by=f"sequence, created_at, {self._order_column('plan_revisions')}",
        )

    def supersede_plan_revision(self, revision_id: str) -> int:
        """Mark one revision ``superseded``; returns the rows changed (0 if unknown)."""
        (changed,) = self._write(
            "UPDATE plan_revisions SET status = 'superseded' WHERE revision_id = ?",
            [revision_id],
            table="plan_revisions",
            operation="update",
        )[0]
        return int(changed)

    def replace_active_plan(self, session_id: str, new_row: PlanRevisionRow) -> list[str]:
        """Supersede the session's active revisions and insert ``new_row``, atomically.

        Returns:
            The ids of the revisions superseded, in sequence order.

        Raises:
            ValueError: ``new_row`` belongs to another session, is not ``active``, or its
                sequence is not above every existing revision's (nothing is changed).
        """
        if new_row.session_id != session_id:
            raise ValueError(
                f"new_row is for session {new_row.session_id!r}, not {session_id!r}"
            )
        if new_row.status != "active":
            raise ValueError(f"new_row must be 'active', not {new_row.status!r}")
        with self.transaction():
            highest = self._scalar(
                "SELECT max(sequence) FROM plan_revisions WHERE session_id = ?",
                [session_id],
                table="plan_revisions",
            )
            if highest is not None and new_row.sequence <= highest:
                raise ValueError(
                    f"sequence {new_row.sequence} must be above the session's highest ({highest})"
                )
            rows = self._write(
                "UPDATE plan_revisions SET status = 'superseded' "
                "WHERE session_id = ? AND status = 'active' RETURNING sequence, revision_id",
                [session_id],
                table="plan_revisions",
                operation="update",
            )
            self._insert(new_row)
        return [revision_id for _, revision_id in sorted(rows)]

    # --- repair_footprints ----------------------------------------------------------------

    def record_repair_footprint(self, record: RepairFootprintRow) -> None:
        """Insert one footprint.

        Raises:
            DuplicateRecordError: A footprint with this ``footprint_id`` exists.
        """
        self._insert(record)

    def get_repair_footprints(self, session_id: str, node_id: str) -> list[RepairFootprintRow]:
        """One node's footprints by attempt, then insertion order."""
        return self._select(
            RepairFootprintRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="attempt, id",
        )

    def get_all_repair_footprints(self, session_id: str) -> list[RepairFootprintRow]:
        """Every footprint of the session by node id, attempt, then insertion order."""
        return self._select(
            RepairFootprintRow, "session_id = ?", [session_id], order_by="node_id, attempt, id"
        )

    def resolve_repair_footprint(self, footprint_id: str) -> int:
        """Mark a footprint resolved; returns the rows changed (0 if unknown)."""
        (changed,) = self._write(
            "UPDATE repair_footprints SET resolved = true WHERE footprint_id = ?",
            [footprint_id],
            table="repair_footprints",
            operation="update",
        )[0]
        return int(changed)

    # --- budget_envelopes -----------------------------------------------------------------

    def upsert_budget_envelope(self, record: BudgetEnvelopeRow) -> None:
        """Insert the session's envelope, or overwrite all six values of the existing one
        (and its ``updated_at``)."""
        self._write(
            UPSERT_BUDGET_SQL,
            table_map(BudgetEnvelopeRow).encode(record),
            table="budget_envelopes",
            operation="upsert",
            session_id=record.session_id,
        )

    def get_budget_envelope(self, session_id: str) -> BudgetEnvelopeRow | None:
        """The session's envelope, or None."""
        return self._select_one(BudgetEnvelopeRow, "session_id = ?", [session_id])
