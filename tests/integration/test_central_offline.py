"""An edge agent offline for five minutes, catching up: exactly once, by (site, device, seq).

Two real agents with simulated ticket meters deliver to a real three-node cluster;
two ``coffee-telemetry recorder`` processes write to a real influxd. ``site-a``'s
agent knows one node only (``n3``, its regional entry point); ``site-b``'s knows the
other two. ``n3`` is stopped for five minutes while every meter keeps sending a
ticket every 2 s: ``site-b`` keeps arriving live, ``site-a`` keeps its readings in its
outbox and is shown offline centrally (its heartbeats stopped); when ``n3`` is back,
``site-a`` catches up and every reading of both sites is in InfluxDB exactly once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import AgentProcess, DeviceSpec, eventually, write_site_config
from tests.integration.test_central import DATABASE, RecorderProcess
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import NatsCluster, running_cluster, site_password

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 300.0
PERIOD_S = 2.0
DEVICES = ("umid-1", "umid-2")
HEARTBEAT_S = 2.0


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


class Site:
    """One real agent and its meters; counts what the meters sent."""

    def __init__(self, name: str, servers: list[str], root: Path) -> None:
        self.name = name
        (root / "dev").mkdir(parents=True)
        self.ports = {d: PtyPort(link=root / "dev" / d) for d in DEVICES}
        for port in self.ports.values():
            port.open()
        self.meters = {d: TicketMeterSim(p, product="CAFE") for d, p in self.ports.items()}
        self.sent = dict.fromkeys(DEVICES, 0)
        config = write_site_config(
            root / "site.toml",
            data_dir=root / "data",
            devices=[
                DeviceSpec(d, "moisture.ticket", str(p.path), "recepcao")
                for d, p in self.ports.items()
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
                f"servers = [{', '.join(repr(u) for u in servers)}]\n"
                f'username = "{name}"\n'
                f'password_file = "{secret}"\n'
                f"heartbeat_s = {HEARTBEAT_S}\n"
                "publish_timeout_s = 2\n"
                # A site's back-off is capped at 30 s in production; 5 s keeps the
                # test's catch-up within its budget.
                "reconnect_max_s = 5\n"
            )
        self.agent = AgentProcess(config, root / "agent.log")

    async def stream(self, seconds: float) -> None:
        """A ticket per meter every ``PERIOD_S`` for ``seconds``."""
        loop = asyncio.get_running_loop()
        tick = loop.time()
        end = tick + seconds
        while tick < end:
            for device, meter in self.meters.items():
                got = await meter.emit(moisture_pct=round(10.5 + self.sent[device] % 30 / 10, 1))
                assert got is not None, "the simulator could not write a whole ticket"
                self.sent[device] += 1
            tick += PERIOD_S
            await asyncio.sleep(max(0.0, tick - loop.time()))

    def expected(self) -> list[tuple[str, str, int]]:
        return [(self.name, d, s) for d, n in self.sent.items() for s in range(1, n + 1)]

    def close(self) -> None:
        if self.agent.alive:
            self.agent.stop()
        for port in self.ports.values():
            port.close()


def counts(influx: InfluxServer) -> collections.Counter[tuple[str, str, int]]:
    try:
        rows = influx.query(DATABASE, 'SELECT "seq", "site", "device" FROM "moisture"')
    except Exception:
        return collections.Counter()
    return collections.Counter((str(r["site"]), str(r["device"]), int(str(r["seq"]))) for r in rows)


def last_status(influx: InfluxServer, site: str) -> tuple[str, str] | None:
    try:
        rows = influx.query(
            DATABASE,
            f'SELECT last("state") AS "state", "reason" FROM "agent_status" '
            f"WHERE \"site\" = '{site}'",
        )
    except Exception:
        return None
    return (str(rows[0]["state"]), str(rows[0]["reason"])) if rows else None


@pytest.mark.timeout(OUTAGE_S + 300)
async def test_a_site_offline_five_minutes_catches_up_exactly_once(
    nats_cluster: NatsCluster,
    influxd_factory: Callable[[], InfluxServer],
    tmp_path: Path,
) -> None:
    influx = influxd_factory()
    recorders = [RecorderProcess(nats_cluster, influx, tmp_path, f"rec{i}") for i in (1, 2)]
    entry = nats_cluster.node("n3")
    others = [n.url for n in nats_cluster.nodes if n is not entry]
    site_a = Site("site-a", [entry.url], tmp_path / "site-a")
    site_b = Site("site-b", others, tmp_path / "site-b")
    sites = (site_a, site_b)

    def context() -> str:
        have = counts(influx)
        parts = [f"have {len(have)}; sent {[s.sent for s in sites]}"]
        parts += [f"--- {s.name}\n{s.agent.log_tail(2000)}" for s in sites]
        parts += [f"--- {r.log_path.name}\n{r.log_tail(1500)}" for r in recorders]
        return "\n".join(parts)

    def arrived(site: Site) -> bool:
        have = counts(influx)
        return all(have[k] == 1 for k in site.expected())

    try:
        for recorder in recorders:
            recorder.start()
        for site in sites:
            site.agent.start()
        for site in sites:
            await eventually(
                lambda site=site: "Connected to NATS" in site.agent.log_tail(100_000),
                timeout_s=60,
                what=f"{site.name} connected",
                context=context,
            )
        await asyncio.sleep(1.0)  # the ports are open before the sink connects
        await asyncio.gather(*(s.stream(10.0) for s in sites))
        await eventually(
            lambda: all(arrived(s) for s in sites),
            timeout_s=60,
            what="the first readings",
            context=context,
        )
        assert last_status(influx, "site-a") == ("online", "heartbeat")

        # site-a's entry point goes away for five minutes; every meter keeps sending.
        entry.stop()
        before_a = sum(v for k, v in counts(influx).items() if k[0] == "site-a")
        streaming = asyncio.gather(*(s.stream(OUTAGE_S) for s in sites))
        await eventually(
            lambda: last_status(influx, "site-a") == ("offline", "timeout"),
            timeout_s=3 * HEARTBEAT_S + 15,
            what="site-a offline centrally",
            context=context,
        )
        await asyncio.sleep(OUTAGE_S / 2)
        # Halfway: site-b live (within a few seconds), site-a not one reading more.
        await eventually(lambda: arrived(site_b), timeout_s=20, what="site-b live", context=context)
        assert sum(v for k, v in counts(influx).items() if k[0] == "site-a") == before_a
        await streaming
        assert site_a.sent["umid-1"] >= OUTAGE_S / PERIOD_S
        # Back: site-a catches up, online again.
        entry.start()
        nats_cluster.wait_ready()
        await eventually(
            lambda: all(arrived(s) for s in sites),
            timeout_s=120,
            what="the catch-up",
            context=context,
        )
        have = counts(influx)
        expected = sorted(k for s in sites for k in s.expected())
        assert sorted(have) == expected
        assert set(have.values()) == {1}, "duplicates after the catch-up"
        await eventually(
            lambda: last_status(influx, "site-a") == ("online", "heartbeat"),
            timeout_s=30,
            what="site-a online again",
            context=context,
        )
        for site in sites:
            assert site.agent.alive, context()
    finally:
        for site in sites:
            site.close()
        for recorder in recorders:
            recorder.stop()
        for node in nats_cluster.nodes:
            if not node.running:
                node.start()
