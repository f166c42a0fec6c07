"""Ready to hull: the rest after the dryer, the window, the notice once, bags hulled per lot."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import CommandBoundary, CommandRate
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.lots.model import LotDrying
from coffee_telemetry.agent.lots.readiness import (
    DAY_NS,
    DRIED_COMMAND,
    READY_RULE,
    ReadinessRules,
    ReadinessService,
    assess,
    describe,
    lot_readiness,
    parse_dried,
    readiness_by_code,
    readiness_doc,
    set_dried,
)
from coffee_telemetry.agent.lots.records import STEPS, LotQuery, LotRecords, open_lot_records
from coffee_telemetry.agent.notify.model import AlertEvent
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sqlite import user_version
from tests.agent.lots.test_records import T0, assignment, moisture

NS = 1_000_000_000
RULES = ReadinessRules()


@pytest.fixture
def records(tmp_path: Path) -> Iterator[LotRecords]:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    yield store
    store.close()


def huller(
    seq: int, bags: float, *, station: str = "casa-maquinas", device: str = "desc-1"
) -> Reading:
    return Reading(
        ts_ns=T0 + 1000 * NS + seq * NS,
        seq=seq,
        device=device,
        measurement="huller",
        fields={"bags_total": bags, "running": True},
        tags={"site": "s1", "device": device, "station": station},
    )


def huller_assignment(seq: int, action: str, lot: str | None) -> Reading:
    r = assignment(seq, action, lot=lot)
    tags = dict(r.tags)
    tags["station"] = "casa-maquinas"
    return Reading(
        ts_ns=T0 + 900 * NS + seq,
        seq=r.seq,
        device=r.device,
        measurement=r.measurement,
        fields=r.fields,
        tags=tags,
        kind="event",
    )


# -- the pure state ------------------------------------------------------------------------


def test_rest_then_window() -> None:
    patio = LotDrying(T0, "patio")
    assert assess(patio, [11.0] * 3, RULES, T0 + 7 * DAY_NS).state == "resting"
    assert assess(patio, [11.0] * 3, RULES, T0 + 7 * DAY_NS).remaining_s == 86_400
    assert assess(patio, [11.0] * 2, RULES, T0 + 8 * DAY_NS).state == "waiting"
    assert assess(patio, [11.0, 11.3, 11.0], RULES, T0 + 8 * DAY_NS).state == "outside"
    assert assess(patio, [10.8, 11.2, 11.0, 14.0], RULES, T0 + 8 * DAY_NS).state == "ready"
    mech = LotDrying(T0, "mechanical")
    assert assess(mech, [11.0] * 3, RULES, T0 + 9 * DAY_NS).state == "resting"
    assert assess(mech, [11.0] * 3, RULES, T0 + 10 * DAY_NS).state == "ready"


def test_configured_rest_and_window() -> None:
    rules = ReadinessRules(rest_days_patio=2, min_pct=11.0, max_pct=12.0, readings=1)
    patio = LotDrying(T0, "patio")
    assert assess(patio, [11.5], rules, T0 + 2 * DAY_NS).state == "ready"
    assert assess(patio, [10.9], rules, T0 + 2 * DAY_NS).state == "outside"


def test_sentences() -> None:
    r = assess(LotDrying(T0, "patio"), [], RULES, T0 + 5 * DAY_NS + 3600 * NS)
    assert describe(r) == "Em descanso após terreiro: faltam 2 d 23 h"
    assert describe(r, "en") == "Resting after the patio: 2 d 23 h left"
    r = assess(LotDrying(T0, "mechanical"), [11.0, 11.1, 10.9], RULES, T0 + 10 * DAY_NS)
    assert describe(r) == (
        "Pronto para beneficiar: 11,0 %, 11,1 %, 10,9 % dentro da janela (10,8\u201311,2 %)"
    )
    r = assess(LotDrying(T0, "patio"), [11.6, 11.0, 11.0], RULES, T0 + 9 * DAY_NS)
    assert "fora da janela" in describe(r)
    assert "11,6 %" in describe(r)
    doc = readiness_doc(r)
    assert doc is not None
    assert doc["state"] == "outside"
    assert doc["window_pct"] == [10.8, 11.2]


# -- dried: validation ------------------------------------------------------------------------


def test_parse_dried() -> None:
    now = T0
    assert parse_dried({"dryer": "patio"}, now_ns=now).dried_ns == now
    assert parse_dried({"dryer": "mechanical", "at": T0 - NS}, now_ns=now).dried_ns == T0 - NS
    iso = parse_dried({"dryer": "patio", "at": "2026-11-29T17:30:00-03:00"}, now_ns=T0)
    assert iso.dried_ns == 1_795_984_200 * NS
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "dryer must be one of patio, mechanical"),
        ({"dryer": "sol"}, "dryer must be one of"),
        ({"dryer": "patio", "at": "ontem"}, "ISO 8601"),
        ({"dryer": "patio", "at": T0 + DAY_NS}, "in the future"),
        ({"dryer": "patio", "at": 5}, "before the year 2000"),
        ({"dryer": "patio", "at": True}, "must be a time"),
        ({"dryer": "patio", "at": 1.5}, "must be a time"),
        ({"dryer": "patio", "where": "x"}, "unknown key 'where'"),
        ({"dryer": "patio", "at": "<script>"}, "ISO 8601"),
    ]
    for doc, message in cases:
        with pytest.raises(LotError, match=message):
            parse_dried(doc, now_ns=now)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["dryer", "at", "by", "x"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=60)
        | st.sampled_from(["patio", "mechanical", "2026-11-30", "2026-11-30T10:00Z"]),
    )
)
def test_parse_dried_fuzz(doc: dict[str, object]) -> None:
    """Any payload is a change within bounds or a LotError; nothing else escapes."""
    try:
        change = parse_dried(doc, now_ns=T0)
    except LotError as exc:
        refusal = str(exc)
        assert refusal
    else:
        assert change.dryer in ("patio", "mechanical")
        assert 946_684_800 * NS <= change.dried_ns <= T0 + 600 * NS


# -- in the store -------------------------------------------------------------------------------


def test_schema_step_and_record(records: LotRecords) -> None:
    conn = records.connection
    assert user_version(conn) == len(STEPS)
    change = parse_dried({"dryer": "patio", "at": T0}, now_ns=T0 + NS)
    drying = set_dried(records, "L-0042", change, by="ana", source="cli", at_ns=T0 + NS)
    assert drying == LotDrying(T0, "patio", "ana", "cli", T0 + NS)
    record = records.record("L-0042")
    assert record is not None
    assert record.drying == drying
    assert [(e.kind, e.by, e.data["dryer"]) for e in record.events] == [("dried", "ana", "patio")]
    assert lot_readiness(records, "L-0042", RULES, T0 + DAY_NS) is not None
    assert lot_readiness(records, "L-0099", RULES, T0) is None


def _ready_lot(records: LotRecords, values: Sequence[float] = (11.0, 11.1, 10.9)) -> None:
    set_dried(
        records,
        "L-0042",
        parse_dried({"dryer": "patio", "at": T0}, now_ns=T0),
        by="ana",
        source="cli",
        at_ns=T0,
    )
    # One reading before the dryer (ignored), then the latest, since.
    records.write([moisture(0, 14.0, ts=T0 - NS)])
    records.write([moisture(i + 1, v, ts=T0 + (i + 1) * NS) for i, v in enumerate(values)])


def test_readings_since_the_dryer_decide(records: LotRecords) -> None:
    _ready_lot(records, (11.0, 11.1))
    r = lot_readiness(records, "L-0042", RULES, T0 + 8 * DAY_NS)
    assert r is not None
    assert r.state == "waiting"
    assert r.latest == (11.1, 11.0)
    records.write([moisture(9, 10.9, ts=T0 + 9 * NS)])
    r = lot_readiness(records, "L-0042", RULES, T0 + 8 * DAY_NS)
    assert r is not None
    assert r.state == "ready"
    assert readiness_by_code(records, ["L-0042", "L-0001"], RULES, T0)["L-0042"].state == "resting"


async def test_announced_once(tmp_path: Path) -> None:
    now = [T0]
    told: list[AlertEvent] = []

    async def announce(events: Sequence[AlertEvent]) -> int:
        told.extend(events)
        return len(events)

    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        _ready_lot(records.sync)
        service = ReadinessService(
            records=records, rules=RULES, announce=announce, clock_ns=lambda: now[0]
        )
        assert await service.check() == []  # resting
        now[0] = T0 + 8 * DAY_NS
        assert await service.check() == ["L-0042"]
        assert await service.check() == []
        now[0] += DAY_NS
        assert await service.check() == []
        # A correction of the dried time after the notice does not announce it again.
        set_dried(
            records.sync,
            "L-0042",
            parse_dried({"dryer": "mechanical", "at": T0}, now_ns=now[0]),
            by="ana",
            source="cli",
            at_ns=now[0],
        )
        assert await service.check() == []
        assert len(told) == 1
        assert service.announced == 1
        event = told[0]
        assert (event.rule, event.subject, event.state, event.severity) == (
            READY_RULE,
            "L-0042",
            "firing",
            "info",
        )
        assert event.since_ns == T0 + 8 * DAY_NS
        assert "Lote L-0042: Pronto para beneficiar" in event.message("pt-BR")
        record = await records.record("L-0042")
        assert record is not None
        assert [e.kind for e in record.events].count("ready") == 1
        r = await service.readiness("L-0042")
        assert r is not None
        assert r.announced_ns == T0 + 8 * DAY_NS


async def test_notice_repeated_after_a_crash_has_the_same_key(tmp_path: Path) -> None:
    """A failure between the notice and the mark repeats the notice with the same event id."""
    told: list[str] = []
    fail = [True]

    async def announce(events: Sequence[AlertEvent]) -> int:
        told.extend(e.event_id for e in events)
        if fail[0]:
            fail[0] = False
            raise OSError("disk full")
        return len(events)

    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        _ready_lot(records.sync)
        service = ReadinessService(
            records=records, rules=RULES, announce=announce, clock_ns=lambda: T0 + 8 * DAY_NS
        )
        with pytest.raises(OSError, match="disk full"):
            await service.check()
        service.clock_ns = lambda: T0 + 9 * DAY_NS
        assert await service.check() == ["L-0042"]
        assert len(told) == 2
        assert told[0] == told[1]


# -- the command --------------------------------------------------------------------------------


async def test_dried_command(tmp_path: Path) -> None:
    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        service = ReadinessService(records=records, rules=RULES, clock_ns=lambda: T0)
        boundary = CommandBoundary({DRIED_COMMAND: service.handle_command})
        reply = await boundary.submit(
            (DRIED_COMMAND, "L-0042"),
            json.dumps({"dryer": "patio", "at": T0 - DAY_NS, "by": "ana"}).encode(),
            source="mqtt",
        )
        assert reply.doc == {"ok": True, "lot": "L-0042", "dried_ns": T0 - DAY_NS, "dryer": "patio"}
        bad = await boundary.submit((DRIED_COMMAND, "L 42"), b'{"dryer": "patio"}', source="mqtt")
        assert bad.doc["ok"] is False
        assert "lot code" in str(bad.doc["error"])
        bad = await boundary.submit(
            (DRIED_COMMAND, "L-0043"), b'{"dryer": "<b>x</b>"}', source="mqtt"
        )
        assert bad.doc == {"ok": False, "error": "dryer must be one of patio, mechanical"}
        assert await records.record("L-0043") is None


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(code=st.text(max_size=40), payload=st.binary(max_size=300))
def test_dried_command_fuzz(
    tmp_path_factory: pytest.TempPathFactory, code: str, payload: bytes
) -> None:
    """Random topics and payloads: a reply, never an exception; refusals write nothing."""
    import asyncio

    path = tmp_path_factory.mktemp("fuzz") / "r.sqlite3"

    async def run() -> None:
        async with open_lot_records(path) as records:
            service = ReadinessService(records=records, rules=RULES, clock_ns=lambda: T0)
            rate = CommandRate(burst=10**6, per_s=10**6)
            boundary = CommandBoundary({DRIED_COMMAND: service.handle_command}, rate=rate)
            reply = await boundary.submit((DRIED_COMMAND, code), payload, source="mqtt")
            assert not reply.failed
            if not reply.ok:
                assert (await records.search(LotQuery()))[1] == 0

    asyncio.run(run())


# -- bags hulled ----------------------------------------------------------------------------------


def test_bags_credited_to_the_active_lot(records: LotRecords) -> None:
    records.write([huller(1, 100.0)])  # baseline
    records.write([huller(2, 103.0)])  # no lot active: nobody's
    records.write([huller_assignment(1, "set", "L-0042")])
    records.write([huller(3, 110.0), huller(4, 112.5)])
    records.write([huller(4, 112.5), huller(3, 110.0)])  # delivered again: nothing
    records.write([huller(5, 115.0, station="outra")])  # another station's lot (none)
    records.write([huller_assignment(2, "set", "L-0043")])
    records.write([huller(6, 120.0)])
    records.write([huller_assignment(3, "clear", None)])
    records.write([huller(7, 130.0)])
    first = records.record("L-0042")
    second = records.record("L-0043")
    assert first is not None
    assert first.hulled_bags == 9.5
    assert second is not None
    assert second.hulled_bags == 5.0
    assert "desc-1" in first.summary.devices


def test_lot_with_no_bags_has_none(records: LotRecords) -> None:
    records.write([moisture(1, 11.0)])
    record = records.record("L-0042")
    assert record is not None
    assert record.hulled_bags is None
    assert record.drying is None


def test_retention_removes_readiness_rows(records: LotRecords) -> None:
    _ready_lot(records)
    records.write([huller(1, 1.0), huller_assignment(1, "set", "L-0042"), huller(2, 3.0)])
    assert records.prune(T0 + 10 * 365 * DAY_NS) == 1
    conn = records.connection
    for table in ("lot_drying", "lot_ready", "lot_hulled"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
