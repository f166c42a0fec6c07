"""Home Assistant discovery against a real Mosquitto: retained documents, state topics, removal.

A document is read back as Home Assistant would: retained, from a fresh subscription to
the discovery prefix; each is checked against the documented schema, and each
``value_template`` is rendered (Jinja, as Home Assistant does) on the message that really
arrived on the state topic the document names.

"What is retained now" is read deterministically: subscribe, then publish a marker on
the same subscription; the broker sends the retained messages before the marker.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from coffee_telemetry.agent.alerts.formats import alert_payload, alert_topic
from coffee_telemetry.agent.alerts.model import Alert, AlertState, Severity
from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.commands import Outgoing, encode_json
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.readings import Stamper, encode_reading
from coffee_telemetry.agent.sinks.homeassistant import (
    HOMEASSISTANT_STATE_FILE,
    HomeAssistantDiscovery,
    discovery_documents,
)
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from tests.agent.sinks.test_homeassistant_schema import parse_topic, problems, render
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SITE = "s1"


def site(prefix: str, ha_prefix: str, data_dir: Path, *, with_balance: bool = True) -> Config:
    devices: list[dict[str, object]] = [
        {"id": "umid-1", "driver": "moisture.ticket", "port": "/dev/a", "station": "recepcao"}
    ]
    if with_balance:
        devices.append({"id": "bal-1", "driver": "scale.mtsics", "port": "/dev/b"})
    return parse_config(
        {
            "site": {"id": SITE},
            "agent": {"data_dir": str(data_dir)},
            "mqtt": {
                "prefix": prefix,
                "homeassistant_discovery": True,
                "homeassistant_prefix": ha_prefix,
            },
            "devices": devices,
            "buses": [{"id": "rs485", "port": "/dev/c"}],
            "hullers": [{"id": "desc-1", "bus": "rs485", "bag_counter": 1}],
        }
    )


async def retained(port: int, topic_filter: str) -> dict[str, bytes]:
    """Every message retained under ``topic_filter`` now (see the module docstring)."""
    marker = f"zz-marker/{uuid.uuid4().hex}"
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic_filter, qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"end", qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                if str(msg.topic) == marker:
                    return got
                if msg.retain:  # what was retained at the subscription, not what came since
                    got[str(msg.topic)] = bytes(msg.payload)
    raise AssertionError("unreachable")


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[None]:
    task = asyncio.create_task(sink.connection_loop())
    try:
        async with asyncio.timeout(10):
            await sink._gate.up.wait()
        yield
    finally:
        await sink.close()
        async with asyncio.timeout(10):
            await task


def make_sink(cfg: Config, port: int, health: Health) -> MqttSink:
    sink = MqttSink(
        host="127.0.0.1",
        port=port,
        prefix=cfg.mqtt.prefix,
        site=SITE,
        health=health,
        client_id=f"agent-{cfg.mqtt.prefix}-{uuid.uuid4().hex[:6]}",
        publish_timeout_s=5.0,
        backoff=Backoff(initial_s=0.1, maximum_s=0.5),
    )
    state = cfg.agent.data_dir / HOMEASSISTANT_STATE_FILE
    sink.set_discovery(HomeAssistantDiscovery(cfg, state_path=state))
    return sink


def make_health(cfg: Config) -> Health:
    health = Health()
    for dev in cfg.devices:
        health.add_device(dev.id, driver=dev.driver, port=dev.port, station=dev.station)
    for huller in cfg.hullers:
        health.add_device(huller.id, driver="huller", port="/dev/c")
    return health


async def until_retained(port: int, topic_filter: str, want: set[str]) -> dict[str, bytes]:
    """The retained set, once it holds ``want`` (documents follow a connection's statuses)."""
    async with asyncio.timeout(10):
        while True:
            got = await retained(port, topic_filter)
            if want <= got.keys():
                return got
            await asyncio.sleep(0.05)


def alert(state: AlertState) -> Alert:
    return Alert(
        rule="wet_lot",
        subject="L-0042",
        state=state,
        severity=Severity.CRITICAL,
        message="ALERTA — Lote úmido: L-0042",
        data={"lot": "L-0042"},
        notify=True,
        since_ns=1,
        at_ns=2,
    )


async def test_documents_retained_reading_on_their_state_topic_and_removal(
    mosquitto: MosquittoServer, mqtt_prefix: str, tmp_path: Path
) -> None:
    ha = f"ha{uuid.uuid4().hex[:8]}"
    cfg = site(mqtt_prefix, ha, tmp_path)
    expected = discovery_documents(cfg)
    health = make_health(cfg)
    health.set_device_state("umid-1", DeviceState.ONLINE)
    sink = make_sink(cfg, mosquitto.port, health)
    async with running(sink):
        docs = await until_retained(mosquitto.port, f"{ha}/#", set(expected))
        # Retained at the right topics, nothing else, each as the documented schema says.
        assert docs == expected
        parsed: dict[str, dict[str, object]] = {}
        for topic, payload in docs.items():
            prefix, component, object_id = parse_topic(topic)
            assert prefix == ha
            doc = json.loads(payload)
            assert problems(component, object_id, doc) == [], topic
            parsed[object_id] = doc

        # A reading appears on the state topic the moisture document names, and the
        # template's path is in the JSON that arrived.
        moisture = parsed[f"{SITE}_umid-1_moisture"]
        state_topic = moisture["state_topic"]
        assert isinstance(state_topic, str)
        stamper = Stamper()
        reading = stamper.stamp(
            device="umid-1",
            measurement="moisture",
            fields={"moisture_pct": 12.7, "temperature_c": 25.1},
            tags={"site": SITE, "device": "umid-1", "station": "recepcao"},
        )
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(state_topic, qos=1)
            assert await sink.deliver([Record(id=1, payload=encode_reading(reading))]) == []
            async with asyncio.timeout(10):
                msg = await anext(aiter(client.messages))
        payload = bytes(msg.payload)
        assert json.loads(payload)["fields"]["moisture_pct"] == 12.7
        template = moisture["value_template"]
        assert isinstance(template, str)
        assert render(template, payload) == "12.7"
        temperature = parsed[f"{SITE}_umid-1_temperature"]["value_template"]
        assert isinstance(temperature, str)
        assert render(temperature, payload) == "25.1"

        # Availability: the topics named are retained, and say "online".
        statuses = await retained(mosquitto.port, f"{mqtt_prefix}/{SITE}/+/status")
        availability = moisture["availability"]
        assert isinstance(availability, list)
        for item in availability:
            got = statuses[item["topic"]]
            shown = (
                render(item["value_template"], got) if "value_template" in item else got.decode()
            )
            assert shown == item["payload_available"], item["topic"]

        # An alert opens: a binary sensor appears; it resolves: its document goes.
        firing = alert(AlertState.FIRING)
        sink.set_state(Outgoing(alert_topic(firing), encode_json(alert_payload(firing)), True))
        alert_config = f"{ha}/binary_sensor/{SITE}/{SITE}_alerts_wet_lot_L-0042/config"
        docs = await until_retained(mosquitto.port, f"{ha}/#", {alert_config})
        doc = json.loads(docs[alert_config])
        assert problems("binary_sensor", f"{SITE}_alerts_wet_lot_L-0042", doc) == []
        state = await retained(mosquitto.port, doc["state_topic"])
        assert render(doc["value_template"], state[doc["state_topic"]]) == "ON"
        resolved = alert(AlertState.RESOLVED)
        sink.set_state(Outgoing(alert_topic(resolved), encode_json(alert_payload(resolved)), True))
        async with asyncio.timeout(10):
            while alert_config in await retained(mosquitto.port, f"{ha}/#"):
                await asyncio.sleep(0.05)
        state = await retained(mosquitto.port, doc["state_topic"])
        assert render(doc["value_template"], state[doc["state_topic"]]) == "OFF"

    # The next start without the balance: its documents are emptied, the rest stay.
    smaller = site(mqtt_prefix, ha, tmp_path, with_balance=False)
    gone = set(expected) - set(discovery_documents(smaller))
    assert gone == {f"{ha}/sensor/{SITE}/{SITE}_bal-1_weight/config"}
    emptied: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe(f"{ha}/#", qos=1)
        sink = make_sink(smaller, mosquitto.port, make_health(smaller))
        async with running(sink):
            async with asyncio.timeout(10):
                async for msg in watcher.messages:
                    if not msg.retain and not msg.payload:
                        emptied.append((str(msg.topic), b""))
                        if {t for t, _ in emptied} >= gone:
                            break
            now = await retained(mosquitto.port, f"{ha}/#")
    assert {t for t, _ in emptied} == gone
    assert now == discovery_documents(smaller)
