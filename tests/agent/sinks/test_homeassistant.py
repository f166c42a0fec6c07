"""Home Assistant discovery documents: every device kind, checked against the documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.alerts.formats import alert_payload, alert_topic
from coffee_telemetry.agent.alerts.model import Alert, AlertState, Severity
from coffee_telemetry.agent.commands import encode_json
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.readings import Reading, encode_reading
from coffee_telemetry.agent.sinks.homeassistant import (
    HOMEASSISTANT_STATE_FILE,
    HomeAssistantDiscovery,
    alert_document,
    discovery_documents,
    discovery_for,
)
from tests.agent.sinks.test_homeassistant_schema import parse_topic, problems, render

SITE = "ourofino"
PREFIX = "coffee"


def site(tmp: Path, *, discovery: bool = True, devices: list[str] | None = None) -> Config:
    all_devices: list[dict[str, object]] = [
        {"id": "umid-1", "driver": "moisture.ticket", "port": "/dev/a", "station": "recepcao"},
        {"id": "umid-2", "driver": "moisture.tesma", "port": "/dev/b", "station": "secador"},
        {"id": "bal-1", "driver": "scale.mtsics", "port": "/dev/c"},
        {
            "id": "bal-2",
            "driver": "scale.toledo_continuous",
            "port": "/dev/d",
            "station": "recepcao",
        },
        {"id": "bal-3", "driver": "scale.ascii", "port": "/dev/e"},
        {"id": "umid-off", "driver": "moisture.ticket", "port": "/dev/f", "enabled": False},
    ]
    chosen = [d for d in all_devices if devices is None or d["id"] in devices]
    return parse_config(
        {
            "site": {"id": SITE, "name": "Armazém Ouro Fino"},
            "agent": {"data_dir": str(tmp)},
            "mqtt": {
                "prefix": PREFIX,
                "homeassistant_discovery": discovery,
                "homeassistant_devices": {
                    "umid-1": {"manufacturer": "Gehaka", "model": "G650", "serial_number": "A123"},
                },
            },
            "devices": chosen,
            "buses": [{"id": "rs485", "port": "/dev/g"}],
            "hullers": [
                {"id": "desc-1", "name": "Descascador 1", "bus": "rs485", "bag_counter": 1}
            ],
        }
    )


def by_object_id(cfg: Config) -> dict[str, tuple[str, dict[str, object]]]:
    out = {}
    for topic, payload in discovery_documents(cfg).items():
        prefix, component, object_id = parse_topic(topic)
        assert prefix == "homeassistant"
        out[object_id] = (component, json.loads(payload))
    return out


def test_every_document_follows_the_documented_schema(tmp_path: Path) -> None:
    for object_id, (component, doc) in by_object_id(site(tmp_path)).items():
        assert problems(component, object_id, doc) == [], object_id


def test_one_entity_per_field_the_driver_gives(tmp_path: Path) -> None:
    docs = by_object_id(site(tmp_path))
    expected = {
        "ourofino_agent_status": "binary_sensor",
        # A ticket meter prints moisture, temperature and bulk density; Tesma frames only moisture.
        "ourofino_umid-1_moisture": "sensor",
        "ourofino_umid-1_temperature": "sensor",
        "ourofino_umid-1_bulk_density": "sensor",
        "ourofino_umid-2_moisture": "sensor",
        "ourofino_bal-1_weight": "sensor",
        "ourofino_bal-2_weight": "sensor",
        "ourofino_bal-3_weight": "sensor",
        "ourofino_desc-1_hours": "sensor",
        "ourofino_desc-1_bags": "sensor",
        "ourofino_recepcao_lot": "sensor",
        "ourofino_secador_lot": "sensor",
    }
    assert {k: c for k, (c, _) in docs.items()} == expected  # a disabled device has none


def test_units_classes_and_state_topics(tmp_path: Path) -> None:
    docs = {k: d for k, (_, d) in by_object_id(site(tmp_path)).items()}
    cases = {
        "ourofino_umid-1_moisture": ("moisture", "%", "measurement"),
        "ourofino_umid-1_temperature": ("temperature", "°C", "measurement"),
        "ourofino_umid-1_bulk_density": (None, "kg/hl", "measurement"),
        "ourofino_bal-1_weight": ("weight", "kg", "measurement"),
        "ourofino_desc-1_hours": ("duration", "h", "total_increasing"),
        "ourofino_desc-1_bags": (None, "sacas", "total_increasing"),
    }
    for object_id, (device_class, unit, state_class) in cases.items():
        doc = docs[object_id]
        assert doc.get("device_class") == device_class, object_id
        assert doc["unit_of_measurement"] == unit
        assert doc["state_class"] == state_class
        device = object_id.split("_")[1]
        # Topics the agent already publishes: <prefix>/<site>/<device>/reading.
        assert doc["state_topic"] == f"{PREFIX}/{SITE}/{device}/reading"
        assert doc["availability"] == [
            {
                "topic": f"{PREFIX}/{SITE}/agent/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            },
            {
                "topic": f"{PREFIX}/{SITE}/{device}/status",
                "value_template": "{{ value_json['state'] }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ]
        assert doc["availability_mode"] == "all"
    lot = docs["ourofino_recepcao_lot"]
    assert lot["state_topic"] == f"{PREFIX}/{SITE}/lots/recepcao"
    agent = docs["ourofino_agent_status"]
    assert agent["state_topic"] == f"{PREFIX}/{SITE}/agent/status"
    assert (agent["payload_on"], agent["payload_off"]) == ("online", "offline")


def test_device_registry_info(tmp_path: Path) -> None:
    docs = {k: d for k, (_, d) in by_object_id(site(tmp_path)).items()}
    meter = docs["ourofino_umid-1_moisture"]["device"]
    assert meter == {
        "identifiers": ["coffee_telemetry_ourofino_umid-1"],
        "name": "umid-1",
        "manufacturer": "Gehaka",
        "model": "G650",
        "serial_number": "A123",
        "suggested_area": "Armazém Ouro Fino",
        "via_device": "coffee_telemetry_ourofino_agent",
    }
    balance = docs["ourofino_bal-1_weight"]["device"]
    assert isinstance(balance, dict)
    assert balance["manufacturer"] == "Mettler Toledo"
    assert "serial_number" not in balance  # only where configured
    huller = docs["ourofino_desc-1_hours"]["device"]
    assert isinstance(huller, dict)
    assert huller["name"] == "Descascador 1"
    agent = docs["ourofino_agent_status"]["device"]
    assert isinstance(agent, dict)
    assert agent["identifiers"] == ["coffee_telemetry_ourofino_agent"]
    # Every device's via_device names the agent's device.
    for doc in docs.values():
        device = doc["device"]
        assert isinstance(device, dict)
        assert device.get("via_device", "coffee_telemetry_ourofino_agent") in agent["identifiers"]


def reading(measurement: str, fields: dict[str, float | str | bool]) -> bytes:
    return encode_reading(
        Reading(
            ts_ns=1_796_035_314_123_456_789,
            seq=1,
            device="d",
            measurement=measurement,
            fields=fields,
            tags={"site": SITE, "device": "d"},
        )
    )


def test_value_templates_take_the_field_from_the_reading_json(tmp_path: Path) -> None:
    docs = {k: d for k, (_, d) in by_object_id(site(tmp_path)).items()}

    def value(object_id: str, payload: bytes) -> str:
        template = docs[object_id]["value_template"]
        assert isinstance(template, str)
        return render(template, payload)

    full = reading(
        "moisture", {"moisture_pct": 11.8, "temperature_c": 24.6, "bulk_density_kg_hl": 38.2}
    )
    assert value("ourofino_umid-1_moisture", full) == "11.8"
    assert value("ourofino_umid-1_temperature", full) == "24.6"
    assert value("ourofino_umid-1_bulk_density", full) == "38.2"
    # A ticket without a PH line: '' (Home Assistant keeps the sensor's value).
    assert value("ourofino_umid-1_bulk_density", reading("moisture", {"moisture_pct": 12.0})) == ""
    assert value("ourofino_bal-1_weight", reading("scale", {"weight_kg": 60.25})) == "60.25"
    huller = reading("huller", {"hours_total": 12.5, "bags_total": 340.0, "running": True})
    assert value("ourofino_desc-1_hours", huller) == "12.5"
    assert value("ourofino_desc-1_bags", huller) == "340.0"
    # The same topic carries maintenance_status readings: they leave the sensors alone.
    status = reading("maintenance_status", {"hours_since": 3.0, "state": "ok"})
    assert value("ourofino_desc-1_hours", status) == ""
    lot = docs["ourofino_recepcao_lot"]["value_template"]
    assert isinstance(lot, str)
    assert render(lot, encode_json({"station": "recepcao", "lot": "L-0042"})) == "L-0042"
    assert render(lot, encode_json({"station": "recepcao", "lot": None})) == "sem lote"
    status_tpl = docs["ourofino_umid-1_moisture"]["availability"][1]["value_template"]  # type: ignore[index]
    assert render(status_tpl, encode_json({"state": "offline", "port": "/dev/a"})) == "offline"


def alert(state: AlertState, subject: str = "L-0042/B") -> Alert:
    return Alert(
        rule="wet_lot",
        subject=subject,
        state=state,
        severity=Severity.CRITICAL,
        message="ALERTA — Lote úmido",
        data={"lot": subject},
        notify=True,
        since_ns=1,
        at_ns=2,
    )


def test_open_alerts_are_binary_sensors_and_closed_ones_go(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    firing = alert(AlertState.FIRING)
    found = alert_document(cfg, alert_topic(firing), encode_json(alert_payload(firing)))
    assert found is not None
    topic, payload = found
    assert payload is not None
    _, component, object_id = parse_topic(topic)
    assert component == "binary_sensor"
    doc = json.loads(payload)
    assert problems(component, object_id, doc) == []
    assert doc["device_class"] == "problem"
    assert doc["state_topic"] == f"{PREFIX}/{SITE}/alerts/wet_lot/L-0042%2FB"
    assert doc["json_attributes_topic"] == doc["state_topic"]
    assert render(doc["value_template"], encode_json(alert_payload(firing))) == "ON"
    for state, shown in [(AlertState.ACKNOWLEDGED, "ON"), (AlertState.PENDING, "OFF")]:
        other = encode_json(alert_payload(alert(state)))
        assert render(doc["value_template"], other) == shown
        assert alert_document(cfg, alert_topic(alert(state)), other) is not None
    resolved = alert(AlertState.RESOLVED)
    assert render(doc["value_template"], encode_json(alert_payload(resolved))) == "OFF"
    assert alert_document(cfg, alert_topic(resolved), encode_json(alert_payload(resolved))) == (
        topic,
        None,
    )
    # Subjects that differ only in characters an object id cannot hold stay apart.
    near = alert(AlertState.FIRING, "L-0042_B")
    found_other = alert_document(cfg, alert_topic(near), encode_json(alert_payload(near)))
    assert found_other is not None
    assert found_other[0] != topic
    # Not an alert: nothing.
    assert alert_document(cfg, "lots/recepcao", b'{"lot": null}') is None


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))


async def test_removal_of_a_device_and_of_a_resolved_alert(tmp_path: Path) -> None:
    state = tmp_path / HOMEASSISTANT_STATE_FILE
    cfg = site(tmp_path)
    first = HomeAssistantDiscovery(cfg, state_path=state)
    publish = Recorder()
    firing = alert(AlertState.FIRING)
    await first.on_state(alert_topic(firing), encode_json(alert_payload(firing)), publish)
    await first.on_connect(publish)
    announced = {t for t, p in publish.sent if p}
    assert announced == set(discovery_documents(cfg)) | {publish.sent[0][0]}
    assert set(json.loads(state.read_text())["topics"]) == announced

    # The next start: umid-2 left the site file, and the alert resolved meanwhile.
    smaller = site(tmp_path, devices=["umid-1", "bal-1", "bal-2", "bal-3"])
    second = HomeAssistantDiscovery(smaller, state_path=state)
    publish = Recorder()
    await second.on_connect(publish)
    removed = {t for t, p in publish.sent if p == b""}
    assert "homeassistant/sensor/ourofino/ourofino_umid-2_moisture/config" in removed
    assert "homeassistant/sensor/ourofino/ourofino_secador_lot/config" in removed
    alert_topic_ha = next(iter(announced - set(discovery_documents(cfg))))
    assert alert_topic_ha in removed  # not seen open since the start
    assert second.announced == set(discovery_documents(smaller))
    assert set(json.loads(state.read_text())["topics"]) == set(discovery_documents(smaller))

    # An alert opens, then resolves: announced, then its document emptied.
    publish = Recorder()
    await second.on_state(alert_topic(firing), encode_json(alert_payload(firing)), publish)
    resolved = alert(AlertState.RESOLVED)
    await second.on_state(alert_topic(resolved), encode_json(alert_payload(resolved)), publish)
    assert [p == b"" for _, p in publish.sent] == [False, True]
    assert publish.sent[0][0] == publish.sent[1][0] == alert_topic_ha
    # A resolved alert never announced costs nothing.
    publish = Recorder()
    await second.on_state(alert_topic(resolved), encode_json(alert_payload(resolved)), publish)
    assert publish.sent == []


async def test_switching_discovery_off_removes_everything(tmp_path: Path) -> None:
    state = tmp_path / HOMEASSISTANT_STATE_FILE
    assert discovery_for(site(tmp_path, discovery=False)) is None  # never on: nothing to do
    on = discovery_for(site(tmp_path))
    assert on is not None
    await on.on_connect(Recorder())
    off = discovery_for(site(tmp_path, discovery=False))
    assert off is not None  # it was on before: its documents must go
    publish = Recorder()
    await off.on_connect(publish)
    assert {t for t, _ in publish.sent} == set(discovery_documents(site(tmp_path)))
    assert all(p == b"" for _, p in publish.sent)
    assert json.loads(state.read_text())["topics"] == []


async def test_a_state_file_that_cannot_be_written_is_counted(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    ha = HomeAssistantDiscovery(site(tmp_path), state_path=blocked / "homeassistant.json")
    publish = Recorder()
    await ha.on_connect(publish)  # publishes anyway; the write fails and is counted
    assert len(publish.sent) == len(discovery_documents(site(tmp_path)))
    assert ha.failures == 2  # it could neither be read nor written
    assert ha.last_error is not None
    assert ha.last_error.startswith("cannot write")


STATE_FILE_TOPICS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                f"homeassistant/sensor/{SITE}/{SITE}_umid-1_moisture/config",
                f"ha/binary_sensor/{SITE}/{SITE}_alerts_wet_lot_L-1/config",
                "coffee/ourofino/cmd/lot/config",
                "homeassistant/sensor/other/other_umid-1_moisture/config",
                "homeassistant/#/x/config",
            ]
        ),
        st.text(max_size=40),
    ),
    max_size=6,
).map(lambda topics: json.dumps({"topics": topics}).encode())


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), STATE_FILE_TOPICS))
def test_any_state_file_bytes_are_read_or_refused(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / HOMEASSISTANT_STATE_FILE
        path.write_bytes(data)
        ha = HomeAssistantDiscovery(site(Path(tmp)), state_path=path)
        for topic in ha.announced:
            _, _, object_id = parse_topic(topic)
            assert object_id.startswith(f"{SITE}_")


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=60),
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["rule", "subject", "state", "x"]),
            st.one_of(st.text(max_size=20), st.integers(), st.none()),
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_any_state_is_followed_or_ignored(suffix: str, payload: bytes) -> None:
    found = alert_document(CFG, "alerts/" + suffix, payload)
    if found is not None:
        topic, document = found
        _, component, object_id = parse_topic(topic)
        if document is not None:
            assert problems(component, object_id, json.loads(document)) == []


CFG = parse_config({"site": {"id": SITE}, "mqtt": {"homeassistant_discovery": True}})


def test_config_keys_are_checked() -> None:
    cases = [
        ({"homeassistant_prefix": "ha/#"}, "mqtt.homeassistant_prefix"),
        ({"homeassistant_devices": {"Umid 1": {"model": "x"}}}, "mqtt.homeassistant_devices"),
        ({"homeassistant_devices": {"u1": {"colour": "x"}}}, "unknown key"),
        ({"homeassistant_devices": {"u1": {"serial_number": ""}}}, "serial_number"),
    ]
    for mqtt, expected in cases:
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            parse_config({"site": {"id": SITE}, "mqtt": mqtt})
    assert parse_config({"site": {"id": SITE}}).mqtt.homeassistant_discovery is False


def test_names_follow_the_site_language(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "site": {"id": SITE},
            "agent": {"data_dir": str(tmp_path)},
            "alerts": {"lang": "en"},
            "mqtt": {"homeassistant_discovery": True},
            "devices": [{"id": "u1", "driver": "moisture.tesma", "port": "/a", "station": "st"}],
            "buses": [{"id": "rs485", "port": "/dev/g"}],
            "hullers": [{"id": "h1", "bus": "rs485", "bag_counter": 1}],
        }
    )
    docs = {k: d for k, (_, d) in by_object_id(cfg).items()}
    assert docs["ourofino_u1_moisture"]["name"] == "Moisture"
    assert docs["ourofino_h1_bags"]["unit_of_measurement"] == "bags"
    lot = docs["ourofino_st_lot"]["value_template"]
    assert isinstance(lot, str)
    assert render(lot, encode_json({"station": "st", "lot": None})) == "no lot"
