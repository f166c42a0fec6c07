"""The agent's local HTTP API: read state, set lots, acknowledge alerts.

Bound to 127.0.0.1 by default (``[api] bind``). Reading is open to whoever can
reach the port; every write needs ``Authorization: Bearer <token>`` with the
token from ``[api] token_env`` (compared in constant time). With no token
configured, write endpoints answer 403: a misconfigured box refuses rather
than accepts. Writes go through the same code as the MQTT commands (the lot
service, the alert engine), so validation and replies are identical.

    GET  /api/health                        agent, devices and sinks
    GET  /api/lots                          active lot per station
    GET  /api/alerts                        open alerts
    POST /api/lots/{station}                {"lot": "L-0042" | null, "by": "maria"}
    POST /api/alerts/{rule}/{subject}/ack   {"by": "maria"}

Answers are JSON; a refused write is 400 with ``{"ok": false, "error": ...}``
(the same reason the MQTT reply would carry), 401 without a valid token, 413
for a body over 1 KiB.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from agent.alerts import AlertService
from agent.health import Health
from agent.lotservice import MAX_COMMAND_BYTES, LotService, Outgoing
from agent.rules import alert_payload

log = logging.getLogger(__name__)

_HEALTH = web.AppKey("health", Health)
_LOTS = web.AppKey("lots", LotService)
_ALERTS = web.AppKey("alerts", object)
_TOKEN = web.AppKey("token", str)
_PUBLISH = web.AppKey("publish", object)


def _json(doc: object, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _authorized(request: web.Request) -> web.Response | None:
    token = request.app[_TOKEN]
    if not token:
        return _json({"ok": False, "error": "writes are disabled: no API token configured"}, 403)
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return _json({"ok": False, "error": "missing or wrong API token"}, 401)
    return None


async def _body(request: web.Request) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > MAX_COMMAND_BYTES:
        return _json({"ok": False, "error": f"body over {MAX_COMMAND_BYTES} bytes"}, 413)
    data = await request.content.read(MAX_COMMAND_BYTES + 1)
    if len(data) > MAX_COMMAND_BYTES:
        return _json({"ok": False, "error": f"body over {MAX_COMMAND_BYTES} bytes"}, 413)
    return data


def _from_replies(request: web.Request, replies: list[Outgoing]) -> web.Response:
    publish = request.app[_PUBLISH]
    if callable(publish):
        for reply in replies:
            publish(reply)  # MQTT subscribers see API commands' replies too
    doc = json.loads(replies[0].payload)
    return _json(doc, 200 if doc.get("ok") else 400)


async def health(request: web.Request) -> web.Response:
    """Devices and sinks as the agent sees them."""
    h = request.app[_HEALTH]
    return _json(
        {
            "time_ns": time.time_ns(),
            "devices": {name: d.as_status() for name, d in sorted(h.devices.items())},
            "sinks": {
                name: {
                    "connected": s.connected,
                    "last_delivery_ns": s.last_delivery_ns,
                    "delivered": s.delivered,
                    "rejected": s.rejected,
                    "last_error": s.last_error,
                }
                for name, s in sorted(h.sinks.items())
            },
        }
    )


async def lots(request: web.Request) -> web.Response:
    """Active lot per station."""
    active = request.app[_LOTS].active
    return _json(
        {
            station: {"lot": a.lot, "set_at_ns": a.set_at_ns, "by": a.set_by, "source": a.source}
            for station, a in sorted(active.items())
        }
    )


async def alerts(request: web.Request) -> web.Response:
    """Open alerts."""
    service = request.app[_ALERTS]
    if not isinstance(service, AlertService):
        return _json([])
    return _json([alert_payload(a) for a in service.engine.alerts(time.time_ns())])


async def set_lot(request: web.Request) -> web.Response:
    """Set or clear a station's lot (token required)."""
    if (refused := _authorized(request)) is not None:
        return refused
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    station = request.match_info["station"]
    return _from_replies(request, await request.app[_LOTS].handle_command(f"lot/{station}", body))


async def ack_alert(request: web.Request) -> web.Response:
    """Acknowledge a firing alert (token required)."""
    if (refused := _authorized(request)) is not None:
        return refused
    service = request.app[_ALERTS]
    if not isinstance(service, AlertService):
        return _json({"ok": False, "error": "alerts are disabled"}, 400)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    rule, subject = request.match_info["rule"], request.match_info["subject"]
    return _from_replies(request, await service.handle_command(f"ack/{rule}/{subject}", body))


def make_app(
    *,
    health_registry: Health,
    lot_service: LotService,
    alert_service: AlertService | None,
    token: str | None,
    publish: Callable[[Outgoing], None] | None = None,
) -> web.Application:
    """The API as an aiohttp application (tests serve it on a random port)."""
    app = web.Application(client_max_size=MAX_COMMAND_BYTES * 4)
    app[_HEALTH] = health_registry
    app[_LOTS] = lot_service
    app[_ALERTS] = alert_service
    app[_TOKEN] = token or ""
    app[_PUBLISH] = publish
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/lots", lots)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_post("/api/lots/{station}", set_lot)
    app.router.add_post("/api/alerts/{rule}/{subject:.+}/ack", ack_alert)
    return app


@asynccontextmanager
async def open_api(app: web.Application, *, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``app`` on ``host:port`` for the duration."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            # Readings matter more than the API: keep collecting, say so loudly.
            log.error("Local API not started: cannot listen on %s:%d: %s", host, port, exc)
        else:
            log.info("Local API on http://%s:%d/api/", host, port)
        yield
    finally:
        await runner.cleanup()
