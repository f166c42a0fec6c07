"""The history's tables, and the time units they count in.

``series(id, measurement, device, field)``
    One small integer per time series, so a point row is four numbers.
``tagsets(id, station, lot, product)``
    The tags a point was taken under; every point row carries its ``tags_id``, so
    "moisture of lot L today" is exact even when a station switches lots mid-hour. Tag
    text is bound as an SQL parameter, never formatted into SQL: a hostile lot code is
    just data.
``points(series_id, ts_ns, value, tags_id)``
    Raw points, primary key ``(series_id, ts_ns)`` in a ``WITHOUT ROWID`` table. That key
    is the only index raw data needs: every query and every prune is a range scan of one
    series.
``rollup_1m`` / ``rollup_1h(series_id, bucket_ns, count, sum, min, max)``
    Maintained incrementally in the same transaction as the raw insert (an UPSERT per
    series and bucket touched by the batch, pre-aggregated in Python). A raw point
    already stored (same series and timestamp) is ignored and not counted again, so a
    rollup always equals the aggregate of the raw points that were inserted into it.
``latest(series_id, ts_ns, value, tags_id)``
    One row per series for the "now" panels.
``meta(key, value)``
    Counters that outlive what they counted (``dropped_raw_total``).

``lot_1h``, the moisture of each lot per hour, is created apart (``lots``).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "DAY_NS",
    "HOUR_NS",
    "LATEST_UPSERT",
    "MINUTE_NS",
    "NS",
    "ROLLUP_UPSERT",
    "SCHEMA",
    "TABLES",
    "Resolution",
]

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 3600 * NS
DAY_NS = 86_400 * NS

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

ROLLUP_UPSERT = """
INSERT INTO {table} (series_id, bucket_ns, count, sum, min, max) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (series_id, bucket_ns) DO UPDATE SET
    count = count + excluded.count,
    sum = sum + excluded.sum,
    min = MIN(min, excluded.min),
    max = MAX(max, excluded.max)
"""

LATEST_UPSERT = """
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
TABLES: dict[Resolution, tuple[str, str, int]] = {
    Resolution.RAW: ("points", "ts_ns", HOUR_NS),
    Resolution.MINUTE: ("rollup_1m", "bucket_ns", DAY_NS),
    Resolution.HOUR: ("rollup_1h", "bucket_ns", 30 * DAY_NS),
}
