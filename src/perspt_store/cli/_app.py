"""The click application behind ``perspt-store`` (needs the ``cli`` extra).

Import it through :mod:`perspt_store.cli`, which falls back to an install hint when click or
rich is missing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import duckdb
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .. import __version__, _engine, plots
from ..errors import StoreError
from ..rows import (
    CorrectionAttemptRow,
)
from ..schema import TABLES
from ..store import SessionStore
from ..store.commits import Checkpoint, NodeCommit
from ._render import (
    closest,
    graph_nodes,
    jsonable,
    llm_totals,
    merge_timeline,
    one_line,
    render_dot,
    render_mermaid,
    row_dict,
    session_overview,
)

_NONE = "—"
_TEXT_LIMIT = 72


_SHOWN_ID = 60
"""The longest id an error message quotes in full."""


class _Group(click.Group):
    """The root group: commands listed in the order defined; any StoreError (or an OS
    error on some file) in a command becomes ``Error: <message>`` and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            raise click.ClickException(one_line(str(exc))) from exc
        except duckdb.Error as exc:  # only from relations that `sql` fetches
            raise click.ClickException(one_line(str(exc))) from exc
        except OSError as exc:  # a file a command reads or writes: never a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{_engine.os_reason(exc)}") from exc


if TYPE_CHECKING:  # click's ParamType is generic from 8.2 on; 8.1 is supported too
    _TextParamType = click.ParamType[str, Any]
else:
    _TextParamType = click.ParamType


class Utf8Text(_TextParamType):
    """Text that is valid UTF-8: ids, queries and values go to the database as UTF-8, so
    a lone surrogate (what Python makes of bytes in argv that are not UTF-8) is a usage
    error rather than a conversion failure deep in DuckDB."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            self.fail(
                f"{shown(text)} is not valid UTF-8 text (character {exc.start + 1} is a byte "
                "that decodes to no character)",
                param,
                ctx,
            )
        return text


TEXT = Utf8Text()


class OutputFile(click.Path):
    """A file a command writes: its directory must exist (a usage error otherwise)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, writable=True, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = Path(os.fsdecode(super().convert(value, param, ctx)))
        parent = path.parent
        try:
            blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
        except OSError as exc:
            self.fail(f"cannot look at {parent}: {_engine.os_reason(exc)}", param, ctx)
        if blocker is not None and not blocker.is_dir():
            self.fail(f"cannot write {path}: {blocker} is not a directory", param, ctx)
        if blocker != parent:
            self.fail(f"cannot write {path}: directory {parent} does not exist", param, ctx)
        return path


def _fits_bigint(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """An option value the database can take as a BIGINT."""
    if value >= 2**63:
        raise click.BadParameter(f"{value} is too large (at most {2**63 - 1})", ctx, param)
    return value


def shown(text: str) -> str:
    """``text`` quoted for a message, shortened to :data:`_SHOWN_ID` characters."""
    return repr(text) if len(text) <= _SHOWN_ID else f"{text[:_SHOWN_ID]!r}… ({len(text)} chars)"


def db_path(ctx: click.Context) -> Path:
    """The database the user asked for: ``--db``, ``$PERSPT_STORE_DB`` or the default."""
    path: Path | None = ctx.find_root().params.get("db")
    return path if path is not None else SessionStore.default_db_path()


@contextlib.contextmanager
def open_store(ctx: click.Context, *, write: bool = False) -> Iterator[SessionStore]:
    """Open the database for one command, closed afterwards.

    Read-only unless ``write``: a read never creates, migrates or changes the file, and
    the whole command reads one snapshot (its tables never disagree with each other).
    """
    path = db_path(ctx)
    # A directory, a path under a file or a file that is no DuckDB database: one line.
    if not _engine.check_database_file(path, create=write) and not write:
        raise click.ClickException(
            f"no database at {path}; create one with `perspt-store init`, "
            "or record a sample session with `perspt-store demo`"
        )
    store = SessionStore.open(path) if write else SessionStore.open_read_only(path)
    with store:
        if store.is_snapshot and store.staleness is not None:
            click.echo(
                f"note: another process is writing {path}; reading its snapshot from "
                f"{store.staleness:.1f} s ago",
                err=True,
            )
        if write:
            yield store
        else:
            with store.consistent_read():
                yield store


def require_session(store: SessionStore, session_id: str) -> None:
    """Fail (exit 1) unless the session exists, suggesting the closest ids."""
    if store.get_session(session_id) is not None:
        return
    known = [
        sid
        for (sid,) in store.sql(
            "SELECT session_id FROM sessions ORDER BY created_at DESC, session_id"
        ).fetchall()
    ]
    where = f" in {store.path}" if store.path else ""
    hint = closest(session_id, known)
    if hint:
        suggestion = f"did you mean {' or '.join(hint)}?"
    elif known:
        suggestion = "list them with `perspt-store sessions`"
    else:
        suggestion = "the database has no sessions yet"
    raise click.ClickException(f"no session {shown(session_id)}{where}; {suggestion}")


def require_node(store: SessionStore, session_id: str, node_id: str | None) -> None:
    """Fail (exit 1) unless ``node_id`` (when given) appears in the session."""
    if node_id is None:
        return
    known = graph_nodes(
        store.get_latest_node_states(session_id), store.get_task_graph_edges(session_id)
    )
    known += [e.node_id for e in store.get_session_energy_history(session_id)]
    known += [s.node_id for s in store.get_session_steps(session_id)]
    if node_id in known:
        return
    hint = closest(node_id, known)
    suggestion = f"; did you mean {' or '.join(hint)}?" if hint else ""
    raise click.ClickException(
        f"no node {shown(node_id)} in session {shown(session_id)}{suggestion}"
    )


def _format_options(
    json_help: str, nl_help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, as_json: bool, as_nl: bool, **kwargs: Any) -> Any:
            if as_json and as_nl:
                raise click.UsageError("--json and --nl cannot be used together")
            fmt = "json" if as_json else "nl" if as_nl else "table"
            return command(*args, fmt=fmt, **kwargs)

        wrapper = click.option("--nl", "as_nl", is_flag=True, help=nl_help)(wrapper)
        wrapper = click.option("--json", "as_json", is_flag=True, help=json_help)(wrapper)
        return wrapper

    return decorate


output_options = _format_options(
    "Output a JSON array (bytes as hex, times as ISO-8601).",
    "Output newline-delimited JSON: one object per line.",
)
"""Add ``--json`` and ``--nl`` to a listing and pass the chosen format as ``fmt``
(``"table"``, ``"json"`` or ``"nl"``) for :func:`emit_rows`."""

document_options = _format_options(
    "Output the summary as one JSON object (bytes as hex, times as ISO-8601).",
    "Output the summary as one line of JSON.",
)
"""Like :func:`output_options`, for commands that print one document (:func:`emit_json`)."""


def console() -> Console:
    """A console on stdout (plain text, no colour, when stdout is not a terminal)."""
    return Console(highlight=False)


def print_renderables(*renderables: Any) -> None:
    """Print rich renderables on stdout. On a terminal they fit its width; piped, they
    keep their natural width (rich would otherwise squeeze them into 80 columns),
    unless ``$COLUMNS`` says otherwise."""
    out = console()
    if out.is_terminal:
        for renderable in renderables:
            out.print(renderable)
        return
    if "COLUMNS" not in os.environ:
        unbounded = out.options.update(max_width=10_000)
        out.width = max(
            [out.width, *(Measurement.get(out, unbounded, r).maximum for r in renderables)]
        )
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    # rich pads every cell to its column's width; trailing blanks only get in the way
    # of grep, diff and copy-paste.
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def cell(value: Any) -> Text:
    """One table cell: never parsed as rich markup, long text shortened."""
    if value is None:
        return Text(_NONE, style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).hex()
        return Text(text if len(text) <= 16 else text[:16] + "…")
    if isinstance(value, _dt.datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    return Text(text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…")


def emit_json(document: Any, fmt: str) -> None:
    """Print one JSON document: indented for ``json``, one compact line for ``nl``."""
    if fmt == "nl":
        click.echo(json.dumps(jsonable(document), ensure_ascii=False))
    else:
        click.echo(json.dumps(jsonable(document), ensure_ascii=False, indent=2))


def emit_rows(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    *,
    columns: Sequence[str | tuple[str, str]] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Print rows as a JSON array (``json``), JSON lines (``nl``) or a table.

    Args:
        rows: The rows, all keys included in JSON output.
        fmt: ``"table"``, ``"json"`` or ``"nl"``.
        columns: The keys a table shows, optionally as ``(key, header)``; all by default.
        title: The table's title.
        caption: A line under the table (totals, paging).
    """
    if fmt == "json":
        click.echo(json.dumps([jsonable(r) for r in rows], ensure_ascii=False, indent=2))
        return
    if fmt == "nl":
        for row in rows:
            click.echo(json.dumps(jsonable(row), ensure_ascii=False))
        return
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for key, column in zip(keys, columns, strict=True):
        values = [row.get(key) for row in rows if row.get(key) is not None]
        numeric = bool(values) and all(
            isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool) for v in values
        )
        table.add_column(
            column if isinstance(column, str) else column[1], justify="right" if numeric else "left"
        )
    for row in rows:
        table.add_row(*(cell(row.get(k)) for k in keys))
    print_renderables(table)


def plot_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--plot FILE.png``: also draw ``what`` to an image file (passed as ``plot_file``)."""
    return click.option(
        "--plot",
        "plot_file",
        type=OutputFile(),
        metavar="FILE.png",
        help=f"Also draw {what} to this image file (.png, .svg or .pdf; needs the plot "
        "extra: pip install 'perspt-store[plot]').",
    )


def save_plot(draw: Callable[[], Any], path: Path | None, what: str) -> None:
    """Draw a figure with ``draw`` and write it to ``path`` (nothing if None); one line on
    stderr says where. A missing matplotlib or an unwritable file is a one-line error."""
    if path is None:
        return
    try:
        figure = draw()
    except ModuleNotFoundError as exc:  # the plot extra is not installed
        raise click.ClickException(str(exc)) from exc
    try:
        figure.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot write {what} to {path}: {exc}") from exc
    click.echo(f"Wrote {what} to {path}", err=True)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="perspt-store")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PERSPT_STORE_DB",
    show_envvar=True,
    help="The session database file. Default: <platform data dir>/perspt/perspt.db.",
)
def cli(db: Path | None) -> None:
    """Inspect perspt-store session databases: sessions, nodes, energy, LLM calls,
    branches and the task graph.

    Commands that only read open the database read-only and never change it.
    Listings print a table, or JSON with --json / --nl.

    \b
    Example:
        perspt-store --db run.db demo
        perspt-store --db run.db sessions
        perspt-store --db run.db show SESSION
    """


# --- write commands -----------------------------------------------------------------


@cli.command()
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


@cli.command()
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
def demo(ctx: click.Context, seed: int | None, session_id: str | None, fmt: str) -> None:
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
        overview = session_overview(store, recorded)
    if fmt != "table":
        emit_json(overview, fmt)
        return
    click.echo(f"Recorded demo session {recorded} (seed {seed}) into {db_path(ctx)}")
    print_overview(overview)


# --- read-only commands -------------------------------------------------------------


@cli.command()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    callback=_fits_bigint,
    default=20,
    show_default=True,
    help="How many sessions to list.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    callback=_fits_bigint,
    default=0,
    show_default=True,
    help="How many of the newest sessions to skip.",
)
@output_options
@click.pass_context
def sessions(ctx: click.Context, limit: int, offset: int, fmt: str) -> None:
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
        columns=["session_id", "status", "task", "created_at", "updated_at", "merkle_root"],
        caption=caption,
    )


def print_overview(overview: dict[str, Any]) -> None:
    session = overview["session"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Session", cell(session["session_id"]))
    head.add_row("Status", cell(session["status"]))
    head.add_row("Task", cell(session["task"]))
    head.add_row("Working dir", cell(session["working_dir"]))
    head.add_row("Created", Text(f"{cell(session['created_at'])} UTC"))
    head.add_row("Updated", Text(f"{cell(session['updated_at'])} UTC"))
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

    nodes = Table(title="Nodes", title_justify="left")
    longest = max((len(n["node_id"]) for n in overview["nodes"]), default=4)
    nodes.add_column("node", min_width=min(longest, 32))
    for header in ("class", "state", "attempts", "V(x)", "verified", "review"):
        nodes.add_column(header, justify="right" if header in ("attempts", "V(x)") else "left")
    for node in overview["nodes"]:
        state = node["state"]
        if state is None:
            state_cell = Text("(running)" if node["energy_points"] else "(pending)", style="dim")
        else:
            state_cell = cell(state)
        verified = cell(node["verified"])
        if node["degraded"]:
            verified.append(" (degraded)", style="yellow")
        nodes.add_row(
            cell(node["node_id"]),
            cell(node["node_class"]),
            state_cell,
            cell(node["attempts"]),
            cell(None if node["v_total"] is None else f"{node['v_total']:.4f}"),
            verified,
            cell(node["review"]),
        )

    v, r, b, llm = (
        overview["verification"],
        overview["reviews"],
        overview["branches"],
        overview["llm"],
    )
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
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
    flushed = ", ".join(b["flushed_branch_ids"]) or _NONE
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
    print_renderables(head, nodes, summary)


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@document_options
@click.pass_context
def show(ctx: click.Context, session_id: str, fmt: str) -> None:
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
        print_overview(overview)
    else:
        emit_json(overview, fmt)


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option("--history", is_flag=True, help="Every snapshot, not just the latest per node.")
@output_options
@click.pass_context
def nodes(ctx: click.Context, session_id: str, history: bool, fmt: str) -> None:
    """List a session's node snapshots.

    The latest snapshot of each node, in the order they were committed; with --history,
    every snapshot.

    \b
    Example:
        perspt-store nodes SESSION --history --nl
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        states = (
            store.get_node_states(session_id)
            if history
            else store.get_latest_node_states(session_id)
        )
    emit_rows(
        [row_dict(s) for s in states],
        fmt,
        columns=[
            "node_id",
            "node_class",
            "state",
            "v_total",
            "attempt_count",
            "committed_at",
            "merkle_hash",
            "goal",
        ],
    )


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option(
    "--node", "node_id", metavar="NODE", type=TEXT, help="Only this node's measurements."
)
@plot_option("the energy convergence per node")
@output_options
@click.pass_context
def energy(
    ctx: click.Context, session_id: str, node_id: str | None, plot_file: Path | None, fmt: str
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
            "id",
            "node_id",
            "v_syn",
            "v_str",
            "v_log",
            "v_boot",
            "v_sheaf",
            "v_total",
            "timestamp",
        ],
    )


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@plot_option("tokens and latency per request")
@output_options
@click.pass_context
def llm(ctx: click.Context, session_id: str, plot_file: Path | None, fmt: str) -> None:
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
            "id",
            "timestamp",
            "node_id",
            "model",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            ("logged", "prompt/response"),
        ],
        caption=f"{t['requests']} requests · {t['tokens_in']:,} tokens in · "
        f"{t['tokens_out']:,} tokens out · {t['latency_ms_total']:,} ms in total · "
        f"median {t['median_latency_ms']:,} ms",
    )


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option("--node", "node_id", metavar="NODE", type=TEXT, help="Only this node's timeline.")
@output_options
@click.pass_context
def timeline(ctx: click.Context, session_id: str, node_id: str | None, fmt: str) -> None:
    """List a session's SRBN steps and correction attempts.

    Steps come in the order recorded; a correction attempt follows the last step of its
    node with the same or a lower attempt number. JSON rows carry "kind": "step" or
    "correction" and the row's own fields.

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
                row["step"] = "correction"
                row["attempt_count"] = record.attempt
                row["outcome"] = "accepted" if record.accepted else "rejected"
                row["detail"] = record.rejection_reason
            else:
                row["detail"] = record.energy_json
        rows.append(row)
    emit_rows(
        rows,
        fmt,
        columns=[
            "node_id",
            "step",
            ("attempt_count", "attempt"),
            "outcome",
            "parse_state",
            ("retry_classification", "retry"),
            "duration_ms",
            "detail",
        ],
    )


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option("--flushes", is_flag=True, help="List the flush decisions instead.")
@output_options
@click.pass_context
def branches(ctx: click.Context, session_id: str, flushes: bool, fmt: str) -> None:
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
    flush_columns = [
        "flush_id",
        "parent_node_id",
        "flushed_branch_ids",
        "requeue_node_ids",
        "reason",
        "created_at",
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
            "parent_seal_hash",
            "sandbox_dir",
            "updated_at",
        ],
        title="Branches" if fmt == "table" else None,
    )
    if fmt == "table" and flush_rows:
        emit_rows(flush_rows, fmt, columns=flush_columns, title="Flushes")


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option(
    "--format",
    "graph_format",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="The text format.",
)
@plot_option("the graph, nodes coloured by state,")
@click.pass_context
def graph(
    ctx: click.Context, session_id: str, graph_format: str, plot_file: Path | None
) -> None:
    """Print a session's task graph as Mermaid or DOT.

    Nodes are labelled with their class, latest state and energy; interface_boundary
    edges are dashed. --plot also draws it as an image, nodes coloured by their latest
    state.

    \b
    Example:
        perspt-store graph SESSION > graph.mmd
        perspt-store graph SESSION --format dot | dot -Tsvg > graph.svg
        perspt-store graph SESSION --plot graph.png
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        states = store.get_latest_node_states(session_id)
        edges = store.get_task_graph_edges(session_id)
        save_plot(lambda: plots.plot_task_graph(store, session_id), plot_file, "the task graph")
    if graph_format == "dot":
        click.echo(render_dot(states, edges, name=session_id), nl=False)
    else:
        click.echo(render_mermaid(states, edges), nl=False)


@cli.command()
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
def sql(ctx: click.Context, query: str, params: tuple[str, ...], fmt: str) -> None:
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


@cli.command()
@output_options
@click.pass_context
def tables(ctx: click.Context, fmt: str) -> None:
    """List the tables and their row counts.

    \b
    Example:
        perspt-store tables --json
    """
    rows = []
    with open_store(ctx) as store:
        for table in TABLES:
            try:
                count = store.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            except StoreError:  # a table an older (upstream) file does not have
                count = None
            rows.append({"table": table, "rows": count})
        version = store.schema_version
    emit_rows(rows, fmt, caption=f"schema version {version}")


# --- the Merkle commit log ----------------------------------------------------------------


def read_key(path: Path | None) -> bytes | None:
    """A 32-byte checkpoint key from a file holding it raw or as 64 hex digits."""
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {_engine.os_reason(exc)}", param_hint="'--key-file'"
        ) from exc
    text = raw.strip()
    if len(text) == 64 and all(chr(c) in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode())
    if len(raw) == 32:
        return raw
    raise click.BadParameter(
        f"{path} must hold the key as 32 raw bytes or 64 hex digits", param_hint="'--key-file'"
    )


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in ``path``; a file that is unreadable or holds no valid checkpoint is a
    usage error (exit 2), so exit 1 from ``verify`` always means the log failed."""
    try:
        return Checkpoint.from_json(path.read_bytes())
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {_engine.os_reason(exc)}", param_hint="'--against'"
        ) from exc
    except ValueError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="'--against'") from exc


def commit_dict(commit: NodeCommit) -> dict[str, Any]:
    return {
        "seq": commit.seq,
        "node_id": commit.node_id,
        "kind": commit.kind,
        "leaf_hash": commit.leaf_hash,
        "state_root": commit.state_root,
        "log_root": commit.log_root,
        "log_size": commit.log_size,
    }


key_file_option = click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file with the 32-byte checkpoint key (raw, or 64 hex digits).",
)


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint file (from `perspt-store checkpoint`) the log must still extend.",
)
@key_file_option
@document_options
@click.pass_context
def verify(
    ctx: click.Context, session_id: str, against: Path | None, key_file: Path | None, fmt: str
) -> None:
    """Recompute a session's Merkle log from its rows; exit 1 if anything differs.

    Reports node states edited, deleted, inserted or reordered behind the store's back,
    forged log entries, a merkle_root that no longer matches and, with --against, a log
    that no longer extends a checkpoint you kept.

    \b
    Example:
        perspt-store verify SESSION --against checkpoint.json --key-file key.hex
    """
    key = read_key(key_file)
    checkpoint = None if against is None else read_checkpoint(against)
    with open_store(ctx) as store:
        require_session(store, session_id)
        report = store.verify_session(session_id, against=checkpoint, key=key)
    if fmt != "table":
        emit_json({"ok": report.ok, **report.model_dump()}, fmt)
    else:
        verdict = "OK" if report.ok else "FAILED"
        click.echo(
            f"{verdict}: session {session_id}: {plural(report.log_size, 'commit')}, "
            f"log root {report.log_root.hex()}, state root {report.state_root.hex()}"
        )
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.problems:
            emit_rows(
                [p.model_dump() for p in report.problems],
                "table",
                columns=["kind", "seq", "node_id", "detail"],
                title="Problems",
            )
    if not report.ok:
        ctx.exit(1)


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@output_options
@click.pass_context
def log(ctx: click.Context, session_id: str, fmt: str) -> None:
    """List a session's Merkle commits: seq, node, kind and the roots after each.

    \b
    Example:
        perspt-store log SESSION --nl
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        commits = store.get_commit_log(session_id)
    emit_rows(
        [commit_dict(c) for c in commits],
        fmt,
        columns=["seq", "node_id", "kind", "leaf_hash", "state_root", "log_root"],
        title=f"Commit log of {session_id}",
        caption=plural(len(commits), "commit"),
    )


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@key_file_option
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="Write the checkpoint to this file instead of standard output.",
)
@click.pass_context
def checkpoint(
    ctx: click.Context, session_id: str, key_file: Path | None, output: Path | None
) -> None:
    """Print a JSON checkpoint of a session's log (MAC'd with --key-file); keep it safe.

    \b
    Example:
        perspt-store checkpoint SESSION --key-file key.hex -o checkpoint.json
    """
    key = read_key(key_file)
    with open_store(ctx) as store:
        require_session(store, session_id)
        document = store.checkpoint(session_id, key=key).to_json()
    if output is None:
        click.echo(document)
        return
    try:
        output.write_text(document + "\n")
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the checkpoint to {output}: {_engine.os_reason(exc)}"
        ) from exc


@cli.command()
@click.argument("session_id", metavar="SESSION", type=TEXT)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="SEQ|ROOT_HEX",
    help="A commit seq (0-based), or a state root as 64 hex digits.",
)
@document_options
@click.pass_context
def rollback(ctx: click.Context, session_id: str, target: str, fmt: str) -> None:
    """Restore a session's node states as of a commit, by appending commits.

    Nothing is deleted: the rollback is recorded in the log as restore and remove commits.

    \b
    Example:
        perspt-store rollback SESSION --to 12
    """
    if re.fullmatch(r"[0-9]+", target):
        options: dict[str, Any] = {"to_seq": int(target)}
    elif re.fullmatch(r"[0-9a-fA-F]{64}", target):
        options = {"to_root": bytes.fromhex(target)}
    else:
        raise click.BadParameter(
            "give a commit seq or a 64-hex-digit state root", param_hint="--to"
        )
    with open_store(ctx, write=True) as store:
        require_session(store, session_id)
        head = store.rollback(session_id, **options)
    if fmt != "table":
        emit_json(commit_dict(head), fmt)
    else:
        click.echo(
            f"session {session_id} is at commit {head.seq}; state root {head.state_root.hex()}"
        )


# --- beyond one machine: the Parquet lake --------------------------------------------------


@cli.command()
@click.option(
    "--parquet",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write a Parquet lake to this directory (created if needed).",
)
@click.option(
    "--delta",
    "delta_uri",
    metavar="URI",
    help="Write into a Delta lake at this directory or URL (needs the 'lake' extra); "
    "several stores may export into one at the same time.",
)
@click.argument("session_ids", metavar="[SESSION]...", nargs=-1)
@output_options
@click.pass_context
def export(
    ctx: click.Context, directory: Path | None, delta_uri: str | None,
    session_ids: tuple[str, ...], fmt: str,
) -> None:
    """Export sessions as a Parquet lake, hive-partitioned by session, or into a Delta lake.

    Every table is written with DuckDB's COPY to DIR/<table>/session_id=<id>/, beside a
    manifest.json with the schema version and each session's Merkle checkpoint, so any
    engine that reads Parquet can query many machines' sessions together. Exporting a
    session again replaces its files, but only with a log that extends the lake's copy:
    a different history under the same id is a conflict, the lake's copy is left alone
    and the command exits 1. Several exporters may write into one DIR at the same time.
    Without SESSION, every session is exported.

    \b
    Example:
        perspt-store export --parquet lake/machine=$(hostname)
        perspt-store export --parquet lake SESSION1 SESSION2
        perspt-store export --delta /shared/lake
    """
    if (directory is None) == (delta_uri is None):
        raise click.UsageError("give one of --parquet DIR or --delta URI")
    with open_store(ctx) as store:
        for session_id in session_ids:
            require_session(store, session_id)
        from ..lake import export_parquet  # imported when used: listings start quicker

        if directory is not None:
            report = export_parquet(store, directory, session_ids or None)
        else:
            from ..delta import export_delta

            report = export_delta(store, str(delta_uri), session_ids or None)
    sessions = report.manifest["sessions"]
    rows = [
        {
            "session_id": sid,
            "commits": sessions[sid]["checkpoint"]["size"],
            "rows": sum(sessions[sid]["rows"].values()),
            "log_root": bytes.fromhex(sessions[sid]["checkpoint"]["log_root"]),
            "state_root": bytes.fromhex(sessions[sid]["checkpoint"]["state_root"]),
        }
        for sid in report.session_ids
    ]
    conflicts = f"; {plural(len(report.conflicts), 'conflict')}" if report.conflicts else ""
    if unchanged := getattr(report, "unchanged", []):  # a Delta lake already held them
        conflicts += f"; {len(unchanged)} unchanged (not written)"
    emit_rows(
        rows,
        fmt,
        columns=["session_id", "commits", "rows", "log_root"],
        caption=f"exported {plural(len(rows), 'session')} to {delta_uri or directory}"
        f"{conflicts}",
    )
    if not report.ok:
        for conflict in report.conflicts:
            click.echo(f"conflict: {conflict.session_id}: {conflict.detail}", err=True)
        ctx.exit(1)


@cli.command(name="import")
@click.argument("source", metavar="SOURCE", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--session",
    "session_ids",
    multiple=True,
    type=TEXT,
    metavar="SESSION",
    help="Only this session of SOURCE; repeatable.",
)
@output_options
@click.pass_context
def import_(ctx: click.Context, source: Path, session_ids: tuple[str, ...], fmt: str) -> None:
    """Merge a Parquet lake (or another database file) into the database.

    Each session is imported in one transaction with new ids, in insertion order, and
    verified against the lake's checkpoint before it commits. A session already in the
    database is skipped if identical; if its history differs it is a conflict: nothing
    of it is written and the command exits 1. The database is created if needed.

    \b
    Example:
        perspt-store --db central.db import lake/machine=a
        perspt-store --db central.db import other.db --session SESSION
    """
    with open_store(ctx, write=True) as store:
        from ..lake import import_lake

        report = import_lake(store, source, session_ids or None)
    rows = [
        {
            "session_id": s.session_id,
            "status": s.status,
            "rows": sum(s.rows.values()),
            "detail": s.detail,
            "rows_by_table": s.rows,
        }
        for s in report.sessions
    ]
    counts = ", ".join(
        f"{n} {status}"
        for status in ("imported", "skipped", "conflict", "invalid")
        if (n := sum(s.status == status for s in report.sessions))
    )
    emit_rows(
        rows,
        fmt,
        columns=["session_id", "status", "rows", "detail"],
        caption=f"{counts or 'no sessions'} from {source}",
    )
    if not report.ok:
        if fmt == "table":  # the table cuts long details: give them in full
            for entry in report.conflicts:
                click.echo(f"{entry.status}: {entry.session_id}: {entry.detail}", err=True)
        ctx.exit(1)


@cli.command()
@click.pass_context
def compact(ctx: click.Context) -> None:
    """Rewrite an older database file in the compact form (16 KiB blocks).

    Every session is verified before and after; the original is kept beside it as
    DB.before-compact until you delete it. Exit 1 if a session fails verification or the
    backup name is taken (nothing changes then).

    \b
    Example:
        perspt-store --db run.db compact
    """
    from ..compaction import compact as compact_file

    path = db_path(ctx)
    try:
        report = compact_file(path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Compacted {report.path}: {report.bytes_before / 1e6:.2f} MB -> "
        f"{report.bytes_after / 1e6:.2f} MB ({report.sessions} sessions verified before and "
        f"after); the original is kept as {report.original}"
    )


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line (the ``perspt-store`` script and ``python -m perspt_store``)."""
    cli.main(args=args, prog_name="perspt-store")
