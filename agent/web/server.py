"""The agent's web server: dashboard pages, the JSON API, live events, login.

One aiohttp application, started by ``run`` and ``demo`` on ``[api] bind``
(127.0.0.1 unless configured) and ``[api] port``. It serves:

* the pages: ``/`` (Armazém), ``/descascadores``, ``/dispositivos``,
  ``/alertas``, all the same shell (``dashboards/web/index.html``) whose
  script draws the page from the JSON API; ``/static/...`` and
  ``/favicon.ico`` from the same folder (uPlot is vendored there: no request
  ever leaves the LAN);
* the JSON API (``agent.web.api``), and ``GET /api/events``, a Server-Sent Events
  stream of readings and change notices (``agent.web.live``);
* ``GET /api/session``, ``POST /api/login``, ``POST /api/logout``.

Access (``agent.web.auth`` has the mechanics): with ``[api] read_access =
"open"`` (the default) anyone who can reach the port may look; every write
needs a logged-in user plus the session's CSRF token, or the API token. With
``"login"`` every read needs one of them too; the pages themselves still load,
and show only the login form. With neither users nor a token configured,
writes answer 403: a box nobody set up refuses rather than accepts. Writes
from another origin are refused whatever they carry. Every write is logged
with who made it. No page or answer ever contains a password hash, the
session key or the API token.

Every response carries a strict Content-Security-Policy (scripts and styles
from this server only, no inline code): text from devices and lot codes can
only ever be text.

Nobody, logged in or not, may use up the agent's file descriptors or streams
(``agent.web.connlimit`` has the mechanics): open connections are capped in total
and per client address, and the caps are lowered at start to what the
open-file limit holds; a request head or body that does not arrive in time
closes its connection, and so does an idle keep-alive connection; live streams
are capped in total and per address too (503 past either). ``GET /api/web``
(read access) shows the counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES
from coffee_telemetry.agent.config import ApiConfig
from coffee_telemetry.agent.web import api
from coffee_telemetry.agent.web.api import DEPS, WRITER, WRITER_VIA, WebDeps, json_response, refused
from coffee_telemetry.agent.web.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Auth,
    Session,
    load_session_key,
)
from coffee_telemetry.agent.web.connlimit import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    ConnectionLimits,
    GuardedConnection,
    raise_nofile_limit,
)

log = logging.getLogger(__name__)

#: The pages, by path; each is the same shell.
PAGES = ("/", "/descascadores", "/dispositivos", "/alertas")
#: Where the pages' files are when ``[api] assets_dir`` is not set.
DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / "dashboards" / "web"
#: A quiet stream gets a comment this often, so proxies and NAT keep it open.
PING_S = 15.0
#: How often a stream checks that its page is still connected.
CHECK_S = 1.0

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_AUTH = web.AppKey("auth", Auth)
_TOKEN = web.AppKey("token", str)
_ASSETS = web.AppKey("assets", Path)
_STREAMS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("streams")
#: The connection caps, deadlines and counters of the app's server.
GUARD = web.AppKey("connection_guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def _track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Tell the connection its request head is in (its header deadline ends, a body
    # deadline may start) and, when the handler is done, that it may go idle.
    conn = GuardedConnection.of(request.transport)
    if conn is None:
        return await handler(request)
    conn.head_received(request.content.is_eof if request.body_exists else None)
    try:
        return await handler(request)
    finally:
        conn.response_sent()


# -- who is asking -------------------------------------------------------------------


def _session(request: web.Request) -> Session | None:
    return request.app[_AUTH].session(request.cookies.get(SESSION_COOKIE))


def _bearer(request: web.Request) -> bool | None:
    """True: a valid API token; False: a wrong one; None: none given."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    given, token = header.removeprefix("Bearer ").strip(), request.app[_TOKEN]
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def _cross_origin(request: web.Request) -> bool:
    # Browsers say where a request comes from; a write from another site is refused
    # outright (the CSRF token is the main defence, this is the second wall).
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


def _read_allowed(request: web.Request) -> bool:
    deps = request.app[DEPS]
    if deps.cfg.api.read_access == "open":
        return True
    return _bearer(request) is True or _session(request) is not None


def _guard(access: api.Access, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if access == "read":
            if not _read_allowed(request):
                return refused("log in to see this", 401)
            return await handler(request)
        if _cross_origin(request):
            log.warning("Refused a cross-origin write to %s from %s", request.path, request.remote)
            return refused("cross-origin request refused", 403)
        bearer = _bearer(request)
        if bearer is True:
            request[WRITER], request[WRITER_VIA] = "api", "token"
            return await handler(request)
        session = _session(request)
        auth = request.app[_AUTH]
        if bearer is None and session is not None:
            if not auth.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                log.warning("Refused a write to %s without a valid CSRF token", request.path)
                return refused("missing or wrong CSRF token (reload the page)", 403)
            request[WRITER], request[WRITER_VIA] = session.user, "session"
            return await handler(request)
        if not auth.login_enabled and not request.app[_TOKEN]:
            return refused("writes are disabled: no users and no API token configured", 403)
        if bearer is False:
            return refused("missing or wrong API token", 401)
        return refused("log in to change this", 401)

    return guarded


# -- session -------------------------------------------------------------------------


def _session_doc(request: web.Request, session: Session | None) -> dict[str, object]:
    deps, auth = request.app[DEPS], request.app[_AUTH]
    site = deps.cfg.site
    return {
        "site": {"id": site.id, "name": site.name, "timezone": site.timezone},
        "user": None if session is None else session.user,
        "can_write": session is not None,
        "login_enabled": auth.login_enabled,
        "read_open": deps.cfg.api.read_access == "open",
        "csrf": None if session is None else auth.csrf_token(session),
        "lang": deps.cfg.api.lang,
    }


async def session_info(request: web.Request) -> web.Response:
    """Who is logged in, the CSRF token, the site and its language."""
    return json_response(_session_doc(request, _session(request)))


async def login(request: web.Request) -> web.Response:
    """Check a user's password; set the session cookie."""
    auth, address = request.app[_AUTH], request.remote or "?"
    if _cross_origin(request):
        return refused("cross-origin request refused", 403)
    if not auth.login_enabled:
        return refused("no users are configured ([[api.users]])", 403)
    if auth.throttled(address):
        log.warning("Login refused: too many wrong passwords from %s", address)
        return refused("too many wrong passwords; wait a few minutes", 429)
    try:
        doc = json.loads(await request.content.read(MAX_COMMAND_BYTES + 1))
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), str) for k in ("user", "password")
    ):
        return refused("send {'user': ..., 'password': ...}")
    user, password = str(doc["user"]).strip().lower(), str(doc["password"])
    if not await asyncio.to_thread(auth.check_password, user, password):
        auth.record_failure(address)
        log.warning("Login failed for %r from %s", user[:32], address)
        return refused("wrong user or password", 401)
    auth.clear_failures(address)
    session = auth.issue(user)
    log.info("Login: %r from %s", user, address)
    response = json_response(_session_doc(request, session))
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=int(request.app[DEPS].cfg.api.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[DEPS].cfg.api.secure_cookies,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session (the cookie is removed)."""
    log.info("Logout: %r from %s", request.get(WRITER), request.remote)
    response = json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# -- live events ---------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: readings and change notices as they happen."""
    hub, cfg = request.app[DEPS].hub, request.app[DEPS].cfg.api
    streams = request.app[_STREAMS]
    task = asyncio.current_task()
    try:
        with hub.subscribe(
            request.remote or "?",
            max_total=cfg.max_streams,
            max_per_address=cfg.max_streams_per_address,
        ) as sub:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                    **SECURITY_HEADERS,
                }
            )
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            if task is not None:
                streams.add(task)
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            try:
                while request.transport is not None and not request.transport.is_closing():
                    # Wake up every second to notice a page that went away without a word
                    # (aiohttp does not cancel handlers when the client disconnects).
                    try:
                        async with asyncio.timeout(CHECK_S):
                            frame = await sub.next_frame()
                    except TimeoutError:
                        if loop.time() - quiet_since < PING_S:
                            continue
                        frame = b": ping\n\n"
                    await response.write(frame)
                    quiet_since = loop.time()
            except ConnectionResetError:
                pass  # the page went away
            finally:
                if task is not None:
                    streams.discard(task)
            return response
    except OverflowError as exc:
        answer = refused(str(exc), 503)
        answer.headers["Retry-After"] = "10"
        return answer


async def _close_streams(app: web.Application) -> None:
    streams = app[_STREAMS]
    for task in list(streams):
        task.cancel()


# -- connection limits ---------------------------------------------------------------


async def web_stats(request: web.Request) -> web.Response:
    """This server's connection and live-stream counters, and the limits in force."""
    guard, deps = request.app[GUARD], request.app[DEPS]
    limits = guard.limits
    return json_response(
        {
            "connections": dataclasses.asdict(guard.stats()),
            "timeouts_s": {
                "header": limits.header_timeout_s,
                "body": limits.body_timeout_s,
                "keepalive": limits.keepalive_s,
            },
            "streams": {
                "open": deps.hub.subscribers,
                "max": deps.cfg.api.max_streams,
                "max_per_address": deps.cfg.api.max_streams_per_address,
                "refused": deps.hub.refused,
            },
        }
    )


def connection_limits(cfg: ApiConfig) -> ConnectionLimits:
    """The connection limits ``[api]`` asks for (before they are fitted to the open-file limit)."""
    return ConnectionLimits(
        max_connections=cfg.max_connections,
        max_per_address=min(cfg.max_connections_per_address, cfg.max_connections),
        header_timeout_s=cfg.header_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
        keepalive_s=cfg.keepalive_s,
    )


class _GuardedSite(web.BaseSite):
    """A TCP site whose every accepted socket goes through the app's ``ConnectionGuard``."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=ACCEPT_BACKLOG)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog
        )


# -- pages ---------------------------------------------------------------------------


async def page(request: web.Request) -> web.StreamResponse:
    """The dashboard shell (the script draws the page for this path)."""
    index = request.app[_ASSETS] / "index.html"
    if not index.is_file():
        return web.Response(
            status=503,
            text=f"Dashboard files not found in {request.app[_ASSETS]} ([api] assets_dir).\n",
        )
    return web.FileResponse(index, headers={"Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.StreamResponse:
    """The tab icon (browsers ask for it at this fixed path)."""
    path = request.app[_ASSETS] / "favicon.ico"
    if not path.is_file():
        raise web.HTTPNotFound
    return web.FileResponse(path, headers={"Cache-Control": "max-age=86400"})


def make_web_app(
    deps: WebDeps,
    *,
    token: str | None = None,
    session_key: bytes | None = None,
) -> web.Application:
    """The web server as an aiohttp application (tests serve it on a free port).

    Args:
        deps: What the API reads and writes through.
        token: The API token (``[api] token_env``), if any.
        session_key: MAC key of session cookies (default: kept in ``data_dir``).
    """
    cfg = deps.cfg.api
    if session_key is None:
        session_key = load_session_key(deps.cfg.agent.data_dir / "web-session.key")
    app = web.Application(
        client_max_size=MAX_COMMAND_BYTES * 4, middlewares=[_track_requests, _security_headers]
    )
    app[DEPS] = deps
    app[GUARD] = ConnectionGuard(connection_limits(cfg))
    app[_AUTH] = Auth(cfg.users, key=session_key, session_s=cfg.session_hours * 3600)
    app[_TOKEN] = token or ""
    app[_ASSETS] = (cfg.assets_dir or DEFAULT_ASSETS).resolve()
    app[_STREAMS] = set[asyncio.Task[None]]()
    app.on_shutdown.append(_close_streams)
    for method, path, handler, access in api.ROUTES:
        app.router.add_route(method, path, _guard(access, handler))
    app.router.add_get("/api/events", _guard("read", events))
    app.router.add_get("/api/web", _guard("read", web_stats))
    app.router.add_get("/api/session", session_info)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", _guard("write", logout))
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/favicon.ico", favicon)
    writers = [f"{len(cfg.users)} users" if cfg.users else "", "the API token" if token else ""]
    log.info(
        "Dashboard access: reads %s; writes %s",
        "open to anyone who reaches the port" if cfg.read_access == "open" else "need a login",
        "by " + " or ".join(w for w in writers if w) if any(writers) else "disabled",
    )
    if app[_ASSETS].is_dir():
        app.router.add_static("/static/", app[_ASSETS], follow_symlinks=False)
    else:
        log.error("Dashboard files not found in %s ([api] assets_dir)", app[_ASSETS])
    return app


def _fit_to_open_files(guard: ConnectionGuard) -> None:
    """Raise the open-file limit as far as allowed, and lower the caps to what it holds."""
    asked, nofile = guard.limits, raise_nofile_limit()
    guard.limits = fitted = asked.fit(nofile)
    if fitted.max_connections < asked.max_connections:
        log.warning(
            "[api] max_connections = %d does not fit an open-file limit of %d:"
            " serving at most %d connections (raise LimitNOFILE)",
            asked.max_connections,
            nofile,
            fitted.max_connections,
        )
    log.info(
        "Web server: at most %d connections (%d per address) under an open-file limit of %d;"
        " header, body and keep-alive timeouts %g, %g and %g s",
        fitted.max_connections,
        fitted.max_per_address,
        nofile,
        fitted.header_timeout_s,
        fitted.body_timeout_s,
        fitted.keepalive_s,
    )


@asynccontextmanager
async def open_web(app: web.Application, *, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``app`` (made by ``make_web_app``) on ``host:port`` for the duration.

    The process's open-file limit is raised first, and the connection caps fitted to it.
    """
    guard = app[GUARD]
    _fit_to_open_files(guard)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=guard.limits.keepalive_s
    )
    await runner.setup()
    try:
        site = _GuardedSite(runner, host, port, guard)
        try:
            await site.start()
        except OSError as exc:
            # Readings matter more than the pages: keep collecting, say so loudly.
            log.error("Web server not started: cannot listen on %s:%d: %s", host, port, exc)
        else:
            log.info("Dashboard on http://%s:%d/", host, port)
        yield
    finally:
        await runner.cleanup()
