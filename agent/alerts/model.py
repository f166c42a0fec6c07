"""The alert model: what the rules read (ticks), remember (``RuleState``) and say (``Alert``).

Plain frozen values, no behaviour. The rules themselves are in ``kinds``, what they
do in ``evaluate``.

Inputs
    *Readings* (``agent.readings.Reading``), as accepted into the outbox: ``moisture``
    (wet lots), ``huller`` (jams, wiring faults) and ``maintenance_status`` (service
    due and overdue). *Ticks* (``Tick``), about once a second: a snapshot of every
    device's health and every sink's delivery state, for what can only be seen as time
    passing (a device that went quiet, a sink that stopped delivering, a huller unit
    that stopped answering). A tick also advances every timer: pending delays and
    repeat notifications. A device, huller or sink missing from a tick's mapping is
    taken as removed; a tick whose ``devices`` or ``sinks`` is ``None`` says nothing
    about them.

Time is always an argument (UTC nanoseconds, ``now_ns``); rule settings are seconds
(``to_ns`` converts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from coffee_telemetry.drivers.events import FieldValue

#: Message languages: Brazilian Portuguese (the default) or English.
Lang = Literal["pt-BR", "en"]

#: An alert's details: typed values under the keys of ``DATA_FIELDS``.
Data = Mapping[str, FieldValue]

#: Every key an alert's ``data`` may carry, with its one type (the ``alert``
#: measurement's fields keep one type forever).
DATA_FIELDS: Mapping[str, type] = {
    # wet_lot
    "lot": str,
    "device": str,
    "station": str,
    "product": str,
    "count": int,
    "last_pct": float,
    "max_pct": float,
    "mean_pct": float,
    "threshold_pct": float,
    "clear_below_pct": float,
    "forgotten": bool,
    # device_silent
    "driver": str,
    "silent_s": float,
    "limit_s": float,
    "last_frame_ns": int,
    "removed": bool,
    # huller_fault
    "huller": str,
    "fault": str,
    "online": bool,
    "offline_s": float,
    "errors": int,
    "window_s": float,
    "last_error": str,
    "idle_s": float,
    "bags_total": float,
    "gain_h": float,
    "hours_total": float,
    # service_due / service_overdue
    "task": str,
    "task_state": str,
    "hours_since": float,
    "interval_h": float,
    "remaining_h": float,
    # sink_backlog
    "sink": str,
    "backlog": int,
    "undelivered_s": float,
    "last_delivery_ns": int,
    # humid_storage (also device, threshold_pct, clear_below_pct)
    "area": str,
    "rh_pct": float,
    "temperature_c": float,
    "pending_s": float,
    # calibration_due (also device, station)
    "days_left": int,
    "due_date": str,
    "certificate": str,
    "calibration": str,
    # meter_disagreement (also lot, device, last_pct)
    "other_device": str,
    "other_pct": float,
    "diff_pp": float,
    "tolerance_pp": float,
}

#: Nanoseconds in a second.
NS = 1_000_000_000


def to_ns(seconds: float) -> int:
    """``seconds`` (a rule setting) in nanoseconds (event times), rounded."""
    return round(seconds * NS)


class AlertState(Enum):
    """Where an alert stands; ``RESOLVED`` is also a subject with no open alert."""

    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Severity(Enum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# -- tick inputs ---------------------------------------------------------------------------


class DeviceHealthLike(Protocol):
    """What ``DeviceSnapshot.from_health`` reads (``agent.health.DeviceHealth`` fits)."""

    @property
    def driver(self) -> str: ...
    @property
    def station(self) -> str: ...
    @property
    def state(self) -> Enum: ...
    @property
    def since_ns(self) -> int: ...
    @property
    def last_frame_ns(self) -> int | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def errors(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSnapshot:
    """One device's health at a tick.

    Attributes:
        driver: Its driver (``moisture.tesma``, ``counter.autonics_ct``, ...).
        online: Whether its port is open / its units answer.
        since_ns: When it last went online or offline (or was registered): silence
            is counted from here before the first frame, and ``comms`` from here
            while offline.
        last_frame_ns: When its last valid frame arrived (None: none yet).
        errors: Its error count so far (any kind; only increases are used).
        last_error: Its last error text, if any.
        station: Its station, for messages.
    """

    driver: str
    online: bool = True
    since_ns: int = 0
    last_frame_ns: int | None = None
    errors: int = 0
    last_error: str | None = None
    station: str = ""

    @classmethod
    def from_health(cls, health: DeviceHealthLike) -> DeviceSnapshot:
        """Snapshot an ``agent.health.DeviceHealth``."""
        return cls(
            driver=health.driver,
            online=health.state.value == "online",
            since_ns=health.since_ns,
            last_frame_ns=health.last_frame_ns,
            errors=sum(health.errors.values()),
            last_error=health.last_error,
            station=health.station,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkSnapshot:
    """One sink's delivery state at a tick.

    Attributes:
        backlog: Records waiting for it in the outbox.
        last_delivery_ns: When it last delivered (None: not since the agent started).
        since_ns: When the agent started delivering to it (counts before a delivery).
    """

    backlog: int
    last_delivery_ns: int | None = None
    since_ns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Time passing, with the current health of devices and sinks.

    Attributes:
        devices: Every device by id (hullers included); one missing is taken as
            removed. ``None``: this tick says nothing about devices.
        sinks: Every sink by name, likewise.
    """

    devices: Mapping[str, DeviceSnapshot] | None = None
    sinks: Mapping[str, SinkSnapshot] | None = None


# -- state and events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LotMemory:
    """What ``wet_lot`` remembers of a lot."""

    window: tuple[float, ...]
    count: int
    total: float
    max_pct: float
    last_ns: int
    device: str
    station: str
    product: str


@dataclass(frozen=True, slots=True)
class ErrorMemory:
    """Error counts of a huller seen at ticks: ``(at_ns, errors)`` when they changed."""

    samples: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class JamMemory:
    """Bags at the last ``huller`` reading, and since when the motor runs without a bag."""

    bags: float
    idle_since_ns: int | None


@dataclass(frozen=True, slots=True)
class WiringMemory:
    """The last ``huller`` reading's hours and motor input, and hours gained with it off."""

    at_ns: int
    hours: float
    running: bool
    gain_h: float


@dataclass(frozen=True, slots=True)
class MetersMemory:
    """Each meter's latest reading of a lot: ``(device, at_ns, moisture_pct)``."""

    latest: tuple[tuple[str, int, float], ...]


#: What a rule remembers about a subject besides its alert.
Memory = LotMemory | ErrorMemory | JamMemory | WiringMemory | MetersMemory


@dataclass(frozen=True, slots=True)
class RuleState:
    """One (rule, subject): its alert and what the rule remembers about the subject.

    Attributes:
        subject: The subject (lot code, device id, ``<huller>/<task>``...).
        state: The alert's state; ``RESOLVED`` when none is open.
        since_ns: When the open alert's episode began.
        notified_ns: When the open alert was last notified (firing or repeat).
        repeat: Repeat notifications so far in this episode.
        acked_by: Who acknowledged it.
        acked_at_ns: When.
        data: The open alert's data, refreshed by every evaluation.
        memory: What the rule remembers (kept while the subject is closed, too).
    """

    subject: str
    state: AlertState = AlertState.RESOLVED
    since_ns: int = 0
    notified_ns: int = 0
    repeat: int = 0
    acked_by: str | None = None
    acked_at_ns: int | None = None
    data: Data = field(default_factory=dict)
    memory: Memory | None = None

    @property
    def open(self) -> bool:
        """An alert is open (pending, firing or acknowledged)."""
        return self.state is not AlertState.RESOLVED


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """An alert event: a transition of one (rule, subject), or a repeat notification.

    Attributes:
        rule: The rule's name.
        subject: What the alert is about.
        state: The alert's state after this event.
        severity: The rule's severity.
        message: One line for people, in the engine's language.
        data: Typed details (see ``DATA_FIELDS``).
        notify: Whether notifiers (webhooks, on-call) should get this event.
        since_ns: When the episode began; with ``rule`` and ``subject`` it names it.
        at_ns: When this event happened.
        repeat: 0 for the first firing notice, then 1, 2... for repeats.
        acked_by: Who acknowledged the alert, if someone did.
        acked_at_ns: When.
    """

    rule: str
    subject: str
    state: AlertState
    severity: Severity
    message: str
    data: Data
    notify: bool
    since_ns: int
    at_ns: int
    repeat: int = 0
    acked_by: str | None = None
    acked_at_ns: int | None = None
