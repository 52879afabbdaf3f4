"""What every command shares: parameter types, output-format options, opening the database
and checking the session or node a user named."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import _engine
from ..store import SessionStore, overview

SHOWN_ID = 60
"""The longest id an error message quotes in full."""


if TYPE_CHECKING:  # click's ParamType is generic from 8.2 on; 8.1 is supported too
    _TextParamType = click.ParamType[str, Any]
else:
    _TextParamType = click.ParamType


def shown(text: str) -> str:
    """``text`` quoted for a message, shortened to :data:`SHOWN_ID` characters."""
    return repr(text) if len(text) <= SHOWN_ID else f"{text[:SHOWN_ID]!r}… ({len(text)} chars)"


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


def fits_bigint(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """An option value the database can take as a BIGINT."""
    if value >= 2**63:
        raise click.BadParameter(f"{value} is too large (at most {2**63 - 1})", ctx, param)
    return value


session_argument = click.argument("session_id", metavar="SESSION", type=TEXT)
"""The SESSION argument of a per-session command."""


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
    "Output a JSON array (bytes as hex, times as ISO-8601 UTC).",
    "Output newline-delimited JSON: one object per line.",
)
"""Add ``--json`` and ``--nl`` to a listing and pass the chosen format as ``fmt``
(``"table"``, ``"json"`` or ``"nl"``) for :func:`~._output.emit_rows`."""

document_options = _format_options(
    "Output the summary as one JSON object (bytes as hex, times as ISO-8601 UTC).",
    "Output the summary as one line of JSON.",
)
"""Like :data:`output_options`, for commands that print one document
(:func:`~._output.emit_json`)."""


def db_path(ctx: click.Context) -> Path:
    """The database the user asked for: ``--db``, ``$PERSPT_STORE_DB`` or the default."""
    path: Path | None = ctx.find_root().params.get("db")
    return path if path is not None else SessionStore.default_db_path()


@contextlib.contextmanager
def open_store(ctx: click.Context, *, write: bool = False) -> Iterator[SessionStore]:
    """Open the database for one command, closed afterwards.

    Read-only unless ``write``: a read never creates, migrates or changes the file, and
    the whole command reads one snapshot (its tables never disagree with each other). While
    another process writes the file, the read-only store reads its published snapshot.
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
    known = overview.session_ids(store)
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
    known = [s.node_id for s in store.get_latest_node_states(session_id)]
    for edge in store.get_task_graph_edges(session_id):
        known += [edge.parent_node_id, edge.child_node_id]
    known += [e.node_id for e in store.get_session_energy_history(session_id)]
    known += [s.node_id for s in store.get_session_steps(session_id)]
    if node_id in known:
        return
    hint = closest(node_id, known)
    suggestion = f"; did you mean {' or '.join(hint)}?" if hint else ""
    raise click.ClickException(
        f"no node {shown(node_id)} in session {shown(session_id)}{suggestion}"
    )


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
