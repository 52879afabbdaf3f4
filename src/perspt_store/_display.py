"""HTML (and short text) renderings for notebooks: the ``_repr_html_`` and ``__repr__`` of
rows, verification reports, snapshots, summaries and lake reports.

Pure functions of the objects (no store access, no optional libraries). Every value goes
through :func:`cell`, which escapes it and shortens it (long text, hashes), so a 1 MB prompt
or a hostile string renders as a short, inert cell.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .commitlog import VerificationReport
    from .delta import LakeVerification
    from .lake import ExportReport, ImportReport
    from .rows import Row

__all__ = [
    "cell",
    "export_report_html",
    "import_report_html",
    "kv_html",
    "lake_verification_html",
    "node_review_html",
    "node_review_repr",
    "row_html",
    "session_summary_html",
    "session_summary_repr",
    "short_hash",
    "shorten",
    "snapshot_html",
    "snapshot_repr",
    "table_html",
    "verification_html",
    "verification_repr",
]

TEXT_LIMIT = 120
"""Characters of a text value shown in a cell before it is cut."""
ROW_LIMIT = 50
"""Rows of a table shown before the rest are summarised in one line."""

_STYLE = (
    "<style>"
    ".perspt-store table{border-collapse:collapse;margin:0.2em 0 0.6em 0;font-size:0.9em}"
    ".perspt-store th,.perspt-store td{border:1px solid rgba(128,128,128,0.35);"
    "padding:0.15em 0.5em;text-align:left;vertical-align:top}"
    ".perspt-store th{font-weight:600}"
    ".perspt-store .none{opacity:0.5}"
    ".perspt-store .badge{display:inline-block;padding:0 0.45em;border-radius:0.3em;"
    "color:#fff;font-weight:600}"
    ".perspt-store .ok{background:#2e7d32}.perspt-store .bad{background:#c62828}"
    ".perspt-store .warn{background:#ef6c00}.perspt-store .info{background:#1565c0}"
    ".perspt-store h4{margin:0.3em 0}"
    "</style>"
)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last one an ellipsis if it was cut:
    the one shortening rule of tables, notebooks and plot labels."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def short_hash(value: bytes | None, length: int = 16) -> str:
    """The first ``length`` hex digits of a hash, with an ellipsis; ``—`` for None."""
    if value is None:
        return "—"
    return shorten(bytes(value).hex(), length + 1)


def cell(value: Any, limit: int = TEXT_LIMIT) -> str:
    """One value as escaped HTML: None dimmed, bytes as short hex (full hex on hover), long
    text cut (its length shown), floats to 6 significant digits, lists comma-separated."""
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        full = bytes(value).hex()
        if len(full) <= 16:
            return html.escape(full) if full else '<span class="none">(empty)</span>'
        return f'<span title="{html.escape(full)}">{html.escape(short_hash(bytes(value)))}</span>'
    if isinstance(value, _dt.datetime):
        return html.escape(value.isoformat(sep=" "))
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value) if value else "[]"
    text = str(value)
    if len(text) > limit:
        return (
            f"{html.escape(shorten(text, limit))} "
            f'<span class="none">({len(text):,} chars)</span>'
        )
    return html.escape(text)


def _wrap(*parts: str) -> str:
    return f'<div class="perspt-store">{_STYLE}{"".join(parts)}</div>'


def _title(text: str, badge: tuple[str, str] | None = None) -> str:
    mark = f' <span class="badge {badge[1]}">{html.escape(badge[0])}</span>' if badge else ""
    return f"<h4>{html.escape(text)}{mark}</h4>"


def kv_html(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table: name, value."""
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{cell(value)}</td></tr>" for name, value in pairs
    )
    return f"<table>{body}</table>"


def table_html(
    rows: Sequence[Sequence[Any]], columns: Sequence[str], *, limit: int = ROW_LIMIT
) -> str:
    """A table with a header; past ``limit`` rows, one line says how many were left out."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows[:limit]
    )
    if len(rows) > limit:
        body += (
            f'<tr><td colspan="{len(columns)}" class="none">… {len(rows) - limit:,} more '
            "rows</td></tr>"
        )
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="none">(none)</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fields(obj: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]


# --- rows -----------------------------------------------------------------------------------


def row_html(row: Row) -> str:
    """A row as a field/value table, with the columns the database filled in."""
    pairs: list[tuple[str, Any]] = []
    if "id" in row.__db_columns__:
        pairs.append(("id", getattr(row, "id", None)))
    pairs += list(row.to_dict().items())
    pairs += [(c, getattr(row, c, None)) for c in row.__db_columns__ if c != "id"]
    return _wrap(_title(f"{type(row).__name__} ({row.__table__})"), kv_html(pairs))


# --- verification ---------------------------------------------------------------------------


def verification_repr(report: VerificationReport) -> str:
    """One line: verdict, log size, roots, problem and note counts."""
    verdict = "OK" if report.ok else "FAILED"
    extra = [_count(len(report.problems), "problem")] if report.problems else []
    extra += [_count(len(report.notes), "note")] if report.notes else []
    tail = f", {', '.join(extra)}" if extra else ""
    return (
        f"<VerificationReport {report.session_id} {verdict}: {report.log_size} commits, "
        f"log root {short_hash(report.log_root)}, state root {short_hash(report.state_root)}"
        f"{tail}>"
    )


def verification_html(report: VerificationReport) -> str:
    """Verdict badge, sizes and roots, notes, and a table of problems."""
    badge = ("OK", "ok") if report.ok else ("FAILED", "bad")
    parts = [
        _title(f"Verification of session {report.session_id}", badge),
        kv_html([
            ("commits", report.log_size),
            ("log root", report.log_root),
            ("state root", report.state_root),
        ]),
    ]
    if report.notes:
        items = "".join(f"<li>{cell(note, 400)}</li>" for note in report.notes)
        parts.append(f"<b>Notes</b><ul>{items}</ul>")
    if report.problems:
        parts.append("<b>Problems</b>")
        parts.append(table_html(
            [[p.kind, p.seq, p.node_id, p.detail] for p in report.problems],
            ["kind", "seq", "node", "detail"],
        ))
    return _wrap(*parts)


# --- lake reports ---------------------------------------------------------------------------


def export_report_html(report: ExportReport) -> str:
    """Sessions exported, with their commits and rows."""
    sessions = report.manifest.get("sessions", {})
    rows = []
    for sid in report.session_ids:
        entry = sessions.get(sid, {})
        checkpoint = entry.get("checkpoint", {})
        rows.append([
            sid,
            checkpoint.get("size"),
            sum(entry.get("rows", {}).values()),
            (checkpoint.get("log_root") or "")[:16] + "…",
        ])
    return _wrap(
        _title(f"Exported {len(report.session_ids)} sessions to {report.path}"),
        table_html(rows, ["session", "commits", "rows", "log root"]),
    )


_STATUS_BADGE = {"imported": "ok", "skipped": "info", "conflict": "warn", "invalid": "bad"}


def import_report_html(report: ImportReport) -> str:
    """One line per session: status badge, rows written, detail."""
    badge = ("OK", "ok") if report.ok else (f"{len(report.conflicts)} not imported", "bad")
    body = "".join(
        "<tr>"
        f"<td>{cell(s.session_id)}</td>"
        f'<td><span class="badge {_STATUS_BADGE.get(s.status, "info")}">'
        f"{html.escape(s.status)}</span></td>"
        f"<td>{sum(s.rows.values()):,}</td>"
        f"<td>{cell(s.detail, 400)}</td>"
        "</tr>"
        for s in report.sessions
    ) or '<tr><td colspan="4" class="none">(no sessions)</td></tr>'
    table = (
        "<table><thead><tr><th>session</th><th>status</th><th>rows</th><th>detail</th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
    )
    return _wrap(_title(f"Import from {report.source}", badge), table)


def lake_verification_html(report: LakeVerification) -> str:
    """One line per session of a Delta lake: verified or not, commits, detail."""
    failed = sum(not s.ok for s in report.sessions)
    badge = ("OK", "ok") if report.ok else (f"{failed} failed", "bad")
    rows = [[s.session_id, "yes" if s.ok else "no", s.commits, s.detail]
            for s in report.sessions]
    return _wrap(_title(f"Lake {report.uri}", badge),
                 table_html(rows, ["session", "verified", "commits", "detail"]))


# --- snapshots and summaries (perspt_store.store.snapshot) ------------------------------------


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def snapshot_repr(snapshot: Any) -> str:
    """One line: the session and how much the snapshot holds."""
    budget = snapshot.budget
    used = (
        f", budget {budget.steps_used}"
        + (f"/{budget.max_steps}" if budget.max_steps is not None else "")
        + " steps"
        if budget is not None
        else ""
    )
    return (
        f"<SessionSnapshot {snapshot.session_id}: {_count(len(snapshot.node_details), 'node')}, "
        f"{_count(len(snapshot.graph_edges), 'edge')}, "
        f"{_count(len(snapshot.branches), 'branch', 'branches')}, "
        f"{_count(len(snapshot.escalation_reports), 'escalation')}, "
        f"{_count(len(snapshot.flushes), 'flush', 'flushes')}{used}>"
    )


def snapshot_html(snapshot: Any) -> str:
    """The nodes (latest state, energy, verification, seal) and the session's totals."""
    rows = []
    for detail in snapshot.node_details:
        record, verification = detail.record, detail.verification
        verified = None if verification is None else verification.passed
        energy = detail.energy_history[-1].v_total if detail.energy_history else None
        rows.append([record.node_id, record.node_class, record.state, record.attempt_count,
                     energy if energy is not None else record.v_total,
                     len(detail.energy_history), verified, detail.seal_hash])
    budget = snapshot.budget
    totals: list[tuple[str, Any]] = [
        ("task-graph edges", len(snapshot.graph_edges)),
        ("branches", len(snapshot.branches)),
        ("escalations", len(snapshot.escalation_reports)),
        ("branch flushes", len(snapshot.flushes)),
    ]
    if budget is not None:
        totals.append((
            "budget",
            f"steps {budget.steps_used}/{budget.max_steps if budget.max_steps is not None else '∞'}"
            f" · revisions {budget.revisions_used}/"
            f"{budget.max_revisions if budget.max_revisions is not None else '∞'}"
            f" · cost ${budget.cost_used_usd:.4f}",
        ))
    return _wrap(
        _title(f"Snapshot of session {snapshot.session_id}"),
        table_html(rows, ["node", "class", "state", "attempts", "V(x)", "measurements",
                          "verified", "seal"]),
        kv_html(totals),
    )


def node_review_repr(summary: Any) -> str:
    """One line: the node and what a reviewer has on it."""
    latest = summary.latest_energy
    energy = f" (latest V={latest.v_total:.4g})" if latest is not None else ""
    return (
        f"<NodeReviewSummary {summary.node_id}: "
        f"{_count(len(summary.energy_history), 'energy measurement')}{energy}, "
        f"{_count(len(summary.escalation_reports), 'escalation')}, "
        f"{_count(len(summary.sheaf_validations), 'sheaf validation')}, "
        f"{_count(len(summary.interface_seals), 'seal')}, "
        f"{_count(len(summary.branches), 'branch', 'branches')}>"
    )


def node_review_html(summary: Any) -> str:
    """Counts, then the energy history and the escalations."""
    latest = summary.latest_energy
    parts = [
        _title(f"Review of node {summary.node_id}"),
        kv_html([
            ("attempts", summary.attempt_count),
            ("latest V(x)", None if latest is None else latest.v_total),
            ("escalations", len(summary.escalation_reports)),
            ("sheaf validations", len(summary.sheaf_validations)),
            ("interface seals", len(summary.interface_seals)),
            ("context provenance", len(summary.context_provenance)),
            ("branches", len(summary.branches)),
        ]),
    ]
    if summary.energy_history:
        parts.append("<b>Energy</b>")
        parts.append(table_html(
            [[i, e.v_syn, e.v_str, e.v_log, e.v_boot, e.v_sheaf, e.v_total]
             for i, e in enumerate(summary.energy_history, start=1)],
            ["attempt", "V_syn", "V_str", "V_log", "V_boot", "V_sheaf", "V_total"],
        ))
    if summary.escalation_reports:
        parts.append("<b>Escalations</b>")
        parts.append(table_html(
            [[r.category, r.action, r.affected_node_ids] for r in summary.escalation_reports],
            ["category", "action", "affected nodes"],
        ))
    return _wrap(*parts)


def session_summary_repr(summary: Any) -> str:
    """One line: node counts by state, total energy, branches and reviews."""
    return (
        f"<SessionReviewSummary {summary.session_id}: {_count(summary.total_nodes, 'node')} "
        f"({summary.completed} completed, {summary.failed} failed, {summary.escalated} "
        f"escalated), total V={summary.total_energy:.4g}, "
        f"{_count(summary.branches_total, 'branch', 'branches')}, "
        f"{_count(summary.review_total, 'review')}>"
    )


def session_summary_html(summary: Any) -> str:
    """Node, branch and review counts, and each node's latest energy."""
    failing = summary.failed or summary.escalated
    badge = ("needs attention", "warn") if failing else (
        ("all completed", "ok") if summary.total_nodes and summary.completed ==
        summary.total_nodes else None)
    parts = [
        _title(f"Summary of session {summary.session_id}", badge),
        kv_html([
            ("nodes", f"{summary.total_nodes}: {summary.completed} completed, "
                      f"{summary.failed} failed, {summary.escalated} escalated"),
            ("total energy", summary.total_energy),
            ("escalation reports", len(summary.escalation_reports)),
            ("branches", f"{summary.branches_total}: {summary.active_branches} active, "
                         f"{summary.sealed_branches} sealed, {summary.merged_branches} merged, "
                         f"{summary.flushed_branches} flushed "
                         f"({_count(len(summary.flush_decisions), 'flush', 'flushes')})"),
            ("reviews", f"{summary.review_total}: {summary.reviews_approved} approved, "
                        f"{summary.reviews_rejected} rejected, "
                        f"{summary.reviews_corrected} corrected"),
        ]),
    ]
    if summary.node_energies:
        parts.append("<b>Latest energy per node</b>")
        parts.append(table_html(
            [[node, e.v_syn, e.v_str, e.v_log, e.v_boot, e.v_sheaf, e.v_total]
             for node, e in summary.node_energies],
            ["node", "V_syn", "V_str", "V_log", "V_boot", "V_sheaf", "V_total"],
        ))
    return _wrap(*parts)
