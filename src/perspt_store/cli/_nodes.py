"""Commands about what a session's nodes did: ``nodes``, ``energy``, ``llm``, ``timeline`` and
``branches``."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .. import plots
from .._shaping import llm_totals, merge_timeline, row_dict
from ..commitlog import NodeCommit
from ..rows import CorrectionAttemptRow, NodeStateRecord
from ._common import (
    TEXT,
    open_store,
    output_options,
    plot_option,
    require_node,
    require_session,
    save_plot,
    session_argument,
)
from ._output import Column, ColumnSpec, Format, emit_rows


def commit_seqs(states: Sequence[NodeStateRecord], log: Sequence[NodeCommit]) -> list[int | None]:
    """The commit ``seq`` of each of a session's node-state rows (all of them, in insertion
    order): every row is one commit, appended in the same order. None for every row if the
    two disagree (a log edited behind the store's back; ``verify`` says how)."""
    if len(states) == len(log) and all(
        s.node_id == c.node_id for s, c in zip(states, log, strict=True)
    ):
        return [c.seq for c in log]
    return [None] * len(states)


@click.command()
@session_argument
@click.option("--history", is_flag=True, help="Every snapshot, not just the latest per node.")
@output_options
@click.pass_context
def nodes(ctx: click.Context, session_id: str, history: bool, fmt: Format) -> None:
    """List a session's node snapshots.

    The latest snapshot of each node, in the order they were committed; with --history,
    every snapshot with its commit seq (see `log`) and the time it was recorded.

    \b
    Example:
        perspt-store nodes SESSION --history --nl
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        if history:
            states = store.get_node_states(session_id)
            seqs = commit_seqs(states, store.get_commit_log(session_id))
            rows = [{"seq": seq, **row_dict(s)} for seq, s in zip(seqs, states, strict=True)]
        else:
            rows = [row_dict(s) for s in store.get_latest_node_states(session_id)]
    emit_rows(
        rows,
        fmt,
        columns=[
            *(["seq"] if history else []),
            "node_id",
            Column("node_class", "class", drop=1),
            "state",
            "v_total",
            ("attempt_count", "tries"),
            # --history is about when: its time stays
            Column("created_at", "recorded", drop=0 if history else 1),
            Column("merkle_hash", drop=1),
            Column("goal", drop=1),
        ],
    )


@click.command()
@session_argument
@click.option(
    "--node", "node_id", metavar="NODE", type=TEXT, help="Only this node's measurements."
)
@plot_option("the energy convergence per node")
@output_options
@click.pass_context
def energy(
    ctx: click.Context, session_id: str, node_id: str | None, plot_file: Path | None, fmt: Format
) -> None:
    """List a session's energy measurements.

    V(x) and its components (v_syn, v_str, v_log, v_boot, v_sheaf), in the order
    recorded. --plot also draws them over attempts, one panel per node.

    \b
    Example:
        perspt-store energy SESSION --node token_bucket
        perspt-store energy SESSION --plot energy.png
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        require_node(store, session_id, node_id)
        records = (
            store.get_energy_history(session_id, node_id)
            if node_id
            else store.get_session_energy_history(session_id)
        )
        save_plot(
            lambda: plots.plot_energy(store, session_id, node_id), plot_file, "the energy plot"
        )
    emit_rows(
        [row_dict(e) for e in records],
        fmt,
        columns=[
            Column("id", drop=1),
            "node_id",
            "v_syn",
            "v_str",
            "v_log",
            "v_boot",
            "v_sheaf",
            "v_total",
            Column("timestamp", drop=1),
        ],
    )


@click.command()
@session_argument
@plot_option("tokens and latency per request")
@output_options
@click.pass_context
def llm(ctx: click.Context, session_id: str, plot_file: Path | None, fmt: Format) -> None:
    """List a session's LLM requests, with totals.

    Usage-only rows have an empty prompt and response. Totals count the provider's
    token numbers, or ceil(len(text) / 4) for a row without one. --plot also draws
    tokens and latency per request over time.

    \b
    Example:
        perspt-store llm SESSION --json
        perspt-store llm SESSION --plot llm.png
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        requests = store.get_llm_requests(session_id)
        save_plot(lambda: plots.plot_llm(store, session_id), plot_file, "the LLM plot")
    rows = []
    for request in requests:
        row = row_dict(request)
        if fmt == "table":
            row["logged"] = (
                f"{len(request.prompt)}/{len(request.response)} chars"
                if request.prompt or request.response
                else "usage only"
            )
        rows.append(row)
    t = llm_totals(requests)
    emit_rows(
        rows,
        fmt,
        columns=[
            Column("id", drop=1),
            "timestamp",
            "node_id",
            "model",
            ("tokens_in", "in"),
            ("tokens_out", "out"),
            ("latency_ms", "ms"),
            Column("logged", "prompt/response", drop=1),
        ],
        caption=f"{t['requests']} requests · {t['tokens_in']:,} tokens in · "
        f"{t['tokens_out']:,} tokens out · {t['latency_ms_total']:,} ms in total · "
        f"median {t['median_latency_ms']:,} ms",
    )


@click.command()
@session_argument
@click.option("--node", "node_id", metavar="NODE", type=TEXT, help="Only this node's timeline.")
@output_options
@click.pass_context
def timeline(ctx: click.Context, session_id: str, node_id: str | None, fmt: Format) -> None:
    """List a session's SRBN steps and correction attempts.

    Steps come in the order recorded; a correction attempt follows the last step of its
    node with the same or a lower attempt number. JSON rows carry "kind": "step" or
    "correction" and the row's own fields. The table's time is when a step was recorded,
    or the time a correction attempt was made.

    \b
    Example:
        perspt-store timeline SESSION --node client_middleware
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        require_node(store, session_id, node_id)
        if node_id:
            steps = store.get_step_timeline(session_id, node_id)
            corrections = store.get_correction_attempts(session_id, node_id)
        else:
            steps = store.get_session_steps(session_id)
            corrections = store.get_session_correction_attempts(session_id)
    rows: list[dict[str, Any]] = []
    for record in merge_timeline(steps, corrections):
        is_correction = isinstance(record, CorrectionAttemptRow)
        row = {"kind": "correction" if is_correction else "step", **row_dict(record)}
        if fmt == "table":
            if isinstance(record, CorrectionAttemptRow):
                row["time"] = _dt.datetime.fromtimestamp(record.created_at, _dt.UTC)
                row["step"] = "correction"
                row["attempt_count"] = record.attempt
                row["outcome"] = "accepted" if record.accepted else "rejected"
                row["detail"] = record.rejection_reason
            else:
                row["time"] = record.created_at
                row["detail"] = record.energy_json
        rows.append(row)
    emit_rows(
        rows,
        fmt,
        columns=[
            "time",
            "node_id",
            "step",
            ("attempt_count", "attempt"),
            "outcome",
            Column("parse_state", drop=1),
            Column("retry_classification", "retry", drop=1),
            Column("duration_ms", "ms", drop=1),
            Column("detail", drop=1),
        ],
    )


@click.command()
@session_argument
@click.option("--flushes", is_flag=True, help="List the flush decisions instead.")
@output_options
@click.pass_context
def branches(ctx: click.Context, session_id: str, flushes: bool, fmt: Format) -> None:
    """List a session's provisional branches.

    The table view adds the session's branch flushes; --flushes lists only those.

    \b
    Example:
        perspt-store branches SESSION
        perspt-store branches SESSION --flushes --json
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        branch_rows = [row_dict(b) for b in store.get_provisional_branches(session_id)]
        flush_rows = [row_dict(f) for f in store.get_branch_flushes(session_id)]
    flush_columns: list[ColumnSpec] = [
        "flush_id",
        "parent_node_id",
        "flushed_branch_ids",
        Column("requeue_node_ids", drop=1),
        Column("reason", drop=1),
        Column("created_at", drop=1),
    ]
    if flushes:
        emit_rows(flush_rows, fmt, columns=flush_columns)
        return
    emit_rows(
        branch_rows,
        fmt,
        columns=[
            "branch_id",
            "node_id",
            "parent_node_id",
            "state",
            Column("parent_seal_hash", drop=1),
            Column("sandbox_dir", drop=1),
            Column("updated_at", drop=1),
        ],
        title="Branches" if fmt == "table" else None,
    )
    if fmt == "table" and flush_rows:
        emit_rows(flush_rows, fmt, columns=flush_columns, title="Flushes")
