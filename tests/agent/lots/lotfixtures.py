"""Lot records for the drying, export and verify tests (built here, never from a store)."""

from __future__ import annotations

import math
import random

from coffee_telemetry.agent.lots.model import (
    LotDetails,
    LotEvent,
    LotReading,
    LotRecord,
    LotSummary,
    LotWeighment,
)

H_NS = 3_600_000_000_000
#: 2026-11-03 12:00 UTC.
T0_NS = 1_793_707_200_000_000_000

RTL = "\u200f"
ARABIC = "مزرعة"
HOSTILE_PRODUCER = (
    "Sítio Boa Vista <script>alert('x')</script> "
    + RTL
    + ARABIC
    + " ☕😀 "
    + ("Açaí-Café-Região-Três-Corações-" * 6)
)


def drying_readings(
    *,
    me: float,
    m0: float,
    k_per_h: float,
    hours: float,
    every_min: float,
    noise_pp: float = 0.0,
    seed: int = 0,
    device: str = "secador-1",
) -> tuple[LotReading, ...]:
    """Readings of a simulated drying run ``M(t) = me + (m0 - me) exp(-k t)``."""
    rnd = random.Random(seed)
    n = int(hours * 60 / every_min) + 1
    return tuple(
        LotReading(
            ts_ns=T0_NS + round(i * every_min * 60e9),
            seq=i,
            device=device,
            station="secador",
            moisture_pct=me
            + (m0 - me) * math.exp(-k_per_h * i * every_min / 60)
            + (rnd.gauss(0, noise_pp) if noise_pp else 0.0),
        )
        for i in range(n)
    )


def make_record(
    *,
    code: str = "L-0042",
    readings: tuple[LotReading, ...] = (),
    weighments: int = 3,
    producer: str | None = "Sítio Boa Vista",
    note: str | None = "Café de terreiro, secagem lenta",
    threshold: float | None = 13.0,
    events: tuple[LotEvent, ...] | None = None,
) -> LotRecord:
    """A lot record with the summary computed from its readings and weighments."""
    ws = tuple(
        LotWeighment(
            ts_ns=T0_NS + i * 600_000_000_000,
            seq=i,
            device="balanca-1",
            station="recepcao",
            gross_kg=1000.0 + i * 3.5,
            tare_kg=20.5,
            net_kg=979.5 + i * 3.5,
            trigger="estável",
        )
        for i in range(weighments)
    )
    values = [r.moisture_pct for r in readings]
    if events is None:
        events = (
            LotEvent(T0_NS, "assigned", "lot L-0042 set on recepcao", "maria", "cli"),
            LotEvent(T0_NS + H_NS, "alert", "wet lot: 13.4 % >= 13.0 %", "agent", "rules"),
            LotEvent(T0_NS + 2 * H_NS, "ack", "acknowledged", "joão", "web"),
        )
    stamps = [r.ts_ns for r in readings] + [w.ts_ns for w in ws] or [T0_NS]
    wet = threshold is not None and any(v >= threshold for v in values)
    summary = LotSummary(
        code=code,
        first_ns=min(stamps),
        last_ns=max(stamps),
        stations=tuple(sorted({r.station for r in readings} | {w.station for w in ws})),
        devices=tuple(sorted({r.device for r in readings} | {w.device for w in ws})),
        product="pergaminho",
        readings=len(readings),
        mean_moisture_pct=sum(values) / len(values) if values else None,
        min_moisture_pct=min(values) if values else None,
        max_moisture_pct=max(values) if values else None,
        last_moisture_pct=values[-1] if values else None,
        weighments=len(ws),
        net_kg=sum(w.net_kg for w in ws),
        verdict=("wet" if wet else "ok") if values else "none",
        producer=producer,
    )
    details = LotDetails(
        producer=producer, bags=42, product_type="pergaminho", note=note, updated_by="maria"
    )
    return LotRecord(
        summary=summary,
        details=details,
        readings=readings,
        weighments=ws,
        events=events,
        threshold_pct=threshold,
    )
