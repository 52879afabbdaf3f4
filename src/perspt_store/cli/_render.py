"""Pure helpers of the command line: JSON conversion, timelines, graphs, summaries.

Nothing here imports click or rich, so it is usable (and testable) without the extra.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import difflib
import math
import re
import statistics
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreError
from ..rows import (
    CorrectionAttemptRow,
    EnergyRecord,
    LlmRequestRecord,
    NodeStateRecord,
    Row,
    SrbnStepRecord,
    TaskGraphEdgeRow,
)
from ..store import SessionStore

# --- pure helpers (no click, no rich) ---------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold converted: bytes to hex, datetimes to
    ISO-8601, decimals to float, UUIDs and anything else unknown to str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (uuid.UUID, _dt.timedelta)):
        return str(value)
    return str(value)


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


def one_line(message: str) -> str:
    """An engine message on one line: the caret diagram and ``LINE n:`` echo dropped."""
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and line.strip("^")]
    return " ".join(kept) if kept else message.strip()


def closest(target: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``target`` (typos, truncated ids)."""
    pool = list(dict.fromkeys(candidates))
    matches = difflib.get_close_matches(target, pool, n=n, cutoff=0.5)
    if len(matches) < n:  # a prefix is a strong hint even when it is short
        prefixed = [c for c in pool if c.startswith(target) and c not in matches]
        matches += prefixed[: n - len(matches)]
    return matches


def llm_totals(requests: Sequence[LlmRequestRecord]) -> dict[str, int]:
    """Request count, tokens and latency over ``requests``.

    Tokens count the provider's numbers, or ``ceil(len(text) / 4)`` for a row without one,
    the rule of :meth:`SessionStore.get_global_llm_summary`.
    """
    latencies = [r.latency_ms for r in requests]
    median = statistics.median(latencies) if latencies else 0
    return {
        "requests": len(requests),
        "tokens_in": sum(
            r.tokens_in if r.tokens_in > 0 else -(-len(r.prompt) // 4) for r in requests
        ),
        "tokens_out": sum(
            r.tokens_out if r.tokens_out > 0 else -(-len(r.response) // 4) for r in requests
        ),
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


def graph_nodes(states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow]) -> list[str]:
    """Node ids of a task graph: snapshotted nodes first, then edge endpoints, in order."""
    ids = [s.node_id for s in states]
    for edge in edges:
        ids += [edge.parent_node_id, edge.child_node_id]
    return list(dict.fromkeys(ids))


def _node_label_parts(node_id: str, state: NodeStateRecord | None) -> list[str]:
    if state is None:
        return [node_id]
    detail = " · ".join(p for p in (state.node_class, state.state) if p)
    return [node_id, detail, f"V={state.v_total:.4f}"]


def render_mermaid(states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow]) -> str:
    """The task graph as a Mermaid flowchart (``interface_boundary`` edges dotted)."""
    by_id = {s.node_id: s for s in states}
    names: dict[str, str] = {}
    taken = {"end", "graph", "subgraph", "style"}  # Mermaid keywords, then names given out
    for node_id in graph_nodes(states, edges):
        base = name = re.sub(r"[^A-Za-z0-9_]", "_", node_id) or "node"
        suffix = len(names)
        while name in taken:  # a suffix can itself collide with another node's name
            name = f"{base}_{suffix}"
            suffix += 1
        names[node_id] = name
        taken.add(name)

    def label(text: str) -> str:
        # One line per node or edge: line breaks and control characters become spaces.
        text = "".join(c if c.isprintable() else " " for c in text)
        return (
            text.replace("&", "#amp;")
            .replace('"', "#quot;")
            .replace("<", "#lt;")
            .replace(">", "#gt;")
        )

    lines = ["flowchart TD"]
    for node_id, name in names.items():
        parts = [label(p) for p in _node_label_parts(node_id, by_id.get(node_id))]
        lines.append(f'    {name}["{"<br/>".join(parts)}"]')
    for edge in edges:
        arrow = "-.->" if edge.edge_type == "interface_boundary" else "-->"
        edge_label = label(edge.edge_type).replace("|", "#124;")
        lines.append(
            f"    {names[edge.parent_node_id]} {arrow}|{edge_label}| {names[edge.child_node_id]}"
        )
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(
    states: Sequence[NodeStateRecord], edges: Sequence[TaskGraphEdgeRow], *, name: str = "tasks"
) -> str:
    """The task graph as Graphviz DOT (``interface_boundary`` edges dashed)."""
    by_id = {s.node_id: s for s in states}
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    for node_id in graph_nodes(states, edges):
        parts = _node_label_parts(node_id, by_id.get(node_id))
        lines.append(f"    {_dot_quote(node_id)} [label={_dot_quote(chr(10).join(parts))}];")
    for edge in edges:
        style = ", style=dashed" if edge.edge_type == "interface_boundary" else ""
        lines.append(
            f"    {_dot_quote(edge.parent_node_id)} -> {_dot_quote(edge.child_node_id)} "
            f"[label={_dot_quote(edge.edge_type)}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def review_counts(outcomes: Iterable[str]) -> dict[str, int]:
    """Reviews by the ledger's rules: approved (``approved*`` or ``auto_approved``),
    rejected (``rejected`` or ``aborted``), corrected (``correction_requested``)."""
    outcomes = list(outcomes)
    return {
        "total": len(outcomes),
        "approved": sum(o.startswith("approved") or o == "auto_approved" for o in outcomes),
        "rejected": sum(o in ("rejected", "aborted") for o in outcomes),
        "corrected": sum(o == "correction_requested" for o in outcomes),
    }


def session_overview(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Everything ``show`` prints about a session, as plain data (one query per table)."""
    session = store.get_session(session_id)
    if session is None:
        raise StoreError(f"no session {session_id!r}", table="sessions", operation="select")
    states = {s.node_id: s for s in store.get_latest_node_states(session_id)}
    energy: dict[str, list[EnergyRecord]] = {}
    for record in store.get_session_energy_history(session_id):
        energy.setdefault(record.node_id, []).append(record)
    edges = store.get_task_graph_edges(session_id)
    verifications = {v.node_id: v for v in store.get_all_verification_results(session_id)}
    reviews = store.get_all_review_outcomes(session_id)
    latest_review = {r.node_id: r.outcome for r in reviews}
    branches = store.get_provisional_branches(session_id)
    flushes = store.get_branch_flushes(session_id)
    budget = store.get_budget_envelope(session_id)
    charter = store.get_feature_charter(session_id)
    plan = store.get_active_plan_revision(session_id)

    node_ids = list(dict.fromkeys([*states, *energy, *graph_nodes([], edges)]))
    nodes = []
    for node_id in node_ids:
        state = states.get(node_id)
        history = energy.get(node_id, [])
        verification = verifications.get(node_id)
        nodes.append(
            {
                "node_id": node_id,
                "node_class": state.node_class if state else None,
                "state": state.state if state else None,
                "attempts": state.attempt_count if state else len(history),
                "v_total": history[-1].v_total if history else (state.v_total if state else None),
                "energy_points": len(history),
                "verified": None
                if verification is None
                else all((verification.syntax_ok, verification.build_ok, verification.tests_ok)),
                "degraded": None if verification is None else verification.degraded,
                "review": latest_review.get(node_id),
                "committed_at": state.committed_at if state else None,
            }
        )
    branch_states = [b.state for b in branches]
    return {
        "session": row_dict(session),
        "budget": row_dict(budget) if budget else None,
        "charter": row_dict(charter) if charter else None,
        "plan_revision": {k: v for k, v in row_dict(plan).items() if k != "plan_json"}
        if plan
        else None,
        "nodes": nodes,
        "verification": {
            "nodes": len(verifications),
            "passed": sum(bool(n["verified"]) for n in nodes),
            "degraded": sum(bool(v.degraded) for v in verifications.values()),
        },
        "reviews": review_counts(r.outcome for r in reviews),
        "escalations": len(store.get_escalation_reports(session_id)),
        "rewrites": len(store.get_rewrite_records(session_id)),
        "branches": {
            "total": len(branches),
            **{s: branch_states.count(s) for s in ("active", "sealed", "merged", "flushed")},
            "flushes": len(flushes),
            "flushed_branch_ids": [b for f in flushes for b in f.flushed_branch_ids],
        },
        "llm": llm_totals(store.get_llm_requests(session_id)),
    }
