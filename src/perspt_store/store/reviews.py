"""Reviews family: ``verification_results``, ``artifact_bundles``, ``review_outcomes``."""

from __future__ import annotations

from ..rows import ArtifactBundleRow, ReviewOutcomeRow, VerificationResultRow
from ._base import StoreBase


class ReviewsMixin(StoreBase):
    """Verification results, artifact bundles and review outcomes."""

    # --- verification_results -------------------------------------------------------------

    def record_verification_result(self, record: VerificationResultRow) -> None:
        """Append one verification result."""
        self._insert(record)

    def get_verification_result(
        self, session_id: str, node_id: str
    ) -> VerificationResultRow | None:
        """The node's last-recorded verification result, or None."""
        return self._select_one(
            VerificationResultRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id DESC",
        )

    def get_all_verification_results(self, session_id: str) -> list[VerificationResultRow]:
        """The last-recorded result of each node, ordered by when it was recorded."""
        return self._select(
            VerificationResultRow,
            "session_id = ?",
            [session_id],
            latest_per="node_id",
            order_by="id",
        )

    # --- artifact_bundles -----------------------------------------------------------------

    def record_artifact_bundle(self, record: ArtifactBundleRow) -> None:
        """Append one artifact bundle."""
        self._insert(record)

    def get_artifact_bundle(self, session_id: str, node_id: str) -> ArtifactBundleRow | None:
        """The node's last-recorded bundle, or None."""
        return self._select_one(
            ArtifactBundleRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id DESC",
        )

    # --- review_outcomes ------------------------------------------------------------------

    def record_review_outcome(self, record: ReviewOutcomeRow) -> None:
        """Append one review outcome (None energy/degraded are stored as NULL)."""
        self._insert(record)

    def get_review_outcomes(self, session_id: str, node_id: str) -> list[ReviewOutcomeRow]:
        """One node's outcomes in insertion order."""
        return self._select(
            ReviewOutcomeRow, "session_id = ? AND node_id = ?", [session_id, node_id],
            order_by="id",
        )

    def get_latest_review_outcome(self, session_id: str, node_id: str) -> ReviewOutcomeRow | None:
        """The node's last-recorded outcome, or None."""
        return self._select_one(
            ReviewOutcomeRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="id DESC",
        )

    def get_all_review_outcomes(self, session_id: str) -> list[ReviewOutcomeRow]:
        """Every outcome of the session in insertion order."""
        return self._select(ReviewOutcomeRow, "session_id = ?", [session_id], order_by="id")
