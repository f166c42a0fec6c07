"""Local history: what the built-in dashboard reads when InfluxDB is out of reach.

Theory of operation
-------------------
The agent's live fan-out calls ``History.add(reading)`` (a ``ReadingListener``)
for every accepted reading. ``add`` only turns the numeric and bool fields
into point tuples and appends them to a bounded in-memory deque: no SQL, no
I/O, safe from any thread. String fields (ticket text, states, lot codes as
fields) are not history; they live in the outbox and InfluxDB. If the writer
falls behind by more than ``max_pending`` points the oldest pending points are
dropped and counted (``dropped_pending_total``); memory stays bounded.

``history_loop`` (``service``, run by ``open_history``) takes what is pending
every ``flush_interval_s`` (1 s) and writes it in one transaction on the store's
thread, so neither a commit nor a checkpoint ever blocks the event loop. The
store is SQLite in WAL mode with ``synchronous=NORMAL``: a power cut may lose
the last second of history, which the outbox (not this store) is there to
prevent. One ``write`` inserts the raw points and updates, in the same
transaction, the rollups and latest values (``schema``) and the lot rollup
(``lots``).

Retention: ``prune(now_ns)`` deletes raw points older than ``raw_retention_s``
(30 days) and rollups (series and lot) older than theirs (2 years), then
enforces ``max_mb``: while the pages in use exceed it, the oldest hour of raw
points goes first (counted in ``dropped_raw_total``, logged), then the oldest
day of 1-minute rollups, then the oldest month of hourly ones, then the oldest
month of lot rollups (by far the smallest table). The database uses
``auto_vacuum=INCREMENTAL`` so freed pages are given back to the file system
after each prune instead of only being reused.

Queries (``queries``, ``lots``) run on a separate read connection (WAL readers
never wait for the writer), guarded by a lock so they can be called from any
thread; the ``AsyncHistory`` wrapper (``service``) runs them on worker threads.
"""

from __future__ import annotations

import collections
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from coffee_telemetry.agent.errors import HistoryError as HistoryError
from coffee_telemetry.agent.history.lots import (
    LOT_FIELD,
    LOT_MEASUREMENT,
    LOT_SCHEMA_SQL,
    LOT_TABLE,
    LOT_UPSERT,
    LotAgg,
    fold_lot,
    lot_rows_from_raw,
    lot_upserts,
)
from coffee_telemetry.agent.history.queries import HistoryQueries
from coffee_telemetry.agent.history.schema import (
    HOUR_NS,
    LATEST_UPSERT,
    MINUTE_NS,
    NS,
    ROLLUP_UPSERT,
    SCHEMA,
    TABLES,
    Resolution,
)
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sqlite import (
    MigrationStep,
    connect,
    connect_read_only,
    migrate,
    script,
)

__all__ = ["History", "HistoryError", "HistoryStats", "Point"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: One pending point: measurement, device, field, ts_ns, value, station, lot, product.
Point = tuple[str, str, str, int, float, str, str, str]


@dataclass(frozen=True, slots=True)
class HistoryStats:
    """Size and losses of the history store.

    Attributes:
        path: Database file.
        used_bytes: Bytes of pages in use (what ``max_mb`` bounds).
        max_bytes: The disk bound.
        pending: Points waiting in memory for the next flush.
        dropped_raw_total: Raw points dropped by the disk bound (persistent).
        dropped_pending_total: Points dropped because the writer fell behind
            (since this process started).
    """

    path: str
    used_bytes: int
    max_bytes: int
    pending: int
    dropped_raw_total: int
    dropped_pending_total: int


class History(HistoryQueries):
    """The history store: ``add`` from the fan-out, ``flush`` to write, queries to read.

    Open with ``History.open`` (sync) or ``service.open_history`` (async, runs
    the flush and prune loop). See the module docstring.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        path: Path,
        max_bytes: int,
        max_pending: int,
        raw_retention_s: float,
        rollup_1m_retention_s: float,
        rollup_1h_retention_s: float,
        lot_retention_s: float = 2 * 365 * 86_400,
    ) -> None:
        self._conn = conn
        self._reader = reader
        self._path = path
        self._max_bytes = max_bytes
        self._retention_ns = {
            Resolution.RAW: int(raw_retention_s * NS),
            Resolution.MINUTE: int(rollup_1m_retention_s * NS),
            Resolution.HOUR: int(rollup_1h_retention_s * NS),
        }
        self._lot_retention_ns = int(lot_retention_s * NS)
        self._pending: collections.deque[Point] = collections.deque(maxlen=max_pending)
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._series_ids: dict[tuple[str, str, str], int] = {}
        self._tags_ids: dict[tuple[str, str, str], int] = {}
        self.dropped_pending_total = 0
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_mb: float = 2048.0,
        max_pending: int = 100_000,
        raw_retention_s: float = 30 * 86_400,
        rollup_1m_retention_s: float = 2 * 365 * 86_400,
        rollup_1h_retention_s: float = 2 * 365 * 86_400,
        lot_retention_s: float = 2 * 365 * 86_400,
        page_size: int | None = None,
    ) -> History:
        """Open (creating if needed) the history database at ``path``.

        Args:
            path: Database file.
            max_mb: Disk bound in MiB (pages in use), enforced by ``prune``.
            max_pending: Points buffered in memory between flushes.
            raw_retention_s: Age beyond which raw points are pruned.
            rollup_1m_retention_s: Age beyond which 1-minute rollups are pruned.
            rollup_1h_retention_s: Age beyond which hourly rollups are pruned.
            lot_retention_s: Age beyond which lot rollups are pruned.
            page_size: SQLite page size of a database created now (an existing one keeps
                its own). A flush changes about one page per series, rollup and bucket it
                touches, whatever the page size: smaller pages write fewer bytes.

        Raises:
            HistoryError: The database cannot be opened.
        """
        try:
            conn, reader = _connect(path, page_size)
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"cannot open history {path}: {exc}") from exc
        return cls(
            conn,
            reader,
            path=path,
            max_bytes=int(max_mb * 1024 * 1024),
            max_pending=max_pending,
            raw_retention_s=raw_retention_s,
            rollup_1m_retention_s=rollup_1m_retention_s,
            rollup_1h_retention_s=rollup_1h_retention_s,
            lot_retention_s=lot_retention_s,
        )

    # -- writing -------------------------------------------------------------

    def add(self, reading: Reading) -> None:
        """Buffer a reading's numeric and bool fields (a ``ReadingListener``).

        Cheap and non-blocking: no SQL here. String fields are skipped, and so are
        provisional readings: they come back once re-stamped (``agent.timekeeping``).
        """
        if reading.time_quality == "provisional":
            return
        tags = reading.tags
        station = tags.get("station", "")
        lot = tags.get("lot", "")
        product = tags.get("product", "")
        points: list[Point] = []
        for name, value in reading.fields.items():
            if isinstance(value, str):
                continue
            number = float(value)
            if not math.isfinite(number):
                continue
            points.append(
                (
                    reading.measurement,
                    reading.device,
                    name,
                    reading.ts_ns,
                    number,
                    station,
                    lot,
                    product,
                )
            )
        if not points:
            return
        with self._pending_lock:
            pending = self._pending
            overflow = len(pending) + len(points) - (pending.maxlen or 0)
            if overflow > 0:
                self.dropped_pending_total += overflow
            pending.extend(points)

    def take_pending(self) -> list[Point]:
        """Remove and return everything buffered by ``add``."""
        with self._pending_lock:
            batch = list(self._pending)
            self._pending.clear()
        return batch

    @property
    def pending(self) -> int:
        """Points buffered and not yet written."""
        return len(self._pending)

    def flush(self) -> int:
        """Write everything pending now, in one transaction (blocking).

        Returns:
            Raw points inserted (duplicates of stored points are not).
        """
        return self.write(self.take_pending())

    def write(self, batch: Sequence[Point]) -> int:
        """Insert ``batch`` and update rollups and latest values, in one transaction.

        Returns:
            Raw points inserted.
        """
        if not batch:
            return 0
        with self._write_lock, self._conn as conn:
            minute: dict[tuple[int, int], list[float]] = {}
            hour: dict[tuple[int, int], list[float]] = {}
            newest: dict[int, tuple[int, float, int]] = {}
            lots: dict[tuple[int, str], LotAgg] = {}
            inserted = 0
            for meas, dev, fld, ts, value, station, lot, product in batch:
                sid = self._series_id(conn, (meas, dev, fld))
                tid = self._tags_id(conn, (station, lot, product))
                cur = conn.execute(
                    "INSERT OR IGNORE INTO points (series_id, ts_ns, value, tags_id)"
                    " VALUES (?, ?, ?, ?)",
                    (sid, ts, value, tid),
                )
                if cur.rowcount != 1:
                    continue
                inserted += 1
                for acc, width in ((minute, MINUTE_NS), (hour, HOUR_NS)):
                    key = (sid, ts - ts % width)
                    agg = acc.get(key)
                    if agg is None:
                        acc[key] = [1.0, value, value, value]
                    else:
                        agg[0] += 1
                        agg[1] += value
                        agg[2] = min(agg[2], value)
                        agg[3] = max(agg[3], value)
                prev = newest.get(sid)
                if prev is None or ts >= prev[0]:
                    newest[sid] = (ts, value, tid)
                if lot and meas == LOT_MEASUREMENT and fld == LOT_FIELD:
                    fold_lot(lots, (lot, station, product, 1, value, value, ts))
            for table, acc in (("rollup_1m", minute), ("rollup_1h", hour)):
                conn.executemany(
                    ROLLUP_UPSERT.format(table=table),
                    [(s, b, int(a[0]), a[1], a[2], a[3]) for (s, b), a in acc.items()],
                )
            conn.executemany(LATEST_UPSERT, [(s, ts, v, t) for s, (ts, v, t) in newest.items()])
            conn.executemany(LOT_UPSERT, lot_upserts(lots))
        return inserted

    def _series_id(self, conn: sqlite3.Connection, key: tuple[str, str, str]) -> int:
        sid = self._series_ids.get(key)
        if sid is None:
            conn.execute(
                "INSERT OR IGNORE INTO series (measurement, device, field) VALUES (?, ?, ?)", key
            )
            sid = int(
                conn.execute(
                    "SELECT id FROM series WHERE measurement = ? AND device = ? AND field = ?",
                    key,
                ).fetchone()[0]
            )
            self._series_ids[key] = sid
        return sid

    def _tags_id(self, conn: sqlite3.Connection, key: tuple[str, str, str]) -> int:
        tid = self._tags_ids.get(key)
        if tid is None:
            if len(self._tags_ids) > 10_000:  # lot codes come and go; keep the cache small
                self._tags_ids.clear()
            conn.execute(
                "INSERT OR IGNORE INTO tagsets (station, lot, product) VALUES (?, ?, ?)", key
            )
            tid = int(
                conn.execute(
                    "SELECT id FROM tagsets WHERE station = ? AND lot = ? AND product = ?", key
                ).fetchone()[0]
            )
            self._tags_ids[key] = tid
        return tid

    # -- retention -----------------------------------------------------------

    def prune(self, now_ns: int) -> int:
        """Apply retention at ``now_ns``, then the disk bound (blocking).

        Returns:
            Raw points dropped by the disk bound (not those past retention).
        """
        with self._write_lock:
            with self._conn as conn:
                ids = [int(r[0]) for r in conn.execute("SELECT id FROM series")]
                for res, (table, col, _) in TABLES.items():
                    cutoff = now_ns - self._retention_ns[res]
                    conn.executemany(
                        f"DELETE FROM {table} WHERE series_id = ? AND {col} < ?",
                        [(sid, cutoff) for sid in ids],
                    )
                conn.execute(
                    "DELETE FROM lot_1h WHERE bucket_ns < ?", (now_ns - self._lot_retention_ns,)
                )
            self._conn.executescript("PRAGMA incremental_vacuum;")  # steps to the end
            return self._enforce_bound(ids)

    def _enforce_bound(self, ids: Sequence[int]) -> int:
        dropped_raw = 0
        steps: list[tuple[str, str, str, int, Sequence[int] | None]] = [
            (res.value, table, col, step, ids) for res, (table, col, step) in TABLES.items()
        ]
        steps.append(("lot", *LOT_TABLE, None))  # not per series
        for label, table, col, step, per_series in steps:
            while self.used_bytes() > self._max_bytes:
                if per_series is None:
                    row = self._conn.execute(f"SELECT MIN({col}) FROM {table}").fetchone()
                    oldest = None if row[0] is None else int(row[0])
                else:
                    oldest = _oldest(self._conn, table, col, per_series)
                if oldest is None:
                    break
                cutoff = oldest + step
                with self._conn as conn:
                    before = conn.total_changes
                    if per_series is None:
                        conn.execute(f"DELETE FROM {table} WHERE {col} < ?", (cutoff,))
                    else:
                        conn.executemany(
                            f"DELETE FROM {table} WHERE series_id = ? AND {col} < ?",
                            [(sid, cutoff) for sid in per_series],
                        )
                    count = conn.total_changes - before
                    if table == "points":
                        conn.execute(
                            "INSERT INTO meta (key, value) VALUES ('dropped_raw_total', ?)"
                            " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                            (count,),
                        )
                        dropped_raw += count
                self._conn.executescript("PRAGMA incremental_vacuum;")  # steps to the end
                log.warning(
                    "History over its disk bound of %d bytes: dropped %d %s rows older than %d",
                    self._max_bytes,
                    count,
                    label,
                    cutoff,
                )
        return dropped_raw

    def used_bytes(self) -> int:
        """Bytes of database pages in use (free pages not counted)."""
        page_count = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        return (page_count - free) * page_size

    # -- queries -------------------------------------------------------------

    def _query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._read_lock:
            return fn(self._reader)

    def stats(self) -> HistoryStats:
        """Size and losses."""
        row = self._query(
            lambda c: c.execute("SELECT value FROM meta WHERE key = 'dropped_raw_total'").fetchone()
        )
        with self._write_lock:
            used = self.used_bytes()
        return HistoryStats(
            path=str(self._path),
            used_bytes=used,
            max_bytes=self._max_bytes,
            pending=self.pending,
            dropped_raw_total=int(row[0]) if row else 0,
            dropped_pending_total=self.dropped_pending_total,
        )

    def close(self) -> None:
        """Write what is pending and close the database (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._conn.close()  # the last connection checkpoints and removes the WAL

    @property
    def connection(self) -> sqlite3.Connection:
        """The write connection (bulk loads in ``bench/history.py``; not for the agent)."""
        return self._conn


def _oldest(conn: sqlite3.Connection, table: str, col: str, ids: Iterable[int]) -> int | None:
    oldest: int | None = None
    for sid in ids:
        row = conn.execute(f"SELECT MIN({col}) FROM {table} WHERE series_id = ?", (sid,)).fetchone()
        if row[0] is not None and (oldest is None or int(row[0]) < oldest):
            oldest = int(row[0])
    return oldest


def _add_lot_rollup(conn: sqlite3.Connection) -> None:
    # ``lot_1h``, backfilled from the raw points of a history from before it existed.
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lot_1h'"
    ).fetchone():
        return
    conn.execute(LOT_SCHEMA_SQL)
    acc: dict[tuple[int, str], LotAgg] = {}
    for row in lot_rows_from_raw(conn, -(2**63), 2**63 - 1):
        fold_lot(acc, row)  # rows are per tag set and hour, so no bucket spills
    conn.executemany(LOT_UPSERT, lot_upserts(acc))
    if acc:
        log.info("History: backfilled %d lot rollup rows from raw points", len(acc))


#: ``STEPS[i]`` takes a history from schema version ``i`` to ``i + 1`` (``agent.sqlite``).
#: Append a step for every change; never edit one a release has shipped.
STEPS: tuple[MigrationStep, ...] = (script(SCHEMA), _add_lot_rollup)


def _prepare(conn: sqlite3.Connection) -> None:
    migrate(conn, STEPS, name="history")


def _connect(path: Path, page_size: int | None) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    conn = connect(
        path,
        # Take effect before the first table only; an existing database keeps its settings.
        auto_vacuum="incremental",
        page_size=page_size,
        synchronous="normal",
        prepare=_prepare,
    )
    try:
        return conn, connect_read_only(path)
    except BaseException:
        conn.close()
        raise
