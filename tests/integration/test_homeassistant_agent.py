"""The real agent process with Home Assistant discovery and JSON logs, a meter on a pty.

``coffee-telemetry run`` with ``homeassistant_discovery = true`` and ``log_format =
"json"``: the documents are retained where Home Assistant looks, a ticket printed by the
simulated meter reaches the state topic the moisture document names and renders through
its template, every line the agent logged is one JSON object, and after the meter is
removed from the site file the next start empties its documents.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiomqtt
import pytest

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.sinks.test_homeassistant_schema import parse_topic, problems, render
from tests.integration.harness import AgentProcess, DeviceSpec, write_site_config
from tests.integration.test_homeassistant_discovery import retained
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SITE = "ourofino"


def write_site(
    path: Path, *, data_dir: Path, port: int, prefix: str, ha: str, devices: list[DeviceSpec]
) -> Path:
    write_site_config(
        path, data_dir=data_dir, devices=devices, mqtt_port=port, prefix=prefix,
        influx_url=None, site=SITE,
    )  # fmt: skip
    text = path.read_text()
    text = text.replace("[agent]\n", '[agent]\nlog_format = "json"\n', 1)
    text = text.replace(
        "[mqtt]\n", f'[mqtt]\nhomeassistant_discovery = true\nhomeassistant_prefix = "{ha}"\n', 1
    )
    path.write_text(text)
    return path


async def wait_for(port: int, topic_filter: str, check: object, what: str) -> dict[str, bytes]:
    assert callable(check)
    async with asyncio.timeout(30):
        while True:
            got = await retained(port, topic_filter)
            if check(got):
                return got
            await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")  # pragma: no cover


def json_lines(log: Path) -> list[dict[str, object]]:
    """Every line of the agent's output, each of which must be one JSON object."""
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line]
    assert lines, "the agent logged nothing"
    docs = []
    for line in lines:
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        assert {"time", "level", "logger", "message"} <= doc.keys(), line
        docs.append(doc)
    return docs


async def test_agent_feeds_home_assistant_and_logs_json(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    prefix, ha = f"t{uuid.uuid4().hex[:8]}", f"ha{uuid.uuid4().hex[:8]}"
    (tmp_path / "dev").mkdir()
    meter = PtyPort(link=tmp_path / "dev" / "umid-1")
    meter.open()
    data_dir = tmp_path / "data"
    devices = [
        DeviceSpec("umid-1", "moisture.ticket", str(tmp_path / "dev" / "umid-1"), "recepcao"),
        DeviceSpec("umid-2", "moisture.tesma", str(tmp_path / "dev" / "absent"), "secador"),
    ]
    config = write_site(
        tmp_path / "site.toml", data_dir=data_dir, port=mosquitto.port, prefix=prefix, ha=ha,
        devices=devices,
    )  # fmt: skip
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    try:
        moisture_topic = f"{ha}/sensor/{SITE}/{SITE}_umid-1_moisture/config"
        docs = await wait_for(
            mosquitto.port, f"{ha}/#", lambda got: moisture_topic in got, "discovery"
        )
        assert {parse_topic(t)[2] for t in docs} == {
            f"{SITE}_agent_status",
            f"{SITE}_umid-1_moisture",
            f"{SITE}_umid-1_temperature",
            f"{SITE}_umid-1_bulk_density",
            f"{SITE}_umid-2_moisture",
            f"{SITE}_recepcao_lot",
            f"{SITE}_secador_lot",
        }
        for topic, payload in docs.items():
            _, component, object_id = parse_topic(topic)
            assert problems(component, object_id, json.loads(payload)) == [], topic
        doc = json.loads(docs[moisture_topic])
        await wait_for(
            mosquitto.port,
            f"{prefix}/{SITE}/umid-1/status",
            lambda got: any(json.loads(p).get("state") == "online" for p in got.values()),
            "umid-1 online",
        )
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(doc["state_topic"], qos=1)
            sent = await TicketMeterSim(meter).emit(
                moisture_pct=12.3, temperature_c=24.5, bulk_density_kg_hl=38.2
            )
            assert sent is not None
            async with asyncio.timeout(20):
                msg = await anext(aiter(client.messages))
        payload = bytes(msg.payload)
        assert render(doc["value_template"], payload) == "12.3"
        for field, value in (("temperature", "24.5"), ("bulk_density", "38.2")):
            other = json.loads(docs[f"{ha}/sensor/{SITE}/{SITE}_umid-1_{field}/config"])
            assert render(other["value_template"], payload) == value
        # The lot sensor reads the station's retained lot document.
        lot = json.loads(docs[f"{ha}/sensor/{SITE}/{SITE}_recepcao_lot/config"])
        lots = await retained(mosquitto.port, lot["state_topic"])
        assert render(lot["value_template"], lots[lot["state_topic"]]) == "sem lote"
        assert agent.stop() == 0
        logs = json_lines(tmp_path / "agent.log")
        # The device loop's lines carry the device, the delivery loop's the sink.
        assert any(d.get("device") == "umid-1" for d in logs), logs[-5:]
        assert any(d.get("device") == "umid-2" for d in logs)
        broker_lines = [d for d in logs if "MQTT broker" in str(d["message"])]
        assert broker_lines
        assert all(d.get("sink") == "mqtt" for d in broker_lines)

        # umid-2 leaves the site file: the next start empties its documents.
        write_site(
            config, data_dir=data_dir, port=mosquitto.port, prefix=prefix, ha=ha,
            devices=devices[:1],
        )  # fmt: skip
        agent.start()
        gone = {
            f"{ha}/sensor/{SITE}/{SITE}_umid-2_moisture/config",
            f"{ha}/sensor/{SITE}/{SITE}_secador_lot/config",
        }
        now = await wait_for(
            mosquitto.port, f"{ha}/#", lambda got: not (gone & got.keys()), "removal"
        )
        assert moisture_topic in now
        assert set(now) == set(docs) - gone
    finally:
        if agent.alive:
            agent.stop()
        meter.close()
