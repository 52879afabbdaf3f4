"""The root ``perspt-store`` group and the one place where commands are registered.

Import it through :mod:`perspt_store.cli`, which falls back to an install hint when click or
rich is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import duckdb

from .. import __version__, _engine
from ..errors import StoreError
from . import _delta_lake, _graph, _lake, _merkle, _nodes, _serve, _sessions
from ._common import one_line


class _Group(click.Group):
    """The root group: commands listed in the order registered; any StoreError (or an OS
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


# --- every command, in the order `--help` lists them ----------------------------------------

for _command in (
    # writes
    _sessions.init,
    _sessions.demo,
    # reads
    _sessions.sessions,
    _sessions.show,
    _nodes.nodes,
    _nodes.energy,
    _nodes.llm,
    _nodes.timeline,
    _nodes.branches,
    _graph.graph,
    _sessions.sql,
    _sessions.tables,
    # the Merkle commit log
    _merkle.verify,
    _merkle.log,
    _merkle.checkpoint,
    _merkle.rollback,
    # beyond one machine
    _lake.export,
    _lake.import_,
    _lake.compact,
    _delta_lake.lake,
    # watching runs
    _serve.serve,  # the web dashboard (the ``web`` extra, imported when it runs)
):
    cli.add_command(_command)


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line (the ``perspt-store`` script and ``python -m perspt_store``)."""
    cli.main(args=args, prog_name="perspt-store")
