"""Lot records benchmark: search over years of lots, one big lot's API, disk per lot.

Builds ``--lots`` (50 000: five years of a busy cooperative, about 27 lots a day)
through the store's own write path (``LotRecords.write``, batches of 1000 records as
the outbox sink hands them over): each lot with ``--readings`` (20) moisture
readings with a printed ticket, ``--weighments`` (2) weighments and a lot assignment;
one lot in ten flagged wet (a wet-lot alert and its acknowledgement), one in three
with details (producer, bags). Then one lot of 5 000 readings and 200 weighments.

Measures, over ``--repeats`` runs each, through a real web server
(``make_web_app`` on loopback, aiohttp client): ``GET /api/lots`` searches (first
page; a code substring; a producer; a 30-day range; wet lots; page 500) and
``GET /api/lots/<code>`` of the big lot. Also: the write rate, bytes on disk per lot,
and bytes per reading (with and without ticket text), from the database's pages in use.

Usage: ``PYTHONPATH=. python bench/lots.py [--lots 50000] [--repeats 50]``.
Prints one JSON document. Targets: search p95 < 100 ms; the big lot's API p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.lots.records import (
    LotRecords,
    Thresholds,
    open_lot_records,
    parse_details,
)
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.services.net import free_port

NS = 1_000_000_000
DAY_NS = 86_400 * NS
YEARS = 5
TICKET = (
    "GEHAKA G650\nAmostra: {sample}\nProduto: CAFE\nLote: {lot}\nUmidade: {pct} %\n"
    "Temperatura: 24,5 C\nPeso hectolitro: 38,20 kg/hl\nData: 03/11/2026 09:14\n"
)
PRODUCERS = ["Sítio Boa Vista", "Fazenda Santa Luzia", "Sítio Santa Rita", "Chácara Ipê"]


def lot_readings(i: int, start_ns: int, readings: int, weighments: int) -> Iterator[Reading]:
    """One lot's outbox records: assignment, readings, weighments, maybe a wet alert."""
    code = f"L-{i:05d}"
    tags = {"site": "bench", "station": "recepcao", "lot": code, "product": "cafe"}
    yield Reading(
        ts_ns=start_ns,
        seq=i * 2 + 1,
        device="agent",
        measurement="lot_assignment",
        fields={"action": "set", "lot_code": code, "by": "maria", "source": "cli"},
        tags={"station": "recepcao", "lot": code},
        kind="event",
    )
    wet = i % 10 == 0
    for r in range(readings):
        pct = round(11.0 + (r % 10) / 10 + (1.8 if wet and r == 3 else 0.0), 1)
        yield Reading(
            ts_ns=start_ns + (r + 1) * 60 * NS,
            seq=i * readings + r + 1,
            device=f"umid-{i % 4}",
            measurement="moisture",
            fields={"moisture_pct": pct, "temperature_c": 24.5, "sample_id": f"{r + 1:04d}"},
            tags=tags,
            audit=TICKET.format(sample=f"{r + 1:04d}", lot=code, pct=pct),
        )
    for w in range(weighments):
        yield Reading(
            ts_ns=start_ns + (readings + w + 2) * 60 * NS,
            seq=i * weighments + w + 1,
            device="balanca",
            measurement="weighment",
            fields={"weight_kg": 800.0 + w, "tare_kg": 12.5, "net": False},
            tags={**tags, "trigger": "print"},
            kind="event",
        )
    if wet:
        for k, state in enumerate(("firing", "acknowledged")):
            fields: dict[str, str | float | int | bool] = {"message": "lote úmido"}
            if state == "acknowledged":
                fields["acked_by"] = "joao"
            yield Reading(
                ts_ns=start_ns + (5 + k) * 60 * NS,
                seq=i * 2 + k + 1,
                device="alerts",
                measurement="alert",
                fields=fields,
                tags={"rule": "wet_lot", "subject": code, "state": state},
                kind="event",
            )


def build(store: LotRecords, lots: int, readings: int, weighments: int, end_ns: int) -> float:
    """Write the lots in batches of 1000 records; returns records per second."""
    start = end_ns - YEARS * 365 * DAY_NS
    step = (end_ns - start) // lots
    batch: list[Reading] = []
    written = 0
    t0 = time.perf_counter()
    for i in range(lots):
        batch.extend(lot_readings(i, start + i * step, readings, weighments))
        if len(batch) >= 1000:
            store.write(batch)
            written += len(batch)
            batch = []
    store.write(batch)
    written += len(batch)
    elapsed = time.perf_counter() - t0
    for i in range(0, lots, 3):
        store.set_details(
            f"L-{i:05d}",
            parse_details({"producer": PRODUCERS[i % len(PRODUCERS)], "bags": 10 + i % 90}),
            by="bench",
            source="cli",
            at_ns=end_ns,
        )
    return written / elapsed


def big_lot(store: LotRecords, end_ns: int) -> str:
    """One lot of 5 000 readings and 200 weighments (a dryer's week)."""
    code = "L-GRANDE"
    tags = {"station": "secador", "lot": code, "product": "cafe"}
    start = end_ns - 7 * DAY_NS
    batch = [
        Reading(
            ts_ns=start + r * 120 * NS,
            seq=10_000_000 + r,
            device="umid-secador",
            measurement="moisture",
            fields={"moisture_pct": round(11.0 + 7 * 0.999**r, 1)},
            tags=tags,
        )
        for r in range(5000)
    ] + [
        Reading(
            ts_ns=start + w * 3000 * NS,
            seq=10_000_000 + w,
            device="balanca",
            measurement="weighment",
            fields={"weight_kg": 60.0, "tare_kg": 0.5, "net": False},
            tags={**tags, "trigger": "print"},
            kind="event",
        )
        for w in range(200)
    ]
    for i in range(0, len(batch), 1000):
        store.write(batch[i : i + 1000])
    return code


def bytes_per_reading(tmp: Path, *, audit: bool) -> float:
    """Pages in use per reading, 20 000 readings into 1 000 lots."""
    store = LotRecords.open(tmp / f"per-reading-{audit}.sqlite3")
    try:
        before = store.used_bytes()
        rows = [
            r
            for i in range(1000)
            for r in lot_readings(i, 1_700_000_000 * NS + i * DAY_NS, 20, 0)
            if r.measurement == "moisture"
        ]
        if not audit:
            rows = [dataclasses.replace(r, audit=None) for r in rows]
        store.write(rows)
        return (store.used_bytes() - before) / len(rows)
    finally:
        store.close()


def p95(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(times[len(times) // 2] * 1000, 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))] * 1000, 2),
        "max_ms": round(times[-1] * 1000, 2),
    }


async def measure(path: Path, tmp: Path, repeats: int, end_ns: int, big: str) -> dict[str, object]:
    cfg = parse_config(
        {"site": {"id": "bench", "timezone": "America/Sao_Paulo"}, "agent": {"data_dir": str(tmp)}}
    )
    results: dict[str, object] = {}
    month_ago = end_ns - 30 * DAY_NS
    queries = {
        "first_page": "/api/lots?page=1&per_page=50",
        "code_substring": "/api/lots?q=2345",
        "producer": "/api/lots?producer=santa%20luzia",
        "range_30_days": f"/api/lots?from={month_ago}&to={end_ns}",
        "wet": "/api/lots?verdict=wet",
        "page_500": "/api/lots?page=500&per_page=50",
    }
    thresholds = Thresholds(default_pct=12.5)
    async with open_lot_records(path, thresholds=thresholds) as records:
        app = make_web_app(WebDeps(cfg=cfg), session_key=b"k" * 32, lot_records=records)
        port = free_port()
        async with (
            open_web(app, host="127.0.0.1", port=port),
            aiohttp.ClientSession() as session,
        ):
            base = f"http://127.0.0.1:{port}"

            async def timed(url: str) -> tuple[float, int, int]:
                t0 = time.perf_counter()
                async with session.get(base + url) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (url, resp.status, body[:200])
                return time.perf_counter() - t0, len(body), resp.status

            for name, url in queries.items():
                await timed(url)  # warm the page cache
                times, size = [], 0
                for _ in range(repeats):
                    t, size, _ = await timed(url)
                    times.append(t)
                doc = json.loads(await (await session.get(base + url)).read())
                results[f"search_{name}"] = {**p95(times), "total": doc["total"], "bytes": size}
            await timed(f"/api/lots/{big}")
            times = []
            for _ in range(repeats):
                t, size, _ = await timed(f"/api/lots/{big}")
                times.append(t)
            results["lot_api_5000_readings_200_weighments"] = {**p95(times), "bytes": size}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lots", type=int, default=50_000)
    parser.add_argument("--readings", type=int, default=20)
    parser.add_argument("--weighments", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    end_ns = 1_796_000_000 * NS
    with tempfile.TemporaryDirectory(prefix="bench-lots-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "lots-records.sqlite3"
        store = LotRecords.open(path, thresholds=Thresholds(default_pct=12.5))
        t0 = time.perf_counter()
        rate = build(store, args.lots, args.readings, args.weighments, end_ns)
        build_s = time.perf_counter() - t0
        used = store.used_bytes()
        big = big_lot(store, end_ns)
        store.close()
        file_bytes = path.stat().st_size
        results = asyncio.run(measure(path, tmp, args.repeats, end_ns, big))
        doc = {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
            },
            "lots": args.lots,
            "readings_per_lot": args.readings,
            "weighments_per_lot": args.weighments,
            "build_s": round(build_s, 1),
            "write_records_per_s": round(rate),
            "db_bytes_in_use": used,
            "db_file_bytes_with_big_lot": file_bytes,
            "bytes_per_lot": round(used / args.lots),
            "bytes_per_reading_with_ticket": round(bytes_per_reading(tmp, audit=True), 1),
            "bytes_per_reading_without_ticket": round(bytes_per_reading(tmp, audit=False), 1),
            **results,
        }
    print(json.dumps(doc, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
