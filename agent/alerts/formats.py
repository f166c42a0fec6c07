"""Alert events on the wire: the MQTT document and topic, and the InfluxDB point.

``alert_payload`` is the JSON document published retained on
``alert_topic`` (``<prefix>/<site>/alerts/<rule>/<subject>``), also what the pages and
``coffee-telemetry alerts list --json`` show. ``alert_point`` is the event as a point
of the ``alert`` measurement, each field with one type forever (``DATA_FIELDS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coffee_telemetry.agent.alerts.model import DATA_FIELDS, Alert
from coffee_telemetry.agent.commands import escape_level
from coffee_telemetry.agent.readings import format_time
from coffee_telemetry.drivers.events import FieldValue


def alert_payload(alert: Alert) -> dict[str, object]:
    """The JSON document of an alert (the retained ``<prefix>/<site>/alerts/<rule>/<subject>``).

    Encode it like a reading (``json.dumps(..., sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``) so one event has one encoding.
    """
    return {
        "kind": "alert",
        "rule": alert.rule,
        "subject": alert.subject,
        "state": alert.state.value,
        "severity": alert.severity.value,
        "message": alert.message,
        "data": dict(alert.data),
        "notify": alert.notify,
        "since": alert.since_ns,
        "since_time": format_time(alert.since_ns),
        "ts": alert.at_ns,
        "time": format_time(alert.at_ns),
        "repeat": alert.repeat,
        "acked_by": alert.acked_by,
        "acked_at": alert.acked_at_ns,
    }


def alert_topic(alert: Alert, *, prefix: str = "", site: str = "") -> str:
    """``<prefix>/<site>/alerts/<rule>/<subject>``, the subject one level (``escape_level``).

    Without ``prefix`` and ``site``, the suffix under ``<prefix>/<site>/``.
    """
    suffix = f"alerts/{alert.rule}/{escape_level(alert.subject)}"
    return f"{prefix}/{site}/{suffix}" if prefix or site else suffix


@dataclass(frozen=True, slots=True)
class AlertPoint:
    """An alert as one point of the ``alert`` measurement (stamp it like a reading).

    Attributes:
        measurement: Always ``alert``.
        tags: site, rule, subject, state.
        fields: ``message``, ``severity`` (str), ``notify`` (bool), ``since_ns``,
            ``repeat`` (int), ``acked_by`` (str), ``acked_at_ns`` (int) when
            acknowledged, and the data (``DATA_FIELDS`` types).
        ts_ns: When the event happened.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    ts_ns: int


def alert_point(alert: Alert, *, site: str) -> AlertPoint:
    """The ``alert`` measurement point of an event, with one type per field forever."""
    fields: dict[str, FieldValue] = {
        "message": alert.message,
        "severity": alert.severity.value,
        "notify": alert.notify,
        "since_ns": alert.since_ns,
        "repeat": alert.repeat,
    }
    if alert.acked_by is not None:
        fields["acked_by"] = alert.acked_by
    if alert.acked_at_ns is not None:
        fields["acked_at_ns"] = alert.acked_at_ns
    for key, value in alert.data.items():
        kind = DATA_FIELDS.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and type(value) is kind:
            fields[key] = value
    return AlertPoint(
        measurement="alert",
        tags={
            "site": site,
            "rule": alert.rule,
            "subject": alert.subject,
            "state": alert.state.value,
        },
        fields=fields,
        ts_ns=alert.at_ns,
    )
