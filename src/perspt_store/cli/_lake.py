"""Commands that move sessions between files and machines: ``export`` and ``import`` (a
Parquet lake) and ``compact``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from ..errors import StoreError
from ._common import TEXT, db_path, open_store, output_options, require_session
from ._delta_lake import _as_of, as_of_options
from ._output import Format, emit_rows, plural


@click.command()
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
    ctx: click.Context,
    directory: Path | None,
    delta_uri: str | None,
    session_ids: tuple[str, ...],
    fmt: Format,
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
    if (version := getattr(report, "version", None)) is not None:
        conflicts += f"; lake version {version}"
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


@click.command(name="import")
@click.argument("source", metavar="SOURCE", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--session",
    "session_ids",
    multiple=True,
    type=TEXT,
    metavar="SESSION",
    help="Only this session of SOURCE; repeatable.",
)
@as_of_options("Import a Delta lake")
@output_options
@click.pass_context
def import_(
    ctx: click.Context,
    source: Path,
    session_ids: tuple[str, ...],
    version: int | None,
    timestamp: dt.datetime | None,
    fmt: Format,
) -> None:
    """Merge a Parquet or Delta lake (or another database file) into the database.

    Each session is imported in one transaction with new ids, in insertion order, and
    verified against the lake's checkpoint before it commits. A session already in the
    database is skipped if identical; if its history differs it is a conflict: nothing
    of it is written and the command exits 1. The database is created if needed.
    A Delta lake can be imported as it was: --version N or --timestamp ISO-TIME.

    \b
    Example:
        perspt-store --db central.db import lake/machine=a
        perspt-store --db central.db import other.db --session SESSION
        perspt-store --db central.db import /shared/fleet --timestamp 2026-12-01T09:00Z
    """
    as_of = _as_of(version, timestamp)
    if as_of is not None:
        from ..delta import is_delta_lake

        if not (source.is_dir() and is_delta_lake(source)):
            option = "--version" if version is not None else "--timestamp"
            raise click.BadParameter(
                f"{source} is not a Delta lake; {option} reads a Delta lake's history "
                "(a Parquet lake or a database file has none)", param_hint=f"'{option}'")
    with open_store(ctx, write=True) as store:
        from ..lake import import_lake

        report = import_lake(store, source, session_ids or None, as_of=as_of)
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


@click.command()
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
