"""Alert rules: readings and health ticks in, alert events out. Pure: no I/O, no clock.

Theory of operation
-------------------
Everything here is a function of its inputs. Time is the ``now_ns`` argument (UTC
nanoseconds); nothing reads a clock, sleeps, logs or touches a file or socket, so the
same inputs always give the same alerts, and a test drives days of alerts in
microseconds. The agent feeds it and delivers what comes out.

Inputs
    *Readings* (``agent.readings.Reading``), as accepted into the outbox: ``moisture``
    (wet lots), ``huller`` (jams, wiring faults) and ``maintenance_status`` (service
    due and overdue). *Ticks* (``Tick``), about once a second: a snapshot of every
    device's health and every sink's delivery state, for what can only be seen as time
    passing (a device that went quiet, a sink that stopped delivering, a huller unit
    that stopped answering). A tick also advances every timer: pending delays and
    repeat notifications.

Subjects
    Each rule watches subjects, and each (rule, subject) has at most one alert:

    ===================  =========================  ====================================
    rule (kind)          subject                    input
    ===================  =========================  ====================================
    ``wet_lot``          the lot code               ``moisture`` readings with a lot tag
    ``device_silent``    the device id              ticks (``Tick.devices``)
    ``huller_fault``     ``<huller>/comms``         ticks (the huller's device health)
    ``huller_fault``     ``<huller>/jam``,          ``huller`` readings
                         ``<huller>/wiring``
    ``service_due``,     ``<huller>/<task>``        ``maintenance_status`` readings
    ``service_overdue``
    ``sink_backlog``     the sink name              ticks (``Tick.sinks``)
    ===================  =========================  ====================================

The pure core is three functions on one subject's ``RuleState``, in the shape
``evaluate(rule, state, reading) -> (state, alerts)``:

- ``subjects(rule, event)``: which subjects an event speaks about;
- ``evaluate(rule, state, event, now_ns)``: apply the event (if it speaks about the
  subject), then the timers;
- ``acknowledge(rule, state, by=..., at_ns=...)``.

``Engine`` holds the rules and every subject's state in dicts, routes events to the
rules that read them, and serialises the whole state to JSON. It is still pure: it is
the only mutable thing here, and it changes only when called.

Conditions
----------
Each rule turns its input into one boolean, the *condition*, with hysteresis where a
measured value can hover: a condition that holds is kept until a separate, stricter
clear test passes; in between (the band) nothing changes.

``wet_lot``
    For the lot of the reading, with ``T`` the threshold of the reading's product
    (``thresholds_pct``, matched without regard to case, else
    ``default_threshold_pct``), ``C = T - hysteresis_pct``, ``W`` the lot's last ``n``
    moisture readings, ``N`` the number of all its readings and ``M`` their mean
    (rounded to 6 decimals, so identical readings at the threshold have their mean at
    the threshold, not a float's width below)::

        fires   when  #{x in W : x >= T} >= k   or  (N >= mean_min_readings and M >= T)
        clears  when  #{x in W : x >= C} <  k   and (N <  mean_min_readings or  M <  C)

    A clear implies no fire, so between the two the alert keeps its state. Readings
    that hover around ``T`` (none below ``C``) can fire it once and never clear it.
    Only readings carrying a ``lot`` tag and a finite ``moisture_pct`` count. A lot
    with no reading for ``forget_after_s`` is forgotten: its next reading starts a new
    window and mean, and an alert still open for it is resolved (``forgotten`` in its
    data) by the next tick or reading.
``device_silent``
    The device's last valid frame (``DeviceSnapshot.last_frame_ns``; before the first
    one, ``since_ns``) is at least the limit old. Limits are per driver
    (``DEFAULT_SILENT_S``: continuous meters and scales; ticket printers have none,
    they speak when someone measures) and per device, ``None`` meaning never. It
    clears only when a frame arrives (``last_frame_ns`` within the limit): after a
    restart the health registry knows no frame yet, and that must not count as frames
    having returned.
``huller_fault``
    ``comms``: the huller's device has been offline for ``offline_s``, or reported at
    least ``error_count`` new errors within ``error_window_s``; clears when it is online
    and reported none within the window. ``jam``: the motor is running and
    ``bags_total`` has not increased for ``jam_s``; clears when a bag is counted or the
    motor stops. ``wiring``: between consecutive readings (at most ``max_gap_s`` apart)
    that both show the motor input off, ``hours_total`` rose by ``wiring_h`` in all;
    clears when the hours rise while the input is on (the input and the hour meter
    agree again), which is also what resets the sum.
``service_due`` / ``service_overdue``
    One ``ServiceRule`` class with a ``level``: ``due`` holds while the task's
    ``state`` is ``due`` or ``overdue`` (the reading's ``due`` field), ``overdue`` while
    it is ``overdue``. Both clear when a service brings the task back to ``ok``.
``sink_backlog``
    At least ``min_backlog`` records wait and the sink delivered nothing for
    ``undelivered_s`` (before its first delivery, since ``since_ns``); clears when it
    delivers again or nothing waits.

A device, huller or sink missing from a tick's mapping is taken as removed: its alert
resolves (``removed`` in its data). A tick whose ``devices`` or ``sinks`` is ``None``
says nothing about them.

Lifecycle
---------
Per (rule, subject), driven by the condition and by time::

    resolved --condition--> pending --pending_s elapsed--> firing --ack--> acknowledged
       ^                       |                             |                |
       +------- condition clears (from any state) ----------+----------------+

=========================================  ============  ========================
transition                                 event state   ``notify``
=========================================  ============  ========================
condition starts, ``pending_s > 0``        pending       no
condition starts and ``pending_s`` passed  firing        yes
firing, ``repeat_s`` since last notice     firing        yes (``repeat`` counts)
``ack`` while firing                       acknowledged  yes
condition clears while pending             resolved      no (nobody was told)
condition clears while firing or acked     resolved      yes
=========================================  ============  ========================

Nothing else emits: new readings while an alert is firing update its data (a wet lot's
mean, a device's silence) without an event, and the next repeat carries the new data.
Acknowledging stops repeats; acknowledging anything but a firing alert changes nothing
and returns no event. ``since_ns`` is when the episode began (the condition first
held) and stays with it to the resolved event; with ``rule`` and ``subject`` it names
the episode. The pending delay and the repeat interval are checked whenever the
subject is evaluated and on every tick, so their resolution is the tick period.

Persistence and restarts
------------------------
``Engine.snapshot()`` is JSON holding every subject's state: its alert state and
episode, when it last notified, who acknowledged it, its data, and what its rule
remembers (a lot's window and sums, a huller's error samples, jam and wiring
trackers). ``Engine.restore(rules, text)`` continues exactly where the snapshot was
taken: the same inputs afterwards give the same alerts as if there had been no
restart. Restoring emits nothing, and a firing alert is not notified again until its
repeat interval has passed since its last notice. Subjects of rules no longer
configured (or whose name now belongs to another kind of rule) are dropped.

Cost
----
``Engine.on_reading`` looks the measurement up in a dict built once: a reading visits
only the rules that read its measurement (a ``scale`` reading visits none), and each
touches the one or two subjects the reading names: O(``n``) for a wet lot's window,
O(1) otherwise, whatever the number of lots, devices or open alerts. Messages are
rendered only for emitted events. ``Engine.on_tick`` costs O(devices + sinks + open
alerts), plus once an hour of ``now_ns`` a sweep of the lots remembered
(``forget_after_s`` bounds them). The sweep only frees memory: a forgotten lot is also
recognised on its next reading, so when it runs never changes an alert; its schedule
is in the snapshot all the same, so a restored engine's state matches too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Literal, Protocol, assert_never, get_args

from coffee_telemetry.agent.commands import escape_level
from coffee_telemetry.agent.errors import RuleError as RuleError
from coffee_telemetry.agent.readings import Reading, format_time
from coffee_telemetry.drivers.events import FieldValue

__all__ = [
    "DATA_FIELDS",
    "DEFAULT_SILENT_S",
    "SNAPSHOT_VERSION",
    "Alert",
    "AlertPoint",
    "AlertState",
    "DeviceHealthLike",
    "DeviceSilentRule",
    "DeviceSnapshot",
    "Engine",
    "ErrorMemory",
    "HullerFaultRule",
    "JamMemory",
    "Lang",
    "LotMemory",
    "Memory",
    "Rule",
    "RuleError",
    "RuleState",
    "ServiceRule",
    "Severity",
    "SinkBacklogRule",
    "SinkSnapshot",
    "Tick",
    "WetLotRule",
    "WiringMemory",
    "acknowledge",
    "alert_message",
    "alert_payload",
    "alert_point",
    "alert_topic",
    "current_alert",
    "default_rules",
    "evaluate",
    "from_json",
    "subjects",
    "to_json",
]

#: Message languages: Brazilian Portuguese (the default) or English.
Lang = Literal["pt-BR", "en"]

#: Version of the ``Engine.snapshot()`` document.
SNAPSHOT_VERSION = 1

#: ``device_silent`` limits per driver, in seconds, when a rule does not override them.
#: Ticket printers (``moisture.ticket``) are absent: they speak when someone measures.
#: Hullers are watched by ``huller_fault``.
DEFAULT_SILENT_S: Mapping[str, float] = {
    "moisture.tesma": 10.0,
    "scale.mtsics": 30.0,
    "scale.toledo_continuous": 30.0,
    "scale.ascii": 30.0,
}

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
}

_NS = 1_000_000_000
#: How often (of ``now_ns``) ``Engine.on_tick`` frees forgotten lots.
_SWEEP_NS = 3600 * _NS
_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")

Data = Mapping[str, FieldValue]


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


# -- rules ---------------------------------------------------------------------------------


def _check_common(name: str, pending_s: float, repeat_s: float | None) -> None:
    if not _RULE_NAME.fullmatch(name):
        raise RuleError(
            "must be 1-48 lowercase letters, digits, - or _ (it is part of MQTT topics)",
            rule=name,
            key="name",
        )
    if not (math.isfinite(pending_s) and pending_s >= 0):
        raise RuleError("must be a finite number >= 0", rule=name, key="pending_s")
    if repeat_s is not None and not (math.isfinite(repeat_s) and repeat_s > 0):
        raise RuleError("must be a finite number > 0, or None", rule=name, key="repeat_s")


def _check(ok: bool, name: str, key: str, message: str) -> None:
    if not ok:
        raise RuleError(message, rule=name, key=key)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class WetLotRule:
    """A lot too wet to store (see the module docstring for the exact test).

    Attributes:
        name: Rule name (MQTT topic level and ``rule`` tag).
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
        default_threshold_pct: Threshold for products not in ``thresholds_pct``.
        thresholds_pct: Threshold per product (the ``product`` tag), case-insensitive.
        hysteresis_pct: The clear test uses the threshold minus this.
        k: Readings at or above the threshold, among the last ``n``, that fire.
        n: Size of the window of recent readings.
        mean_min_readings: The mean counts once the lot has this many readings.
        forget_after_s: A lot with no reading for this long is forgotten.
    """

    kind: ClassVar[str] = "wet_lot"
    measurements: ClassVar[frozenset[str]] = frozenset({"moisture"})
    on_ticks: ClassVar[bool] = False

    name: str = "wet_lot"
    severity: Severity = Severity.CRITICAL
    pending_s: float = 0.0
    repeat_s: float | None = 1800.0
    default_threshold_pct: float = 12.5
    thresholds_pct: Mapping[str, float] = field(default_factory=dict)
    hysteresis_pct: float = 0.5
    k: int = 2
    n: int = 3
    mean_min_readings: int = 1
    forget_after_s: float = 7 * 86400.0
    _by_product: Mapping[str, float] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        _check_common(self.name, self.pending_s, self.repeat_s)
        name = self.name
        for product, value in {"": self.default_threshold_pct, **self.thresholds_pct}.items():
            key = f"thresholds_pct.{product}" if product else "default_threshold_pct"
            _check(_positive(value), name, key, "must be a finite number > 0")
        _check(
            math.isfinite(self.hysteresis_pct) and self.hysteresis_pct >= 0,
            name,
            "hysteresis_pct",
            "must be a finite number >= 0",
        )
        _check(1 <= self.n <= 1000, name, "n", "must be between 1 and 1000")
        _check(1 <= self.k <= self.n, name, "k", "must be between 1 and n")
        _check(self.mean_min_readings >= 1, name, "mean_min_readings", "must be >= 1")
        _check(_positive(self.forget_after_s), name, "forget_after_s", "must be > 0")
        thresholds = dict(self.thresholds_pct)
        object.__setattr__(self, "thresholds_pct", thresholds)
        object.__setattr__(
            self, "_by_product", {p.casefold(): float(v) for p, v in thresholds.items()}
        )

    def threshold_for(self, product: str) -> float:
        """The moisture threshold (%) for ``product``."""
        return self._by_product.get(product.casefold(), float(self.default_threshold_pct))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSilentRule:
    """A device that sent no valid frame for too long.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
        silent_s_by_driver: Limits per driver, merged over ``DEFAULT_SILENT_S``;
            ``None`` switches a driver off.
        silent_s_by_device: Limits per device id, winning over the driver's;
            ``None`` switches a device off.
    """

    kind: ClassVar[str] = "device_silent"
    measurements: ClassVar[frozenset[str]] = frozenset()
    on_ticks: ClassVar[bool] = True

    name: str = "device_silent"
    severity: Severity = Severity.WARNING
    pending_s: float = 0.0
    repeat_s: float | None = 3600.0
    silent_s_by_driver: Mapping[str, float | None] = field(default_factory=dict)
    silent_s_by_device: Mapping[str, float | None] = field(default_factory=dict)
    _by_driver: Mapping[str, float | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        _check_common(self.name, self.pending_s, self.repeat_s)
        for prefix, limits in (
            ("silent_s_by_driver", self.silent_s_by_driver),
            ("silent_s_by_device", self.silent_s_by_device),
        ):
            for key, value in limits.items():
                _check(
                    value is None or _positive(value),
                    self.name,
                    f"{prefix}.{key}",
                    "must be a finite number > 0, or None",
                )
        object.__setattr__(self, "silent_s_by_driver", dict(self.silent_s_by_driver))
        object.__setattr__(self, "silent_s_by_device", dict(self.silent_s_by_device))
        object.__setattr__(self, "_by_driver", {**DEFAULT_SILENT_S, **self.silent_s_by_driver})

    def limit_s(self, device: str, driver: str) -> float | None:
        """The silence limit for ``device`` of ``driver`` (None: not watched)."""
        if device in self.silent_s_by_device:
            return self.silent_s_by_device[device]
        return self._by_driver.get(driver)


@dataclass(frozen=True, slots=True, kw_only=True)
class HullerFaultRule:
    """A huller that stopped answering, jammed, or whose motor input disagrees with its hours.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long a condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
        driver: The health registry's driver name for hullers.
        offline_s: ``comms`` fires after the huller has been offline this long.
        error_count: ... or after this many errors within ``error_window_s``.
        error_window_s: The error counting window.
        jam_s: ``jam`` fires after the motor ran this long with no bag counted.
        wiring_h: ``wiring`` fires after the hours rose this much with the input off.
        max_gap_s: Readings further apart than this are not compared (``wiring``).
    """

    kind: ClassVar[str] = "huller_fault"
    measurements: ClassVar[frozenset[str]] = frozenset({"huller"})
    on_ticks: ClassVar[bool] = True

    name: str = "huller_fault"
    severity: Severity = Severity.CRITICAL
    pending_s: float = 0.0
    repeat_s: float | None = 1800.0
    driver: str = "counter.autonics_ct"
    offline_s: float = 30.0
    error_count: int = 3
    error_window_s: float = 60.0
    jam_s: float = 600.0
    wiring_h: float = 0.05
    max_gap_s: float = 60.0

    def __post_init__(self) -> None:
        _check_common(self.name, self.pending_s, self.repeat_s)
        name = self.name
        _check(
            math.isfinite(self.offline_s) and self.offline_s >= 0,
            name,
            "offline_s",
            "must be a finite number >= 0",
        )
        _check(self.error_count >= 1, name, "error_count", "must be >= 1")
        for key in ("error_window_s", "jam_s", "wiring_h", "max_gap_s"):
            _check(_positive(getattr(self, key)), name, key, "must be a finite number > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRule:
    """A huller service task due (``level="due"``) or overdue (``level="overdue"``).

    Attributes:
        name: Rule name (``service_due``, or ``service_overdue`` for the second one).
        level: ``due`` holds while the task is due or overdue; ``overdue`` while overdue.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    kind: ClassVar[str] = "service"
    measurements: ClassVar[frozenset[str]] = frozenset({"maintenance_status"})
    on_ticks: ClassVar[bool] = False

    name: str = "service_due"
    level: Literal["due", "overdue"] = "due"
    severity: Severity = Severity.WARNING
    pending_s: float = 0.0
    repeat_s: float | None = None

    def __post_init__(self) -> None:
        _check_common(self.name, self.pending_s, self.repeat_s)
        _check(self.level in ("due", "overdue"), self.name, "level", "must be due or overdue")


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkBacklogRule:
    """A sink that has not delivered for too long while records wait for it.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
        undelivered_s: Fires when nothing was delivered for this long ...
        min_backlog: ... and at least this many records wait.
    """

    kind: ClassVar[str] = "sink_backlog"
    measurements: ClassVar[frozenset[str]] = frozenset()
    on_ticks: ClassVar[bool] = True

    name: str = "sink_backlog"
    severity: Severity = Severity.WARNING
    pending_s: float = 0.0
    repeat_s: float | None = 3600.0
    undelivered_s: float = 600.0
    min_backlog: int = 1

    def __post_init__(self) -> None:
        _check_common(self.name, self.pending_s, self.repeat_s)
        _check(_positive(self.undelivered_s), self.name, "undelivered_s", "must be > 0")
        _check(self.min_backlog >= 1, self.name, "min_backlog", "must be >= 1")


#: A configured rule.
Rule = WetLotRule | DeviceSilentRule | HullerFaultRule | ServiceRule | SinkBacklogRule


def default_rules() -> tuple[Rule, ...]:
    """One rule of each kind with its defaults (``service_overdue`` critical, daily repeat)."""
    return (
        WetLotRule(),
        DeviceSilentRule(),
        HullerFaultRule(),
        ServiceRule(),
        ServiceRule(
            name="service_overdue",
            level="overdue",
            severity=Severity.CRITICAL,
            repeat_s=86400.0,
        ),
        SinkBacklogRule(),
    )


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


#: What a rule remembers about a subject besides its alert.
Memory = LotMemory | ErrorMemory | JamMemory | WiringMemory


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


# -- the pure core -------------------------------------------------------------------------


def subjects(rule: Rule, event: Reading | Tick) -> list[str]:
    """The subjects of ``rule`` that ``event`` speaks about."""
    if isinstance(event, Tick):
        match rule:
            case DeviceSilentRule():
                if event.devices is None:
                    return []
                return [
                    device
                    for device, snap in event.devices.items()
                    if rule.limit_s(device, snap.driver) is not None
                ]
            case HullerFaultRule():
                if event.devices is None:
                    return []
                return [
                    f"{device}/comms"
                    for device, snap in event.devices.items()
                    if snap.driver == rule.driver
                ]
            case SinkBacklogRule():
                return [] if event.sinks is None else list(event.sinks)
            case WetLotRule() | ServiceRule():
                return []
            case _:
                assert_never(rule)
    if event.measurement not in rule.measurements:
        return []
    match rule:
        case WetLotRule():
            lot = event.tags.get("lot", "")
            return [lot] if lot else []
        case HullerFaultRule():
            return [f"{event.device}/jam", f"{event.device}/wiring"]
        case ServiceRule():
            task = event.tags.get("task", "")
            return [f"{event.device}/{task}"] if task else []
        case DeviceSilentRule() | SinkBacklogRule():  # pragma: no cover - no measurements
            return []
        case _:
            assert_never(rule)


def evaluate(
    rule: Rule,
    state: RuleState,
    event: Reading | Tick,
    now_ns: int,
    *,
    lang: Lang = "pt-BR",
) -> tuple[RuleState, list[Alert]]:
    """Apply ``event`` to one subject's state, then its timers.

    An event that says nothing about the subject (another lot, a tick for a reading
    rule) only lets time pass: a pending delay may elapse, a repeat may fall due, a
    forgotten lot's alert resolves. When nothing changes, ``state`` itself is returned.

    Args:
        rule: The rule.
        state: The subject's state (``RuleState(subject)`` for a new one).
        event: A reading, or a tick.
        now_ns: The current time, UTC nanoseconds.
        lang: Language of the messages.

    Returns:
        The new state and the events to publish, in order.
    """
    alerts: list[Alert] = []
    if isinstance(rule, WetLotRule):
        state = _forget_lot(rule, state, now_ns, lang, alerts)
    outcome = _condition(rule, state, event, now_ns)
    if outcome is not None:
        state = _apply(rule, state, *outcome, now_ns, lang, alerts)
    state = _timers(rule, state, now_ns, lang, alerts)
    return state, alerts


def acknowledge(
    rule: Rule, state: RuleState, *, by: str, at_ns: int, lang: Lang = "pt-BR"
) -> tuple[RuleState, list[Alert]]:
    """Acknowledge a firing alert: no more repeats; it still resolves when it clears.

    Anything but a firing alert (pending, already acknowledged, resolved) is left as
    it is, with no event.
    """
    if state.state is not AlertState.FIRING:
        return state, []
    state = dataclasses.replace(
        state, state=AlertState.ACKNOWLEDGED, acked_by=by, acked_at_ns=at_ns
    )
    return state, [_alert(rule, state, at_ns, lang, notify=True)]


def current_alert(
    rule: Rule, state: RuleState, at_ns: int, *, lang: Lang = "pt-BR"
) -> Alert | None:
    """The open alert of ``state`` as an event (``notify`` false), or None if closed."""
    if not state.open:
        return None
    return _alert(rule, state, at_ns, lang, notify=False)


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def _apply(
    rule: Rule,
    state: RuleState,
    active: bool,
    data: Data,
    memory: Memory | None,
    now_ns: int,
    lang: Lang,
    alerts: list[Alert],
) -> RuleState:
    # Positional constructors: this runs for every reading, and ``replace`` is slow.
    if active:
        if state.open:
            return RuleState(
                state.subject,
                state.state,
                state.since_ns,
                state.notified_ns,
                state.repeat,
                state.acked_by,
                state.acked_at_ns,
                data,
                memory,
            )
        state = RuleState(state.subject, AlertState.PENDING, now_ns, 0, 0, None, None, data, memory)
        if rule.pending_s > 0:
            alerts.append(_alert(rule, state, now_ns, lang, notify=False))
        return state
    if state.open:
        return _resolve(rule, state, data, memory, now_ns, lang, alerts)
    if state.memory is memory and not state.data:
        return state
    return RuleState(state.subject, memory=memory)


def _resolve(
    rule: Rule,
    state: RuleState,
    data: Data,
    memory: Memory | None,
    now_ns: int,
    lang: Lang,
    alerts: list[Alert],
) -> RuleState:
    # Nobody was told about a pending alert, so nobody is told it is over.
    notify = state.state is not AlertState.PENDING
    closed = dataclasses.replace(state, state=AlertState.RESOLVED, data=data)
    alerts.append(_alert(rule, closed, now_ns, lang, notify=notify))
    return RuleState(subject=state.subject, memory=memory)


def _timers(
    rule: Rule, state: RuleState, now_ns: int, lang: Lang, alerts: list[Alert]
) -> RuleState:
    if state.state is AlertState.PENDING:
        if now_ns - state.since_ns >= _ns(rule.pending_s):
            state = dataclasses.replace(
                state, state=AlertState.FIRING, notified_ns=now_ns, repeat=0
            )
            alerts.append(_alert(rule, state, now_ns, lang, notify=True))
    elif (
        state.state is AlertState.FIRING
        and rule.repeat_s is not None
        and now_ns - state.notified_ns >= _ns(rule.repeat_s)
    ):
        state = dataclasses.replace(state, notified_ns=now_ns, repeat=state.repeat + 1)
        alerts.append(_alert(rule, state, now_ns, lang, notify=True))
    return state


def _alert(rule: Rule, state: RuleState, at_ns: int, lang: Lang, *, notify: bool) -> Alert:
    return Alert(
        rule=rule.name,
        subject=state.subject,
        state=state.state,
        severity=rule.severity,
        message=_message(rule, state, lang),
        data=state.data,
        notify=notify,
        since_ns=state.since_ns,
        at_ns=at_ns,
        repeat=state.repeat,
        acked_by=state.acked_by,
        acked_at_ns=state.acked_at_ns,
    )


# -- conditions ----------------------------------------------------------------------------

#: (condition holds, data, memory) for one subject.
_Outcome = tuple[bool, Data, Memory | None]
_NO_DATA: Data = {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _condition(rule: Rule, state: RuleState, event: Reading | Tick, now_ns: int) -> _Outcome | None:
    match rule:
        case WetLotRule():
            if isinstance(event, Reading):
                return _wet_lot(rule, state, event, now_ns)
            return None
        case DeviceSilentRule():
            if isinstance(event, Tick):
                return _device_silent(rule, state, event, now_ns)
            return None
        case HullerFaultRule():
            huller, _, part = state.subject.rpartition("/")
            if isinstance(event, Tick):
                return _comms(rule, state, huller, event, now_ns) if part == "comms" else None
            if event.measurement != "huller" or event.device != huller:
                return None
            if part == "jam":
                return _jam(rule, state, huller, event, now_ns)
            if part == "wiring":
                return _wiring(rule, state, huller, event, now_ns)
            return None
        case ServiceRule():
            if isinstance(event, Reading):
                return _service(rule, state, event)
            return None
        case SinkBacklogRule():
            if isinstance(event, Tick):
                return _sink_backlog(rule, state, event, now_ns)
            return None
        case _:
            assert_never(rule)


def _forget_lot(
    rule: WetLotRule, state: RuleState, now_ns: int, lang: Lang, alerts: list[Alert]
) -> RuleState:
    memory = state.memory
    if not isinstance(memory, LotMemory) or now_ns - memory.last_ns < _ns(rule.forget_after_s):
        return state
    if state.open:
        _resolve(rule, state, {**state.data, "forgotten": True}, None, now_ns, lang, alerts)
    return RuleState(subject=state.subject)


def _wet_lot(rule: WetLotRule, state: RuleState, reading: Reading, now_ns: int) -> _Outcome | None:
    if reading.measurement != "moisture" or reading.tags.get("lot") != state.subject:
        return None
    value = _number(reading.fields.get("moisture_pct"))
    if value is None:
        return None
    product = reading.tags.get("product", "")
    old = state.memory if isinstance(state.memory, LotMemory) else None
    memory = LotMemory(
        window=((*old.window, value) if old else (value,))[-rule.n :],
        count=(old.count if old else 0) + 1,
        total=(old.total if old else 0.0) + value,
        max_pct=max(old.max_pct, value) if old else value,
        last_ns=now_ns,
        device=reading.device,
        station=reading.tags.get("station", ""),
        product=product,
    )
    threshold = rule.threshold_for(product)
    clear_below = threshold - rule.hysteresis_pct
    mean = round(memory.total / memory.count, 6)
    mean_counts = memory.count >= rule.mean_min_readings
    if state.open:
        active = sum(x >= clear_below for x in memory.window) >= rule.k or (
            mean_counts and mean >= clear_below
        )
    else:
        active = sum(x >= threshold for x in memory.window) >= rule.k or (
            mean_counts and mean >= threshold
        )
        if not active:
            return False, _NO_DATA, memory  # a closed subject keeps no data
    data: dict[str, FieldValue] = {
        "lot": state.subject,
        "device": memory.device,
        "station": memory.station,
        "product": product,
        "count": memory.count,
        "last_pct": value,
        "max_pct": memory.max_pct,
        "mean_pct": mean,
        "threshold_pct": threshold,
        "clear_below_pct": round(clear_below, 6),
    }
    return active, data, memory


def _removed(state: RuleState) -> _Outcome:
    return False, {**state.data, "removed": True}, None


def _device_silent(
    rule: DeviceSilentRule, state: RuleState, tick: Tick, now_ns: int
) -> _Outcome | None:
    if tick.devices is None:
        return None
    snap = tick.devices.get(state.subject)
    limit = None if snap is None else rule.limit_s(state.subject, snap.driver)
    if snap is None or limit is None:
        return _removed(state)
    last = snap.last_frame_ns
    silent_ns = now_ns - (snap.since_ns if last is None else last)
    # Open and no frame yet (a restart cleared the registry): frames have not returned.
    active = (state.open and last is None) or silent_ns >= _ns(limit)
    data: dict[str, FieldValue] = {
        "device": state.subject,
        "driver": snap.driver,
        "station": snap.station,
        "silent_s": round(silent_ns / _NS, 3),
        "limit_s": float(limit),
    }
    if last is not None:
        data["last_frame_ns"] = last
    return active, data, None


def _comms(
    rule: HullerFaultRule, state: RuleState, huller: str, tick: Tick, now_ns: int
) -> _Outcome | None:
    if tick.devices is None:
        return None
    snap = tick.devices.get(huller)
    if snap is None:
        return _removed(state)
    old = state.memory.samples if isinstance(state.memory, ErrorMemory) else ()
    if not old or snap.errors < old[-1][1]:
        samples: tuple[tuple[int, int], ...] = ((now_ns, snap.errors),)  # first, or restarted
    elif snap.errors != old[-1][1]:
        samples = (*old, (now_ns, snap.errors))
    else:
        samples = old
    # Keep the newest sample at or before the window's start as the baseline.
    start = now_ns - _ns(rule.error_window_s)
    drop = 0
    while drop + 1 < len(samples) and samples[drop + 1][0] <= start:
        drop += 1
    samples = samples[drop:]
    errors = snap.errors - samples[0][1]
    offline_ns = 0 if snap.online else max(0, now_ns - snap.since_ns)
    if state.open:
        active = not snap.online or errors > 0
    else:
        active = (not snap.online and offline_ns >= _ns(rule.offline_s)) or (
            errors >= rule.error_count
        )
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": snap.station,
        "fault": "comms",
        "online": snap.online,
        "offline_s": round(offline_ns / _NS, 3),
        "errors": errors,
        "window_s": float(rule.error_window_s),
    }
    if snap.last_error:
        data["last_error"] = snap.last_error
    if isinstance(state.memory, ErrorMemory) and samples == old:
        return active, data, state.memory
    return active, data, ErrorMemory(samples)


def _jam(
    rule: HullerFaultRule, state: RuleState, huller: str, reading: Reading, now_ns: int
) -> _Outcome | None:
    running = reading.fields.get("running")
    bags = _number(reading.fields.get("bags_total"))
    if not isinstance(running, bool) or bags is None:
        return None
    old = state.memory if isinstance(state.memory, JamMemory) else None
    idle_since: int | None
    if not running:
        idle_since = None
    elif old is None or old.idle_since_ns is None or bags > old.bags:
        idle_since = now_ns
    else:
        idle_since = old.idle_since_ns
    idle_ns = 0 if idle_since is None else now_ns - idle_since
    active = running and idle_ns >= _ns(rule.jam_s)
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": reading.tags.get("station", ""),
        "fault": "jam",
        "idle_s": round(idle_ns / _NS, 3),
        "limit_s": float(rule.jam_s),
        "bags_total": bags,
    }
    return active, data, JamMemory(bags=bags, idle_since_ns=idle_since)


def _wiring(
    rule: HullerFaultRule, state: RuleState, huller: str, reading: Reading, now_ns: int
) -> _Outcome | None:
    running = reading.fields.get("running")
    hours = _number(reading.fields.get("hours_total"))
    if not isinstance(running, bool) or hours is None:
        return None
    old = state.memory if isinstance(state.memory, WiringMemory) else None
    gain = old.gain_h if old else 0.0
    if old is not None and 0 < now_ns - old.at_ns <= _ns(rule.max_gap_s) and hours > old.hours:
        if running:
            gain = 0.0  # the hours rise with the input on: they agree
        elif not old.running:
            gain += hours - old.hours
        # on, then off: the motor stopped between the polls; the rise is expected
    active = gain > 0 if state.open else gain >= rule.wiring_h
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": reading.tags.get("station", ""),
        "fault": "wiring",
        "gain_h": round(gain, 6),
        "hours_total": hours,
    }
    return active, data, WiringMemory(at_ns=now_ns, hours=hours, running=running, gain_h=gain)


def _service(rule: ServiceRule, state: RuleState, reading: Reading) -> _Outcome | None:
    task = reading.tags.get("task", "")
    if reading.measurement != "maintenance_status" or f"{reading.device}/{task}" != state.subject:
        return None
    task_state = reading.fields.get("state")
    if task_state not in ("ok", "due", "overdue"):
        overdue = reading.fields.get("overdue") is True
        task_state = "overdue" if overdue else "due" if reading.fields.get("due") is True else "ok"
    active = task_state == "overdue" or (rule.level == "due" and task_state == "due")
    data: dict[str, FieldValue] = {"huller": reading.device, "task": task, "task_state": task_state}
    for key in ("hours_since", "interval_h", "remaining_h"):
        value = _number(reading.fields.get(key))
        if value is not None:
            data[key] = value
    return active, data, None


def _sink_backlog(
    rule: SinkBacklogRule, state: RuleState, tick: Tick, now_ns: int
) -> _Outcome | None:
    if tick.sinks is None:
        return None
    snap = tick.sinks.get(state.subject)
    if snap is None:
        return _removed(state)
    last = snap.last_delivery_ns
    waiting_ns = now_ns - (snap.since_ns if last is None else last)
    waits = snap.backlog >= rule.min_backlog
    if state.open and last is None:
        active = waits  # nothing delivered yet since a restart
    else:
        active = waits and waiting_ns >= _ns(rule.undelivered_s)
    data: dict[str, FieldValue] = {
        "sink": state.subject,
        "backlog": snap.backlog,
        "undelivered_s": round(waiting_ns / _NS, 3),
        "limit_s": float(rule.undelivered_s),
    }
    if last is not None:
        data["last_delivery_ns"] = last
    return active, data, None


# -- messages ------------------------------------------------------------------------------


def _tr(lang: Lang, pt: str, en: str) -> str:
    return pt if lang == "pt-BR" else en


def _num(value: float, digits: int, lang: Lang) -> str:
    text = f"{value:.{digits}f}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def _dur(seconds: float, lang: Lang) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{_num(seconds / 3600, 1, lang)} h"
    return _tr(lang, f"{seconds / 86400:.0f} dias", f"{seconds / 86400:.0f} days")


def _s(data: Data, key: str) -> str:
    value = data.get(key, "")
    return value if isinstance(value, str) else str(value)


def _f(data: Data, key: str) -> float:
    value = data.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _message(rule: Rule, state: RuleState, lang: Lang) -> str:
    head = _head(state.state, state.repeat, state.acked_by, lang)
    title, detail = _describe(rule, state.subject, state.data, not state.open, lang)
    return f"{head} — {title}: {detail}"


def alert_message(rule: Rule, alert: Alert, lang: Lang) -> str:
    """``alert``'s message in ``lang`` (events carry it in the engine's language only)."""
    head = _head(alert.state, alert.repeat, alert.acked_by, lang)
    resolved = alert.state is AlertState.RESOLVED
    title, detail = _describe(rule, alert.subject, alert.data, resolved, lang)
    return f"{head} — {title}: {detail}"


def _head(state: AlertState, repeat: int, acked_by: str | None, lang: Lang) -> str:
    match state:
        case AlertState.PENDING:
            return _tr(lang, "PENDENTE", "PENDING")
        case AlertState.FIRING:
            head = _tr(lang, "ALERTA", "ALERT")
            if repeat:
                head += _tr(lang, f" (lembrete {repeat})", f" (reminder {repeat})")
            return head
        case AlertState.ACKNOWLEDGED:
            return _tr(lang, f"RECONHECIDO por {acked_by}", f"ACKNOWLEDGED by {acked_by}")
        case AlertState.RESOLVED:
            return _tr(lang, "RESOLVIDO", "RESOLVED")
        case _:
            assert_never(state)


def _describe(rule: Rule, subject: str, data: Data, resolved: bool, lang: Lang) -> tuple[str, str]:
    title = _title(rule, lang)
    if resolved and data.get("removed") is True:
        return title, _tr(
            lang, f"{subject}: não está mais configurado", f"{subject}: no longer configured"
        )
    match rule:
        case WetLotRule():
            return title, _wet_lot_text(subject, data, lang)
        case DeviceSilentRule():
            return title, _silent_text(subject, data, resolved, lang)
        case HullerFaultRule():
            return title, _huller_text(data, resolved, lang)
        case ServiceRule():
            return title, _service_text(data, lang)
        case SinkBacklogRule():
            return title, _sink_text(subject, data, resolved, lang)
        case _:
            assert_never(rule)


def _title(rule: Rule, lang: Lang) -> str:
    match rule:
        case WetLotRule():
            return _tr(lang, "Lote úmido", "Wet lot")
        case DeviceSilentRule():
            return _tr(lang, "Equipamento sem sinal", "Device silent")
        case HullerFaultRule():
            return _tr(lang, "Falha no descascador", "Huller fault")
        case ServiceRule():
            if rule.level == "overdue":
                return _tr(lang, "Manutenção atrasada", "Service overdue")
            return _tr(lang, "Manutenção vencendo", "Service due")
        case SinkBacklogRule():
            return _tr(lang, "Envio parado", "Sink backlog")
        case _:
            assert_never(rule)


def _wet_lot_text(lot: str, data: Data, lang: Lang) -> str:
    station = _s(data, "station")
    count = int(_f(data, "count"))
    mean, top, limit = (
        _num(_f(data, k), 1, lang) for k in ("mean_pct", "max_pct", "threshold_pct")
    )
    text = _tr(
        lang,
        f"lote {lot}{f', estação {station}' if station else ''}: média {mean} %, "
        f"máx. {top} %, {count} {'leitura' if count == 1 else 'leituras'} (limite {limit} %)",
        f"lot {lot}{f' at station {station}' if station else ''}: mean {mean} %, "
        f"max {top} %, {count} {'reading' if count == 1 else 'readings'} (threshold {limit} %)",
    )
    if data.get("forgotten") is True:
        text += _tr(
            lang, "; sem leituras novas, lote esquecido", "; no new readings, lot forgotten"
        )
    return text


def _silent_text(device: str, data: Data, resolved: bool, lang: Lang) -> str:
    station = _s(data, "station")
    where = f"{device} ({_s(data, 'driver')}{f', {station}' if station else ''})"
    if resolved:
        return _tr(lang, f"{where}: voltou a enviar dados", f"{where}: frames are back")
    silent, limit = _dur(_f(data, "silent_s"), lang), _dur(_f(data, "limit_s"), lang)
    return _tr(
        lang,
        f"{where}: nenhum dado válido há {silent} (limite {limit})",
        f"{where}: no valid frame for {silent} (limit {limit})",
    )


def _huller_text(data: Data, resolved: bool, lang: Lang) -> str:
    huller = _s(data, "huller")
    fault = _s(data, "fault")
    if fault == "comms":
        if resolved:
            return _tr(lang, f"{huller}: comunicação normal", f"{huller}: communication is back")
        error = _s(data, "last_error")
        if data.get("online") is False:
            text = _tr(
                lang,
                f"{huller}: sem comunicação há {_dur(_f(data, 'offline_s'), lang)}",
                f"{huller}: no communication for {_dur(_f(data, 'offline_s'), lang)}",
            )
        else:
            n, window = int(_f(data, "errors")), _dur(_f(data, "window_s"), lang)
            text = _tr(
                lang,
                f"{huller}: {n} erros de comunicação em {window}",
                f"{huller}: {n} communication errors in {window}",
            )
        if error:
            text += _tr(lang, f"; último erro: {error}", f"; last error: {error}")
        return text
    if fault == "jam":
        if resolved:
            return _tr(
                lang,
                f"{huller}: sacos voltaram a ser contados ou o motor parou",
                f"{huller}: bags are counted again or the motor stopped",
            )
        idle, limit = _dur(_f(data, "idle_s"), lang), _dur(_f(data, "limit_s"), lang)
        return _tr(
            lang,
            f"{huller}: motor ligado sem contar sacos há {idle} (limite {limit});"
            " possível embuchamento",
            f"{huller}: motor running with no bag counted for {idle} (limit {limit}); possible jam",
        )
    if resolved:
        return _tr(
            lang,
            f"{huller}: entrada do motor e horímetro voltaram a concordar",
            f"{huller}: motor input and hour meter agree again",
        )
    gain = _num(_f(data, "gain_h"), 2, lang)
    return _tr(
        lang,
        f"{huller}: horímetro avançou {gain} h com a entrada do motor desligada;"
        " verificar a fiação",
        f"{huller}: hour meter advanced {gain} h while the motor input was off; check the wiring",
    )


def _service_text(data: Data, lang: Lang) -> str:
    where = f"{_s(data, 'huller')} / {_s(data, 'task')}"
    since, interval = _num(_f(data, "hours_since"), 1, lang), _num(_f(data, "interval_h"), 0, lang)
    remaining = _f(data, "remaining_h")
    match _s(data, "task_state"):
        case "overdue":
            status = _tr(
                lang,
                f"ATRASADA há {_num(-remaining, 1, lang)} h",
                f"overdue by {_num(-remaining, 1, lang)} h",
            )
        case "due":
            status = _tr(
                lang,
                f"VENCENDO, faltam {_num(remaining, 1, lang)} h",
                f"due, {_num(remaining, 1, lang)} h left",
            )
        case _:
            status = _tr(lang, "em dia", "ok")
    return _tr(
        lang,
        f"{where}: {since} h desde o último serviço (intervalo {interval} h), {status}",
        f"{where}: {since} h since the last service (interval {interval} h), {status}",
    )


def _sink_text(sink: str, data: Data, resolved: bool, lang: Lang) -> str:
    backlog = int(_f(data, "backlog"))
    if resolved:
        return _tr(
            lang,
            f"{sink}: entregas retomadas, {backlog} registros na fila",
            f"{sink}: deliveries resumed, {backlog} records waiting",
        )
    waiting, limit = _dur(_f(data, "undelivered_s"), lang), _dur(_f(data, "limit_s"), lang)
    return _tr(
        lang,
        f"{sink}: nada entregue há {waiting} (limite {limit}); {backlog} registros na fila",
        f"{sink}: nothing delivered for {waiting} (limit {limit}); {backlog} records waiting",
    )


# -- outputs -------------------------------------------------------------------------------


def alert_payload(alert: Alert) -> dict[str, object]:
    """The JSON document of an alert (the retained ``<prefix>/<site>/alerts/<rule>/<subject>``).

    Encode it like a reading (``json.dumps(..., sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``) so one event has one encoding.
    """
    return {
        "kind": "alert",
        "rule": alert.rule,
        "subject": alert.subject,
        "state": alert.state.value,
        "severity": alert.severity.value,
        "message": alert.message,
        "data": dict(alert.data),
        "notify": alert.notify,
        "since": alert.since_ns,
        "since_time": format_time(alert.since_ns),
        "ts": alert.at_ns,
        "time": format_time(alert.at_ns),
        "repeat": alert.repeat,
        "acked_by": alert.acked_by,
        "acked_at": alert.acked_at_ns,
    }


def alert_topic(alert: Alert, *, prefix: str = "", site: str = "") -> str:
    """``<prefix>/<site>/alerts/<rule>/<subject>``, the subject one level (``escape_level``).

    Without ``prefix`` and ``site``, the suffix under ``<prefix>/<site>/``.
    """
    suffix = f"alerts/{alert.rule}/{escape_level(alert.subject)}"
    return f"{prefix}/{site}/{suffix}" if prefix or site else suffix


@dataclass(frozen=True, slots=True)
class AlertPoint:
    """An alert as one point of the ``alert`` measurement (stamp it like a reading).

    Attributes:
        measurement: Always ``alert``.
        tags: site, rule, subject, state.
        fields: ``message``, ``severity`` (str), ``notify`` (bool), ``since_ns``,
            ``repeat`` (int), ``acked_by`` (str), ``acked_at_ns`` (int) when
            acknowledged, and the data (``DATA_FIELDS`` types).
        ts_ns: When the event happened.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    ts_ns: int


def alert_point(alert: Alert, *, site: str) -> AlertPoint:
    """The ``alert`` measurement point of an event, with one type per field forever."""
    fields: dict[str, FieldValue] = {
        "message": alert.message,
        "severity": alert.severity.value,
        "notify": alert.notify,
        "since_ns": alert.since_ns,
        "repeat": alert.repeat,
    }
    if alert.acked_by is not None:
        fields["acked_by"] = alert.acked_by
    if alert.acked_at_ns is not None:
        fields["acked_at_ns"] = alert.acked_at_ns
    for key, value in alert.data.items():
        kind = DATA_FIELDS.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and type(value) is kind:
            fields[key] = value
    return AlertPoint(
        measurement="alert",
        tags={
            "site": site,
            "rule": alert.rule,
            "subject": alert.subject,
            "state": alert.state.value,
        },
        fields=fields,
        ts_ns=alert.at_ns,
    )


# -- JSON ----------------------------------------------------------------------------------


def to_json(state: RuleState) -> str:
    """One subject's state as compact JSON (``from_json`` reads it back, equal)."""
    return json.dumps(_state_doc(state), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def from_json(text: str) -> RuleState:
    """Read what ``to_json`` wrote.

    Raises:
        ValueError: The text is not a rule state.
    """
    try:
        return _state_from(json.loads(text))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"not a rule state: {exc}") from exc


def _memory_doc(memory: Memory | None) -> dict[str, object] | None:
    match memory:
        case None:
            return None
        case LotMemory():
            return {
                "type": "lot",
                "window": list(memory.window),
                "count": memory.count,
                "total": memory.total,
                "max": memory.max_pct,
                "last": memory.last_ns,
                "device": memory.device,
                "station": memory.station,
                "product": memory.product,
            }
        case ErrorMemory():
            return {"type": "errors", "samples": [list(s) for s in memory.samples]}
        case JamMemory():
            return {"type": "jam", "bags": memory.bags, "idle_since": memory.idle_since_ns}
        case WiringMemory():
            return {
                "type": "wiring",
                "at": memory.at_ns,
                "hours": memory.hours,
                "running": memory.running,
                "gain": memory.gain_h,
            }
        case _:
            assert_never(memory)


def _state_doc(state: RuleState) -> dict[str, object]:
    return {
        "subject": state.subject,
        "state": state.state.value,
        "since": state.since_ns,
        "notified": state.notified_ns,
        "repeat": state.repeat,
        "acked_by": state.acked_by,
        "acked_at": state.acked_at_ns,
        "data": dict(state.data),
        "memory": _memory_doc(state.memory),
    }


def _raw(doc: object, key: str) -> object:
    if not isinstance(doc, dict):
        raise TypeError("expected an object")
    return doc[key]


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected an integer")
    return value


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what}: expected a number")
    return float(value)


def _int(doc: object, key: str) -> int:
    return _as_int(_raw(doc, key), key)


def _opt_int(doc: object, key: str) -> int | None:
    value = _raw(doc, key)
    return None if value is None else _as_int(value, key)


def _float(doc: object, key: str) -> float:
    return _as_float(_raw(doc, key), key)


def _str(doc: object, key: str) -> str:
    value = _raw(doc, key)
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected a string")
    return value


def _bool(doc: object, key: str) -> bool:
    value = _raw(doc, key)
    if not isinstance(value, bool):
        raise TypeError(f"{key}: expected a boolean")
    return value


def _field_value(value: object) -> FieldValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise TypeError(f"not a field value: {value!r}")


def _memory_from(doc: object) -> Memory | None:
    if doc is None:
        return None
    match _str(doc, "type"):
        case "lot":
            window = _raw(doc, "window")
            if not isinstance(window, list):
                raise TypeError("window: expected a list")
            return LotMemory(
                window=tuple(_as_float(x, "window") for x in window),
                count=_int(doc, "count"),
                total=_float(doc, "total"),
                max_pct=_float(doc, "max"),
                last_ns=_int(doc, "last"),
                device=_str(doc, "device"),
                station=_str(doc, "station"),
                product=_str(doc, "product"),
            )
        case "errors":
            raw = _raw(doc, "samples")
            if not isinstance(raw, list) or not all(
                isinstance(s, list) and len(s) == 2 for s in raw
            ):
                raise TypeError("samples: expected pairs")
            return ErrorMemory(
                tuple((_as_int(t, "samples"), _as_int(n, "samples")) for t, n in raw)
            )
        case "jam":
            return JamMemory(bags=_float(doc, "bags"), idle_since_ns=_opt_int(doc, "idle_since"))
        case "wiring":
            return WiringMemory(
                at_ns=_int(doc, "at"),
                hours=_float(doc, "hours"),
                running=_bool(doc, "running"),
                gain_h=_float(doc, "gain"),
            )
        case other:
            raise ValueError(f"unknown memory type {other!r}")


def _state_from(doc: object) -> RuleState:
    data = _raw(doc, "data")
    if not isinstance(data, dict):
        raise TypeError("data: expected an object")
    acked_by = _raw(doc, "acked_by")
    if acked_by is not None and not isinstance(acked_by, str):
        raise TypeError("acked_by: expected a string")
    return RuleState(
        subject=_str(doc, "subject"),
        state=AlertState(_str(doc, "state")),
        since_ns=_int(doc, "since"),
        notified_ns=_int(doc, "notified"),
        repeat=_int(doc, "repeat"),
        acked_by=acked_by,
        acked_at_ns=_opt_int(doc, "acked_at"),
        data={str(k): _field_value(v) for k, v in data.items()},
        memory=_memory_from(_raw(doc, "memory")),
    )


# -- the engine ----------------------------------------------------------------------------


class Engine:
    """The rules and the state of every (rule, subject); pure, no I/O.

    Args:
        rules: The configured rules; names must be unique.
        lang: Language of the messages (``pt-BR`` or ``en``).

    Raises:
        RuleError: Two rules share a name.
    """

    def __init__(self, rules: Sequence[Rule], *, lang: Lang = "pt-BR") -> None:
        self._rules = tuple(rules)
        self._lang: Lang = lang
        self._by_name: dict[str, Rule] = {}
        for rule in self._rules:
            if rule.name in self._by_name:
                raise RuleError("two rules have this name", rule=rule.name, key="name")
            self._by_name[rule.name] = rule
        by_measurement: dict[str, list[Rule]] = {}
        for rule in self._rules:
            for measurement in sorted(rule.measurements):
                by_measurement.setdefault(measurement, []).append(rule)
        self._by_measurement = {m: tuple(rs) for m, rs in by_measurement.items()}
        self._states: dict[str, dict[str, RuleState]] = {r.name: {} for r in self._rules}
        self._open: dict[str, set[str]] = {r.name: set() for r in self._rules}
        self._next_sweep_ns: int | None = None

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The configured rules, in order."""
        return self._rules

    def rules_for(self, measurement: str) -> tuple[Rule, ...]:
        """The rules a reading of ``measurement`` visits."""
        return self._by_measurement.get(measurement, ())

    def state(self, rule: str, subject: str) -> RuleState | None:
        """The state of one (rule, subject), if the engine holds one."""
        return self._states.get(rule, {}).get(subject)

    def on_reading(self, reading: Reading, now_ns: int) -> list[Alert]:
        """Feed one accepted reading; returns the events it caused, in order."""
        out: list[Alert] = []
        for rule in self._by_measurement.get(reading.measurement, ()):
            states = self._states[rule.name]
            for subject in subjects(rule, reading):
                old = states.get(subject) or RuleState(subject)
                new, alerts = evaluate(rule, old, reading, now_ns, lang=self._lang)
                if new is not old:
                    self._store(rule.name, new)
                out.extend(alerts)
        return out

    def on_tick(self, tick: Tick, now_ns: int) -> list[Alert]:
        """Let time pass with the current health of devices and sinks (about once a second).

        Evaluates the tick's subjects and every open alert (pending delays, repeats,
        forgotten lots), in rule order and then subject order.
        """
        out: list[Alert] = []
        for rule in self._rules:
            states = self._states[rule.name]
            targets = set(self._open[rule.name])
            if rule.on_ticks:
                targets.update(subjects(rule, tick))
            for subject in sorted(targets):
                old = states.get(subject) or RuleState(subject)
                new, alerts = evaluate(rule, old, tick, now_ns, lang=self._lang)
                if new is not old:
                    self._store(rule.name, new)
                out.extend(alerts)
        if self._next_sweep_ns is None or now_ns >= self._next_sweep_ns:
            self._next_sweep_ns = now_ns + _SWEEP_NS
            self._sweep(now_ns)
        return out

    def ack(self, rule: str, subject: str, by: str, now_ns: int) -> list[Alert]:
        """Acknowledge a firing alert; returns its ``acknowledged`` event.

        An unknown rule or subject, or an alert that is not firing, gives no event.
        """
        config = self._by_name.get(rule)
        old = self._states.get(rule, {}).get(subject)
        if config is None or old is None:
            return []
        new, alerts = acknowledge(config, old, by=by, at_ns=now_ns, lang=self._lang)
        if new is not old:
            self._store(rule, new)
        return alerts

    def messages(self, alert: Alert) -> dict[str, str]:
        """``alert``'s message in every language, for pages that switch language."""
        rule = self._by_name.get(alert.rule)
        if rule is None:
            return {self._lang: alert.message}
        return {lang: alert_message(rule, alert, lang) for lang in get_args(Lang)}

    def alerts(self, now_ns: int) -> list[Alert]:
        """Every open alert as an event with ``notify`` false (to republish retained state)."""
        out: list[Alert] = []
        for rule in self._rules:
            states = self._states[rule.name]
            for subject in sorted(self._open[rule.name]):
                alert = current_alert(rule, states[subject], now_ns, lang=self._lang)
                if alert is not None:
                    out.append(alert)
        return out

    def snapshot(self) -> str:
        """Every subject's state as JSON, for ``Engine.restore`` after a restart."""
        doc = {
            "version": SNAPSHOT_VERSION,
            "next_sweep_ns": self._next_sweep_ns,
            "rules": {
                rule.name: {
                    "kind": rule.kind,
                    "subjects": {s: _state_doc(st) for s, st in self._states[rule.name].items()},
                }
                for rule in self._rules
            },
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def restore(cls, rules: Sequence[Rule], snapshot: str, *, lang: Lang = "pt-BR") -> Engine:
        """An engine for ``rules`` that continues from ``snapshot``; emits nothing.

        Subjects of rules no longer configured, or whose name now belongs to a rule
        of another kind, are dropped.

        Raises:
            RuleError: Two rules share a name.
            ValueError: ``snapshot`` is not an engine snapshot of this version.
        """
        engine = cls(rules, lang=lang)
        try:
            doc = json.loads(snapshot)
            if _int(doc, "version") != SNAPSHOT_VERSION:
                raise ValueError(f"version {doc['version']} (expected {SNAPSHOT_VERSION})")
            engine._next_sweep_ns = _opt_int(doc, "next_sweep_ns")
            saved = _raw(doc, "rules")
            if not isinstance(saved, dict):
                raise TypeError("rules: expected an object")
            for rule in engine._rules:
                entry = saved.get(rule.name)
                if entry is None or _str(entry, "kind") != rule.kind:
                    continue
                states = _raw(entry, "subjects")
                if not isinstance(states, dict):
                    raise TypeError("subjects: expected an object")
                for subject, state_doc in states.items():
                    state = _state_from(state_doc)
                    if state.subject != subject:
                        raise ValueError(f"subject {subject!r} holds {state.subject!r}")
                    engine._store(rule.name, state)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not an alert engine snapshot: {exc}") from exc
        return engine

    def _store(self, rule: str, state: RuleState) -> None:
        if state.open:
            self._states[rule][state.subject] = state
            self._open[rule].add(state.subject)
            return
        self._open[rule].discard(state.subject)
        if state.memory is None:
            self._states[rule].pop(state.subject, None)
        else:
            self._states[rule][state.subject] = state

    def _sweep(self, now_ns: int) -> None:
        # Frees closed lots past forget_after_s; their next reading would start afresh
        # anyway (``_forget_lot``), so when this runs never changes an output.
        for rule in self._rules:
            if not isinstance(rule, WetLotRule):
                continue
            limit = _ns(rule.forget_after_s)
            states = self._states[rule.name]
            stale = [
                subject
                for subject, state in states.items()
                if not state.open
                and isinstance(state.memory, LotMemory)
                and now_ns - state.memory.last_ns >= limit
            ]
            for subject in stale:
                del states[subject]
