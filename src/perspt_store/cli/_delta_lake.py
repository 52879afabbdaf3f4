"""``perspt-store lake …``: the Delta lake's fleet-wide audit and maintenance.

The ``export --delta URI`` option lives with ``export``; this group holds what works on a
lake as a whole (it opens no database).
"""

from __future__ import annotations

import datetime as _dt

import click

from ._common import output_options
from ._output import Format, emit_rows, plural


def _as_of(version: int | None, timestamp: _dt.datetime | None) -> int | _dt.datetime | None:
    if version is not None and timestamp is not None:
        raise click.UsageError("give --version or --timestamp, not both")
    if timestamp is not None and timestamp.tzinfo is None:
        return timestamp.replace(tzinfo=_dt.UTC)  # a time without zone is UTC
    return version if version is not None else timestamp


@click.group()
def lake() -> None:
    """Audit and maintain a Delta lake written by ``export --delta``.

    \b
    Example:
        perspt-store lake verify /shared/lake
        perspt-store lake compact /shared/lake
    """


@lake.command()
@click.argument("uri", metavar="URI")
@click.option("--version", type=click.IntRange(min=0), default=None,
              help="Check the lake as of this version of its lake_checkpoints table.")
@click.option("--timestamp", type=click.DateTime(), default=None,
              help="Check the lake as it was at this time (UTC unless a zone is given).")
@output_options
def verify(uri: str, version: int | None, timestamp: _dt.datetime | None, fmt: Format) -> None:
    """Check every session in the lake against its checkpoint.

    Each session's rows (the files its checkpoint pins) are loaded into a scratch store, its
    Merkle log is recomputed from its node states, and its size and roots are compared with
    the checkpoint's. Exit 1 if any session fails.

    \b
    Example:
        perspt-store lake verify /shared/lake
    """
    from ..delta import verify_lake

    report = verify_lake(uri, as_of=_as_of(version, timestamp))
    rows = [
        {"session_id": s.session_id, "ok": s.ok, "commits": s.commits,
         "log_root": s.log_root, "detail": s.detail}
        for s in report.sessions
    ]
    failed = sum(not s.ok for s in report.sessions)
    emit_rows(rows, fmt, columns=["session_id", "ok", "commits", "detail"],
              caption=f"{plural(len(rows), 'session')} in {uri}, {failed} failed")
    if not report.ok:
        for s in report.sessions:
            if not s.ok:
                click.echo(f"failed: {s.session_id}: {s.detail}", err=True)
        raise SystemExit(1)


@lake.command()
@click.argument("uri", metavar="URI")
@click.option("--retention-hours", type=click.IntRange(min=1), default=168, show_default=True,
              help="Remove files replaced longer ago than this (Delta's default: 7 days).")
def compact(uri: str, retention_hours: int) -> None:
    """Optimize and vacuum every table of the lake, and checkpoint its Delta logs.

    Vacuum removes files that re-exports replaced more than --retention-hours ago; it
    keeps every file a session's checkpoint pins, whatever its age.

    \b
    Example:
        perspt-store lake compact /shared/lake
    """
    from ..delta import compact_lake

    report = compact_lake(uri, retention_hours=retention_hours)
    click.echo(
        f"Compacted {uri}: {plural(sum(report.optimized.values()), 'file')} rewritten by "
        f"optimize, {plural(sum(report.removed.values()), 'file')} removed by vacuum"
    )
