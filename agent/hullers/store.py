"""Huller maintenance, the store: durable totals, resets, service records, hour snapshots.

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
see ``agent.sqlite``), and ``coffee-telemetry maintenance done`` (``record.record_service``),
synchronously, while the agent runs. WAL lets readers and one writer work at once; write
transactions begin ``IMMEDIATE`` and wait up to ``busy_timeout`` for the other's commit.
The agent alone writes ``huller_state``, ``counter_resets`` and ``hour_snapshots``; the
command only adds ``services`` rows and reads the rest.

Totals and the crash window
---------------------------
For each poll of a unit the agent (``service``) does, in this order:

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
``MaintenanceStore.record_service`` commits a row with ``published = 0``. The agent
reads the unpublished rows every few seconds (a partial index keeps that cheap), accepts
one ``maintenance`` event per row into the outbox, then marks them published: at least
once. The event's timestamp is the service's ``done_at_ns`` and its fields come from the
row, so a resend after a crash between accept and mark is the same point (only its
``seq`` differs; the ``service_id`` field identifies it).

The records themselves, and what they mean, are in ``tasks``. This module is the whole
store in one piece (a little over 600 lines): the schema, the transactions that keep the
order above, and the thread the agent calls them on.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, TypeVar

from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.errors import MaintenanceError as MaintenanceError
from coffee_telemetry.agent.hullers.tasks import (
    SNAPSHOT_KEEP_NS,
    HullerState,
    ResetRecord,
    ServiceRecord,
)
from coffee_telemetry.agent.sqlite import (
    MigrationStep,
    Synchronous,
    ThreadedStore,
    connect,
    migrate,
    open_on_thread,
    script,
)
from coffee_telemetry.drivers.counter_autonics_ct import TotalState

__all__ = [
    "SCHEMA_VERSION",
    "AsyncMaintenanceStore",
    "MaintenanceError",
    "MaintenanceStore",
    "open_maintenance_store",
]

T = TypeVar("T")

_HOUR_NS = 3600 * 1_000_000_000

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


#: ``STEPS[i]`` takes the store from schema version ``i`` to ``i + 1`` (``agent.sqlite``).
#: Append a step for every change (``SCHEMA_VERSION`` is their number); never edit a
#: shipped one.
STEPS: tuple[MigrationStep, ...] = (script(SCHEMA),)


def _prepare(conn: sqlite3.Connection, *, path: Path) -> None:
    # Only a store older than this code is written on open: ``status`` opens it too.
    try:
        migrate(conn, STEPS, name="maintenance", path=path)
    except ConfigError as exc:
        raise MaintenanceError(exc.problems[0][1], path=path) from exc


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
        cls, path: Path, *, synchronous: Synchronous = "full", page_size: int | None = None
    ) -> MaintenanceStore:
        """Open (creating if needed) the database at ``path``.

        ``page_size`` applies to a database created now (``agent.sqlite.connect``).

        Raises:
            MaintenanceError: It cannot be opened, or a newer version wrote it.
        """
        try:
            conn = connect(
                path,
                synchronous=synchronous,
                page_size=page_size,
                prepare=functools.partial(_prepare, path=path),
                # IMMEDIATE takes the write lock at BEGIN, so the busy timeout covers
                # waiting for the other process's commit.
                isolation_level="IMMEDIATE",
            )
        except (OSError, sqlite3.Error) as exc:
            raise MaintenanceError(f"cannot open: {exc}", path=path) from exc
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

    def _select(
        self, record: Callable[[Sequence[object]], T], sql: str, *params: object
    ) -> list[T]:
        # ``sql`` selects the columns ``record`` takes; one record per row.
        return self._do(lambda conn: [record(row) for row in conn.execute(sql, params)])

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
        return self._select(
            _reset, f"SELECT {_RESET_COLUMNS} FROM counter_resets WHERE published = 0 ORDER BY id"
        )

    def resets(self, huller: str | None = None) -> list[ResetRecord]:
        """Every reset seen (of one huller, or all), oldest first."""
        sql = f"SELECT {_RESET_COLUMNS} FROM counter_resets"
        if huller is None:
            return self._select(_reset, sql + " ORDER BY id")
        return self._select(_reset, sql + " WHERE huller = ? ORDER BY id", huller)

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
        sql, order = f"SELECT {_SERVICE_COLUMNS} FROM services", " ORDER BY done_at_ns, id"
        if huller is None:
            return self._select(_service, sql + order)
        return self._select(_service, sql + " WHERE huller = ?" + order, huller)

    def last_services(self) -> dict[tuple[str, str], ServiceRecord]:
        """The latest service (by time done, then entry) per ``(huller, task)``."""
        latest: dict[tuple[str, str], ServiceRecord] = {}
        for record in self.services():
            latest[(record.huller, record.task)] = record
        return latest

    def unpublished(self, limit: int = 100) -> list[ServiceRecord]:
        """Services whose event has not reached the outbox, in entry order."""
        return self._select(
            _service,
            f"SELECT {_SERVICE_COLUMNS} FROM services WHERE published = 0 ORDER BY id LIMIT ?",
            limit,
        )

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


class AsyncMaintenanceStore(ThreadedStore[MaintenanceStore]):
    """The store for the agent: every call runs on the store's thread.

    Open it with ``open_maintenance_store``; the methods are ``MaintenanceStore``'s.
    """

    @property
    def path(self) -> Path:
        """The database file."""
        return self.sync.path

    async def load_states(self) -> dict[str, HullerState]:
        """See ``MaintenanceStore.load_states``."""
        return await self._run(self.sync.load_states)

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
            self.sync.save_state,
            huller,
            state,
            at_ns=at_ns,
            resets=resets,
            snapshot_hours=snapshot_hours,
        )

    async def unpublished_resets(self) -> list[ResetRecord]:
        """See ``MaintenanceStore.unpublished_resets``."""
        return await self._run(self.sync.unpublished_resets)

    async def mark_resets_published(self, ids: Sequence[int]) -> None:
        """See ``MaintenanceStore.mark_resets_published``."""
        await self._run(self.sync.mark_resets_published, ids)

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
            self.sync.record_service, huller, task, at_ns=at_ns, hours_at=hours_at, note=note, by=by
        )

    async def last_services(self) -> dict[tuple[str, str], ServiceRecord]:
        """See ``MaintenanceStore.last_services``."""
        return await self._run(self.sync.last_services)

    async def unpublished(self, limit: int = 100) -> list[ServiceRecord]:
        """See ``MaintenanceStore.unpublished``."""
        return await self._run(self.sync.unpublished, limit)

    async def mark_published(self, ids: Sequence[int]) -> None:
        """See ``MaintenanceStore.mark_published``."""
        await self._run(self.sync.mark_published, ids)

    async def hours_at(self, huller: str, at_ns: int) -> float | None:
        """See ``MaintenanceStore.hours_at``."""
        return await self._run(self.sync.hours_at, huller, at_ns)

    async def thin_snapshots(self, now_ns: int) -> int:
        """See ``MaintenanceStore.thin_snapshots``."""
        return await self._run(self.sync.thin_snapshots, now_ns)


@asynccontextmanager
async def open_maintenance_store(
    path: Path, *, synchronous: Synchronous = "full", page_size: int | None = None
) -> AsyncIterator[AsyncMaintenanceStore]:
    """Open the maintenance database for the agent; closed on exit.

    Raises:
        MaintenanceError: It cannot be opened.
    """
    opener = functools.partial(
        MaintenanceStore.open, path, synchronous=synchronous, page_size=page_size
    )
    async with open_on_thread("maintenance", opener, MaintenanceStore.close) as (store, thread):
        yield AsyncMaintenanceStore(store, thread)
