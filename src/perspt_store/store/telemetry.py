"""Telemetry family: ``llm_requests``, ``srbn_step_records``, ``correction_attempts``."""

from __future__ import annotations

from typing import NamedTuple

from ..rows import CorrectionAttemptRow, LlmRequestRecord, SrbnStepRecord
from ._base import StoreBase

# Per row: the provider's token count when it reported one, else ceil(len/4) of the text,
# in integer arithmetic (upstream divided in floating point and truncated the sum); the SQL
# form of `counted_tokens`.
GLOBAL_LLM_SUMMARY_SQL = """
SELECT
    count(*),
    coalesce(sum(CASE WHEN tokens_in > 0 THEN tokens_in ELSE (length(prompt) + 3) // 4 END), 0),
    coalesce(sum(CASE WHEN tokens_out > 0 THEN tokens_out ELSE (length(response) + 3) // 4 END), 0),
    coalesce(round(median(latency_ms)), 0)
FROM llm_requests
"""


def counted_tokens(reported: int, text: str) -> int:
    """One side of an LLM request's tokens as every summary counts them: the provider's
    number when it reported one (``> 0``), else ``ceil(len(text) / 4)``."""
    return reported if reported > 0 else -(-len(text) // 4)


class LlmSummary(NamedTuple):
    """Totals over every LLM request in the store (all sessions)."""

    count: int  # type: ignore[assignment]  # the field upstream names; shadows tuple.count
    """Number of requests."""
    tokens_in: int
    """Prompt tokens; rows without a count contribute ``ceil(len(prompt) / 4)``."""
    tokens_out: int
    """Completion tokens; rows without a count contribute ``ceil(len(response) / 4)``."""
    median_latency_ms: int
    """Median latency, rounded to the nearest millisecond."""


class TelemetryMixin(StoreBase):
    """LLM requests, SRBN steps and correction attempts."""

    # --- llm_requests ---------------------------------------------------------------------

    def record_llm_request(self, record: LlmRequestRecord) -> None:
        """Append one LLM call (its ``timestamp`` is now)."""
        self._insert(record)

    def get_llm_requests(self, session_id: str) -> list[LlmRequestRecord]:
        """The session's LLM calls in insertion order."""
        return self._select(LlmRequestRecord, "session_id = ?", [session_id], order_by="id")

    def get_global_llm_summary(self) -> LlmSummary:
        """``(count, tokens_in, tokens_out, median_latency_ms)`` over all sessions; zeros
        when there are no requests."""
        row = self._execute(
            GLOBAL_LLM_SUMMARY_SQL, table="llm_requests", operation="select"
        )[0]
        count, tokens_in, tokens_out, latency = row
        return LlmSummary(int(count), int(tokens_in), int(tokens_out), int(latency))

    # --- srbn_step_records ----------------------------------------------------------------

    def record_step(self, record: SrbnStepRecord) -> None:
        """Append one SRBN step."""
        self._insert(record)

    def get_step_timeline(self, session_id: str, node_id: str) -> list[SrbnStepRecord]:
        """One node's steps in insertion order."""
        return self._select(
            SrbnStepRecord, "session_id = ? AND node_id = ?", [session_id, node_id], order_by="id"
        )

    def get_session_steps(self, session_id: str) -> list[SrbnStepRecord]:
        """Every step of the session in insertion order."""
        return self._select(SrbnStepRecord, "session_id = ?", [session_id], order_by="id")

    # --- correction_attempts --------------------------------------------------------------

    def record_correction_attempt(self, record: CorrectionAttemptRow) -> None:
        """Append one correction attempt (``created_at`` is the caller's epoch seconds)."""
        self._insert(record)

    def get_correction_attempts(self, session_id: str, node_id: str) -> list[CorrectionAttemptRow]:
        """One node's attempts by attempt number, then insertion order."""
        return self._select(
            CorrectionAttemptRow,
            "session_id = ? AND node_id = ?",
            [session_id, node_id],
            order_by="attempt, id",
        )

    def get_session_correction_attempts(self, session_id: str) -> list[CorrectionAttemptRow]:
        """Every attempt of the session by node id, attempt number, then insertion order."""
        return self._select(
            CorrectionAttemptRow, "session_id = ?", [session_id], order_by="node_id, attempt, id"
        )
