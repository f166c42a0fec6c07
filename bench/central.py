"""Central load test: N sites, 10 devices each, 1 reading / 2 s -> NATS (3 nodes) -> InfluxDB.

Starts, on loopback, a three-node NATS cluster (the test fixture, stream with three
replicas), a private influxd and two ``coffee-telemetry recorder`` processes; then N
lightweight sites in this process, each with its own NATS connection and site
credentials, publishing the agent's exact payloads through the agent's own
``NatsSink`` (``Nats-Msg-Id``, PubAck awaited, heartbeats into the status bucket),
their 2 s ticks spread over the period as real sites' are, plus ``--agents`` real
agent processes (default 1), each reading two simulated ticket meters on ptys, one
ticket each per 2 s. Prints one JSON document per N:

* ``scheduled``/``sent``/``in_influx``/``lost``: readings due by the schedule, those
  acknowledged by the stream, those found in InfluxDB at the end (counted by site,
  device and seq) and the acknowledged ones missing there; ``behind_schedule`` is
  what the publishers could not send in time (this process saturated);
* ``readings_per_s``: acknowledged readings per second, end to end;
* ``lag_ms``: p50/p99/max from the PubAck to the first poll of InfluxDB that sees the
  point, over ``--lag-sites`` sites spread over the N and the real agents (the poll
  runs every ``--poll`` s: that is the resolution);
* ``real_agents``: the real agents' tickets sent, lost, and the lag from the meter's
  write to InfluxDB;
* ``recorder_cpu_us_per_reading``: both recorders' CPU time (user + system) over the
  run divided by the readings written;
* ``cpu_pct``: CPU of each part over the run, in % of one core (the machine has
  ``os.cpu_count()`` cores): NATS nodes, recorders, influxd, this process (the
  simulated sites); what nears its ceiling first is the bottleneck;
* ``rss_mb``: NATS nodes, recorders and influxd at the end;
* ``overview_queries``: every panel query of the cooperative overview dashboard run
  on the filled InfluxDB (all sites): its time in ms and its rows.

``--sites`` takes a list (``50,200,1000``): one run each, on a fresh cluster and
database, and a last line with ``highest_zero_loss_sites`` (no loss, nothing behind).

With ``--catchup-hours H`` it measures a catch-up instead: each site's outbox (a real
SQLite outbox, ``agent.outbox``) is prefilled with H hours of readings stamped in the
past while the site is cut off; then every site reconnects at once and the agent's
own delivery loop (``agent.outbox.delivery``, batches of 100, each kept until its
PubAcks) drains it through the ``NatsSink``. It reports the time until every
outbox is empty and until InfluxDB holds everything, the stream's peak backlog and
peak lag (the age of the oldest message not yet written, sampled every 0.5 s).

Usage (each is a benchmark, not a test: numbers go in the README, "Central")::

    python bench/central.py --sites 2 --duration 20          # smoke
    python bench/central.py --sites 50,200,1000 --duration 60
    python bench/central.py --sites 50 --catchup-hours 1
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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.health import Health  # noqa: E402
from coffee_telemetry.agent.outbox.delivery import deliver_loop  # noqa: E402
from coffee_telemetry.agent.outbox.sink import Record  # noqa: E402
from coffee_telemetry.agent.outbox.store import open_outbox  # noqa: E402
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading  # noqa: E402
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


def site_sink(name: str, cluster: NatsCluster, epoch: str = "bench") -> NatsSink:
    sink = NatsSink(
        servers=cluster.urls,
        site=name,
        health=Health(),
        username=name,
        password=site_password(name),
        epoch=epoch,
        reconnect_max_s=5.0,
    )
    return sink


def site_reading(stamper: Stamper, site: str, d: int) -> Reading:
    device = f"umid-{d + 1:02d}"
    return stamper.stamp(
        device=device,
        measurement="moisture",
        fields={"moisture_pct": 11.0 + d / 10},
        # Three lots in the meters at once, as at a busy intake.
        tags={"site": site, "device": device, "station": "recepcao", "lot": f"L-{d % 3 + 1:03d}"},
    )


class Site:
    """One site: 10 devices, one reading each every 2 s, through the agent's NatsSink."""

    def __init__(self, name: str, cluster: NatsCluster, phase_s: float) -> None:
        self.name = name
        self.phase_s = phase_s
        self.sink = site_sink(name, cluster)
        self.stamper = Stamper()
        self.acked: dict[tuple[str, str, int], float] = {}
        self.failures = 0
        self.scheduled = 0
        self._next_id = 1

    async def run(self, start: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        connection = asyncio.create_task(self.sink.connection_loop())
        try:
            tick = start + self.phase_s
            await asyncio.sleep(max(0.0, tick - loop.time()))
            while tick < until:
                self.scheduled += DEVICES
                records = []
                for d in range(DEVICES):
                    r = site_reading(self.stamper, self.name, d)
                    records.append(Record(id=self._next_id, payload=encode_reading(r), reading=r))
                    self._next_id += 1
                while loop.time() < until + 30:  # as the delivery loop: keep the batch
                    try:
                        await self.sink.deliver(records)
                        break
                    except Exception:
                        self.failures += 1
                        await asyncio.sleep(0.5)
                else:
                    break
                now = time.time()
                for rec in records:
                    self.acked[(self.name, rec.device, rec.reading.seq)] = now
                tick += PERIOD_S
                await asyncio.sleep(max(0.0, tick - loop.time()))
        finally:
            await self.sink.close()
            await connection


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
            "--influx-database", DATABASE, "--create-database", "--stream-max-mb", "512",
        ],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip


@dataclass
class Central:
    """The central side of one run: cluster, influxd, two recorders."""

    tmp: Path
    cluster: NatsCluster
    influx: InfluxServer
    recorders: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def procs(self) -> dict[str, list[psutil.Process]]:
        return {
            "nats_nodes": [psutil.Process(n.pid) for n in self.cluster.nodes if n.pid],
            "recorders": [psutil.Process(p.pid) for p in self.recorders],
            "influxd": [psutil.Process(self.influx.pid)] if self.influx.pid else [],
            "sites_process": [psutil.Process()],
        }


@contextlib.asynccontextmanager
async def central(users: list[str]) -> AsyncIterator[Central]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-central-"))
    (tmp / "nats").mkdir()
    cluster = NatsCluster(tmp / "nats", sites=users)
    cluster.start(timeout_s=120)
    (tmp / "influx").mkdir()
    influx = InfluxServer(tmp / "influx")
    influx.start()
    influx.create_database(DATABASE)
    env = Central(tmp, cluster, influx)
    env.recorders = [start_recorder(cluster, influx, tmp, i) for i in (1, 2)]
    try:
        # Measure from when both recorders record (they create the streams at start).
        logs = [tmp / f"recorder{i}.log" for i in (1, 2)]
        deadline = time.monotonic() + 120
        while not all("Recording" in log.read_text() for log in logs):
            if time.monotonic() > deadline:
                raise RuntimeError("the recorders did not start; see " + str(tmp))
            await asyncio.sleep(0.2)
        yield env
    finally:
        for p in env.recorders:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        influx.stop()
        cluster.stop()


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def rss_mb(procs: list[psutil.Process]) -> list[float]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append(round(p.memory_info().rss / 2**20, 1))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def seen_in_influx(
    influx: InfluxServer, since_ns: int, sites: list[str] | None = None
) -> set[tuple[str, str, int]]:
    where = f"time >= {since_ns}"
    if sites is not None:
        where += ' AND "site" =~ /^(' + "|".join(sites) + ")$/"
    rows = influx.query(DATABASE, f'SELECT "seq", "site", "device" FROM "moisture" WHERE {where}')
    return {(str(r["site"]), str(r["device"]), int(str(r["seq"]))) for r in rows}


def sample(names: list[str], k: int) -> list[str]:
    if k <= 0 or k >= len(names):
        return list(names)
    step = len(names) / k
    return [names[int(i * step)] for i in range(k)]


async def bench_steady(args: argparse.Namespace, n: int) -> dict[str, object]:
    names = [f"site-{i:04d}" for i in range(1, n + 1)]
    agent_names = [f"agent-{i:04d}" for i in range(1, args.agents + 1)]
    async with central(names + agent_names) as env:
        agents: list[AgentSite] = []
        try:
            sites = [Site(name, env.cluster, PERIOD_S * i / n) for i, name in enumerate(names)]
            agents += [AgentSite(a, env.cluster, env.tmp) for a in agent_names]
            for agent in agents:
                await agent.start()
            watched = sample(names, args.lag_sites) + agent_names
            loop = asyncio.get_running_loop()
            procs = env.procs()
            start_ns = time.time_ns()
            cpu0 = {k: cpu_s(v) for k, v in procs.items()}
            t0 = loop.time()
            until = t0 + args.duration
            first_seen: dict[tuple[str, str, int], float] = {}

            async def poll() -> None:
                while True:
                    now = time.time()
                    found = await asyncio.to_thread(seen_in_influx, env.influx, start_ns, watched)
                    for key in found - first_seen.keys():
                        first_seen[key] = now
                    await asyncio.sleep(args.poll)

            poller = asyncio.create_task(poll())
            await asyncio.gather(
                *(s.run(t0, until) for s in sites), *(a.run(until) for a in agents)
            )
            elapsed = loop.time() - t0
            cpu = {k: cpu_s(v) - cpu0[k] for k, v in procs.items()}
            acked = {k: v for s in sites for k, v in s.acked.items()}
            emitted = {k: v for a in agents for k, v in a.emitted.items()}
            watched_set = set(watched)
            wanted = {k for k in acked.keys() | emitted.keys() if k[0] in watched_set}
            deadline = time.monotonic() + 60
            while not wanted <= first_seen.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            found = seen_in_influx(env.influx, start_ns)
            deadline = time.monotonic() + 60
            while not acked.keys() <= found and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                found = seen_in_influx(env.influx, start_ns)
            lags = [(first_seen[k] - t) * 1000 for k, t in acked.items() if k in first_seen]
            steady_from = start_ns / 1e9 + args.warmup
            steady = [
                (first_seen[k] - t) * 1000
                for k, t in acked.items()
                if k in first_seen and t >= steady_from
            ]
            agent_lags = [(first_seen[k] - t) * 1000 for k, t in emitted.items() if k in first_seen]
            overview = await asyncio.to_thread(overview_queries, env.influx)
            written = len(found)
            scheduled = sum(s.scheduled for s in sites)
            return {
                "sites": n,
                "devices_per_site": DEVICES,
                "period_s": PERIOD_S,
                "duration_s": round(elapsed, 1),
                "scheduled": scheduled,
                "sent": len(acked),
                "behind_schedule": scheduled - len(acked),
                "in_influx": len(found & acked.keys()),
                "lost": len(acked.keys() - found),
                "publish_retries": sum(s.failures for s in sites),
                "readings_per_s": round(len(acked) / elapsed, 1),
                "lag_ms": {
                    "sites_sampled": len(watched) - len(agent_names),
                    "p50": percentile(lags, 0.5),
                    "p99": percentile(lags, 0.99),
                    "max": round(max(lags), 1) if lags else None,
                    "poll_resolution_ms": args.poll * 1000,
                },
                "lag_ms_after_warmup": {
                    "warmup_s": args.warmup,
                    "p50": percentile(steady, 0.5),
                    "p99": percentile(steady, 0.99),
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
                "overview_queries": overview,
                "recorder_cpu_us_per_reading": round(cpu["recorders"] / max(1, written) * 1e6, 1),
                "cpu_pct": {k: round(v / elapsed * 100, 1) for k, v in cpu.items()},
                "rss_mb": {k: rss_mb(v) for k, v in procs.items() if k != "sites_process"},
                "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
            }
        finally:
            for agent in agents:
                agent.stop()


OVERVIEW = ROOT / "dashboards" / "grafana" / "json-en" / "cooperative-overview.json"


def overview_queries(influx: InfluxServer) -> dict[str, dict[str, float | int]]:
    """Every panel query of the cooperative overview, all sites: time taken and rows."""
    doc = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    out: dict[str, dict[str, float | int]] = {}
    for panel in doc["panels"]:
        window = "7d" if panel.get("timeFrom") == "7d" else "1h"
        for target in panel.get("targets", []):
            text = (
                str(target["query"])
                .replace("$timeFilter", f"time > now() - {window}")
                .replace("$__interval", "10s")
                .replace("/^$site$/", "/^.*$/")
            )
            t0 = time.perf_counter()
            rows = influx.query(DATABASE, text)
            out[f"{panel['title']} [{target['refId']}]"] = {
                "ms": round((time.perf_counter() - t0) * 1000, 1),
                "rows": len(rows),
            }
    return out


def past_clock(hours: float) -> Iterator[int]:
    """Stamps from ``hours`` ago, 0.2 s apart (10 devices, one reading each per 2 s)."""
    now_ns = time.time_ns()
    steps = int(hours * 3600 / PERIOD_S) * DEVICES
    return iter(range(now_ns - steps * 200_000_000, now_ns, 200_000_000))


async def prefill(path: Path, site: str, hours: float) -> tuple[int, str]:
    """A site's outbox with ``hours`` of readings nobody delivered (the link was down)."""
    clock = past_clock(hours)
    stamper = Stamper(clock_ns=lambda: next(clock))
    total = int(hours * 3600 / PERIOD_S) * DEVICES
    async with open_outbox(path, sinks=["nats"], max_bytes=2 * 1024**3) as outbox:
        for start in range(0, total, 1000):
            chunk = [
                site_reading(stamper, site, i % DEVICES)
                for i in range(start, min(total, start + 1000))
            ]
            await outbox.accept(chunk)
        await outbox.flush()
        return outbox.backlog("nats"), outbox.epoch


async def drain(path: Path, site: str, cluster: NatsCluster) -> tuple[float, int]:
    """Reopen the outbox and deliver it as the agent does; returns (when empty, retries)."""
    async with open_outbox(path, sinks=["nats"], max_bytes=2 * 1024**3) as outbox:
        sink = site_sink(site, cluster, epoch=outbox.epoch)
        health = Health().add_sink("nats")
        stop = asyncio.Event()
        connection = asyncio.create_task(sink.connection_loop())
        loop = asyncio.create_task(deliver_loop(outbox, sink, health=health, stop=stop))
        try:
            while outbox.backlog("nats") > 0:
                await asyncio.sleep(0.1)
            return time.time(), health.failures
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop, 10)
            await sink.close()
            await connection


async def bench_catch_up(args: argparse.Namespace, n: int) -> dict[str, object]:
    """Every site reconnects at once with ``--catchup-hours`` of readings in its outbox."""
    names = [f"site-{i:04d}" for i in range(1, n + 1)]
    outboxes = Path(tempfile.mkdtemp(prefix="bench-outboxes-"))
    t_fill = time.monotonic()
    filled = await asyncio.gather(
        *(prefill(outboxes / f"{name}.sqlite3", name, args.catchup_hours) for name in names)
    )
    total = sum(count for count, _ in filled)
    fill_s = time.monotonic() - t_fill
    since_ns = time.time_ns() - int((args.catchup_hours * 3600 + 60) * 1e9)
    async with central(names) as env:
        nc = await nats.connect(env.cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
        js = nc.jetstream()
        peak_pending = 0
        peak_lag_s = 0.0

        async def watch() -> None:
            nonlocal peak_pending, peak_lag_s
            while True:
                with contextlib.suppress(Exception):
                    info = await js.stream_info("COFFEE")
                    peak_pending = max(peak_pending, int(info.state.messages))
                    if info.state.messages:  # the oldest message not yet written
                        oldest = await js.get_msg("COFFEE", info.state.first_seq)
                        if oldest.time is not None:
                            age = time.time() - _epoch_s(oldest.time)
                            peak_lag_s = max(peak_lag_s, age)
                await asyncio.sleep(0.5)

        def count() -> int:
            rows = env.influx.query(
                DATABASE, f'SELECT count("seq") FROM "moisture" WHERE time >= {since_ns}'
            )
            return int(str(rows[0]["count"])) if rows else 0

        procs = env.procs()
        cpu0 = {k: cpu_s(v) for k, v in procs.items()}
        watcher = asyncio.create_task(watch())
        t0 = time.time()
        done = await asyncio.gather(
            *(drain(outboxes / f"{name}.sqlite3", name, env.cluster) for name in names)
        )
        last_ack = max(t for t, _ in done)
        retries = sum(r for _, r in done)
        while (have := await asyncio.to_thread(count)) < total and time.time() - last_ack < 600:
            await asyncio.sleep(0.5)
        t_end = time.time()
        cpu = {k: cpu_s(v) - cpu0[k] for k, v in procs.items()}
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await nc.close()
        return {
            "catch_up_sites": n,
            "backlog_hours": args.catchup_hours,
            "readings": total,
            "prefill_s": round(fill_s, 1),
            "in_influx": have,
            "lost": total - have,
            "delivery_retries": retries,
            "outboxes_empty_in_s": round(last_ack - t0, 1),
            "drained_to_influx_in_s": round(t_end - t0, 1),
            "end_to_end_readings_per_s": round(total / (t_end - t0), 1),
            "peak_stream_pending": peak_pending,
            "peak_lag_s": round(peak_lag_s, 1),
            "influx_behind_last_puback_s": round(t_end - last_ack, 1),
            "cpu_pct": {k: round(v / (t_end - t0) * 100, 1) for k, v in cpu.items()},
            "rss_mb": {k: rss_mb(v) for k, v in procs.items() if k != "sites_process"},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        }


def _epoch_s(value: object) -> float:
    """A stored message's time (RFC 3339 text or a datetime) as epoch seconds."""
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    from datetime import datetime

    text = str(value)
    if "." in text:  # nanoseconds: keep microseconds for fromisoformat
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        zone = frac[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5", help="N, or a list: 50,200,1000")
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
    parser.add_argument("--lag-sites", type=int, default=20, help="sites whose lag is measured")
    args = parser.parse_args()
    runs = []
    for n in (int(x) for x in str(args.sites).split(",")):
        run = bench_catch_up if args.catchup_hours > 0 else bench_steady
        result = asyncio.run(run(args, n))
        print(json.dumps(result, indent=2), flush=True)
        runs.append(result)
    if args.catchup_hours <= 0 and len(runs) > 1:
        clean = [int(str(r["sites"])) for r in runs if r["lost"] == 0 and r["behind_schedule"] == 0]
        print(json.dumps({"highest_zero_loss_sites": max(clean) if clean else None}))


if __name__ == "__main__":
    main()
