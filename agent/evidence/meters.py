"""Meters as evidence: who measured, by which method, under which calibration.

Theory of operation
-------------------
A measuring device's ``[devices.meter]`` table (``agent.config.MeterConfig``) names the
instrument (make, model, serial number, Inmetro approval, method) and its calibration
in force (date, certificate, offset, due date). ``meter_record`` turns it into a
``MeterCalibration`` and ``calibration_ref`` into a short id, ``cal-`` and 12 hex digits
of the SHA-256 of that record's canonical JSON. The id is computed once per device
when its loop is made (``agent.devices.runner``) and added to each of its readings as
the string field ``calibration`` (a field, not a tag: it never splits a series); a
device without a ``meter`` table adds nothing.

The id is content-addressed: the same record always gives the same id and any change
(a new certificate, a corrected serial number) gives a new one, so a reading keeps
pointing at the record that was in force when it was taken. The records live in the
lot records' store (``data_dir/lots-records.sqlite3``, table ``meter_calibrations``,
``STEP``), where the lot's readings keep their ``calibration`` column: both share the
lot record's retention (5 years) and backups. ``record_calibrations`` writes the
configured ones (``INSERT OR IGNORE``) when the agent starts, every status interval
after, and whenever a command reads them (``meters``, lot reports), so a report
resolves the id years later, whatever the site file says by then.

``calibration_status`` makes one ``calibration_status`` reading per calibrated meter
(``run_calibration_status`` publishes them at start, on a change, and hourly):
``days_left`` to its due date in the site's time zone, the ``due`` date, the
``certificate`` and the ``calibration`` id. The ``calibration_due`` alert rule reads
them (``agent.alerts``). A lot's reference oven result (ISO 6673, 105 °C, 16 h) is
kept here too (``set_oven``), one row per entry, the latest being the reference.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from coffee_telemetry.agent.commands import CommandRefused, check_by
from coffee_telemetry.agent.config import DeviceConfig, MeterConfig
from coffee_telemetry.agent.readings import Draft
from coffee_telemetry.agent.sqlite import MigrationStep, script
from coffee_telemetry.drivers.events import FieldValue

__all__ = [
    "CALIBRATION_FIELD",
    "OVEN_MAX_PCT",
    "STATUS_MEASUREMENT",
    "STEP",
    "MeterCalibration",
    "MeterEvidence",
    "OvenResult",
    "all_calibrations",
    "calibration_ref",
    "calibration_status",
    "calibrations",
    "configured_records",
    "forget_oven",
    "load_meter_evidence",
    "meter_record",
    "parse_oven",
    "record_calibrations",
    "run_calibration_status",
    "set_oven",
]

log = logging.getLogger(__name__)

#: The reading field that carries the calibration id.
CALIBRATION_FIELD = "calibration"
#: The measurement of the per-meter calibration status readings.
STATUS_MEASUREMENT = "calibration_status"
#: Oven moisture results outside 0..OVEN_MAX_PCT (wet basis) are refused.
OVEN_MAX_PCT = 80.0
_SCHEMA = """
ALTER TABLE readings ADD COLUMN calibration TEXT;
CREATE TABLE IF NOT EXISTS meter_calibrations (
    ref TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    make TEXT,
    model TEXT,
    serial TEXT,
    inmetro_approval TEXT,
    method TEXT,
    cal_date TEXT,
    certificate TEXT,
    offset_pct REAL,
    due TEXT,
    recorded_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lot_oven (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    moisture_pct REAL NOT NULL,
    by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lot_oven_code ON lot_oven (code, ts_ns);
"""

#: The lot records store's step that adds the readings' ``calibration`` column, the
#: calibration records and the oven results (appended to ``agent.lots.records.STEPS``).
STEP: MigrationStep = script(_SCHEMA)


@dataclass(frozen=True, slots=True)
class MeterCalibration:
    """A meter's identity and calibration, as in force when some readings were taken.

    Attributes:
        ref: Its id (``calibration_ref``).
        device: The configured device id.
        make: Maker.
        model: Model.
        serial: The instrument's serial number.
        inmetro_approval: The model's Inmetro approval number.
        method: The measuring method or curve.
        date: Calibration date (ISO 8601), if calibrated.
        certificate: Certificate number.
        offset_pct: Offset found by the calibration (percentage points).
        due: Next calibration due (ISO 8601).
    """

    ref: str
    device: str
    make: str | None = None
    model: str | None = None
    serial: str | None = None
    inmetro_approval: str | None = None
    method: str | None = None
    date: str | None = None
    certificate: str | None = None
    offset_pct: float | None = None
    due: str | None = None

    def overdue_at(self, day: datetime.date) -> bool:
        """Whether a reading taken on ``day`` was taken past the due date.

        A record with no calibration is never overdue: "not calibrated" is its own state.
        """
        if self.due is None:
            return False
        return day > datetime.date.fromisoformat(self.due)


@dataclass(frozen=True, slots=True)
class OvenResult:
    """A reference oven moisture result of a lot (ISO 6673).

    Attributes:
        ts_ns: When it was entered.
        moisture_pct: Moisture, wet basis.
        by: Who entered it.
    """

    ts_ns: int
    moisture_pct: float
    by: str


@dataclass(frozen=True, slots=True)
class MeterEvidence:
    """A lot's meter evidence: each reading's calibration id, the records, the oven.

    Attributes:
        refs: ``(device, seq, ref)`` of the lot's readings that carry a calibration id.
        calibrations: The records of those ids (those the store knows), by id.
        oven: Reference oven results, oldest first (the last is the reference).
    """

    refs: tuple[tuple[str, int, str], ...] = ()
    calibrations: tuple[MeterCalibration, ...] = ()
    oven: tuple[OvenResult, ...] = ()


def _record_doc(device: str, meter: MeterConfig) -> dict[str, object]:
    cal = meter.calibration
    return {
        "device": device,
        "make": meter.make,
        "model": meter.model,
        "serial": meter.serial,
        "inmetro_approval": meter.inmetro_approval,
        "method": meter.method,
        "date": None if cal is None else cal.date.isoformat(),
        "certificate": None if cal is None else cal.certificate,
        "offset_pct": None if cal is None else float(cal.offset_pct),
        "due": None if cal is None else cal.due_date.isoformat(),
    }


def calibration_ref(device: str, meter: MeterConfig | None) -> str | None:
    """The id of a device's meter record (None: the device has no ``meter`` table)."""
    if meter is None:
        return None
    doc = json.dumps(
        _record_doc(device, meter), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "cal-" + hashlib.sha256(doc.encode("utf-8")).hexdigest()[:12]


def meter_record(device: str, meter: MeterConfig) -> MeterCalibration:
    """The record ``calibration_ref(device, meter)`` names."""
    ref = calibration_ref(device, meter)
    assert ref is not None
    doc = _record_doc(device, meter)
    offset = doc["offset_pct"]
    return MeterCalibration(
        ref=ref,
        device=device,
        make=meter.make,
        model=meter.model,
        serial=meter.serial,
        inmetro_approval=meter.inmetro_approval,
        method=meter.method,
        date=None if doc["date"] is None else str(doc["date"]),
        certificate=None if doc["certificate"] is None else str(doc["certificate"]),
        offset_pct=float(offset) if isinstance(offset, float) else None,
        due=None if doc["due"] is None else str(doc["due"]),
    )


def configured_records(devices: Iterable[DeviceConfig]) -> list[MeterCalibration]:
    """The records of every device with a ``meter`` table, in config order."""
    return [meter_record(d.id, d.meter) for d in devices if d.meter is not None]


# -- the store (tables of the lot records' database) ---------------------------------------

_COLUMNS = (
    "ref, device, make, model, serial, inmetro_approval, method, cal_date, certificate,"
    " offset_pct, due"
)


def record_calibrations(
    conn: sqlite3.Connection, records: Iterable[MeterCalibration], *, at_ns: int
) -> int:
    """Keep ``records`` (already known ids are left as they are); returns how many are new."""
    added = 0
    with conn:
        for r in records:
            row = asdict(r)
            cur = conn.execute(
                f"INSERT OR IGNORE INTO meter_calibrations ({_COLUMNS}, recorded_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row.values(), at_ns),
            )
            added += cur.rowcount
    return added


def calibrations(conn: sqlite3.Connection, refs: Iterable[str]) -> dict[str, MeterCalibration]:
    """The stored records of ``refs`` (unknown ids are left out)."""
    wanted = sorted(set(refs))
    out: dict[str, MeterCalibration] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM meter_calibrations WHERE ref IN ({marks})", chunk
        ):
            out[str(row[0])] = MeterCalibration(*row)
    return out


def all_calibrations(conn: sqlite3.Connection) -> list[tuple[MeterCalibration, int]]:
    """Every stored record with when it was first recorded, oldest first."""
    return [
        (MeterCalibration(*row[:-1]), int(row[-1]))
        for row in conn.execute(
            f"SELECT {_COLUMNS}, recorded_ns FROM meter_calibrations ORDER BY recorded_ns, ref"
        )
    ]


def parse_oven(value: object, by: object) -> tuple[float, str]:
    """An oven result and who entered it, checked (``ValueError`` says what is wrong)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("umidade de estufa inválida / invalid oven moisture")
    try:
        pct = float(str(value).strip().replace(",", ".")) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(
            f"umidade de estufa inválida / invalid oven moisture: {str(value)[:20]!r}"
        ) from None
    pct = float(pct)
    if math.isfinite(pct):
        pct = round(pct, 3)
    if not math.isfinite(pct) or not 0.0 < pct <= OVEN_MAX_PCT:
        raise ValueError(
            f"umidade de estufa fora de 0-{OVEN_MAX_PCT:g} % / oven moisture out of range"
        )
    try:
        who = check_by(by)
    except CommandRefused as exc:
        raise ValueError(f"quem mediu (--by) / who measured (--by): {exc.reason}") from None
    return pct, who


def set_oven(conn: sqlite3.Connection, code: str, pct: float, by: str, *, at_ns: int) -> None:
    """Record a reference oven result for the lot ``code`` (already validated)."""
    with conn:
        conn.execute(
            "INSERT INTO lot_oven (code, ts_ns, moisture_pct, by) VALUES (?, ?, ?, ?)",
            (code, at_ns, pct, by),
        )


def forget_oven(conn: sqlite3.Connection, lot_ids: Sequence[int]) -> None:
    """Delete the oven results of the lots ``lot_ids`` (pruned with their record)."""
    conn.executemany(
        "DELETE FROM lot_oven WHERE code = (SELECT code FROM lots WHERE id = ?)",
        [(i,) for i in lot_ids],
    )


def load_meter_evidence(conn: sqlite3.Connection, lot_id: int, code: str) -> MeterEvidence | None:
    """A lot's meter evidence (None when it has none: old records keep their hashes).

    Reads the lot's readings where they are now (the ``lot_readings`` view: a reading
    moved to another lot takes its calibration id along).
    """
    refs = tuple(
        (str(d), int(s), str(c))
        for d, s, c in conn.execute(
            "SELECT device, seq, calibration FROM lot_readings"
            " WHERE cur_lot = ? AND calibration IS NOT NULL ORDER BY ts_ns, device, seq",
            (lot_id,),
        )
    )
    oven = tuple(
        OvenResult(int(t), float(p), str(b))
        for t, p, b in conn.execute(
            "SELECT ts_ns, moisture_pct, by FROM lot_oven WHERE code = ? ORDER BY ts_ns, id",
            (code,),
        )
    )
    if not refs and not oven:
        return None
    known = calibrations(conn, (ref for _, _, ref in refs))
    return MeterEvidence(refs=refs, calibrations=tuple(known[k] for k in sorted(known)), oven=oven)


# -- status readings -------------------------------------------------------------------------


def calibration_status(devices: Iterable[DeviceConfig], today: datetime.date) -> list[Draft]:
    """One ``calibration_status`` reading per enabled device with a calibration record."""
    drafts: list[Draft] = []
    for dev in devices:
        meter = dev.meter
        if not dev.enabled or meter is None or meter.calibration is None:
            continue
        due = meter.calibration.due_date
        ref = calibration_ref(dev.id, meter)
        assert ref is not None
        drafts.append(
            Draft(
                device=dev.id,
                measurement=STATUS_MEASUREMENT,
                fields={
                    "days_left": (due - today).days,
                    "due": due.isoformat(),
                    "certificate": meter.calibration.certificate,
                    CALIBRATION_FIELD: ref,
                },
                tags={"device": dev.id, "station": dev.station},
            )
        )
    return drafts


async def run_calibration_status(
    devices: Callable[[], Sequence[DeviceConfig]],
    *,
    accept: Callable[[Sequence[Draft]], Awaitable[object]],
    site: str,
    tz: datetime.tzinfo,
    remember: Callable[[Sequence[MeterCalibration]], Awaitable[object]] | None = None,
    interval_s: float = 60.0,
    republish_s: float = 3600.0,
    clock_ns: Callable[[], int] = time.time_ns,
) -> None:
    """Keep the configured records every ``interval_s``, and publish each meter's status.

    The status goes out at start, whenever it changes (a new day, a reload with a new
    calibration) and at least every ``republish_s``.
    """
    last: list[tuple[str, list[tuple[str, FieldValue]]]] | None = None
    last_ns = 0
    while True:
        current = devices()
        if remember is not None:
            await remember(configured_records(current))
        now = clock_ns()
        today = datetime.datetime.fromtimestamp(now / 1e9, tz).date()
        drafts = [
            Draft(
                device=d.device,
                measurement=d.measurement,
                fields=d.fields,
                tags={"site": site, **d.tags},
            )
            for d in calibration_status(current, today)
        ]
        state = [(d.device, sorted(d.fields.items())) for d in drafts]
        if drafts and (state != last or now - last_ns >= republish_s * 1e9):
            await accept(drafts)
            last, last_ns = state, now
        await asyncio.sleep(interval_s)
