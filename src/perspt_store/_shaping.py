"""Rows shaped into plain data, for every reader that prints or serves them.

The one owner of how a row becomes a dict (:func:`row_dict`), how a value becomes JSON
(:func:`jsonable`, times as aware ISO-8601 with ``Z``), how LLM requests are totalled
(:func:`llm_totals`) and how steps and correction attempts interleave (:func:`merge_timeline`).
The command line (``cli``) and the dashboard (``web``) both use these, so the two never
disagree; neither owns them.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import statistics
from collections.abc import Sequence
from typing import Any

from .rows import CorrectionAttemptRow, LlmRequestRecord, Row, SrbnStepRecord
from .store.telemetry import counted_tokens

__all__ = ["iso_time", "jsonable", "llm_totals", "merge_timeline", "row_dict", "utc"]


def utc(value: _dt.datetime) -> _dt.datetime:
    """``value`` as an aware UTC time (the database's naive times are UTC)."""
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


def iso_time(value: _dt.datetime, sep: str = "T") -> str:
    """The printed form of a time: UTC, ISO-8601, ``Z`` for the offset."""
    text = utc(value).isoformat(sep=sep)
    return text.removesuffix("+00:00") + "Z"


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold converted: bytes to hex, times to aware
    ISO-8601 (:func:`iso_time`), decimals to float, UUIDs and anything else unknown to str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, _dt.datetime):
        return iso_time(value)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)  # UUIDs, timedeltas and anything else


def row_dict(row: Row) -> dict[str, Any]:
    """A row's fields plus the columns the database filled in (``id`` first, timestamps
    last), as read back from the store."""
    data: dict[str, Any] = {}
    if "id" in row.__db_columns__:
        data["id"] = row.id  # type: ignore[attr-defined]
    data.update(row.to_dict())
    for column in row.__db_columns__:
        if column != "id":
            data[column] = getattr(row, column)
    return data


def llm_totals(requests: Sequence[LlmRequestRecord]) -> dict[str, int]:
    """Request count, tokens and latency over ``requests``; tokens counted by the store's
    rule (:func:`~perspt_store.store.telemetry.counted_tokens`)."""
    latencies = [r.latency_ms for r in requests]
    median = statistics.median(latencies) if latencies else 0
    return {
        "requests": len(requests),
        "tokens_in": sum(counted_tokens(r.tokens_in, r.prompt) for r in requests),
        "tokens_out": sum(counted_tokens(r.tokens_out, r.response) for r in requests),
        "latency_ms_total": sum(latencies),
        "median_latency_ms": math.floor(median + 0.5),
    }


def merge_timeline(
    steps: Sequence[SrbnStepRecord], corrections: Sequence[CorrectionAttemptRow]
) -> list[SrbnStepRecord | CorrectionAttemptRow]:
    """Steps in insertion order, each correction attempt placed after the last step of its
    node whose ``attempt_count`` is at most the correction's ``attempt`` (the two tables
    share no clock: steps carry the database's time, corrections the caller's)."""
    merged: list[SrbnStepRecord | CorrectionAttemptRow] = list(steps)
    for correction in corrections:
        position = None
        for index, row in enumerate(merged):
            if row.node_id != correction.node_id:
                continue
            if isinstance(row, SrbnStepRecord) and row.attempt_count <= correction.attempt:
                position = index + 1
            elif isinstance(row, CorrectionAttemptRow) and index == position:
                position = index + 1  # after the corrections already placed there
        if position is None:  # no step that early: before the node's first row
            firsts = [i for i, row in enumerate(merged) if row.node_id == correction.node_id]
            position = firsts[0] if firsts else len(merged)
        merged.insert(position, correction)
    return merged
