"""Central load test: N sites, 10 devices each, 1 reading / 2 s -> NATS (3 nodes) -> InfluxDB.

Starts, on loopback, a three-node NATS cluster (the test fixture, stream with three
replicas), a private influxd and two ``coffee-telemetry recorder`` processes; then N
lightweight sites in this process, each with its own NATS connection and site
credentials, publishing the agent's exact payloads through the agent's own
``NatsSink`` (``Nats-Msg-Id``, PubAck awaited), plus ``--agents`` real agent processes
(default 1), each reading two simulated ticket meters on ptys, one ticket each per 2 s.
Prints one JSON document:

* ``sent``/``in_influx``/``lost``: readings acknowledged by the stream during the run
  and the ones found in InfluxDB at the end (counted by site, device and seq);
* ``readings_per_s``: acknowledged readings per second, end to end;
* ``lag_ms``: p50/p99/max from the PubAck to the first poll of InfluxDB that sees the
  point (the poll runs every ``--poll`` s: that is the resolution);
* ``real_agents``: the real agents' tickets sent, lost, and the lag from the meter's
  write to InfluxDB;
* ``recorder_cpu_us_per_reading``: both recorders' CPU time (user + system) over the
  run divided by the readings written;
* ``rss_mb``: NATS nodes and recorders at the end.

With ``--catchup-hours H`` it measures a catch-up instead: every site reconnects at
once with H hours of readings in its outbox (stamped in the past, delivered in the
agent's batches of 100, each kept until acknowledged); it reports the time until the
last PubAck and until InfluxDB holds everything, and the stream's peak backlog.

Usage: ``python bench/central.py --sites 5 [--duration 30] [--poll 0.5]`` or
``python bench/central.py --sites 5 --catchup-hours 1``.
Not a test: numbers go in the README ("Central").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.health import Health  # noqa: E402
from coffee_telemetry.agent.outbox.sink import Record  # noqa: E402
from coffee_telemetry.agent.readings import Stamper, encode_reading  # noqa: E402
from coffee_telemetry.agent.sinks.nats import NatsSink  # noqa: E402
from coffee_telemetry.simulators.moisture import TicketMeterSim  # noqa: E402
from coffee_telemetry.simulators.pty import PtyPort  # noqa: E402
from tests.integration.harness import AgentProcess, DeviceSpec, write_site_config  # noqa: E402
from tests.services.influxd import InfluxServer  # noqa: E402
from tests.services.nats_cluster import (  # noqa: E402
    RECORDER_PASSWORD,
    RECORDER_USER,
    NatsCluster,
    site_password,
)

DEVICES = 10
PERIOD_S = 2.0
DATABASE = "central"


class Site:
    """One site: 10 devices, one reading each every 2 s, through the agent's NatsSink."""

    def __init__(self, name: str, cluster: NatsCluster) -> None:
        self.name = name
        self.sink = NatsSink(
            servers=cluster.urls,
            site=name,
            health=Health(),
            username=name,
            password=site_password(name),
            epoch="bench",
            reconnect_max_s=5.0,
        )
        self.stamper = Stamper()
        self.acked: dict[tuple[str, str, int], float] = {}
        self.failures = 0
        self._next_id = 1

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        connection = asyncio.create_task(self.sink.connection_loop())
        try:
            tick = loop.time()
            while tick < until:
                records = []
                for d in range(DEVICES):
                    device = f"umid-{d + 1:02d}"
                    r = self.stamper.stamp(
                        device=device,
                        measurement="moisture",
                        fields={"moisture_pct": 11.0 + d / 10},
                        tags={"site": self.name, "device": device, "station": "recepcao"},
                    )
                    records.append(Record(id=self._next_id, payload=encode_reading(r), reading=r))
                    self._next_id += 1
                while True:  # as the agent's delivery loop: keep the batch until acknowledged
                    try:
                        await self.sink.deliver(records)
                        break
                    except Exception:
                        self.failures += 1
                        await asyncio.sleep(0.5)
                now = time.time()
                for rec in records:
                    self.acked[(self.name, rec.device, rec.reading.seq)] = now
                tick += PERIOD_S
                await asyncio.sleep(max(0.0, tick - loop.time()))
        finally:
            await self.sink.close()
            await connection


async def catch_up(site: Site, hours: float, batch: int) -> tuple[int, float]:
    """Deliver an hour's backlog (10 devices, 1 reading / 2 s, stamped in the past) as the
    agent's delivery loop would after an outage: batches in order, each kept until
    acknowledged. Returns the readings delivered and when the last PubAck came."""
    now_ns = time.time_ns()
    steps = int(hours * 3600 / PERIOD_S)
    clock = iter(range(now_ns - steps * 2_000_000_000, now_ns, 200_000_000))
    stamper = Stamper(clock_ns=lambda: next(clock))
    records: list[Record] = []
    for _ in range(steps):
        for d in range(DEVICES):
            device = f"umid-{d + 1:02d}"
            r = stamper.stamp(
                device=device,
                measurement="moisture",
                fields={"moisture_pct": 11.0 + d / 10},
                tags={"site": site.name, "device": device, "station": "recepcao"},
            )
            records.append(Record(id=len(records) + 1, payload=encode_reading(r), reading=r))
    connection = asyncio.create_task(site.sink.connection_loop())
    try:
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            while True:
                try:
                    await site.sink.deliver(chunk)
                    break
                except Exception:
                    site.failures += 1
                    await asyncio.sleep(0.5)
        return len(records), time.time()
    finally:
        await site.sink.close()
        await connection


async def bench_catch_up(
    args: argparse.Namespace, cluster: NatsCluster, influx: InfluxServer, names: list[str]
) -> dict[str, object]:
    """All sites reconnect at once, each with ``--catchup-hours`` of readings to deliver."""
    sites = [Site(n, cluster) for n in names]
    since_ns = time.time_ns() - int((args.catchup_hours * 3600 + 60) * 1e9)
    nc = await nats.connect(cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    js = nc.jetstream()
    peak_pending = 0

    async def watch() -> None:
        nonlocal peak_pending
        while True:
            info = await js.stream_info("COFFEE")
            peak_pending = max(peak_pending, int(info.state.messages))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    t0 = time.time()
    done = await asyncio.gather(*(catch_up(s, args.catchup_hours, 100) for s in sites))
    total = sum(n for n, _ in done)
    last_ack = max(t for _, t in done)

    def count() -> int:
        rows = influx.query(
            DATABASE, f'SELECT count("seq") FROM "moisture" WHERE time >= {since_ns}'
        )
        return int(str(rows[0]["count"])) if rows else 0

    while count() < total and time.time() - last_ack < 600:
        await asyncio.sleep(0.5)
    t_end = time.time()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await nc.close()
    return {
        "catch_up_sites": len(sites),
        "backlog_hours": args.catchup_hours,
        "readings": total,
        "in_influx": count(),
        "publish_retries": sum(s.failures for s in sites),
        "published_in_s": round(last_ack - t0, 1),
        "drained_to_influx_in_s": round(t_end - t0, 1),
        "end_to_end_readings_per_s": round(total / (t_end - t0), 1),
        "peak_stream_pending": peak_pending,
        "influx_behind_last_puback_s": round(t_end - last_ack, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
    }


class AgentSite:
    """A real agent process with two simulated ticket meters, one ticket each per 2 s."""

    METERS = ("umid-1", "umid-2")

    def __init__(self, name: str, cluster: NatsCluster, tmp: Path) -> None:
        self.name = name
        root = tmp / name
        (root / "dev").mkdir(parents=True)
        self.ports = {m: PtyPort(link=root / "dev" / m) for m in self.METERS}
        for port in self.ports.values():
            port.open()
        config = write_site_config(
            root / "site.toml",
            data_dir=root / "data",
            devices=[
                DeviceSpec(m, "moisture.ticket", str(root / "dev" / m), "recepcao")
                for m in self.METERS
            ],
            mqtt_port=None,
            prefix="coffee",
            influx_url=None,
            site=name,
        )
        secret = root / "nats.pw"
        secret.write_text(site_password(name))
        with config.open("a") as f:
            servers = ", ".join(f'"{u}"' for u in cluster.urls)
            f.write(
                f'[sinks.nats]\nservers = [{servers}]\nusername = "{name}"\n'
                f'password_file = "{secret}"\n'
            )
        self.agent = AgentProcess(config, root / "agent.log")
        self.emitted: dict[tuple[str, str, int], float] = {}

    async def start(self) -> None:
        self.agent.start()
        deadline = time.monotonic() + 60
        while "Connected to NATS" not in self.agent.log_tail(100_000):
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.name} did not connect:\n{self.agent.log_tail()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # its ports are open

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        meters = {m: TicketMeterSim(p, product="CAFE") for m, p in self.ports.items()}
        tick, seq = loop.time(), 0
        while tick < until:
            seq += 1
            for device, meter in meters.items():
                if await meter.emit(moisture_pct=11.5) is not None:
                    self.emitted[(self.name, device, seq)] = time.time()
            tick += PERIOD_S
            await asyncio.sleep(max(0.0, tick - loop.time()))

    def stop(self) -> None:
        self.agent.stop()
        for port in self.ports.values():
            port.close()


def start_recorder(
    cluster: NatsCluster, influx: InfluxServer, tmp: Path, i: int
) -> subprocess.Popen[bytes]:
    secret = tmp / "recorder.pw"
    secret.write_text(RECORDER_PASSWORD)
    log = (tmp / f"recorder{i}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "coffee_telemetry.agent.cli", "recorder",
            "--nats", ",".join(cluster.urls), "--nats-user", RECORDER_USER,
            "--nats-password-file", str(secret), "--influx-url", influx.url,
            "--influx-database", DATABASE, "--create-database", "--stream-max-mb", "256",
        ],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip


def seen_in_influx(influx: InfluxServer, since_ns: int) -> set[tuple[str, str, int]]:
    rows = influx.query(
        DATABASE, f'SELECT "seq", "site", "device" FROM "moisture" WHERE time >= {since_ns}'
    )
    return {(str(r["site"]), str(r["device"]), int(str(r["seq"]))) for r in rows}


def cpu_s(procs: list[psutil.Process]) -> float:
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in procs))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-central-"))
    names = [f"site-{i:04d}" for i in range(1, args.sites + 1)]
    agent_names = [f"agent-{i:04d}" for i in range(1, args.agents + 1)]
    (tmp / "nats").mkdir()
    cluster = NatsCluster(tmp / "nats", sites=names + agent_names)
    cluster.start()
    (tmp / "influx").mkdir()
    influx = InfluxServer(tmp / "influx")
    influx.start()
    influx.create_database(DATABASE)
    recorders = [start_recorder(cluster, influx, tmp, i) for i in (1, 2)]
    rec_procs = [psutil.Process(p.pid) for p in recorders]
    agents: list[AgentSite] = []
    try:
        # Measure from when both recorders record (they create the streams at start).
        logs = [tmp / f"recorder{i}.log" for i in (1, 2)]
        deadline = time.monotonic() + 120
        while not all("Recording" in log.read_text() for log in logs):
            if time.monotonic() > deadline:
                raise RuntimeError("the recorders did not start; see " + str(tmp))
            await asyncio.sleep(0.2)
        if args.catchup_hours > 0:
            return await bench_catch_up(args, cluster, influx, names)
        sites = [Site(n, cluster) for n in names]
        agents += [AgentSite(n, cluster, tmp) for n in agent_names]
        for agent in agents:
            await agent.start()
        loop = asyncio.get_running_loop()
        start_ns = time.time_ns()
        cpu0 = cpu_s(rec_procs)
        t0 = loop.time()
        until = t0 + args.duration
        first_seen: dict[tuple[str, str, int], float] = {}

        async def poll() -> None:
            while True:
                now = time.time()
                for key in seen_in_influx(influx, start_ns) - first_seen.keys():
                    first_seen[key] = now
                await asyncio.sleep(args.poll)

        poller = asyncio.create_task(poll())
        await asyncio.gather(*(s.run(until) for s in sites), *(a.run(until) for a in agents))
        elapsed = loop.time() - t0
        acked = {k: v for s in sites for k, v in s.acked.items()}
        emitted = {k: v for a in agents for k, v in a.emitted.items()}
        deadline = time.monotonic() + 60
        while (
            not (acked.keys() | emitted.keys()) <= first_seen.keys() and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.5)
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        cpu = cpu_s(rec_procs) - cpu0
        agent_lags = [(first_seen[k] - t) * 1000 for k, t in emitted.items() if k in first_seen]
        found = seen_in_influx(influx, start_ns)
        lags = [(first_seen[k] - t) * 1000 for k, t in acked.items() if k in first_seen]
        steady_from = start_ns / 1e9 + args.warmup
        steady = [
            (first_seen[k] - t) * 1000
            for k, t in acked.items()
            if k in first_seen and t >= steady_from
        ]
        rss = {
            "nats_nodes": [
                round(psutil.Process(n.pid).memory_info().rss / 2**20, 1)
                for n in cluster.nodes
                if n.pid is not None
            ],
            "recorders": [round(p.memory_info().rss / 2**20, 1) for p in rec_procs],
        }
        return {
            "sites": args.sites,
            "devices_per_site": DEVICES,
            "period_s": PERIOD_S,
            "duration_s": round(elapsed, 1),
            "sent": len(acked),
            "in_influx": len(found & acked.keys()),
            "lost": len(acked.keys() - found),
            "publish_retries": sum(s.failures for s in sites),
            "readings_per_s": round(len(acked) / elapsed, 1),
            "lag_ms": {
                "p50": round(statistics.median(lags), 1) if lags else None,
                "p99": round(percentile(lags, 0.99), 1),
                "max": round(max(lags), 1) if lags else None,
                "poll_resolution_ms": args.poll * 1000,
            },
            "lag_ms_after_warmup": {
                "warmup_s": args.warmup,
                "p50": round(statistics.median(steady), 1) if steady else None,
                "p99": round(percentile(steady, 0.99), 1),
            },
            "real_agents": {
                "agents": len(agents),
                "meters_each": len(AgentSite.METERS),
                "sent": len(emitted),
                "lost": len(emitted.keys() - found),
                "lag_ms_p50_meter_to_influx": round(statistics.median(agent_lags), 1)
                if agent_lags
                else None,
            },
            "recorder_cpu_us_per_reading": round(cpu / max(1, len(found)) * 1e6, 1),
            "rss_mb": rss,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        }
    finally:
        for agent in agents:
            agent.stop()
        for p in recorders:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        influx.stop()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--agents", type=int, default=1, help="real agent processes too")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--catchup-hours",
        type=float,
        default=0.0,
        help="instead: every site reconnects at once with this many hours of backlog",
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="s left out of lag_ms_after")
    parser.add_argument("--poll", type=float, default=0.5, help="InfluxDB poll interval, s")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
