"""Lot evidence kept 5 years whatever the raw history does, and sent on to every sink."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.lots import corrections
from coffee_telemetry.agent.lots.corrections import MoveRequest
from coffee_telemetry.agent.lots.outflow import DEVICE, MEASUREMENT, LotRecordEvents
from coffee_telemetry.agent.lots.records import (
    LotRecords,
    open_lot_records,
    parse_details,
)
from coffee_telemetry.agent.readings import Draft
from tests.agent.lots.test_records import NS, T0, assignment, moisture

YEAR = 365 * 86_400 * NS


def test_lot_records_are_kept_at_least_five_years() -> None:
    base = {"site": {"id": "s1"}, "agent": {"data_dir": "/tmp/x"}}
    assert parse_config({**base, "lots": {"retention_years": 5}}).lots.retention_years == 5
    with pytest.raises(ConfigError, match="retention_years"):
        parse_config({**base, "lots": {"retention_years": 4.9}})


def test_prune_keeps_five_years_and_never_touches_other_stores(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    store = LotRecords.open(path)
    try:
        store.write([moisture(1, 11.0), moisture(2, 11.5, lot="L-0043", ts=T0 + YEAR)])
        conn = sqlite3.connect(path)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            calibrations_before = (
                conn.execute("SELECT COUNT(*) FROM meter_calibrations").fetchone()[0]
                if "meter_calibrations" in tables
                else None
            )
        finally:
            conn.close()
        assert store.prune(T0 + 5 * YEAR) == 0  # seen at T0 + 1 s: not yet 5 years
        assert store.record("L-0042") is not None
        assert store.prune(T0 + 5 * YEAR + 2 * NS) == 1  # L-0042 past 5 years; L-0043 is not
        assert store.record("L-0042") is None
        assert store.record("L-0043") is not None
        if calibrations_before is not None:
            conn = sqlite3.connect(path)
            try:
                after = conn.execute("SELECT COUNT(*) FROM meter_calibrations").fetchone()[0]
            finally:
                conn.close()
            assert after == calibrations_before  # calibration records are never pruned here
    finally:
        store.close()


def test_people_written_events_go_on_once_through_restarts(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    sent: list[Draft] = []

    async def record(drafts: Sequence[Draft]) -> None:
        sent.extend(drafts)

    async def run() -> None:
        async with open_lot_records(path) as records:
            records.sync.write([assignment(1, "set"), moisture(1, 11.0), moisture(2, 13.0)])
            records.sync.set_details(
                "L-0042", parse_details({"producer": "Sítio Boa Vista"}), by="ana",
                source="cli", at_ns=T0 + 10 * NS,
            )  # fmt: skip
            records.sync.write_with(
                lambda conn: corrections.move_reading(
                    conn, MoveRequest("umid-1", 2, "L-0043", "lote errado"), from_lot=None,
                    by="ana", source="web:ana", at_ns=T0 + 20 * NS,
                )
            )  # fmt: skip
            events = LotRecordEvents(records, site="s1", record=record)
            assert await events.send_pending() == 3
            assert await events.send_pending() == 0  # once

    asyncio.run(run())
    assert [(d.fields["event"], d.tags["lot"]) for d in sent] == [
        ("details", "L-0042"),
        ("moved_out", "L-0042"),
        ("moved_in", "L-0043"),
    ]  # the assignment came from the outbox: not sent again
    assert all(d.device == DEVICE and d.measurement == MEASUREMENT for d in sent)
    assert all(d.kind == "event" and d.exact for d in sent)
    assert sent[1].ts_ns == T0 + 20 * NS
    assert sent[1].fields["source"] == "web:ana"

    async def again() -> int:
        async with open_lot_records(path) as records:
            return await LotRecordEvents(records, site="s1", record=record).send_pending()

    assert asyncio.run(again()) == 0  # the cursor is on disk

    async def failing(drafts: Sequence[Draft]) -> None:
        raise OSError("outbox full")

    async def crash_then_retry() -> int:
        async with open_lot_records(path) as records:
            records.sync.set_details(
                "L-0043", parse_details({"bags": 7}), by="ana", source="cli", at_ns=T0
            )
            with pytest.raises(OSError, match="outbox full"):
                await LotRecordEvents(records, site="s1", record=failing).send_pending()
            return await LotRecordEvents(records, site="s1", record=record).send_pending()

    assert asyncio.run(crash_then_retry()) == 1  # not accepted: sent again
    assert sent[-1].tags["lot"] == "L-0043"


def test_the_central_recorder_takes_lot_record_events(tmp_path: Path) -> None:
    """What the NATS sink publishes of a lot_record event, the central recorder records."""
    from coffee_telemetry.agent.central.recorder import check_message
    from coffee_telemetry.agent.readings import Stamper, encode_reading
    from coffee_telemetry.agent.sinks.nats import subject_for

    sent: list[Draft] = []

    async def record(drafts: Sequence[Draft]) -> None:
        sent.extend(drafts)

    async def run() -> None:
        async with open_lot_records(tmp_path / "r.sqlite3") as records:
            records.sync.write([moisture(1, 11.0)])
            records.sync.write_with(
                lambda conn: corrections.move_reading(
                    conn, MoveRequest("umid-1", 1, "L/7", "lote \"errado\" ☕\u200f"),
                    from_lot=None, by="ana", source="web:ana", at_ns=T0 + 20 * NS,
                )
            )  # fmt: skip
            await LotRecordEvents(records, site="s1", record=record).send_pending()

    asyncio.run(run())
    assert len(sent) == 2
    for reading in Stamper().stamp_drafts(sent):
        subject = subject_for("coffee", "s1", reading.device, reading.kind)
        checked, line = check_message(subject, encode_reading(reading), prefix="coffee")
        assert checked.fields["event"] in ("moved_out", "moved_in")
        assert line.startswith(f"{MEASUREMENT},")
        assert "lot=L/7" in line or "lot=L-0042" in line
