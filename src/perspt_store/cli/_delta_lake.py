"""``perspt-store lake …``: the Delta lake's fleet-wide audit and maintenance.

The ``export --delta URI`` option lives with ``export``; this group holds what works on a
lake as a whole (it opens no database).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ._common import output_options
from ._output import Format, emit_rows, plural

if TYPE_CHECKING:  # click's ParamType is generic from 8.2 on; 8.1 is supported too
    _TimeParamType = click.ParamType[_dt.datetime, Any]
else:
    _TimeParamType = click.ParamType


class _Timestamp(_TimeParamType):
    """An ISO 8601 time (``2026-12-01``, ``2026-12-01T09:30``, ``…T09:30:00+02:00``,
    ``…Z``); without a zone it is UTC."""

    name = "ISO-TIME"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> _dt.datetime:
        if isinstance(value, _dt.datetime):
            moment = value
        else:
            try:
                moment = _dt.datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z)",
                          param, ctx)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.UTC)


TIMESTAMP = _Timestamp()


def _as_of(version: int | None, timestamp: _dt.datetime | None) -> int | _dt.datetime | None:
    if version is not None and timestamp is not None:
        raise click.UsageError("give --version or --timestamp, not both")
    return version if version is not None else timestamp


def as_of_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--version N`` and ``--timestamp ISO-TIME``: a Delta lake as it was."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--timestamp", type=TIMESTAMP, default=None,
            help=f"{what} as it was at this time (ISO 8601; UTC unless a zone is given). "
            "Not with --version.")(command)
        return click.option(
            "--version", type=click.IntRange(min=0), default=None,
            help=f"{what} as of this version of its lake_checkpoints table (export --delta "
            "prints it). Not with --timestamp.")(command)

    return decorate


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
@as_of_options("Check the lake")
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
@click.option("--abandoned-after-hours", type=click.FloatRange(min=0), default=1.0,
              show_default=True,
              help="Repair sessions whose tables hold rows of an export that never "
              "committed its checkpoint, written longer ago than this.")
def compact(uri: str, retention_hours: int, abandoned_after_hours: float) -> None:
    """Repair abandoned exports, optimize and vacuum every table, checkpoint the Delta logs.

    A session whose tables hold rows of an export that died before its checkpoint (and
    was not exported again) gets its checkpoint's rows back, so plain Delta readers see
    the lake's copy again. Vacuum removes files that re-exports replaced more than
    --retention-hours ago; it keeps every file a session's checkpoint pins, whatever its age.

    \b
    Example:
        perspt-store lake compact /shared/lake
    """
    from ..delta import compact_lake

    report = compact_lake(uri, retention_hours=retention_hours,
                          abandoned_after_hours=abandoned_after_hours)
    repaired = (f", {plural(len(report.repaired), 'session')} repaired "
                f"({', '.join(report.repaired)})" if report.repaired else "")
    click.echo(
        f"Compacted {uri}: {plural(sum(report.optimized.values()), 'file')} rewritten by "
        f"optimize, {plural(sum(report.removed.values()), 'file')} removed by vacuum"
        f"{repaired}"
    )
