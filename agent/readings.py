"""Readings: measurements stamped by the agent, and their one wire encoding.

A ``Reading`` is made once, when a frame's last byte arrives: the timestamp
(UTC, ns) and the per-device sequence number are fixed then and stored with the
record in the outbox. Every sink derives what it sends from the stored bytes,
so a resend after a crash or an outage is byte-identical to the first send;
InfluxDB overwrites an identical point and MQTT consumers dedupe on
``(device, seq)``.

JSON payload (the MQTT message body, and what the outbox stores)::

    {"device": "umid-1", "fields": {"moisture_pct": 11.8}, "kind": "reading",
     "measurement": "moisture", "seq": 42,
     "tags": {"device": "umid-1", "lot": "L-0042", "product": "cafe",
              "site": "ourofino", "station": "recepcao"},
     "time": "2026-11-30T10:41:54.123456789Z", "ts": 1796035314123456789}

Keys are sorted and the encoding is compact, so one reading has one encoding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coffee_telemetry.drivers.events import FieldValue

#: Reading kinds. ``reading`` is a periodic or per-sample value; ``event`` is a
#: discrete happening (a ticket printed, a counter reset, a weighment).
KINDS = frozenset({"reading", "event"})

#: A nanosecond wall clock, such as ``time.time_ns``.
Clock = Callable[[], int]

#: How far a reading's time can be trusted (``agent.timekeeping.TimeQuality``).
TIME_QUALITIES = frozenset({"trusted", "provisional", "estimated"})


@dataclass(frozen=True, slots=True)
class Reading:
    """A stamped measurement, ready for the outbox.

    Attributes:
        ts_ns: Acquisition time, UTC nanoseconds since the epoch.
        seq: Per-device sequence number, strictly increasing across restarts.
        device: Configured device id.
        measurement: InfluxDB measurement name.
        fields: Typed field values.
        tags: All tags, including site, device and station.
        kind: ``reading`` or ``event``.
        audit: Source text kept for audit (a printed ticket), if any.
        time_quality: ``trusted``; ``provisional`` (no trusted time yet: held back from
            the sinks until re-stamped) or ``estimated`` (no trusted time came; see
            ``agent.timekeeping``).
    """

    ts_ns: int
    seq: int
    device: str
    measurement: str
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: str = "reading"
    audit: str | None = None
    time_quality: str = "trusted"


@dataclass(frozen=True, slots=True)
class Draft:
    """What a source hands to the accept stage: a reading before its time and number.

    Attributes:
        device: Configured device id (or the agent's own: ``agent``, ``alerts``, ``lots``).
        measurement: InfluxDB measurement name.
        fields: Typed field values.
        tags: Tags; empty values are left out when stamped.
        kind: ``reading`` or ``event``.
        audit: Source text kept for audit (a printed ticket), if any.
        ts_ns: When it happened (the arrival of its last byte); ``None``: now.
        exact: Keep ``ts_ns`` exactly, even if the device's last stamp is later: an event
            stored before a crash and sent again must be the same InfluxDB point.
    """

    device: str
    measurement: str
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: str = "reading"
    audit: str | None = None
    ts_ns: int | None = None
    exact: bool = False


def format_time(ts_ns: int) -> str:
    """Render a nanosecond timestamp as RFC 3339 UTC with nine decimals."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def encode_reading(reading: Reading) -> bytes:
    """Encode a reading as compact, key-sorted JSON (its one canonical form).

    Raises:
        ValueError: A field is NaN or infinite (not representable in JSON or
            line protocol); drivers never produce one.
    """
    for name, value in reading.fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field {name!r} is not finite: {value!r}")
    doc: dict[str, object] = {
        "device": reading.device,
        "fields": dict(reading.fields),
        "kind": reading.kind,
        "measurement": reading.measurement,
        "seq": reading.seq,
        "tags": dict(reading.tags),
        "time": format_time(reading.ts_ns),
        "ts": reading.ts_ns,
    }
    if reading.audit is not None:
        doc["audit"] = reading.audit
    if reading.time_quality != "trusted":
        doc["time_quality"] = reading.time_quality
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_reading(payload: bytes) -> Reading:
    """Decode what ``encode_reading`` produced.

    Raises:
        ValueError: The payload is not a reading.
    """
    try:
        doc = json.loads(payload)
        fields = doc["fields"]
        tags = doc["tags"]
        if not isinstance(fields, dict) or not isinstance(tags, dict):
            raise TypeError("fields and tags must be objects")
        audit = doc.get("audit")
        quality = str(doc.get("time_quality", "trusted"))
        if quality not in TIME_QUALITIES:
            raise ValueError(f"unknown time_quality {quality!r}")
        return Reading(
            ts_ns=int(doc["ts"]),
            seq=int(doc["seq"]),
            device=str(doc["device"]),
            measurement=str(doc["measurement"]),
            fields={str(k): v for k, v in fields.items()},
            tags={str(k): str(v) for k, v in tags.items()},
            kind=str(doc.get("kind", "reading")),
            audit=None if audit is None else str(audit),
            time_quality=quality,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a reading: {exc}") from exc


class Stamper:
    """Turns measurements into readings: fixes time and sequence per device.

    Time comes from a clock function (``time.time_ns`` in production). Two
    readings of one device never share a timestamp: if the clock has not moved
    (or went backwards, e.g. an NTP step) the stamp is the previous one + 1 ns,
    so InfluxDB never merges two genuine readings into one point.
    """

    def __init__(
        self, *, clock_ns: Clock | None = None, quality: Callable[[], str] | None = None
    ) -> None:
        self._clock: Clock = clock_ns or time.time_ns
        self._quality = quality
        self._last_ts: dict[str, int] = {}
        self._seq: dict[str, int] = {}

    def shift(self, delta_ns: int) -> None:
        """Move every device's last stamp by ``delta_ns`` (its readings were re-stamped)."""
        self._last_ts = {dev: ts + delta_ns for dev, ts in self._last_ts.items()}

    def forget_times(self) -> None:
        """Let the next stamps go back in time (a trusted source replaced an estimate)."""
        self._last_ts.clear()

    def restore(self, sequences: Mapping[str, int]) -> None:
        """Continue sequences from what the outbox last committed."""
        self._seq.update(sequences)

    def last_seq(self, device: str) -> int:
        """The last sequence number given to ``device`` (0 if none)."""
        return self._seq.get(device, 0)

    def stamp_drafts(self, drafts: Sequence[Draft]) -> list[Reading]:
        """Stamp each draft, in order (see ``stamp``; ``Draft.exact`` keeps its time)."""
        out: list[Reading] = []
        for d in drafts:
            ts_ns = d.ts_ns
            if d.exact and ts_ns is not None:
                # Advance the device's clock as a stamp at that time would (never past
                # now: a future time must not pull later stamps along), keep the time.
                r = self.stamp(
                    device=d.device,
                    measurement=d.measurement,
                    fields=d.fields,
                    tags=d.tags,
                    kind=d.kind,
                    audit=d.audit,
                    ts_ns=min(ts_ns, self._clock()),
                )
                out.append(dataclasses.replace(r, ts_ns=ts_ns))
            else:
                out.append(
                    self.stamp(
                        device=d.device,
                        measurement=d.measurement,
                        fields=d.fields,
                        tags=d.tags,
                        kind=d.kind,
                        audit=d.audit,
                        ts_ns=ts_ns,
                    )
                )
        return out

    def stamp(
        self,
        *,
        device: str,
        measurement: str,
        fields: Mapping[str, FieldValue],
        tags: Mapping[str, str],
        kind: str = "reading",
        audit: str | None = None,
        ts_ns: int | None = None,
    ) -> Reading:
        """Make a reading with the next sequence number and a unique timestamp."""
        now = self._clock() if ts_ns is None else ts_ns
        last = self._last_ts.get(device)
        if last is not None and now <= last:
            now = last + 1
        self._last_ts[device] = now
        seq = self._seq.get(device, 0) + 1
        self._seq[device] = seq
        return Reading(
            ts_ns=now,
            seq=seq,
            device=device,
            measurement=measurement,
            fields=dict(fields),
            tags={k: v for k, v in tags.items() if v},
            kind=kind,
            audit=audit,
            time_quality="trusted" if self._quality is None else self._quality(),
        )
