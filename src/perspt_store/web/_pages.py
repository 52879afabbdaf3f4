"""What each dashboard page shows, as plain data read from the store.

Every function takes a store already inside ``consistent_read()`` (see ``_reader``) and
returns a dict: the HTML templates render it and the JSON API returns it (through
``jsonable``), so the two never disagree. Unknown sessions raise
:class:`~perspt_store.SessionNotFoundError`; unknown nodes and commits :class:`LookupError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._shaping import llm_totals, merge_timeline, row_dict
from ..commitlog import REMOVED_STATE
from ..errors import SessionNotFoundError
from ..rows import EnergyRecord, LlmRequestRecord, NodeStateRecord, Row, SessionRecord
from ..store import SessionStore, overview
from ..store.reviews import count_reviews
from ..store.snapshot import state_kind

__all__ = [
    "ENERGY_COMPONENTS",
    "SORTS",
    "OverviewQuery",
    "dag_page",
    "decisions_page",
    "energy_page",
    "live_state",
    "llm_page",
    "merkle_page",
    "node_page",
    "overview_page",
    "overview_state",
    "sandbox_page",
    "session_page",
    "verification",
]

ENERGY_COMPONENTS = ("v_syn", "v_str", "v_log", "v_boot", "v_sheaf", "v_total")
"""The components of V(x), in the order the charts draw them."""

SORTS = overview.SESSION_SORTS
"""Overview sort keys (``?sort=``) and the column each orders by."""

PER_PAGE_MAX = 200


@dataclass(frozen=True)
class OverviewQuery:
    """The overview's query string: page, filter, search and sort."""

    page: int = 1
    per_page: int = 25
    status: str | None = None
    q: str | None = None
    sort: str = "created"
    descending: bool = True

    @classmethod
    def parse(cls, params: dict[str, str]) -> OverviewQuery:
        """Read the query string leniently: a bad number or sort key falls back to the
        default (a page is never an error)."""

        def number(name: str, default: int, high: int) -> int:
            try:
                return min(max(int(params.get(name, default)), 1), high)
            except ValueError:
                return default

        sort = params.get("sort", "created")
        return cls(
            page=number("page", 1, 10**9),
            per_page=number("per_page", 25, PER_PAGE_MAX),
            status=params.get("status") or None,
            q=(params.get("q") or "").strip() or None,
            sort=sort if sort in SORTS else "created",
            descending=params.get("order", "desc") != "asc",
        )

    def link(self, **changes: Any) -> str:
        """This query with ``changes``, as a query string (``page`` resets unless given)."""
        from urllib.parse import urlencode

        values: dict[str, Any] = {
            "status": self.status,
            "q": self.q,
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "per_page": self.per_page,
            "page": 1,
        }
        values.update(changes)
        defaults = {"sort": "created", "order": "desc", "per_page": 25, "page": 1}
        kept = {k: v for k, v in values.items() if v is not None and defaults.get(k) != v}
        return "?" + urlencode(kept) if kept else "?"


def overview_page(store: SessionStore, query: OverviewQuery) -> dict[str, Any]:
    """Sessions (one page), counts by status, and the LLM totals of every session."""
    # The store's list_sessions_paginated only orders newest first: the overview filters
    # and sorts in SQL.
    rows, matching = overview.find_sessions(
        store,
        status=query.status,
        search=query.q,
        sort=query.sort,
        descending=query.descending,
        limit=query.per_page,
        offset=(query.page - 1) * query.per_page,
    )
    ids = [row[0] for row in rows]
    nodes: dict[str, dict[str, int]] = {sid: defaultdict(int) for sid in ids}
    for sid, state in overview.latest_states_of_sessions(store, ids):
        if state == REMOVED_STATE:
            continue
        counts = nodes[sid]
        counts["total"] += 1
        counts[state_kind(state)] += 1
    by_status = overview.sessions_by_status(store)
    llm = store.get_global_llm_summary()
    total = store.count_sessions()
    return {
        "sessions": [
            {
                "session_id": sid,
                "task": task,
                "working_dir": working_dir,
                "detected_toolchain": toolchain,
                "status": status,
                "created_at": created,
                "updated_at": updated,
                "nodes": dict(nodes[sid]),
            }
            for sid, task, working_dir, toolchain, status, created, updated in rows
        ],
        "matching": matching,
        "total_sessions": total,
        "page": query.page,
        "pages": max(1, math.ceil(matching / query.per_page)),
        "per_page": query.per_page,
        "by_status": dict(by_status),
        "llm": {
            "requests": llm.count,
            "tokens_in": llm.tokens_in,
            "tokens_out": llm.tokens_out,
            "median_latency_ms": llm.median_latency_ms,
        },
    }


def _session(store: SessionStore, session_id: str) -> SessionRecord:
    session = store.get_session(session_id)
    if session is None:
        raise SessionNotFoundError(session_id, table="sessions")
    return session


def _seconds(start: _dt.datetime | None, end: _dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (_as_utc(end) - _as_utc(start)).total_seconds())


def _is_running(status: str) -> bool:
    return status.strip().strip('"').lower() in ("running", "active", "in_progress")


def session_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Status, task, durations, budget, charter, plan, counts and the node table (the
    verification verdict comes separately: it recomputes the whole log).

    Read with plain SQL, no row models, apart from the session, plan, budget and charter.
    """
    session = _session(store, session_id)
    states: dict[str, tuple[Any, ...]] = {}
    spans: dict[str, tuple[_dt.datetime | None, _dt.datetime | None]] = {}
    for node_id, *snapshot, first_at, last_at in overview.latest_nodes(store, session_id):
        spans[node_id] = (first_at, last_at)
        if snapshot[0] != REMOVED_STATE:  # a rollback removed it
            states[node_id] = tuple(snapshot)
    energy = {n: (c, v) for n, c, v in overview.energy_by_node(store, session_id)}
    endpoints = overview.edge_ends(store, session_id)
    checks = {n: (ok, degraded) for n, ok, degraded in overview.latest_checks(store, session_id)}
    latest_review = overview.latest_reviews(store, session_id)
    counts = overview.session_counts(store, session_id)
    plan = store.get_active_plan_revision(session_id)
    budget = store.get_budget_envelope(session_id)
    charter = store.get_feature_charter(session_id)
    ids = [*states, *energy, *(n for ends in endpoints for n in ends)]
    nodes = []
    for node_id in dict.fromkeys(ids):
        state = states.get(node_id)
        count, latest = energy.get(node_id, (0, None))
        check = checks.get(node_id)
        first, last = spans.get(node_id, (None, None))
        if state is not None:
            label, node_class, attempts, v_total, committed_at = state
        else:
            label, node_class, attempts, v_total, committed_at = None, None, count, None, None
        nodes.append(
            {
                "node_id": node_id,
                "node_class": node_class,
                "state": label,
                "kind": state_kind(label) if label is not None else "unknown",
                "attempts": attempts,
                "v_total": latest if latest is not None else v_total,
                "energy_points": count,
                "verified": None if check is None else check[0],
                "degraded": None if check is None else check[1],
                "review": latest_review.get(node_id),
                "committed_at": committed_at,
                "duration_s": _seconds(first, last),
            }
        )
    running = _is_running(session.status)
    end = _dt.datetime.now(_dt.UTC) if running else session.updated_at
    return {
        "session": row_dict(session),
        "running": running,
        "duration_s": _seconds(session.created_at, end),
        "budget": row_dict(budget) if budget else None,
        "charter": row_dict(charter) if charter else None,
        "plan_revision": {k: v for k, v in row_dict(plan).items() if k != "plan_json"}
        if plan
        else None,
        "plan_json": plan.plan_json if plan else None,
        "nodes": nodes,
        "verification": {
            "nodes": len(checks),
            "passed": sum(bool(n["verified"]) for n in nodes),
            "degraded": sum(degraded for _, degraded in checks.values()),
        },
        "reviews": {
            "total": counts["reviews"],
            **{kind: counts[kind] for kind in ("approved", "rejected", "corrected")},
        },
        "escalations": counts["escalations"],
        "rewrites": counts["rewrites"],
        "branches": {
            "total": counts["branches"],
            **{s: counts[s] for s in ("active", "sealed", "merged", "flushed")},
            "flushes": counts["flushes"],
        },
        "llm_requests": counts["llm_requests"],
    }


def verification(store: SessionStore, session_id: str) -> dict[str, Any]:
    """``verify_session``'s verdict: whether the log matches the stored states, and why not."""
    _session(store, session_id)
    report = store.verify_session(session_id)
    return {
        "ok": report.ok,
        "log_size": report.log_size,
        "log_root": report.log_root.hex(),
        "state_root": report.state_root.hex(),
        "problems": [p.model_dump() for p in report.problems],
        "notes": list(report.notes),
    }


def node_page(store: SessionStore, session_id: str, node_id: str) -> dict[str, Any]:
    """One node's history: every snapshot, energy, step, correction, check and commit."""
    _session(store, session_id)
    states = overview.node_state_rows(store, session_id, node_id)
    edges = store.get_task_graph_edges(session_id)
    if not states and not any(node_id in (e.parent_node_id, e.child_node_id) for e in edges):
        raise LookupError(f"no node {node_id!r} in session {session_id!r}")
    energy = store.get_energy_history(session_id, node_id)
    latest_check = store.get_verification_result(session_id, node_id)
    return {
        "session_id": session_id,
        "node_id": node_id,
        "states": states,
        "energy": [row_dict(e) for e in energy],
        "chart": _chart_series(energy),
        "parents": [e.parent_node_id for e in edges if e.child_node_id == node_id],
        "children": [e.child_node_id for e in edges if e.parent_node_id == node_id],
        "timeline": [
            _row_with_kind(row)
            for row in merge_timeline(
                store.get_step_timeline(session_id, node_id),
                store.get_correction_attempts(session_id, node_id),
            )
        ],
        "verifications": [row_dict(latest_check)] if latest_check else [],
        "sheaf_validations": [
            row_dict(v) for v in store.get_sheaf_validations(session_id, node_id)
        ],
        "reviews": [row_dict(r) for r in store.get_review_outcomes(session_id, node_id)],
        "llm": [
            {**r, "prompt": _preview(r["prompt"]), "response": _preview(r["response"])}
            for r in overview.node_llm_requests(store, session_id, node_id)
        ],
        "commits": [
            _commit_dict(c) for c in store.get_commit_log(session_id) if c.node_id == node_id
        ],
    }


def _row_with_kind(row: Row) -> dict[str, Any]:
    return {"kind": type(row).__name__, **row_dict(row)}


def _commit_dict(commit: Any) -> dict[str, Any]:
    return {
        "seq": commit.seq,
        "node_id": commit.node_id,
        "kind": commit.kind,
        "leaf_hash": commit.leaf_hash.hex(),
        "state_root": commit.state_root.hex(),
        "log_root": commit.log_root.hex(),
        "log_size": commit.log_size,
    }


def _llm_row(request: LlmRequestRecord) -> dict[str, Any]:
    data = row_dict(request)
    # Previews only: a prompt can be a megabyte.
    data["prompt"] = _preview(request.prompt)
    data["response"] = _preview(request.response)
    return data


def _preview(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _display_nodes(
    states: Sequence[NodeStateRecord], extra_ids: Iterable[str]
) -> list[dict[str, Any]]:
    nodes = [
        {
            "node_id": s.node_id,
            "state": s.state,
            "kind": state_kind(s.state),
            "node_class": s.node_class,
            "goal": s.goal,
            "attempts": s.attempt_count,
            "v_total": s.v_total,
        }
        for s in states
    ]
    known = {s.node_id for s in states}
    for node_id in dict.fromkeys(extra_ids):
        if node_id not in known:  # an edge to a node never snapshotted
            nodes.append(
                {
                    "node_id": node_id,
                    "state": None,
                    "kind": "unknown",
                    "node_class": None,
                    "goal": None,
                    "attempts": 0,
                    "v_total": None,
                }
            )
    return nodes


def dag_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """The task graph: the latest state of every node, and the edges."""
    _session(store, session_id)
    edges = store.get_task_graph_edges(session_id)
    endpoints = [n for e in edges for n in (e.parent_node_id, e.child_node_id)]
    return {
        "session_id": session_id,
        "nodes": _display_nodes(store.get_latest_node_states(session_id), endpoints),
        "edges": [
            {"parent": e.parent_node_id, "child": e.child_node_id, "type": e.edge_type}
            for e in edges
        ],
    }


def _chart_series(history: Sequence[EnergyRecord]) -> dict[str, list[float]]:
    return {name: [float(getattr(e, name)) for e in history] for name in ENERGY_COMPONENTS}


def energy_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Per node: its V(x) history by component, and whether it converged."""
    _session(store, session_id)
    series: dict[str, dict[str, list[float]]] = {}
    for node_id, *values in overview.energy_series(store, session_id, ENERGY_COMPONENTS):
        chart = series.setdefault(node_id, {name: [] for name in ENERGY_COMPONENTS})
        for name, value in zip(ENERGY_COMPONENTS, values, strict=True):
            chart[name].append(float(value))
    nodes = [
        {
            "node_id": node_id,
            "measurements": len(chart["v_total"]),
            "first": chart["v_total"][0],
            "last": chart["v_total"][-1],
            "min": min(chart["v_total"]),
            "series": chart,
        }
        for node_id, chart in series.items()
    ]
    return {"session_id": session_id, "components": ENERGY_COMPONENTS, "nodes": nodes}


def _latency_stats(
    requests: Sequence[LlmRequestRecord], cost_per_token: float | None
) -> dict[str, Any]:
    totals = llm_totals(requests)
    tokens = totals["tokens_in"] + totals["tokens_out"]
    latencies = [r.latency_ms for r in requests]
    return {
        **totals,
        "mean_latency_ms": statistics.fmean(latencies) if latencies else 0.0,
        "max_latency_ms": max(latencies, default=0),
        "cost_usd": None if cost_per_token is None else tokens * cost_per_token,
    }


def llm_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """LLM requests with tokens, latency and cost, totalled per node and per model.

    Requests carry no price; the cost is the budget envelope's ``cost_used_usd`` shared
    out by tokens (None without a budget).
    """
    _session(store, session_id)
    requests = store.get_llm_requests(session_id)
    budget = store.get_budget_envelope(session_id)
    all_tokens = llm_totals(requests)
    tokens = all_tokens["tokens_in"] + all_tokens["tokens_out"]
    per_token = budget.cost_used_usd / tokens if budget is not None and tokens else None

    def grouped(key: str) -> list[dict[str, Any]]:
        groups: dict[str, list[LlmRequestRecord]] = {}
        for request in requests:
            groups.setdefault(getattr(request, key) or "(none)", []).append(request)
        return [{key: name, **_latency_stats(rows, per_token)} for name, rows in groups.items()]

    return {
        "session_id": session_id,
        "totals": _latency_stats(requests, per_token),
        "cost_source": "budget envelope cost_used_usd, shared out by tokens"
        if per_token is not None
        else None,
        "by_node": grouped("node_id"),
        "by_model": grouped("model"),
        "requests": [_llm_row(r) for r in requests],
    }


def _when(row: Row) -> _dt.datetime | None:
    for column in ("created_at", "timestamp"):
        if column in row.__db_columns__:
            value: _dt.datetime | None = getattr(row, column)
            return value
    return None


# The decisions timeline, by table: (kind, table, summary). The page reads these without row
# models (a 1,000-node session has thousands of decisions), exactly as the getters named in
# ``_DECISION_GETTERS`` return them (``overview.decision_rows``); the JSON API adds each row
# in full through the getters.
_DECISION_SOURCES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("escalation", "escalation_reports", lambda r: f"{r.category}: {r.action}"),
    (
        "sheaf",
        "sheaf_validations",
        lambda r: f"{r.validator_class} {'passed' if r.passed else 'failed'}: "
        f"{r.evidence_summary}",
    ),
    (
        "rewrite",
        "rewrite_records",
        lambda r: f"{r.action} ({r.category}); requeued {', '.join(r.requeued_nodes) or '-'}",
    ),
    (
        "plan",
        "plan_revisions",
        lambda r: f"revision {r.sequence} {r.status}: {r.reason}",
    ),
    (
        "repair",
        "repair_footprints",
        lambda r: f"attempt {r.attempt} {'resolved' if r.resolved else 'open'}: {r.diagnosis}",
    ),
    (
        "verification",
        "verification_results",
        lambda r: (
            ("degraded: " + (r.degraded_reason or "") if r.degraded else "")
            + " ".join(
                f"{name}={'ok' if ok else 'FAIL'}"
                for name, ok in (
                    ("syntax", r.syntax_ok),
                    ("build", r.build_ok),
                    ("tests", r.tests_ok),
                    ("lint", r.lint_ok),
                )
            )
            + f" ({r.tests_passed} passed, {r.tests_failed} failed)"
        ),
    ),
    (
        "correction",
        "correction_attempts",
        lambda r: (
            f"attempt {r.attempt} {'accepted' if r.accepted else 'rejected'}"
            + (f": {r.rejection_reason}" if r.rejection_reason else "")
        ),
    ),
    (
        "review",
        "review_outcomes",
        lambda r: r.outcome + (f": {r.reviewer_note}" if r.reviewer_note else ""),
    ),
)

# The getter of each kind, for the JSON API's full rows (same order as the SQL above).
_DECISION_GETTERS = {
    "escalation": "get_escalation_reports",
    "sheaf": "get_all_sheaf_validations",
    "rewrite": "get_rewrite_records",
    "plan": "get_plan_revisions",
    "repair": "get_all_repair_footprints",
    "verification": "get_all_verification_results",
    "correction": "get_session_correction_attempts",
    "review": "get_all_review_outcomes",
}


class _Fields:
    """A result row read by column name, as the summaries read row models."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _decision_event(
    kind: str, values: dict[str, Any], summary: Callable[[Any], str], row: Any
) -> tuple[dict[str, Any], str | None]:
    """One timeline event from a decision row (``row`` answers the summary's attributes;
    ``values`` holds its columns), and the row's review outcome if it is a review."""
    when = values.get("timestamp", getattr(row, "timestamp", None))
    if when is None:
        when = values.get("created_at", getattr(row, "created_at", None))
    if kind == "correction":  # the agent's clock: epoch seconds
        when = _dt.datetime.fromtimestamp(when, _dt.UTC) if when is not None else None
    event = {"kind": kind, "time": when, "node_id": values.get("node_id"),
             "summary": summary(row)}
    return event, (values["outcome"] if kind == "review" else None)


def _decision_events(
    store: SessionStore,
    kind: str,
    table: str,
    summary: Callable[[Any], str],
    session_id: str,
) -> list[tuple[dict[str, Any], str | None]]:
    found = []
    for row in overview.decision_rows(store, table, session_id):
        if "requeued_nodes" in row and isinstance(row["requeued_nodes"], str):
            row["requeued_nodes"] = json.loads(row["requeued_nodes"] or "[]")
        found.append(_decision_event(kind, row, summary, _Fields(row)))
    return found


def decisions_page(
    store: SessionStore, session_id: str, *, rows: bool = False
) -> dict[str, Any]:
    """Every decision of the run on one timeline, in time order: escalations, sheaf
    validations, rewrites, plan revisions, repair footprints, verifications, correction
    attempts and reviews. With ``rows``, each event also carries its row in full."""
    _session(store, session_id)
    events: list[tuple[_dt.datetime, int, dict[str, Any]]] = []
    floor = _dt.datetime.min.replace(tzinfo=_dt.UTC)
    outcomes: list[str] = []
    for kind, table, summary in _DECISION_SOURCES:
        full = getattr(store, _DECISION_GETTERS[kind])(session_id) if rows else None
        try:
            found = _decision_events(store, kind, table, summary, session_id)
        except (AttributeError, KeyError, TypeError, ValueError):
            # A raw value the summary cannot read (e.g. a malformed JSON list): read this
            # table through its getter's row models instead, which decode leniently. (A
            # file whose columns differ from the models fails the getter alike.)
            models = full if full is not None else getattr(
                store, _DECISION_GETTERS[kind]
            )(session_id)
            found = [
                _decision_event(kind, row.model_dump(), summary, row) for row in models
            ]
        for index, (event, outcome) in enumerate(found):
            if outcome is not None:
                outcomes.append(outcome)
            if full is not None:
                event["row"] = row_dict(full[index])
            when = event["time"]
            key = floor if when is None else _as_utc(when)
            events.append((key, len(events), event))
    events.sort(key=lambda e: (e[0], e[1]))
    counts: dict[str, int] = defaultdict(int)
    for _, _, event in events:
        counts[event["kind"]] += 1
    return {
        "session_id": session_id,
        "counts": dict(counts),
        "reviews": count_reviews(outcomes),
        "events": [event for _, _, event in events],
    }


def _as_utc(moment: _dt.datetime) -> _dt.datetime:
    """The database's timestamps are naive UTC; the clock's are aware."""
    return moment.replace(tzinfo=_dt.UTC) if moment.tzinfo is None else moment


def sandbox_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Provisional branches, their lineage, flush decisions and interface seals."""
    _session(store, session_id)
    return {
        "session_id": session_id,
        "branches": [row_dict(b) for b in store.get_provisional_branches(session_id)],
        "lineage": [row_dict(b) for b in store.get_branch_lineage(session_id)],
        "flushes": [row_dict(f) for f in store.get_branch_flushes(session_id)],
        "seals": overview.seal_rows(store, session_id),
    }


def merkle_page(store: SessionStore, session_id: str) -> dict[str, Any]:
    """The commit log (the verdict comes from :func:`verification`)."""
    _session(store, session_id)
    return {
        "session_id": session_id,
        "commits": [_commit_dict(c) for c in store.get_commit_log(session_id)],
    }


# Rows per table of a session: a new LLM call or decision changes a page without changing
# any node's state.
_LIVE_TABLES = (
    "llm_requests",
    "escalation_reports",
    "sheaf_validations",
    "rewrite_records",
    "plan_revisions",
    "repair_footprints",
    "verification_results",
    "correction_attempts",
    "review_outcomes",
    "provisional_branches",
    "branch_lineage",
    "branch_flushes",
    "interface_seals",
    "srbn_step_records",
    "task_graph_edges",
    "node_states",
)


def live_state(store: SessionStore, session_id: str) -> dict[str, Any]:
    """What the live stream compares between polls: the session's status and every node's
    latest state, attempts and energy (small, and enough to tell any page to refresh)."""
    session = _session(store, session_id)
    energy: dict[str, int] = defaultdict(int)
    for record in store.get_session_energy_history(session_id):
        energy[record.node_id] += 1
    nodes = {
        s.node_id: {
            "state": s.state,
            "kind": state_kind(s.state),
            "attempts": s.attempt_count,
            "v_total": s.v_total,
            "energy_points": energy.get(s.node_id, 0),
        }
        for s in store.get_latest_node_states(session_id)
    }
    return {
        "status": session.status,
        "updated_at": session.updated_at,
        "rows": overview.session_row_counts(store, session_id, _LIVE_TABLES),
        "nodes": nodes,
    }


def overview_state(store: SessionStore) -> dict[str, Any]:
    """What the overview's live stream compares: how many sessions, and the last change."""
    count, latest = overview.sessions_changed(store)
    return {"sessions": count, "updated_at": latest}
