"""The agent's JSON API: what the dashboard pages read, and the writes they make.

Served by ``agent.web.server`` (which adds the pages, login, CSRF checks and live
events). Every answer is JSON; times are integer nanoseconds since the epoch
(``*_ns``). Reads::

    GET  /api/health                          agent, devices and sinks (as on MQTT)
    GET  /api/warehouse                       meters, stations' lots, today's lots, wet-lot alerts
    GET  /api/series?measurement=&device=&field=&range=1h|6h|24h|7d|30d   (or start_ns, end_ns)
    GET  /api/hullers                         hullers, service tasks, running hours per day
    GET  /api/devices                         device health, sink backlogs, history disk use,
                                              the agent (version, uptime, public key)
    GET  /api/lots                            active lot per station
    GET  /api/alerts                          open alerts
    GET  /api/alerts/recent                   notified alert events of this run, newest first

Writes (who may, and the CSRF rule, in ``agent.web.auth``)::

    POST /api/lots/{station}              {"lot": "L-0042" | null}
    POST /api/alerts/{rule}/{subject}/ack {}
    POST /api/hullers/{huller}/services   {"task": "oil", "note": "...", "at": "2026-11-30 08:00"}

Writes go through the same code as the MQTT commands and the CLI (the lot
service, the alert engine, ``hullers.record.record_service``), so validation and
replies are identical. A refused write is 400 with ``{"ok": false, "error":
...}``; a body over ``MAX_COMMAND_BYTES`` is 413. Who wrote is the logged-in
user (a ``by`` in the body is ignored), or the body's ``by`` with an API token (the
source is then ``token:<name>``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from aiohttp import web

from coffee_telemetry.agent.alerts.kinds import WetLotRule, wet_lot_rule
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.commands import MAX_COMMAND_BYTES, CommandBoundary, Outgoing
from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.evidence.identity import BoxIdentity
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.history.queries import choose_resolution
from coffee_telemetry.agent.history.schema import NS
from coffee_telemetry.agent.history.service import AsyncHistory
from coffee_telemetry.agent.hullers.record import service_command
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import AsyncMaintenanceStore
from coffee_telemetry.agent.hullers.tasks import huller_status
from coffee_telemetry.agent.lots.readiness import ReadinessService
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.outbox.store import Outbox
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.timesources import TimeControl
from coffee_telemetry.agent.web.live import LiveHub

log = logging.getLogger(__name__)

#: Chart ranges the pages offer, in nanoseconds.
RANGES_NS = {
    "1h": 3600 * NS,
    "6h": 6 * 3600 * NS,
    "24h": 24 * 3600 * NS,
    "7d": 7 * 86400 * NS,
    "30d": 30 * 86400 * NS,
}
#: Longest range a ``series`` query may ask for (the hourly rollups' default retention).
MAX_RANGE_NS = 731 * 86400 * NS
#: Points per chart: one per pixel column of a wide screen is plenty.
MAX_POINTS = 1000
#: Days in the hullers' running-hours chart.
HOURS_CHART_DAYS = 14

MOISTURE_DRIVERS = ("moisture.",)


def _version() -> str:
    try:
        return version("coffee-telemetry")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "0+unknown"


@dataclass(slots=True)
class WebDeps:
    """What the API reads and writes through (None: that part of the agent is off).

    Attributes:
        cfg: The site configuration.
        health: Device and sink health.
        hub: Live fan-out (also the newest reading per device).
        lots: Active lots per station.
        alerts: The alert service.
        history: The local history.
        hullers: The huller service (live totals).
        maintenance: The maintenance store.
        outbox: The outbox (backlog per sink).
        commands: The command boundary every write goes through (by default one
            with the lot, alert and service commands of the parts given).
        publish: Sends replies to MQTT, when connected (not retained).
        time_control: The agent's clock: its quality and sources, and a person setting it.
        clock_ns: Wall clock.
        started_ns: When the agent started.
        station_key: The box's public key (``agent.evidence.identity``), shown on the
            Dispositivos page; None without the evidence extra.
    """

    cfg: Config
    health: Health = field(default_factory=Health)
    hub: LiveHub = field(default_factory=LiveHub)
    lots: LotService | None = None
    alerts: AlertService | None = None
    history: AsyncHistory | None = None
    hullers: HullerService | None = None
    maintenance: AsyncMaintenanceStore | None = None
    outbox: Outbox | None = None
    commands: CommandBoundary = field(default_factory=CommandBoundary)
    publish: Callable[[Outgoing], None] | None = None
    time_control: TimeControl | None = None
    #: Lots' rest after the dryer and readiness to hull (``agent.lots.readiness``).
    readiness: ReadinessService | None = None
    clock_ns: Callable[[], int] = time.time_ns
    started_ns: int = field(default_factory=time.time_ns)
    version: str = field(default_factory=_version)
    station_key: BoxIdentity | None = None
    #: The wet-lot rule as configured: the pages' thresholds and wet badges follow it.
    wet_rule: WetLotRule = field(init=False)

    def __post_init__(self) -> None:
        self.wet_rule = wet_lot_rule(self.cfg.alerts.wet_lot)
        if not self.commands.handlers:
            if self.lots is not None:
                self.commands.add("lot", self.lots.handle_command)
            if self.alerts is not None:
                self.commands.add("ack", self.alerts.handle_command)
            self.commands.add(
                "service",
                service_command(
                    self.cfg,
                    clock_ns=self.clock_ns,
                    on_done=lambda done: self.hub.publish(
                        "service", {"huller": done.record.huller, "task": done.record.task}
                    ),
                ),
            )


DEPS = web.AppKey("deps", WebDeps)
#: Set by ``agent.web.server`` on each write request: who is writing, and how they proved it
#: (``session``, or ``token:<name>``).
WRITER = web.RequestKey("writer", str)
WRITER_VIA = web.RequestKey("writer_via", str)
#: Set by ``agent.web.server`` on every request: the client's address (past trusted proxies).
CLIENT = web.RequestKey("client", str)


def json_response(doc: object, status: int = 200) -> web.Response:
    """``doc`` as JSON (UTF-8, not ASCII-escaped), never cached."""
    return web.json_response(
        doc,
        status=status,
        dumps=lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ":")),
        headers={"Cache-Control": "no-store"},
    )


def refused(error: str, status: int = 400) -> web.Response:
    """A refused request, the reason in ``error``."""
    return json_response({"ok": False, "error": error}, status)


def _deps(request: web.Request) -> WebDeps:
    return request.app[DEPS]


def _local_midnight_ns(cfg: Config, now_ns: int) -> int:
    zone = cfg.site.zone
    today = datetime.fromtimestamp(now_ns / NS, zone).date()
    return int(datetime(today.year, today.month, today.day, tzinfo=zone).timestamp()) * NS


def _num(fields: Mapping[str, object], name: str) -> float | None:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# -- reads ---------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Devices and sinks as the agent sees them."""
    h = _deps(request).health
    return json_response(
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
            "interfaces": {name: i.as_doc() for name, i in sorted(h.interfaces.items())},
            "counters": {name: counters() for name, counters in sorted(h.counters.items())},
        }
    )


async def lots(request: web.Request) -> web.Response:
    """Active lot per station."""
    service = _deps(request).lots
    active = {} if service is None else service.active
    return json_response(
        {
            station: {"lot": a.lot, "set_at_ns": a.set_at_ns, "by": a.set_by, "source": a.source}
            for station, a in sorted(active.items())
        }
    )


def _open_alerts(deps: WebDeps) -> list[dict[str, object]]:
    return [] if deps.alerts is None else deps.alerts.open_docs()


async def alerts(request: web.Request) -> web.Response:
    """Open alerts."""
    return json_response(_open_alerts(_deps(request)))


async def recent_alerts(request: web.Request) -> web.Response:
    """Notified alert events of this run, newest first."""
    service = _deps(request).alerts
    return json_response([] if service is None else service.recent())


async def warehouse(request: web.Request) -> web.Response:
    """Everything the warehouse page shows."""
    deps = _deps(request)
    cfg, now = deps.cfg, deps.clock_ns()
    meters_cfg = [d for d in cfg.devices if d.enabled and d.driver.startswith(MOISTURE_DRIVERS)]
    stored = {} if deps.history is None else await deps.history.latest("moisture")
    meters = []
    for dev in meters_cfg:
        live: Reading | None = deps.hub.latest.get(dev.id)
        fields: Mapping[str, object]
        if live is not None and live.measurement == "moisture":
            ts, fields, tags = live.ts_ns, live.fields, live.tags
        elif dev.id in stored:
            s = stored[dev.id]
            ts, fields, tags = s.ts_ns, s.fields, s.tags
        else:
            ts, fields, tags = None, {}, {}
        entry = deps.health.devices.get(dev.id)
        product = tags.get("product") or dev.product or None
        moisture = _num(fields, "moisture_pct")
        threshold = deps.wet_rule.threshold_for(product or "")
        meters.append(
            {
                "device": dev.id,
                "station": dev.station,
                "driver": dev.driver,
                "online": entry is not None and entry.state is DeviceState.ONLINE,
                "last_seen_ns": None if entry is None else entry.last_frame_ns,
                "ts_ns": ts,
                "moisture_pct": moisture,
                "temperature_c": _num(fields, "temperature_c"),
                "lot": tags.get("lot") or None,
                "product": product,
                "active_lot": None
                if deps.lots is None or not dev.station
                else deps.lots.lot_for(dev.station),
                "threshold_pct": threshold,
                "wet": moisture is not None and moisture >= threshold,
            }
        )
    active = {} if deps.lots is None else deps.lots.active
    stations = sorted(deps.lots.stations) if deps.lots is not None else []
    today = {}
    if deps.history is not None:
        if deps.history.sync.pending:
            # The page refetches right after a live reading; without this its lot would
            # show up only after the history's next write (up to a second later).
            await deps.history.flush()
        today = await deps.history.lots_today(_local_midnight_ns(cfg, now))
    open_alerts = [a for a in _open_alerts(deps) if a["rule"] == "wet_lot"]
    alerted = {a["subject"] for a in open_alerts}
    # A lot is wet when the wet-lot rule says so (k of its last n samples), or when its
    # mean is at or above the threshold: the badge and the alert never disagree.
    lots_today = [
        {
            "lot": s.lot,
            "station": s.station,
            "product": s.product or None,
            "count": s.count,
            "mean_pct": round(s.mean_pct, 3),
            "max_pct": round(s.max_pct, 3),
            "last_ns": s.last_ns,
            "threshold_pct": deps.wet_rule.threshold_for(s.product),
            "wet": s.lot in alerted or s.mean_pct >= deps.wet_rule.threshold_for(s.product),
        }
        for s in sorted(today.values(), key=lambda s: s.last_ns, reverse=True)
    ]
    return json_response(
        {
            "now_ns": now,
            "meters": meters,
            "stations": [
                {
                    "station": st,
                    "lot": a.lot if (a := active.get(st)) else None,
                    "set_at_ns": a.set_at_ns if a else None,
                    "by": a.set_by if a else None,
                }
                for st in stations
            ],
            "lots_today": lots_today,
            "alerts": open_alerts,
        }
    )


async def series(request: web.Request) -> web.Response:
    """One series for a chart, at most ``MAX_POINTS`` points, as uPlot's columns."""
    deps = _deps(request)
    q = request.query
    measurement, device, fld = q.get("measurement", ""), q.get("device", ""), q.get("field", "")
    if not (measurement and device and fld):
        return refused("measurement, device and field are required")
    now = deps.clock_ns()
    if "start_ns" in q or "end_ns" in q:
        try:
            start, end = int(q.get("start_ns", "")), int(q.get("end_ns", str(now)))
        except ValueError:
            return refused("start_ns and end_ns must be integers (ns since the epoch)")
        if not 0 < end - start <= MAX_RANGE_NS:
            return refused("end_ns must be after start_ns, by at most 731 days")
    else:
        span = RANGES_NS.get(q.get("range", "24h"))
        if span is None:
            return refused(f"range must be one of {', '.join(RANGES_NS)}")
        start, end = now - span, now
    if deps.history is None:
        return refused("the local history is disabled ([history] enabled = false)", 404)
    resolution = choose_resolution(start, end, MAX_POINTS)[0].value
    points = await deps.history.series(measurement, device, fld, start, end, max_points=MAX_POINTS)
    return json_response(
        {
            "device": device,
            "measurement": measurement,
            "field": fld,
            "resolution": resolution,
            "start_ns": start,
            "end_ns": end,
            "t": [ts / NS for ts, _ in points],
            "v": [round(v, 4) for _, v in points],
        }
    )


async def hullers(request: web.Request) -> web.Response:
    """Hullers: running state, bags, hours, service tasks and hours per day."""
    deps = _deps(request)
    cfg, now = deps.cfg, deps.clock_ns()
    states = deps.hullers.states() if deps.hullers is not None else {}
    last = await deps.maintenance.last_services() if deps.maintenance is not None else {}
    stored = {} if deps.history is None else await deps.history.latest("huller")
    out = []
    for h in cfg.hullers:
        live = deps.hub.latest.get(h.id)
        fields: Mapping[str, object] = {}
        if live is not None and live.measurement == "huller":
            fields = live.fields
        elif h.id in stored:
            fields = stored[h.id].fields
        running = fields.get("running")
        entry = deps.health.devices.get(h.id)
        status = huller_status(h, states.get(h.id), None, last)
        daily = (
            []
            if deps.history is None
            else await deps.history.daily_hours(h.id, HOURS_CHART_DAYS, tz=cfg.site.zone)
        )
        out.append(
            {
                "id": h.id,
                "name": h.name,
                "station": h.station,
                "online": entry is not None and entry.state is DeviceState.ONLINE,
                "last_seen_ns": None if entry is None else entry.last_frame_ns,
                "running": bool(running) if running is not None else None,
                "bags_per_hour": _num(fields, "bags_per_hour"),
                "bags_today": _num(fields, "bags_today"),
                "bags_total": status["bags_total"],
                "hours_today": _num(fields, "hours_today"),
                "hours_total": status["hours_total"],
                "tasks": status["tasks"],
                "daily_hours": [{"day": d.isoformat(), "hours": round(v, 3)} for d, v in daily],
            }
        )
    return json_response({"now_ns": now, "hullers": out})


async def devices(request: web.Request) -> web.Response:
    """Device health, each sink's backlog and last delivery, the history's disk use."""
    deps = _deps(request)
    now = deps.clock_ns()
    backlog = {}
    if deps.outbox is not None:
        stats = await deps.outbox.stats()
        backlog = {b.sink: b for b in stats.sinks}
    history = None
    if deps.history is not None:
        hs = await deps.history.stats()
        history = {
            "used_bytes": hs.used_bytes,
            "max_bytes": hs.max_bytes,
            "dropped_raw_total": hs.dropped_raw_total,
        }
    return json_response(
        {
            "now_ns": now,
            "devices": [
                {
                    "device": name,
                    "driver": d.driver,
                    "port": d.port,
                    "station": d.station,
                    "state": d.state.value,
                    "since_ns": d.since_ns,
                    "last_frame_ns": d.last_frame_ns,
                    "last_reading_ns": d.last_reading_ns,
                    "frames_ok": d.frames_ok,
                    "frames_discarded": d.frames_discarded,
                    "readings": d.readings,
                    "reconnects": d.reconnects,
                    "last_error": d.last_error,
                    "errors": dict(sorted(d.errors.items())),
                }
                for name, d in sorted(deps.health.devices.items())
            ],
            "sinks": [
                {
                    "sink": name,
                    "connected": s.connected,
                    "backlog": b.backlog if (b := backlog.get(name)) else 0,
                    "oldest_ns": b.oldest_ns if b else None,
                    "last_delivery_ns": s.last_delivery_ns,
                    "delivered": s.delivered,
                    "rejected": s.rejected,
                    "dropped": b.dropped_total if b else 0,
                    "last_error": s.last_error,
                }
                for name, s in sorted(deps.health.sinks.items())
            ],
            "history": history,
            "agent": {
                "version": deps.version,
                "started_ns": deps.started_ns,
                "uptime_s": round((now - deps.started_ns) / NS, 1),
                "public_key": (
                    None
                    if (key := deps.station_key) is None
                    else {"key": key.public_key, "fingerprint": key.fingerprint}
                ),
            },
        }
    )


# -- writes --------------------------------------------------------------------------


async def _body(request: web.Request) -> bytes | web.Response:
    """The request body, at most ``MAX_COMMAND_BYTES`` (413 past it); parsed by the boundary."""
    if request.content_length is not None and request.content_length > MAX_COMMAND_BYTES:
        return refused(f"body over {MAX_COMMAND_BYTES} bytes", 413)
    data = await request.content.read(MAX_COMMAND_BYTES + 1)
    if len(data) > MAX_COMMAND_BYTES:
        return refused(f"body over {MAX_COMMAND_BYTES} bytes", 413)
    return data


def _audit(request: web.Request, what: str, result: str) -> None:
    log.info(
        "Web write %s by %r (%s) from %s: %s",
        what,
        request.get(WRITER),
        request.get(WRITER_VIA),
        request.get(CLIENT, request.remote),
        result,
    )


async def _command(request: web.Request, path: tuple[str, ...]) -> web.Response:
    """Run a write through the command boundary, as MQTT commands are."""
    deps = _deps(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if request.get(WRITER_VIA) == "session":
        # A logged-in user is who they logged in as (a "by" in the body is ignored).
        source, by = f"web:{request[WRITER]}", request[WRITER]
    else:
        source, by = request[WRITER_VIA], request[WRITER]  # a token holder may name someone
    reply = await deps.commands.submit(path, body, source=source, by=by)
    if deps.publish is not None:
        deps.publish(reply.outgoing())  # MQTT subscribers see the API's replies too
    what = "/".join(path)[:120]
    _audit(request, repr(what), "ok" if reply.ok else f"refused: {reply.doc.get('error')}")
    return json_response(reply.doc, 200 if reply.ok else 500 if reply.failed else 400)


async def set_lot(request: web.Request) -> web.Response:
    """Set or clear a station's lot."""
    return await _command(request, ("lot", request.match_info["station"]))


async def ack_alert(request: web.Request) -> web.Response:
    """Acknowledge a firing alert."""
    if _deps(request).alerts is None:
        return refused("alerts are disabled")
    return await _command(
        request, ("ack", request.match_info["rule"], request.match_info["subject"])
    )


async def service_done(request: web.Request) -> web.Response:
    """Record a service task as done (like ``maintenance done``)."""
    return await _command(request, ("service", request.match_info["huller"]))


Access = Literal["read", "write"]

#: Every API route: method, path, handler, and what it needs.
ROUTES: tuple[
    tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], Access], ...
] = (
    ("GET", "/api/health", health, "read"),
    ("GET", "/api/warehouse", warehouse, "read"),
    ("GET", "/api/series", series, "read"),
    ("GET", "/api/hullers", hullers, "read"),
    ("GET", "/api/devices", devices, "read"),
    ("GET", "/api/lots", lots, "read"),
    ("GET", "/api/alerts", alerts, "read"),
    ("GET", "/api/alerts/recent", recent_alerts, "read"),
    ("POST", "/api/lots/{station}", set_lot, "write"),
    ("POST", "/api/alerts/{rule}/{subject:.+}/ack", ack_alert, "write"),
    ("POST", "/api/hullers/{huller}/services", service_done, "write"),
)
