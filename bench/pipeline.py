"""Pipeline benchmark: M simulated meters at R readings/s → agent → Mosquitto + InfluxDB.

Runs the real agent process against a private Mosquitto and influxd on loopback
(the same fixtures the tests use) and prints one JSON document:

* ``sent``/``received_mqtt``/``in_influx``/``lost``: readings written to the ptys
  during the steady phase and what arrived (a reading counts as lost if it is
  missing from InfluxDB or MQTT at the end);
* ``latency_ms``: p50/p99/max from the serial write (simulator side, after
  ``write`` returned) to the MQTT subscriber's ``on_message``;
* ``cpu_us_per_reading``: agent process CPU time (user + system) over the steady
  phase divided by the readings it accepted;
* ``peak_rss_mb``: the agent's VmHWM at the end;
* ``outage``: readings accepted during an InfluxDB outage of ``--outage`` s and
  the drain rate once it is back;
* ``bulk_drain``: a pre-filled backlog of ``--bulk`` readings delivered to
  InfluxDB by a fresh agent, in readings/s.

Usage: ``python bench/pipeline.py [--meters 8] [--rate 10] [--duration 60]
[--outage 60] [--bulk 200000]``. Not a test: numbers go in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.outbox.stats import read_stats  # noqa: E402
from coffee_telemetry.agent.outbox.store import open_outbox  # noqa: E402
from coffee_telemetry.agent.readings import Stamper  # noqa: E402
from coffee_telemetry.agent.sinks.lineprotocol import encode_line  # noqa: E402
from coffee_telemetry.simulators.moisture import TicketMeterSim  # noqa: E402
from coffee_telemetry.simulators.pty import PtyPort  # noqa: E402
from tests.integration.harness import AgentProcess, DeviceSpec, write_site_config  # noqa: E402
from tests.services.influxd import InfluxServer  # noqa: E402
from tests.services.mosquitto import MosquittoServer  # noqa: E402


class Subscriber:
    """Receive readings and note when each arrived (ns)."""

    def __init__(self, port: int, prefix: str) -> None:
        self.arrivals: dict[tuple[str, str], int] = {}
        self.count = 0
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{prefix}")
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.subscribe(f"{prefix}/+/+/reading", qos=1)
        client.loop_start()
        self.client = client

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time_ns()
        doc = json.loads(msg.payload)
        sample = doc["fields"].get("sample_id")
        if sample is not None:
            self.arrivals.setdefault((doc["device"], str(sample)), now)
        self.count += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def influx_count(influx: InfluxServer, db: str) -> int:
    rows = influx.query(db, 'SELECT COUNT("moisture_pct") FROM "moisture"')
    return int(str(rows[0]["count"])) if rows else 0


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_for(cond: object, timeout_s: float) -> bool:
    assert callable(cond)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.1)
    return bool(cond())


def with_settings(toml: str, settings: list[str]) -> str:
    """The site file with ``section.key=value`` settings (TOML values) added."""
    for setting in settings:
        key, _, value = setting.partition("=")
        section, _, name = key.rpartition(".")
        header = f"[{section}]\n"
        line = f"{name} = {value}\n"
        if header not in toml:
            toml += header + line
            continue
        start = toml.index(header) + len(header)
        end = toml.find("\n[", start)
        end = len(toml) if end < 0 else end + 1
        # The setting replaces the harness's own value for the key, if it wrote one.
        body = "".join(
            kept
            for kept in toml[start:end].splitlines(keepends=True)
            if kept.partition("=")[0].strip() != name
        )
        toml = toml[:start] + line + body + toml[end:]
    return toml


def with_meters(toml: str) -> str:
    """The site file with every device's instrument and calibration (``--meter``)."""
    meter = (
        '[devices.meter]\nmake = "Gehaka"\nmodel = "G650"\nserial = "SN-0001"\n'
        'method = "ISO 6673-indexed"\n[devices.meter.calibration]\n'
        'date = 2026-03-10\ncertificate = "RBC-0001"\noffset_pct = 0.1\n'
    )
    blocks = toml.split("[[devices]]\n")
    return blocks[0] + "".join(
        "[[devices]]\n" + block.replace("\n[", "\n" + meter + "[", 1)
        if "\n[" in block
        else "[[devices]]\n" + block + meter
        for block in blocks[1:]
    )


def without_features(toml: str, features: str) -> str:
    """The site file with the named features (``history,alerts,api``) turned off."""
    for feature in filter(None, features.split(",")):
        if feature == "api":
            toml = toml.replace("[api]\n", "[api]\nenabled = false\n")
        elif feature in ("history", "alerts"):
            toml += f"[{feature}]\nenabled = false\n"
        else:
            raise SystemExit(f"--without: unknown feature {feature!r}")
    return toml


async def steady_and_outage(
    args: argparse.Namespace, tmp: Path, cleanup: contextlib.ExitStack
) -> dict[str, object]:
    broker = MosquittoServer(tmp / "mosquitto")
    broker.start()
    cleanup.callback(broker.stop)
    (tmp / "influxd").mkdir()
    influx = InfluxServer(tmp / "influxd")
    influx.start()
    cleanup.callback(influx.stop)
    influx.create_database("bench")
    ports = {f"m{i}": PtyPort(link=tmp / "dev" / f"m{i}") for i in range(args.meters)}
    (tmp / "dev").mkdir(exist_ok=True)
    for port in ports.values():
        port.open()
    data_dir = tmp / "data"
    config = write_site_config(
        tmp / "site.toml",
        data_dir=data_dir,
        devices=[DeviceSpec(name, "moisture.ticket", port.path) for name, port in ports.items()],
        mqtt_port=broker.port,
        prefix="bench",
        influx_url=influx.url,
        database="bench",
        flush_interval_s=1.0,
    )
    text = config.read_text().replace('log_level = "debug"', 'log_level = "warning"')
    text = text.replace("[agent]\n", f'[agent]\nevent_loop = "{args.event_loop}"\n', 1)
    if args.meter:
        text = with_meters(text)
    config.write_text(with_settings(without_features(text, args.without), args.set))
    agent = AgentProcess(config, tmp / "agent.log")
    agent.start()
    cleanup.callback(agent.stop)
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    sub = Subscriber(broker.port, "bench")
    await asyncio.sleep(3.0)  # ports opened, MQTT connected
    sims = {name: TicketMeterSim(port) for name, port in ports.items()}
    sent: dict[tuple[str, str], int] = {}

    async def meter(name: str, sim: TicketMeterSim, until: float) -> None:
        period = 1.0 / args.rate
        next_at = time.monotonic()
        i = 0
        while time.monotonic() < until:
            s = await sim.emit(moisture_pct=round(10.0 + (i % 40) / 10, 1))
            if s is not None and s.sample_id is not None:
                sent[(name, s.sample_id)] = s.ts_ns
            i += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    cpu0 = proc.cpu_times()
    accepted0 = read_stats(data_dir / "outbox.sqlite3").last_id
    until = time.monotonic() + args.duration
    await asyncio.gather(*(meter(n, s, until) for n, s in sims.items()))
    await wait_for(lambda: sub.count >= len(sent), 30)
    await wait_for(lambda: influx_count(influx, "bench") >= len(sent), 30)
    cpu1 = proc.cpu_times()
    accepted1 = read_stats(data_dir / "outbox.sqlite3").last_id
    accepted = accepted1 - accepted0
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    latencies = [(sub.arrivals[key] - ts) / 1e6 for key, ts in sent.items() if key in sub.arrivals]
    in_influx = influx_count(influx, "bench")
    steady = {
        "sent": len(sent),
        "accepted": accepted,
        "received_mqtt": len([k for k in sent if k in sub.arrivals]),
        "in_influx": in_influx,
        "lost": len(sent) - min(len([k for k in sent if k in sub.arrivals]), in_influx),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies), 2) if latencies else None,
            "mean": round(statistics.fmean(latencies), 2) if latencies else None,
        },
        "cpu_us_per_reading": round(cpu_s / max(1, accepted) * 1e6, 1),
    }

    outage: dict[str, object] = {}
    if args.outage > 0:
        before = influx_count(influx, "bench")
        influx.stop()
        until = time.monotonic() + args.outage
        await asyncio.gather(*(meter(n, s, until) for n, s in sims.items()))
        total = len(sent)
        backlog = read_stats(data_dir / "outbox.sqlite3").sinks
        influx.start()
        t0 = time.monotonic()
        await wait_for(lambda: influx_count(influx, "bench") >= total, 120)
        drain_s = time.monotonic() - t0
        outage = {
            "outage_s": args.outage,
            "backlog_at_restart": {b.sink: b.backlog for b in backlog},
            "readings_drained": total - before,
            "drain_s_including_influx_start": round(drain_s, 2),
            "all_in_influx": influx_count(influx, "bench") == total,
        }
    peak_rss = vm_hwm_mb(proc.pid)
    agent.stop()
    sub.close()
    for port in ports.values():
        port.close()
    broker.stop()
    influx.stop()
    return {"steady": steady, "peak_rss_mb": round(peak_rss, 1), "outage": outage}


async def bulk_drain(
    args: argparse.Namespace, tmp: Path, cleanup: contextlib.ExitStack
) -> dict[str, object]:
    """Fill an outbox with ``--bulk`` readings, then time a fresh agent draining it."""
    (tmp / "influxd-bulk").mkdir()
    influx = InfluxServer(tmp / "influxd-bulk")
    influx.start()
    cleanup.callback(influx.stop)
    influx.create_database("bulk")
    data_dir = tmp / "bulk-data"
    stamper = Stamper()
    # As the agent does with an InfluxDB sink configured: lines rendered at acceptance.
    async with open_outbox(
        data_dir / "outbox.sqlite3", sinks=["influx"], line_encoder=encode_line
    ) as outbox:
        chunk = 5000
        for start in range(0, args.bulk, chunk):
            await outbox.accept(
                [
                    stamper.stamp(
                        device=f"m{i % 16}",
                        measurement="moisture",
                        fields={"moisture_pct": 10.0 + (i % 40) / 10, "sample_id": f"{i:08d}"},
                        tags={"site": "bench", "device": f"m{i % 16}", "station": "s"},
                    )
                    for i in range(start, min(args.bulk, start + chunk))
                ]
            )
    config = write_site_config(
        tmp / "bulk.toml",
        data_dir=data_dir,
        devices=[],
        mqtt_port=None,
        prefix="bench",
        influx_url=influx.url,
        database="bulk",
        flush_interval_s=1.0,
    )
    config.write_text(config.read_text().replace('log_level = "debug"', 'log_level = "warning"'))
    agent = AgentProcess(config, tmp / "bulk-agent.log")
    t0 = time.monotonic()
    agent.start()
    cleanup.callback(agent.stop)
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    await wait_for(lambda: influx_count(influx, "bulk") >= args.bulk, 600)
    elapsed = time.monotonic() - t0
    cpu = proc.cpu_times()
    peak = vm_hwm_mb(proc.pid)
    agent.stop()
    influx.stop()
    return {
        "readings": args.bulk,
        "seconds_including_agent_start": round(elapsed, 2),
        "readings_per_s": round(args.bulk / elapsed),
        "agent_cpu_s": round(cpu.user + cpu.system, 2),
        "agent_peak_rss_mb": round(peak, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="readings/s per meter")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--bulk", type=int, default=200_000)
    parser.add_argument(
        "--without", default="", help="features to turn off, e.g. history,alerts,api"
    )
    parser.add_argument(
        "--meter", action="store_true", help="every meter with its calibration record"
    )
    parser.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a site setting, e.g. outbox.sync_interval_s=5 or outbox.synchronous='\"full\"'",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coffee-bench-") as tmp_name:
        tmp = Path(tmp_name)
        result: dict[str, object] = {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": psutil.cpu_count(),
                "python": platform.python_version(),
            },
            "params": vars(args),
        }
        # Services are stopped however the run ends (stop() is idempotent).
        with contextlib.ExitStack() as cleanup:
            result.update(await steady_and_outage(args, tmp, cleanup))
            if args.bulk:
                result["bulk_drain"] = await bulk_drain(args, tmp, cleanup)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
