"""Prometheus metrics, liveness and readiness: ``/metrics``, ``/healthz``, ``/readyz``.

For the people who run many boxes: a Prometheus server (or anything that reads its
text format) scrapes ``GET /metrics``; a supervisor asks ``GET /healthz`` (the event
loop answers) and ``GET /readyz`` (the agent is doing its job: 200, or 503 with the
reasons as JSON).

Theory of operation
-------------------
Nothing here counts anything. The device loops, delivery loops, outbox, history and
notification queues already keep their counters (``agent.health.Health``, the
outbox's and history's stats, the notifier's health document); a scrape reads them
once, at scrape time, and turns them into metric families with ``AgentCollector``,
a custom ``prometheus_client`` collector. A reading costs nothing more than it did.

A scrape first takes a ``Snapshot``: the parts that live on a store's thread (outbox
and history stats) are awaited, each within ``STATS_TIMEOUT_S``; a part that does not
answer is left out of this scrape (``coffee_telemetry_outbox_up`` says so) instead of
holding the request. Scrapes less than ``STATS_MAX_AGE_S`` apart share one read
(``SnapshotSource``): the outbox's thread also commits readings, and no number of
scrapers may keep it busy. Then the collector reads the snapshot and the in-memory health
synchronously, with no ``await`` in between, so one scrape is one consistent moment of
the event loop.

Label values come from the site file (device ids, stations, sinks) and from what the
devices send (discard and error reasons); ``prometheus_client`` escapes them, and the
reasons per device are capped at ``MAX_REASONS`` (the rest are summed as ``other``),
so a meter printing garbage cannot grow a scrape without bound.

Who may read
------------
With ``[api] metrics_public = false`` (the default) the three paths need no login for
a client on the loopback interface (a Prometheus or a supervisor on the box itself);
any other client needs an API token (``Authorization: Bearer``) or a logged-in
session, whatever ``read_access`` says. The client is the one ``agent.web.server``
found (past trusted proxies); a loopback request that carries ``X-Forwarded-For`` or
``Forwarded`` came through a proxy this server does not trust, and is not local.
``metrics_public = true`` opens them to anyone who reaches the port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from coffee_telemetry.agent.health import DeviceState, Health, InterfaceState
from coffee_telemetry.agent.history.store import HistoryStats
from coffee_telemetry.agent.outbox.stats import OutboxStats
from coffee_telemetry.agent.web.api import CLIENT, DEPS, WebDeps, json_response

if TYPE_CHECKING:
    # Loaded on the first scrape (``prometheus_client`` is 4 MB of a box's memory).
    from prometheus_client import ProcessCollector
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = [
    "MAX_REASONS",
    "PREFIX",
    "STATS_MAX_AGE_S",
    "STATS_TIMEOUT_S",
    "AgentCollector",
    "Readiness",
    "Snapshot",
    "SnapshotSource",
    "exposition",
    "healthz",
    "install_metrics",
    "is_local",
    "metrics",
    "readiness",
    "readyz",
    "sink_state",
    "take_snapshot",
]

log = logging.getLogger(__name__)

PREFIX = "coffee_telemetry"
#: Longest wait for a store's stats in one scrape.
STATS_TIMEOUT_S = 2.0
#: Scrapes within this of a stats read share it (see ``SnapshotSource``).
STATS_MAX_AGE_S = 1.0
#: Distinct error or discard reasons shown per device; the rest are summed as ``other``.
MAX_REASONS = 16
#: Headers a reverse proxy adds: a loopback request carrying one is not local.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

_NS = 1e9
_DEVICE = ("device", "driver", "station")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape reads (see the module docstring).

    Attributes:
        health: The agent's live health (read synchronously by the collector).
        site: The site id.
        version: The agent's version.
        started_ns: When the agent started (wall clock).
        outbox: The outbox's stats; None when it has none or they did not come.
        outbox_error: Why ``outbox`` is None although an outbox is configured.
        history: The history's stats, if a history is kept and answered.
        open_alerts: The open alerts, as ``AlertService.open_docs``.
        alerts_enabled: Whether the alert service runs (else no ``alerts_open`` family).
    """

    health: Health
    site: str
    version: str
    started_ns: int
    outbox: OutboxStats | None = None
    outbox_error: str | None = None
    history: HistoryStats | None = None
    open_alerts: tuple[Mapping[str, object], ...] = ()
    alerts_enabled: bool = False


@dataclass(frozen=True, slots=True)
class _StoreStats:
    outbox: OutboxStats | None
    outbox_error: str | None
    history: HistoryStats | None


async def _read_stores(deps: WebDeps) -> _StoreStats:
    outbox = history = None
    outbox_error: str | None = None
    if deps.outbox is not None:
        try:
            async with asyncio.timeout(STATS_TIMEOUT_S):
                outbox = await deps.outbox.stats()
        except TimeoutError:
            outbox_error = f"outbox stats took over {STATS_TIMEOUT_S:g} s"
        except Exception as exc:  # OutboxError, or its thread already stopped: closed
            outbox_error = f"outbox closed or unreadable: {type(exc).__name__}: {exc}"
    else:
        outbox_error = "no outbox"
    if deps.history is not None:
        try:
            async with asyncio.timeout(STATS_TIMEOUT_S):
                history = await deps.history.stats()
        except Exception as exc:
            log.debug("History stats left out of a scrape: %r", exc)
    return _StoreStats(outbox, outbox_error, history)


class SnapshotSource:
    """Snapshots for scrapes; the stores' stats are shared by scrapes ``max_age_s`` apart.

    The outbox's thread also commits readings: however many scrapers there are, and
    however often they ask, it reads stats at most once per ``max_age_s``. Health is
    read afresh by every scrape (it is in memory).

    Args:
        deps: What the web server reads.
        max_age_s: Longest a stats read is reused.
        clock_s: Monotonic seconds.
    """

    def __init__(
        self,
        deps: WebDeps,
        *,
        max_age_s: float = STATS_MAX_AGE_S,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deps = deps
        self._max_age_s = max_age_s
        self._clock_s = clock_s
        self._lock = asyncio.Lock()
        self._stores: _StoreStats | None = None
        self._at = 0.0

    async def take(self) -> Snapshot:
        """A snapshot for one scrape."""
        deps = self._deps
        async with self._lock:  # scrapes arriving during a read wait for it and share it
            if self._stores is None or self._clock_s() - self._at >= self._max_age_s:
                self._stores = await _read_stores(deps)
                self._at = self._clock_s()
            stores = self._stores
        return Snapshot(
            health=deps.health,
            site=deps.cfg.site.id,
            version=deps.version,
            started_ns=deps.started_ns,
            outbox=stores.outbox,
            outbox_error=stores.outbox_error,
            history=stores.history,
            open_alerts=tuple(deps.alerts.open_docs()) if deps.alerts is not None else (),
            alerts_enabled=deps.alerts is not None,
        )


async def take_snapshot(deps: WebDeps) -> Snapshot:
    """A snapshot with the stores' stats read now."""
    return await SnapshotSource(deps, max_age_s=0.0).take()


def sink_state(health: Health, sink: str) -> dict[str, object]:
    """A sink's ``up``, ``connected`` (None: it has no connection) and ``last_error``.

    Sinks that hold a connection (MQTT, NATS) run it as a supervised interface of their
    own name; the others (InfluxDB over HTTP) only have delivery attempts. A sink is up
    when its connection, if any, is, and its last delivery attempt (if any) worked.
    """
    s = health.sinks[sink]
    has_connection = sink in health.interfaces
    return {
        "up": s.last_error is None and (s.connected or not has_connection),
        "connected": s.connected if has_connection else None,
        "last_error": s.last_error,
    }


def _s(ns: int | None) -> float | None:
    return None if ns is None else ns / _NS


def _capped(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """The ``MAX_REASONS`` biggest counts by name, the rest summed as ``other``."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = dict(ranked[:MAX_REASONS])
    rest = sum(n for _, n in ranked[MAX_REASONS:])
    if rest:
        shown["other"] = shown.get("other", 0) + rest
    return sorted(shown.items())


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(slots=True)
class _Families:
    """Metric families by name, created on first use, in order."""

    items: dict[str, Metric] = field(default_factory=dict)

    def counter(self, name: str, doc: str, labels: Iterable[str]) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        family = self.items.get(name)
        if family is None:
            family = self.items[name] = CounterMetricFamily(
                f"{PREFIX}_{name}", doc, labels=list(labels)
            )
        assert isinstance(family, CounterMetricFamily)
        return family

    def gauge(self, name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        family = self.items.get(name)
        if family is None:
            family = self.items[name] = GaugeMetricFamily(
                f"{PREFIX}_{name}", doc, labels=list(labels)
            )
        assert isinstance(family, GaugeMetricFamily)
        return family


class AgentCollector:
    """A ``prometheus_client`` collector over one ``Snapshot`` (see the README's table).

    Args:
        snapshot: What this scrape reads.
        process: The process collector (``process_*``: CPU, memory, open files), or None.
    """

    def __init__(self, snapshot: Snapshot, *, process: ProcessCollector | None = None) -> None:
        self.snapshot = snapshot
        self.process = process

    def collect(self) -> Iterator[Metric]:
        """Every family of the snapshot, then the process's."""
        yield from self.collect_agent()
        if self.process is not None:
            yield from self.process.collect()

    def collect_agent(self) -> Iterator[Metric]:
        """The snapshot's families (what must run on the event loop: it reads health)."""
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        snap = self.snapshot
        info = InfoMetricFamily(f"{PREFIX}_agent", "The agent's version and site.")
        info.add_metric([], {"version": snap.version, "site": snap.site})
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_agent_start_time_seconds",
            "When the agent started (Unix time).",
            value=snap.started_ns / _NS,
        )
        families = _Families()
        self._devices(families)
        self._sinks(families)
        self._outbox(families)
        self._history(families)
        self._alerts(families)
        self._notify(families)
        self._interfaces(families)
        yield from families.items.values()

    def _devices(self, f: _Families) -> None:
        up = f.gauge("device_up", "1 when the device's port is open.", _DEVICE)
        frames = f.counter("device_frames", "Frames parsed whole.", _DEVICE)
        discarded = f.counter(
            "device_frames_discarded", "Frames discarded (reasons in device_errors).", _DEVICE
        )
        readings = f.counter("device_readings", "Readings accepted into the outbox.", _DEVICE)
        reconnects = f.counter(
            "device_reconnects", "Returns to online after the first connection.", _DEVICE
        )
        errors = f.counter("device_errors", "Errors, by reason.", (*_DEVICE, "reason"))
        last_frame = f.gauge(
            "device_last_frame_timestamp_seconds", "When the last frame arrived.", _DEVICE
        )
        last_reading = f.gauge(
            "device_last_reading_timestamp_seconds", "When the last reading arrived.", _DEVICE
        )
        since = f.gauge(
            "device_state_change_timestamp_seconds", "When the device went online or offline.",
            _DEVICE,
        )  # fmt: skip
        for name, d in sorted(self.snapshot.health.devices.items()):
            labels = [name, d.driver, d.station]
            up.add_metric(labels, 1.0 if d.state is DeviceState.ONLINE else 0.0)
            frames.add_metric(labels, d.frames_ok)
            readings.add_metric(labels, d.readings)
            reconnects.add_metric(labels, d.reconnects)
            since.add_metric(labels, d.since_ns / _NS)
            if (t := _s(d.last_frame_ns)) is not None:
                last_frame.add_metric(labels, t)
            if (t := _s(d.last_reading_ns)) is not None:
                last_reading.add_metric(labels, t)
            discarded.add_metric(labels, d.frames_discarded)
            for reason, n in _capped(d.errors):
                errors.add_metric([*labels, reason], n)

    def _sinks(self, f: _Families) -> None:
        up = f.gauge(
            "sink_up", "1 when the last delivery worked (and the connection is up).", ("sink",)
        )
        connected = f.gauge(
            "sink_connected", "1 when the sink is connected (MQTT, NATS).", ("sink",)
        )
        delivered = f.counter("sink_delivered_records", "Records delivered.", ("sink",))
        rejected = f.counter(
            "sink_rejected_records", "Records the sink refused for good.", ("sink",)
        )
        failures = f.counter("sink_failures", "Failed delivery attempts.", ("sink",))
        last = f.gauge(
            "sink_last_delivery_timestamp_seconds", "When the sink last took records.", ("sink",)
        )
        health = self.snapshot.health
        for name, s in sorted(health.sinks.items()):
            state = sink_state(health, name)
            up.add_metric([name], 1.0 if state["up"] else 0.0)
            if state["connected"] is not None:
                connected.add_metric([name], 1.0 if s.connected else 0.0)
            delivered.add_metric([name], s.delivered)
            rejected.add_metric([name], s.rejected)
            failures.add_metric([name], s.failures)
            if (t := _s(s.last_delivery_ns)) is not None:
                last.add_metric([name], t)

    def _outbox(self, f: _Families) -> None:
        stats = self.snapshot.outbox
        f.gauge("outbox_up", "1 when the outbox answered this scrape.", ()).add_metric(
            [], 0.0 if stats is None else 1.0
        )
        if stats is None:
            return
        f.gauge("outbox_records", "Records held (undelivered by some sink).", ()).add_metric(
            [], stats.records
        )
        f.gauge("outbox_bytes", "Bytes counted against the quota.", ()).add_metric(
            [], stats.bytes_held
        )
        f.gauge("outbox_limit_bytes", "The quota ([outbox] max_mb).", ()).add_metric(
            [], stats.max_bytes
        )
        f.counter(
            "outbox_accepted_records", "Records accepted over the store's life.", ()
        ).add_metric([], stats.last_id)
        backlog = f.gauge("outbox_backlog_records", "Records a sink still owes.", ("sink",))
        oldest = f.gauge(
            "outbox_oldest_undelivered_timestamp_seconds",
            "Acquisition time of the oldest record a sink still owes.",
            ("sink",),
        )
        dropped = f.counter(
            "outbox_dropped_records", "Records the quota dropped before the sink had them.",
            ("sink",),
        )  # fmt: skip
        dead = f.counter("outbox_dead_letters", "Records the sink refused for good.", ("sink",))
        for b in stats.sinks:
            backlog.add_metric([b.sink], b.backlog)
            dropped.add_metric([b.sink], b.dropped_total)
            dead.add_metric([b.sink], b.dead_total)
            if (t := _s(b.oldest_ns)) is not None:
                oldest.add_metric([b.sink], t)

    def _history(self, f: _Families) -> None:
        stats = self.snapshot.history
        if stats is None:
            return
        f.gauge("history_bytes", "Bytes of the local history on disk.", ()).add_metric(
            [], stats.used_bytes
        )
        f.gauge("history_limit_bytes", "The history's disk bound.", ()).add_metric(
            [], stats.max_bytes
        )
        f.gauge("history_pending_points", "Points waiting for the next flush.", ()).add_metric(
            [], stats.pending
        )
        dropped = f.counter("history_dropped_points", "Points dropped, by reason.", ("reason",))
        dropped.add_metric(["disk_bound"], stats.dropped_raw_total)
        dropped.add_metric(["writer_behind"], stats.dropped_pending_total)

    def _alerts(self, f: _Families) -> None:
        if not self.snapshot.alerts_enabled:
            return
        family = f.gauge("alerts_open", "Open alerts.", ("rule", "severity", "state"))
        counts: dict[tuple[str, str, str], int] = {}
        for doc in self.snapshot.open_alerts:
            key = (str(doc.get("rule")), str(doc.get("severity")), str(doc.get("state")))
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            family.add_metric(list(key), n)

    def _notify(self, f: _Families) -> None:
        source = self.snapshot.health.counters.get("notify")
        if source is None:
            return
        try:
            doc = source()
        except Exception as exc:  # a bug there must not stop the scrape
            log.warning("Notification health left out of a scrape: %r", exc)
            return
        acks = _num(doc.get("acknowledgements"))
        if acks is not None:
            f.counter(
                "notify_acknowledgements", "Alerts acknowledged from a notification.", ()
            ).add_metric([], acks)
        channels = doc.get("channels")
        if not isinstance(channels, dict):
            return
        queued = f.gauge("notify_queued_messages", "Messages waiting.", ("channel",))
        kinds = {
            "sent": ("notify_sent_messages", "Messages sent."),
            "dead": ("notify_dead_messages", "Messages given up on (dead letters)."),
            "expired": ("notify_expired_messages", "Messages too old to send."),
            "retries": ("notify_retries", "Send attempts retried."),
        }
        counters = {k: f.counter(n, d, ("channel",)) for k, (n, d) in kinds.items()}
        for name, ch in sorted(channels.items()):
            if not isinstance(ch, dict):
                continue
            if (v := _num(ch.get("queued"))) is not None:
                queued.add_metric([str(name)], v)
            for key, family in counters.items():
                if (v := _num(ch.get(key))) is not None:
                    family.add_metric([str(name)], v)

    def _interfaces(self, f: _Families) -> None:
        up = f.gauge("interface_up", "1 when the interface runs (0: restarting).", ("interface",))
        failures = f.counter("interface_failures", "Failures (a restart each).", ("interface",))
        for name, i in sorted(self.snapshot.health.interfaces.items()):
            up.add_metric([name], 1.0 if i.state is InterfaceState.RUNNING else 0.0)
            failures.add_metric([name], i.failures)


def exposition(snapshot: Snapshot, *, process: ProcessCollector | None = None) -> bytes:
    """The snapshot in the Prometheus text format."""
    from prometheus_client import generate_latest

    return generate_latest(AgentCollector(snapshot, process=process))


# -- readiness -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the agent does its job, and why not.

    Attributes:
        ready: The outbox answers and every configured device has started.
        reasons: Why not, one line each (empty when ready).
        devices: Per device: ``online``, ``offline`` (started, port not open) or
            ``starting`` (its loop has not tried its port yet).
        sinks: Per sink, ``sink_state``: whether it is up and connected (a sink down
            does not make the agent unready: the outbox keeps its records).
    """

    ready: bool
    reasons: tuple[str, ...]
    devices: dict[str, str]
    sinks: dict[str, dict[str, object]]

    def as_doc(self) -> dict[str, object]:
        """As JSON."""
        return {
            "ready": self.ready,
            "reasons": list(self.reasons),
            "devices": self.devices,
            "sinks": self.sinks,
        }


def readiness(snapshot: Snapshot, *, configured: Iterable[str]) -> Readiness:
    """Readiness from a snapshot; ``configured``: the enabled devices' ids."""
    health = snapshot.health
    reasons: list[str] = []
    if snapshot.outbox is None:
        reasons.append(snapshot.outbox_error or "outbox not open")
    devices: dict[str, str] = {}
    for device in configured:
        d = health.devices.get(device)
        if d is None or not (d.ever_online or d.last_error is not None):
            devices[device] = "starting"
        else:
            devices[device] = "online" if d.state is DeviceState.ONLINE else "offline"
    if starting := sorted(k for k, v in devices.items() if v == "starting"):
        reasons.append(f"devices not started: {', '.join(starting)}")
    sinks = {name: sink_state(health, name) for name in sorted(health.sinks)}
    return Readiness(not reasons, tuple(reasons), devices, sinks)


# -- access and handlers -------------------------------------------------------------


def is_local(request: web.Request) -> bool:
    """Whether the client is on the loopback interface and no proxy stands between."""
    if any(h in request.headers for h in PROXY_HEADERS):
        # A trusted proxy's client is CLIENT; an untrusted one hides who is asking.
        peer = request.remote or ""
        client = request.get(CLIENT) or peer
        if client == peer:
            return False
    text = request.get(CLIENT) or request.remote or ""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return json_response({"ok": True, "time_ns": time.time_ns()})


@dataclass(slots=True)
class _ProcessSlot:
    """The process collector, made on the first scrape (it reads ``/proc`` when made)."""

    collector: ProcessCollector | None = None

    def get(self) -> ProcessCollector:
        if self.collector is None:
            from prometheus_client import ProcessCollector

            self.collector = ProcessCollector(registry=None)
        return self.collector


_PROCESS = web.AppKey("process_collector", _ProcessSlot)
_SOURCE = web.AppKey("snapshot_source", SnapshotSource)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200, or 503 with the reasons."""
    deps = request.app[DEPS]
    configured = [d.id for d in deps.cfg.devices if d.enabled]
    state = readiness(await request.app[_SOURCE].take(), configured=configured)
    return json_response(state.as_doc(), 200 if state.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format."""
    snapshot = await request.app[_SOURCE].take()
    from prometheus_client import CONTENT_TYPE_LATEST

    body = exposition(snapshot, process=request.app[_PROCESS].get())
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def install_metrics(app: web.Application) -> None:
    """Prepare ``app`` (its ``DEPS`` set) for the handlers here."""
    app[_PROCESS] = _ProcessSlot()
    app[_SOURCE] = SnapshotSource(app[DEPS])
