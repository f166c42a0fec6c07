"""The agent's web server: dashboard pages, the JSON API, live events, login.

One aiohttp application, started by ``run`` and ``demo`` on ``[api] bind``
(127.0.0.1 unless configured) and ``[api] port``. It serves:

* the pages: ``/`` (Armazém), ``/descascadores``, ``/dispositivos``,
  ``/alertas``, ``/lotes`` and ``/lotes/<code>`` (one lot; the code
  percent-encoded as in ``/api/lots/<code>``), all the same shell
  (``dashboards/web/index.html``) whose script draws the page from the JSON
  API; ``/static/...`` and ``/favicon.ico`` from the same folder (uPlot is
  vendored there: no request ever leaves the LAN);
* the JSON API (``agent.web.api``), and ``GET /api/events``, a Server-Sent Events
  stream of readings and change notices (``agent.web.live``);
* a lot's PDF and CSV reports, ``GET /api/lots/<code>/report.pdf`` and ``.csv``
  (``agent.web.lotreports``);
* ``GET /api/session``, ``POST /api/login``, ``POST /api/logout``;
* ``GET /api/time`` and ``POST /api/time``: the agent's clock, and a person setting it
  from their browser's clock (``agent.web.clock``);
* ``GET /metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (``agent.web.metrics``):
  open on loopback, from elsewhere with a token or login unless ``[api] metrics_public``.

Access (``agent.web.auth`` has the mechanics): with ``[api] read_access =
"open"`` (the default) anyone who can reach the port may look; every write
needs a logged-in user plus the session's CSRF token, or an API token. With
``"login"`` every read needs one of them too; the pages themselves still load,
and show only the login form. With neither users nor a token configured,
writes answer 403: a box nobody set up refuses rather than accepts. Writes
from another origin are refused whatever they carry. Every write is logged
with who made it. No page or answer ever contains a password hash, the
session key or an API token.

Behind a reverse proxy (``Frontend``): the client's address and scheme are
taken from ``X-Forwarded-For``/``X-Forwarded-Proto`` only when the request
comes from one of ``[api] trusted_proxies``; otherwise those headers are
ignored, and the peer is the client. ``[api] public_origin`` is the origin
browsers use (``https://armazem.example.coop``): writes and logins whose
``Origin`` is that, or this server's own origin as the request reached it, are
same-origin. Every request's ``Host`` must be one this server answers to, or it
answers 421: a page on another site that re-points its own name at this box (DNS
rebinding) gets nothing. Answered to: IP addresses; names without a dot
(``armazem``, ``localhost``) and ``.local`` names, which only the LAN resolves;
this box's host name; ``public_origin``'s host; ``[api] allowed_hosts``. A
rebinding attack needs a name its author controls in public DNS, so a dotted
name not in that list is refused.

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
import ipaddress
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES, RefusalLog, decode_payload
from coffee_telemetry.agent.config import ApiConfig
from coffee_telemetry.agent.errors import CommandRefused
from coffee_telemetry.agent.lots.records import AsyncLotRecords
from coffee_telemetry.agent.notify.ackpage import add_ack_routes
from coffee_telemetry.agent.notify.service import Notifier
from coffee_telemetry.agent.web import api, clock, lotreports
from coffee_telemetry.agent.web.api import (
    CLIENT,
    DEPS,
    WRITER,
    WRITER_VIA,
    WebDeps,
    json_response,
    refused,
)
from coffee_telemetry.agent.web.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Auth,
    AuthStore,
    Busy,
    Locked,
    Session,
)
from coffee_telemetry.agent.web.connlimit import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    ConnectionLimits,
    GuardedConnection,
    raise_nofile_limit,
)
from coffee_telemetry.agent.web.lots import LOT_RECORDS, lot_routes
from coffee_telemetry.agent.web.metrics import (
    healthz,
    install_metrics,
    is_local,
    metrics,
    readyz,
)

log = logging.getLogger(__name__)

#: The pages, by path; each is the same shell.
PAGES = ("/", "/descascadores", "/dispositivos", "/alertas", "/lotes", "/lotes/{code}")
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
_ASSETS = web.AppKey("assets", Path)
_STREAMS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("streams")
#: The connection caps, deadlines and counters of the app's server.
GUARD = web.AppKey("connection_guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Hops of ``X-Forwarded-For`` looked at, from the right.
MAX_FORWARDED_HOPS = 16


def _ip(text: str) -> _Address | None:
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_part(host: str) -> str:
    """The name or address of a ``Host`` header value, without its port, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Frontend:
    """What the server believes about how a request reached it (see the module docstring).

    Args:
        public_origin: ``[api] public_origin``.
        trusted_proxies: Networks whose forwarding headers are believed.
        allowed_hosts: More host names to answer to.
        bind: ``[api] bind`` (a name there is answered to as well).
    """

    def __init__(
        self,
        *,
        public_origin: str | None,
        trusted_proxies: tuple[_Network, ...],
        allowed_hosts: tuple[str, ...] = (),
        bind: str = "",
    ) -> None:
        self.public_origin = public_origin
        self.trusted_proxies = trusted_proxies
        names = {"localhost", *allowed_hosts}
        hostname = socket.gethostname().lower().rstrip(".")
        if hostname:
            short = hostname.split(".", 1)[0]
            names |= {hostname, short, f"{short}.local"}
        if public_origin is not None:
            names.add(_host_part(public_origin.split("://", 1)[1]))
        if bind and _ip(bind) is None:
            names.add(bind.lower())
        self.host_names = frozenset(names)

    def trusted(self, address: _Address) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return any(address in net for net in self.trusted_proxies)

    def _via_proxy(self, request: web.Request) -> bool:
        peer = _ip(request.remote or "")
        return peer is not None and self.trusted(peer)

    def client(self, request: web.Request) -> str:
        """The client's address: the peer, or what trusted proxies say it is."""
        peer = request.remote or "?"
        if not self.trusted_proxies or not self._via_proxy(request):
            return peer
        hops = ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
        client = peer
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = _ip(hop)
            if address is None:
                break  # garbage: the last proxy that appended something sane is the client
            client = str(address)
            if not self.trusted(address):
                break
        return client

    def scheme(self, request: web.Request) -> str:
        """``https`` or ``http``, as the client used it (a trusted proxy may say)."""
        if self.trusted_proxies and self._via_proxy(request):
            said = ",".join(request.headers.getall("X-Forwarded-Proto", ())).split(",")[-1]
            if said.strip().lower() in ("http", "https"):
                return said.strip().lower()
        return request.scheme

    def host_allowed(self, request: web.Request) -> bool:
        """Whether the request's ``Host`` is one this server answers to."""
        host = request.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0: no browser, no rebinding
        name = _host_part(host).rstrip(".")
        if _ip(name) is not None or name in self.host_names:
            return True
        # Names only the LAN resolves: no dot (intranet), or mDNS's .local.
        return bool(name) and ("." not in name or name.endswith(".local"))

    def same_origin(self, request: web.Request, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header) is this server's, as public or as reached."""
        origin = origin.strip().lower()
        reached = f"{self.scheme(request)}://{request.headers.get('Host', '').strip().lower()}"
        return origin in (reached, self.public_origin)

    def secure(self, request: web.Request) -> bool:
        """Whether the browser reached the pages over HTTPS."""
        return self.scheme(request) == "https" or (
            self.public_origin is not None and self.public_origin.startswith("https://")
        )


_FRONTEND = web.AppKey("frontend", Frontend)


class _HttpLog(logging.Logger):
    """aiohttp's connection logger, minus the tracebacks it logs for clients' mistakes.

    aiohttp answers a request it cannot parse (a bad request line, a duplicate
    ``Content-Length``, a header too long) with 400 and logs it at ERROR with a
    traceback: anyone on the LAN could fill the journal that way. Those become one
    warning line, at most 10 a minute; a handler's exception (a bug) stays an error.
    """

    def __init__(self) -> None:
        super().__init__(f"{__name__}.http")
        self.parent = log
        self._refusals = RefusalLog(self)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            self._refusals.warning(
                "Refused a malformed request from %s: %s",
                args[0] if args else "?",
                str(exc.message).strip()[:120],
            )
            return
        super().exception(msg, *args, **kwargs)


_HTTP_LOG = _HttpLog()


def _client(request: web.Request) -> str:
    return request.get(CLIENT) or request.remote or "?"


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
async def _front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    frontend = request.app[_FRONTEND]
    if not frontend.host_allowed(request):
        return refused(
            "this server does not answer to that host name (see [api] allowed_hosts and"
            " public_origin)",
            421,
        )
    request[CLIENT] = frontend.client(request)
    return await handler(request)


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


def _bearer(request: web.Request) -> str | web.Response | None:
    """The token's name; a refusal (wrong or throttled token); None when none is given.

    Call it once per request: a wrong token is counted each time.
    """
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    check = request.app[_AUTH].check_token(header.removeprefix("Bearer ").strip(), _client(request))
    if check.locked:
        answer = refused("too many wrong API tokens from this address; wait a few minutes", 429)
        answer.headers["Retry-After"] = "300"
        return answer
    if check.name is None:
        return refused("missing or wrong API token", 401)
    return check.name


def _cross_origin(request: web.Request) -> bool:
    # Browsers say where a request comes from; a write from another site is refused
    # outright (the CSRF token is the main defence, this is the second wall).
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and not request.app[_FRONTEND].same_origin(request, origin)


def _guard(access: api.Access, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.app[_AUTH]
        if access == "read":
            if request.app[DEPS].cfg.api.read_access == "open":
                return await handler(request)
            bearer = _bearer(request)
            if isinstance(bearer, web.Response):
                return bearer
            if bearer is None and _session(request) is None:
                return refused("log in to see this", 401)
            return await handler(request)
        if _cross_origin(request):
            log.warning(
                "Refused a cross-origin write to %s from %s", request.path, _client(request)
            )
            return refused("cross-origin request refused", 403)
        if not auth.login_enabled and not auth.tokens_enabled:
            return refused("writes are disabled: no users and no API token configured", 403)
        bearer = _bearer(request)
        if isinstance(bearer, web.Response):
            return bearer
        if bearer is not None:
            request[WRITER], request[WRITER_VIA] = bearer, f"token:{bearer}"
            return await handler(request)
        session = _session(request)
        if session is None:
            return refused("log in to change this", 401)
        if not auth.csrf_ok(session, request.headers.get(CSRF_HEADER)):
            log.warning("Refused a write to %s without a valid CSRF token", request.path)
            return refused("missing or wrong CSRF token (reload the page)", 403)
        request[WRITER], request[WRITER_VIA] = session.user, "session"
        return await handler(request)

    return guarded


def _ops_guard(handler: Handler) -> Handler:
    """Guard ``/metrics``, ``/healthz`` and ``/readyz`` (see ``agent.web.metrics``).

    Open on loopback, or everywhere with ``[api] metrics_public``; from elsewhere an API
    token or a login.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.app[DEPS].cfg.api.metrics_public or is_local(request):
            return await handler(request)
        bearer = _bearer(request)
        if isinstance(bearer, web.Response):
            return bearer
        if bearer is None and _session(request) is None:
            return refused("log in or send the API token to see this from another address", 401)
        return await handler(request)

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
    """Check a user's password (counted before it is hashed); set the session cookie."""
    auth, address = request.app[_AUTH], _client(request)
    if _cross_origin(request):
        return refused("cross-origin request refused", 403)
    if not auth.login_enabled:
        return refused("no users are configured ([[api.users]])", 403)
    if request.content_length is not None and request.content_length > MAX_COMMAND_BYTES:
        return refused(f"body over {MAX_COMMAND_BYTES} bytes", 413)
    try:
        doc: dict[str, object] | None = decode_payload(
            await request.content.read(MAX_COMMAND_BYTES + 1)
        )
    except CommandRefused:  # too long, too deep, not a JSON object
        doc = None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), str) for k in ("user", "password")
    ):
        return refused("send {'user': ..., 'password': ...}")
    try:
        result = await auth.login(str(doc["user"]), str(doc["password"]), address)
    except Busy:
        answer = refused("too many logins at once; try again in a few seconds", 503)
        answer.headers["Retry-After"] = "5"
        return answer
    if isinstance(result, Locked):
        answer = refused("too many wrong passwords; wait a few minutes", 429)
        answer.headers["Retry-After"] = str(max(1, math.ceil(result.retry_after_s)))
        return answer
    if result is None:
        return refused("wrong user or password", 401)
    response = json_response(_session_doc(request, result))
    response.set_cookie(
        SESSION_COOKIE,
        result.cookie,
        max_age=int(request.app[DEPS].cfg.api.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[DEPS].cfg.api.secure_cookies or request.app[_FRONTEND].secure(request),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """End the user's sessions everywhere (a new epoch) and remove the cookie."""
    session = _session(request)
    if session is not None:
        await request.app[_AUTH].logout(session)
    log.info("Logout: %r from %s", request.get(WRITER), _client(request))
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
            _client(request),
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


async def _close_auth(app: web.Application) -> None:
    app[_AUTH].close()


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
            "auth": request.app[_AUTH].stats_doc(),
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
    notifier: Notifier | None = None,
    lot_records: AsyncLotRecords | None = None,
) -> web.Application:
    """The web server as an aiohttp application (tests serve it on a free port).

    Args:
        deps: What the API reads and writes through.
        notifier: Serves the acknowledgement links of notifications (``/ack/<token>``).
        lot_records: The lot records the Lotes API reads (``agent.web.lots``).
        token: An API token named ``api``, besides ``[api]``'s tokens (``cfg.api_tokens``).
        session_key: MAC key of session cookies, kept in memory only (default: the
            session store in ``data_dir/web-auth.json``).
    """
    cfg = deps.cfg.api
    store = (
        AuthStore.open(deps.cfg.agent.data_dir / "web-auth.json")
        if session_key is None
        else AuthStore(session_key)
    )
    tokens = {name: t.get_secret_value() for name, t in deps.cfg.api_tokens.items()}
    if token:
        tokens.setdefault("api", token)
    app = web.Application(
        client_max_size=MAX_COMMAND_BYTES * 4,
        middlewares=[_track_requests, _security_headers, _front_door],
    )
    app[DEPS] = deps
    app[GUARD] = ConnectionGuard(connection_limits(cfg))
    app[_AUTH] = Auth(cfg.users, store=store, session_s=cfg.session_hours * 3600, tokens=tokens)
    app[_FRONTEND] = Frontend(
        public_origin=cfg.public_origin,
        trusted_proxies=cfg.proxy_networks,
        allowed_hosts=cfg.allowed_hosts,
        bind=cfg.bind,
    )
    app[_ASSETS] = (cfg.assets_dir or DEFAULT_ASSETS).resolve()
    app[_STREAMS] = set[asyncio.Task[None]]()
    app.on_shutdown.append(_close_streams)
    app.on_cleanup.append(_close_auth)
    if lot_records is not None:
        app[LOT_RECORDS] = lot_records
    for method, path, handler, access in (
        *lot_routes(api.ROUTES),
        *lotreports.ROUTES,
        *clock.ROUTES,
    ):
        app.router.add_route(method, path, _guard(access, handler))
    app.router.add_get("/api/events", _guard("read", events))
    app.router.add_get("/api/web", _guard("read", web_stats))
    install_metrics(app)
    for path, ops in (("/metrics", metrics), ("/healthz", healthz), ("/readyz", readyz)):
        app.router.add_get(path, _ops_guard(ops))
    app.router.add_get("/api/session", session_info)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", _guard("write", logout))
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/favicon.ico", favicon)
    if notifier is not None:
        add_ack_routes(app, notifier)
    writers = [
        f"{len(cfg.users)} users" if cfg.users else "",
        f"API tokens ({', '.join(sorted(tokens))})" if tokens else "",
    ]
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
        app,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=guard.limits.keepalive_s,
        logger=_HTTP_LOG,
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
