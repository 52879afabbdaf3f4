"""Editing a session's commit log behind the store's back, as a forger would.

Since schema 5 a log entry is carried by the node-state row it commits
(``node_states.merkle_commit``, read through the ``merkle_log`` view): these helpers change
those bytes with plain SQL on any DB-API-like ``execute`` (a store's ``sql`` or a raw
``duckdb`` connection's ``execute``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Execute = Callable[..., Any]

# Byte offsets of the packed entry's fields (perspt_store.store.commits.pack_commit).
FIELDS = {"kind": (0, 1), "seq": (1, 8), "leaf_hash": (9, 32), "state_root": (41, 32),
          "log_root": (73, 32)}


def _rows(execute: Execute, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return list(execute(sql, params).fetchall())


def carrier(execute: Execute, session_id: str, seq: int) -> tuple[int, bytes]:
    """The id of the node-state row carrying log entry ``seq``, and the entry's bytes."""
    ((row_id,),) = _rows(
        execute, "SELECT node_state_id FROM merkle_log WHERE session_id = ? AND seq = ?",
        [session_id, seq],
    )
    ((entry,),) = _rows(execute, "SELECT merkle_commit FROM node_states WHERE id = ?", [row_id])
    return row_id, bytes(entry)


def set_entry(execute: Execute, row_id: int, entry: bytes | None) -> None:
    execute("UPDATE node_states SET merkle_commit = ? WHERE id = ?", [entry, row_id]).fetchall()


def delete_entry(execute: Execute, session_id: str, seq: int) -> None:
    """Remove log entry ``seq`` (its row stays, now uncommitted)."""
    row_id, _ = carrier(execute, session_id, seq)
    set_entry(execute, row_id, None)


def set_field(execute: Execute, session_id: str, seq: int, field: str, value: bytes) -> None:
    """Overwrite one field of log entry ``seq`` (``value`` of the field's size)."""
    row_id, entry = carrier(execute, session_id, seq)
    start, size = FIELDS[field]
    assert len(value) == size
    set_entry(execute, row_id, entry[:start] + value + entry[start + size:])


def swap_entries(execute: Execute, session_id: str, first: int, second: int) -> None:
    """Make log entries ``first`` and ``second`` point at each other's rows."""
    one, entry_one = carrier(execute, session_id, first)
    two, entry_two = carrier(execute, session_id, second)
    set_entry(execute, one, entry_two)
    set_entry(execute, two, entry_one)
