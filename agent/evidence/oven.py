"""A lot's reference oven result from MQTT and the web, and the meter evidence as JSON.

``cmd/lotoven/<lot code, escaped>`` with ``{"moisture_pct": 11.4}`` (a number, or
text with a comma or a point) records a reference oven result (ISO 6673) for a lot
the records know, with the same checks as ``coffee-telemetry lot oven``
(``meters.parse_oven``: more than 0 and at most ``OVEN_MAX_PCT``, finite; ``by``
printable, at most 64 characters). The command boundary names who (a logged-in
user on the web, the payload's ``by`` claim or ``mqtt``); any other key is refused,
and nothing is written on a refusal. The reply carries the result and each meter's
bias against it. ``POST /api/lots/<code>/oven`` goes through the same boundary.

``meters_doc`` is what the Lote page reads (``GET /api/lots/<code>``, key
``meters``): each reading's calibration id by ``"<device>:<seq>"``, those
calibrations' records, which readings were taken past their due date, the oven
results (the latest is the reference) and each meter's bias
(``meter_report.meter_bias``).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from coffee_telemetry.agent.commands import Command, CommandHandler, CommandRefused
from coffee_telemetry.agent.evidence.meter_report import meter_bias, reading_meters
from coffee_telemetry.agent.evidence.meters import OvenResult, parse_oven, set_oven
from coffee_telemetry.agent.lots.model import LotRecord
from coffee_telemetry.agent.lots.records import AsyncLotRecords
from coffee_telemetry.agent.lots.store import LotError, validate_lot

__all__ = [
    "OVEN_COMMAND",
    "handle_oven_command",
    "meters_doc",
    "oven_command",
    "parse_oven_doc",
]

#: The command that records a lot's oven result: ``cmd/lotoven/<lot code, escaped>``.
OVEN_COMMAND = "lotoven"
#: The keys a ``lotoven`` payload may carry.
_KEYS = frozenset({"moisture_pct", "by"})


def parse_oven_doc(doc: Mapping[str, object], by: str) -> tuple[float, str]:
    """The oven result of a ``lotoven`` payload and who entered it.

    Raises:
        CommandRefused: An unknown key, no ``moisture_pct``, or a value
            ``meters.parse_oven`` refuses (its message).
    """
    unknown = sorted(k for k in doc if k not in _KEYS)
    if unknown:
        raise CommandRefused(f"unknown key {unknown[0][:40]!r} (moisture_pct, by)")
    if "moisture_pct" not in doc:
        raise CommandRefused("send {'moisture_pct': <oven moisture, % wet basis>}")
    try:
        return parse_oven(doc["moisture_pct"], by)
    except ValueError as exc:
        raise CommandRefused(str(exc)) from None


def _oven_doc(oven: OvenResult) -> dict[str, object]:
    return {"ts_ns": oven.ts_ns, "moisture_pct": oven.moisture_pct, "by": oven.by}


def _bias_docs(record: LotRecord) -> list[dict[str, object]]:
    return [dataclasses.asdict(b) for b in meter_bias(record)]


async def handle_oven_command(records: AsyncLotRecords, cmd: Command) -> dict[str, object]:
    """``cmd/lotoven/<code>``: record the lot's oven result; the reply document.

    Raises:
        CommandRefused: Not ``lotoven/<code>``, a bad or unknown lot, or a bad
            result; nothing is written.
    """
    if len(cmd.path) != 2 or cmd.path[0] != OVEN_COMMAND:
        raise CommandRefused(f"expected cmd/{OVEN_COMMAND}/<lot>")
    try:
        code = validate_lot(cmd.path[1])
    except LotError as exc:
        raise CommandRefused(str(exc)) from None
    pct, by = parse_oven_doc(cmd.doc, cmd.by)
    if await records.record(code) is None:
        raise CommandRefused(f"unknown lot {code!r}: no reading, weighment or event of it")
    at_ns = records.now_ns()
    await records.call(
        records.sync.write_with, lambda conn: set_oven(conn, code, pct, by, at_ns=at_ns)
    )
    record = await records.record(code)
    return {
        "lot": code,
        "oven": _oven_doc(OvenResult(at_ns, pct, by)),
        "bias": [] if record is None else _bias_docs(record),
    }


def oven_command(records: AsyncLotRecords) -> CommandHandler:
    """``handle_oven_command`` on ``records``, as the command boundary calls it."""

    async def handle(cmd: Command) -> dict[str, object]:
        return await handle_oven_command(records, cmd)

    return handle


def meters_doc(record: LotRecord, tz: datetime.tzinfo) -> dict[str, object]:
    """The lot's meter evidence as JSON (module docstring)."""
    ev = record.meters
    refs: dict[str, str] = {}
    overdue: list[str] = []
    for rm in reading_meters(record, tz):
        key = f"{rm.reading.device}:{rm.reading.seq}"
        if rm.ref is not None:
            refs[key] = rm.ref
        if rm.overdue:
            overdue.append(key)
    calibrations = {} if ev is None else {c.ref: dataclasses.asdict(c) for c in ev.calibrations}
    ovens = [] if ev is None else [_oven_doc(o) for o in ev.oven]
    return {
        "refs": refs,
        "calibrations": calibrations,
        "overdue": overdue,
        "oven": ovens[-1] if ovens else None,
        "oven_history": ovens,
        "bias": _bias_docs(record),
    }
