"""History benchmark: dashboard query latency and disk use of ``agent.history.store``.

Builds a history of ``--devices`` moisture meters at one reading per second (one
field, ``moisture_pct``) without going through ``add``: 41 M raw points for 30
days takes too long for a quick run, so ``--days`` (30) of 1-minute and hourly
rollups and the last ``--raw-days`` (1) of raw points are written directly with
``executemany`` in large transactions, in the store's own schema (the ``lot_1h``
lot rollups for all ``--days`` too, one lot per device). Then measures,
over ``--repeats`` runs each: one device's 1 h (raw), 24 h (1-minute rollups) and
30 d (hourly rollups) ``series``; a 24 h panel of all devices (16 queries in a
row, timed as one); ``latest``; ``lots_today`` since 12 h ago (from the lot
rollup; checked against, and timed beside, the raw-point scan it replaced,
``lots_today_raw_scan``); the cost of one flush of one second of readings
through ``add``; and the database size on disk.

Usage: ``PYTHONPATH=. python bench/history.py [--devices 16] [--days 30] [--raw-days 1]``.
Prints one JSON document. Target: 24 h panel of 16 devices p95 <= 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coffee_telemetry.agent.history.schema import DAY_NS, HOUR_NS, MINUTE_NS, NS
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.readings import Reading


def value(device: int, ts_s: int) -> float:
    return 11.0 + device / 10 + (ts_s % 600) / 600


def build(h: History, devices: int, days: int, raw_days: int, end_ns: int) -> dict[str, int]:
    conn = h.connection
    with conn:
        for d in range(devices):
            conn.execute(
                "INSERT INTO series (id, measurement, device, field) VALUES (?, 'moisture', ?,"
                " 'moisture_pct')",
                (d + 1, f"umid-{d}"),
            )
            conn.execute(
                "INSERT INTO tagsets (id, station, lot, product) VALUES (?, 'recepcao', ?, 'cafe')",
                (d + 1, f"L-{d}"),
            )
    start_s = (end_ns - days * DAY_NS) // NS
    raw_start_s = (end_ns - raw_days * DAY_NS) // NS
    end_s = end_ns // NS
    counts = {"raw": 0, "rollup_1m": 0, "rollup_1h": 0, "lot_1h": 0}
    for d in range(devices):
        sid = d + 1
        minutes = []
        for m in range(start_s - start_s % 60, end_s, 60):
            vals = [value(d, s) for s in range(m, m + 60)]
            minutes.append((sid, m * NS, 60, sum(vals), min(vals), max(vals)))
        hours: dict[int, list[float]] = {}
        for _, b, n, s, lo, hi in minutes:
            hb = b - b % HOUR_NS
            agg = hours.setdefault(hb, [0, 0.0, lo, hi])
            agg[0] += n
            agg[1] += s
            agg[2] = min(agg[2], lo)
            agg[3] = max(agg[3], hi)
        with conn:
            conn.executemany("INSERT INTO rollup_1m VALUES (?, ?, ?, ?, ?, ?)", minutes)
            conn.executemany(
                "INSERT INTO rollup_1h VALUES (?, ?, ?, ?, ?, ?)",
                [(sid, b, int(a[0]), a[1], a[2], a[3]) for b, a in hours.items()],
            )
            conn.executemany(
                "INSERT INTO points VALUES (?, ?, ?, ?)",
                ((sid, s * NS, value(d, s), sid) for s in range(raw_start_s, end_s)),
            )
            conn.execute(
                "INSERT INTO latest VALUES (?, ?, ?, ?)", (sid, (end_s - 1) * NS, 11.0, sid)
            )
            conn.executemany(
                "INSERT INTO lot_1h VALUES (?, ?, ?, ?, ?, 'recepcao', 'cafe', ?)",
                [
                    (b, f"L-{d}", int(a[0]), a[1], a[3], min(b + HOUR_NS, end_ns) - NS)
                    for b, a in hours.items()
                ],
            )
        counts["raw"] += end_s - raw_start_s
        counts["rollup_1m"] += len(minutes)
        counts["rollup_1h"] += len(hours)
        counts["lot_1h"] += len(hours)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return counts


def lots_raw_scan(h: History, since_ns: int) -> dict[str, tuple[int, float, float, int]]:
    """The raw-point query ``lots_today`` used before the lot rollup.

    Returns lot -> (count, sum, max, last_ns).
    """
    out: dict[str, tuple[int, float, float, int]] = {}
    for lot, n, total, high, last in h.connection.execute(
        "SELECT t.lot, COUNT(*), SUM(p.value), MAX(p.value), MAX(p.ts_ns)"
        " FROM points p JOIN tagsets t ON t.id = p.tags_id"
        " WHERE p.series_id IN"
        " (SELECT id FROM series WHERE measurement = 'moisture' AND field = 'moisture_pct')"
        " AND p.ts_ns >= ? AND t.lot != '' GROUP BY t.lot",
        (since_ns,),
    ):
        out[str(lot)] = (int(n), float(total), float(high), int(last))
    return out


def measure(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 3),
        "max_ms": round(times[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--raw-days", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    end_ns = (time.time_ns() // HOUR_NS) * HOUR_NS
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "history.db"
        h = History.open(path, max_mb=64 * 1024)
        t = time.perf_counter()
        counts = build(h, args.devices, args.days, args.raw_days, end_ns)
        build_s = time.perf_counter() - t
        size = path.stat().st_size
        dev = "umid-0"
        res: dict[str, object] = {}

        def query(span: int) -> None:
            h.series("moisture", dev, "moisture_pct", end_ns - span, end_ns)

        for name, span in (("1h", HOUR_NS), ("24h", DAY_NS), ("30d", 30 * DAY_NS)):
            n = len(h.series("moisture", dev, "moisture_pct", end_ns - span, end_ns))
            res[f"series_{name}"] = {
                "points": n,
                **measure(functools.partial(query, span), args.repeats),
            }

        def panel() -> None:
            for d in range(args.devices):
                h.series("moisture", f"umid-{d}", "moisture_pct", end_ns - DAY_NS, end_ns)

        res["panel_24h_all_devices"] = measure(panel, args.repeats)
        res["latest"] = measure(lambda: h.latest("moisture"), args.repeats)
        since = end_ns - 12 * HOUR_NS
        lots = h.lots_today(since)
        raw = lots_raw_scan(h, since)
        matches = set(lots) == set(raw) and all(
            (s.count, s.max_pct, s.last_ns) == (raw[k][0], raw[k][2], raw[k][3])
            and abs(s.mean_pct - raw[k][1] / raw[k][0]) < 1e-9
            for k, s in lots.items()
        )
        res["lots_today"] = {
            "lots": len(lots),
            "matches_raw_scan": matches,
            **measure(lambda: h.lots_today(since), args.repeats),
        }
        res["lots_today_raw_scan"] = measure(lambda: lots_raw_scan(h, since), 10)
        seq = [0]

        def one_second() -> None:
            seq[0] += 1
            for d in range(args.devices):
                h.add(
                    Reading(
                        ts_ns=end_ns + seq[0] * NS,
                        seq=seq[0],
                        device=f"umid-{d}",
                        measurement="moisture",
                        fields={"moisture_pct": 11.0, "temperature_c": 24.0},
                        tags={"station": "recepcao", "lot": f"L-{d}", "product": "cafe"},
                    )
                )
            h.flush()

        res["flush_1s_of_readings"] = measure(one_second, args.repeats)
        h.close()
        print(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "params": vars(args) | {"dir": str(args.dir), "minute_ns": MINUTE_NS},
                    "rows": counts,
                    "build_s": round(build_s, 1),
                    "db_bytes": size,
                    "db_mib": round(size / 2**20, 1),
                    "queries": res,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
