"""Commands about whole sessions and the database: ``init``, ``demo``, ``sessions``, ``show``,
``sql`` and ``tables``."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._shaping import llm_totals, row_dict
from ..store import SessionStore, overview
from ._common import (
    TEXT,
    db_path,
    document_options,
    fits_bigint,
    open_store,
    output_options,
    require_session,
    session_argument,
)
from ._output import (
    NONE,
    Column,
    Format,
    cell,
    console,
    emit_json,
    emit_rows,
    fitted_table,
    plural,
    print_renderables,
)

# --- data -----------------------------------------------------------------------------------


def session_overview(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Everything ``show`` prints about a session, as plain data.

    Counts (reviews, branches, escalations) are the store's :meth:`session_summary`; the
    node table adds what a summary does not hold (class, attempts, verification, latest
    review). Nodes a rollback removed are not listed as nodes but named in
    ``removed_nodes``.
    """
    summary = store.session_summary(session_id)  # raises for an unknown session
    session = store.get_session(session_id)
    assert session is not None  # the summary found it, in the same snapshot
    states = {s.node_id: s for s in store.get_latest_node_states(session_id)}
    energy: dict[str, int] = {}
    last_v: dict[str, float] = {}
    for record in store.get_session_energy_history(session_id):
        energy[record.node_id] = energy.get(record.node_id, 0) + 1
        last_v[record.node_id] = record.v_total
    edges = store.get_task_graph_edges(session_id)
    removed = {c.node_id for c in store.get_commit_log(session_id) if c.kind == "remove"}
    removed -= set(states)  # restored again later
    verifications = {
        v.node_id: v
        for v in store.get_all_verification_results(session_id)
        if v.node_id not in removed
    }
    latest_review = {r.node_id: r.outcome for r in store.get_all_review_outcomes(session_id)}
    budget = store.get_budget_envelope(session_id)
    charter = store.get_feature_charter(session_id)
    plan = store.get_active_plan_revision(session_id)

    graph_ids = [n for e in edges for n in (e.parent_node_id, e.child_node_id)]
    node_ids = [
        n for n in dict.fromkeys([*states, *energy, *graph_ids]) if n not in removed
    ]
    nodes = []
    for node_id in node_ids:
        state = states.get(node_id)
        verification = verifications.get(node_id)
        nodes.append(
            {
                "node_id": node_id,
                "node_class": state.node_class if state else None,
                "state": state.state if state else None,
                "attempts": state.attempt_count if state else energy.get(node_id, 0),
                "v_total": last_v.get(node_id, state.v_total if state else None),
                "energy_points": energy.get(node_id, 0),
                "verified": None if verification is None else verification.passed,
                "degraded": None if verification is None else verification.degraded,
                "review": latest_review.get(node_id),
                "committed_at": state.committed_at if state else None,
            }
        )
    return {
        "session": row_dict(session),
        "budget": row_dict(budget) if budget else None,
        "charter": row_dict(charter) if charter else None,
        "plan_revision": {k: v for k, v in row_dict(plan).items() if k != "plan_json"}
        if plan
        else None,
        "nodes": nodes,
        "removed_nodes": sorted(removed),
        "verification": {
            "nodes": len(verifications),
            "passed": sum(bool(n["verified"]) for n in nodes),
            "degraded": sum(bool(v.degraded) for v in verifications.values()),
        },
        "reviews": {
            "total": summary.review_total,
            "approved": summary.reviews_approved,
            "rejected": summary.reviews_rejected,
            "corrected": summary.reviews_corrected,
        },
        "escalations": len(summary.escalation_reports),
        "rewrites": len(store.get_rewrite_records(session_id)),
        "branches": {
            "total": summary.branches_total,
            "active": summary.active_branches,
            "sealed": summary.sealed_branches,
            "merged": summary.merged_branches,
            "flushed": summary.flushed_branches,
            "flushes": len(summary.flush_decisions),
            "flushed_branch_ids": [
                b for f in summary.flush_decisions for b in f.flushed_branch_ids
            ],
        },
        "llm": llm_totals(store.get_llm_requests(session_id)),
    }


# --- rendering ------------------------------------------------------------------------------


def _key_values() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    return grid


def _wrapped(text: str) -> Text:
    """Free text that wraps at word boundaries (an id inside it stays whole)."""
    return Text(" ".join(text.split()), overflow="fold")


def overview_renderables(overview: dict[str, Any], out: Console) -> list[Any]:
    """The ``show`` page for ``out``: the session's head, its nodes, then the totals."""
    session = overview["session"]
    head = _key_values()
    head.add_row("Session", Text(session["session_id"]))
    head.add_row("Status", cell(session["status"]))
    head.add_row("Task", _wrapped(session["task"]))
    head.add_row("Working dir", _wrapped(session["working_dir"]))
    head.add_row("Created", cell(session["created_at"]))
    head.add_row("Updated", cell(session["updated_at"]))
    head.add_row("Merkle root", cell(session["merkle_root"]))
    budget = overview["budget"]
    if budget:

        def used(value: Any, limit: Any, money: bool = False) -> str:
            show = (lambda v: f"${v:.4f}") if money else str
            return show(value) + ("" if limit is None else f" / {show(limit)}")

        head.add_row(
            "Budget",
            Text(
                f"steps {used(budget['steps_used'], budget['max_steps'])} · "
                f"revisions {used(budget['revisions_used'], budget['max_revisions'])} · "
                f"cost {used(budget['cost_used_usd'], budget['max_cost_usd'], money=True)}"
            ),
        )
    if overview["plan_revision"]:
        plan = overview["plan_revision"]
        head.add_row(
            "Plan", Text(f"{plan['revision_id']} (sequence {plan['sequence']}, {plan['status']})")
        )

    notes = []
    if any(node["degraded"] for node in overview["nodes"]):
        notes.append("* verified in degraded mode")
    if overview["removed_nodes"]:
        notes.append(f"removed by a rollback: {', '.join(overview['removed_nodes'])}")
    rows = []
    for node in overview["nodes"]:
        state = node["state"]
        if state is None:
            state = "(running)" if node["energy_points"] else "(pending)"
        verified = node["verified"]
        if verified is not None:
            verified = ("yes" if verified else "no") + ("*" if node["degraded"] else "")
        v_total = node["v_total"]
        rows.append({**node, "state": state, "verified": verified,
                     "v_total": None if v_total is None else f"{v_total:.4f}"})
    nodes = fitted_table(
        rows,
        [
            Column("node_id", "node"),
            Column("node_class", "class", drop=2),
            "state",
            Column("attempts", "tries", drop=1),
            Column("v_total", "V(x)", number=True),
            Column("verified", drop=1),
            Column("review", drop=1),
        ],
        out,
        title="Nodes",
        caption="\n".join(notes) or None,
    )

    v, r, b, llm = (
        overview["verification"],
        overview["reviews"],
        overview["branches"],
        overview["llm"],
    )
    summary = _key_values()
    summary.add_row(
        "Verification", Text(f"{v['passed']}/{v['nodes']} nodes passed, {v['degraded']} degraded")
    )
    summary.add_row(
        "Reviews",
        Text(
            f"{r['total']} total: {r['approved']} approved, {r['rejected']} rejected, "
            f"{r['corrected']} corrected"
        ),
    )
    summary.add_row(
        "Escalations",
        Text(f"{overview['escalations']} ({plural(overview['rewrites'], 'rewrite')})"),
    )
    flushed = ", ".join(b["flushed_branch_ids"]) or NONE
    summary.add_row(
        "Branches",
        Text(
            f"{b['total']} total: {b['active']} active, {b['sealed']} sealed, "
            f"{b['merged']} merged, {b['flushed']} flushed; "
            f"{plural(b['flushes'], 'flush', 'flushes')} (flushed: {flushed})"
        ),
    )
    summary.add_row(
        "LLM",
        Text(
            f"{plural(llm['requests'], 'request')}, {llm['tokens_in']:,} tokens in, "
            f"{llm['tokens_out']:,} out, {llm['latency_ms_total'] / 1000:.1f} s in total "
            f"(median {llm['median_latency_ms'] / 1000:.1f} s)"
        ),
    )
    return [head, nodes, summary]


# --- commands -------------------------------------------------------------------------------


@click.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the database, or migrate an existing one.

    The file and its parent directories are created if needed; an existing database
    (an upstream perspt-store file too) is migrated in place to the current schema.

    \b
    Example:
        perspt-store --db run.db init
    """
    path = db_path(ctx)
    existed = path.exists()
    with open_store(ctx, write=True) as store:
        version = store.schema_version
    verb = "Opened existing" if existed else "Created"
    click.echo(f"{verb} database {path} (schema version {version})")


@click.command()
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for every generated value. [default: the first seed whose "
    "demo session is not in the database yet]",
)
@click.option("--session-id", type=TEXT, default=None, help="Record under this session id.")
@document_options
@click.pass_context
def demo(ctx: click.Context, seed: int | None, session_id: str | None, fmt: Format) -> None:
    """Record a demo session and print its summary.

    The session is a realistic SRBN run: five nodes whose energies converge, an
    escalated node with its rewrite and repair, flushed speculative branches, LLM
    calls, reviews and an interface seal. It is written in one transaction. Ids and
    values follow the seed; the clock starts now.

    \b
    Example:
        perspt-store --db run.db demo --seed 7
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from ..demo import DEMO_NODES, demo_session_id, record_demo_session

    with open_store(ctx, write=True) as store:
        if seed is None:
            seed = 0
            if session_id is None:
                while store.get_session(demo_session_id(seed)) is not None:
                    seed += 1
        err = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[node]}"),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task("Recording demo session", total=len(DEMO_NODES), node="")
            recorded = record_demo_session(
                store,
                session_id,
                seed=seed,
                started_at=_dt.datetime.now(_dt.UTC).replace(microsecond=0),
                progress=lambda node: bar.update(task, advance=1, node=node),
            )
        with store.consistent_read():
            overview = session_overview(store, recorded)
    if fmt != "table":
        emit_json(overview, fmt)
        return
    click.echo(f"Recorded demo session {recorded} (seed {seed}) into {db_path(ctx)}")
    out = console()
    print_renderables(*overview_renderables(overview, out), out=out)


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    callback=fits_bigint,
    default=20,
    show_default=True,
    help="How many sessions to list.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    callback=fits_bigint,
    default=0,
    show_default=True,
    help="How many of the newest sessions to skip.",
)
@output_options
@click.pass_context
def sessions(ctx: click.Context, limit: int, offset: int, fmt: Format) -> None:
    """List sessions, newest first.

    \b
    Example:
        perspt-store sessions --limit 5 --offset 5 --json
    """
    with open_store(ctx) as store:
        total = store.count_sessions()
        rows = [row_dict(s) for s in store.list_sessions_paginated(limit, offset)]
    if rows:
        caption = f"sessions {offset + 1}-{offset + len(rows)} of {total}"
    else:
        caption = f"no sessions at offset {offset} ({total} in total)"
    emit_rows(
        rows,
        fmt,
        columns=[
            "session_id",
            "status",
            Column("task", drop=1),  # on a narrow terminal the rest goes first
            Column("created_at", drop=2),
            Column("updated_at", drop=3),
            Column("merkle_root", drop=3),
        ],
        caption=caption,
    )


@click.command()
@session_argument
@document_options
@click.pass_context
def show(ctx: click.Context, session_id: str, fmt: Format) -> None:
    """Summarise one session.

    Status, budget and plan; every node with its latest state and energy, verification
    and review; then verification, review, escalation, branch and LLM totals.

    With --json (or --nl) the summary is one JSON object.

    \b
    Example:
        perspt-store show demo-d82c07cd
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        overview = session_overview(store, session_id)
    if fmt == "table":
        out = console()
        print_renderables(*overview_renderables(overview, out), out=out)
    else:
        emit_json(overview, fmt)


@click.command()
@click.argument("query", type=TEXT)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    type=TEXT,
    metavar="VALUE",
    help="A value for the next ? placeholder (as text); repeatable.",
)
@output_options
@click.pass_context
def sql(ctx: click.Context, query: str, params: tuple[str, ...], fmt: Format) -> None:
    """Run a SQL query and print its rows.

    The database is opened read-only, so statements that write fail.

    \b
    Example:
        perspt-store sql "SELECT node_id, max(v_total) FROM energy_history GROUP BY 1"
        perspt-store sql "SELECT * FROM sessions WHERE status = ?" -p COMPLETED --nl
    """
    with open_store(ctx) as store:
        relation = store.sql(query, list(params) if params else None)
        if relation is None:  # a statement without a result
            columns: list[str] = []
            records: list[tuple[Any, ...]] = []
        else:
            columns = list(relation.columns)
            records = relation.fetchall()
    rows = [dict(zip(columns, record, strict=True)) for record in records]
    emit_rows(rows, fmt, columns=columns)


@click.command()
@output_options
@click.pass_context
def tables(ctx: click.Context, fmt: Format) -> None:
    """List the tables and their row counts.

    \b
    Example:
        perspt-store tables --json
    """
    with open_store(ctx) as store:
        counts = overview.table_counts(store)  # None: a table an older file does not have
        version = store.schema_version
    rows = [{"table": table, "rows": count} for table, count in counts.items()]
    emit_rows(rows, fmt, caption=f"schema version {version}")
