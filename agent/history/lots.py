"""Moisture per lot: the ``lot_1h`` rollup and ``lots_today``.

Theory of operation
-------------------
``lot_1h(bucket_ns, lot, count, sum, max, station, product, last_ns)`` holds the
``moisture.moisture_pct`` samples of each lot per UTC hour, for ``lots_today``; it is
maintained by the same UPSERT-per-batch scheme as the series rollups (samples without a
lot are not kept; station and product are those of the bucket's newest sample, the
later-written one on a tie). Buckets are UTC hours, not days, on purpose: the store does
not know the site's time zone, and local midnight of any whole-hour-offset zone (the
assumption ``daily_hours`` makes too) is an hour boundary, so "since local midnight" is
answered from whole buckets. A database created before this table existed gets it on
open, backfilled once from the raw points still stored, in the same transaction that
creates it (a crash mid-way leaves no table, so the next open backfills again).

``lots_today(since_ns)`` reads ``lot_1h`` for the buckets starting at or after
``since_ns`` and, when ``since_ns`` is not an hour boundary, raw points for the partial
first hour ``[since_ns, next hour)``. The result equals the raw-point computation as long
as raw points from ``since_ns`` on are still stored; once raw points are pruned
(retention, disk bound) the whole buckets still count them, and only a partial first
hour depends on raw data.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from coffee_telemetry.agent.history.schema import DAY_NS, HOUR_NS

__all__ = [
    "LOT_FIELD",
    "LOT_MEASUREMENT",
    "LOT_TABLE",
    "LOT_UPSERT",
    "LotAgg",
    "LotRow",
    "LotSummary",
    "ensure_lot_rollup",
    "fold_lot",
    "lot_rows_since",
    "lot_upserts",
    "summarise_lots",
]

log = logging.getLogger(__name__)

#: Measurement and field whose per-lot summary ``lots_today`` reports.
LOT_MEASUREMENT = "moisture"
LOT_FIELD = "moisture_pct"

#: One lot aggregate: lot, station, product, count, sum, max, last_ns.
LotRow = tuple[str, str, str, int, float, float, int]

#: Created (and backfilled) by ``ensure_lot_rollup``, not by ``SCHEMA``: its absence
#: marks a database from before it existed.
LOT_SCHEMA_SQL = """
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

LOT_UPSERT = """
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
LOT_RAW = """
SELECT t.lot, t.station, t.product, p.ts_ns - p.ts_ns % ?, COUNT(*), SUM(p.value),
    MAX(p.value), MAX(p.ts_ns)
FROM points p JOIN tagsets t ON t.id = p.tags_id
WHERE p.series_id IN (SELECT id FROM series WHERE measurement = ? AND field = ?)
    AND p.ts_ns >= ? AND p.ts_ns < ? AND t.lot != ''
GROUP BY p.tags_id, 4 ORDER BY 8
"""

#: Lot rollups: table, time column, how much to drop at once when over the disk bound.
LOT_TABLE = ("lot_1h", "bucket_ns", 30 * DAY_NS)


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


@dataclass(slots=True)
class LotAgg:
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


def fold_lot(acc: dict[tuple[int, str], LotAgg], row: LotRow) -> None:
    """Fold ``row`` into the bucket of its newest sample in ``acc``."""
    lot, station, product, count, total, high, last = row
    key = (last - last % HOUR_NS, lot)
    agg = acc.get(key)
    if agg is None:
        acc[key] = LotAgg(count, total, high, station, product, last)
    else:
        agg.merge(row)


def lot_upserts(acc: dict[tuple[int, str], LotAgg]) -> list[tuple[object, ...]]:
    return [
        (b, lot, a.count, a.total, a.high, a.station, a.product, a.last_ns)
        for (b, lot), a in acc.items()
    ]


def lot_rows_from_raw(conn: sqlite3.Connection, start_ns: int, end_ns: int) -> list[LotRow]:
    """Lot aggregates of raw points in ``[start_ns, end_ns)`` per tag set and hour."""
    return [
        (str(lot), str(st), str(pr), int(n), float(total), float(high), int(last))
        for lot, st, pr, _, n, total, high, last in conn.execute(
            LOT_RAW, (HOUR_NS, LOT_MEASUREMENT, LOT_FIELD, start_ns, end_ns)
        )
    ]


def ensure_lot_rollup(conn: sqlite3.Connection) -> None:
    """Create ``lot_1h`` if missing and backfill it from raw points, in one transaction."""
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lot_1h'"
    if conn.execute(exists).fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(exists).fetchone() is None:  # another process may have won
            conn.execute(LOT_SCHEMA_SQL)
            acc: dict[tuple[int, str], LotAgg] = {}
            for row in lot_rows_from_raw(conn, -(2**63), 2**63 - 1):
                fold_lot(acc, row)  # rows are per tag set and hour, so no bucket spills
            conn.executemany(LOT_UPSERT, lot_upserts(acc))
            if acc:
                log.info("History: backfilled %d lot rollup rows from raw points", len(acc))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def lot_rows_since(conn: sqlite3.Connection, since_ns: int) -> list[LotRow]:
    """The lot aggregates ``lots_today`` sums: raw head first, then ``lot_1h`` buckets.

    Whole UTC hours from ``since_ns`` on come from the ``lot_1h`` rollup; if ``since_ns``
    is not an hour boundary, the partial first hour comes from raw points (so it is exact
    while they are stored, and missing once they are pruned).
    """
    boundary = -(-since_ns // HOUR_NS) * HOUR_NS  # first bucket starting at or after
    rows: list[LotRow] = []
    if boundary > since_ns:
        rows.extend(lot_rows_from_raw(conn, since_ns, boundary))
    rows.extend(
        (str(lot), str(st), str(pr), int(n), float(total), float(high), int(last))
        for lot, st, pr, n, total, high, last in conn.execute(
            "SELECT lot, station, product, count, sum, max, last_ns FROM lot_1h"
            " WHERE bucket_ns >= ? ORDER BY last_ns",
            (boundary,),
        )
    )
    return rows


def summarise_lots(rows: Iterable[LotRow]) -> dict[str, LotSummary]:
    """Sum ``lot_rows_since`` per lot; station and product of the lot's newest sample.

    Samples without a lot are not in the rows to begin with.
    """
    out: dict[str, LotSummary] = {}
    sums: dict[str, float] = {}
    # Oldest newest-sample first (the raw head is all before the buckets): the last wins.
    for lot, station, product, count, total, high, last in rows:
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
