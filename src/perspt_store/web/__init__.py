"""The live web dashboard: ``perspt-store --db runs/perspt.db serve``.

It needs the ``web`` extra (Starlette, Jinja2, uvicorn): ``pip install 'perspt-store[web]'``.
Pages for the sessions, each session's task graph, energy, LLM calls, decisions, sandbox and
Merkle log, a JSON API under ``/api/``, and server-sent events that update an open page when
the agent commits. The database is only ever read, through private copies (see ``_reader``),
so the dashboard never stands in an agent's way: while an agent holds the file, the pages show
the snapshot it publishes and say how old it is.

Layout: ``_reader`` (opening the file), ``_pages`` (what each page shows, as data),
``_svg`` (the task graph and energy charts), ``_app`` (routes, login, live stream),
``templates/`` and ``static/`` (hand-written CSS and JavaScript, no third-party code).

Example:
    >>> from perspt_store.web import create_app
    >>> app = create_app("runs/perspt.db")  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import ASGIApp

from ._app import build_app

__all__ = ["PASSWORD_ENV", "create_app"]

PASSWORD_ENV = "PERSPT_STORE_PASSWORD"
"""The environment variable ``serve`` reads the dashboard's password from."""


def create_app(
    db_path: str | os.PathLike[str],
    *,
    password: str | None = None,
    poll_interval: float = 1.0,
    stream_lifetime: float = 300.0,
) -> ASGIApp:
    """The dashboard as an ASGI application reading the database at ``db_path``.

    Args:
        db_path: An existing database file. The dashboard never opens it: it reads a
            private copy of it, or of the snapshot a writer publishes (see ``_reader``), so
            an agent can open it read-write at any moment.
        password: If set, every page and API call needs it: a browser signs in once on
            ``/login`` (an ``HttpOnly``, ``SameSite=Strict`` cookie), a script sends
            ``Authorization: Bearer <password>``.
        poll_interval: Seconds between the live stream's checks for changes (a check is a
            few ``stat`` calls; the store is read only when the files changed).
        stream_lifetime: Seconds after which a live stream ends; the browser reconnects
            by itself.

    Raises:
        StoreError: There is no database at ``db_path``.
    """
    return build_app(
        Path(db_path),
        password=password,
        poll_interval=poll_interval,
        stream_lifetime=stream_lifetime,
    )
