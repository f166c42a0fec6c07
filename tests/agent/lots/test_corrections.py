"""Corrections: a reading moved to the right lot, as an append-only event."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import Command
from coffee_telemetry.agent.errors import CommandRefused, LotError
from coffee_telemetry.agent.lots import corrections
from coffee_telemetry.agent.lots.corrections import (
    MOVE_COMMAND,
    REASON_MAX_LEN,
    MoveCommands,
    MoveRequest,
    check_reason,
    parse_move,
    parse_reading_id,
)
from coffee_telemetry.agent.lots.records import STEPS, LotRecords, Thresholds, open_lot_records
from tests.agent.lots.test_records import NS, T0, moisture

THRESHOLDS = Thresholds(default_pct=12.5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LotRecords]:
    records = LotRecords.open(tmp_path / "lots-records.sqlite3", thresholds=THRESHOLDS)
    try:
        yield records
    finally:
        records.close()


def move(
    store: LotRecords,
    reading: str,
    to: str,
    *,
    reason: str = "medida no lote errado",
    from_lot: str | None = None,
    by: str = "ana",
    at_ns: int = T0 + 1000 * NS,
) -> corrections.Move:
    device, seq = parse_reading_id(reading)
    request = MoveRequest(device, seq, to, reason)
    return store.write_with(
        lambda conn: corrections.move_reading(
            conn, request, from_lot=from_lot, by=by, source="cli", at_ns=at_ns
        )
    )


def seed(store: LotRecords) -> None:
    store.write(
        [moisture(1, 11.0), moisture(2, 13.5), moisture(3, 11.4), moisture(4, 10.8, lot="L-0043")]
    )


def test_a_moved_reading_counts_under_its_new_lot(store: LotRecords) -> None:
    seed(store)
    before = store.record("L-0042")
    assert before is not None
    assert before.summary.verdict == "wet"  # 13.5 >= 12.5
    done = move(store, "umid-1:2", "L-0043", reason="amostra do L-0043 lida no L-0042")
    assert (done.from_lot, done.to_lot, done.moisture_pct) == ("L-0042", "L-0043", 13.5)

    old, new = store.record("L-0042"), store.record("L-0043")
    assert old is not None
    assert new is not None
    assert [r.seq for r in old.readings] == [1, 3]
    assert [r.seq for r in new.readings] == [2, 4]
    assert old.summary.readings == 2
    assert old.summary.mean_moisture_pct == pytest.approx(11.2)
    assert old.summary.max_moisture_pct == 11.4
    assert old.summary.verdict == "ok"
    assert new.summary.readings == 2
    assert new.summary.max_moisture_pct == 13.5
    assert new.summary.min_moisture_pct == 10.8
    assert new.summary.verdict == "wet"
    assert new.summary.last_moisture_pct == 10.8  # seq 4 is later than seq 2
    assert "umid-1" in new.summary.devices
    # The search counts it under the new lot too.
    from coffee_telemetry.agent.lots.records import LotQuery

    wet, _ = store.search(LotQuery(verdict="wet"))
    assert [s.code for s in wet] == ["L-0043"]

    # The correction is in both timelines, with who, when and why.
    out = [e for e in old.events if e.kind == "moved_out"]
    into = [e for e in new.events if e.kind == "moved_in"]
    assert len(out) == len(into) == 1
    assert out[0].by == "ana"
    assert out[0].source == "cli"
    assert out[0].ts_ns == T0 + 1000 * NS
    assert out[0].data["reason"] == "amostra do L-0043 lida no L-0042"
    assert out[0].data["from"] == "L-0042"
    assert out[0].data["to"] == "L-0043"
    assert "L-0043" in out[0].text
    assert "ana" in out[0].text


def test_the_original_row_is_never_rewritten(store: LotRecords, tmp_path: Path) -> None:
    seed(store)
    move(store, "umid-1:2", "L-0043")
    conn = sqlite3.connect(tmp_path / "lots-records.sqlite3")
    try:
        lot = conn.execute(
            "SELECT code FROM readings JOIN lots ON lots.id = lot_id WHERE device = 'umid-1'"
            " AND seq = 2"
        ).fetchall()
        moves = conn.execute("SELECT by, reason, source FROM reading_moves").fetchall()
    finally:
        conn.close()
    assert lot == [("L-0042",)]  # recorded under L-0042, and stays so
    assert moves == [("ana", "medida no lote errado", "cli")]


def test_a_redelivered_reading_stays_where_it_was_moved(store: LotRecords) -> None:
    seed(store)
    move(store, "umid-1:2", "L-0043")
    assert store.write([moisture(2, 13.5), moisture(5, 11.1)]) == 1  # seq 2 again: ignored
    old, new = store.record("L-0042"), store.record("L-0043")
    assert old is not None
    assert new is not None
    assert [r.seq for r in old.readings] == [1, 3, 5]
    assert old.summary.readings == 3
    assert [r.seq for r in new.readings] == [2, 4]


def test_moving_again_and_back(store: LotRecords) -> None:
    seed(store)
    move(store, "umid-1:2", "L-0043")
    move(store, "umid-1:2", "L-0099", at_ns=T0 + 2000 * NS)
    third = store.record("L-0099")
    assert third is not None
    assert [r.seq for r in third.readings] == [2]
    move(store, "umid-1:2", "L-0042", reason="afinal era do L-0042", at_ns=T0 + 3000 * NS)
    back = store.record("L-0042")
    assert back is not None
    assert [r.seq for r in back.readings] == [1, 2, 3]
    assert back.summary.readings == 3
    assert back.summary.max_moisture_pct == 13.5
    gone = store.record("L-0099")
    assert gone is not None
    assert gone.readings == ()
    assert gone.summary.verdict == "none"
    moves = store.read_with(lambda c: corrections.moves_of(c, 1))  # into or out of L-0042
    assert [(m.from_lot, m.to_lot) for m in moves] == [("L-0042", "L-0043"), ("L-0099", "L-0042")]


def test_refusals_write_nothing(store: LotRecords) -> None:
    seed(store)
    with pytest.raises(LotError, match="no moisture reading"):
        move(store, "umid-1:77", "L-0043")
    with pytest.raises(LotError, match="already in lot L-0042"):
        move(store, "umid-1:2", "L-0042")
    with pytest.raises(LotError, match="is in lot L-0042, not L-0043"):
        move(store, "umid-1:2", "L-0050", from_lot="L-0043")
    with pytest.raises(LotError, match="who"):
        move(store, "umid-1:2", "L-0050", by="\x00")
    assert store.record("L-0050") is None
    record = store.record("L-0042")
    assert record is not None
    assert record.summary.readings == 3
    assert not [e for e in record.events if e.kind.startswith("moved")]


def test_parsers() -> None:
    assert parse_reading_id(" umid-1:57 ") == ("umid-1", 57)
    for bad in ("umid-1", ":5", "umid-1:-5", "umid 1:5", "a:" + "9" * 19, 57, None):
        with pytest.raises(LotError):
            parse_reading_id(bad)
    assert check_reason("  errado  ") == "errado"
    for bad_reason in ("", "   ", "x" * (REASON_MAX_LEN + 1), "a\nb", "a\u202eb\x00", 5):
        with pytest.raises(LotError):
            check_reason(bad_reason)
    ok = parse_move({"reading": "umid-1:2", "to": "L-0043", "reason": "r", "by": "x"})
    assert ok == MoveRequest("umid-1", 2, "L-0043", "r")
    with pytest.raises(LotError, match="unknown key"):
        parse_move({"reading": "umid-1:2", "to": "L-0043", "reason": "r", "lot": "x"})
    with pytest.raises(LotError, match="reason is required"):
        parse_move({"reading": "umid-1:2", "to": "L-0043"})
    with pytest.raises(LotError, match="lot code"):
        parse_move({"reading": "umid-1:2", "to": "L 43", "reason": "r"})


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["reading", "to", "reason", "by", "x"]),
        st.one_of(st.text(max_size=400), st.integers(), st.none(), st.booleans()),
    )
)
def test_fuzz_move_payloads_only_refuse(doc: dict[str, object]) -> None:
    try:
        request = parse_move(doc)
    except LotError:
        return
    assert len(request.reason) <= REASON_MAX_LEN
    assert request.reason == request.reason.strip()
    assert request.reason


async def test_the_command_needs_a_logged_in_person(tmp_path: Path) -> None:
    async with open_lot_records(tmp_path / "r.sqlite3", thresholds=THRESHOLDS) as records:
        records.sync.write([moisture(1, 11.0), moisture(2, 13.5)])
        handler = MoveCommands(
            lambda fn: records.call(records.sync.write_with, fn), clock_ns=time.time_ns
        )
        doc = {"reading": "umid-1:2", "to": "L-0043", "reason": "lote errado"}
        for source in ("mqtt", "token:api"):
            with pytest.raises(CommandRefused, match="logged in"):
                await handler.handle_command(
                    Command(path=(MOVE_COMMAND, "L-0042"), doc=doc, by="x", source=source)
                )
        with pytest.raises(CommandRefused, match="is in lot L-0042, not L-0041"):
            await handler.handle_command(
                Command(path=(MOVE_COMMAND, "L-0041"), doc=doc, by="ana", source="web:ana")
            )
        reply = await handler.handle_command(
            Command(path=(MOVE_COMMAND, "L-0042"), doc=doc, by="ana", source="web:ana")
        )
        assert reply["from"] == "L-0042"
        assert reply["to"] == "L-0043"
        assert reply["by"] == "ana"
        record = await records.record("L-0043")
        assert record is not None
        assert [r.seq for r in record.readings] == [2]
        assert record.events[-1].source == "web:ana"


def test_retention_keeps_lots_linked_by_a_move(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    store = LotRecords.open(path, thresholds=THRESHOLDS, retention_years=1.0)
    try:
        store.write([moisture(1, 11.0), moisture(2, 12.0)])  # L-0042, at T0
        later = T0 + 300 * 86_400 * NS
        store.write([moisture(3, 11.5, lot="L-0043", ts=later)])
        move(store, "umid-1:2", "L-0043", at_ns=later)
        # A year after T0 L-0042 is past retention, but its moved reading is L-0043's.
        assert store.prune(T0 + 400 * 86_400 * NS) == 0
        moved = store.record("L-0043")
        assert moved is not None
        assert [r.seq for r in moved.readings] == [2, 3]
        # Once both are past it, both go, with their moves.
        assert store.prune(later + 400 * 86_400 * NS) == 2
        assert store.record("L-0043") is None
        assert (
            store.read_with(lambda c: c.execute("SELECT COUNT(*) FROM reading_moves").fetchone())[0]
            == 0
        )
    finally:
        store.close()


def test_the_lot_page_query_uses_the_primary_key(store: LotRecords) -> None:
    seed(store)
    plan = store.read_with(
        lambda c: c.execute(
            "EXPLAIN QUERY PLAN SELECT ts_ns FROM lot_readings WHERE cur_lot = ?", (1,)
        ).fetchall()
    )
    text = json.dumps(plan)
    assert "SCAN r" not in text, text  # never a scan of every lot's readings


def test_schema_step_is_the_last_and_upgrades(tmp_path: Path) -> None:
    assert STEPS[-1] is corrections.CORRECTIONS_STEP or corrections.CORRECTIONS_STEP in STEPS
    path = tmp_path / "r.sqlite3"
    LotRecords.open(path).close()
    conn = sqlite3.connect(path)
    try:
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == len(STEPS)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"reading_moves", "lot_readings", "moved_readings"} <= names


def test_reports_show_the_correction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pypdf import PdfReader

    from coffee_telemetry.agent.cli.main import main
    from coffee_telemetry.agent.config import load_config
    from coffee_telemetry.agent.lots.export import read_csv
    from coffee_telemetry.agent.lots.records import configured_thresholds
    from tests.agent.lots.test_verify import site_file

    site = site_file(tmp_path)
    cfg = load_config(site)
    records = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    try:
        seed(records)
    finally:
        records.close()
    before = tmp_path / "before.pdf"
    assert main(["lot", "report", "-c", str(site), "L-0043", "-o", str(before)]) == 0
    argv = ["lot", "move", "-c", str(site), "--reading", "umid-1:2", "--to", "L-0043"]
    assert main([*argv, "--reason", "amostra trocada", "--by", "ana"]) == 0
    assert "L-0042 -> L-0043" in capsys.readouterr().out
    assert main([*argv, "--reason", "de novo"]) == 1
    assert "already in lot L-0043" in capsys.readouterr().err
    assert main([*argv[:-2], "--to", "L-0042", "--reason", "", "--by", "ana"]) == 2
    assert "reason is required" in capsys.readouterr().err

    csv_path = tmp_path / "L-0043.csv"
    assert main(["lot", "report", "-c", str(site), "L-0043", "--csv", "-o", str(csv_path)]) == 0
    rows = read_csv(csv_path.read_bytes())
    assert [(r["tipo"], r["dispositivo"]) for r in rows] == [
        ("leitura", "umid-1"),  # seq 2, 13.5 %
        ("leitura", "umid-1"),  # seq 4
        ("leitura recebida de outro lote", "umid-1"),
    ]
    assert rows[0]["umidade_pct"] == "13,5"
    assert "amostra trocada" in rows[2]["ticket"]
    pdf = tmp_path / "after.pdf"
    assert main(["lot", "report", "-c", str(site), "L-0043", "-o", str(pdf)]) == 0
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    flat = " ".join(text.split())  # table cells wrap
    assert "Leituras: 2" in flat
    assert "leitura recebida de outro lote" in flat
    assert "amostra trocada" in flat
    assert main(["lot", "verify", "-c", str(site), str(pdf)]) == 0
    assert main(["lot", "verify", "-c", str(site), str(before)]) == 1  # the record changed since
