"""The cooperative overview dashboard against a central InfluxDB filled by the recorder.

``dashboards/grafana/json/cooperative-overview.json`` is checked as the other
dashboards are (data source variable, units, raw InfluxQL with ``$timeFilter``, a
``site`` variable, multi-value with *All*), then run for real: a real agent
(``site-a``: a ticket moisture meter and a huller on a simulated RS-485 bus, with a
dry and a wet lot) and a second site publishing the agent's exact payloads through
the agent's ``NatsSink`` (``site-b``: three lots, no alerts) deliver through a real
three-node cluster; a ``coffee-telemetry recorder`` writes readings, events and the
sites' status to a real influxd. Every variable query and panel query of the
overview runs with one site and with *All*, returns rows, and shows each site's
numbers: agent online, open alerts, lots and wet lots, huller hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.readings import Stamper, encode_reading
from coffee_telemetry.agent.sinks.nats import NatsSink
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, serve_rtu_bus
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    eventually,
    huller_toml,
    write_site_config,
)
from tests.integration.test_central import DATABASE, RecorderProcess
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import NatsCluster, running_cluster, site_password

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERVIEW = ROOT / "dashboards" / "grafana" / "json" / "cooperative-overview.json"
OVERVIEW_EN = ROOT / "dashboards" / "grafana" / "json-en" / "cooperative-overview.json"
WET_LOT, DRY_LOT = "L-WET", "L-0001"
B_LOTS = ("B-001", "B-002", "B-003")


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def load(path: Path = OVERVIEW) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def test_the_overview_is_shaped_as_the_other_dashboards() -> None:
    doc, en = load(), load(OVERVIEW_EN)
    assert doc["uid"] == "coffee-cooperative-overview"
    assert en["uid"] == "coffee-cooperative-overview-en"
    assert doc["schemaVersion"] == 39
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "coffee-influxdb"
    site = variables["site"]
    assert (site["multi"], site["includeAll"], site["allValue"]) == (True, True, ".*")
    assert site["current"]["value"] == ["$__all"]
    assert doc["time"] == {"from": "now/d", "to": "now"}  # today's lots
    titles = set()
    for panel in panels(doc):
        titles.add(panel["title"])
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        defaults = panel["fieldConfig"]["defaults"]
        assert "unit" in defaults or "mappings" in defaults, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            query = target["query"]
            assert target["rawQuery"] is True
            assert "$timeFilter" in query, panel["title"]
            assert '"site" =~ /^$site$/' in query, panel["title"]
            if "GROUP BY time(" in query:
                assert "GROUP BY time($__interval)" in query
            else:
                assert re.search(r'GROUP BY "site"$', query), panel["title"]
    assert len(titles) == len(panels(doc)) == 6


def substitute(text: str, site: str | None, time_from: str | None) -> str:
    """Grafana's macros: the panel's time range (``timeFrom`` or the last hour), ``$site``."""
    window = {"7d": "7d", None: "1h"}[time_from]
    text = text.replace("$timeFilter", f"time > now() - {window}").replace("$__interval", "10s")
    text = text.replace("/^$site$/", f"/^{'.*' if site is None else re.escape(site)}$/")
    assert "$" not in text.replace("$/", ""), text
    return text


def by_site(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for row in rows:
        out.setdefault(str(row["site"]), {}).update(row)
    return out


def agent_site(tmp: Path, cluster: NatsCluster, meter: str, bus: str) -> AgentProcess:
    config = write_site_config(
        tmp / "site.toml",
        data_dir=tmp / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", meter, "armazem", "cafe-verde")],
        mqtt_port=None,
        prefix="coffee",
        influx_url=None,
        site="site-a",
    )
    secret = tmp / "nats.pw"
    secret.write_text(site_password("site-a"))
    text = config.read_text(encoding="utf-8")
    text += "\n".join(
        huller_toml(bus, huller="desc-1", station="descascamento", poll_interval_s=0.25)
    )
    text += (
        "\n[sinks.nats]\n"
        f"servers = [{', '.join(repr(u) for u in cluster.urls)}]\n"
        'username = "site-a"\n'
        f'password_file = "{secret}"\n'
        "heartbeat_s = 1\n"
        "publish_timeout_s = 2\n"
        "reconnect_max_s = 1\n"
    )
    config.write_text(text, encoding="utf-8")
    return AgentProcess(config, tmp / "agent.log")


async def site_b(cluster: NatsCluster, done: asyncio.Event) -> None:
    """``site-b``: the agent's payloads through the agent's sink, heartbeats included."""
    sink = NatsSink(
        servers=cluster.urls,
        site="site-b",
        health=Health(),
        username="site-b",
        password=site_password("site-b"),
        heartbeat_s=1.0,
        publish_timeout_s=2.0,
        reconnect_max_s=1.0,
    )
    sink.epoch = "overview"
    connection = asyncio.create_task(sink.connection_loop())
    stamper = Stamper()
    records = []
    for i, lot in enumerate(B_LOTS * 2):
        reading = stamper.stamp(
            device="umid-b",
            measurement="moisture",
            fields={"moisture_pct": 11.0 + i / 10},
            tags={"site": "site-b", "device": "umid-b", "station": "recepcao", "lot": lot},
        )
        records.append(Record(id=i + 1, payload=encode_reading(reading), reading=reading))
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


def check_overview(influx: InfluxServer) -> None:
    """Every query of the overview, with each site and with All, and each site's numbers."""
    doc = load()
    results: dict[str, dict[str | None, dict[str, dict[str, object]]]] = {}
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            rows = influx.query(DATABASE, var["query"])
            assert sorted(str(r["value"]) for r in rows) == ["site-a", "site-b"], var["name"]
    for panel in panels(doc):
        for site in ("site-a", "site-b", None):
            merged: dict[str, dict[str, object]] = {}
            for target in panel["targets"]:
                text = substitute(target["query"], site, panel.get("timeFrom"))
                rows = influx.query(DATABASE, text)
                for name, row in by_site(rows).items():
                    merged.setdefault(name, {}).update(row)
            results.setdefault(panel["title"], {})[site] = merged
            if panel["title"] == "Unidades: agente e dispositivos on-line" or site != "site-b":
                assert merged, f"{panel['title']} ({site or 'All'}): no rows"
    title = {p["id"]: p["title"] for p in panels(doc)}
    every = {t: results[t][None] for t in title.values()}
    # Agents and devices online.
    online = every[title[1]]
    assert {s: online[s]["agent"] for s in online} == {"site-a": 1, "site-b": 1}
    assert int(str(online["site-a"]["devices_total"])) >= 1
    # Last reading: each site's newest moisture.
    last = every[title[2]]
    assert last["site-a"]["moisture_pct"] == 13.2
    assert last["site-b"]["moisture_pct"] == pytest.approx(11.5)
    # Open alerts: the wet lot's, at site-a only.
    assert {s: v["open_alerts"] for s, v in every[title[3]].items()} == {"site-a": 1}
    # Lots today and wet lots.
    lots = every[title[4]]
    assert {s: v["lots"] for s, v in lots.items()} == {"site-a": 2, "site-b": 3}
    assert lots["site-a"]["wet_lots"] == 1
    assert "wet_lots" not in lots["site-b"]
    # Huller hours: site-a's one huller, its hour meter at 95 h.
    hours = every[title[5]]
    assert set(hours) == {"site-a"}
    assert float(str(hours["site-a"]["hours_total"])) == pytest.approx(95.0, abs=0.1)
    # One site picked: only that site's rows.
    for t in title.values():
        assert set(results[t]["site-a"]) <= {"site-a"}
        assert set(results[t]["site-b"]) <= {"site-b"}


async def test_every_overview_query_answers_from_the_central_influxdb(
    nats_cluster: NatsCluster, influxd_factory: Any, tmp_path: Path
) -> None:
    influx: InfluxServer = influxd_factory()
    recorder = RecorderProcess(nats_cluster, influx, tmp_path, "rec")
    counter = CounterUnitSim(1, pv=1000, rate_per_s=5)
    timer = CounterUnitSim(2, mode=Mode.TIMER, pv=95 * 3600)
    (tmp_path / "dev").mkdir()
    done = asyncio.Event()
    with (
        open_pty_port(link=tmp_path / "dev" / "umid-1") as meter_pty,
        open_pty_port(link=tmp_path / "dev" / "ttyRS485") as bus_pty,
    ):
        agent = agent_site(tmp_path, nats_cluster, meter_pty.path, bus_pty.path)

        def context() -> str:
            return f"--- agent\n{agent.log_tail(3000)}\n--- recorder\n{recorder.log_tail(2000)}"

        def measurements() -> set[str]:
            try:
                return {str(r["name"]) for r in influx.query(DATABASE, "SHOW MEASUREMENTS")}
            except Exception:
                return set()

        async with serve_rtu_bus(bus_pty, [counter, timer]):
            b_task = asyncio.create_task(site_b(nats_cluster, done))
            try:
                recorder.start()
                agent.start()
                await eventually(
                    lambda: "Connected to NATS" in agent.log_tail(100_000),
                    timeout_s=60,
                    what="the agent connected",
                    context=context,
                )
                await asyncio.sleep(1.0)
                meter = TicketMeterSim(meter_pty, product="CAFE")
                for lot, value in (
                    (DRY_LOT, 11.2),
                    (DRY_LOT, 11.6),
                    (WET_LOT, 13.0),
                    (WET_LOT, 13.2),
                ):
                    assert await meter.emit(moisture_pct=value, lot=lot) is not None
                    await asyncio.sleep(0.3)
                await eventually(
                    lambda: {"moisture", "huller", "alert", "agent_status"} <= measurements(),
                    timeout_s=60,
                    what="the measurements the overview reads",
                    context=context,
                )
                await eventually(
                    lambda: (
                        len(influx.query(DATABASE, 'SELECT "moisture_pct" FROM "moisture"'))
                        == 4 + 2 * len(B_LOTS)
                    ),
                    timeout_s=30,
                    what="every moisture reading",
                    context=context,
                )
                await asyncio.sleep(3.0)  # a few huller readings and heartbeats more
                check_overview(influx)  # while both sites are online
            finally:
                done.set()
                with contextlib.suppress(Exception):
                    await b_task
                if agent.alive:
                    agent.stop()
                recorder.stop()
