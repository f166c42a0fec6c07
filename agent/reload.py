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
  carried over (``AlertService.replace_rules``), so open alerts and lot windows stay.

Everything else that differs (site id, data_dir, the outbox, the web server, sinks,
notifications, buses and hullers, time sources, secrets...) is named in one warning,
``needs a restart: ...``, and keeps its running value, so a later reload compares with
what really runs. Every reload is logged in one line of what changed and counted in
health (``counters.reload``); systemd is told ``RELOADING=1`` then ``READY=1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from coffee_telemetry.agent.alerts.kinds import build_rules
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.config import AlertsConfig, Config, DeviceConfig, load_config
from coffee_telemetry.agent.devices.fleet import Fleet
from coffee_telemetry.agent.errors import ConfigError, RuleError
from coffee_telemetry.agent.sdnotify import SdNotify

log = logging.getLogger(__name__)

#: Top-level keys applied live (the rest of a difference needs a restart).
LIVE_SECTIONS = frozenset({"devices", "alerts"})

#: Keys of ``[alerts]`` that are not rules (their sinks and the service are built at start).
ALERTS_AT_START = ("enabled", "webhooks")

#: Top-level keys that never differ in a way worth naming on their own.
IGNORED = frozenset({"secret_files"})


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
    running: Config, new: Config, *, alerts_live: bool, started: Config | None = None
) -> ReloadPlan:
    """Compare ``new`` with the ``running`` configuration.

    Args:
        running: What runs now.
        new: A valid configuration just read.
        alerts_live: Whether the agent runs an alert service to give new rules to.
        started: The configuration the agent started with (default ``running``): what
            was made from its devices at start (lot stations, Home Assistant documents)
            keeps following it until a restart.

    Raises:
        RuleError: ``new``'s alert rules cannot be built.
    """
    restart: list[str] = []
    for key in type(running).model_fields:
        if key in LIVE_SECTIONS or key in IGNORED:
            continue
        old_value, new_value = getattr(running, key), getattr(new, key)
        if old_value != new_value:
            restart += _section_keys(key, old_value, new_value)
    # Alerts: the rules change live; the service itself and its webhook sinks do not.
    kept = {k: getattr(running.alerts, k) for k in ALERTS_AT_START}
    alerts_cfg = new.alerts.model_copy(update=kept)
    restart += [
        f"alerts.{k}"
        for k in ALERTS_AT_START
        if getattr(running.alerts, k) != getattr(new.alerts, k)
    ]
    alerts_changed = (
        tuple(_section_keys("alerts", running.alerts, alerts_cfg))
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
        running=running.model_copy(update={"devices": new.devices, "alerts": alerts_cfg}),
        alerts_changed=alerts_changed,
    )


@dataclass
class ReloadStats:
    """The reload counters of ``/api/health`` (``counters.reload``)."""

    ok: int = 0
    refused: int = 0
    last_error: str | None = None
    last_at_ns: int | None = None
    last_summary: str | None = None

    def as_doc(self) -> dict[str, object]:
        """The counters as a JSON document."""
        return {
            "ok": self.ok,
            "refused": self.refused,
            "last_error": self.last_error,
            "last_at": self.last_at_ns,
            "last_summary": self.last_summary,
        }


@dataclass(frozen=True)
class ReloadOutcome:
    """One reload's result."""

    ok: bool
    summary: str = ""
    restart: tuple[str, ...] = ()
    error: str | None = None


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
    ) -> None:
        self._path = path
        self._running = self._started = running
        self._fleet = fleet
        self._alerts = alerts
        self._systemd = systemd
        self._status = status
        self._load = load
        self._clock_ns = clock_ns
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
                self._running, new, alerts_live=self._alerts is not None, started=self._started
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
        self._running = plan.running
        parts = [change.summary(), ", ".join(plan.alerts_changed)]
        summary = "; ".join(p for p in parts if p) or "no change"
        self.stats.ok += 1
        self.stats.last_error = None
        self.stats.last_summary = summary
        log.info("Reloaded %s: %s", self._path, summary)
        if plan.restart:
            log.warning("Reload: needs a restart: %s", ", ".join(plan.restart))
        return ReloadOutcome(ok=True, summary=summary, restart=plan.restart)


__all__ = ["ReloadOutcome", "ReloadPlan", "ReloadStats", "Reloader", "plan_reload"]
