"""A lot's record, as the store keeps it and the pages, reports and exports read it.

A coffee cooperative sells lots, not readings: a lot's record gathers what the agent
saw of it, for years, independent of the raw history's retention. These frozen
records are the one shape every reader of it shares (``agent.lots.records`` writes
them; the API, the CSV and PDF exports and the drying-curve estimate read them).
Times are UTC nanoseconds; masses in kg; moisture in percent, wet basis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from coffee_telemetry.agent.evidence.meters import MeterEvidence

#: A lot's verdict against the wet-lot threshold: ``wet`` if any moisture reading of
#: the lot was at or above it, ``ok`` if it has readings and none was, ``none`` if it
#: has no moisture reading.
Verdict = Literal["wet", "ok", "none"]

#: What happened to a lot, in its timeline.
EventKind = Literal[
    "assigned", "cleared", "alert", "ack", "resolved", "service", "details",
    "dried", "ready", "receipt",
    "moved_out", "moved_in", "blend", "blended",
]  # fmt: skip

#: Coffee types a lot's details may name (the cooperative's own words).
PRODUCT_TYPES = ("cereja", "coco", "pergaminho", "beneficiado")


@dataclass(frozen=True, slots=True)
class LotReading:
    """One moisture reading of the lot.

    Attributes:
        ts_ns: When it was measured.
        seq: The reading's sequence number on its device (with ``device``, its identity).
        device: The meter.
        station: Where the meter stands ("" if none).
        moisture_pct: Moisture, wet basis.
        temperature_c: Grain temperature, if the meter gives it.
        sample_id: The meter's sample number, if printed.
        audit: The printed ticket's text, if any.
        time_quality: ``trusted`` or ``estimated`` (``agent.timekeeping``).
    """

    ts_ns: int
    seq: int
    device: str
    station: str
    moisture_pct: float
    temperature_c: float | None = None
    sample_id: str | None = None
    audit: str | None = None
    time_quality: str = "trusted"


@dataclass(frozen=True, slots=True)
class LotWeighment:
    """One weighment of the lot (a stable weight on a scale while the lot was active).

    From a ``weighment`` event's ``weight_kg``, ``tare_kg`` and ``net`` flag: a net
    display gives ``net_kg = weight_kg`` and ``gross_kg = weight_kg + tare_kg``; a gross
    one gives ``gross_kg = weight_kg`` and ``net_kg = weight_kg - tare_kg``.

    Attributes:
        ts_ns: When the weight settled.
        seq: The event's sequence number on its device.
        device: The scale.
        station: Where the scale stands.
        gross_kg: Gross weight.
        tare_kg: Tare.
        net_kg: Net weight.
        trigger: What made it a weighment (the driver's ``trigger`` field).
    """

    ts_ns: int
    seq: int
    device: str
    station: str
    gross_kg: float
    tare_kg: float
    net_kg: float
    trigger: str = ""


@dataclass(frozen=True, slots=True)
class LotEvent:
    """One entry of the lot's timeline.

    Attributes:
        ts_ns: When it happened.
        kind: What happened (``EventKind``).
        text: A one-line description (pt-BR text is made by the reader, from ``kind``
            and ``data``; this is the stored English summary, for logs and CSV).
        by: Who did it (a person, ``mqtt``, ``web:<user>``, ``agent``).
        source: Where it came from (``cli``, ``mqtt``, ``web``, ``rules``).
        data: Details of the event (alert rule and value, station, task...).
    """

    ts_ns: int
    kind: EventKind
    text: str
    by: str = ""
    source: str = ""
    data: dict[str, str | float | int | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LotDetails:
    """What people add to a lot (all optional; same validation rules as lot codes).

    Attributes:
        producer: The member producer's name or code.
        bags: Declared bags.
        product_type: One of ``PRODUCT_TYPES``.
        note: Free text.
        updated_by: Who last changed them.
        updated_ns: When.
    """

    producer: str | None = None
    bags: int | None = None
    product_type: str | None = None
    note: str | None = None
    updated_by: str = ""
    updated_ns: int = 0


@dataclass(frozen=True, slots=True)
class LotDrying:
    """When the lot left the dryer, and which kind of dryer (``agent.lots.readiness``).

    Attributes:
        dried_ns: When it left the dryer.
        dryer: ``patio`` or ``mechanical``.
        by: Who said so.
        source: Where it came from (``cli``, ``mqtt``, ``web:<user>``).
        set_ns: When it was said.
    """

    dried_ns: int
    dryer: str
    by: str = ""
    source: str = ""
    set_ns: int = 0


@dataclass(frozen=True, slots=True)
class LotReceipt:
    """What the cooperative writes on the lot's intake receipt (``agent.lots.receipt``).

    Attributes:
        member: The member (producer) code stamped on the sacks.
        invoice: The nota fiscal number.
        sacks: Sacks received.
        gross_kg: Gross weight received.
        net_kg: Net weight received.
        weight_source: ``scale`` (from the lot's weighments) or ``entered``.
        stack: Stack position in the warehouse.
        updated_by: Who last changed it.
        updated_ns: When.
    """

    member: str | None = None
    invoice: str | None = None
    sacks: int | None = None
    gross_kg: float | None = None
    net_kg: float | None = None
    weight_source: str | None = None
    stack: str | None = None
    updated_by: str = ""
    updated_ns: int = 0


@dataclass(frozen=True, slots=True)
class LotSummary:
    """A lot at a glance: a row of the Lotes page, the header of a report.

    Attributes:
        code: The lot code.
        first_ns: First time the lot was seen.
        last_ns: Last time.
        stations: Stations involved, sorted.
        devices: Devices involved, sorted.
        product: The product tag seen last ("" if none).
        readings: Moisture readings.
        mean_moisture_pct: Their mean (``None`` without readings).
        min_moisture_pct: Their minimum.
        max_moisture_pct: Their maximum.
        last_moisture_pct: The latest.
        weighments: Weighments.
        net_kg: Total net weight of the weighments.
        verdict: Against the wet-lot threshold (``Verdict``).
        open_alerts: Alerts about the lot not resolved yet.
        producer: From the details, for search and display.
    """

    code: str
    first_ns: int
    last_ns: int
    stations: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    product: str = ""
    readings: int = 0
    mean_moisture_pct: float | None = None
    min_moisture_pct: float | None = None
    max_moisture_pct: float | None = None
    last_moisture_pct: float | None = None
    weighments: int = 0
    net_kg: float = 0.0
    verdict: Verdict = "none"
    open_alerts: int = 0
    producer: str | None = None


@dataclass(frozen=True, slots=True)
class LotRecord:
    """Everything the agent knows of one lot.

    Attributes:
        summary: The lot at a glance.
        details: What people added.
        readings: Every moisture reading, in time order.
        weighments: Every weighment, in time order.
        events: The timeline, in time order.
        threshold_pct: The wet-lot threshold the verdict was made against.
        drying: When it left the dryer, if someone said so.
        receipt: Its intake receipt, if one was written.
        hulled_bags: Bags the hullers counted while the lot was active at their
            station (``None``: none counted).
        meters: Which meter and calibration took each reading, and the reference
            oven results (``agent.evidence.meters``; ``None``: none recorded).
    """

    summary: LotSummary
    details: LotDetails
    readings: tuple[LotReading, ...] = ()
    weighments: tuple[LotWeighment, ...] = ()
    events: tuple[LotEvent, ...] = ()
    threshold_pct: float | None = None
    drying: LotDrying | None = None
    receipt: LotReceipt | None = None
    hulled_bags: float | None = None
    meters: MeterEvidence | None = None
