"""The root ``perspt-store`` group and the one place where commands are registered.

Import it through :mod:`perspt_store.cli`, which falls back to an install hint when click or
rich is missing. A command's module is imported when the command runs (or ``--help`` lists
it), so ``perspt-store sessions`` never imports the lake, plots or the dashboard.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import duckdb

from .. import __version__, _engine
from ..errors import StoreError

# Every command, in the order `--help` lists them: name -> (module in this package, attribute).
COMMANDS: dict[str, tuple[str, str]] = {
    # writes
    "init": ("_sessions", "init"),
    "demo": ("_sessions", "demo"),
    # reads
    "sessions": ("_sessions", "sessions"),
    "show": ("_sessions", "show"),
    "nodes": ("_nodes", "nodes"),
    "energy": ("_nodes", "energy"),
    "llm": ("_nodes", "llm"),
    "timeline": ("_nodes", "timeline"),
    "branches": ("_nodes", "branches"),
    "graph": ("_graph", "graph"),
    "sql": ("_sessions", "sql"),
    "tables": ("_sessions", "tables"),
    # the Merkle commit log
    "verify": ("_merkle", "verify"),
    "log": ("_merkle", "log"),
    "checkpoint": ("_merkle", "checkpoint"),
    "rollback": ("_merkle", "rollback"),
    # beyond one machine
    "export": ("_lake", "export"),
    "import": ("_lake", "import_"),
    "compact": ("_lake", "compact"),
    "lake": ("_delta_lake", "lake"),
    # watching runs
    "serve": ("_serve", "serve"),  # the web dashboard (the ``web`` extra, imported when it runs)
}


class _Group(click.Group):
    """The root group: commands listed in the order of :data:`COMMANDS`, each imported on
    first use; any StoreError (or an OS error on some file) in a command becomes
    ``Error: <message>`` and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f".{module}", __package__), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        from ._common import one_line  # imports the store: only once a command runs

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


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line (the ``perspt-store`` script and ``python -m perspt_store``)."""
    cli.main(args=args, prog_name="perspt-store")
