"""Huller maintenance: durable totals, service records, hour snapshots, and the CLI side.

Theory of operation
-------------------
One SQLite database in WAL mode (``Config.maintenance_path``), apart from the outbox,
holds what maintenance needs to outlive the agent:

``huller_state``    one row per huller: the bag counter's and the hour meter's
                    ``TotalState`` (offset, last PV), the running time the agent counts
                    itself when a huller has no hour meter, and the raw totals at the
                    start of the local day (so a restart at noon keeps "today").
``counter_resets``  every PV drop the agent saw, with a ``published`` flag.
``services``        every service done, with a ``published`` flag.
``hour_snapshots``  running hours over time, for services recorded for a past time.

Two processes write it: the agent, through one worker thread (``AsyncMaintenanceStore``,
as ``agent/outbox.py`` does), and ``coffee-telemetry maintenance done`` (``record_done``),
synchronously, while the agent runs. WAL lets readers and one writer work at once; write
transactions begin ``IMMEDIATE`` and wait up to ``busy_timeout`` for the other's commit.
The agent alone writes ``huller_state``, ``counter_resets`` and ``hour_snapshots``; the
command only adds ``services`` rows and reads the rest.

Totals and the crash window
---------------------------
For each poll of a unit the agent (``agent/hullers.py``) does, in this order:

1. read the PV;
2. compute the new state with ``advance_total``, in memory, changing nothing yet;
3. commit the huller's row, and in the same transaction a ``counter_resets`` row when
   the PV dropped and an hour snapshot when one is due (``save_state``);
4. only then take the new state as current and accept the readings that carry the new
   totals (the ``counter_reset`` event and the ``huller`` reading) into the outbox;
5. mark the reset row published.

A SIGKILL before 3 changes nothing: the next start compares the next PV with the same
last PV. Between 3 and 4 the state is durable but that poll's readings are never
emitted; the next start compares with the new last PV, so the offset is neither lost nor
added twice, and the unpublished reset row is emitted at start with its stored time.
Between 4 and 5 the reset event is emitted twice with the same time and fields (InfluxDB
keeps one point). So every total that reaches the outbox was durable first, durable
totals never decrease, and published totals never go backwards across restarts.

A PV that drops while the agent is down, and climbs back above the last PV before it
starts again, is not seen as a reset: those counts are lost, as they would be between
two polls.

Services
--------
``record_service`` commits a row with ``published = 0``. The agent reads the unpublished
rows every few seconds (a partial index keeps that cheap), accepts one ``maintenance``
event per row into the outbox, then marks them published: at least once. The event's
timestamp is the service's ``done_at_ns`` and its fields come from the row, so a resend
after a crash between accept and mark is the same point (only its ``seq`` differs; the
``service_id`` field identifies it).

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
huller whose hours were never read records 0 h; ``record_done`` says so when it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import sqlite3
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TextIO, TypeVar
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.commands import Command, CommandHandler, CommandRefused
from coffee_telemetry.agent.config import HOUR_METER_UNITS, Config, HullerConfig, ServiceTaskConfig
from coffee_telemetry.agent.errors import MaintenanceError as MaintenanceError
from coffee_telemetry.agent.errors import UsageError as UsageError
from coffee_telemetry.drivers.counter_autonics_ct import TotalState

__all__ = [
    "AT_SKEW_S",
    "BY_MAX",
    "NOTE_MAX",
    "SCHEMA_VERSION",
    "SNAPSHOT_EVERY_NS",
    "SNAPSHOT_KEEP_NS",
    "AsyncMaintenanceStore",
    "HullerState",
    "MaintenanceError",
    "MaintenanceStore",
    "ResetRecord",
    "ServiceRecord",
    "TaskState",
    "TaskStatus",
    "UsageError",
    "bags_total",
    "check_text",
    "hours_total",
    "open_maintenance_store",
    "parse_at",
    "print_status",
    "record_done",
    "task_status",
]

T = TypeVar("T")

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
_HOUR_NS = 3600 * 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS huller_state (
    huller TEXT PRIMARY KEY,
    counter_offset INTEGER NOT NULL,
    counter_last_pv INTEGER,
    timer_offset INTEGER NOT NULL,
    timer_last_pv INTEGER,
    runtime_ms INTEGER NOT NULL,
    day TEXT NOT NULL,
    day_counter INTEGER NOT NULL,
    day_timer INTEGER NOT NULL,
    day_runtime_ms INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counter_resets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    huller TEXT NOT NULL,
    unit TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    previous_pv INTEGER NOT NULL,
    pv INTEGER NOT NULL,
    pv_offset INTEGER NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS counter_resets_unpublished ON counter_resets (id) WHERE published = 0;
CREATE TABLE IF NOT EXISTS services (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    huller TEXT NOT NULL,
    task TEXT NOT NULL,
    done_at_ns INTEGER NOT NULL,
    hours_at REAL NOT NULL,
    note TEXT NOT NULL,
    done_by TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS services_by_task ON services (huller, task, done_at_ns);
CREATE INDEX IF NOT EXISTS services_unpublished ON services (id) WHERE published = 0;
CREATE TABLE IF NOT EXISTS hour_snapshots (
    huller TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    hours REAL NOT NULL,
    PRIMARY KEY (huller, at_ns)
) WITHOUT ROWID;
"""


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


# -- the store -------------------------------------------------------------------------


def _state_from_row(row: Sequence[object]) -> HullerState:
    def opt(value: object) -> int | None:
        return None if value is None else int(str(value))

    c_off, c_pv, t_off, t_pv, run, day, d_c, d_t, d_run = row
    return HullerState(
        counter=TotalState(offset=int(str(c_off)), last_pv=opt(c_pv)),
        timer=TotalState(offset=int(str(t_off)), last_pv=opt(t_pv)),
        runtime_ms=int(str(run)),
        day=str(day),
        day_counter=int(str(d_c)),
        day_timer=int(str(d_t)),
        day_runtime_ms=int(str(d_run)),
    )


_STATE_COLUMNS = (
    "counter_offset, counter_last_pv, timer_offset, timer_last_pv, runtime_ms,"
    " day, day_counter, day_timer, day_runtime_ms"
)
_SERVICE_COLUMNS = "id, huller, task, done_at_ns, hours_at, note, done_by, recorded_ns, published"
_RESET_COLUMNS = "id, huller, unit, at_ns, previous_pv, pv, pv_offset, published"


def _service(row: Sequence[object]) -> ServiceRecord:
    rid, huller, task, done_at, hours_at, note, by, recorded, published = row
    return ServiceRecord(
        id=int(str(rid)),
        huller=str(huller),
        task=str(task),
        done_at_ns=int(str(done_at)),
        hours_at=float(str(hours_at)),
        note=str(note),
        by=str(by),
        recorded_ns=int(str(recorded)),
        published=bool(published),
    )


def _reset(row: Sequence[object]) -> ResetRecord:
    rid, huller, unit, at_ns, previous, pv, offset, published = row
    return ResetRecord(
        id=int(str(rid)),
        huller=str(huller),
        unit=str(unit),
        at_ns=int(str(at_ns)),
        previous_pv=int(str(previous)),
        pv=int(str(pv)),
        offset=int(str(offset)),
        published=bool(published),
    )


class MaintenanceStore:
    """The maintenance database, synchronous; see the module docstring.

    Open it with ``MaintenanceStore.open`` (the CLI) or ``open_maintenance_store`` (the
    agent, which runs every call on one worker thread). ``sqlite3.Error`` is raised as
    ``MaintenanceError``.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(
        cls, path: Path, *, synchronous: Literal["full", "normal"] = "full"
    ) -> MaintenanceStore:
        """Open (creating if needed) the database at ``path``.

        Raises:
            MaintenanceError: It cannot be opened, or a newer version wrote it.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise MaintenanceError(f"cannot open: {exc}", path=path) from exc
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise MaintenanceError(
                    f"written by a newer version (schema {version}, this one knows"
                    f" {SCHEMA_VERSION})",
                    path=path,
                )
            if version < SCHEMA_VERSION:
                # Only a new database is written on open: ``status`` opens it too.
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise MaintenanceError(f"cannot open: {exc}", path=path) from exc
        except MaintenanceError:
            conn.close()
            raise
        # Implicit transactions for "with conn"; IMMEDIATE takes the write lock at BEGIN,
        # so the busy timeout covers waiting for the other process's commit.
        conn.isolation_level = "IMMEDIATE"
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        self._conn.close()

    def __enter__(self) -> MaintenanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise MaintenanceError(str(exc), path=self.path) from exc

    # -- totals ----------------------------------------------------------------------

    def load_states(self) -> dict[str, HullerState]:
        """Every huller's persisted state, by huller id."""

        def read(conn: sqlite3.Connection) -> dict[str, HullerState]:
            rows = conn.execute(f"SELECT huller, {_STATE_COLUMNS} FROM huller_state")
            return {str(r[0]): _state_from_row(r[1:]) for r in rows}

        return self._do(read)

    def state(self, huller: str) -> HullerState | None:
        """One huller's persisted state, ``None`` if the agent never saved one."""

        def read(conn: sqlite3.Connection) -> HullerState | None:
            row = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM huller_state WHERE huller = ?", (huller,)
            ).fetchone()
            return None if row is None else _state_from_row(row)

        return self._do(read)

    def updated_ns(self, huller: str) -> int | None:
        """When the agent last saved ``huller``'s state."""

        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT updated_ns FROM huller_state WHERE huller = ?", (huller,)
            ).fetchone()
            return None if row is None else int(row[0])

        return self._do(read)

    def save_state(
        self,
        huller: str,
        state: HullerState,
        *,
        at_ns: int,
        resets: Sequence[ResetRecord] = (),
        snapshot_hours: float | None = None,
    ) -> list[ResetRecord]:
        """Commit a huller's state, its new resets and an hour snapshot in one transaction.

        Args:
            huller: Huller id.
            state: The whole new state.
            at_ns: When (the sample's time; also the snapshot's).
            resets: PV drops seen with this sample (their ``id`` is ignored).
            snapshot_hours: Running hours to snapshot at ``at_ns``, if one is due.

        Returns:
            The resets as stored, with their ids.
        """

        def write(conn: sqlite3.Connection) -> list[ResetRecord]:
            stored: list[ResetRecord] = []
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO huller_state"
                    f" (huller, {_STATE_COLUMNS}, updated_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        huller,
                        state.counter.offset,
                        state.counter.last_pv,
                        state.timer.offset,
                        state.timer.last_pv,
                        state.runtime_ms,
                        state.day,
                        state.day_counter,
                        state.day_timer,
                        state.day_runtime_ms,
                        at_ns,
                    ),
                )
                for reset in resets:
                    cur = conn.execute(
                        "INSERT INTO counter_resets (huller, unit, at_ns, previous_pv, pv,"
                        " pv_offset) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            huller,
                            reset.unit,
                            reset.at_ns,
                            reset.previous_pv,
                            reset.pv,
                            reset.offset,
                        ),
                    )
                    assert cur.lastrowid is not None
                    stored.append(
                        dataclasses.replace(reset, id=cur.lastrowid, huller=huller, published=False)
                    )
                if snapshot_hours is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO hour_snapshots (huller, at_ns, hours)"
                        " VALUES (?, ?, ?)",
                        (huller, at_ns, snapshot_hours),
                    )
            return stored

        return self._do(write)

    def unpublished_resets(self) -> list[ResetRecord]:
        """Resets whose event has not reached the outbox, oldest first."""

        def read(conn: sqlite3.Connection) -> list[ResetRecord]:
            rows = conn.execute(
                f"SELECT {_RESET_COLUMNS} FROM counter_resets WHERE published = 0 ORDER BY id"
            )
            return [_reset(r) for r in rows]

        return self._do(read)

    def resets(self, huller: str | None = None) -> list[ResetRecord]:
        """Every reset seen (of one huller, or all), oldest first."""

        def read(conn: sqlite3.Connection) -> list[ResetRecord]:
            if huller is None:
                rows = conn.execute(f"SELECT {_RESET_COLUMNS} FROM counter_resets ORDER BY id")
            else:
                rows = conn.execute(
                    f"SELECT {_RESET_COLUMNS} FROM counter_resets WHERE huller = ? ORDER BY id",
                    (huller,),
                )
            return [_reset(r) for r in rows]

        return self._do(read)

    def mark_resets_published(self, ids: Iterable[int]) -> None:
        """Mark resets whose event the outbox accepted."""
        self._mark("counter_resets", ids)

    # -- services --------------------------------------------------------------------

    def record_service(
        self,
        huller: str,
        task: str,
        *,
        at_ns: int,
        hours_at: float,
        note: str = "",
        by: str = "",
        recorded_ns: int | None = None,
    ) -> ServiceRecord:
        """Commit a service record (unpublished); the caller validated the inputs."""
        recorded = time.time_ns() if recorded_ns is None else recorded_ns

        def write(conn: sqlite3.Connection) -> ServiceRecord:
            with conn:
                cur = conn.execute(
                    "INSERT INTO services"
                    " (huller, task, done_at_ns, hours_at, note, done_by, recorded_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (huller, task, at_ns, float(hours_at), note, by, recorded),
                )
            assert cur.lastrowid is not None
            return ServiceRecord(
                id=cur.lastrowid,
                huller=huller,
                task=task,
                done_at_ns=at_ns,
                hours_at=float(hours_at),
                note=note,
                by=by,
                recorded_ns=recorded,
            )

        return self._do(write)

    def services(self, huller: str | None = None) -> list[ServiceRecord]:
        """Service records (of one huller, or all), by time done."""

        def read(conn: sqlite3.Connection) -> list[ServiceRecord]:
            order = " ORDER BY done_at_ns, id"
            if huller is None:
                rows = conn.execute(f"SELECT {_SERVICE_COLUMNS} FROM services" + order)
            else:
                rows = conn.execute(
                    f"SELECT {_SERVICE_COLUMNS} FROM services WHERE huller = ?" + order, (huller,)
                )
            return [_service(r) for r in rows]

        return self._do(read)

    def last_services(self) -> dict[tuple[str, str], ServiceRecord]:
        """The latest service (by time done, then entry) per ``(huller, task)``."""
        latest: dict[tuple[str, str], ServiceRecord] = {}
        for record in self.services():
            latest[(record.huller, record.task)] = record
        return latest

    def unpublished(self, limit: int = 100) -> list[ServiceRecord]:
        """Services whose event has not reached the outbox, in entry order."""

        def read(conn: sqlite3.Connection) -> list[ServiceRecord]:
            rows = conn.execute(
                f"SELECT {_SERVICE_COLUMNS} FROM services WHERE published = 0 ORDER BY id LIMIT ?",
                (limit,),
            )
            return [_service(r) for r in rows]

        return self._do(read)

    def mark_published(self, ids: Iterable[int]) -> None:
        """Mark services whose event the outbox accepted."""
        self._mark("services", ids)

    def _mark(self, table: Literal["services", "counter_resets"], ids: Iterable[int]) -> None:
        rows = [(int(i),) for i in ids]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.executemany(f"UPDATE {table} SET published = 1 WHERE id = ?", rows)

        self._do(write)

    # -- hour snapshots --------------------------------------------------------------

    def hours_at(self, huller: str, at_ns: int) -> float | None:
        """Running hours at ``at_ns``: the latest snapshot at or before it, if any."""

        def read(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT hours FROM hour_snapshots WHERE huller = ? AND at_ns <= ?"
                " ORDER BY at_ns DESC LIMIT 1",
                (huller, at_ns),
            ).fetchone()
            return None if row is None else float(row[0])

        return self._do(read)

    def first_snapshot(self, huller: str) -> tuple[int, float] | None:
        """The oldest snapshot ``(at_ns, hours)``: when hour tracking began."""

        def read(conn: sqlite3.Connection) -> tuple[int, float] | None:
            row = conn.execute(
                "SELECT at_ns, hours FROM hour_snapshots WHERE huller = ? ORDER BY at_ns LIMIT 1",
                (huller,),
            ).fetchone()
            return None if row is None else (int(row[0]), float(row[1]))

        return self._do(read)

    def snapshot_count(self, huller: str | None = None) -> int:
        """How many snapshots are kept."""

        def read(conn: sqlite3.Connection) -> int:
            if huller is None:
                return int(conn.execute("SELECT COUNT(*) FROM hour_snapshots").fetchone()[0])
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM hour_snapshots WHERE huller = ?", (huller,)
                ).fetchone()[0]
            )

        return self._do(read)

    def thin_snapshots(self, now_ns: int, *, keep_ns: int = SNAPSHOT_KEEP_NS) -> int:
        """Keep only the first snapshot of each hour among those older than ``keep_ns``.

        Returns:
            Rows deleted.
        """
        cutoff = now_ns - keep_ns

        def write(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.execute(
                    "DELETE FROM hour_snapshots WHERE at_ns < ?1 AND (huller, at_ns) NOT IN"
                    " (SELECT huller, MIN(at_ns) FROM hour_snapshots WHERE at_ns < ?1"
                    "  GROUP BY huller, at_ns / ?2)",
                    (cutoff, _HOUR_NS),
                )
            return cur.rowcount

        return self._do(write)


class AsyncMaintenanceStore:
    """The store for the agent: every call runs on one worker thread.

    Open it with ``open_maintenance_store``; the methods are ``MaintenanceStore``'s.
    """

    def __init__(self, store: MaintenanceStore, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor

    @property
    def path(self) -> Path:
        """The database file."""
        return self._store.path

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def load_states(self) -> dict[str, HullerState]:
        """See ``MaintenanceStore.load_states``."""
        return await self._run(self._store.load_states)

    async def save_state(
        self,
        huller: str,
        state: HullerState,
        *,
        at_ns: int,
        resets: Sequence[ResetRecord] = (),
        snapshot_hours: float | None = None,
    ) -> list[ResetRecord]:
        """See ``MaintenanceStore.save_state``."""
        return await self._run(
            lambda: self._store.save_state(
                huller, state, at_ns=at_ns, resets=resets, snapshot_hours=snapshot_hours
            )
        )

    async def unpublished_resets(self) -> list[ResetRecord]:
        """See ``MaintenanceStore.unpublished_resets``."""
        return await self._run(self._store.unpublished_resets)

    async def mark_resets_published(self, ids: Sequence[int]) -> None:
        """See ``MaintenanceStore.mark_resets_published``."""
        await self._run(lambda: self._store.mark_resets_published(ids))

    async def record_service(
        self,
        huller: str,
        task: str,
        *,
        at_ns: int,
        hours_at: float,
        note: str = "",
        by: str = "",
    ) -> ServiceRecord:
        """See ``MaintenanceStore.record_service``."""
        return await self._run(
            lambda: self._store.record_service(
                huller, task, at_ns=at_ns, hours_at=hours_at, note=note, by=by
            )
        )

    async def last_services(self) -> dict[tuple[str, str], ServiceRecord]:
        """See ``MaintenanceStore.last_services``."""
        return await self._run(self._store.last_services)

    async def unpublished(self, limit: int = 100) -> list[ServiceRecord]:
        """See ``MaintenanceStore.unpublished``."""
        return await self._run(lambda: self._store.unpublished(limit))

    async def mark_published(self, ids: Sequence[int]) -> None:
        """See ``MaintenanceStore.mark_published``."""
        await self._run(lambda: self._store.mark_published(ids))

    async def hours_at(self, huller: str, at_ns: int) -> float | None:
        """See ``MaintenanceStore.hours_at``."""
        return await self._run(lambda: self._store.hours_at(huller, at_ns))

    async def thin_snapshots(self, now_ns: int) -> int:
        """See ``MaintenanceStore.thin_snapshots``."""
        return await self._run(lambda: self._store.thin_snapshots(now_ns))


@asynccontextmanager
async def open_maintenance_store(
    path: Path, *, synchronous: Literal["full", "normal"] = "full"
) -> AsyncIterator[AsyncMaintenanceStore]:
    """Open the maintenance database for the agent; closed on exit.

    Raises:
        MaintenanceError: It cannot be opened.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maintenance")
    loop = asyncio.get_running_loop()
    try:
        store = await loop.run_in_executor(
            executor, lambda: MaintenanceStore.open(path, synchronous=synchronous)
        )
    except BaseException:
        executor.shutdown(wait=True)
        raise
    try:
        yield AsyncMaintenanceStore(store, executor)
    finally:
        await loop.run_in_executor(executor, store.close)
        executor.shutdown(wait=True)


# -- the command line ------------------------------------------------------------------

_STATE_LABELS: Mapping[str, str] = {
    "ok": "em dia",
    "due": "VENCENDO",
    "overdue": "ATRASADA",
    "unknown": "?",
}


def _printable(text: str) -> str:
    # Stored text is checked on entry; this guards the terminal against anything else.
    return "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in text
    )


def _local(ts_ns: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, zone).strftime("%Y-%m-%d %H:%M")


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def huller_status(
    huller: HullerConfig,
    state: HullerState | None,
    updated_ns: int | None,
    last: Mapping[tuple[str, str], ServiceRecord],
) -> dict[str, object]:
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


def _render_table(doc: Mapping[str, object], zone: ZoneInfo, out: TextIO) -> None:
    hullers = doc["hullers"]
    assert isinstance(hullers, list)
    out.write(f"Manutenção dos descascadores — site {doc['site']}\n")
    if not hullers:
        out.write("\nNenhum descascador configurado ([[hullers]] no arquivo de configuração).\n")
        return
    header = (
        f"  {'Tarefa':<16} {'Descrição':<24} {'Horas desde':>11} {'Intervalo':>9}"
        f" {'Restante':>9}  {'Estado':<9} Último serviço\n"
    )
    for h in hullers:
        assert isinstance(h, dict)
        name = f"  {_printable(str(h['name']))}" if h["name"] else ""
        out.write(f"\n{h['id']}{name}\n")
        hours, bags, updated = h["hours_total"], h["bags_total"], h["updated_ns"]
        if hours is None:
            out.write("  Horas de funcionamento: sem dados (o agente ainda não leu as horas)\n")
        else:
            assert isinstance(hours, float)
            line = f"  Horas de funcionamento: {hours:.1f} h"
            if isinstance(bags, float):
                line += f"    Sacas (total): {bags:.0f}"
            if isinstance(updated, int):
                line += f"    Última alteração: {_local(updated, zone)}"
            out.write(line + "\n")
        tasks = h["tasks"]
        assert isinstance(tasks, list)
        if not tasks:
            out.write("  (nenhuma tarefa de manutenção configurada)\n")
            continue
        out.write(header)
        for t in tasks:
            assert isinstance(t, dict)
            since, remaining, interval = t["hours_since"], t["remaining_h"], t["interval_h"]
            assert isinstance(interval, float)
            last = t["last_service"]
            if isinstance(last, dict):
                done_at = last["done_at_ns"]
                assert isinstance(done_at, int)
                who = _printable(str(last["by"]))
                by = f", {who}" if who else ""
                done = f"{_local(done_at, zone)} ({last['hours_at']:.1f} h{by})"
            else:
                done = "nunca (conta desde a hora 0)"
            out.write(
                f"  {t['task']:<16} {_printable(str(t['name']))[:24]:<24}"
                f" {_hours(since if isinstance(since, float) else None):>11}"
                f" {interval:>9.1f}"
                f" {_hours(remaining if isinstance(remaining, float) else None):>9}"
                f"  {_STATE_LABELS[str(t['state'])]:<9} {done}\n"
            )
    out.write(
        "\nEstado: em dia = ok; VENCENDO = due (dentro de warn_before_h do intervalo);"
        " ATRASADA = overdue. Horas = horas de funcionamento.\n"
    )


def print_status(
    cfg: Config,
    out: TextIO,
    *,
    as_json: bool,
    err: TextIO | None = None,
) -> int:
    """``coffee-telemetry maintenance status``: running hours and service tasks per huller.

    Reads the database without creating it (before the agent's first run every value is
    unknown). JSON: ``{"site", "hullers": [{"id", "name", "hours_total", "bags_total",
    "updated_ns", "tasks": [{"task", "name", "interval_h", "warn_before_h",
    "hours_since", "remaining_h", "state", "last_service"}]}]}``; ``state`` is ``ok``,
    ``due``, ``overdue`` or ``unknown`` (hours not read yet).

    Returns:
        0, or 1 when the database cannot be read.
    """
    err = sys.stderr if err is None else err
    states: dict[str, HullerState] = {}
    updated: dict[str, int | None] = {}
    last: dict[tuple[str, str], ServiceRecord] = {}
    path = cfg.maintenance_path
    if path.exists():
        try:
            with MaintenanceStore.open(path) as store:
                states = store.load_states()
                updated = {h.id: store.updated_ns(h.id) for h in cfg.hullers}
                last = store.last_services()
        except MaintenanceError as exc:
            err.write(f"error: {exc}\n")
            return 1
    doc: dict[str, object] = {
        "site": cfg.site.id,
        "hullers": [
            huller_status(h, states.get(h.id), updated.get(h.id), last) for h in cfg.hullers
        ],
    }
    if as_json:
        out.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        _render_table(doc, cfg.site.zone, out)
    return 0


def _default_by() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def _hours_for(
    store: MaintenanceStore,
    huller: HullerConfig,
    at_ns: int | None,
    now_ns: int,
) -> tuple[float, str | None]:
    # The running hours to store with a service, and a remark on where they came from.
    current = hours_total(huller, store.state(huller.id))
    if at_ns is None or at_ns >= now_ns - SNAPSHOT_EVERY_NS:
        if current is None:
            return 0.0, "the agent has not read this huller's hours yet: recorded at 0 h"
        return current, None
    past = store.hours_at(huller.id, at_ns)
    if past is not None:
        return past, None
    first = store.first_snapshot(huller.id)
    if first is not None:
        return first[1], (
            "that time is before hour tracking began; recorded with the first hours known"
            f" ({first[1]:.1f} h)"
        )
    if current is not None:
        return current, "no hour history yet: recorded with the current hours"
    return 0.0, "the agent has not read this huller's hours yet: recorded at 0 h"


def _validate(
    cfg: Config,
    huller_id: str,
    task_id: str,
    note: str | None,
    at: str | None,
    by: str | None,
    now_ns: int,
) -> tuple[HullerConfig, ServiceTaskConfig, str, str, int | None]:
    huller = next((h for h in cfg.hullers if h.id == huller_id), None)
    if huller is None:
        known = ", ".join(h.id for h in cfg.hullers) or "none configured"
        raise UsageError(f"unknown huller {huller_id!r}; hullers: {known}")
    task = next((t for t in huller.tasks if t.id == task_id), None)
    if task is None:
        known = ", ".join(t.id for t in huller.tasks) or "none configured"
        raise UsageError(f"huller {huller.id!r} has no task {task_id!r}; its tasks: {known}")
    clean_note = check_text(note or "", what="--note", limit=NOTE_MAX)
    clean_by = check_text(_default_by() if by is None else by, what="--by", limit=BY_MAX)
    at_ns = None if at is None else parse_at(at, cfg.site.zone, now_ns=now_ns)
    return huller, task, clean_note, clean_by, at_ns


@dataclass(frozen=True, slots=True)
class ServiceDone:
    """A service just recorded by ``record_service``.

    Attributes:
        record: What was stored.
        remarks: Where the hours came from, when that needs saying.
        later: A later service of the same task already on record, if any.
    """

    record: ServiceRecord
    remarks: tuple[str, ...]
    later: ServiceRecord | None


def service_command(
    cfg: Config,
    *,
    clock_ns: Callable[[], int] = time.time_ns,
    on_done: Callable[[ServiceDone], None] | None = None,
) -> CommandHandler:
    """The ``cmd/service/<huller>`` command: ``{"task": ..., "note": ..., "at": ...}``.

    The same check and store as ``maintenance done`` (``record_service``);
    ``on_done`` is told of each service recorded (live pages).
    """

    async def handle(cmd: Command) -> dict[str, object]:
        if len(cmd.path) != 2 or cmd.path[0] != "service":
            raise CommandRefused("expected cmd/service/<huller>")
        task, note, at = cmd.doc.get("task"), cmd.doc.get("note"), cmd.doc.get("at")
        if not isinstance(task, str) or not all(
            v is None or isinstance(v, str) for v in (note, at)
        ):
            raise CommandRefused("task must be a string; note and at strings or absent")
        try:
            done = await asyncio.to_thread(
                record_service,
                cfg,
                cmd.path[1],
                task,
                note=note if isinstance(note, str) else None,
                at=at if isinstance(at, str) else None,
                by=cmd.by,
                clock_ns=clock_ns,
            )
        except UsageError as exc:
            raise CommandRefused(str(exc)) from None
        if on_done is not None:
            on_done(done)
        r = done.record
        return {
            "service": {
                "id": r.id,
                "huller": r.huller,
                "task": r.task,
                "done_at_ns": r.done_at_ns,
                "hours_at": round(r.hours_at, 3),
                "by": r.by,
                "note": r.note,
            },
            "remarks": list(done.remarks),
        }

    return handle


def record_service(
    cfg: Config,
    huller: str,
    task: str,
    *,
    note: str | None,
    at: str | None,
    by: str | None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ServiceDone:
    """Check and store a service done (blocking); the agent publishes it.

    Everything is checked before the database is opened, so a refused record writes
    nothing. ``at`` is ISO 8601 (naive: the site's time zone; default now); the hours
    stored are the huller's running hours then (see the module docstring). ``by``
    defaults to the login name. Used by ``maintenance done`` and the web server.

    Raises:
        UsageError: Unknown huller or task, bad note or ``by``, ``at`` not ISO 8601 or
            in the future.
        MaintenanceError: The database cannot be written.
    """
    now_ns = clock_ns()
    h, t, clean_note, clean_by, at_ns = _validate(cfg, huller, task, note, at, by, now_ns)
    with MaintenanceStore.open(cfg.maintenance_path) as store:
        hours, remark = _hours_for(store, h, at_ns, now_ns)
        later = store.last_services().get((h.id, t.id))
        record = store.record_service(
            h.id,
            t.id,
            at_ns=now_ns if at_ns is None else at_ns,
            hours_at=hours,
            note=clean_note,
            by=clean_by,
            recorded_ns=now_ns,
        )
    return ServiceDone(
        record=record,
        remarks=() if remark is None else (remark,),
        later=later if later is not None and later.done_at_ns > record.done_at_ns else None,
    )


def record_done(
    cfg: Config,
    huller: str,
    task: str,
    *,
    note: str | None,
    at: str | None,
    by: str | None,
    out: TextIO,
    err: TextIO | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> int:
    """``coffee-telemetry maintenance done``: ``record_service``, reported on ``out``.

    Returns:
        0 recorded; 2 usage error (unknown huller or task, bad note or ``--by``, ``--at``
        not ISO 8601 or in the future); 1 the database cannot be written.
    """
    err = sys.stderr if err is None else err
    try:
        done = record_service(cfg, huller, task, note=note, at=at, by=by, clock_ns=clock_ns)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return 2
    except MaintenanceError as exc:
        err.write(f"error: {exc}\n")
        return 1
    record = done.record
    h = next(x for x in cfg.hullers if x.id == record.huller)
    t = next(x for x in h.tasks if x.id == record.task)
    zone = cfg.site.zone
    what = f"{h.id} / {t.id}" + (f" ({_printable(t.name)})" if t.name else "")
    out.write(
        f"Recorded service #{record.id}: {what}, done {_local(record.done_at_ns, zone)}"
        f" ({zone.key}) at {record.hours_at:.1f} running hours"
        + (f", by {_printable(record.by)}" if record.by else "")
        + ".\n"
    )
    for remark in done.remarks:
        out.write(f"Note: {remark}.\n")
    if done.later is not None:
        later = done.later
        out.write(
            f"Note: a later service of this task is on record ({_local(later.done_at_ns, zone)},"
            f" #{later.id}); the hours since service still count from that one.\n"
        )
    out.write("The agent publishes it within a few seconds (or at its next start).\n")
    return 0
