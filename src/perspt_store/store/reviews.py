"""Reviews family: ``verification_results``, ``artifact_bundles``, ``review_outcomes``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ..rows import ArtifactBundleRow, ReviewOutcomeRow, VerificationResultRow
from ._base import StoreBase

ReviewKind = Literal["approved", "rejected", "corrected"]

# The ledger's review rule, as data, so that SQL (``session_summary``) and Python (the
# dashboard) count with one rule: kind -> (exact outcomes, outcome prefixes). Case matters.
_REVIEW_RULES: dict[ReviewKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "approved": (("auto_approved",), ("approved",)),
    "rejected": (("rejected", "aborted"), ()),
    "corrected": (("correction_requested",), ()),
}


def review_kind(outcome: str) -> ReviewKind | None:
    """How the ledger counts a review outcome: ``approved`` (``approved*`` or
    ``auto_approved``), ``rejected`` (``rejected`` or ``aborted``), ``corrected``
    (``correction_requested``), or None (counted in the total only)."""
    for kind, (exact, prefixes) in _REVIEW_RULES.items():
        if outcome in exact or outcome.startswith(prefixes):
            return kind
    return None


def review_kind_sql(kind: ReviewKind, column: str) -> str:
    """A SQL predicate, TRUE exactly when :func:`review_kind` of ``column`` is ``kind``
    (``column`` is an identifier or expression this library wrote, never user input)."""
    exact, prefixes = _REVIEW_RULES[kind]

    def literal(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    terms = [f"starts_with({column}, {literal(p)})" for p in prefixes]
    if exact:
        terms.append(f"{column} IN ({', '.join(literal(e) for e in exact)})")
    return "(" + " OR ".join(terms) + ")"


def count_reviews(outcomes: Iterable[str]) -> dict[str, int]:
    """Review outcomes counted by :func:`review_kind`: ``total``, ``approved``,
    ``rejected``, ``corrected`` (as :meth:`session_summary` counts them)."""
    counts = {"total": 0, "approved": 0, "rejected": 0, "corrected": 0}
    for outcome in outcomes:
        counts["total"] += 1
        kind = review_kind(outcome)
        if kind is not None:
            counts[kind] += 1
    return counts


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
