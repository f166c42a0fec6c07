"""What one point costs InfluxDB: the agent's moisture points with and without the ticket text.

Renders the points the agent writes at 16 meters x 200 tickets/s (real tickets printed by
the simulator's encoder, parsed by the ticket driver, stamped and rendered by the agent's
own line encoder), posts them to a private influxd in one-second batches, gzip-compressed,
as the InfluxDB sink does, and reports influxd's CPU time (user + system, from the start of
the first write until it has been idle for ``--settle`` s), the bytes posted and the bytes
on disk, per variant:

* ``as-is``: every point as the agent renders it;
* ``no-audit``: the same points without the ``audit`` string field (the printed ticket);
* ``numbers-only``: without any string field (``audit``, ``sample_id``, ``meter_time``),
  close to what a hand-made flow writes.

Usage: ``python bench/influx_points.py [--meters 16] [--rate 200] [--seconds 30]``.
Each variant runs on a fresh influxd, in turn. Not a test: numbers go in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.readings import Reading, Stamper  # noqa: E402
from coffee_telemetry.agent.sinks.lineprotocol import encode_line  # noqa: E402
from coffee_telemetry.drivers.events import Measurement  # noqa: E402
from coffee_telemetry.drivers.moisture_ticket import (  # noqa: E402
    TicketOptions,
    TicketParser,
    encode_ticket,
)
from tests.services.influxd import InfluxServer  # noqa: E402


def tickets(meters: int, rate: float, seconds: float) -> list[list[Reading]]:
    """One list of readings per second of load, as the agent would stamp them."""
    parser = TicketParser(TicketOptions())
    parser.tick(0.0)  # the port opened; tickets come later, after idle gaps
    now = 0.0
    stamper = Stamper(clock_ns=time.time_ns)
    start = time.time_ns()
    per_second: list[list[Reading]] = []
    step_ns = int(1e9 / rate)
    for second in range(int(seconds)):
        batch: list[Reading] = []
        for i in range(int(rate)):
            for m in range(meters):
                raw = encode_ticket(
                    moisture_pct=10.0 + (i % 40) / 10,
                    product="cafe-verde",
                    temperature_c=24.5,
                    bulk_density_kg_hl=38.2,
                    sample_id=f"{m + 1:02d}{second:03d}{i:04d}",
                    lot=f"L-{second:04d}",
                    meter_time="07/12/2026 10:41:54",
                )
                now += 5.0
                parser.receive_data(raw, now)
                parser.tick(now + 3.0)
                (event,) = [e for e in parser.events() if isinstance(e, Measurement)]
                device = f"umid-{m + 1}"
                batch.append(
                    stamper.stamp(
                        device=device,
                        measurement=event.measurement,
                        fields=event.fields,
                        tags={
                            "site": "ourofino",
                            "device": device,
                            "station": "recepcao",
                            "product": "cafe-verde",
                            "lot": f"L-{second:04d}",
                        },
                        audit=event.audit,
                        ts_ns=start + second * 1_000_000_000 + i * step_ns + m,
                    )
                )
        per_second.append(batch)
    return per_second


def run(variant: str, seconds_of_load: list[list[Reading]], settle_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="influx-points-") as tmp:
        server = InfluxServer(Path(tmp))
        server.start()
        try:
            server.create_database("bench")
            assert server.pid is not None
            proc = psutil.Process(server.pid)
            bodies = []
            raw_bytes = 0
            points = 0
            for batch in seconds_of_load:
                if variant == "no-audit":
                    batch = [dataclasses.replace(r, audit=None) for r in batch]
                elif variant == "numbers-only":
                    batch = [
                        dataclasses.replace(
                            r,
                            audit=None,
                            fields={k: v for k, v in r.fields.items() if not isinstance(v, str)},
                        )
                        for r in batch
                    ]
                text = "\n".join(encode_line(r) for r in batch).encode()
                raw_bytes += len(text)
                points += len(batch)
                bodies.append(gzip.compress(text, compresslevel=1, mtime=0))
            time.sleep(1.0)
            cpu0 = sum(proc.cpu_times()[:2])
            t0 = time.monotonic()
            for body in bodies:
                request = urllib.request.Request(
                    f"{server.url}/write?db=bench&precision=ns",
                    data=body,
                    headers={"Content-Encoding": "gzip"},
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=60) as answer:
                    assert answer.status == 204
            wrote_s = time.monotonic() - t0
            time.sleep(settle_s)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            count = server.query("bench", 'SELECT COUNT("seq") FROM "moisture"')
            disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        finally:
            server.stop()
    return {
        "variant": variant,
        "points": points,
        "stored": count[0]["count"] if count else 0,
        "influxd_cpu_s": round(cpu, 2),
        "influxd_cpu_us_per_point": round(cpu / points * 1e6, 1),
        "line_bytes_per_point": round(raw_bytes / points, 1),
        "write_s": round(wrote_s, 2),
        "disk_bytes_per_point": round(disk / points, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    load = tickets(args.meters, args.rate, args.seconds)
    variants = ("as-is", "no-audit", "numbers-only")
    results = [run(v, load, args.settle) for _ in range(args.repeat) for v in variants]
    print(json.dumps({"params": vars(args), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
