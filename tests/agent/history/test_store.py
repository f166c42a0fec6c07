"""Local history: rollups, retention, disk bound, restart, dashboard queries."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import date, timedelta, timezone
from pathlib import Path

import pytest

from coffee_telemetry.agent.history.lots import LotSummary
from coffee_telemetry.agent.history.queries import choose_resolution
from coffee_telemetry.agent.history.schema import DAY_NS, HOUR_NS, MINUTE_NS, NS, Resolution
from coffee_telemetry.agent.history.service import open_history
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.readings import Reading

T0 = 1_796_000_400 * NS  # a whole hour, UTC
BRT = timezone(timedelta(hours=-3))


def moisture(ts_ns: int, pct: float, *, device: str = "umid-1", lot: str = "L-1") -> Reading:
    return Reading(
        ts_ns=ts_ns,
        seq=ts_ns // NS,
        device=device,
        measurement="moisture",
        fields={"moisture_pct": pct, "temperature_c": 25.0, "sample_id": "S-1"},
        tags={"site": "s", "device": device, "station": "recepcao", "lot": lot, "product": "cafe"},
    )


def feed(h: History, start_ns: int, n: int, step_ns: int = 10 * NS, device: str = "umid-1") -> None:
    for i in range(n):
        h.add(moisture(start_ns + i * step_ns, 10.0 + (i % 7) / 2, device=device))
    h.flush()


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History.open(tmp_path / "h.db")


def test_rollups_equal_aggregates_of_raw(history: History) -> None:
    feed(history, T0, 1000, step_ns=7 * NS + 13)
    # A replayed point is ignored and not counted twice.
    history.add(moisture(T0, 99.0))
    history.flush()
    conn = sqlite3.connect(history.stats().path)
    for table, width in (("rollup_1m", MINUTE_NS), ("rollup_1h", HOUR_NS)):
        raw = conn.execute(
            "SELECT series_id, ts_ns - ts_ns % ?, COUNT(*), SUM(value), MIN(value), MAX(value)"
            " FROM points GROUP BY 1, 2 ORDER BY 1, 2",
            (width,),
        ).fetchall()
        rolled = conn.execute(
            f"SELECT series_id, bucket_ns, count, sum, min, max FROM {table} ORDER BY 1, 2"
        ).fetchall()
        assert [(*r[:3], round(r[3], 6), *r[4:]) for r in rolled] == [
            (*r[:3], round(r[3], 6), *r[4:]) for r in raw
        ]
    conn.close()
    history.close()


def test_strings_are_not_history(history: History) -> None:
    feed(history, T0, 3)
    latest = history.latest("moisture")["umid-1"]
    assert set(latest.fields) == {"moisture_pct", "temperature_c"}
    assert latest.ts_ns == T0 + 20 * NS
    assert latest.tags == {"station": "recepcao", "lot": "L-1", "product": "cafe"}
    history.close()


def test_retention_drops_old_raw_keeps_rollups(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.db", raw_retention_s=86_400)
    feed(h, T0, 360, step_ns=10 * NS)  # one hour
    now = T0 + 2 * DAY_NS
    h.prune(now)
    assert h.series("moisture", "umid-1", "moisture_pct", T0, T0 + HOUR_NS) == []  # raw gone
    day = h.series("moisture", "umid-1", "moisture_pct", T0, T0 + DAY_NS)
    assert len(day) == 30  # one-minute rollups remain (2-min buckets)
    # Past the rollups' retention too, everything goes.
    h.prune(now + 3 * 365 * DAY_NS)
    assert h.series("moisture", "umid-1", "moisture_pct", T0, T0 + 30 * DAY_NS) == []
    h.close()


def test_disk_bound_drops_oldest_raw_first(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.db", max_mb=0.5)
    for hour in range(12):
        feed(h, T0 + hour * HOUR_NS, 3600, step_ns=NS)
    assert h.used_bytes() > 512 * 1024
    dropped = h.prune(T0 + 12 * HOUR_NS)
    stats = h.stats()
    assert stats.used_bytes <= 512 * 1024
    assert dropped > 0
    assert stats.dropped_raw_total == dropped
    # The newest raw data survives; the oldest hour is now only in rollups.
    assert h.series("moisture", "umid-1", "moisture_pct", T0 + 11 * HOUR_NS, T0 + 12 * HOUR_NS)
    assert h.lots_today(T0)["L-1"].count == 12 * 3600  # lot rollups outlive dropped raw points
    assert not h.series("moisture", "umid-1", "moisture_pct", T0, T0 + 60 * NS)
    assert (
        len(h.series("moisture", "umid-1", "moisture_pct", T0, T0 + DAY_NS)) == 360
    )  # 12 h of 2-min buckets
    h.close()
    assert (tmp_path / "h.db").stat().st_size <= 600 * 1024  # freed pages went back


def test_survives_restart(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.db")
    feed(h, T0, 10)
    h.add(moisture(T0 + HOUR_NS, 12.0))  # pending: written by close
    h.close()
    h = History.open(tmp_path / "h.db")
    feed(h, T0 + 2 * HOUR_NS, 10)
    assert h.lots_today(T0)["L-1"].count == 21
    points = h.series("moisture", "umid-1", "moisture_pct", T0, T0 + 3 * HOUR_NS, max_points=10_000)
    assert len(points) == 21
    assert len(h.series("moisture", "umid-1", "moisture_pct", T0, T0 + DAY_NS)) == 3
    h.close()


def test_lots_today(history: History) -> None:
    history.add(moisture(T0 - NS, 30.0, lot="L-1"))  # yesterday: not counted
    for i, (lot, pct) in enumerate([("L-1", 11.0), ("L-2", 13.0), ("L-1", 12.0), ("", 50.0)]):
        history.add(moisture(T0 + i * NS, pct, lot=lot))
    history.add(
        Reading(
            ts_ns=T0 + 9 * NS,
            seq=1,
            device="umid-2",
            measurement="moisture",
            fields={"moisture_pct": 14.0},
            tags={"station": "secador", "lot": "L-1", "product": "conilon"},
        )
    )
    history.flush()
    lots = history.lots_today(T0)
    assert set(lots) == {"L-1", "L-2"}
    l1 = lots["L-1"]
    assert (l1.count, l1.max_pct, l1.station, l1.product) == (3, 14.0, "secador", "conilon")
    assert l1.mean_pct == pytest.approx(37.0 / 3)
    assert (lots["L-2"].count, lots["L-2"].mean_pct) == (1, 13.0)
    history.close()


def test_hostile_lot_round_trips_as_data(history: History) -> None:
    hostile = 'L\'); DROP TABLE points;--\n"x" \x00 ção'
    history.add(moisture(T0, 11.0, lot=hostile))
    history.flush()
    assert history.lots_today(T0)[hostile].count == 1
    assert history.latest("moisture")["umid-1"].tags["lot"] == hostile
    assert history.series("moisture", "umid-1", "moisture_pct", T0, T0 + NS) == [(T0, 11.0)]
    history.close()


@pytest.mark.parametrize(
    ("span_ns", "expected"),
    [
        (HOUR_NS, Resolution.RAW),
        (DAY_NS, Resolution.MINUTE),
        (7 * DAY_NS, Resolution.MINUTE),
        (30 * DAY_NS, Resolution.HOUR),
    ],
)
def test_choose_resolution(span_ns: int, expected: Resolution) -> None:
    resolution, base, width = choose_resolution(T0 + 17, T0 + 17 + span_ns, 1000)
    assert resolution is expected
    assert base <= T0 + 17
    assert (T0 + 17 + span_ns - base) / width <= 1000


def test_series_picks_resolution_and_bounds_points(history: History) -> None:
    feed(history, T0, 8640, step_ns=10 * NS)  # 24 h at one reading per 10 s
    args = ("moisture", "umid-1", "moisture_pct")
    hour = history.series(*args, T0, T0 + HOUR_NS)
    assert len(hour) == 360  # raw, one point per reading
    assert hour[0] == (T0, 10.0)
    day = history.series(*args, T0, T0 + DAY_NS)
    assert len(day) == 720  # one-minute rollups, two minutes per point
    assert day[0][0] == T0
    assert day[0][1] == pytest.approx(sum(10.0 + (i % 7) / 2 for i in range(12)) / 12)
    month = history.series(*args, T0, T0 + 30 * DAY_NS)
    assert len(month) == 24  # hourly rollups
    assert len(history.series(*args, T0, T0 + DAY_NS, max_points=100)) <= 100
    assert history.series("moisture", "nope", "moisture_pct", T0, T0 + DAY_NS) == []
    history.close()


def test_daily_hours(history: History) -> None:
    # Local midnight (UTC-3) of day 1 is 03:00 UTC.
    midnight = (T0 // DAY_NS) * DAY_NS + 3 * HOUR_NS
    hours = 1000.0
    for minute in range(0, 2 * 24 * 60, 10):
        ts = midnight + minute * MINUTE_NS
        running = 8 * 60 <= minute % (24 * 60) < 14 * 60  # 6 h a day
        hours += 10 / 60 if running else 0.0
        history.add(
            Reading(
                ts_ns=ts,
                seq=minute,
                device="huller-1",
                measurement="huller",
                fields={"hours_total": hours, "running": running},
            )
        )
    history.flush()
    days = history.daily_hours("huller-1", 3, tz=BRT, now_ns=midnight + 47 * HOUR_NS)
    first = date.fromtimestamp(midnight // NS - 3 * 3600)
    assert [d for d, _ in days] == [first - timedelta(days=1), first, first + timedelta(days=1)]
    assert days[0][1] == 0.0
    assert days[1][1] == pytest.approx(6.0, abs=0.2)
    assert days[2][1] == pytest.approx(6.0, abs=0.2)
    history.close()


def test_pending_is_bounded(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.db", max_pending=10)
    for i in range(8):
        h.add(moisture(T0 + i * NS, 11.0))  # two numeric fields each
    assert h.pending == 10
    assert h.stats().dropped_pending_total == 6
    h.close()


async def test_open_history_flushes_in_background(tmp_path: Path) -> None:
    async with open_history(tmp_path / "h.db", flush_interval_s=0.01, clock_ns=lambda: T0) as h:
        h.add(moisture(T0, 11.5))
        for _ in range(200):
            if h.sync.pending == 0 and await h.latest("moisture"):
                break
            await asyncio.sleep(0.01)
        latest = await h.latest("moisture")
        assert latest["umid-1"].fields["moisture_pct"] == 11.5
        assert await h.series("moisture", "umid-1", "moisture_pct", T0, T0 + NS) == [(T0, 11.5)]
        assert (await h.lots_today(T0))["L-1"].count == 1
        assert await h.daily_hours("x", 1, tz=BRT, now_ns=T0) == [(date(2026, 11, 29), 0.0)]
        h.add(moisture(T0 + NS, 12.5))
    async with open_history(tmp_path / "h.db", flush_interval_s=3600) as h:
        stats = await h.stats()
        assert stats.pending == 0
        points = await h.series("moisture", "umid-1", "moisture_pct", T0, T0 + 2 * NS)
        assert points == [(T0, 11.5), (T0 + NS, 12.5)]  # the pending one was written on exit


# -- lots_today from the lot rollup ------------------------------------------

HOSTILE = "L'); DROP TABLE lot_1h;--"


def random_readings(seed: int) -> list[Reading]:
    """Readings over ~50 h around T0, distinct timestamps (so "newest" is well defined)."""
    rng = random.Random(seed)
    stamps = rng.sample(range(-26 * 3600 * 10, 24 * 3600 * 10), 600)  # tenths of a second
    out = []
    for i, tenths in enumerate(stamps):
        ts = T0 + tenths * NS // 10
        lot = rng.choice(["L-1", "L-2", "L-3", "", HOSTILE])
        tags = {
            "station": rng.choice(["recepcao", "secador"]),
            "product": rng.choice(["cafe", "conilon"]),
            "lot": lot,
        }
        measurement = rng.choice(["moisture"] * 5 + ["scale"])  # other measurements ignored
        out.append(
            Reading(
                ts_ns=ts,
                seq=i,
                device=rng.choice(["umid-1", "umid-2", "umid-3"]),
                measurement=measurement,
                fields={"moisture_pct": round(rng.uniform(8, 20), 2), "temperature_c": 25.0},
                tags=tags,
            )
        )
    return out


def lots_from_readings(readings: list[Reading], since_ns: int) -> dict[str, LotSummary]:
    """What lots_today must return: the first stored sample per (device, ts) wins."""
    seen: set[tuple[str, int]] = set()
    per_lot: dict[str, list[tuple[int, float, str, str]]] = {}
    for r in readings:
        if r.measurement != "moisture" or (r.device, r.ts_ns) in seen:
            continue
        seen.add((r.device, r.ts_ns))
        if r.ts_ns >= since_ns and r.tags["lot"]:
            pct = r.fields["moisture_pct"]
            assert isinstance(pct, float)
            per_lot.setdefault(r.tags["lot"], []).append(
                (r.ts_ns, pct, r.tags["station"], r.tags["product"])
            )
    out = {}
    for lot, samples in per_lot.items():
        last = max(samples)
        out[lot] = LotSummary(
            lot=lot,
            count=len(samples),
            mean_pct=sum(s[1] for s in samples) / len(samples),
            max_pct=max(s[1] for s in samples),
            station=last[2],
            product=last[3],
            last_ns=last[0],
        )
    return out


def assert_lots_equal(got: dict[str, LotSummary], want: dict[str, LotSummary]) -> None:
    assert set(got) == set(want)
    for lot, w in want.items():
        g = got[lot]
        assert g.mean_pct == pytest.approx(w.mean_pct, rel=1e-12)
        assert (g.lot, g.count, g.max_pct, g.station, g.product, g.last_ns) == (
            w.lot,
            w.count,
            w.max_pct,
            w.station,
            w.product,
            w.last_ns,
        )


def sinces(seed: int) -> list[int]:
    rng = random.Random(seed)
    on_hours = [T0 + h * HOUR_NS for h in range(-27, 26, 3)]
    inside = [T0 + rng.randrange(-27 * HOUR_NS, 25 * HOUR_NS) for _ in range(8)]
    return [*on_hours, *inside, T0 - 365 * DAY_NS, T0 + 30 * DAY_NS]


def write_in_batches(h: History, readings: list[Reading], seed: int) -> None:
    rng = random.Random(seed)
    for i, r in enumerate(readings):
        h.add(r)
        if rng.random() < 0.05 or i == len(readings) - 1:
            h.flush()


@pytest.mark.parametrize("seed", range(6))
def test_lots_today_equals_raw_on_random_data(tmp_path: Path, seed: int) -> None:
    readings = random_readings(seed)
    # Replays of stored points (same device and ts, another value) are ignored.
    replays = [
        Reading(
            ts_ns=r.ts_ns,
            seq=r.seq,
            device=r.device,
            measurement=r.measurement,
            fields={"moisture_pct": 99.0},
            tags=r.tags,
        )
        for r in random.Random(seed).sample(readings, 30)
    ]
    readings = readings + replays
    h = History.open(tmp_path / "h.db")
    write_in_batches(h, readings, seed)
    for since in sinces(seed):
        assert_lots_equal(h.lots_today(since), lots_from_readings(readings, since))
    h.close()
    # Survives a restart, and keeps counting after it.
    h = History.open(tmp_path / "h.db")
    more = [
        Reading(
            ts_ns=T0 + 30 * HOUR_NS + i * NS,
            seq=i,
            device="umid-9",
            measurement="moisture",
            fields={"moisture_pct": 12.0 + i},
            tags={"station": "s", "lot": "L-1", "product": "p"},
        )
        for i in range(5)
    ]
    write_in_batches(h, more, seed)
    for since in sinces(seed + 100):
        assert_lots_equal(h.lots_today(since), lots_from_readings(readings + more, since))
    h.close()


def test_lot_rollup_is_backfilled_once_on_an_old_database(tmp_path: Path) -> None:
    readings = random_readings(42)
    h = History.open(tmp_path / "h.db")
    write_in_batches(h, readings, 42)
    h.close()
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute("DROP TABLE lot_1h")  # a database from before the lot rollup
    conn.execute("PRAGMA user_version = 0")  # and from before schema versions
    conn.commit()
    conn.close()
    for _ in range(2):  # the second open must not backfill again
        h = History.open(tmp_path / "h.db")
        for since in sinces(42):
            assert_lots_equal(h.lots_today(since), lots_from_readings(readings, since))
        h.close()


def test_lot_rollup_retention(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.db", raw_retention_s=86_400)
    feed(h, T0, 360, step_ns=10 * NS)
    h.prune(T0 + 2 * DAY_NS)
    assert h.series("moisture", "umid-1", "moisture_pct", T0, T0 + HOUR_NS) == []  # raw gone
    # Whole hours still count the pruned raw points; a partial first hour needs them.
    assert h.lots_today(T0)["L-1"].count == 360
    assert h.lots_today(T0 - 30 * MINUTE_NS)["L-1"].count == 360
    assert h.lots_today(T0 + NS) == {}
    h.prune(T0 + 2 * 365 * DAY_NS + HOUR_NS)
    assert h.lots_today(0) == {}
    h.close()


def test_disk_bound_drops_lot_rollups_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = History.open(tmp_path / "h.db", max_mb=0.01)  # below the empty schema: all must go
    for day in range(3):
        feed(h, T0 + day * DAY_NS, 90, step_ns=HOUR_NS // 4)
    assert h.lots_today(T0)["L-1"].count == 270
    with caplog.at_level("WARNING", logger="coffee_telemetry.agent.history.store"):
        h.prune(T0 + 3 * DAY_NS)
    rank = {"raw": 0, "1m": 1, "1h": 2, "lot": 3}
    order = [rank[str(r.args[2])] for r in caplog.records if isinstance(r.args, tuple)]
    assert order == sorted(order)
    assert order[-1] == rank["lot"]
    assert h.lots_today(0) == {}
    h.close()


def test_queries_from_many_threads_while_writing(history: History) -> None:
    from concurrent.futures import ThreadPoolExecutor

    t0 = 1_700_000_000 * NS
    feed(history, t0, 600)
    history.flush()

    def query(i: int) -> int:
        if i % 4 == 0:
            feed(history, t0 + (600 + i) * 10 * NS, 1)
            history.flush()
        return len(history.series("moisture", "umid-1", "moisture_pct", t0, t0 + 6000 * NS))

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(query, range(64)))
    assert min(counts) >= 600
    history.close()
    history.close()  # idempotent, and every reader connection was closed once
