"""The ``perspt-store`` command line: look inside a session database from a shell.

It needs the ``cli`` extra (click and rich): ``pip install 'perspt-store[cli]'``. Without it,
:func:`main` prints that hint and exits 1. The click application lives in ``_app`` (the only
module that imports click and rich); the pure helpers it shares live in ``_render``.

Exit codes: 0 success; 1 a :class:`~perspt_store.StoreError`, an unknown session or bad SQL,
printed as one line ``Error: <message>``; 2 a usage error.

Commands that only read open the file with :meth:`SessionStore.open_read_only`, so they never
write to it; ``init`` and ``demo`` open it read-write.

Adding a command to ``_app`` (its helpers are shared)::

    @cli.command()
    @click.argument("session_id", metavar="SESSION")
    @output_options
    @click.pass_context
    def things(ctx: click.Context, session_id: str, fmt: str) -> None:
        '''One line of help.

        \b
        Example:
            perspt-store things SESSION --json
        '''
        with open_store(ctx) as store:
            require_session(store, session_id)
            emit_rows([row_dict(r) for r in store.get_things(session_id)], fmt)

A :class:`~perspt_store.StoreError` raised anywhere in a command becomes exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._render import (
    closest,
    graph_nodes,
    jsonable,
    llm_totals,
    merge_timeline,
    one_line,
    render_dot,
    render_mermaid,
    review_counts,
    row_dict,
    session_overview,
)

__all__ = [
    "cli",
    "closest",
    "graph_nodes",
    "jsonable",
    "llm_totals",
    "main",
    "merge_timeline",
    "one_line",
    "render_dot",
    "render_mermaid",
    "review_counts",
    "row_dict",
    "session_overview",
]

INSTALL_HINT = (
    "The perspt-store command line needs the 'cli' extra (click and rich).\n"
    "Install it with:  pip install 'perspt-store[cli]'"
)

try:
    from ._app import cli, main  # needs click and rich
    from .serve import serve

    cli.add_command(serve)  # the web dashboard (its own extra, imported when it runs)
except ModuleNotFoundError as _exc:  # the `cli` extra is not installed
    if (_exc.name or "").partition(".")[0] not in ("click", "rich"):
        raise

    def main(args: Sequence[str] | None = None) -> None:
        """Print how to install the ``cli`` extra and exit 1."""
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(1)
