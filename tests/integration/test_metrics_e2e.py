"""The real agent's ``/metrics``, ``/readyz`` and ``/healthz``, scraped like Prometheus does.

The agent runs as a process with two simulated moisture meters on ptys, a private
Mosquitto and the session's InfluxDB. Each scrape is parsed with ``prometheus_client``'s
own text parser. Readings move the device and sink counters; the broker is then killed
(SIGKILL): the MQTT sink shows disconnected and its backlog grows while InfluxDB keeps
taking readings; the broker comes back and the backlog drains.
"""

from __future__ import annotations

import json
import os
import signal
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    eventually,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

METERS = {"umid-1": "recepcao", "umid-2": "secador-2"}
#: The families the README documents for a site with meters, MQTT and InfluxDB.
DOCUMENTED = {
    "coffee_telemetry_agent_info",
    "coffee_telemetry_agent_start_time_seconds",
    "coffee_telemetry_device_up",
    "coffee_telemetry_device_frames",
    "coffee_telemetry_device_frames_discarded",
    "coffee_telemetry_device_readings",
    "coffee_telemetry_device_reconnects",
    "coffee_telemetry_device_errors",
    "coffee_telemetry_device_last_frame_timestamp_seconds",
    "coffee_telemetry_device_last_reading_timestamp_seconds",
    "coffee_telemetry_device_state_change_timestamp_seconds",
    "coffee_telemetry_sink_up",
    "coffee_telemetry_sink_connected",
    "coffee_telemetry_sink_delivered_records",
    "coffee_telemetry_sink_rejected_records",
    "coffee_telemetry_sink_failures",
    "coffee_telemetry_sink_last_delivery_timestamp_seconds",
    "coffee_telemetry_outbox_up",
    "coffee_telemetry_outbox_records",
    "coffee_telemetry_outbox_bytes",
    "coffee_telemetry_outbox_limit_bytes",
    "coffee_telemetry_outbox_accepted_records",
    "coffee_telemetry_outbox_backlog_records",
    "coffee_telemetry_outbox_oldest_undelivered_timestamp_seconds",
    "coffee_telemetry_outbox_dropped_records",
    "coffee_telemetry_outbox_dead_letters",
    "coffee_telemetry_history_bytes",
    "coffee_telemetry_history_limit_bytes",
    "coffee_telemetry_history_pending_points",
    "coffee_telemetry_history_dropped_points",
    "coffee_telemetry_alerts_open",
    "coffee_telemetry_interface_up",
    "coffee_telemetry_interface_failures",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    """One parsed ``/metrics`` answer."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.samples: Samples = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for s in family.samples:
                self.kinds[s.name] = family.type
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def device(self, name: str, device: str) -> float | None:
        labels = {"device": device, "driver": "moisture.ticket", "station": METERS[device]}
        return self.get(name, **labels)


@pytest.fixture
def meters(tmp_path: Path) -> Iterator[dict[str, PtyPort]]:
    (tmp_path / "dev").mkdir()
    ports = {name: PtyPort(link=tmp_path / "dev" / name) for name in METERS}
    for port in ports.values():
        port.open()
    yield ports
    for port in ports.values():
        port.close()


async def fetch(url: str) -> tuple[int, str]:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


async def test_scrapes_follow_readings_and_a_broker_outage(
    mosquitto_factory: Callable[[], MosquittoServer],
    influxd: InfluxServer,
    influx_db: str,
    meters: dict[str, PtyPort],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[
            DeviceSpec(name, "moisture.ticket", str(tmp_path / "dev" / name), station, "cafe")
            for name, station in METERS.items()
        ],
        mqtt_port=broker.port,
        prefix=f"t{uuid.uuid4().hex[:8]}",
        influx_url=influxd.url,
        database=influx_db,
    )
    base = f"http://127.0.0.1:{tomllib.loads(config.read_text())['api']['port']}"
    agent = AgentProcess(config, tmp_path / "agent.log")
    last: dict[str, Scrape] = {}
    ready_text: list[str] = [""]

    def context() -> str:
        return f"agent log tail:\n{agent.log_tail()}"

    async def scrape() -> Scrape:
        status, text = await fetch(f"{base}/metrics")
        assert status == 200, f"/metrics answered {status}: {text[:300]}\n{context()}"
        last["s"] = Scrape(text)
        return last["s"]

    def until(check: Callable[[Scrape], bool]) -> Callable[[], Awaitable[bool]]:
        async def poll() -> bool:
            return check(await scrape())

        return poll

    async def ready() -> bool:
        status, text = await fetch(f"{base}/readyz")
        ready_text[0] = text
        return status == 200

    sims = {name: TicketMeterSim(port, product="CAFE") for name, port in meters.items()}

    async def emit(device: str, n: int) -> None:
        for _ in range(n):
            assert await sims[device].emit(moisture_pct=11.0, lot="L-0001") is not None

    try:
        agent.start()
        await eventually(ready, timeout_s=30, what="/readyz 200", context=context)
        status, text = await fetch(f"{base}/healthz")
        assert status == 200, text
        doc = json.loads(ready_text[0])
        assert doc["devices"] == {"umid-1": "online", "umid-2": "online"}

        first = await scrape()
        missing = DOCUMENTED - set(first.families)
        assert not missing, f"undocumented or missing families: {sorted(missing)}"
        for sample, kind in first.kinds.items():
            # Counters end in _total on the wire; nothing else does.
            assert (kind == "counter") == sample.endswith("_total"), sample
        for device in METERS:
            assert first.device("coffee_telemetry_device_up", device) == 1
            assert first.device("coffee_telemetry_device_readings_total", device) == 0
        for sink in ("mqtt", "influx"):
            assert first.get("coffee_telemetry_outbox_backlog_records", sink=sink) is not None
        assert first.get("coffee_telemetry_outbox_up") == 1

        # Readings move the device and sink counters.
        await emit("umid-1", 3)
        await emit("umid-2", 2)
        await eventually(
            until(
                lambda s: (
                    s.device("coffee_telemetry_device_readings_total", "umid-1") == 3
                    and s.device("coffee_telemetry_device_readings_total", "umid-2") == 2
                    # Store stats may be a second old: judge them by their own count.
                    and (s.get("coffee_telemetry_outbox_accepted_records_total") or 0) >= 5
                    and s.get("coffee_telemetry_outbox_backlog_records", sink="mqtt") == 0
                    and s.get("coffee_telemetry_outbox_backlog_records", sink="influx") == 0
                )
            ),
            timeout_s=30,
            what="readings counted and delivered",
            context=context,
        )
        s = last["s"]
        assert s.get("coffee_telemetry_sink_connected", sink="mqtt") == 1
        delivered_mqtt = s.get("coffee_telemetry_sink_delivered_records_total", sink="mqtt")
        delivered_influx = s.get("coffee_telemetry_sink_delivered_records_total", sink="influx")
        assert delivered_mqtt is not None
        assert delivered_mqtt >= 5
        assert delivered_influx is not None
        assert delivered_influx >= 5
        assert s.device("coffee_telemetry_device_frames_total", "umid-1") == 3
        assert (s.get("coffee_telemetry_outbox_accepted_records_total") or 0) >= 5

        # The broker dies: MQTT shows disconnected, its backlog grows, InfluxDB keeps up.
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.stop()  # reaps it
        await eventually(
            until(lambda s: s.get("coffee_telemetry_sink_connected", sink="mqtt") == 0),
            timeout_s=30,
            what="mqtt shown disconnected",
            context=context,
        )
        accepted = s.get("coffee_telemetry_outbox_accepted_records_total") or 0
        await emit("umid-1", 4)
        await eventually(
            until(
                lambda s: (
                    s.device("coffee_telemetry_device_readings_total", "umid-1") == 7
                    and (s.get("coffee_telemetry_outbox_accepted_records_total") or 0)
                    >= accepted + 4
                    and (s.get("coffee_telemetry_outbox_backlog_records", sink="mqtt") or 0) >= 4
                    and s.get("coffee_telemetry_outbox_backlog_records", sink="influx") == 0
                )
            ),
            timeout_s=30,
            what="mqtt backlog growing while influx delivers",
            context=context,
        )
        s = last["s"]
        assert (s.get("coffee_telemetry_sink_delivered_records_total", sink="influx") or 0) >= (
            delivered_influx + 4
        )
        assert s.get("coffee_telemetry_sink_delivered_records_total", sink="mqtt") == (
            delivered_mqtt
        )
        assert (
            s.get("coffee_telemetry_outbox_oldest_undelivered_timestamp_seconds", sink="mqtt")
            is not None
        )
        # A sink down does not make the agent unready; readyz says which one is down.
        assert await ready(), ready_text[0]
        sinks = json.loads(ready_text[0])["sinks"]
        assert sinks["mqtt"]["up"] is False
        assert sinks["mqtt"]["connected"] is False
        assert sinks["influx"] == {"up": True, "connected": None, "last_error": None}
        assert s.get("coffee_telemetry_sink_up", sink="mqtt") == 0
        assert s.get("coffee_telemetry_sink_up", sink="influx") == 1

        # The broker comes back: the backlog drains.
        broker.start()
        await eventually(
            until(
                lambda s: (
                    s.get("coffee_telemetry_sink_connected", sink="mqtt") == 1
                    and s.get("coffee_telemetry_outbox_backlog_records", sink="mqtt") == 0
                )
            ),
            timeout_s=60,
            what="mqtt backlog drained after the broker returned",
            context=context,
        )
        assert agent.alive, context()
    finally:
        agent.stop()
