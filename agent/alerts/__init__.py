"""Alerts: pure rules and their engine, and the service around them.

==============  ===================================================================
``model``       the alert model: ticks in, each subject's ``RuleState``, ``Alert`` events
``kinds``       the rules, each extending its ``[alerts.*]`` settings; ``build_rules``
``conditions``  what each rule's input means for a subject (fire and clear tests)
``evaluate``    the pure core: ``subjects``, ``evaluate``, ``acknowledge``; the lifecycle
``messages``    one-line messages in pt-BR and English
``formats``     the MQTT document and topic, the InfluxDB point
``snapshot``    JSON of one subject's state and of a whole engine
``engine``      ``Engine``: every subject's state, events routed to the rules
``service``     the agent's I/O around the engine: feed, publish, persist, acknowledge
==============  ===================================================================

Everything but ``service`` is pure: no clock, no I/O.
"""

from coffee_telemetry.agent.alerts.engine import Engine
from coffee_telemetry.agent.alerts.evaluate import acknowledge, current_alert, evaluate, subjects
from coffee_telemetry.agent.alerts.formats import (
    AlertPoint,
    alert_payload,
    alert_point,
    alert_topic,
)
from coffee_telemetry.agent.alerts.kinds import (
    DEFAULT_SILENT_S,
    CalibrationDueRule,
    DeviceSilentRule,
    HullerFaultRule,
    HumidStorageRule,
    MeterDisagreementRule,
    Rule,
    ServiceRule,
    SinkBacklogRule,
    WetLotRule,
    build_rules,
    default_rules,
    wet_lot_rule,
)
from coffee_telemetry.agent.alerts.messages import alert_message
from coffee_telemetry.agent.alerts.model import (
    DATA_FIELDS,
    Alert,
    AlertState,
    DeviceHealthLike,
    DeviceSnapshot,
    ErrorMemory,
    JamMemory,
    Lang,
    LotMemory,
    Memory,
    RuleState,
    Severity,
    SinkSnapshot,
    Tick,
    WiringMemory,
)
from coffee_telemetry.agent.alerts.service import ALERTS_DEVICE, AlertService
from coffee_telemetry.agent.alerts.snapshot import SNAPSHOT_VERSION, from_json, to_json
from coffee_telemetry.agent.errors import RuleError

__all__ = [
    "ALERTS_DEVICE",
    "DATA_FIELDS",
    "DEFAULT_SILENT_S",
    "SNAPSHOT_VERSION",
    "Alert",
    "AlertPoint",
    "AlertService",
    "AlertState",
    "CalibrationDueRule",
    "DeviceHealthLike",
    "DeviceSilentRule",
    "DeviceSnapshot",
    "Engine",
    "ErrorMemory",
    "HullerFaultRule",
    "HumidStorageRule",
    "JamMemory",
    "Lang",
    "LotMemory",
    "Memory",
    "MeterDisagreementRule",
    "Rule",
    "RuleError",
    "RuleState",
    "ServiceRule",
    "Severity",
    "SinkBacklogRule",
    "SinkSnapshot",
    "Tick",
    "WetLotRule",
    "WiringMemory",
    "acknowledge",
    "alert_message",
    "alert_payload",
    "alert_point",
    "alert_topic",
    "build_rules",
    "current_alert",
    "default_rules",
    "evaluate",
    "from_json",
    "subjects",
    "to_json",
    "wet_lot_rule",
]
