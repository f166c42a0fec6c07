"""A clustered store's first step: VictoriaMetrics takes the recorder's line protocol.

A ``coffee-telemetry recorder`` process writes to Debian's ``victoria-metrics``
through the very sink it uses for InfluxDB (``/write``, line protocol): two sites
deliver the agent's exact payloads through the agent's ``NatsSink`` and a real
three-node cluster (moisture readings with lots, a huller's counters, alert events,
heartbeats into the status bucket). Then the cooperative overview's numeric panels
are answered through VictoriaMetrics' Prometheus-compatible API: agents and devices
online, the last reading and when, open alerts, lots and wet lots, huller hours, with
the same numbers the InfluxQL panels give on InfluxDB
(``tests/integration/test_central_overview.py``).

What does not carry over is checked too: a string field becomes a series of zeros
(its text is gone), and every name is ``<measurement>_<field>`` with the tags as
labels and the database as a ``db`` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading
from coffee_telemetry.agent.sinks.nats import NatsSink
from coffee_telemetry.drivers.events import FieldValue
from tests.integration.harness import eventually
from tests.integration.test_central import RecorderProcess
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import NatsCluster, running_cluster, site_password
from tests.services.victoria import VictoriaServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaServer]:
    server = VictoriaServer(tmp_path_factory.mktemp("victoria"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


class Site:
    """A site's readings, stamped as the agent stamps them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stamper = Stamper()
        self.readings: list[Reading] = []

    def add(
        self,
        device: str,
        measurement: str,
        fields: Mapping[str, FieldValue],
        kind: str = "reading",
        **tags: str,
    ) -> None:
        r = self.stamper.stamp(
            device=device,
            measurement=measurement,
            fields=dict(fields),
            tags={"site": self.name, "device": device, **tags},
            kind=kind,
        )
        self.readings.append(r)
        time.sleep(0.002)  # VictoriaMetrics keeps milliseconds

    def alert(self, rule: str, subject: str, state: str, **data: FieldValue) -> None:
        fields: dict[str, FieldValue] = {
            "message": f"{rule} {subject}",
            "severity": "warning",
            "notify": True,
            "since_ns": time.time_ns(),
            "repeat": 0,
            **data,
        }
        self.add("alerts", "alert", fields, "event", rule=rule, subject=subject, state=state)


async def deliver(cluster: NatsCluster, site: Site, health: Health, done: asyncio.Event) -> None:
    """The site's readings through the agent's sink; heartbeats until ``done``."""
    sink = NatsSink(
        servers=cluster.urls,
        site=site.name,
        health=health,
        username=site.name,
        password=site_password(site.name),
        heartbeat_s=1.0,
        publish_timeout_s=2.0,
        reconnect_max_s=1.0,
    )
    sink.epoch = "victoria"
    connection = asyncio.create_task(sink.connection_loop())
    records = [
        Record(id=i + 1, payload=encode_reading(r), reading=r) for i, r in enumerate(site.readings)
    ]
    try:
        while True:
            try:
                assert await sink.deliver(records) == []
                break
            except Exception:  # not connected yet: as the delivery loop, try again
                await asyncio.sleep(0.3)
        await done.wait()
    finally:
        await sink.close()
        await connection


def by_site(result: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {str(r["metric"]["site"]): float(r["value"][1]) for r in result}


#: The overview's numeric panels in PromQL/MetricsQL (Grafana's Prometheus data source;
#: ``$site`` as a regex, the panel's range as ``[7d]`` or, for today's lots, ``[1h]``).
AGENT_ONLINE = 'last_over_time(agent_status_online{site=~"$site"}[7d])'
DEVICES_ONLINE = 'last_over_time(agent_status_devices_online{site=~"$site"}[7d])'
LAST_READING_AT = 'max by (site) (tlast_over_time(moisture_moisture_pct{site=~"$site"}[7d]))'
LAST_READING = (
    'last_over_time(moisture_moisture_pct{site=~"$site"}[7d])'
    " and on(site, device, station, lot)"
    ' (tlast_over_time(moisture_moisture_pct{site=~"$site"}[7d])'
    " == on(site) group_left"
    ' max by (site) (tlast_over_time(moisture_moisture_pct{site=~"$site"}[7d])))'
)
OPEN_ALERTS = (
    'count by (site) (tlast_over_time(alert_since_ns{site=~"$site",'
    ' state=~"firing|acknowledged"}[7d])'
    " >= on(site, rule, subject) group_left"
    ' max by (site, rule, subject) (tlast_over_time(alert_since_ns{site=~"$site"}[7d])))'
)
LOTS = (
    "count by (site) (count by (site, lot)"
    ' (count_over_time(moisture_moisture_pct{site=~"$site", lot!=""}[1h])))'
)
WET_LOTS = (
    "count by (site) (count by (site, subject)"
    ' (count_over_time(alert_since_ns{site=~"$site", rule="wet_lot", state="firing"}[1h])))'
)
HULLER_HOURS = 'sum by (site) (last_over_time(huller_hours_total{site=~"$site"}[7d]))'


async def test_the_recorder_writes_to_victoria_metrics_and_the_overview_answers(
    nats_cluster: NatsCluster, victoria: VictoriaServer, tmp_path: Path
) -> None:
    a, b = Site("site-a"), Site("site-b")
    for lot, value in (("L-0001", 11.2), ("L-0001", 11.6), ("L-WET", 13.0), ("L-WET", 13.2)):
        a.add("umid-1", "moisture", {"moisture_pct": value}, station="armazem", lot=lot)
    a.alert("device_silent", "umid-2", "firing")
    a.alert("wet_lot", "L-WET", "firing", lot="L-WET", count=2, max_pct=13.2)
    a.alert("device_silent", "umid-2", "resolved")
    a.alert("service_due", "desc-1", "firing")
    a.alert("service_due", "desc-1", "acknowledged", acked_by="maria")
    for hours in (94.5, 95.0):
        a.add(
            "desc-1",
            "huller",
            {"running": True, "hours_total": hours, "hours_today": hours - 90.0},
            station="descascamento",
        )
    for lot in ("B-001", "B-002", "B-003", "B-001"):
        b.add("umid-b", "moisture", {"moisture_pct": 11.5}, station="recepcao", lot=lot)
    health_a = Health()
    for device in ("umid-1", "desc-1"):
        health_a.add_device(device, driver="x", port="/dev/x", station="s")
    health_a.devices["umid-1"].state = DeviceState.ONLINE

    # The recorder's sink is the InfluxDB one, pointed at VictoriaMetrics.
    recorder = RecorderProcess(nats_cluster, cast(InfluxServer, victoria), tmp_path, "rec")
    done = asyncio.Event()
    recorder.start()
    tasks = [
        asyncio.create_task(deliver(nats_cluster, a, health_a, done)),
        asyncio.create_task(deliver(nats_cluster, b, Health(), done)),
    ]
    try:

        def answered() -> bool:
            victoria.flush()
            return (
                len(victoria.query('moisture_moisture_pct{site=~"site-a|site-b"}')) == 5
                and len(by_site(victoria.query(AGENT_ONLINE.replace("$site", ".*")))) == 2
                and len(victoria.query("huller_hours_total")) == 1
                and len(victoria.query("alert_since_ns")) == 5
            )

        await eventually(
            answered,
            timeout_s=60,
            what="the sites' points in VictoriaMetrics",
            context=lambda: f"{recorder.log_tail(3000)}\n--- victoria\n{victoria.log_tail()}",
        )

        def ask(promql: str, site: str = ".*") -> dict[str, float]:
            return by_site(victoria.query(promql.replace("$site", site)))

        assert ask(AGENT_ONLINE) == {"site-a": 1.0, "site-b": 1.0}
        assert ask(DEVICES_ONLINE) == {"site-a": 1.0, "site-b": 0.0}
        assert ask(LAST_READING) == {"site-a": 13.2, "site-b": 11.5}
        last_at = ask(LAST_READING_AT)
        assert last_at["site-a"] == pytest.approx(a.readings[3].ts_ns / 1e9, abs=0.002)
        assert last_at["site-b"] == pytest.approx(b.readings[-1].ts_ns / 1e9, abs=0.002)
        # Open: the wet lot (firing) and the service (acknowledged); the silence resolved.
        assert ask(OPEN_ALERTS) == {"site-a": 2.0}
        assert ask(LOTS) == {"site-a": 2.0, "site-b": 3.0}
        assert ask(WET_LOTS) == {"site-a": 1.0}
        assert ask(HULLER_HOURS) == {"site-a": 95.0}
        # One site picked: only its answer.
        assert ask(LOTS, "site-b") == {"site-b": 3.0}
        assert ask(AGENT_ONLINE, "site-a") == {"site-a": 1.0}

        # What does not carry over: string fields are series of zeros, the text is gone.
        states = victoria.query('last_over_time(agent_status_state{site="site-a"}[7d])')
        assert [float(s["value"][1]) for s in states] == [0.0]
        messages = victoria.query('last_over_time(alert_message{site="site-a"}[7d])')
        assert {float(s["value"][1]) for s in messages} == {0.0}
        labels = victoria.series('{__name__="moisture_moisture_pct", site="site-a"}')
        assert {tuple(sorted(s)) for s in labels} == {
            ("__name__", "db", "device", "lot", "site", "station")
        }
        assert {s["db"] for s in labels} == {"central"}
    finally:
        done.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        recorder.stop()
