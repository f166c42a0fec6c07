"""Live health of devices and sinks, for status topics, the CLI and dashboards.

This is the agent's in-memory view: counters since start and current states.
Components update it; observers (the MQTT sink publishing retained status
topics, the demo's console) each take a ``watch()`` and wait on it instead of
polling, so one observer never consumes another's notifications.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class DeviceState(Enum):
    """Whether the agent has the device's port open."""

    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(slots=True)
class DeviceHealth:
    """One device as the agent sees it."""

    device: str
    driver: str
    port: str
    station: str = ""
    state: DeviceState = DeviceState.OFFLINE
    since_ns: int = 0
    last_frame_ns: int | None = None
    last_reading_ns: int | None = None
    frames_ok: int = 0
    frames_discarded: int = 0
    readings: int = 0
    #: Returns to online after the first connection (a clean start counts none).
    reconnects: int = 0
    ever_online: bool = False
    last_error: str | None = None
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_status(self) -> dict[str, object]:
        """The retained ``<device>/status`` document."""
        return {
            "state": self.state.value,
            "since": self.since_ns,
            "driver": self.driver,
            "port": self.port,
            "station": self.station,
            "last_frame": self.last_frame_ns,
            "frames_ok": self.frames_ok,
            "frames_discarded": self.frames_discarded,
            "readings": self.readings,
            "reconnects": self.reconnects,
            "errors": dict(sorted(self.errors.items())),
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class SinkHealth:
    """One sink as the agent sees it."""

    sink: str
    connected: bool = False
    last_delivery_ns: int | None = None
    last_error: str | None = None
    failures: int = 0
    delivered: int = 0
    rejected: int = 0


class InterfaceState(Enum):
    """Whether a supervised interface is running or waiting to restart."""

    RUNNING = "running"
    RESTARTING = "restarting"


@dataclass(slots=True)
class InterfaceHealth:
    """One supervised interface (web server, MQTT, a service loop, the live fan-out).

    Attributes:
        failures: Times it failed since start (a restart each, or a listener error).
        last_error: The last failure, ``Type: message``.
        last_error_ns: When it happened.
    """

    name: str
    state: InterfaceState = InterfaceState.RUNNING
    failures: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None

    def as_doc(self) -> dict[str, object]:
        """As JSON, for ``/api/health``."""
        return {
            "state": self.state.value,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
        }


class HealthWatch:
    """One observer's view of device state changes."""

    def __init__(self) -> None:
        self._dirty: set[str] = set()
        self._event = asyncio.Event()

    def _mark(self, device: str) -> None:
        self._dirty.add(device)
        self._event.set()

    def take(self) -> set[str]:
        """Devices whose state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        self._event.clear()
        return dirty

    async def changed(self) -> None:
        """Wait until some device state changed (returns at once if pending)."""
        await self._event.wait()


class Health:
    """Registry of device and sink health with change notification."""

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.clock_ns = clock_ns
        self.devices: dict[str, DeviceHealth] = {}
        self.sinks: dict[str, SinkHealth] = {}
        self.interfaces: dict[str, InterfaceHealth] = {}
        #: Other counters shown in health (the command boundary's, the web server's).
        self.counters: dict[str, Callable[[], dict[str, object]]] = {}
        self._watches: list[HealthWatch] = []

    def watch(self) -> HealthWatch:
        """A new observer of state changes (it sees changes from now on)."""
        watch = HealthWatch()
        self._watches.append(watch)
        return watch

    def add_device(self, device: str, *, driver: str, port: str, station: str = "") -> DeviceHealth:
        """Register a device (offline until its port opens)."""
        entry = DeviceHealth(
            device=device, driver=driver, port=port, station=station, since_ns=self.clock_ns()
        )
        self.devices[device] = entry
        self._mark(device)
        return entry

    def add_interface(self, name: str) -> InterfaceHealth:
        """Register a supervised interface (or return the one already registered)."""
        entry = self.interfaces.get(name)
        if entry is None:
            entry = self.interfaces[name] = InterfaceHealth(name=name)
        return entry

    def add_sink(self, sink: str) -> SinkHealth:
        """Register a sink."""
        entry = SinkHealth(sink=sink)
        self.sinks[sink] = entry
        return entry

    def set_device_state(
        self, device: str, state: DeviceState, *, error: str | None = None
    ) -> None:
        """Record an online/offline transition (no-op if unchanged)."""
        entry = self.devices[device]
        if error is not None:
            entry.last_error = error
        if entry.state is state:
            return
        entry.state = state
        entry.since_ns = self.clock_ns()
        if state is DeviceState.ONLINE:
            if entry.ever_online:
                entry.reconnects += 1
            entry.ever_online = True
        self._mark(device)

    def _mark(self, device: str) -> None:
        for watch in self._watches:
            watch._mark(device)
