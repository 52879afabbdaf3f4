"""Set-based reads for overviews: what the dashboard's pages and the CLI show, read in SQL.

The getters return row models, one table at a time; a page over a 1,000-node session wants
aggregates (each node's latest state and energy, counts per table) that DuckDB computes far
faster than Python over thousands of models. Those queries live here, beside the getters,
so the store stays the one owner of SQL over its tables: the dashboard (``web/_pages.py``)
and the CLI call these functions and never write SQL of their own
(``tests/test_store_boundary.py`` checks).

Every function runs one statement, in the caller's ``consistent_read()`` if any (the
dashboard reads each page inside one). Values come back as DuckDB returns them (tuples, or
dicts by column name), with two exceptions that keep them equal to the getters' values:

* rows upstream wrote are decoded by the table map's legacy rules in SQL
  (:meth:`~perspt_store._mapping.TableMap.legacy_sql`): hex-text hashes become bytes, ``''``
  in optional text columns None;
* reviews are classified by the ledger's one rule (:func:`.reviews.review_kind_sql`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from .._mapping import table_map
from ..rows import ROW_MODELS
from ..schema import TABLES
from ._base import StoreBase
from .reviews import review_kind_sql

__all__ = [
    "DECISION_TABLES",
    "SESSION_SORTS",
    "counts_sql",
    "decision_rows",
    "edge_ends",
    "energy_by_node",
    "energy_series",
    "find_sessions",
    "latest_checks",
    "latest_nodes",
    "latest_reviews",
    "latest_states_of_sessions",
    "node_llm_requests",
    "node_state_rows",
    "seal_rows",
    "session_counts",
    "session_ids",
    "session_row_counts",
    "sessions_by_status",
    "sessions_changed",
    "table_counts",
]


def _columns(store: StoreBase, table: str, names: Sequence[str]) -> str:
    """A select list of ``table``'s columns ``names``, each column the legacy rules change
    replaced by its decoding expression on a file with rows upstream wrote."""
    legacy = store._legacy(table)
    replaced = dict(table_map(ROW_MODELS[table]).legacy_sql(*legacy)) if legacy else {}
    return ", ".join(f"{replaced[n]} AS {n}" if n in replaced else n for n in names)


def _records(
    store: StoreBase, sql: str, params: Sequence[Any], names: Sequence[str], *, table: str
) -> list[dict[str, Any]]:
    rows = store._execute(sql, list(params), table=table, operation="select")
    return [dict(zip(names, row, strict=True)) for row in rows]


# --- sessions ---------------------------------------------------------------------------------

SESSION_SORTS = {
    "created": "created_at",
    "updated": "updated_at",
    "status": "lower(status)",
    "task": "lower(task)",
    "id": "session_id",
}
"""The keys :func:`find_sessions` sorts by, and the expression each orders by."""

_SESSION_COLUMNS = (
    "session_id", "task", "working_dir", "detected_toolchain", "status", "created_at",
    "updated_at",
)


def find_sessions(
    store: StoreBase,
    *,
    status: str | None,
    search: str | None,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[tuple[Any, ...]], int]:
    """One page of sessions, filtered and sorted, and how many match in all.

    Args:
        status: Only sessions with this status (case-insensitive), if given.
        search: Only sessions whose id or task contains this (case-insensitive), if given.
        sort: A key of :data:`SESSION_SORTS`; ties are broken by insertion order.
        descending: Sort (and break ties) in descending order.

    Returns:
        The rows (``session_id, task, working_dir, detected_toolchain, status, created_at,
        updated_at``) and the number of sessions that match.
    """
    direction = "DESC" if descending else "ASC"
    tiebreak = store._order_column("sessions")
    sql = (
        f"SELECT {_columns(store, 'sessions', _SESSION_COLUMNS)}, count(*) OVER () "
        "FROM sessions "
        "WHERE ($1 IS NULL OR lower(status) = lower($1)) "
        "AND ($2 IS NULL OR contains(lower(session_id), lower($2)) "
        "OR contains(lower(task), lower($2))) "
        f"ORDER BY {SESSION_SORTS[sort]} {direction}, {tiebreak} {direction} "
        "LIMIT $3 OFFSET $4"
    )
    rows = store._execute(
        sql, [status, search, int(limit), int(offset)], table="sessions", operation="select"
    )
    return [row[:-1] for row in rows], int(rows[0][-1]) if rows else 0


# The latest state of every node of some sessions (insertion order is ``id``).
_LATEST_STATES_SQL = (
    "SELECT session_id, arg_max(state, id) FROM node_states "
    "WHERE session_id IN (SELECT unnest($1)) GROUP BY session_id, node_id"
)


def latest_states_of_sessions(
    store: StoreBase, session_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """``(session_id, state)``: the latest state of every node of these sessions."""
    if not session_ids:
        return []
    return [
        (sid, state)
        for sid, state in store._execute(
            _LATEST_STATES_SQL, [list(session_ids)], table="node_states", operation="select"
        )
    ]


def sessions_by_status(store: StoreBase) -> list[tuple[str, int]]:
    """``(status, sessions)``, most sessions first."""
    rows = store._execute(
        "SELECT status, count(*) FROM sessions GROUP BY status ORDER BY count(*) DESC, status",
        table="sessions", operation="select",
    )
    return [(status, int(count)) for status, count in rows]


def sessions_changed(store: StoreBase) -> tuple[int, _dt.datetime | None]:
    """How many sessions there are, and the latest ``updated_at`` (None without any)."""
    ((count, latest),) = store._execute(
        "SELECT count(*), max(updated_at) FROM sessions", table="sessions", operation="select"
    )
    return int(count), latest


def session_ids(store: StoreBase) -> list[str]:
    """Every session id, newest first (``created_at``, then the id)."""
    rows = store._execute(
        "SELECT session_id FROM sessions ORDER BY created_at DESC, session_id",
        table="sessions", operation="select",
    )
    return [sid for (sid,) in rows]


def table_counts(store: StoreBase) -> dict[str, int | None]:
    """Rows per table of :data:`~perspt_store.schema.TABLES`, None for a table the file does
    not have (an older upstream file), in one statement."""
    (present,) = store._execute(
        "SELECT list(table_name) FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = current_schema()",
        table=None, operation="select",
    )[0]
    found = [t for t in TABLES if t in set(present or ())]
    counts: dict[str, int | None] = dict.fromkeys(TABLES)
    if found:
        sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in found)
        (row,) = store._execute(sql, table=None, operation="select")
        counts.update(zip(found, (int(n) for n in row), strict=True))
    return counts


def session_row_counts(
    store: StoreBase, session_id: str, tables: Sequence[str]
) -> dict[str, int]:
    """Rows of the session in each of ``tables``, in one statement.

    Raises:
        ValueError: A name in ``tables`` is not a per-session table of the store.
    """
    unknown = [t for t in tables if t not in ROW_MODELS or t == "sessions"]
    if unknown:
        raise ValueError(f"not per-session tables of the store: {', '.join(unknown)}")
    sql = "SELECT " + ", ".join(
        f"(SELECT count(*) FROM {t} WHERE session_id = $1)" for t in tables
    )
    (row,) = store._execute(sql, [session_id], table=None, operation="select")
    return {t: int(n) for t, n in zip(tables, row, strict=True)}


# --- one session, per node --------------------------------------------------------------------

# Each node's latest snapshot (the columns a node table shows) and the span of its snapshots'
# times, in the order of the latest snapshots (as ``get_latest_node_states``).
_LATEST_NODES_SQL = """
WITH s AS (
    SELECT {columns}, {order} AS k,
           row_number() OVER (PARTITION BY node_id ORDER BY {order} DESC) AS r,
           min(created_at) OVER (PARTITION BY node_id) AS first_at,
           max(created_at) OVER (PARTITION BY node_id) AS last_at
    FROM node_states WHERE session_id = $1
)
SELECT node_id, state, node_class, attempt_count, v_total, committed_at, first_at, last_at
FROM s WHERE r = 1 ORDER BY k
"""
_LATEST_NODE_COLUMNS = (
    "node_id", "state", "node_class", "attempt_count", "v_total", "committed_at",
)


def latest_nodes(store: StoreBase, session_id: str) -> list[tuple[Any, ...]]:
    """Per node, in the order of the latest snapshots: ``node_id, state, node_class,
    attempt_count, v_total, committed_at`` of its latest snapshot, and the first and last
    ``created_at`` of its snapshots. Nodes a rollback removed are included (their state
    is :data:`~perspt_store.commitlog.REMOVED_STATE`)."""
    sql = _LATEST_NODES_SQL.format(
        columns=_columns(store, "node_states", _LATEST_NODE_COLUMNS),
        order=store._order_column("node_states"),
    )
    return store._execute(sql, [session_id], table="node_states", operation="select")


# Aggregates per node, computed by DuckDB rather than by decoding every row (a 1,000-node
# session has 5,000 snapshots and 20,000 energy measurements).
_ENERGY_BY_NODE_SQL = (
    "SELECT node_id, count(*), arg_max(v_total, id) FROM energy_history "
    "WHERE session_id = $1 GROUP BY node_id"
)


def energy_by_node(store: StoreBase, session_id: str) -> list[tuple[str, int, float]]:
    """``(node_id, measurements, latest v_total)`` per node with energy."""
    rows = store._execute(
        _ENERGY_BY_NODE_SQL, [session_id], table="energy_history", operation="select"
    )
    return [(node, int(count), latest) for node, count, latest in rows]


def energy_series(
    store: StoreBase, session_id: str, components: Sequence[str]
) -> list[tuple[Any, ...]]:
    """``(node_id, *components)`` of every energy measurement, in insertion order.

    Raises:
        ValueError: A component is not a column of ``energy_history``.
    """
    known = table_map(ROW_MODELS["energy_history"]).columns
    if not set(components) <= set(known):
        raise ValueError(f"not energy_history columns: {sorted(set(components) - set(known))}")
    sql = (
        f"SELECT node_id, {', '.join(components)} FROM energy_history "
        "WHERE session_id = $1 ORDER BY id"
    )
    return store._execute(sql, [session_id], table="energy_history", operation="select")


def edge_ends(store: StoreBase, session_id: str) -> list[tuple[str, str]]:
    """``(parent_node_id, child_node_id)`` of every task-graph edge, in insertion order."""
    rows = store._execute(
        "SELECT parent_node_id, child_node_id FROM task_graph_edges "
        "WHERE session_id = $1 ORDER BY id",
        [session_id], table="task_graph_edges", operation="select",
    )
    return [(parent, child) for parent, child in rows]


# Each node's latest verification (insertion order is ``id``): passed, degraded.
_LATEST_CHECKS_SQL = (
    "SELECT node_id, arg_max(syntax_ok AND build_ok AND tests_ok, id), arg_max(degraded, id) "
    "FROM verification_results WHERE session_id = $1 GROUP BY node_id"
)


def latest_checks(store: StoreBase, session_id: str) -> list[tuple[str, bool, bool]]:
    """``(node_id, passed, degraded)`` of each node's latest verification (passed: syntax,
    build and tests all ok)."""
    rows = store._execute(
        _LATEST_CHECKS_SQL, [session_id], table="verification_results", operation="select"
    )
    return [(node, bool(ok), bool(degraded)) for node, ok, degraded in rows]


def latest_reviews(store: StoreBase, session_id: str) -> dict[str, str]:
    """Each reviewed node's latest review outcome."""
    rows = store._execute(
        "SELECT node_id, arg_max(outcome, id) FROM review_outcomes "
        "WHERE session_id = $1 GROUP BY node_id",
        [session_id], table="review_outcomes", operation="select",
    )
    return dict(rows)


def counts_sql(*leading: str) -> str:
    """One statement over a session (``$1``) that selects the ``leading`` expressions, then
    its branches (all, and those active, sealed, merged and flushed: state compared
    case-insensitively) and its review outcomes (all, and those approved, rejected and
    corrected by the ledger's rule, :func:`.reviews.review_kind_sql`): 9 counts."""
    items = [
        *leading,
        "(SELECT count(*) FROM b)",
        *(f"(SELECT count(*) FROM b WHERE s = '{state}')"
          for state in ("active", "sealed", "merged", "flushed")),
        "(SELECT count(*) FROM r)",
        *(f"(SELECT count(*) FROM r WHERE {review_kind_sql(kind, 'o')})"
          for kind in ("approved", "rejected", "corrected")),
    ]
    return (
        "WITH b AS (SELECT lower(state) AS s FROM provisional_branches WHERE session_id = $1),\n"
        "     r AS (SELECT outcome AS o FROM review_outcomes WHERE session_id = $1)\n"
        "SELECT\n    " + ",\n    ".join(items)
    )


# A session's counts in one statement: escalations, rewrites, flushes, LLM requests, then the
# branches and reviews (``counts_sql``).
_SESSION_COUNTS_SQL = counts_sql(*(
    f"(SELECT count(*) FROM {table} WHERE session_id = $1)"
    for table in ("escalation_reports", "rewrite_records", "branch_flushes", "llm_requests")
))
_SESSION_COUNTS = (
    "escalations", "rewrites", "flushes", "llm_requests",
    "branches", "active", "sealed", "merged", "flushed",
    "reviews", "approved", "rejected", "corrected",
)


def session_counts(store: StoreBase, session_id: str) -> dict[str, int]:
    """The session's rows counted, in one statement: ``escalations``, ``rewrites``,
    ``flushes``, ``llm_requests``; ``branches`` and those ``active``, ``sealed``,
    ``merged`` and ``flushed`` (state compared case-insensitively); ``reviews`` and those
    ``approved``, ``rejected`` and ``corrected`` (as :func:`.reviews.count_reviews`)."""
    (row,) = store._execute(
        _SESSION_COUNTS_SQL, [session_id], table=None, operation="select"
    )
    return {name: int(n) for name, n in zip(_SESSION_COUNTS, row, strict=True)}


# --- one node, one table ----------------------------------------------------------------------

_NODE_STATE_COLUMNS = (
    "id", "created_at", "state", "attempt_count", "v_total", "node_class", "goal",
    "last_error_type", "committed_at",
)


def node_state_rows(store: StoreBase, session_id: str, node_id: str) -> list[dict[str, Any]]:
    """Every snapshot of one node (the columns a history shows), in insertion order."""
    sql = (
        f"SELECT {_columns(store, 'node_states', _NODE_STATE_COLUMNS)} FROM node_states "
        "WHERE session_id = ? AND node_id = ? ORDER BY id"
    )
    return _records(
        store, sql, [session_id, node_id], _NODE_STATE_COLUMNS, table="node_states"
    )


_NODE_LLM_COLUMNS = ("timestamp", "model", "tokens_in", "tokens_out", "latency_ms", "prompt",
                     "response")


def node_llm_requests(
    store: StoreBase, session_id: str, node_id: str
) -> list[dict[str, Any]]:
    """One node's LLM requests (without their ids), in insertion order."""
    sql = (
        f"SELECT {_columns(store, 'llm_requests', _NODE_LLM_COLUMNS)} FROM llm_requests "
        "WHERE session_id = ? AND node_id = ? ORDER BY id"
    )
    return _records(store, sql, [session_id, node_id], _NODE_LLM_COLUMNS, table="llm_requests")


_SEAL_COLUMNS = (
    "seal_id", "node_id", "sealed_path", "artifact_kind", "seal_hash", "version", "created_at",
)


def seal_rows(store: StoreBase, session_id: str) -> list[dict[str, Any]]:
    """The session's interface seals, in insertion order."""
    sql = (
        f"SELECT {_columns(store, 'interface_seals', _SEAL_COLUMNS)} FROM interface_seals "
        "WHERE session_id = ? ORDER BY id"
    )
    return _records(store, sql, [session_id], _SEAL_COLUMNS, table="interface_seals")


# The decision tables, each with its getter's order ({order}: the table's insertion order)
# and whether the getter keeps only each node's latest row.
DECISION_TABLES: dict[str, tuple[str, str | None]] = {
    "escalation_reports": ("id", None),  # get_escalation_reports
    "sheaf_validations": ("id", None),  # get_all_sheaf_validations
    "rewrite_records": ("id", None),  # get_rewrite_records
    "plan_revisions": ("sequence, created_at, {order}", None),  # get_plan_revisions
    "repair_footprints": ("node_id, attempt, id", None),  # get_all_repair_footprints
    "verification_results": ("id", "node_id"),  # get_all_verification_results
    "correction_attempts": ("node_id, attempt, id", None),  # get_session_correction_attempts
    "review_outcomes": ("id", None),  # get_all_review_outcomes
}
"""The session-wide decision tables :func:`decision_rows` reads."""


def decision_rows(store: StoreBase, table: str, session_id: str) -> list[dict[str, Any]]:
    """A decision table's rows of the session, as its session-wide getter returns them (same
    rows, same order), by column name, without building row models. JSON-list columns are
    left as the JSON text stored.

    Raises:
        KeyError: ``table`` is not one of :data:`DECISION_TABLES`.
        StoreError: The file's columns differ from the row model's (an older schema).
    """
    order_by, latest_per = DECISION_TABLES[table]
    mapping = table_map(ROW_MODELS[table])
    sql, params = mapping.select(
        "session_id = ?",
        [session_id],
        order_by=order_by.format(order=store._order_column(table)),
        latest_per=latest_per,
        legacy=store._legacy(table),
    )
    return _records(store, sql, params, mapping.columns + mapping.db_columns, table=table)
