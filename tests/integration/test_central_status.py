"""The agent's retained status and Last Will, seen centrally through the cluster.

A real agent process (site ``site-a``, one simulated meter) delivers to a real
three-node cluster with its ``nats`` sink, putting a heartbeat in the status bucket
every second; two ``coffee-telemetry recorder`` processes follow the bucket and write
``agent_status`` to a real influxd. Then:

* the agent is SIGKILLed: centrally it is offline (``reason = timeout``) within
  ``3 * heartbeat + check`` seconds, with the point's time at the deadline, and the
  two recorders wrote that point once between them;
* a recorder started after the agent died knows the site's last status (the bucket
  is retained) and writes the same offline point, not a second one;
* the agent starts again: online, and its devices online;
* the agent stops cleanly (SIGTERM): offline at once (``reason = shutdown``), never a
  timeout after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.central.status import TIMEOUT_BEATS
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import AgentProcess, DeviceSpec, eventually, write_site_config
from tests.integration.test_central import DATABASE, RecorderProcess
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import NatsCluster, running_cluster, site_password

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = "site-a"
HEARTBEAT_S = 1.0
#: The recorder checks deadlines every second.
CHECK_S = 1.0


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def agent_for(cluster: NatsCluster, root: Path, meter: PtyPort) -> AgentProcess:
    config = write_site_config(
        root / "site.toml",
        data_dir=root / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", meter.path, "recepcao")],
        mqtt_port=None,
        prefix="coffee",
        influx_url=None,
        site=SITE,
    )
    secret = root / "nats.pw"
    secret.write_text(site_password(SITE))
    with config.open("a") as f:
        f.write(
            "[sinks.nats]\n"
            f"servers = [{', '.join(repr(u) for u in cluster.urls)}]\n"
            f'username = "{SITE}"\n'
            f'password_file = "{secret}"\n'
            f"heartbeat_s = {HEARTBEAT_S}\n"
            "publish_timeout_s = 2\n"
            "reconnect_max_s = 1\n"
        )
    return AgentProcess(config, root / "agent.log")


def status(influx: InfluxServer) -> list[tuple[int, str, str, int]]:
    """Every ``agent_status`` point of the site: (time ns, state, reason, devices online)."""
    try:
        rows = influx.query(
            DATABASE,
            f'SELECT "state", "reason", "devices_online" FROM "agent_status" '
            f"WHERE \"site\" = '{SITE}'",
        )
    except Exception:
        return []
    return [
        (int(str(r["time"])), str(r["state"]), str(r["reason"]), int(str(r["devices_online"])))
        for r in rows
    ]


async def test_status_and_last_will_through_the_cluster(
    nats_cluster: NatsCluster,
    influxd_factory: Callable[[], InfluxServer],
    tmp_path: Path,
) -> None:
    influx = influxd_factory()
    recorders = [RecorderProcess(nats_cluster, influx, tmp_path, f"rec{i}") for i in (1, 2, 3)]
    (tmp_path / "dev").mkdir()
    meter_port = PtyPort(link=tmp_path / "dev" / "umid-1")
    meter_port.open()
    agent = agent_for(nats_cluster, tmp_path, meter_port)

    def context() -> str:
        logs = "\n".join(f"--- {r.log_path.name}\n{r.log_tail(1500)}" for r in recorders)
        return f"{status(influx)[-6:]}\n--- agent\n{agent.log_tail(3000)}\n{logs}"

    def last() -> tuple[str, str] | None:
        points = status(influx)
        return (points[-1][1], points[-1][2]) if points else None

    try:
        for recorder in recorders[:2]:
            recorder.start()
        agent.start()
        await eventually(
            lambda: [p[1:3] for p in status(influx)].count(("online", "heartbeat")) >= 3,
            timeout_s=60,
            what="the agent's heartbeats in InfluxDB",
            context=context,
        )
        meter = TicketMeterSim(meter_port, product="CAFE")
        assert await meter.emit(moisture_pct=11.4) is not None
        await eventually(
            lambda: any(p[3] == 1 for p in status(influx)),
            timeout_s=20,
            what="its meter counted online",
            context=context,
        )

        # SIGKILL: no goodbye. Centrally offline within 3 heartbeats and a check.
        before = status(influx)
        agent.kill()
        killed_ns = time.time_ns()
        killed = time.monotonic()
        bound_s = TIMEOUT_BEATS * HEARTBEAT_S + CHECK_S
        await eventually(
            lambda: last() == ("offline", "timeout"),
            timeout_s=bound_s + 10,
            what="offline after the agent was killed",
            context=context,
        )
        took = time.monotonic() - killed
        assert took <= bound_s + 2.0, f"offline only after {took:.1f} s"
        timeouts = [p for p in status(influx) if p[2] == "timeout"]
        assert len(timeouts) == 1, context()  # two recorders, one point
        last_beat = max(p[0] for p in before if p[1] == "online")
        assert timeouts[0][0] <= killed_ns + round(TIMEOUT_BEATS * HEARTBEAT_S * 1e9)
        assert timeouts[0][0] >= last_beat + round(TIMEOUT_BEATS * HEARTBEAT_S * 1e9)
        assert timeouts[0][3] == 0

        # A recorder that starts now knows the site from the bucket: the same point again.
        recorders[2].start()
        await eventually(
            lambda: "Recording" in recorders[2].log_tail(100_000),
            timeout_s=30,
            what="the third recorder up",
            context=context,
        )
        await eventually(
            lambda: "written" in recorders[2].log_tail(100_000),
            timeout_s=10,
            what="its first stats line",
            context=context,
        )
        assert [p for p in status(influx) if p[2] == "timeout"] == timeouts

        # Back: online again, with its meter.
        agent.start()
        await eventually(
            lambda: last() == ("online", "heartbeat"),
            timeout_s=60,
            what="online after the restart",
            context=context,
        )
        # A clean stop says goodbye: offline at once, and no timeout follows.
        agent.stop()
        stopped = time.monotonic()
        await eventually(
            lambda: last() == ("offline", "shutdown"),
            timeout_s=10,
            what="the goodbye",
            context=context,
        )
        assert time.monotonic() - stopped <= 5.0
        await eventually(
            lambda: time.monotonic() - stopped > bound_s + 2,
            timeout_s=bound_s + 5,
            what="past the deadline",
        )
        assert last() == ("offline", "shutdown")
        assert len([p for p in status(influx) if p[2] == "timeout"]) == 1
    finally:
        if agent.alive:
            agent.stop()
        for recorder in recorders:
            recorder.stop()
        meter_port.close()
