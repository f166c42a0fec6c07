"""Many sites, one view: two real agents → a three-node NATS cluster → two recorders → InfluxDB.

Simulated meters on ptys feed two real agent processes (sites ``site-a`` and
``site-b``), each delivering through its JetStream sink to a three-node cluster
whose stream has three replicas; two ``coffee-telemetry recorder`` processes share
the durable consumer and write to a real influxd. Each phase emits readings while a
fault happens, then counts the points in InfluxDB by ``(site, device, seq)``: every
reading the meters sent is there exactly once (a duplicate with another timestamp
would count twice; a lost one would be missing).

Faults: the stream's leader node SIGKILLed mid-stream and restarted, then a
follower; the whole cluster down while the meters send (the sites catch up);
InfluxDB stopped for 10 s (the recorder's behaviour does not depend on the length,
see ``tests/agent/central``) and, during it, one recorder SIGKILLed while it holds a
batch it could not write: that batch comes back to the other recorder after
``ack_wait``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import ROOT, AgentProcess, DeviceSpec, eventually, write_site_config
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import (
    RECORDER_PASSWORD,
    RECORDER_USER,
    NatsCluster,
    running_cluster,
    site_password,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ("site-a", "site-b")
DEVICES = ("umid-1", "umid-2")
DATABASE = "central"
ACK_WAIT_S = 3.0


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


class RecorderProcess:
    """``coffee-telemetry recorder`` as a child process."""

    def __init__(self, cluster: NatsCluster, influx: InfluxServer, tmp: Path, name: str) -> None:
        self.log_path = tmp / f"{name}.log"
        secret = tmp / "recorder.pw"
        secret.write_text(RECORDER_PASSWORD)
        self.argv = [
            sys.executable,
            "-m",
            "coffee_telemetry.agent.cli",
            "recorder",
            "--nats",
            ",".join(cluster.urls),
            "--nats-user",
            RECORDER_USER,
            "--nats-password-file",
            str(secret),
            "--influx-url",
            influx.url,
            "--influx-database",
            DATABASE,
            "--create-database",
            "--replicas",
            "3",
            "--stream-max-mb",
            "64",
            "--ack-wait",
            str(ACK_WAIT_S),
            "--batch",
            "20",
            "--stats-every",
            "2",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@dataclass
class Site:
    name: str
    agent: AgentProcess
    meters: dict[str, TicketMeterSim]
    sent: dict[str, int]


@dataclass
class Rig:
    cluster: NatsCluster
    influx: InfluxServer
    sites: list[Site]
    recorders: list[RecorderProcess]

    def context(self) -> str:
        parts = [f"--- agent {s.name}\n{s.agent.log_tail(2000)}" for s in self.sites]
        parts += [f"--- recorder\n{r.log_tail(2000)}" for r in self.recorders]
        parts += [f"--- nats {n.name}\n{n.log_tail(10)}" for n in self.cluster.nodes]
        return "\n".join(parts)

    def expected(self) -> list[tuple[str, str, int]]:
        return sorted(
            (site.name, device, seq)
            for site in self.sites
            for device, n in site.sent.items()
            for seq in range(1, n + 1)
        )

    def counts(self) -> collections.Counter[tuple[str, str, int]]:
        if not self.influx.running:
            return collections.Counter()
        try:
            rows = self.influx.query(DATABASE, 'SELECT "seq", "site", "device" FROM "moisture"')
        except Exception:
            return collections.Counter()
        return collections.Counter(
            (str(r["site"]), str(r["device"]), int(str(r["seq"]))) for r in rows
        )

    async def emit(self, n: int) -> None:
        """``n`` tickets per meter of every site, all meters at once."""

        async def one(site: Site, device: str) -> None:
            for i in range(n):
                got = await site.meters[device].emit(moisture_pct=round(10 + (i % 40) / 10, 1))
                assert got is not None, "the simulator could not write a whole ticket"
                site.sent[device] += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one(s, d) for s in self.sites for d in DEVICES))

    async def exactly_once(self, what: str, timeout_s: float = 90.0) -> None:
        expected = self.expected()
        await eventually(
            lambda: sorted(self.counts()) == expected,
            timeout_s=timeout_s,
            what=f"{len(expected)} readings in InfluxDB after {what}",
            context=lambda: f"have {len(self.counts())}\n{self.context()}",
        )
        counts = self.counts()
        assert sorted(counts) == expected
        assert set(counts.values()) == {1}, f"duplicates after {what}"


def redelivered(recorder: RecorderProcess) -> int:
    """The last ``redelivered`` count in a recorder's periodic stats line."""
    found = re.findall(r"(\d+) redelivered", recorder.log_tail(100_000))
    return int(found[-1]) if found else 0


async def stream_leader(cluster: NatsCluster) -> tuple[str, list[str]]:
    nc = await nats.connect(cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    try:
        info = await nc.jetstream().stream_info("COFFEE")
        assert info.cluster is not None
        assert info.cluster.leader
        followers = [str(p.name) for p in info.cluster.replicas or []]
        return info.cluster.leader, followers
    finally:
        await nc.close()


@pytest.fixture
def rig(
    nats_cluster: NatsCluster,
    influxd_factory: Callable[[], InfluxServer],
    tmp_path: Path,
) -> Iterator[Rig]:
    influx = influxd_factory()
    sites: list[Site] = []
    ports: list[PtyPort] = []
    recorders = [RecorderProcess(nats_cluster, influx, tmp_path, f"rec{i}") for i in (1, 2)]
    for name in SITES:
        root = tmp_path / name
        (root / "dev").mkdir(parents=True)
        meters = {}
        for device in DEVICES:
            port = PtyPort(link=root / "dev" / device)
            port.open()
            ports.append(port)
            meters[device] = TicketMeterSim(port, product="CAFE")
        config = write_site_config(
            root / "site.toml",
            data_dir=root / "data",
            devices=[
                DeviceSpec(d, "moisture.ticket", str(root / "dev" / d), "recepcao") for d in DEVICES
            ],
            mqtt_port=None,
            prefix="coffee",
            influx_url=None,
            site=name,
        )
        secret = root / "nats.pw"
        secret.write_text(site_password(name))
        with config.open("a") as f:
            f.write(
                "[sinks.nats]\n"
                f"servers = [{', '.join(repr(u) for u in nats_cluster.urls)}]\n"
                f'username = "{name}"\n'
                f'password_file = "{secret}"\n'
                "publish_timeout_s = 2\n"
                "reconnect_max_s = 1\n"
            )
        sites.append(
            Site(name, AgentProcess(config, root / "agent.log"), meters, dict.fromkeys(DEVICES, 0))
        )
    made = Rig(nats_cluster, influx, sites, recorders)
    try:
        yield made
    finally:
        for site in sites:
            if site.agent.alive:
                site.agent.stop()
        for recorder in recorders:
            recorder.stop()
        for port in ports:
            port.close()
        for node in nats_cluster.nodes:  # leave the module's cluster whole
            if not node.running:
                node.start()


async def test_every_reading_arrives_once_through_leader_loss_recorder_crash_and_influx_outage(
    rig: Rig,
) -> None:
    for recorder in rig.recorders:
        recorder.start()
    for site in rig.sites:
        site.agent.start()
    # The agents' logs say when their devices are open and the sink is connected.
    for site in rig.sites:
        await eventually(
            lambda site=site: "Connected to NATS" in site.agent.log_tail(100_000),
            timeout_s=30,
            what=f"{site.name} connected to NATS",
            context=rig.context,
        )
    await asyncio.sleep(1.0)  # the ports are opened before the sinks connect
    await rig.emit(10)
    await rig.exactly_once("a quiet start")

    # The stream's leader dies mid-stream, and comes back; then a follower.
    leader, followers = await stream_leader(rig.cluster)
    emitting = asyncio.create_task(rig.emit(20))
    await asyncio.sleep(0.5)
    rig.cluster.node(leader).kill()
    await emitting
    rig.cluster.node(leader).start()
    await rig.exactly_once(f"the leader {leader} was killed")
    rig.cluster.wait_ready()
    emitting = asyncio.create_task(rig.emit(15))
    await asyncio.sleep(0.5)
    rig.cluster.node(followers[0]).kill()
    await emitting
    rig.cluster.node(followers[0]).start()
    await rig.exactly_once(f"the follower {followers[0]} was killed")
    rig.cluster.wait_ready()

    # The whole cluster goes away (the sites' link to the centre is down) while the
    # meters keep sending; then it comes back and the sites catch up.
    for node in rig.cluster.nodes:
        node.kill()
    await rig.emit(15)
    for node in rig.cluster.nodes:
        node.start()
    rig.cluster.wait_ready()
    await rig.exactly_once("the whole cluster was down")

    # InfluxDB goes away for 10 s; meanwhile a recorder that holds a batch it could not
    # write is SIGKILLed: the other one gets that batch again after ack_wait.
    rig.influx.stop()
    killed, survivor = rig.recorders
    for _ in range(10):
        await rig.emit(5)
        if "InfluxDB unavailable" in killed.log_tail(100_000):
            break
    assert "InfluxDB unavailable" in killed.log_tail(100_000), rig.context()
    killed.kill()
    await asyncio.sleep(10.0)
    rig.influx.start()
    await rig.exactly_once("InfluxDB was down and a recorder was killed mid-batch")
    await eventually(
        lambda: redelivered(survivor) > 0,
        timeout_s=10,
        what="the survivor's count of redelivered messages",
        context=rig.context,
    )
    for site in rig.sites:
        assert site.agent.alive, rig.context()
