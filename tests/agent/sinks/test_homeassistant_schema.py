"""Home Assistant's documented MQTT discovery schema, as a checker, and the checker's own tests.

The tables below are Home Assistant's documentation of MQTT discovery, written down key
by key: "MQTT Sensor" (``sensor.mqtt``), "MQTT binary sensor" (``binary_sensor.mqtt``),
the device registry and availability keys they share, the discovery topic format and
the ``origin`` mapping ("MQTT", section "Discovery messages"), and the device classes of
"Sensor" and "Binary sensor". ``problems(component, object_id, doc)`` lists every way a
discovery document departs from them; an empty list is a document Home Assistant takes.
"""

from __future__ import annotations

import json
import re

import jinja2
import jinja2.sandbox

#: ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; ids ``[a-zA-Z0-9_-]``.
DISCOVERY_TOPIC = re.compile(
    r"^(?P<prefix>[^/#+]+(?:/[^/#+]+)*?)/(?P<component>sensor|binary_sensor)"
    r"(?:/(?P<node_id>[a-zA-Z0-9_-]+))?/(?P<object_id>[a-zA-Z0-9_-]+)/config$"
)
OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")

STR, INT, BOOL, LIST, MAP = "string", "integer", "boolean", "list", "map"

#: Keys both components take, with their documented types.
COMMON: dict[str, str] = {
    "availability": LIST,
    "availability_mode": STR,
    "availability_template": STR,
    "availability_topic": STR,
    "device": MAP,
    "device_class": STR,
    "enabled_by_default": BOOL,
    "encoding": STR,
    "entity_category": STR,
    "entity_picture": STR,
    "expire_after": INT,
    "force_update": BOOL,
    "icon": STR,
    "json_attributes_template": STR,
    "json_attributes_topic": STR,
    "name": STR,
    "object_id": STR,
    "payload_available": STR,
    "payload_not_available": STR,
    "qos": INT,
    "state_topic": STR,
    "unique_id": STR,
    "value_template": STR,
    # "Adding information about the origin of a discovery message".
    "origin": MAP,
}
SCHEMAS: dict[str, dict[str, str]] = {
    "sensor": {
        **COMMON,
        "last_reset_value_template": STR,
        "options": LIST,
        "suggested_display_precision": INT,
        "state_class": STR,
        "unit_of_measurement": STR,
    },
    "binary_sensor": {**COMMON, "off_delay": INT, "payload_off": STR, "payload_on": STR},
}
REQUIRED = ("state_topic",)

DEVICE_KEYS: dict[str, str] = {
    "configuration_url": STR,
    "connections": LIST,
    "hw_version": STR,
    "identifiers": LIST,  # documented as string or list
    "manufacturer": STR,
    "model": STR,
    "model_id": STR,
    "name": STR,
    "serial_number": STR,
    "suggested_area": STR,
    "sw_version": STR,
    "via_device": STR,
}
AVAILABILITY_KEYS: dict[str, str] = {
    "payload_available": STR,
    "payload_not_available": STR,
    "topic": STR,
    "value_template": STR,
}
ORIGIN_KEYS: dict[str, str] = {"name": STR, "sw_version": STR, "support_url": STR}
AVAILABILITY_MODES = ("all", "any", "latest")
STATE_CLASSES = ("measurement", "total", "total_increasing")
#: "When set, the entity category must be `diagnostic` for sensors."
ENTITY_CATEGORIES = ("diagnostic", "config")

#: Sensor device classes that this agent may use, with their documented units.
SENSOR_CLASS_UNITS: dict[str, tuple[str, ...]] = {
    "moisture": ("%",),
    "temperature": ("°C", "°F", "K"),
    "weight": ("kg", "g", "mg", "µg", "oz", "lb", "st"),
    "duration": ("d", "h", "min", "s", "ms"),
    "humidity": ("%",),
}
BINARY_SENSOR_CLASSES = (
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
    "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
    "smoke", "sound", "tamper", "update", "vibration", "window",
)  # fmt: skip

_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    STR: str,
    INT: int,
    BOOL: bool,
    LIST: list,
    MAP: dict,
}


def _type_ok(value: object, kind: str) -> bool:
    if kind == INT and isinstance(value, bool):
        return False
    return isinstance(value, _PYTHON_TYPES[kind])


def _check_keys(where: str, doc: dict[str, object], schema: dict[str, str]) -> list[str]:
    found = []
    for key, value in doc.items():
        if key not in schema:
            found.append(f"{where}: {key!r} is not a documented key")
        elif not _type_ok(value, schema[key]):
            found.append(f"{where}: {key!r} should be a {schema[key]}, is {value!r}")
    return found


def template_problems(where: str, template: object) -> list[str]:
    """Whether ``template`` parses as a Jinja template (Home Assistant's language)."""
    if not isinstance(template, str):
        return [f"{where}: not a template string"]
    try:
        jinja2.sandbox.ImmutableSandboxedEnvironment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{where}: template does not parse: {exc}"]
    return []


def problems(component: str, object_id: str, doc: object) -> list[str]:
    """Every departure of ``doc`` from the documented schema of ``component``."""
    if component not in SCHEMAS:
        return [f"{component!r} is not a component this checker knows"]
    if not isinstance(doc, dict):
        return ["the payload is not a JSON object"]
    found = _check_keys(component, doc, SCHEMAS[component])
    found += [f"{component}: {key!r} is required" for key in REQUIRED if key not in doc]
    if not OBJECT_ID.match(object_id):
        found.append(f"object id {object_id!r} has characters outside [a-zA-Z0-9_-]")
    # Best practice: object id = unique id; and a device needs a unique id.
    if doc.get("unique_id") != object_id:
        found.append(f"unique_id {doc.get('unique_id')!r} is not the object id {object_id!r}")
    for key in ("value_template", "json_attributes_template", "availability_template"):
        if key in doc:
            found += template_problems(key, doc[key])
    if "availability" in doc and "availability_topic" in doc:
        found.append("availability and availability_topic must not be used together")
    if doc.get("availability_mode", "latest") not in AVAILABILITY_MODES:
        found.append(f"availability_mode {doc['availability_mode']!r} is not one of all/any/latest")
    for i, item in enumerate(doc.get("availability") or []):
        if not isinstance(item, dict):
            found.append(f"availability[{i}] is not a map")
            continue
        found += _check_keys(f"availability[{i}]", item, AVAILABILITY_KEYS)
        if "topic" not in item:
            found.append(f"availability[{i}]: 'topic' is required")
        if "value_template" in item:
            found += template_problems(f"availability[{i}].value_template", item["value_template"])
    device = doc.get("device")
    if isinstance(device, dict):
        found += _check_keys("device", device, DEVICE_KEYS)
        if not device.get("identifiers") and not device.get("connections"):
            found.append("device: at least one of identifiers or connections must be present")
        ids = device.get("identifiers")
        if isinstance(ids, list) and not all(isinstance(i, str) for i in ids):
            found.append("device: identifiers must be strings")
    origin = doc.get("origin")
    if isinstance(origin, dict):
        found += _check_keys("origin", origin, ORIGIN_KEYS)
        if "name" not in origin:
            found.append("origin: 'name' is required")
    if "qos" in doc and doc["qos"] not in (0, 1, 2):
        found.append(f"qos {doc['qos']!r} is not 0, 1 or 2")
    category = doc.get("entity_category")
    if category is not None and category not in ENTITY_CATEGORIES:
        found.append(f"entity_category {category!r} is not documented")
    if component == "sensor":
        found += _sensor_problems(doc)
    else:
        cls = doc.get("device_class")
        if cls is not None and cls not in BINARY_SENSOR_CLASSES:
            found.append(f"binary_sensor device_class {cls!r} is not documented")
    return found


def _sensor_problems(doc: dict[str, object]) -> list[str]:
    found = []
    cls = doc.get("device_class")
    unit = doc.get("unit_of_measurement")
    if cls is not None:
        if cls not in SENSOR_CLASS_UNITS:
            found.append(f"sensor device_class {cls!r} is not one this checker knows")
        elif unit not in SENSOR_CLASS_UNITS[cls]:
            found.append(f"unit {unit!r} is not documented for device_class {cls!r}")
    state_class = doc.get("state_class")
    if state_class is not None and state_class not in STATE_CLASSES:
        found.append(f"state_class {state_class!r} is not documented")
    if "options" in doc and (state_class is not None or unit is not None):
        found.append("options cannot be used with state_class or unit_of_measurement")
    if doc.get("entity_category") not in (None, "diagnostic"):
        found.append("a sensor's entity_category must be diagnostic")
    return found


def parse_topic(topic: str) -> tuple[str, str, str]:
    """``(discovery_prefix, component, object_id)`` of a discovery topic.

    Raises:
        AssertionError: Not ``<prefix>/<component>/[<node_id>/]<object_id>/config``.
    """
    m = DISCOVERY_TOPIC.match(topic)
    assert m is not None, f"{topic!r} is not a discovery topic"
    return m["prefix"], m["component"], m["object_id"]


def render(template: str, payload: bytes) -> str:
    """Render an MQTT ``value_template`` as Home Assistant does: ``value`` and ``value_json``."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    text = payload.decode("utf-8")
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value=text, value_json=value_json).strip()


# -- the checker can fail ------------------------------------------------------------------

GOOD: dict[str, object] = {
    "name": "Umidade",
    "unique_id": "s_d_moisture",
    "state_topic": "coffee/s/d/reading",
    "value_template": "{{ value_json['fields']['moisture_pct'] }}",
    "device_class": "moisture",
    "unit_of_measurement": "%",
    "state_class": "measurement",
    "availability": [{"topic": "coffee/s/agent/status"}],
    "availability_mode": "all",
    "device": {"identifiers": ["x"], "name": "d"},
    "origin": {"name": "coffee-telemetry"},
}


def test_a_documented_document_passes() -> None:
    assert problems("sensor", "s_d_moisture", GOOD) == []


def test_each_kind_of_departure_is_found() -> None:
    bad_cases: list[tuple[dict[str, object], str]] = [
        ({"state_topic": None}, "should be a string"),
        ({"colour": "red"}, "not a documented key"),
        ({"unit_of_measurement": "kg"}, "not documented for device_class"),
        ({"state_class": "sometimes"}, "state_class"),
        ({"device_class": "coffee"}, "not one this checker knows"),
        ({"availability_mode": "most"}, "availability_mode"),
        ({"availability": [{"payload_available": "online"}]}, "'topic' is required"),
        ({"availability_topic": "a/b"}, "must not be used together"),
        ({"device": {"name": "d"}}, "identifiers or connections"),
        ({"device": {"identifiers": ["x"], "colour": "red"}}, "not a documented key"),
        ({"origin": {"sw_version": "1"}}, "'name' is required"),
        ({"value_template": "{{ value_json['x' }}"}, "does not parse"),
        ({"unique_id": "other"}, "is not the object id"),
        ({"qos": 3}, "qos"),
        ({"suggested_display_precision": True}, "should be a integer"),
    ]
    for change, expected in bad_cases:
        found = problems("sensor", "s_d_moisture", {**GOOD, **change})
        assert any(expected in p for p in found), (change, found)
    missing = {k: v for k, v in GOOD.items() if k != "state_topic"}
    assert "sensor: 'state_topic' is required" in problems("sensor", "s_d_moisture", missing)
    assert problems("sensor", "bad id!", {**GOOD, "unique_id": "bad id!"})
    assert problems("binary_sensor", "s_d_moisture", {**GOOD, "device_class": "wet"})


def test_topic_parser_and_renderer() -> None:
    assert parse_topic("homeassistant/sensor/s_d_x/config") == ("homeassistant", "sensor", "s_d_x")
    assert parse_topic("ha/site/binary_sensor/a-b/config")[1] == "binary_sensor"
    for bad in ("homeassistant/sensor/a b/config", "homeassistant/light/x/config", "x/config"):
        try:
            parse_topic(bad)
        except AssertionError:
            continue
        raise AssertionError(f"{bad!r} was taken")
    assert render("{{ value_json['a'] }}", b'{"a": 1.5}') == "1.5"
    assert render("{{ value }}", b"online") == "online"
