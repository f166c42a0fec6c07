"""Home Assistant MQTT discovery: the site's equipment as Home Assistant devices.

With ``[mqtt] homeassistant_discovery = true`` the MQTT sink publishes, retained, one
discovery document per entity at ``<ha_prefix>/<component>/<site>/<object_id>/config``
(``ha_prefix`` is ``[mqtt] homeassistant_prefix``, ``homeassistant`` by default), with
``object_id`` = ``unique_id`` = ``<site>_<device>_<field>``:

=============================  =============  =========================================
entity                         component      state topic (already published)
=============================  =============  =========================================
meter moisture, temperature,   sensor         ``<prefix>/<site>/<device>/reading``
bulk density (ticket meters)
scale weight                   sensor         ``<prefix>/<site>/<device>/reading``
huller hours, bags             sensor         ``<prefix>/<site>/<huller>/reading``
station lot                    sensor         ``<prefix>/<site>/lots/<station>``
open alert                     binary_sensor  ``<prefix>/<site>/alerts/<rule>/<subject>``
agent connection               binary_sensor  ``<prefix>/<site>/agent/status``
=============================  =============  =========================================

No topic is added for Home Assistant: each entity reads a topic the agent publishes
anyway, through a ``value_template`` into its JSON. One reading topic carries several
measurements (a huller's ``huller`` readings and its ``maintenance_status``), and a
reading may lack a field (a ticket without a ``PH:`` line); the template renders an
empty string then, which Home Assistant ignores for a numeric sensor (the sensor keeps
its value; "MQTT Sensor", ``state_topic``).

Availability is what the agent already keeps retained: ``agent/status`` (its Last Will
says ``offline``) and, for equipment, ``<device>/status``'s ``state``; both must say
``online`` (``availability_mode = all``).

Theory of operation
-------------------
Which documents exist is a function of the site file (``discovery_documents``) plus
the open alerts, which come and go: the sink hands every retained state it publishes to
``on_state``; an ``alerts/...`` state that is open (not ``resolved``) gets its binary
sensor announced, and a resolved one gets its document removed (an empty retained
payload, after the ``resolved`` state itself, so the sensor ends ``off``).

What was announced is remembered in ``data_dir/homeassistant.json``. On every
connection, after the states, ``on_connect`` publishes every document again (retained,
so an unchanged one costs the broker nothing) and an empty payload for each topic
remembered but no longer wanted: a device removed from the site file, a huller gone,
an alert that is no longer open, or everything when discovery was switched off.
A file that cannot be read or written is logged and counted; discovery goes on from
memory, and acquisition never notices.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from coffee_telemetry.agent.config import Config

__all__ = [
    "AVAILABLE",
    "HOMEASSISTANT_STATE_FILE",
    "NOT_AVAILABLE",
    "HomeAssistantDiscovery",
    "Publish",
    "alert_document",
    "discovery_documents",
    "discovery_for",
]

log = logging.getLogger(__name__)

#: Where the topics announced are remembered, in ``data_dir``.
HOMEASSISTANT_STATE_FILE = "homeassistant.json"

#: Payloads of ``agent/status`` and of ``<device>/status``'s ``state``.
AVAILABLE = "online"
NOT_AVAILABLE = "offline"

#: Publish ``payload`` retained at QoS 1 on an absolute topic.
Publish = Callable[[str, bytes], Awaitable[None]]

#: An alert state that keeps its binary sensor (anything but ``resolved``).
OPEN_STATES = ("pending", "firing", "acknowledged")
#: Alert states shown as ``on`` (a problem somebody must see).
ON_STATES = ("firing", "acknowledged")

_OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _tr(lang: str, pt: str, en: str) -> str:
    return pt if lang == "pt-BR" else en


#: A count of bags has no unit Home Assistant knows: the word is the unit.
BAGS_UNIT = "bags"


@dataclass(frozen=True, slots=True)
class _Field:
    """One numeric reading field as a Home Assistant sensor."""

    key: str  # the ``<field>`` of the object id
    measurement: str
    field: str
    name_pt: str
    name_en: str
    unit: str  # ``BAGS_UNIT``: the word for bags, in the site's language
    device_class: str | None
    state_class: str
    precision: int


MOISTURE = _Field(
    "moisture", "moisture", "moisture_pct", "Umidade", "Moisture", "%", "moisture", "measurement", 1
)
TEMPERATURE = _Field(
    "temperature",
    "moisture",
    "temperature_c",
    "Temperatura",
    "Temperature",
    "°C",
    "temperature",
    "measurement",
    1,
)
BULK_DENSITY = _Field(
    "bulk_density",
    "moisture",
    "bulk_density_kg_hl",
    "Peso hectolítrico",
    "Bulk density",
    "kg/hl",
    None,
    "measurement",
    1,
)
WEIGHT = _Field("weight", "scale", "weight_kg", "Peso", "Weight", "kg", "weight", "measurement", 2)
HOURS = _Field(
    "hours", "huller", "hours_total", "Horas de trabalho", "Running hours", "h", "duration",
    "total_increasing", 1,
)  # fmt: skip
BAGS = _Field(
    "bags", "huller", "bags_total", "Sacas", "Bags", BAGS_UNIT, None, "total_increasing", 0
)  # fmt: skip

#: What each driver's readings carry (a family's default for drivers not named).
DRIVER_FIELDS: dict[str, tuple[_Field, ...]] = {
    "moisture.ticket": (MOISTURE, TEMPERATURE, BULK_DENSITY),
    "moisture.tesma": (MOISTURE,),  # the frame has no temperature
    "moisture.": (MOISTURE, TEMPERATURE),
    "scale.": (WEIGHT,),
}
HULLER_FIELDS = (HOURS, BAGS)

#: Device registry defaults per driver: manufacturer, model (pt-BR, en).
DRIVER_MODELS: dict[str, tuple[str | None, str, str]] = {
    "moisture.ticket": (None, "Medidor de umidade (ticket impresso)", "Moisture meter (ticket)"),
    "moisture.tesma": (None, "Medidor de umidade contínuo (Tesma)", "Continuous moisture meter"),
    "scale.mtsics": ("Mettler Toledo", "Balança MT-SICS", "MT-SICS balance"),
    "scale.toledo_continuous": ("Toledo", "Indicador (saída contínua)", "Indicator (continuous)"),
    "scale.ascii": (None, "Indicador de pesagem ST,GS", "Weighing indicator (ST,GS)"),
    "huller": ("Autonics", "Contador CT (Modbus RTU)", "CT counter (Modbus RTU)"),
}

#: Alert rules' names in Home Assistant (``agent.alerts.messages`` titles).
RULE_NAMES: dict[str, tuple[str, str]] = {
    "wet_lot": ("Lote úmido", "Wet lot"),
    "device_silent": ("Equipamento sem sinal", "Device silent"),
    "huller_fault": ("Falha no descascador", "Huller fault"),
    "service_due": ("Manutenção vencendo", "Service due"),
    "service_overdue": ("Manutenção atrasada", "Service overdue"),
    "sink_backlog": ("Envio parado", "Sink backlog"),
    "calibration_due": ("Calibração vencendo", "Calibration due"),
    "meter_disagreement": ("Medidores discordam", "Meters disagree"),
}


def _fields_of(driver: str) -> tuple[_Field, ...]:
    if driver in DRIVER_FIELDS:
        return DRIVER_FIELDS[driver]
    family = driver.split(".", 1)[0] + "."
    return DRIVER_FIELDS.get(family, ())


@functools.cache
def _software_version() -> str:
    try:
        return metadata.version("coffee-telemetry")
    except metadata.PackageNotFoundError:  # pragma: no cover - a checkout without install
        return "0"


def value_template(measurement: str, field: str) -> str:
    """The template that takes ``field`` from a ``measurement`` reading ('' otherwise)."""
    return (
        f"{{{{ value_json['fields']['{field}'] if value_json['measurement'] == '{measurement}'"
        f" and '{field}' in value_json['fields'] else '' }}}}"
    )


#: ``<device>/status``'s document to ``online`` / ``offline``.
STATUS_TEMPLATE = "{{ value_json['state'] }}"
#: An alert document to ``ON`` (firing or acknowledged) or ``OFF``.
ALERT_TEMPLATE = (
    "{{ 'ON' if value_json['state'] in ['" + "', '".join(ON_STATES) + "'] else 'OFF' }}"
)


def _encode(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _slug(text: str) -> str:
    """``text`` as an object id part: itself when it fits, else a slug and a short hash."""
    if _OBJECT_ID.match(text) and len(text) <= 64:
        return text
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "_", text)[:48].strip("_") or "x"
    return f"{slug}_{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


class _Builder:
    """Discovery documents of one site (topics, device registry info, availability)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.site = cfg.site.id
        self.base = f"{cfg.mqtt.prefix}/{cfg.site.id}"
        self.ha_prefix = cfg.mqtt.homeassistant_prefix
        self.lang = cfg.alerts.lang
        self.area = cfg.site.name or cfg.site.id
        self.version = _software_version()
        self.agent_ids = f"coffee_telemetry_{self.site}_agent"
        self.origin = {"name": "coffee-telemetry", "sw_version": self.version}

    def topic(self, component: str, object_id: str) -> str:
        # The site is the optional node_id level Home Assistant's discovery topics allow:
        # a broker ACL can then grant each agent its own site's topics and nothing else
        # (a Mosquitto pattern substitutes %u only as a whole level).
        return f"{self.ha_prefix}/{component}/{self.site}/{object_id}/config"

    def agent_device(self) -> dict[str, object]:
        return {
            "identifiers": [self.agent_ids],
            "name": f"coffee-telemetry {self.area}",
            "manufacturer": "coffee-telemetry",
            "model": _tr(self.lang, "Agente de telemetria", "Telemetry agent"),
            "sw_version": self.version,
            "suggested_area": self.area,
        }

    def equipment_device(self, ident: str, name: str, driver: str) -> dict[str, object]:
        manufacturer, model_pt, model_en = DRIVER_MODELS.get(driver, (None, driver, driver))
        given = self.cfg.mqtt.homeassistant_devices.get(ident)
        device: dict[str, object] = {
            "identifiers": [f"coffee_telemetry_{self.site}_{ident}"],
            "name": name,
            "model": _tr(self.lang, model_pt, model_en),
            "suggested_area": self.area,
            "via_device": self.agent_ids,
        }
        if manufacturer is not None:
            device["manufacturer"] = manufacturer
        if given is not None:
            for key in ("manufacturer", "model", "serial_number"):
                value = getattr(given, key)
                if value is not None:
                    device[key] = value
        return device

    def agent_availability(self) -> dict[str, object]:
        return {
            "topic": f"{self.base}/agent/status",
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
        }

    def device_availability(self, ident: str) -> list[dict[str, object]]:
        return [
            self.agent_availability(),
            {
                "topic": f"{self.base}/{ident}/status",
                "value_template": STATUS_TEMPLATE,
                "payload_available": AVAILABLE,
                "payload_not_available": NOT_AVAILABLE,
            },
        ]

    def field_sensor(
        self, ident: str, f: _Field, device: dict[str, object]
    ) -> tuple[str, dict[str, object]]:
        object_id = f"{self.site}_{ident}_{f.key}"
        doc: dict[str, object] = {
            "name": _tr(self.lang, f.name_pt, f.name_en),
            "unique_id": object_id,
            "state_topic": f"{self.base}/{ident}/reading",
            "value_template": value_template(f.measurement, f.field),
            "state_class": f.state_class,
            "suggested_display_precision": f.precision,
            "availability": self.device_availability(ident),
            "availability_mode": "all",
            "device": device,
            "origin": self.origin,
            "qos": 1,
        }
        if f.device_class is not None:
            doc["device_class"] = f.device_class
        unit = _tr(self.lang, "sacas", "bags") if f.unit == BAGS_UNIT else f.unit
        doc["unit_of_measurement"] = unit
        return self.topic("sensor", object_id), doc

    def lot_sensor(self, station: str) -> tuple[str, dict[str, object]]:
        object_id = f"{self.site}_{station}_lot"
        topic = f"{self.base}/lots/{station}"
        none = _tr(self.lang, "sem lote", "no lot")
        doc: dict[str, object] = {
            "name": _tr(self.lang, "Lote", "Lot"),
            "unique_id": object_id,
            "state_topic": topic,
            "value_template": (
                f"{{{{ value_json['lot'] if value_json['lot'] is not none else '{none}' }}}}"
            ),
            "json_attributes_topic": topic,
            "icon": "mdi:tag-text",
            "availability": [self.agent_availability()],
            "device": {
                "identifiers": [f"coffee_telemetry_{self.site}_station_{station}"],
                "name": _tr(self.lang, f"Estação {station}", f"Station {station}"),
                "model": _tr(self.lang, "Estação de recebimento", "Station"),
                "suggested_area": self.area,
                "via_device": self.agent_ids,
            },
            "origin": self.origin,
            "qos": 1,
        }
        return self.topic("sensor", object_id), doc

    def agent_sensor(self) -> tuple[str, dict[str, object]]:
        object_id = f"{self.site}_agent_status"
        doc: dict[str, object] = {
            "name": _tr(self.lang, "Conexão do agente", "Agent connection"),
            "unique_id": object_id,
            "state_topic": f"{self.base}/agent/status",
            "payload_on": AVAILABLE,
            "payload_off": NOT_AVAILABLE,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": self.agent_device(),
            "origin": self.origin,
            "qos": 1,
        }
        return self.topic("binary_sensor", object_id), doc

    def alert_sensor(self, suffix: str, rule: str, subject: str) -> tuple[str, dict[str, object]]:
        object_id = f"{self.site}_alerts_{_slug(rule)}_{_slug(subject)}"
        pt, en = RULE_NAMES.get(rule, (rule, rule))
        topic = f"{self.base}/{suffix}"
        doc: dict[str, object] = {
            "name": f"{_tr(self.lang, pt, en)} {subject}",
            "unique_id": object_id,
            "state_topic": topic,
            "value_template": ALERT_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": topic,
            "device_class": "problem",
            "availability": [self.agent_availability()],
            "device": self.agent_device(),
            "origin": self.origin,
            "qos": 1,
        }
        return self.topic("binary_sensor", object_id), doc

    def static(self) -> dict[str, bytes]:
        docs: dict[str, dict[str, object]] = {}
        topic, doc = self.agent_sensor()
        docs[topic] = doc
        devices = [d for d in self.cfg.devices if d.enabled]
        for dev in devices:
            device = self.equipment_device(dev.id, dev.id, dev.driver)
            for f in _fields_of(dev.driver):
                topic, doc = self.field_sensor(dev.id, f, device)
                docs[topic] = doc
        for huller in self.cfg.hullers:
            device = self.equipment_device(huller.id, huller.name or huller.id, "huller")
            for f in HULLER_FIELDS:
                topic, doc = self.field_sensor(huller.id, f, device)
                docs[topic] = doc
        for station in sorted({d.station for d in devices if d.station}):
            topic, doc = self.lot_sensor(station)
            docs[topic] = doc
        return {topic: _encode(doc) for topic, doc in docs.items()}


def discovery_documents(cfg: Config) -> dict[str, bytes]:
    """Every discovery document the site file asks for, by topic (open alerts aside)."""
    return _Builder(cfg).static()


def alert_document(cfg: Config, suffix: str, payload: bytes) -> tuple[str, bytes | None] | None:
    """The discovery topic for an alert state published on ``suffix``, and its document.

    Returns:
        None when ``suffix`` is not ``alerts/<rule>/<subject>`` or ``payload`` is not an
        alert document; else the topic and the document (None when the alert is closed).
    """
    parts = suffix.split("/")
    if len(parts) != 3 or parts[0] != "alerts":
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("state"), str):
        return None
    rule, subject = doc.get("rule"), doc.get("subject")
    if not isinstance(rule, str) or not isinstance(subject, str):
        return None
    topic, config = _Builder(cfg).alert_sensor(suffix, rule, subject)
    return topic, (_encode(config) if doc["state"] in OPEN_STATES else None)


class HomeAssistantDiscovery:
    """The MQTT sink's discovery companion (see the module docstring).

    Args:
        cfg: The site configuration (``[mqtt] homeassistant_*``, devices, hullers).
        state_path: Where announced topics are remembered.
    """

    def __init__(self, cfg: Config, *, state_path: Path) -> None:
        self.failures = 0
        self.last_error: str | None = None
        self._cfg = cfg
        self._enabled = cfg.mqtt.homeassistant_discovery and cfg.mqtt.enabled
        self._path = state_path
        self._static = discovery_documents(cfg) if self._enabled else {}
        #: Open alerts' documents, by discovery topic.
        self._alerts: dict[str, bytes] = {}
        self._announced: set[str] = self._load()
        self._saved: set[str] = set(self._announced)
        known = {d.id for d in cfg.devices} | {h.id for h in cfg.hullers}
        for ident in sorted(set(cfg.mqtt.homeassistant_devices) - known):
            log.warning("[mqtt.homeassistant_devices.%s] names no device or huller", ident)

    @property
    def announced(self) -> frozenset[str]:
        """Discovery topics that hold a document now (as far as this process knows)."""
        return frozenset(self._announced)

    def wanted(self) -> dict[str, bytes]:
        """Every document that should be retained now, by topic."""
        return {**self._static, **self._alerts}

    def _load(self) -> set[str]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return set()
        except (OSError, UnicodeDecodeError) as exc:
            self._failed(f"cannot read {self._path}: {exc}")
            return set()
        try:
            doc = json.loads(text)
            topics = doc["topics"]
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise TypeError("topics is not a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            self._failed(f"{self._path} is not what it should be ({exc}); starting afresh")
            return set()
        # Only what this site could have announced is ever emptied again.
        ours = re.compile(
            rf"^[^#+]+/(sensor|binary_sensor)/{re.escape(self._cfg.site.id)}/"
            rf"{re.escape(self._cfg.site.id)}_[a-zA-Z0-9_-]+/config$"
        )
        return {t for t in topics if ours.match(t)}

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.error("Home Assistant discovery: %s", message)

    async def _save(self) -> None:
        if self._announced == self._saved:
            return
        topics = sorted(self._announced)
        text = json.dumps({"topics": topics}, indent=1, ensure_ascii=False) + "\n"
        try:
            await asyncio.to_thread(_write_atomic, self._path, text)
        except OSError as exc:
            self._failed(f"cannot write {self._path}: {exc}")
            return
        self._saved = set(topics)

    async def on_connect(self, publish: Publish) -> None:
        """Publish every wanted document, and remove those no longer wanted."""
        wanted = self.wanted()
        for topic in sorted(wanted):
            await publish(topic, wanted[topic])
            self._announced.add(topic)
        for topic in sorted(self._announced - wanted.keys()):
            await publish(topic, b"")
            self._announced.discard(topic)
            log.info("Home Assistant discovery: removed %s", topic)
        if wanted:
            log.info("Home Assistant discovery: %d entities announced", len(wanted))
        await self._save()

    async def on_state(self, suffix: str, payload: bytes, publish: Publish) -> None:
        """Follow a retained state just published on ``<prefix>/<site>/<suffix>``."""
        if not self._enabled:
            return
        try:
            found = alert_document(self._cfg, suffix, payload)
        except Exception as exc:  # a bug here must not end the MQTT connection
            self._failed(f"alert state on {suffix[:200]!r} not followed: {exc!r}")
            return
        if found is None:
            return
        topic, document = found
        if document is not None:
            if self._alerts.get(topic) == document and topic in self._announced:
                return
            self._alerts[topic] = document
            await publish(topic, document)
            self._announced.add(topic)
        else:
            self._alerts.pop(topic, None)
            if topic not in self._announced:
                return
            await publish(topic, b"")
            self._announced.discard(topic)
        await self._save()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def discovery_for(cfg: Config) -> HomeAssistantDiscovery | None:
    """The discovery companion when discovery is on, or was on before (to remove its documents)."""
    path = cfg.agent.data_dir / HOMEASSISTANT_STATE_FILE
    if not cfg.mqtt.enabled or not (cfg.mqtt.homeassistant_discovery or path.exists()):
        return None
    return HomeAssistantDiscovery(cfg, state_path=path)
