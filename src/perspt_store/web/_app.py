"""The dashboard's Starlette application: routes, templates, login, live updates.

Every page is a plain GET that reads the store (see ``_reader``) and renders a Jinja2
template with autoescaping on; ``/api/...`` returns the same data as JSON. Nothing here
writes to the database. The only POSTs are the login and logout forms, which touch the
in-memory list of signed-in browsers and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._shaping import jsonable
from ..errors import SessionNotFoundError, StoreError, StoreLockedError
from ..store import SessionStore
from . import _pages, _svg
from ._reader import StoreReader

__all__ = ["COOKIE_NAME", "build_app"]

COOKIE_NAME = "perspt_dashboard"
STATIC_DIR = Path(__file__).with_name("static")

# No inline script or style, nothing from another origin, never framed.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

SESSION_TABS = [
    ("", "Summary"),
    ("dag", "Task graph"),
    ("energy", "Energy"),
    ("llm", "LLM"),
    ("decisions", "Decisions"),
    ("sandbox", "Sandbox"),
    ("merkle", "Merkle log"),
]


# --- formatting helpers for the templates ---------------------------------------------------

NO_VALUE = "\u2013"  # an en dash: what a table shows for a missing value


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return _duration(seconds) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NO_VALUE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _when(value: Any) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return str(value.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    return str(value)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _q(value: str) -> str:
    """An id as one path segment (see "ids in paths" below)."""
    return quote(value, safe="")


@dataclass(frozen=True)
class Paged:
    """One page of a long list: a 1,000-node session has thousands of rows per table, and
    the browser need not lay them all out (the JSON API returns them all)."""

    items: Sequence[Any]
    number: int
    pages: int
    total: int
    start: int


def _paged(items: Sequence[Any], per_page: int, number: int) -> Paged:
    pages = max(1, -(-len(items) // per_page))
    number = min(max(number, 1), pages)
    start = (number - 1) * per_page
    return Paged(items[start : start + per_page], number, pages, len(items), start)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("perspt_store.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        paged=_paged,
        ago=_ago,
        duration=_duration,
        when=_when,
        num=_num,
        q=_q,
        short=lambda s, n=12: s if len(s) <= n else s[:n] + "…",
    )
    env.globals.update(
        tabs=SESSION_TABS, components=_svg.COMPONENT_NAMES, energy_svg=_svg.energy_svg
    )
    return env


# --- the application ------------------------------------------------------------------------


class Dashboard:
    """The routes' shared state: the reader, the templates, and who is signed in."""

    def __init__(
        self,
        reader: StoreReader,
        *,
        password: str | None,
        poll_interval: float,
        stream_lifetime: float,
    ) -> None:
        self.reader = reader
        self.password = password
        self.poll_interval = poll_interval
        self.stream_lifetime = stream_lifetime
        self.env = _environment()
        self.tokens: set[str] = set()
        # verify_session's verdicts by (session, files' fingerprint): it recomputes the whole
        # log (about a second at 5,000 commits), so a page shows it again without redoing it.
        self._verdicts: dict[tuple[str, Any], dict[str, Any]] = {}

    def verdict(
        self, store: SessionStore, session_id: str, *, compute: bool = True
    ) -> dict[str, Any] | None:
        """The session's verification verdict, from the cache or (if ``compute``) now."""
        key = (session_id, self.reader.version_of(store))
        found = self._verdicts.get(key)
        if found is None and compute:
            found = _pages.verification(store, session_id)
            if len(self._verdicts) >= 64:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = found
        return found

    # -- reading and rendering

    def version(self) -> str:
        """A short tag of the files' state, embedded in pages so the live stream can tell
        whether anything changed since the page was read."""
        digest = hashlib.blake2s(repr(self.reader.fingerprint()).encode(), digest_size=8)
        return digest.hexdigest()

    def freshness(self, store: SessionStore) -> dict[str, Any]:
        return self.reader.freshness(store)

    def page(
        self,
        request: Request,
        template: str,
        read: Callable[[SessionStore], dict[str, Any]],
        **context: Any,
    ) -> Response:
        if request.url.path.startswith("/api/"):
            with self.reader.read() as store:
                data = read(store)
                data["freshness"] = self.freshness(store)
            return JSONResponse(jsonable(data))
        version = self.version()
        with self.reader.read() as store:
            data = read(store)
            fresh = self.freshness(store)
        try:
            page_no = int(request.query_params.get("page", "1"))
        except ValueError:
            page_no = 1
        html = self.env.get_template(template).render(
            request=request,
            data=data,
            fresh=fresh,
            version=version,
            page_no=page_no,
            **context,
        )
        return HTMLResponse(html)

    def error(self, request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.startswith(("/api/", "/sse")):
            return JSONResponse({"error": title, "detail": message}, status_code=status)
        html = self.env.get_template("error.html").render(
            request=request, status=status, title=title, message=message, fresh=None
        )
        return HTMLResponse(html, status_code=status)

    # -- routes

    def overview(self, request: Request) -> Response:
        query = _pages.OverviewQuery.parse(dict(request.query_params))
        return self.page(
            request, "overview.html", lambda s: _pages.overview_page(s, query), query=query
        )

    def session(self, request: Request) -> Response:
        sid = request.path_params["sid"]

        def read(store: SessionStore) -> dict[str, Any]:
            data = _pages.session_page(store, sid)
            data["verified"] = self.verdict(store, sid, compute=False)  # else fetched later
            return data

        return self.page(request, "session.html", read, sid=sid, tab="")

    def verify(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        return self.page(request, "", lambda s: {**(self.verdict(s, sid) or {})})  # a copy

    def merkle(self, request: Request) -> Response:
        sid = request.path_params["sid"]

        def read(store: SessionStore) -> dict[str, Any]:
            return {**_pages.merkle_page(store, sid), **(self.verdict(store, sid) or {})}

        return self.page(request, "merkle.html", read, sid=sid, tab="merkle")

    def node(self, request: Request) -> Response:
        sid, node_id = request.path_params["sid"], request.path_params["node_id"]
        return self.page(
            request, "node.html", lambda s: _pages.node_page(s, sid, node_id), sid=sid, tab="dag"
        )

    def dag(self, request: Request) -> Response:
        sid = request.path_params["sid"]

        def read(store: SessionStore) -> dict[str, Any]:
            return _pages.dag_page(store, sid)

        return self.page(
            request,
            "dag.html",
            read,
            sid=sid,
            tab="dag",
            dag_svg=lambda d: _svg.dag_svg(
                d["nodes"], d["edges"], lambda n: f"/sessions/{_q(sid)}/nodes/{_q(n)}"
            ),
        )

    def energy(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        return self.page(
            request, "energy.html", lambda s: _pages.energy_page(s, sid), sid=sid, tab="energy"
        )

    def simple(self, name: str) -> Callable[[Request], Response]:
        read_page: Callable[[SessionStore, str], dict[str, Any]] = getattr(_pages, f"{name}_page")

        def endpoint(request: Request) -> Response:
            sid = request.path_params["sid"]
            if name == "decisions" and request.url.path.startswith("/api/"):
                return self.page(request, "", lambda s: _pages.decisions_page(s, sid, rows=True))
            return self.page(
                request, f"{name}.html", lambda s: read_page(s, sid), sid=sid, tab=name
            )

        return endpoint

    def proof(self, request: Request) -> Response:
        sid, seq = request.path_params["sid"], request.path_params["seq"]
        with self.reader.read() as store:
            if store.get_session(sid) is None:
                raise SessionNotFoundError(sid, table="sessions")
            size = len(store.get_commit_log(sid))
            if seq >= size:
                raise LookupError(f"session {sid!r} has no commit {seq} (its log has {size})")
            proof = store.inclusion_proof(sid, seq)
        body = {
            "session_id": proof.session_id,
            "seq": proof.seq,
            "log_size": proof.log_size,
            "leaf_hash": proof.leaf_hash.hex(),
            "path": [step.hex() for step in proof.path],
            "log_root": proof.log_root.hex(),
            "verifies": proof.verify(),
        }
        return _download(json.dumps(body, indent=2), f"{sid}-proof-{seq}.json")

    def checkpoint(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        with self.reader.read() as store:
            document = store.checkpoint(sid).to_json()  # no key: a MAC-less checkpoint
        return _download(document, f"{sid}-checkpoint.json")

    def api_index(self, request: Request) -> Response:
        return JSONResponse({"endpoints": API_ENDPOINTS})

    # -- live updates

    async def stream(self, request: Request) -> Response:
        sid = request.path_params.get("sid")
        since = request.query_params.get("v")

        def read() -> dict[str, Any]:
            with self.reader.read() as store:
                state = (
                    _pages.live_state(store, sid)
                    if sid is not None
                    else _pages.overview_state(store)
                )
                state["freshness"] = self.freshness(store)
                return state

        if sid is not None:
            await run_in_threadpool(read)  # an unknown session is a 404 before streaming

        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            started = time.monotonic()
            seen: str | None = None  # the files' version last read
            last: dict[str, Any] | None = None
            last_fresh: Any = None
            while time.monotonic() - started < self.stream_lifetime:
                if await request.is_disconnected():
                    return
                version = self.version()
                if version != seen:
                    try:
                        state = await run_in_threadpool(read)
                    except StoreLockedError:  # a writer is starting: try again
                        state = None
                    except StoreError as exc:
                        yield _event("error", {"detail": str(exc)})
                        return
                    if state is not None:
                        fresh = jsonable(state.pop("freshness"))
                        if last is not None:
                            changes = _diff(last, state)
                        elif since is not None and since != version:
                            changes = {"full": True}  # changed since the page was read
                        else:
                            changes = {}
                            yield _event("hello", {"version": version, "freshness": fresh})
                        if changes:
                            yield _event(
                                "change", {**changes, "version": version, "freshness": fresh}
                            )
                        elif last is not None and fresh != last_fresh:
                            yield _event("fresh", {"freshness": fresh})  # a newer snapshot
                        last, seen, last_fresh = state, version, fresh
                await asyncio.sleep(self.poll_interval)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- signing in

    def login_form(self, request: Request, *, failed: bool = False) -> Response:
        html = self.env.get_template("login.html").render(
            request=request,
            failed=failed,
            next=_safe_next(request.query_params.get("next")),
            fresh=None,
        )
        return HTMLResponse(html, status_code=401 if failed else 200)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.login_form(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("password") or [""])[0]
        if not self.check(given):
            await asyncio.sleep(0.3)  # slow down guessing
            return self.login_form(request, failed=True)
        token = secrets.token_urlsafe(32)
        self.tokens.add(token)
        response = RedirectResponse(_safe_next((form.get("next") or ["/"])[0]), 303)
        response.set_cookie(
            COOKIE_NAME,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.tokens.discard(request.cookies.get(COOKIE_NAME, ""))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    def check(self, given: str) -> bool:
        """Whether ``given`` is the password, in time that does not depend on where it
        differs."""
        return self.password is not None and hmac.compare_digest(
            given.encode(), self.password.encode()
        )

    def signed_in(self, scope: Scope) -> bool:
        request = Request(scope)
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is not None and any(hmac.compare_digest(cookie, t) for t in self.tokens):
            return True
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check(credential)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(jsonable(data))}\n\n"


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed between two live states: changed or new nodes, removed nodes, and any
    other key whose value differs. Empty when nothing did."""
    changes: dict[str, Any] = {}
    old_nodes, new_nodes = old.get("nodes", {}), new.get("nodes", {})
    changed = {k: v for k, v in new_nodes.items() if old_nodes.get(k) != v}
    removed = [k for k in old_nodes if k not in new_nodes]
    if changed:
        changes["nodes"] = changed
    if removed:
        changes["removed"] = removed
    for key, value in new.items():
        if key != "nodes" and old.get(key) != value:
            changes[key] = value
    return changes


def _download(text: str, filename: str) -> Response:
    # An ASCII name for every browser, and the exact one (RFC 6266) for those that read it.
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in filename)
    exact = quote(filename, safe="")
    return PlainTextResponse(
        text,
        media_type="application/json",
        headers={
            "content-disposition": f"attachment; filename=\"{safe}\"; filename*=UTF-8''{exact}"
        },
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or ``http://``) is a place to go back to."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


API_ENDPOINTS = {
    "/api/sessions": "sessions (query: page, per_page, status, q, sort, order), counts by "
    "status, LLM totals of every session",
    "/api/sessions/{id}": "one session: status, task, durations, budget, charter, plan, "
    "verification, node table",
    "/api/sessions/{id}/dag": "task graph: latest node states and edges",
    "/api/sessions/{id}/nodes/{node}": "one node's history",
    "/api/sessions/{id}/energy": "V(x) history per node, by component",
    "/api/sessions/{id}/llm": "LLM requests; tokens, latency, cost per node and model",
    "/api/sessions/{id}/decisions": "every decision on one timeline",
    "/api/sessions/{id}/sandbox": "branches, lineage, flushes, seals",
    "/api/sessions/{id}/merkle": "commit log and verify_session's verdict",
    "/api/sessions/{id}/verify": "verify_session's verdict (cached until the file changes)",
    "/sessions/{id}/proofs/{seq}.json": "an inclusion proof of commit seq (download)",
    "/sessions/{id}/checkpoint.json": "a MAC-less checkpoint of the log (download)",
    "/sse/{id}": "server-sent events: what changed in the session",
}


# --- ids in paths ---------------------------------------------------------------------------
#
# A session or node id may hold any character, "/" and "%" included. Links quote an id whole
# (``quote(id, safe="")``: "a/b" is "a%2Fb"), but the server decodes a path before routing, so
# "a%2Fb" would become two segments. Routing therefore sees the path with "%2F" and "%25" still
# encoded (:func:`routing_path`), and the id parameters decode them (:class:`_IdConvertor`).
# No other escape can remain: a literal "%" always arrives as "%25". (The ids "." and ".." stay
# unreachable by path: clients remove dot segments, even encoded as "%2E", before sending.)

_KEPT_ESCAPES = re.compile(r"%(?:2[Ff]|25)")


def routing_path(raw_path: bytes) -> str:
    """The request path decoded except for ``%2F`` and ``%25`` (``/`` and ``%`` inside a
    path segment), which stay encoded until an id parameter decodes them."""
    text = raw_path.decode("utf-8", "replace")
    pieces = _KEPT_ESCAPES.split(text)
    kept = _KEPT_ESCAPES.findall(text)
    parts = [unquote(pieces[0])]
    for escape, piece in zip(kept, pieces[1:], strict=True):
        parts += [escape.upper(), unquote(piece)]
    return "".join(parts)


class _IdConvertor(Convertor[str]):
    """One path segment holding an id (``{sid:perspt_id}``)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return _q(value)


class _PathIdConvertor(_IdConvertor):
    """The rest of the path, holding an id (``{node_id:perspt_path}``): a link may give a
    node id's "/" encoded or not."""

    regex = ".+"


register_url_convertor("perspt_id", _IdConvertor())
register_url_convertor("perspt_path", _PathIdConvertor())


class _Guard:
    """ASGI wrapper: security headers on every response, and with a password, nothing but
    the login page and static files for a browser that has not signed in."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        raw_path = scope.get("raw_path")
        if raw_path:
            scope = {**scope, "path": routing_path(raw_path)}
        path: str = scope["path"]
        open_path = path in ("/login", "/favicon.ico") or path.startswith("/static/")
        if (
            self.dashboard.password is not None
            and not open_path
            and not (self.dashboard.signed_in(scope))
        ):
            response: Response
            if path.startswith(("/api", "/sse")):
                response = JSONResponse({"error": "sign in first"}, status_code=401)
            else:
                response = RedirectResponse("/login?next=" + quote(path, safe="/"), 303)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def build_app(
    db_path: str | Path,
    *,
    password: str | None = None,
    poll_interval: float = 1.0,
    stream_lifetime: float = 300.0,
) -> ASGIApp:
    """See :func:`perspt_store.web.create_app`."""
    dashboard = Dashboard(
        StoreReader(db_path),
        password=password or None,
        poll_interval=poll_interval,
        stream_lifetime=stream_lifetime,
    )
    d = dashboard

    def tabs(prefix: str) -> Iterable[Route]:
        for name in ("llm", "decisions", "sandbox"):
            yield Route(f"{prefix}/sessions/{{sid:perspt_id}}/{name}", d.simple(name))
        yield Route(f"{prefix}/sessions/{{sid:perspt_id}}/merkle", d.merkle)
        yield Route(f"{prefix}/sessions/{{sid:perspt_id}}/dag", d.dag)
        yield Route(f"{prefix}/sessions/{{sid:perspt_id}}/energy", d.energy)
        yield Route(f"{prefix}/sessions/{{sid:perspt_id}}/nodes/{{node_id:perspt_path}}", d.node)
        yield Route(f"{prefix}/sessions/{{sid:perspt_id}}", d.session)
        yield Route(f"{prefix}/sessions" if prefix else "/", d.overview)

    routes = [
        *tabs(""),
        *tabs("/api"),
        Route("/api/sessions/{sid:perspt_id}/verify", d.verify),
        Route("/api", d.api_index),
        Route("/api/", d.api_index),
        Route("/sessions/{sid:perspt_id}/proofs/{seq:int}.json", d.proof),
        Route("/sessions/{sid:perspt_id}/checkpoint.json", d.checkpoint),
        Route("/sse", d.stream),
        Route("/sse/{sid:perspt_id}", d.stream),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    def not_found(request: Request, exc: Exception) -> Response:
        return d.error(
            request,
            404,
            "Not found",
            str(exc) if not isinstance(exc, HTTPException) else f"nothing at {request.url.path}",
        )

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return not_found(request, exc)
        return d.error(request, exc.status_code, "Error", str(exc.detail))

    def locked(request: Request, exc: Exception) -> Response:
        return d.error(request, 503, "Database busy", f"{exc} — retry in a moment.")

    def store_error(request: Request, exc: Exception) -> Response:
        return d.error(request, 500, "Store error", str(exc))

    def crash(request: Request, exc: Exception) -> Response:
        return d.error(
            request,
            500,
            "Internal error",
            "the dashboard failed to render this page; see the server's log",
        )

    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = {
        HTTPException: http_error,
        SessionNotFoundError: not_found,
        LookupError: not_found,
        StoreLockedError: locked,
        StoreError: store_error,
        Exception: crash,
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.reader.close()  # never leave the file held after the server stops

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.dashboard = dashboard
    return _Guard(app, dashboard)
