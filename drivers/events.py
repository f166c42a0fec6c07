"""Events that drivers emit, shared by every protocol module.

Drivers are sans-I/O: bytes go in through ``receive_data``, and what the bytes
meant comes out of ``events()`` as one of these frozen records. A driver never
reads the clock and never raises on bad input: line noise becomes ``Discarded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Field values a measurement may carry. A field keeps one type forever.
FieldValue = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Measurement:
    """A valid reading decoded from a device, not yet stamped by the agent.

    Attributes:
        measurement: InfluxDB measurement name (``moisture``, ``scale``, ...).
        fields: Typed values; a given field name always has the same type.
        tags: Tags that come from the device itself (``product``, ``lot``).
            The agent adds site, device and station.
        raw: The bytes of the frame, kept for debugging (capped by the driver).
        audit: Human-readable source text kept for audit (a printed ticket),
            or ``None`` when the frame is not worth keeping.
    """

    measurement: str
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    audit: str | None = None


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes that did not form a valid frame, and why.

    Attributes:
        data: The discarded bytes (capped by the driver).
        reason: A short machine-friendly reason, e.g. ``"bad-length"``.
    """

    data: bytes
    reason: str


#: Anything a moisture/scale stream parser yields.
DriverEvent = Measurement | Discarded
