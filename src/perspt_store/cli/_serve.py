"""``perspt-store serve``: the live web dashboard (the ``web`` extra) on a local port."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from .. import _engine

__all__ = ["resolve_password", "serve"]

WEB_HINT = (
    "the dashboard needs the 'web' extra (Starlette, Jinja2, uvicorn); "
    "install it with:  pip install 'perspt-store[web]'"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_password(password_file: Path | None, env: str) -> str | None:
    """The dashboard password: the first line of ``password_file``, else ``$env``; None
    when neither is set. Never a command-line value: argv is visible to every user."""
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = _engine.os_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            raise click.ClickException(f"cannot read {password_file}: {reason}") from exc
        lines = text.splitlines()
        password = lines[0].strip() if lines else ""
        if not password:
            raise click.ClickException(
                f"{password_file} is empty: put the password on its first line"
            )
        return password
    return os.environ.get(env) or None


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but a loopback address needs a password.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file whose first line is the password every visitor must give "
    "(or set $PERSPT_STORE_PASSWORD).",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, password_file: Path | None) -> None:
    """Serve the live web dashboard of the database and print its URL.

    Pages for every session (task graph, energy, LLM calls, decisions, sandbox, Merkle
    log) and a JSON API under /api/. It only reads: while an agent writes the file, it
    shows the snapshot the agent publishes and how old it is, and open pages update
    when the agent commits. Needs the 'web' extra.

    \b
    Example:
        perspt-store --db runs/perspt.db serve --port 8000
    """
    try:
        import uvicorn

        from ..web import PASSWORD_ENV, create_app
    except ModuleNotFoundError as exc:
        raise click.ClickException(WEB_HINT) from exc
    from ._common import db_path

    password = resolve_password(password_file, PASSWORD_ENV)
    if not _is_loopback(host) and password is None:
        raise click.UsageError(
            f"refusing to serve on {host} without a password: anyone who can reach it would "
            f"read every session. Pass --password-file FILE or set ${PASSWORD_ENV}, or keep "
            "the default --host 127.0.0.1."
        )
    app = create_app(db_path(ctx), password=password)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host

    # Print the URL once the socket is bound (with --port 0, only then is the port known).
    original_startup = server.startup

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets)  # type: ignore[arg-type]
        bound = port
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                bound = sock.getsockname()[1]
        click.echo(f"perspt-store dashboard: http://{shown}:{bound}/  (Ctrl+C to stop)")

    server.startup = startup  # type: ignore[method-assign]
    server.run()
