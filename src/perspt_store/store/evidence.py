"""Evidence family: ``structural_digests``, ``context_provenance``, ``escalation_reports``,
``rewrite_records``, ``sheaf_validations``."""

from __future__ import annotations

from ..rows import (
    ContextProvenanceRecord,
    EscalationReportRecord,
    RewriteRecordRow,
    SheafValidationRow,
    StructuralDigestRecord,
)
from ._base import StoreBase


class EvidenceMixin(StoreBase):
    """Digests, context provenance, escalations, rewrites and sheaf validations."""

    # --- structural_digests ---------------------------------------------------------------

    def record_structural_digest(self, record: StructuralDigestRecord) -> None:
        """Append one structural digest."""
        self._insert(record)

    def get_structural_digests(
        self, session_id: str, node_id: str
    ) -> list[StructuralDigestRecord]:
        """One node's digests in insertion order, with the stored hash bytes and version."""
        return self._select(
            StructuralDigestRecord,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id",
        )

    # --- context_provenance ---------------------------------------------------------------

    def record_context_provenance(self, record: ContextProvenanceRecord) -> None:
        """Append one context-provenance row."""
        self._insert(record)

    def get_context_provenance(
        self, session_id: str, node_id: str
    ) -> ContextProvenanceRecord | None:
        """The node's last-recorded provenance, or None."""
        return self._select_one(
            ContextProvenanceRecord,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id DESC",
        )

    # --- escalation_reports ---------------------------------------------------------------

    def record_escalation_report(self, record: EscalationReportRecord) -> None:
        """Append one escalation report."""
        self._insert(record)

    def get_escalation_reports(
        self, session_id: str, node_id: str | None = None
    ) -> list[EscalationReportRecord]:
        """The session's reports (only ``node_id``'s if given) in insertion order."""
        if node_id is None:
            return self._select(
                EscalationReportRecord, "session_id = ?", [session_id], order_by="id"
            )
        return self._select(
            EscalationReportRecord,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id",
        )

    # --- rewrite_records ------------------------------------------------------------------

    def record_rewrite(self, record: RewriteRecordRow) -> None:
        """Append one rewrite record."""
        self._insert(record)

    def get_rewrite_records(self, session_id: str) -> list[RewriteRecordRow]:
        """The session's rewrites in insertion order."""
        return self._select(RewriteRecordRow, "session_id = ?", [session_id], order_by="id")

    def count_lineage_rewrites(self, session_id: str, base_node_id: str) -> int:
        """Rewrites of ``base_node_id`` and of the nodes derived from it (``<base>__...``).

        Upstream matched a plain prefix, so ``task1`` also counted ``task10``'s rewrites.
        """
        return int(
            self._scalar(
                "SELECT count(*) FROM rewrite_records WHERE session_id = ? "
                "AND (node_id = ? OR starts_with(node_id, ? || '__'))",
                [session_id, base_node_id, base_node_id],
                table="rewrite_records",
            )
        )

    # --- sheaf_validations ----------------------------------------------------------------

    def record_sheaf_validation(self, record: SheafValidationRow) -> None:
        """Append one sheaf validation."""
        self._insert(record)

    def get_sheaf_validations(self, session_id: str, node_id: str) -> list[SheafValidationRow]:
        """One node's validations in insertion order."""
        return self._select(
            SheafValidationRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id",
        )

    def get_all_sheaf_validations(self, session_id: str) -> list[SheafValidationRow]:
        """Every validation of the session in insertion order."""
        return self._select(SheafValidationRow, "session_id = ?", [session_id], order_by="id")
