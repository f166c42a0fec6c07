"""Huller maintenance, the domain: what is kept per huller, service records, task status.

Nothing here reads a clock, a file or a database: ``store`` keeps these records,
``record`` checks and stores a service done, and the agent (``service``), the web API and
``coffee-telemetry maintenance`` show where each task stands (``task_status``,
``huller_status``).

Hours since a service, and snapshots
------------------------------------
A task's hours since service are the huller's running hours now minus the hours stored
with its latest service (latest by ``done_at_ns``, not by entry order). A task never
serviced counts from hour 0 of the huller's total (the hour meter's reading plus what the
agent added across resets), so a huller that arrives with hours on its meter shows them
until someone records the last service.

A service recorded for a past time (``done --at``) takes the hours of that time from
``hour_snapshots``: the agent writes at most one snapshot per huller per minute, and only
when the hours moved. The latest snapshot at or before a time is therefore the hours of
that time to within a minute of running (any later move was snapshotted within a
minute). Rows older than 31 days are thinned to the first of each hour (8760 rows a year
per huller); there the hours are right to within an hour of running. Both errors
understate the hours at the time, which overstates the hours since: a service is never
shown later than it is due. A time before the first snapshot takes the first one, and a
huller whose hours were never read records 0 h; ``record_service`` says so when it does.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.config import HOUR_METER_UNITS, HullerConfig, ServiceTaskConfig
from coffee_telemetry.agent.errors import UsageError as UsageError
from coffee_telemetry.drivers.counter_autonics_ct import TotalState

__all__ = [
    "AT_SKEW_S",
    "BY_MAX",
    "NOTE_MAX",
    "SNAPSHOT_EVERY_NS",
    "SNAPSHOT_KEEP_NS",
    "HullerState",
    "ResetRecord",
    "ServiceRecord",
    "TaskState",
    "TaskStatus",
    "UsageError",
    "bags_total",
    "check_text",
    "hours_total",
    "huller_status",
    "parse_at",
    "task_status",
]

#: Longest note a service record takes.
NOTE_MAX = 500
#: Longest ``by`` a service record takes.
BY_MAX = 80
#: How far in the future ``--at`` may be (clock skew between the office and the box).
AT_SKEW_S = 300.0
#: At most one hour snapshot per huller this often (while the hours move).
SNAPSHOT_EVERY_NS = 60 * 1_000_000_000
#: Snapshots older than this are thinned to the first of each hour.
SNAPSHOT_KEEP_NS = 31 * 24 * 3600 * 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HullerState:
    """What the agent persists per huller (one row, one transaction per change).

    Attributes:
        counter: The bag counter's total state.
        timer: The hour meter's total state (unused without an hour meter).
        runtime_ms: Running time counted by the agent; only for hullers without an hour
            meter.
        day: The local date (ISO, site time zone) the ``day_*`` totals belong to.
        day_counter: Counter total at the start of ``day``.
        day_timer: Hour meter total at the start of ``day``.
        day_runtime_ms: ``runtime_ms`` at the start of ``day``.
    """

    counter: TotalState = field(default_factory=TotalState)
    timer: TotalState = field(default_factory=TotalState)
    runtime_ms: int = 0
    day: str = ""
    day_counter: int = 0
    day_timer: int = 0
    day_runtime_ms: int = 0


@dataclass(frozen=True, slots=True)
class ResetRecord:
    """A PV drop of one unit (front-panel reset, power loss, wrap, replaced unit).

    Attributes:
        id: Row id (0 before it is stored).
        huller: Huller id.
        unit: ``counter`` or ``timer``.
        at_ns: When the agent saw it (the event's timestamp).
        previous_pv: The PV before the drop.
        pv: The PV after it.
        offset: The offset after it (what the total adds to the PV from now on).
        published: Whether its event reached the outbox.
    """

    id: int
    huller: str
    unit: str
    at_ns: int
    previous_pv: int
    pv: int
    offset: int
    published: bool = False


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A service task done on a huller.

    Attributes:
        id: Row id; also the ``service_id`` field of its ``maintenance`` event.
        huller: Huller id.
        task: Task id.
        done_at_ns: When it was done (UTC ns); the event's timestamp.
        hours_at: The huller's running hours then.
        note: Free text (at most ``NOTE_MAX`` characters, no control characters).
        by: Who did it.
        recorded_ns: When it was entered.
        published: Whether its event reached the outbox.
    """

    id: int
    huller: str
    task: str
    done_at_ns: int
    hours_at: float
    note: str
    by: str
    recorded_ns: int
    published: bool = False


#: A task's state: ``ok``, ``due`` (within ``warn_before_h`` of its interval) or ``overdue``.
TaskState = Literal["ok", "due", "overdue"]


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """Where one service task of one huller stands.

    Attributes:
        huller: Huller id.
        task: Task id.
        name: Task name as configured.
        interval_h: Running hours between services.
        hours_since: Running hours since the last service (or since hour 0).
        remaining_h: ``interval_h - hours_since``; negative when overdue.
        state: ``ok``, ``due`` or ``overdue``.
    """

    huller: str
    task: str
    name: str
    interval_h: float
    hours_since: float
    remaining_h: float
    state: TaskState

    @property
    def due(self) -> bool:
        """Service needed: ``due`` or ``overdue``."""
        return self.state != "ok"

    @property
    def overdue(self) -> bool:
        """Past the interval."""
        return self.state == "overdue"


# -- pure functions --------------------------------------------------------------------


def task_status(
    task: ServiceTaskConfig,
    hours_now: float,
    last_service_hours: float | None,
    tracking_start_hours: float = 0.0,
    *,
    huller: str,
) -> TaskStatus:
    """Where a task stands at ``hours_now`` running hours.

    Due when the hours since service reach ``interval_h - warn_before_h``; overdue when
    they reach ``interval_h``. A task never serviced counts from ``tracking_start_hours``:
    hour 0 of the huller's total, so hours already on a meter count as unserviced.

    Args:
        task: The task as configured.
        hours_now: The huller's running hours now.
        last_service_hours: The hours stored with the task's latest service, if any.
        tracking_start_hours: Where a never-serviced task counts from.
        huller: The huller's id (carried into the result).
    """
    base = tracking_start_hours if last_service_hours is None else last_service_hours
    since = max(0.0, hours_now - base)
    state: TaskState
    if since >= task.interval_h:
        state = "overdue"
    elif since >= task.interval_h - task.warn_before_h:
        state = "due"
    else:
        state = "ok"
    return TaskStatus(
        huller=huller,
        task=task.id,
        name=task.name,
        interval_h=task.interval_h,
        hours_since=since,
        remaining_h=task.interval_h - since,
        state=state,
    )


def bags_total(huller: HullerConfig, state: HullerState | None) -> float | None:
    """Bags hulled in total (counter total x ``bags_per_pulse``), ``None`` before any PV."""
    if state is None or state.counter.last_pv is None:
        return None
    return state.counter.total * huller.bags_per_pulse


def hours_total(huller: HullerConfig, state: HullerState | None) -> float | None:
    """Running hours in total, ``None`` while unknown.

    With an hour meter: its total x ``HOUR_METER_UNITS[hour_meter_unit]``, known once the
    meter was read. Without: the running time the agent counted, known once the bag
    counter was read.
    """
    if state is None:
        return None
    if huller.hour_meter is None:
        return None if state.counter.last_pv is None else state.runtime_ms / 3_600_000
    if state.timer.last_pv is None:
        return None
    return state.timer.total * HOUR_METER_UNITS[huller.hour_meter_unit]


def check_text(value: str, *, what: str, limit: int) -> str:
    """Check free text an operator typed; returns it stripped.

    Raises:
        UsageError: Longer than ``limit`` characters, or with control, format (bidi
            overrides, zero-width) or line-separator characters, or bytes that were not
            UTF-8.
    """
    text = value.strip()
    if len(text) > limit:
        raise UsageError(f"{what} is {len(text)} characters long; at most {limit} are allowed")
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise UsageError(f"{what} is not valid UTF-8 text")
        if category in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp"):
            raise UsageError(
                f"{what} contains a control character (U+{ord(ch):04X}); use plain text"
            )
    return text


def parse_at(text: str, zone: ZoneInfo, *, now_ns: int, skew_s: float = AT_SKEW_S) -> int:
    """Parse ``--at``: ISO 8601, naive times in the site's zone; UTC nanoseconds.

    Raises:
        UsageError: Not ISO 8601, before 2000, or more than ``skew_s`` in the future.
    """
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not an ISO 8601 time; use e.g. 2026-05-10T14:30"
            " (site time) or 2026-05-10T17:30Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    if dt < _EARLIEST:
        raise UsageError(f"--at {text!r} is before the year 2000")
    at_ns = (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    if at_ns > now_ns + int(skew_s * 1e9):
        raise UsageError(f"--at {text!r} is in the future")
    return at_ns


def huller_status(
    huller: HullerConfig,
    state: HullerState | None,
    updated_ns: int | None,
    last: Mapping[tuple[str, str], ServiceRecord],
) -> dict[str, object]:
    """One huller's hours, bags and tasks, as ``maintenance status --json`` and the API show it.

    Args:
        huller: The huller as configured.
        state: Its persisted state (``None`` before the agent saved one).
        updated_ns: When the agent last saved it, if known.
        last: The latest service per ``(huller, task)``.
    """
    hours = hours_total(huller, state)
    bags = bags_total(huller, state)
    tasks: list[dict[str, object]] = []
    for task in huller.tasks:
        record = last.get((huller.id, task.id))
        entry: dict[str, object] = {
            "task": task.id,
            "name": task.name,
            "interval_h": task.interval_h,
            "warn_before_h": task.warn_before_h,
            "hours_since": None,
            "remaining_h": None,
            "state": "unknown",
            "last_service": None,
        }
        if hours is not None:
            status = task_status(
                task, hours, None if record is None else record.hours_at, huller=huller.id
            )
            entry["hours_since"] = round(status.hours_since, 3)
            entry["remaining_h"] = round(status.remaining_h, 3)
            entry["state"] = status.state
        if record is not None:
            entry["last_service"] = {
                "id": record.id,
                "done_at_ns": record.done_at_ns,
                "hours_at": round(record.hours_at, 3),
                "note": record.note,
                "by": record.by,
            }
        tasks.append(entry)
    return {
        "id": huller.id,
        "name": huller.name,
        "hours_total": None if hours is None else round(hours, 3),
        "bags_total": None if bags is None else round(bags, 3),
        "updated_ns": updated_ns,
        "tasks": tasks,
    }
