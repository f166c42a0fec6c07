"""What the dashboard asks the history: series, latest values, running hours per day.

Theory of operation
-------------------
``series`` picks its source from the range asked for (``choose_resolution``): the
coarsest rollup that still gives at least half of ``max_points`` buckets, else raw
points; the source is then grouped into equal buckets so at most ``max_points`` come
back, each the mean of its bucket. A 24 h panel reads ~1 440 one-minute rows per device,
a 30 d panel 720 hourly ones; long ranges never touch raw data.

``latest`` reads the ``latest`` table (one row per series). ``daily_hours`` reads the
hourly rollups of a huller's ``hours_total`` and takes ``max - min`` per local day.

``HistoryQueries`` holds them; ``History`` (``store``) inherits them and gives them its
read connection. ``lots_today`` is computed in ``lots``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import TypeVar

from coffee_telemetry.agent.history.lots import LotSummary, lot_rows_since, summarise_lots
from coffee_telemetry.agent.history.schema import HOUR_NS, MINUTE_NS, NS, TABLES, Resolution

__all__ = ["HistoryQueries", "Latest", "choose_resolution"]

T = TypeVar("T")


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


class HistoryQueries:
    """What the dashboard asks ``History``: its read side, mixed into it.

    Each query reads through ``_query``, which ``History`` runs on its read connection
    under its read lock; what is computed from the rows is computed outside it.
    """

    def _query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # ``History`` provides it

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
            table = TABLES[resolution][0]
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
        return summarise_lots(self._query(lambda conn: lot_rows_since(conn, since_ns)))

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
