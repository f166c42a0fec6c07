"""Reload the site file in the running agent: refuse an invalid one, apply a valid one.

Theory of operation
-------------------
``SIGHUP`` (``coffee-telemetry reload``, ``systemctl reload``) sets a request the
``Reloader`` waits for. A reload reads the file again with ``load_config`` (the
checks of ``check-config``); an invalid file, or alert rules that cannot be built,
is *refused*: the errors are logged as ``check-config`` prints them, counted, and the
running configuration stays, untouched.

A valid file is compared with the running configuration (``plan_reload``) and only
what can change live is applied:

* devices, through ``Fleet.apply``: loops of new devices start, those of removed
  devices stop (their ports close), a changed device's loop restarts; the others go on
  with their ports open;
* alert rule parameters and thresholds: the rules are rebuilt and the engine's state
  carried over (``AlertService.replace_rules``), so open alerts and lot windows stay;
* sinks (``[mqtt]``, ``[influx]``, ``[[alerts.webhooks]]``, ``[sinks.nats]`` and their
  secrets), by difference of their specs (``agent.sinks.configured``), one delivery lane
  at a time (``agent.outbox.lanes``), while the devices and the other sinks go on:

  - a *changed* sink's delivery loop ends after its batch in flight is confirmed (the
    cursor moves only on confirmation, as always), its connection closes, and a new
    sink starts from that same cursor: no record is skipped, none is sent to both.
    MQTT keeps its one connection object (statuses, retained states, commands and
    Home Assistant documents are tied to it) and moves it: ``agent/status`` =
    ``offline`` on the old broker, ``online`` with its Last Will on the new one, where
    every retained status and state is published again;
  - a *removed* sink's loop stops the same way; the outbox no longer holds records for
    it, but its cursor is *kept* in the store. Dropping it would make a sink added back
    later start like a new one, from the oldest record held, and send again what it had
    already delivered; kept, it resumes after the last record it confirmed. What the
    outbox pruned meanwhile was accepted while the sink was not configured, and is not
    owed to it;
  - an *added* sink starts as one configured for the first time at start: from the
    oldest record the outbox still holds (what some other sink has not confirmed yet),
    so nothing accepted from the reload on is missed and recent backlog reaches it too.
    A new sink that cannot be opened is logged, and the sink it would replace goes on;
    the next reload tries again;
* notification contacts, routes and timings (``Notifier.reconfigure``), and the
  channels of ``RELOADABLE_CHANNELS`` (e-mail, ntfy, WhatsApp, Apprise) added, changed
  or removed (``Notifier.set_channel``): messages already queued are never lost, they
  keep the address they were queued with, and those of a removed channel wait in the
  queue.

Enabling MQTT in an agent started without it, Home Assistant discovery, the alert
service itself and the SMS and Telegram channels (a modem port, a poll loop) need a
restart. So does everything else that differs (site id, data_dir, the outbox, the web
server, buses and hullers, time sources...): it is named in one warning, ``needs a
restart: ...``, and keeps its running value, so a later reload compares with what
really runs. Every reload logs one line per
change (``Reload: sink mqtt changed (mqtt.host, mqtt.port)``) and its summary, and is
counted in health (``counters.reload``, with ``last_changes``); systemd is told
``RELOADING=1`` then ``READY=1``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from coffee_telemetry.agent.alerts.kinds import build_rules
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.config import AlertsConfig, Config, DeviceConfig, load_config
from coffee_telemetry.agent.devices.fleet import Fleet, FleetChange
from coffee_telemetry.agent.errors import ConfigError, RuleError
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.notify.model import Channel
from coffee_telemetry.agent.notify.runtime import RELOADABLE_CHANNELS
from coffee_telemetry.agent.notify.service import Notifier
from coffee_telemetry.agent.outbox.lanes import DeliveryLanes
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.sdnotify import SdNotify
from coffee_telemetry.agent.sinks.configured import (
    SinkSpec,
    lane_parts,
    mqtt_settings,
    open_sink,
    sink_specs,
)
from coffee_telemetry.agent.sinks.mqtt import MqttSink

log = logging.getLogger(__name__)

#: Top-level keys applied live (the rest of a difference needs a restart).
LIVE_SECTIONS = frozenset({"devices", "alerts"})

#: Keys of ``[alerts]`` that are not rules (their sinks and the service are built at start).
ALERTS_AT_START = ("enabled", "webhooks")

#: Top-level keys that never differ in a way worth naming on their own.
IGNORED = frozenset({"secret_files"})

#: Top-level keys of the sinks and their secrets (applied live when the agent runs lanes).
SINK_KEYS = frozenset(
    {
        "mqtt",
        "influx",
        "sinks",
        "mqtt_password",
        "influx_password",
        "influx_token",
        "nats_password",
        "webhook_secret_headers",
    }
)

#: Keys of ``[mqtt]`` made into documents at start (Home Assistant discovery).
MQTT_AT_START = ("homeassistant_discovery", "homeassistant_prefix", "homeassistant_devices")

#: Keys of ``[notify]`` a running notifier takes (``Notifier.reconfigure``).
NOTIFY_LIVE = (
    "contacts",
    "routes",
    "public_url",
    "ack_link_hours",
    "max_age_h",
    "max_age_h_by_rule",
    "retry_initial_s",
    "retry_max_s",
)


@dataclass(frozen=True)
class ReloadPlan:
    """What a valid new configuration changes (``plan_reload``)."""

    #: The enabled devices to run.
    devices: tuple[DeviceConfig, ...]
    #: The alert settings to rebuild the rules from (``None``: the rules stay).
    alerts: AlertsConfig | None
    #: What differs but needs a restart, as dotted keys.
    restart: tuple[str, ...]
    #: The configuration that runs once this plan is applied.
    running: Config
    #: The ``[alerts]`` keys that change live.
    alerts_changed: tuple[str, ...] = ()
    #: The ``[notify]`` to give the notifier (``None``: it stays).
    notify: NotifyConfig | None = None
    #: One line per notification change (``notify.contacts changed (+ana ~bia)``).
    notify_changed: tuple[str, ...] = ()


def _section_keys(name: str, old: object, new: object) -> list[str]:
    """``name``, or ``name.key`` for each differing key of a section model."""
    if isinstance(old, BaseModel) and isinstance(new, BaseModel) and type(old) is type(new):
        keys = [
            f"{name}.{key}"
            for key in type(old).model_fields
            if getattr(old, key) != getattr(new, key)
        ]
        return keys or [name]
    return [name]


def plan_reload(
    running: Config,
    new: Config,
    *,
    alerts_live: bool,
    started: Config | None = None,
    sinks_live: bool = False,
    mqtt_live: bool = False,
    notify_live: bool = False,
    channels_live: bool = False,
) -> ReloadPlan:
    """Compare ``new`` with the ``running`` configuration.

    Args:
        running: What runs now.
        new: A valid configuration just read.
        alerts_live: Whether the agent runs an alert service to give new rules to.
        started: The configuration the agent started with (default ``running``): what
            was made from its devices at start (lot stations, Home Assistant documents)
            keeps following it until a restart.
        sinks_live: Whether the agent runs delivery lanes to change sinks in.
        mqtt_live: Whether the agent holds an MQTT connection to move or close.
        notify_live: Whether the agent runs a notifier to give contacts and routes to.
        channels_live: Whether that notifier can open the channels of
            ``RELOADABLE_CHANNELS`` anew.

    Raises:
        RuleError: ``new``'s alert rules cannot be built.
    """
    restart: list[str] = []
    live = LIVE_SECTIONS | (SINK_KEYS if sinks_live else frozenset())
    if notify_live:
        live |= {"notify"}
    for key in type(running).model_fields:
        if key in live or key in IGNORED:
            continue
        old_value, new_value = getattr(running, key), getattr(new, key)
        if old_value != new_value:
            restart += _section_keys(key, old_value, new_value)
    update: dict[str, object] = {}
    if sinks_live:
        sink_update, sink_restart = _plan_sinks(running, new, mqtt_live=mqtt_live)
        update |= sink_update
        restart += sink_restart
    notify_cfg: NotifyConfig | None = None
    notify_changed: tuple[str, ...] = ()
    if notify_live:
        notify_cfg, notify_changed, notify_restart = _plan_notify(
            running.notify, new.notify, channels_live=channels_live
        )
        restart += notify_restart
        if notify_cfg is not None:
            update["notify"] = notify_cfg
    # Alerts: the rules change live; the service itself does not, nor its webhook sinks
    # unless sinks change live.
    at_start = ("enabled",) if sinks_live else ALERTS_AT_START
    kept = {k: getattr(running.alerts, k) for k in at_start}
    alerts_cfg = new.alerts.model_copy(update=kept)
    restart += [
        f"alerts.{k}" for k in at_start if getattr(running.alerts, k) != getattr(new.alerts, k)
    ]
    alerts_changed = (
        tuple(
            key  # the webhooks are sinks: named with the sinks
            for key in _section_keys("alerts", running.alerts, alerts_cfg)
            if key != "alerts.webhooks"
        )
        if alerts_cfg != running.alerts
        else ()
    )
    build_rules(alerts_cfg)  # refuse what cannot run before anything changes
    apply_alerts = alerts_cfg if alerts_changed and alerts_live else None
    devices = tuple(d for d in new.devices if d.enabled)
    started = started or running
    # Lot commands know the stations of the start; a new station's lots need a restart.
    old_stations = {d.station for d in started.devices if d.enabled and d.station}
    new_stations = sorted({d.station for d in devices if d.station} - old_stations)
    if new_stations:
        restart.append(f"lots.stations ({', '.join(new_stations)})")
    # Home Assistant's discovery documents are made at start, from the devices then.
    mqtt = running.mqtt
    if mqtt.enabled and mqtt.homeassistant_discovery and started.devices != new.devices:
        restart.append("mqtt.homeassistant_discovery (devices)")
    return ReloadPlan(
        devices=devices,
        alerts=apply_alerts,
        restart=tuple(restart),
        running=running.model_copy(update={"devices": new.devices, "alerts": alerts_cfg, **update}),
        alerts_changed=alerts_changed,
        notify=notify_cfg,
        notify_changed=notify_changed,
    )


def _plan_sinks(
    running: Config, new: Config, *, mqtt_live: bool
) -> tuple[dict[str, object], list[str]]:
    """The sink sections and secrets that run after the reload, and what needs a restart."""
    restart: list[str] = []
    kept = {k: getattr(running.mqtt, k) for k in MQTT_AT_START}
    restart += [f"mqtt.{k}" for k in kept if getattr(new.mqtt, k) != kept[k]]
    mqtt = new.mqtt.model_copy(update=kept)
    mqtt_password = new.mqtt_password
    if (
        mqtt.enabled
        and not mqtt_live
        and (mqtt, mqtt_password)
        != (
            running.mqtt,
            running.mqtt_password,
        )
    ):
        # No connection to move: statuses, states and commands are wired at start.
        restart.append("mqtt.enabled")
        mqtt, mqtt_password = running.mqtt, running.mqtt_password
    update: dict[str, object] = {
        key: getattr(new, key) for key in SINK_KEYS if key not in ("mqtt", "mqtt_password")
    }
    return update | {"mqtt": mqtt, "mqtt_password": mqtt_password}, restart


def _plan_notify(
    running: NotifyConfig, new: NotifyConfig, *, channels_live: bool
) -> tuple[NotifyConfig | None, tuple[str, ...], list[str]]:
    """The ``[notify]`` a running notifier takes, one line per change, what needs a restart."""
    keys = NOTIFY_LIVE + (RELOADABLE_CHANNELS if channels_live else ())
    cfg = running.model_copy(update={k: getattr(new, k) for k in keys})
    restart = [
        f"notify.{k}"
        for k in type(running).model_fields
        if k not in keys and getattr(running, k) != getattr(new, k)
    ]
    if cfg == running:
        return None, (), restart
    lines: list[str] = []
    for key in keys:
        old_value, new_value = getattr(running, key), getattr(new, key)
        if old_value == new_value:
            continue
        if key in ("contacts", "routes"):
            lines.append(f"notify.{key} changed ({_named_diff(old_value, new_value)})")
        elif old_value is None:
            lines.append(f"notify.{key} added")
        elif new_value is None:
            lines.append(f"notify.{key} removed")
        else:
            lines.append(f"notify.{key} changed")
    return cfg, tuple(lines), restart


def _named_diff(old: tuple[BaseModel, ...], new: tuple[BaseModel, ...]) -> str:
    """``+added -removed ~changed`` of two tuples of items with a ``name``."""
    before = {str(getattr(i, "name", "")): i for i in old}
    after = {str(getattr(i, "name", "")): i for i in new}
    parts = [f"+{n}" for n in sorted(after.keys() - before.keys())]
    parts += [f"-{n}" for n in sorted(before.keys() - after.keys())]
    parts += [f"~{n}" for n in sorted(before.keys() & after.keys()) if before[n] != after[n]]
    return " ".join(parts) or "order"


#: ``open_sink``'s signature: a sink from a config and its spec, resources on a stack.
SinkOpener = Callable[..., Awaitable[Sink | None]]


@dataclass(frozen=True)
class SinkReload:
    """What the reloader changes sinks with.

    Attributes:
        lanes: The running delivery lanes.
        health: Where sinks report (``open_sink``).
        mqtt: The agent's MQTT connection, if it started with one.
        epoch: The outbox's (for NATS message ids).
        open: Opens one sink (``open_sink``).
    """

    lanes: DeliveryLanes
    health: Health
    mqtt: MqttSink | None = None
    epoch: str | None = None
    open: SinkOpener = open_sink


def _spec_keys(old: SinkSpec, new: SinkSpec) -> str:
    """The settings that differ between two specs of one sink, as dotted keys."""
    names = {
        "mqtt": ("mqtt", "site.id", "mqtt_password"),
        "influx": ("influx", "influx_password", "influx_token"),
        "webhook": (f"alerts.webhooks.{new.name}", "webhook_secret_headers"),
        "nats": ("sinks.nats", "site.id", "nats_password"),
    }[new.kind]
    keys: list[str] = []
    for name, a, b in zip(names, old.settings, new.settings, strict=True):
        if a != b:
            keys += _section_keys(name, a, b)
    return ", ".join(keys)


@dataclass(frozen=True)
class NotifyReload:
    """What the reloader changes notifications with.

    Attributes:
        notifier: The running notifier.
        reopen: Makes a channel of ``RELOADABLE_CHANNELS`` from a new ``[notify]``
            (``NotifyRuntime.reopen``; ``None``: channel sections need a restart).
        spawn: Starts a supervised loop: ``spawn(interface_name, run)``.
    """

    notifier: Notifier
    reopen: Callable[[str, NotifyConfig], Awaitable[Channel]] | None = None
    spawn: Callable[[str, Callable[[], Awaitable[None]]], object] | None = None


@dataclass
class ReloadStats:
    """The reload counters of ``/api/health`` (``counters.reload``)."""

    ok: int = 0
    refused: int = 0
    last_error: str | None = None
    last_at_ns: int | None = None
    last_summary: str | None = None
    #: One line per change the last applied reload made.
    last_changes: tuple[str, ...] = ()

    def as_doc(self) -> dict[str, object]:
        """The counters as a JSON document."""
        return {
            "ok": self.ok,
            "refused": self.refused,
            "last_error": self.last_error,
            "last_at": self.last_at_ns,
            "last_summary": self.last_summary,
            "last_changes": list(self.last_changes),
        }


@dataclass(frozen=True)
class ReloadOutcome:
    """One reload's result."""

    ok: bool
    summary: str = ""
    restart: tuple[str, ...] = ()
    error: str | None = None
    #: One line per change.
    changes: tuple[str, ...] = ()


class Reloader:
    """Reads the site file again on request and applies it (see the module docstring).

    Args:
        path: The site file the agent was started with.
        running: The configuration the agent started with.
        fleet: The device loops.
        alerts: The alert service, if alerts run.
        systemd: Told ``RELOADING=1`` and then ``READY=1``.
        status: The ``STATUS=`` line to send with ``READY=1``.
        load: Reads and validates a site file (``load_config``).
        sinks: The delivery lanes and what opens sinks (``None``: sinks need a restart).
        notify: The notifier and what opens channels, if notifications run.
    """

    def __init__(
        self,
        *,
        path: Path,
        running: Config,
        fleet: Fleet,
        alerts: AlertService | None = None,
        systemd: SdNotify | None = None,
        status: Callable[[], str] | None = None,
        load: Callable[[Path], Config] = load_config,
        clock_ns: Callable[[], int] = time.time_ns,
        sinks: SinkReload | None = None,
        notify: NotifyReload | Notifier | None = None,
    ) -> None:
        self._path = path
        self._running = self._started = running
        self._fleet = fleet
        self._alerts = alerts
        self._systemd = systemd
        self._status = status
        self._load = load
        self._clock_ns = clock_ns
        self._sinks = sinks
        self._notify = NotifyReload(notify) if isinstance(notify, Notifier) else notify
        #: The sinks that run, as opened (a sink that failed to open keeps its old spec).
        self._specs = {
            name: spec
            for name, spec in sink_specs(running).items()
            if sinks is not None and name in sinks.lanes.names
        }
        self.stats = ReloadStats()

    @property
    def running(self) -> Config:
        """The configuration in effect (restart-only keys keep their start values)."""
        return self._running

    def health_doc(self) -> dict[str, object]:
        """``counters.reload`` of ``/api/health``."""
        return self.stats.as_doc()

    async def run_loop(self, requests: asyncio.Event) -> None:
        """Reload each time ``requests`` is set, until cancelled."""
        while True:
            await requests.wait()
            requests.clear()
            await self.reload()

    async def reload(self) -> ReloadOutcome:
        """Read the site file again; refuse it or apply it. Never raises for a bad file."""
        if self._systemd is not None:
            self._systemd.reloading("reloading the configuration")
        try:
            return await self._reload()
        finally:
            if self._systemd is not None:
                self._systemd.ready(None if self._status is None else self._status())

    async def _reload(self) -> ReloadOutcome:
        self.stats.last_at_ns = self._clock_ns()
        try:
            new = await asyncio.to_thread(self._load, self._path)
            plan = plan_reload(
                self._running,
                new,
                alerts_live=self._alerts is not None,
                started=self._started,
                sinks_live=self._sinks is not None,
                mqtt_live=self._sinks is not None
                and self._sinks.mqtt is not None
                and "mqtt" in self._sinks.lanes.names,
                notify_live=self._notify is not None,
                channels_live=self._notify is not None
                and self._notify.reopen is not None
                and self._notify.spawn is not None,
            )
        except (ConfigError, RuleError) as exc:
            error = str(exc) if isinstance(exc, ConfigError) else f"{self._path}: alerts: {exc}"
            self.stats.refused += 1
            self.stats.last_error = error
            log.error(
                "Reload refused; the running configuration stays. configuration error:\n%s",
                error,
            )
            return ReloadOutcome(ok=False, error=error)
        change = await self._fleet.apply(plan.devices)
        if plan.alerts is not None and self._alerts is not None:
            self._alerts.replace_rules(plan.alerts)
        sink_lines, sink_marks = await self._apply_sinks(plan.running)
        running, notify_lines = plan.running, plan.notify_changed
        if plan.notify is not None and self._notify is not None:
            notify_cfg, notify_lines = await self._apply_notify(plan.notify, notify_lines)
            running = running.model_copy(update={"notify": notify_cfg})
        self._running = running
        changes = (
            *_device_lines(change),
            *(f"{key} changed" for key in plan.alerts_changed),
            *sink_lines,
            *notify_lines,
        )
        parts = [
            change.summary(),
            ", ".join(plan.alerts_changed),
            "sinks " + " ".join(sink_marks) if sink_marks else "",
            ", ".join(line.split(" ", 1)[0] for line in notify_lines),
        ]
        summary = "; ".join(p for p in parts if p) or "no change"
        self.stats.ok += 1
        self.stats.last_error = None
        self.stats.last_summary = summary
        self.stats.last_changes = changes
        for line in changes:
            log.info("Reload: %s", line)
        log.info("Reloaded %s: %s", self._path, summary)
        if plan.restart:
            log.warning("Reload: needs a restart: %s", ", ".join(plan.restart))
        return ReloadOutcome(ok=True, summary=summary, restart=plan.restart, changes=changes)

    async def _apply_sinks(self, cfg: Config) -> tuple[list[str], list[str]]:
        """Change the lanes to the sinks ``cfg`` configures: lines and ``+a -b ~c`` marks."""
        if self._sinks is None:
            return [], []
        lanes, wanted = self._sinks.lanes, sink_specs(cfg)
        lines: list[str] = []
        marks: list[str] = []
        for name in sorted(self._specs.keys() - wanted.keys()):
            await lanes.stop(name, forget=True)  # MQTT: offline on its broker
            del self._specs[name]
            lines.append(f"sink {name} removed")
            marks.append(f"-{name}")
        for name, spec in wanted.items():
            old = self._specs.get(name)
            if old == spec:
                continue
            mqtt = self._sinks.mqtt
            if old is not None and old.kind == spec.kind == "mqtt" and mqtt is not None:
                # One connection object, moved: the next loop starts on the same cursor.
                await lanes.pause(name)
                mqtt.reconnect_with(**mqtt_settings(cfg))
                lanes.resume(name)
            elif not await self._replace(cfg, spec, old):
                lines.append(f"sink {name} not {'changed' if old else 'added'}: see the log")
                continue
            self._specs[name] = spec
            if old is None:
                lines.append(f"sink {name} added")
                marks.append(f"+{name}")
            else:
                lines.append(f"sink {name} changed ({_spec_keys(old, spec)})")
                marks.append(f"~{name}")
        return lines, marks

    async def _apply_notify(
        self, cfg: NotifyConfig, lines: tuple[str, ...]
    ) -> tuple[NotifyConfig, tuple[str, ...]]:
        """Give the notifier ``cfg``: its channels first, then contacts and routes.

        A channel that cannot be opened keeps its running section (and channel), so the
        next reload tries again; its line says so.
        """
        assert self._notify is not None
        notifier, reopen, spawn = self._notify.notifier, self._notify.reopen, self._notify.spawn
        old = notifier.config
        out = list(lines)
        for name in RELOADABLE_CHANNELS:
            before, after = getattr(old, name), getattr(cfg, name)
            if before == after or reopen is None or spawn is None:
                continue
            if after is None:
                notifier.set_channel(name, None)
                continue
            try:
                channel = await reopen(name, cfg)
            except Exception as exc:
                log.error("Reload: channel %s could not be opened, left as it was: %s", name, exc)
                cfg = cfg.model_copy(update={name: before})
                out = [
                    f"notify.{name} not changed: see the log"
                    if line.startswith(f"notify.{name} ")
                    else line
                    for line in out
                ]
                continue
            notifier.set_channel(name, channel)
            if before is None:
                spawn(f"notify[{name}]", functools.partial(notifier.channel_loop, name))
        notifier.reconfigure(cfg)
        return cfg, tuple(out)

    async def _replace(self, cfg: Config, spec: SinkSpec, old: SinkSpec | None) -> bool:
        """Open ``spec``'s sink, then stop the old one and start it on the same cursor."""
        assert self._sinks is not None
        stack = AsyncExitStack()
        try:
            sink = await self._sinks.open(
                cfg, spec, stack, self._sinks.health, epoch=self._sinks.epoch
            )
        except Exception as exc:
            await stack.aclose()
            log.error("Reload: sink %s could not be opened, left as it was: %s", spec.name, exc)
            return False
        if sink is None:  # pragma: no cover - the spec comes from the same cfg
            await stack.aclose()
            return False
        if old is not None:
            await self._sinks.lanes.stop(spec.name, forget=False)
        loops, close = lane_parts(sink, stack)
        await self._sinks.lanes.start(sink, loops=loops, close=close)
        return True


def _device_lines(change: FleetChange) -> list[str]:
    return (
        [f"device {d} added" for d in change.added]
        + [f"device {d} removed" for d in change.removed]
        + [f"device {d} changed" for d in change.changed]
    )


__all__ = [
    "NotifyReload",
    "ReloadOutcome",
    "ReloadPlan",
    "ReloadStats",
    "Reloader",
    "SinkReload",
    "plan_reload",
]
