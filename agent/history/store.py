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

``history_loop`` (run by ``open_history``) takes what is pending every
``flush_interval_s`` (1 s) and writes it in one transaction on a worker thread,
so neither a commit nor a checkpoint ever blocks the event loop. The store is
SQLite in WAL mode with ``synchronous=NORMAL``: a power cut may lose the last
second of history, which the outbox (not this store) is there to prevent.

Schema, shaped by the dashboard's queries:

* ``series(id, measurement, device, field)``: one small integer per time
  series, so a point row is four numbers.
* ``tagsets(id, station, lot, product)``: the tags a point was taken under;
  every point row carries its ``tags_id``, so "moisture of lot L today" is
  exact even when a station switches lots mid-hour. Tag text is bound as an
  SQL parameter, never formatted into SQL: a hostile lot code is just data.
* ``points(series_id, ts_ns, value, tags_id)``: raw points, primary key
  ``(series_id, ts_ns)`` in a ``WITHOUT ROWID`` table. That key is the only
  index raw data needs: every query and every prune is a range scan of one
  series.
* ``rollup_1m`` / ``rollup_1h(series_id, bucket_ns, count, sum, min, max)``:
  maintained incrementally in the same transaction as the raw insert (an
  UPSERT per series and bucket touched by the batch, pre-aggregated in
  Python). A raw point already stored (same series and timestamp) is ignored
  and not counted again, so a rollup always equals the aggregate of the raw
  points that were inserted into it.
* ``latest(series_id, ts_ns, value, tags_id)``: one row per series for the
  "now" panels.
* ``lot_1h(bucket_ns, lot, count, sum, max, station, product, last_ns)``: the
  ``moisture.moisture_pct`` samples of each lot per UTC hour, for
  ``lots_today``; maintained by the same UPSERT-per-batch scheme as the series
  rollups (samples without a lot are not kept; station and product are those
  of the bucket's newest sample, the later-written one on a tie). Buckets are
  UTC hours, not days, on purpose: the store does not know the site's time
  zone, and local midnight of any whole-hour-offset zone (the assumption
  ``daily_hours`` makes too) is an hour boundary, so "since local midnight" is
  answered from whole buckets. A database created before this table existed
  gets it on open, backfilled once from the raw points still stored, in the
  same transaction that creates it (a crash mid-way leaves no table, so the
  next open backfills again).

``lots_today(since_ns)`` reads ``lot_1h`` for the buckets starting at or after
``since_ns`` and, when ``since_ns`` is not an hour boundary, raw points for the
partial first hour ``[since_ns, next hour)``. The result equals the raw-point
computation as long as raw points from ``since_ns`` on are still stored; once
raw points are pruned (retention, disk bound) the whole buckets still count
them, and only a partial first hour depends on raw data.

``series()`` picks its source from the range asked for (see
``choose_resolution``): the coarsest rollup that still gives at least half of
``max_points`` buckets, else raw; the source is then grouped into equal
buckets so at most ``max_points`` come back, each the mean of its bucket. A
24 h panel reads ~1 440 one-minute rows per device, a 30 d panel 720 hourly
ones; long ranges never touch raw data.

Retention: ``prune(now_ns)`` deletes raw points older than ``raw_retention_s``
(30 days) and rollups (series and lot) older than theirs (2 years), then
enforces ``max_mb``: while the pages in use exceed it, the oldest hour of raw
points goes first (counted in ``dropped_raw_total``, logged), then the oldest
day of 1-minute rollups, then the oldest month of hourly ones, then the oldest
month of lot rollups (by far the smallest table). The database uses
``auto_vacuum=INCREMENTAL`` so freed pages are given back to the file system
after each prune instead of only being reused.

Queries run on a separate read connection (WAL readers never wait for the
writer), guarded by a lock so they can be called from any thread; the
``AsyncHistory`` wrapper runs them on a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from enum import Enum
from pathlib import Path
from typing import TypeVar

from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import HistoryError as HistoryError
from coffee_telemetry.agent.readings import Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 3600 * NS
DAY_NS = 86_400 * NS

#: Measurement and field whose per-lot summary ``lots_today`` reports.
LOT_MEASUREMENT = "moisture"
LOT_FIELD = "moisture_pct"

#: One pending point: measurement, device, field, ts_ns, value, station, lot, product.
Point = tuple[str, str, str, int, float, str, str, str]

#: One lot aggregate: lot, station, product, count, sum, max, last_ns.
LotRow = tuple[str, str, str, int, float, float, int]

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    device TEXT NOT NULL,
    field TEXT NOT NULL,
    UNIQUE (measurement, device, field)
);
CREATE TABLE IF NOT EXISTS tagsets (
    id INTEGER PRIMARY KEY,
    station TEXT NOT NULL,
    lot TEXT NOT NULL,
    product TEXT NOT NULL,
    UNIQUE (station, lot, product)
);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    value REAL NOT NULL,
    tags_id INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    series_id INTEGER NOT NULL,
    bucket_ns INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series_id, bucket_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series_id INTEGER NOT NULL,
    bucket_ns INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series_id, bucket_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    series_id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    value REAL NOT NULL,
    tags_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_ROLLUP_UPSERT = """
INSERT INTO {table} (series_id, bucket_ns, count, sum, min, max) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (series_id, bucket_ns) DO UPDATE SET
    count = count + excluded.count,
    sum = sum + excluded.sum,
    min = MIN(min, excluded.min),
    max = MAX(max, excluded.max)
"""

#: Created (and backfilled) by ``_ensure_lot_rollup``, not by ``SCHEMA``: its absence
#: marks a database from before it existed.
_LOT_SCHEMA = """
CREATE TABLE lot_1h (
    bucket_ns INTEGER NOT NULL,
    lot TEXT NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    max REAL NOT NULL,
    station TEXT NOT NULL,
    product TEXT NOT NULL,
    last_ns INTEGER NOT NULL,
    PRIMARY KEY (bucket_ns, lot)
) WITHOUT ROWID
"""

_LOT_UPSERT = """
INSERT INTO lot_1h (bucket_ns, lot, count, sum, max, station, product, last_ns)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket_ns, lot) DO UPDATE SET
    count = count + excluded.count,
    sum = sum + excluded.sum,
    max = MAX(max, excluded.max),
    station = CASE WHEN excluded.last_ns >= last_ns THEN excluded.station ELSE station END,
    product = CASE WHEN excluded.last_ns >= last_ns THEN excluded.product ELSE product END,
    last_ns = MAX(last_ns, excluded.last_ns)
"""

#: Raw-point summary per tag set and UTC hour of ``[?, ?)``, oldest newest sample first.
_LOT_RAW = """
SELECT t.lot, t.station, t.product, p.ts_ns - p.ts_ns % ?, COUNT(*), SUM(p.value),
    MAX(p.value), MAX(p.ts_ns)
FROM points p JOIN tagsets t ON t.id = p.tags_id
WHERE p.series_id IN (SELECT id FROM series WHERE measurement = ? AND field = ?)
    AND p.ts_ns >= ? AND p.ts_ns < ? AND t.lot != ''
GROUP BY p.tags_id, 4 ORDER BY 8
"""

#: Lot rollups: table, time column, how much to drop at once when over the disk bound.
_LOT_TABLE = ("lot_1h", "bucket_ns", 30 * DAY_NS)

_LATEST_UPSERT = """
INSERT INTO latest (series_id, ts_ns, value, tags_id) VALUES (?, ?, ?, ?)
ON CONFLICT (series_id) DO UPDATE SET
    ts_ns = excluded.ts_ns, value = excluded.value, tags_id = excluded.tags_id
WHERE excluded.ts_ns >= latest.ts_ns
"""


class Resolution(Enum):
    """Where a ``series`` query reads from."""

    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"


#: Rollup tables by resolution, and how much to drop at once when over the disk bound.
_TABLES: dict[Resolution, tuple[str, str, int]] = {
    Resolution.RAW: ("points", "ts_ns", HOUR_NS),
    Resolution.MINUTE: ("rollup_1m", "bucket_ns", DAY_NS),
    Resolution.HOUR: ("rollup_1h", "bucket_ns", 30 * DAY_NS),
}


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest values of one device.

    Attributes:
        device: Device id.
        ts_ns: Time of the newest of these values.
        fields: Field name to its newest value (bools as 0.0 / 1.0).
        tags: Station, lot and product of the newest value (empty ones left out).
    """

    device: str
    ts_ns: int
    fields: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class LotSummary:
    """Moisture of one lot since a given time.

    Attributes:
        lot: Lot code, as received.
        count: Moisture samples.
        mean_pct: Mean moisture, %.
        max_pct: Highest moisture, %.
        station: Station of the newest sample.
        product: Product of the newest sample.
        last_ns: Time of the newest sample.
    """

    lot: str
    count: int
    mean_pct: float
    max_pct: float
    station: str
    product: str
    last_ns: int


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


def choose_resolution(
    start_ns: int, end_ns: int, max_points: int = 1000
) -> tuple[Resolution, int, int]:
    """Pick the source and bucket width for a ``series`` query.

    The coarsest rollup that still yields at least ``max_points // 2`` of its
    own buckets over the range is used, else raw points; the bucket width is
    then the smallest multiple of the source's resolution (1 ns for raw) that
    fits the range into ``max_points`` buckets counted from ``base_ns``.

    Returns:
        ``(resolution, base_ns, width_ns)``: bucket ``k`` starts at
        ``base_ns + k * width_ns``.
    """
    span = max(1, end_ns - start_ns)
    max_points = max(1, max_points)
    resolution, step = Resolution.RAW, 1
    for res, res_ns in ((Resolution.HOUR, HOUR_NS), (Resolution.MINUTE, MINUTE_NS)):
        if span // res_ns >= max(1, max_points // 2):
            resolution, step = res, res_ns
            break
    base = start_ns - start_ns % step
    width = -(-(end_ns - base) // max_points)  # ceil
    width = max(step, -(-width // step) * step)
    return resolution, base, width


class History:
    """The history store: ``add`` from the fan-out, ``flush`` to write, queries to read.

    Open with ``History.open`` (sync) or ``open_history`` (async, runs the
    flush and prune loop). See the module docstring.
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

        Raises:
            HistoryError: The database cannot be opened.
        """
        try:
            conn, reader = _connect(path)
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

        Cheap and non-blocking: no SQL here. String fields are skipped.
        """
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
            lots: dict[tuple[int, str], _LotAgg] = {}
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
                    _fold_lot(lots, (lot, station, product, 1, value, value, ts))
            for table, acc in (("rollup_1m", minute), ("rollup_1h", hour)):
                conn.executemany(
                    _ROLLUP_UPSERT.format(table=table),
                    [(s, b, int(a[0]), a[1], a[2], a[3]) for (s, b), a in acc.items()],
                )
            conn.executemany(_LATEST_UPSERT, [(s, ts, v, t) for s, (ts, v, t) in newest.items()])
            conn.executemany(_LOT_UPSERT, _lot_upserts(lots))
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
                for res, (table, col, _) in _TABLES.items():
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
            (res.value, table, col, step, ids) for res, (table, col, step) in _TABLES.items()
        ]
        steps.append(("lot", *_LOT_TABLE, None))  # not per series
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

    def series(
        self,
        measurement: str,
        device: str,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        max_points: int = 1000,
    ) -> list[tuple[int, float]]:
        """Points of one series in ``[start_ns, end_ns)``, at most ``max_points``.

        The source (raw, 1-minute or hourly rollups) is chosen by
        ``choose_resolution``; each returned point is the mean of its bucket,
        stamped with its first raw timestamp (raw) or its bucket start (rollups).
        """
        resolution, base, width = choose_resolution(start_ns, end_ns, max_points)

        def read(conn: sqlite3.Connection) -> list[tuple[int, float]]:
            row = conn.execute(
                "SELECT id FROM series WHERE measurement = ? AND device = ? AND field = ?",
                (measurement, device, field),
            ).fetchone()
            if row is None:
                return []
            sid = int(row[0])
            if resolution is Resolution.RAW:
                return [
                    (int(ts), float(v))
                    for ts, v in conn.execute(
                        "SELECT MIN(ts_ns), AVG(value) FROM points"
                        " WHERE series_id = ? AND ts_ns >= ? AND ts_ns < ?"
                        " GROUP BY (ts_ns - ?) / ? ORDER BY 1",
                        (sid, start_ns, end_ns, base, width),
                    )
                ]
            table = _TABLES[resolution][0]
            return [
                (base + int(k) * width, float(v))
                for k, v in conn.execute(
                    f"SELECT (bucket_ns - ?) / ? AS k, SUM(sum) / SUM(count) FROM {table}"
                    " WHERE series_id = ? AND bucket_ns >= ? AND bucket_ns < ?"
                    " GROUP BY k ORDER BY k",
                    (base, width, sid, base, end_ns),
                )
            ]

        return self._query(read)

    def latest(self, measurement: str) -> dict[str, Latest]:
        """The newest value of every field, per device of ``measurement``."""

        def read(conn: sqlite3.Connection) -> dict[str, Latest]:
            out: dict[str, Latest] = {}
            for dev, fld, ts, value, station, lot, product in conn.execute(
                "SELECT s.device, s.field, l.ts_ns, l.value, t.station, t.lot, t.product"
                " FROM series s JOIN latest l ON l.series_id = s.id"
                " JOIN tagsets t ON t.id = l.tags_id"
                " WHERE s.measurement = ? ORDER BY s.device, l.ts_ns",
                (measurement,),
            ):
                tags = {
                    k: str(v)
                    for k, v in (("station", station), ("lot", lot), ("product", product))
                    if v
                }
                prev = out.get(dev)
                fields = {} if prev is None else prev.fields
                fields[str(fld)] = float(value)
                out[str(dev)] = Latest(device=str(dev), ts_ns=int(ts), fields=fields, tags=tags)
            return out

        return self._query(read)

    def lots_today(self, since_ns: int) -> dict[str, LotSummary]:
        """Moisture per lot since ``since_ns`` (e.g. local midnight).

        Whole UTC hours from ``since_ns`` on come from the ``lot_1h`` rollup; if
        ``since_ns`` is not an hour boundary, the partial first hour comes from
        raw points (so it is exact while they are stored, and missing once they
        are pruned). Samples without a lot are left out. Station and product are
        those of the lot's newest sample.
        """
        boundary = -(-since_ns // HOUR_NS) * HOUR_NS  # first bucket starting at or after

        def read(conn: sqlite3.Connection) -> list[LotRow]:
            rows: list[LotRow] = []
            if boundary > since_ns:
                rows.extend(_lot_rows_from_raw(conn, since_ns, boundary))
            rows.extend(
                (str(lot), str(st), str(pr), int(n), float(total), float(high), int(last))
                for lot, st, pr, n, total, high, last in conn.execute(
                    "SELECT lot, station, product, count, sum, max, last_ns FROM lot_1h"
                    " WHERE bucket_ns >= ? ORDER BY last_ns",
                    (boundary,),
                )
            )
            return rows

        out: dict[str, LotSummary] = {}
        sums: dict[str, float] = {}
        # Oldest newest-sample first (the raw head is all before the buckets): the last wins.
        for lot, station, product, count, total, high, last in self._query(read):
            prev = out.get(lot)
            n = count + (prev.count if prev else 0)
            sums[lot] = sums.get(lot, 0.0) + total
            out[lot] = LotSummary(
                lot=lot,
                count=n,
                mean_pct=sums[lot] / n,
                max_pct=max(high, prev.max_pct if prev else -math.inf),
                station=station,
                product=product,
                last_ns=last,
            )
        return out

    def daily_hours(
        self, huller: str, days: int, *, tz: tzinfo, now_ns: int | None = None
    ) -> list[tuple[date, float]]:
        """Running hours of ``huller`` per local day, for the last ``days`` days.

        Each day is ``max - min`` of ``huller.hours_total`` over the hourly
        rollups whose start falls on that local day (exact for time zones with
        whole-hour offsets). Days without data give 0.0. Oldest day first,
        today last.
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        today = datetime.fromtimestamp(now_ns / NS, tz).date()
        first = today - timedelta(days=max(1, days) - 1)
        start = datetime(first.year, first.month, first.day, tzinfo=tz)
        start_ns = int(start.timestamp()) * NS

        def read(conn: sqlite3.Connection) -> list[tuple[int, float, float]]:
            return [
                (int(b), float(lo), float(hi))
                for b, lo, hi in conn.execute(
                    "SELECT r.bucket_ns, r.min, r.max FROM rollup_1h r"
                    " JOIN series s ON s.id = r.series_id"
                    " WHERE s.measurement = 'huller' AND s.device = ? AND s.field = 'hours_total'"
                    " AND r.bucket_ns >= ? ORDER BY r.bucket_ns",
                    (huller, start_ns - start_ns % HOUR_NS),
                )
            ]

        spans: dict[date, tuple[float, float]] = {}
        for bucket, lo, hi in self._query(read):
            day = datetime.fromtimestamp(bucket / NS, tz).date()
            if day < first:
                continue
            prev = spans.get(day)
            spans[day] = (lo, hi) if prev is None else (min(prev[0], lo), max(prev[1], hi))
        out = []
        for i in range((today - first).days + 1):
            day = first + timedelta(days=i)
            lo_hi = spans.get(day)
            out.append((day, 0.0 if lo_hi is None else lo_hi[1] - lo_hi[0]))
        return out

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


@dataclass(slots=True)
class _LotAgg:
    """One ``lot_1h`` bucket being built in Python before its UPSERT."""

    count: int
    total: float
    high: float
    station: str
    product: str
    last_ns: int

    def merge(self, row: LotRow) -> None:
        """Fold in ``row`` (station and product follow the newer sample; later wins a tie)."""
        _, station, product, count, total, high, last = row
        self.count += count
        self.total += total
        self.high = max(self.high, high)
        if last >= self.last_ns:
            self.station, self.product, self.last_ns = station, product, last


def _fold_lot(acc: dict[tuple[int, str], _LotAgg], row: LotRow) -> None:
    """Fold ``row`` into the bucket of its newest sample in ``acc``."""
    lot, station, product, count, total, high, last = row
    key = (last - last % HOUR_NS, lot)
    agg = acc.get(key)
    if agg is None:
        acc[key] = _LotAgg(count, total, high, station, product, last)
    else:
        agg.merge(row)


def _lot_upserts(acc: dict[tuple[int, str], _LotAgg]) -> list[tuple[object, ...]]:
    return [
        (b, lot, a.count, a.total, a.high, a.station, a.product, a.last_ns)
        for (b, lot), a in acc.items()
    ]


def _lot_rows_from_raw(conn: sqlite3.Connection, start_ns: int, end_ns: int) -> list[LotRow]:
    """Lot aggregates of raw points in ``[start_ns, end_ns)`` per tag set and hour."""
    return [
        (str(lot), str(st), str(pr), int(n), float(total), float(high), int(last))
        for lot, st, pr, _, n, total, high, last in conn.execute(
            _LOT_RAW, (HOUR_NS, LOT_MEASUREMENT, LOT_FIELD, start_ns, end_ns)
        )
    ]


def _ensure_lot_rollup(conn: sqlite3.Connection) -> None:
    """Create ``lot_1h`` if missing and backfill it from raw points, in one transaction."""
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lot_1h'"
    if conn.execute(exists).fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(exists).fetchone() is None:  # another process may have won
            conn.execute(_LOT_SCHEMA)
            acc: dict[tuple[int, str], _LotAgg] = {}
            for row in _lot_rows_from_raw(conn, -(2**63), 2**63 - 1):
                _fold_lot(acc, row)  # rows are per tag set and hour, so no bucket spills
            conn.executemany(_LOT_UPSERT, _lot_upserts(acc))
            if acc:
                log.info("History: backfilled %d lot rollup rows from raw points", len(acc))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    # Must precede the first table; an existing database keeps its setting.
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    _ensure_lot_rollup(conn)
    # isolation_level=None is autocommit; "with conn" needs implicit BEGIN.
    conn.isolation_level = "DEFERRED"
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    reader.execute("PRAGMA busy_timeout=5000")
    return conn, reader


class AsyncHistory:
    """``History`` for the event loop: writes and queries on a worker thread.

    ``add`` stays synchronous (it only buffers). ``sync`` is the underlying
    ``History`` for code that already runs in a thread.
    """

    def __init__(self, history: History, executor: ThreadPoolExecutor) -> None:
        self.sync = history
        self._executor = executor

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def add(self, reading: Reading) -> None:
        """Buffer a reading (a ``ReadingListener``); see ``History.add``."""
        self.sync.add(reading)

    async def flush(self) -> int:
        """Write what is pending; see ``History.write``."""
        return await self._run(self.sync.write, self.sync.take_pending())

    async def prune(self, now_ns: int) -> int:
        """Apply retention and the disk bound; see ``History.prune``."""
        return await self._run(self.sync.prune, now_ns)

    async def series(
        self,
        measurement: str,
        device: str,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        max_points: int = 1000,
    ) -> list[tuple[int, float]]:
        """See ``History.series``."""
        return await asyncio.to_thread(
            self.sync.series, measurement, device, field, start_ns, end_ns, max_points=max_points
        )

    async def latest(self, measurement: str) -> dict[str, Latest]:
        """See ``History.latest``."""
        return await asyncio.to_thread(self.sync.latest, measurement)

    async def lots_today(self, since_ns: int) -> dict[str, LotSummary]:
        """See ``History.lots_today``."""
        return await asyncio.to_thread(self.sync.lots_today, since_ns)

    async def daily_hours(
        self, huller: str, days: int, *, tz: tzinfo, now_ns: int | None = None
    ) -> list[tuple[date, float]]:
        """See ``History.daily_hours``."""
        return await asyncio.to_thread(self.sync.daily_hours, huller, days, tz=tz, now_ns=now_ns)

    async def stats(self) -> HistoryStats:
        """See ``History.stats``."""
        return await asyncio.to_thread(self.sync.stats)

    async def history_loop(
        self,
        *,
        flush_interval_s: float = 1.0,
        prune_interval_s: float = 3600.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Flush every ``flush_interval_s`` and prune every ``prune_interval_s``, forever."""
        next_prune = clock_ns()  # prune once at start: the box may have been off for weeks
        while True:
            try:
                await self.flush()
                now = clock_ns()
                if now >= next_prune:
                    await self.prune(now)
                    next_prune = now + int(prune_interval_s * NS)
            except sqlite3.Error as exc:
                log.warning("History write failed, retrying: %s", exc)
            await asyncio.sleep(flush_interval_s)


def open_configured_history(cfg: Config) -> AbstractAsyncContextManager[AsyncHistory]:
    """``open_history`` with the site's ``[history]`` settings."""
    day = 86_400.0
    return open_history(
        cfg.history_path,
        max_mb=cfg.history.max_mb,
        raw_retention_s=cfg.history.raw_retention_days * day,
        rollup_1m_retention_s=cfg.history.rollup_retention_days * day,
        rollup_1h_retention_s=cfg.history.rollup_retention_days * day,
    )


@asynccontextmanager
async def open_history(
    path: Path,
    *,
    max_mb: float = 2048.0,
    max_pending: int = 100_000,
    raw_retention_s: float = 30 * 86_400,
    rollup_1m_retention_s: float = 2 * 365 * 86_400,
    rollup_1h_retention_s: float = 2 * 365 * 86_400,
    lot_retention_s: float = 2 * 365 * 86_400,
    flush_interval_s: float = 1.0,
    prune_interval_s: float = 3600.0,
    clock_ns: Callable[[], int] = time.time_ns,
) -> AsyncIterator[AsyncHistory]:
    """Open the history at ``path`` and run its flush/prune loop while in use.

    On exit the loop stops, what is pending is written and the database closed.

    Raises:
        HistoryError: The database cannot be opened.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
    loop = asyncio.get_running_loop()
    try:
        history = await loop.run_in_executor(
            executor,
            lambda: History.open(
                path,
                max_mb=max_mb,
                max_pending=max_pending,
                raw_retention_s=raw_retention_s,
                rollup_1m_retention_s=rollup_1m_retention_s,
                rollup_1h_retention_s=rollup_1h_retention_s,
                lot_retention_s=lot_retention_s,
            ),
        )
    except BaseException:
        executor.shutdown(wait=True)
        raise
    wrapper = AsyncHistory(history, executor)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(
                wrapper.history_loop(
                    flush_interval_s=flush_interval_s,
                    prune_interval_s=prune_interval_s,
                    clock_ns=clock_ns,
                ),
                name="history",
            )
            try:
                yield wrapper
            finally:
                task.cancel()
    finally:
        await loop.run_in_executor(executor, history.close)
        executor.shutdown(wait=True)
