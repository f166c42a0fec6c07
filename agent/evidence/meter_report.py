"""A lot report's meter evidence: per reading, between meters, against the oven.

Theory of operation
-------------------
Reads a ``LotRecord`` whose ``meters`` (``agent.evidence.meters.MeterEvidence``) holds
each reading's calibration id, the records of those ids and the lot's oven results,
and makes three views of it, in the report's language:

* **per reading** (``reading_meters``): which meter (device, make, model, serial),
  which method, which calibration (id, certificate, date, due date), and whether the
  reading was taken after its calibration was due (``overdue``): such a reading is
  flagged, never hidden or dropped. A reading whose device had no ``meter`` table has
  no id; one whose id the store does not know shows the id alone.
* **cross-checks** (``cross_checks``): each reading of one meter paired with the
  nearest reading of every other meter of the lot at most ``window_s`` apart; the
  difference (the other minus this one, percentage points) is shown, and marked when
  its size exceeds ``tolerance_pp`` (the ``[alerts.meter_disagreement]`` settings, the
  same the live alert uses). A pair is listed once.
* **bias** (``meter_bias``): with a reference oven result (the latest entered), each
  meter's mean over the lot minus the oven value.

The CSV gets the per-reading view as four columns (``csv_cells``); the PDF all three
(``pdf_section``), drawn with the report's own helpers (``PdfTools``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from coffee_telemetry.agent.evidence.meters import MeterCalibration, OvenResult
from coffee_telemetry.agent.lots.model import LotReading, LotRecord

__all__ = [
    "CSV_COLUMNS",
    "CrossCheck",
    "MeterBias",
    "PdfTools",
    "ReadingMeter",
    "cross_checks",
    "csv_cells",
    "meter_bias",
    "pdf_section",
    "reading_meters",
]

Lang = Literal["pt-BR", "en"]

NS = 1_000_000_000

#: The CSV's meter columns, after the report's own.
CSV_COLUMNS: Mapping[Lang, tuple[str, ...]] = {
    "pt-BR": ("medidor", "metodo", "calibracao", "calibracao_vencida"),
    "en": ("meter", "method", "calibration", "calibration_overdue"),
}

_TEXT: Mapping[Lang, Mapping[str, str]] = {
    "pt-BR": {
        "heading": "Medidores e calibração",
        "meter": "Medidor",
        "none": "sem registro de medidor",
        "unknown": "registro não encontrado",
        "uncal": "sem calibração",
        "cal": "calibração {date}, certificado {cert}, desvio {offset} pp, vence {due}",
        "approval": "aprovação Inmetro {n}",
        "method": "método {m}",
        "readings": "{n} leituras",
        "overdue_n": "{n} leituras com calibração VENCIDA",
        "by_reading": "Leituras: medidor, método e calibração",
        "time": "Hora",
        "device": "Medidor",
        "method_h": "Método",
        "cal_h": "Calibração",
        "pct": "Umidade %",
        "state": "Situação",
        "overdue": "VENCIDA",
        "ok": "em dia",
        "checks": "Comparação entre medidores",
        "checks_note": "Leituras de medidores diferentes até {w} de distância;"
        " diferença acima de {tol} pp marcada.",
        "no_checks": "Nenhum par de medidores no mesmo intervalo.",
        "other": "Outro medidor",
        "diff": "Diferença pp",
        "beyond": "ACIMA DA TOLERÂNCIA",
        "within": "dentro",
        "oven": "Referência de estufa (ISO 6673)",
        "oven_value": "{pct} % por {by} em {at}",
        "no_oven": "Sem resultado de estufa.",
        "bias": "Viés de cada medidor (média menos estufa)",
        "mean": "Média %",
        "bias_h": "Viés pp",
        "n": "Leituras",
        "yes": "sim",
        "no": "não",
    },
    "en": {
        "heading": "Meters and calibration",
        "meter": "Meter",
        "none": "no meter record",
        "unknown": "record not found",
        "uncal": "not calibrated",
        "cal": "calibrated {date}, certificate {cert}, offset {offset} pp, due {due}",
        "approval": "Inmetro approval {n}",
        "method": "method {m}",
        "readings": "{n} readings",
        "overdue_n": "{n} readings with calibration OVERDUE",
        "by_reading": "Readings: meter, method and calibration",
        "time": "Time",
        "device": "Meter",
        "method_h": "Method",
        "cal_h": "Calibration",
        "pct": "Moisture %",
        "state": "State",
        "overdue": "OVERDUE",
        "ok": "in force",
        "checks": "Cross-checks between meters",
        "checks_note": "Readings of different meters at most {w} apart;"
        " differences beyond {tol} pp are marked.",
        "no_checks": "No two meters read within the window.",
        "other": "Other meter",
        "diff": "Difference pp",
        "beyond": "BEYOND TOLERANCE",
        "within": "within",
        "oven": "Oven reference (ISO 6673)",
        "oven_value": "{pct} % by {by} at {at}",
        "no_oven": "No oven result.",
        "bias": "Each meter's bias (mean minus oven)",
        "mean": "Mean %",
        "bias_h": "Bias pp",
        "n": "Readings",
        "yes": "yes",
        "no": "no",
    },
}


@dataclass(frozen=True, slots=True)
class ReadingMeter:
    """One reading with its meter evidence.

    Attributes:
        reading: The reading.
        ref: Its calibration id (None: its device had no meter record).
        record: The record of ``ref`` (None: none, or unknown to the store).
        overdue: Taken after the calibration's due date (or with no calibration).
    """

    reading: LotReading
    ref: str | None
    record: MeterCalibration | None
    overdue: bool


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """Two meters' readings of the lot close in time.

    Attributes:
        first: The earlier-listed meter's reading.
        second: The other meter's reading.
        diff_pp: ``second - first`` (percentage points).
        beyond: ``abs(diff_pp)`` exceeds the tolerance.
    """

    first: LotReading
    second: LotReading
    diff_pp: float
    beyond: bool


@dataclass(frozen=True, slots=True)
class MeterBias:
    """A meter's mean over the lot against the oven reference.

    Attributes:
        device: The meter.
        readings: Its readings of the lot.
        mean_pct: Their mean.
        bias_pp: ``mean_pct`` minus the oven value (None: no oven result).
    """

    device: str
    readings: int
    mean_pct: float
    bias_pp: float | None


def _day(ts_ns: int, tz: datetime.tzinfo) -> datetime.date | None:
    try:
        return datetime.datetime.fromtimestamp(ts_ns / NS, tz).date()
    except (OverflowError, OSError, ValueError):
        return None


def reading_meters(record: LotRecord, tz: datetime.tzinfo) -> list[ReadingMeter]:
    """Each reading of the lot, in its order, with its meter evidence."""
    ev = record.meters
    refs = {} if ev is None else {(d, s): ref for d, s, ref in ev.refs}
    known = {} if ev is None else {c.ref: c for c in ev.calibrations}
    out: list[ReadingMeter] = []
    for r in record.readings:
        ref = refs.get((r.device, r.seq))
        rec = None if ref is None else known.get(ref)
        day = _day(r.ts_ns, tz)
        overdue = rec is not None and day is not None and rec.overdue_at(day)
        out.append(ReadingMeter(reading=r, ref=ref, record=rec, overdue=overdue))
    return out


def _meter_name(rm: ReadingMeter) -> str:
    rec = rm.record
    parts = [rm.reading.device]
    if rec is not None:
        ident = " ".join(x for x in (rec.make, rec.model) if x)
        if rec.serial:
            ident = f"{ident} nº {rec.serial}".strip()
        if ident:
            parts.append(f"({ident})")
    return " ".join(parts)


def _cal_cell(rm: ReadingMeter) -> str:
    rec = rm.record
    if rm.ref is None:
        return ""
    if rec is None or rec.certificate is None:
        return rm.ref
    return f"{rm.ref} {rec.certificate}"


def _state_cell(rm: ReadingMeter, overdue: str, ok: str, uncalibrated: str) -> str:
    if rm.ref is None:
        return ""
    if rm.record is not None and rm.record.date is None:
        return uncalibrated
    return overdue if rm.overdue else ok


def csv_cells(
    record: LotRecord, tz: datetime.tzinfo, lang: Lang
) -> dict[tuple[str, int], tuple[str, str, str, str]]:
    """The meter columns of each reading, by ``(device, seq)`` (see ``CSV_COLUMNS``)."""
    t = _TEXT[lang]
    return {
        (rm.reading.device, rm.reading.seq): (
            _meter_name(rm),
            (rm.record.method or "") if rm.record is not None else "",
            _cal_cell(rm),
            _state_cell(rm, t["yes"], t["no"], t["uncal"]),
        )
        for rm in reading_meters(record, tz)
    }


def cross_checks(
    readings: Sequence[LotReading], *, window_s: float, tolerance_pp: float
) -> list[CrossCheck]:
    """Each reading paired with the nearest reading of each other meter within the window.

    A pair is listed once (from the reading of the meter whose id sorts first).
    """
    by_device: dict[str, list[LotReading]] = {}
    for r in readings:
        by_device.setdefault(r.device, []).append(r)
    for series in by_device.values():
        series.sort(key=lambda r: r.ts_ns)
    window_ns = round(window_s * NS)
    out: list[CrossCheck] = []
    devices = sorted(by_device)
    for i, a in enumerate(devices):
        for b in devices[i + 1 :]:
            others = by_device[b]
            j = 0
            for r in by_device[a]:
                while j + 1 < len(others) and others[j + 1].ts_ns <= r.ts_ns:
                    j += 1
                near = [o for o in others[j : j + 2] if abs(o.ts_ns - r.ts_ns) <= window_ns]
                if not near:
                    continue
                other = min(near, key=lambda o: (abs(o.ts_ns - r.ts_ns), o.ts_ns))
                diff = round(other.moisture_pct - r.moisture_pct, 6)
                out.append(CrossCheck(r, other, diff, abs(diff) > tolerance_pp))
    out.sort(key=lambda c: (c.first.ts_ns, c.first.device, c.second.device))
    return out


def reference_oven(record: LotRecord) -> OvenResult | None:
    """The lot's reference oven result: the latest entered."""
    ev = record.meters
    return ev.oven[-1] if ev is not None and ev.oven else None


def meter_bias(record: LotRecord) -> list[MeterBias]:
    """Each meter's mean over the lot, and its bias against the oven reference."""
    oven = reference_oven(record)
    sums: dict[str, list[float]] = {}
    for r in record.readings:
        sums.setdefault(r.device, []).append(r.moisture_pct)
    return [
        MeterBias(
            device=device,
            readings=len(values),
            mean_pct=round(sum(values) / len(values), 6),
            bias_pp=None
            if oven is None
            else round(sum(values) / len(values) - oven.moisture_pct, 6),
        )
        for device, values in sorted(sums.items())
    ]


@dataclass(frozen=True, slots=True)
class PdfTools:
    """The report's drawing helpers, lent to ``pdf_section``.

    Attributes:
        heading: A section heading.
        line: A wrapped line of text.
        table: A ruled table (headings, rows, relative column widths).
        when: A time, in the site's zone and the report's language.
        number: A number with the given decimals, in the report's language.
        printable: Text made safe for the font (nothing hidden).
    """

    heading: Callable[[str], None]
    line: Callable[[str], None]
    table: Callable[[Sequence[str], Sequence[Sequence[str]], Sequence[float]], None]
    when: Callable[[int], str]
    number: Callable[[float, int], str]
    printable: Callable[[str], str]


def _duration(seconds: float, lang: Lang) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def pdf_section(
    record: LotRecord,
    draw: PdfTools,
    *,
    lang: Lang,
    tz: datetime.tzinfo,
    window_s: float,
    tolerance_pp: float,
) -> None:
    """The report's meter section (only for a lot with meter evidence)."""
    if record.meters is None:
        return
    t = _TEXT[lang]
    p = draw.printable
    rows = reading_meters(record, tz)
    draw.heading(t["heading"])
    seen: dict[str, list[ReadingMeter]] = {}
    for rm in rows:
        seen.setdefault(rm.ref or f"-{rm.reading.device}", []).append(rm)
    for key, group in seen.items():
        first = group[0]
        rec = first.record
        text = f"{t['meter']} {_meter_name(first)}"
        if first.ref is None:
            text += f": {t['none']}"
        elif rec is None:
            text += f": {key} ({t['unknown']})"
        else:
            extra = [key]
            if rec.inmetro_approval:
                extra.append(t["approval"].format(n=rec.inmetro_approval))
            if rec.method:
                extra.append(t["method"].format(m=rec.method))
            if rec.date is None:
                extra.append(t["uncal"])
            else:
                extra.append(
                    t["cal"].format(
                        date=rec.date,
                        cert=rec.certificate or "-",
                        offset=draw.number(rec.offset_pct or 0.0, 2),
                        due=rec.due or "-",
                    )
                )
            text += ": " + "; ".join(extra)
        text += f"; {t['readings'].format(n=len(group))}"
        overdue = sum(1 for rm in group if rm.overdue)
        if overdue:
            text += f"; {t['overdue_n'].format(n=overdue)}"
        draw.line(p(text))

    draw.heading(t["by_reading"])
    draw.table(
        (t["time"], t["device"], t["method_h"], t["cal_h"], t["pct"], t["state"]),
        [
            (
                draw.when(rm.reading.ts_ns),
                p(_meter_name(rm)),
                p(rm.record.method or "-") if rm.record is not None else "-",
                p(_cal_cell(rm) or "-"),
                draw.number(rm.reading.moisture_pct, 1),
                _state_cell(rm, t["overdue"], t["ok"], t["uncal"]) or "-",
            )
            for rm in rows
        ],
        (30, 40, 30, 42, 18, 20),
    )

    draw.heading(t["checks"])
    draw.line(
        t["checks_note"].format(w=_duration(window_s, lang), tol=draw.number(tolerance_pp, 1))
    )
    checks = cross_checks(record.readings, window_s=window_s, tolerance_pp=tolerance_pp)
    if checks:
        draw.table(
            (t["time"], t["device"], t["pct"], t["other"], t["pct"], t["diff"], t["state"]),
            [
                (
                    draw.when(c.first.ts_ns),
                    p(c.first.device),
                    draw.number(c.first.moisture_pct, 1),
                    p(c.second.device),
                    draw.number(c.second.moisture_pct, 1),
                    ("+" if c.diff_pp > 0 else "") + draw.number(c.diff_pp, 2),
                    t["beyond"] if c.beyond else t["within"],
                )
                for c in checks
            ],
            (30, 22, 16, 22, 16, 18, 34),
        )
    else:
        draw.line(t["no_checks"])

    draw.heading(t["oven"])
    oven = reference_oven(record)
    if oven is None:
        draw.line(t["no_oven"])
        return
    draw.line(
        p(
            t["oven_value"].format(
                pct=draw.number(oven.moisture_pct, 2), by=oven.by, at=draw.when(oven.ts_ns)
            )
        )
    )
    draw.heading(t["bias"])
    draw.table(
        (t["device"], t["n"], t["mean"], t["bias_h"]),
        [
            (
                p(b.device),
                str(b.readings),
                draw.number(b.mean_pct, 2),
                "-"
                if b.bias_pp is None
                else ("+" if b.bias_pp > 0 else "") + draw.number(b.bias_pp, 2),
            )
            for b in meter_bias(record)
        ],
        (50, 20, 30, 30),
    )
