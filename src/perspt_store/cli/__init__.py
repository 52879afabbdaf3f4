"""The ``perspt-store`` command line: look inside a session database from a shell.

It needs the ``cli`` extra (click and rich): ``pip install 'perspt-store[cli]'``. Without it,
:func:`main` prints that hint and exits 1. The public surface is :data:`cli` (the click group)
and :func:`main`; everything else is private to the package.

Exit codes: 0 success; 1 a :class:`~perspt_store.StoreError`, an unknown session or bad SQL,
printed as one line ``Error: <message>``; 2 a usage error.

Commands that only read open the file with :meth:`SessionStore.open_read_only` inside
:meth:`SessionStore.consistent_read` (``_common.open_store``), so they never write to it and
read one snapshot; ``init``, ``demo``, ``rollback`` and ``import`` open it read-write.

Layout, one owner per concern:

* ``_app``: the root group, its error handling, and the **one registration point**:
  ``COMMANDS`` in ``_app.py``, each command's name and where it lives, in the order ``--help``
  shows them (a command's module is imported only when it runs, so a listing stays quick);
* ``_common``: parameter types, ``--json``/``--nl`` options, opening the store, checking a
  session or node id, ``--plot``;
* ``_output``: everything printed: tables (fitted to the terminal; ids never cut), JSON and
  JSON lines; rows become data through ``perspt_store._shaping`` (``row_dict``, ``jsonable``,
  the one time convention: UTC, ISO-8601 with ``Z``), which the dashboard shares;
* topic modules, one per group of commands: ``_sessions`` (init, demo, sessions, show, sql,
  tables), ``_nodes`` (nodes, energy, llm, timeline, branches), ``_graph`` (graph),
  ``_merkle`` (verify, log, checkpoint, rollback), ``_lake`` (export, import, compact).

Counting rules (review classes, token estimates, session totals) belong to the library
(:meth:`SessionStore.session_summary`, :func:`perspt_store.store.telemetry.counted_tokens`);
the command line calls them and never re-derives them.

Adding a command: write it in a topic module (a new one for a new topic) with
``@click.command()``, then add its name and place to ``COMMANDS`` in ``_app.py``::

    @click.command()
    @session_argument
    @output_options
    @click.pass_context
    def things(ctx: click.Context, session_id: str, fmt: Format) -> None:
        '''One line of help.

        \b
        Example:
            perspt-store things SESSION --json
        '''
        with open_store(ctx) as store:
            require_session(store, session_id)
            rows = [row_dict(r) for r in store.get_things(session_id)]
        emit_rows(rows, fmt)

A :class:`~perspt_store.StoreError` raised anywhere in a command becomes exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["cli", "main"]

INSTALL_HINT = (
    "The perspt-store command line needs the 'cli' extra (click and rich).\n"
    "Install it with:  pip install 'perspt-store[cli]'"
)

try:
    from ._app import cli, main  # needs click and rich
except ModuleNotFoundError as _exc:  # the `cli` extra is not installed
    if (_exc.name or "").partition(".")[0] not in ("click", "rich"):
        raise

    def main(args: Sequence[str] | None = None) -> None:
        """Print how to install the ``cli`` extra and exit 1."""
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(1)
