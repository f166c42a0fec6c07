"""Lot records: what each outbox record adds to a lot, exactly once; the outbox sink; retention."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.lots.records import (
    SINK_NAME,
    LotQuery,
    LotRecords,
    LotRecordSink,
    Thresholds,
    open_lot_records,
    parse_details,
)
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Draft, Reading, Stamper, decode_reading
from coffee_telemetry.agent.sqlite import connect_read_only
from tests.fakes import stage

NS = 1_000_000_000
T0 = 1_796_000_000 * NS
THRESHOLDS = Thresholds(default_pct=12.5, by_product={"arabica": 12.0})


def moisture(seq: int, pct: float, *, lot: str = "L-0042", ts: int | None = None) -> Reading:
    return Reading(
        ts_ns=T0 + seq * NS if ts is None else ts,
        seq=seq,
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": pct, "temperature_c": 24.5, "sample_id": f"A{seq}"},
        tags={"site": "s1", "device": "umid-1", "station": "recepcao", "lot": lot},
        audit=f"UMIDADE {pct:.1f} %",
    )


def weighment(seq: int, kg: float, *, net: bool = False, lot: str = "L-0042") -> Reading:
    return Reading(
        ts_ns=T0 + 100 * NS + seq * NS,
        seq=seq,
        device="balanca",
        measurement="weighment",
        fields={"weight_kg": kg, "tare_kg": 10.0, "net": net},
        tags={"device": "balanca", "station": "recepcao", "lot": lot, "trigger": "stable"},
        kind="event",
    )


def assignment(seq: int, action: str, *, lot: str | None = "L-0042") -> Reading:
    tags = {"device": "agent", "station": "recepcao"}
    if lot is not None:
        tags["lot"] = lot
    return Reading(
        ts_ns=T0 + seq,
        seq=seq,
        device="agent",
        measurement="lot_assignment",
        fields={"action": action, "lot_code": lot or "", "by": "maria", "source": "cli"},
        tags=tags,
        kind="event",
    )


def alert(seq: int, state: str, *, subject: str = "L-0042", rule: str = "wet_lot") -> Reading:
    fields: dict[str, str | float | int | bool] = {"message": f"lote úmido {state}"}
    if state == "acknowledged":
        fields["acked_by"] = "joao"
    return Reading(
        ts_ns=T0 + 50 * NS + seq,
        seq=seq,
        device="alerts",
        measurement="alert",
        fields=fields,
        tags={"rule": rule, "subject": subject, "state": state},
        kind="event",
    )


@pytest.fixture
def records(tmp_path: Path) -> Iterator[LotRecords]:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3", thresholds=THRESHOLDS)
    yield store
    store.close()


def test_a_lot_gathers_readings_weighments_assignments_and_alerts(records: LotRecords) -> None:
    batch = [
        assignment(1, "set"),
        moisture(1, 11.0),
        moisture(2, 12.8),
        moisture(3, 11.5),
        weighment(1, 1000.0),
        weighment(2, 500.0, net=True),
        alert(1, "firing"),
        alert(2, "acknowledged"),
        assignment(2, "clear", lot=None),
        moisture(4, 30.0, lot="L-OTHER"),
    ]
    assert records.write(batch) == 10
    record = records.record("L-0042")
    assert record is not None
    s = record.summary
    assert (s.readings, s.weighments) == (3, 2)
    assert s.mean_moisture_pct == pytest.approx((11.0 + 12.8 + 11.5) / 3)
    assert (s.min_moisture_pct, s.max_moisture_pct, s.last_moisture_pct) == (11.0, 12.8, 11.5)
    assert s.net_kg == pytest.approx(990.0 + 500.0)
    assert s.verdict == "wet"  # 12.8 >= the default 12.5
    assert s.open_alerts == 1  # acknowledged is still open
    assert s.stations == ("recepcao",)
    assert s.devices == ("balanca", "umid-1")
    assert [(w.gross_kg, w.tare_kg, w.net_kg) for w in record.weighments] == [
        (1000.0, 10.0, 990.0),
        (510.0, 10.0, 500.0),
    ]
    assert [r.audit for r in record.readings] == [
        "UMIDADE 11.0 %",
        "UMIDADE 12.8 %",
        "UMIDADE 11.5 %",
    ]
    assert [r.sample_id for r in record.readings] == ["A1", "A2", "A3"]
    kinds = [(e.kind, e.by) for e in record.events]
    assert kinds == [
        ("assigned", "maria"),
        ("cleared", "maria"),
        ("alert", "agent"),
        ("ack", "joao"),
    ]
    assert record.threshold_pct == 12.5
    other = records.record("L-OTHER")
    assert other is not None
    assert other.summary.readings == 1
    assert other.events == ()


def test_every_record_counts_once_however_often_it_comes(records: LotRecords) -> None:
    batch = [moisture(i, 11.0 + i / 10) for i in range(1, 21)] + [weighment(1, 800.0)]
    assert records.write(batch) == 21
    assert records.write(batch) == 0
    assert records.write(list(reversed(batch[:10]))) == 0
    record = records.record("L-0042")
    assert record is not None
    assert record.summary.readings == 20
    assert record.summary.weighments == 1
    assert record.summary.net_kg == pytest.approx(790.0)
    ids = records.identities("L-0042")
    assert len(ids) == len(set(ids)) == 21


def test_resolved_alert_closes_it_and_other_rules_are_not_lots(records: LotRecords) -> None:
    records.write(
        [alert(1, "firing"), alert(2, "resolved"), alert(3, "firing", rule="device_silent")]
    )
    record = records.record("L-0042")
    assert record is not None
    assert record.summary.open_alerts == 0
    assert [e.kind for e in record.events] == ["alert", "resolved"]


def test_verdict_follows_the_threshold_of_the_product(records: LotRecords) -> None:
    reading = moisture(1, 12.2)
    arabica = dataclasses.replace(reading, tags={**reading.tags, "product": "Arabica"})
    records.write([arabica, moisture(2, 12.2, lot="L-2")])
    first, second = records.record("L-0042"), records.record("L-2")
    assert first is not None
    assert second is not None
    assert first.summary.verdict == "wet"
    assert first.threshold_pct == 12.0
    assert second.summary.verdict == "ok"
    assert second.threshold_pct == 12.5
    wet, total = records.search(LotQuery(verdict="wet"))
    assert [s.code for s in wet] == ["L-0042"]
    assert total == 1
    ok, _ = records.search(LotQuery(verdict="ok"))
    assert [s.code for s in ok] == ["L-2"]


def test_search_by_code_producer_dates_and_pages(records: LotRecords) -> None:
    records.write(
        [moisture(i, 11.0, lot=f"L-{i:04d}", ts=T0 + i * 86_400 * NS) for i in range(1, 31)]
    )
    records.set_details(
        "L-0007", parse_details({"producer": "Sítio Boa Vista"}), by="m", source="cli", at_ns=T0
    )
    found, total = records.search(LotQuery(q="l-000"))
    assert total == 9
    assert [s.code for s in found][:2] == ["L-0009", "L-0008"]
    found, total = records.search(LotQuery(producer="boa vista"))
    assert [s.code for s in found] == ["L-0007"]
    assert found[0].producer == "Sítio Boa Vista"
    found, total = records.search(
        LotQuery(from_ns=T0 + 10 * 86_400 * NS, to_ns=T0 + 12 * 86_400 * NS)
    )
    assert sorted(s.code for s in found) == ["L-0010", "L-0011", "L-0012"]
    page2, total = records.search(LotQuery(page=2, per_page=7))
    assert total == 30
    assert [s.code for s in page2] == [f"L-{i:04d}" for i in range(23, 16, -1)]
    assert records.search(LotQuery(q="%"))[1] == 0  # LIKE wildcards are text
    assert records.search(LotQuery(q="_"))[1] == 0


def test_details_are_validated_and_each_change_is_an_event(records: LotRecords) -> None:
    details = records.set_details(
        "L-0042",
        parse_details({"producer": " Sítio Boa Vista ", "bags": 42, "product_type": "cereja"}),
        by="maria",
        source="cli",
        at_ns=T0,
    )
    assert (details.producer, details.bags, details.product_type) == (
        "Sítio Boa Vista",
        42,
        "cereja",
    )
    records.set_details(
        "L-0042",
        parse_details({"note": "secar mais", "bags": None}),
        by="joao",
        source="mqtt",
        at_ns=T0 + 1,
    )
    record = records.record("L-0042")
    assert record is not None
    d = record.details
    assert (d.producer, d.bags, d.note, d.updated_by) == (
        "Sítio Boa Vista",
        None,
        "secar mais",
        "joao",
    )
    assert [(e.kind, e.by, e.source) for e in record.events] == [
        ("details", "maria", "cli"),
        ("details", "joao", "mqtt"),
    ]
    assert record.summary.readings == 0
    assert record.summary.verdict == "none"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "nothing to change"),
        ({"producer": "x" * 201}, "longer than 200"),
        ({"producer": "a\x00b"}, "control character"),
        ({"note": "linha\nquebrada"}, "control character"),
        ({"note": "n" * 501}, "longer than 500"),
        ({"bags": -1}, "whole number"),
        ({"bags": 1.5}, "whole number"),
        ({"bags": True}, "whole number"),
        ({"bags": "42"}, "whole number"),
        ({"product_type": "arabica"}, "product_type must be one of"),
        ({"producer": 7}, "text or null"),
        ({"lot": "L-1"}, "unknown key"),
    ],
)
def test_bad_details_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_details(doc)


def test_retention_deletes_whole_lots_past_it(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "r.sqlite3", retention_years=1.0)
    try:
        store.write(
            [
                moisture(1, 11.0, lot="L-OLD", ts=T0),
                moisture(2, 11.0, lot="L-NEW", ts=T0 + 300 * 86_400 * NS),
            ]
        )
        assert store.prune(T0 + 370 * 86_400 * NS) == 1
        assert store.record("L-OLD") is None
        assert store.record("L-NEW") is not None
        assert store.identities("L-OLD") == []
    finally:
        store.close()


async def test_the_sink_takes_what_the_outbox_committed_and_again_after_a_crash(
    tmp_path: Path,
) -> None:
    """A crash before the cursor reached the disk only repeats records: still once each."""
    db = tmp_path / "lots-records.sqlite3"
    stamper = Stamper(clock_ns=lambda: T0)
    first_half = [moisture(0, 11.0 + i / 100) for i in range(50)]
    async with open_outbox(tmp_path / "outbox.sqlite3", sinks=[SINK_NAME]) as outbox:
        accept = stage(outbox.accept, stamper)
        drafts = [_draft(r) for r in first_half]
        await accept.accept(drafts)
        async with open_lot_records(db) as records:
            sink = LotRecordSink(records)
            task = asyncio.create_task(deliver_loop(outbox, sink))
            while outbox.backlog(SINK_NAME):
                await outbox.acked()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # As after a kill -9 before the cursor was saved: everything comes again.
            again = await asyncio.to_thread(_all, tmp_path / "outbox.sqlite3")
            assert again
            assert await records.write(again) == 0
            await accept.accept([_draft(moisture(0, 12.9)), _draft(weighment(0, 700.0))])
            task = asyncio.create_task(deliver_loop(outbox, sink))
            while outbox.backlog(SINK_NAME):
                await outbox.acked()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            record = await records.record("L-0042")
    assert record is not None
    assert record.summary.readings == 51
    assert record.summary.weighments == 1
    assert [r.seq for r in record.readings] == list(range(1, 52))


async def test_provisional_readings_reach_the_record_only_once_re_stamped(tmp_path: Path) -> None:
    quality = ["provisional"]
    stamper = Stamper(clock_ns=lambda: T0, quality=lambda: quality[0])
    async with (
        open_outbox(tmp_path / "outbox.sqlite3", sinks=[SINK_NAME]) as outbox,
        open_lot_records(tmp_path / "r.sqlite3") as records,
    ):
        outbox.set_boot("b1")
        accept = stage(outbox.accept, stamper)
        await accept.accept([_draft(moisture(0, 11.0))])
        task = asyncio.create_task(deliver_loop(outbox, LotRecordSink(records)))
        await asyncio.sleep(0.2)
        assert await records.record("L-0042") is None  # held back: no time yet
        await outbox.resolve(delta_ns=5 * NS, quality="trusted", boot="b1")
        while outbox.backlog(SINK_NAME):
            await outbox.acked()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        record = await records.record("L-0042")
    assert record is not None
    assert [(r.ts_ns, r.time_quality) for r in record.readings] == [(T0 + 5 * NS, "trusted")]


def _draft(reading: Reading) -> Draft:
    return Draft(
        device=reading.device,
        measurement=reading.measurement,
        fields=reading.fields,
        tags=reading.tags,
        kind=reading.kind,
        audit=reading.audit,
    )


def _all(path: Path) -> list[Reading]:
    """Every record still in the outbox file, read as another process would."""
    conn = connect_read_only(path)
    try:
        return [decode_reading(bytes(p)) for (p,) in conn.execute("SELECT payload FROM records")]
    finally:
        conn.close()
