"""The maintenance store, task status and the ``maintenance`` CLI helpers."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from coffee_telemetry.agent.cli.maintenance import print_status, record_done
from coffee_telemetry.agent.config import Config, ServiceTaskConfig, parse_config
from coffee_telemetry.agent.errors import MaintenanceError, UsageError
from coffee_telemetry.agent.hullers.store import MaintenanceStore, open_maintenance_store
from coffee_telemetry.agent.hullers.tasks import (
    NOTE_MAX,
    SNAPSHOT_KEEP_NS,
    HullerState,
    ResetRecord,
    check_text,
    hours_total,
    parse_at,
    task_status,
)
from coffee_telemetry.drivers.counter_autonics_ct import TotalState

ZONE = ZoneInfo("America/Sao_Paulo")
S = 1_000_000_000
MIN = 60 * S
HOUR = 3600 * S
#: 2026-05-10 12:00 in São Paulo (UTC-3, no DST since 2019).
NOON = int(datetime(2026, 5, 10, 15, 0, tzinfo=UTC).timestamp()) * S


def make_config(tmp_path: Path, **huller: object) -> Config:
    doc: dict[str, object] = {
        "id": "desc-1",
        "name": "Descascador 1",
        "bus": "rs485",
        "bag_counter": 1,
        "hour_meter": 2,
        "hour_meter_unit": "0.1h",
        "tasks": [
            {"id": "oleo", "name": "Troca de óleo", "interval_h": 250, "warn_before_h": 10},
            {"id": "correias", "name": "Correias", "interval_h": 500},
        ],
    }
    doc.update(huller)
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "buses": [{"id": "rs485", "port": "/dev/fake"}],
            "hullers": [doc, {"id": "desc-2", "bus": "rs485", "bag_counter": 3}],
        }
    )


def state_at(timer_pv: int, *, counter_pv: int = 100) -> HullerState:
    return HullerState(
        counter=TotalState(offset=0, last_pv=counter_pv),
        timer=TotalState(offset=0, last_pv=timer_pv),
        day="2026-05-10",
    )


def services_in(path: Path) -> int:
    if not path.exists():
        return 0
    with MaintenanceStore.open(path) as store:
        return len(store.services())


# -- task status -----------------------------------------------------------------------

OIL = ServiceTaskConfig(id="oleo", name="Troca de óleo", interval_h=250, warn_before_h=10)


@pytest.mark.parametrize(
    ("hours_now", "last", "since", "remaining", "state"),
    [
        (1000.0, 1000.0, 0.0, 250.0, "ok"),
        (1239.9, 1000.0, 239.9, 10.1, "ok"),
        (1240.0, 1000.0, 240.0, 10.0, "due"),
        (1249.9, 1000.0, 249.9, 0.1, "due"),
        (1250.0, 1000.0, 250.0, 0.0, "overdue"),
        (1300.0, 1000.0, 300.0, -50.0, "overdue"),
        # Never serviced: counts from hour 0 of the huller's total.
        (100.0, None, 100.0, 150.0, "ok"),
        (245.0, None, 245.0, 5.0, "due"),
        (5000.0, None, 5000.0, -4750.0, "overdue"),
        # A service stored with more hours than now (a clock or meter mix-up) is 0 since.
        (900.0, 1000.0, 0.0, 250.0, "ok"),
    ],
)
def test_task_status_boundaries(
    hours_now: float, last: float | None, since: float, remaining: float, state: str
) -> None:
    status = task_status(OIL, hours_now, last, huller="desc-1")
    assert status.hours_since == pytest.approx(since)
    assert status.remaining_h == pytest.approx(remaining)
    assert status.state == state
    assert status.due is (state != "ok")
    assert status.overdue is (state == "overdue")
    assert (status.huller, status.task, status.name, status.interval_h) == (
        "desc-1",
        "oleo",
        "Troca de óleo",
        250.0,
    )


def test_task_status_tracking_start_and_no_warning() -> None:
    assert task_status(OIL, 300.0, None, 100.0, huller="h").hours_since == 200.0
    quiet = ServiceTaskConfig(id="t", interval_h=100, warn_before_h=0)
    assert task_status(quiet, 99.99, 0.0, huller="h").state == "ok"
    assert task_status(quiet, 100.0, 0.0, huller="h").state == "overdue"
    eager = ServiceTaskConfig(id="t", interval_h=10, warn_before_h=50)
    assert task_status(eager, 0.0, 0.0, huller="h").state == "due"


def test_hours_total_sources(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    metered, unmetered = cfg.hullers
    assert hours_total(metered, None) is None
    assert hours_total(metered, HullerState()) is None
    assert hours_total(metered, state_at(12345)) == pytest.approx(1234.5)
    assert hours_total(unmetered, HullerState()) is None
    counted = HullerState(counter=TotalState(last_pv=5), runtime_ms=90 * 60 * 1000)
    assert hours_total(unmetered, counted) == pytest.approx(1.5)


# -- the store -------------------------------------------------------------------------


def test_state_round_trip_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    state = HullerState(
        counter=TotalState(offset=999_999, last_pv=12),
        timer=TotalState(offset=0, last_pv=None),
        runtime_ms=1234,
        day="2026-05-10",
        day_counter=999_990,
        day_timer=0,
        day_runtime_ms=1000,
    )
    reset = ResetRecord(0, "x", "counter", NOON, previous_pv=999_999, pv=12, offset=999_999)
    with MaintenanceStore.open(path) as store:
        assert store.load_states() == {}
        assert store.state("desc-1") is None
        stored = store.save_state("desc-1", state, at_ns=NOON, resets=[reset], snapshot_hours=1.5)
        assert [(r.huller, r.unit, r.previous_pv, r.offset) for r in stored] == [
            ("desc-1", "counter", 999_999, 999_999)
        ]
        assert stored[0].id > 0
    with MaintenanceStore.open(path) as store:
        assert store.load_states() == {"desc-1": state}
        assert store.state("desc-1") == state
        assert store.updated_ns("desc-1") == NOON
        assert store.unpublished_resets() == stored
        store.mark_resets_published([stored[0].id])
        assert store.unpublished_resets() == []
        assert [r.published for r in store.resets("desc-1")] == [True]
        assert store.hours_at("desc-1", NOON) == 1.5
        assert store.hours_at("desc-1", NOON - 1) is None


def test_services_from_a_second_connection(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with MaintenanceStore.open(path) as agent, MaintenanceStore.open(path) as cli:
        first = cli.record_service(
            "desc-1", "oleo", at_ns=NOON, hours_at=100.0, note="óleo 20W", by="joao"
        )
        # Entered later, done earlier: not the latest service.
        backdated = cli.record_service("desc-1", "oleo", at_ns=NOON - HOUR, hours_at=99.0)
        assert [r.id for r in agent.unpublished()] == [first.id, backdated.id]
        agent.mark_published([first.id])
        assert [r.id for r in agent.unpublished()] == [backdated.id]
        assert agent.last_services()[("desc-1", "oleo")].id == first.id
        assert [r.id for r in agent.services("desc-1")] == [backdated.id, first.id]
        assert agent.services("desc-2") == []
        assert first.note == "óleo 20W"
        assert first.by == "joao"
        assert not first.published


def test_snapshots_are_thinned_to_one_per_hour(tmp_path: Path) -> None:
    now = NOON + SNAPSHOT_KEEP_NS + 10 * HOUR
    with MaintenanceStore.open(tmp_path / "m.sqlite3") as store:
        state = state_at(1)
        for minute in range(180):  # three old hours, one snapshot a minute
            store.save_state("desc-1", state, at_ns=NOON + minute * MIN, snapshot_hours=minute)
        for minute in range(5):  # recent ones are all kept
            store.save_state(
                "desc-1", state, at_ns=now - minute * MIN, snapshot_hours=1000 + minute
            )
        assert store.snapshot_count() == 185
        assert store.thin_snapshots(now) == 177
        assert store.snapshot_count("desc-1") == 8
        # Old times get the hour's first value (never more than the hours then).
        assert store.hours_at("desc-1", NOON + 90 * MIN) == 60.0
        assert store.hours_at("desc-1", now) == 1000.0
        assert store.first_snapshot("desc-1") == (NOON, 0.0)
        assert store.thin_snapshots(now) == 0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    MaintenanceStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(MaintenanceError, match="newer version"):
        MaintenanceStore.open(path)


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaintenanceError) as info:
        MaintenanceStore.open(tmp_path / "file" / "m.sqlite3")
    assert info.value.path == tmp_path / "file" / "m.sqlite3"


async def test_async_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    async with open_maintenance_store(path) as store:
        assert store.path == path
        await store.save_state("desc-1", state_at(10), at_ns=NOON, snapshot_hours=1.0)
        record = await store.record_service("desc-1", "oleo", at_ns=NOON, hours_at=1.0)
        assert await store.unpublished() == [record]
        await store.mark_published([record.id])
        assert await store.unpublished() == []
        assert await store.hours_at("desc-1", NOON) == 1.0
        assert await store.thin_snapshots(NOON) == 0
        assert (await store.load_states())["desc-1"] == state_at(10)
    with pytest.raises(MaintenanceError):
        async with open_maintenance_store(tmp_path / "m.sqlite3" / "x"):
            pass


# -- operator input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x" * (NOTE_MAX + 1),
        "trocado\x1b[2J",  # an escape sequence that would clear a terminal
        "linha 1\nlinha 2",
        "abc\u202edcba",  # right-to-left override
        "zero\u200bwidth",
        "bad \udcff byte",  # what surrogateescape makes of non-UTF-8 argv
        "sep\u2028arator",
    ],
)
def test_hostile_text_is_refused(text: str) -> None:
    with pytest.raises(UsageError):
        check_text(text, what="--note", limit=NOTE_MAX)


def test_plain_text_is_kept() -> None:
    note = "  Troca de óleo e filtro — 20W-50, ação preventiva  "
    assert check_text(note, what="--note", limit=NOTE_MAX) == note.strip()
    assert check_text("x" * NOTE_MAX, what="--note", limit=NOTE_MAX) == "x" * NOTE_MAX


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-10T12:00", NOON),  # naive: site time
        ("2026-05-10 12:00:00", NOON),
        ("2026-05-10T15:00Z", NOON),
        ("2026-05-10T15:00:00+00:00", NOON),
        ("2026-05-10T13:00-02:00", NOON),
        ("2026-05-10", NOON - 12 * HOUR),  # a date: midnight, site time
        ("2026-05-10T12:04", NOON + 4 * MIN),  # within the clock-skew allowance
    ],
)
def test_parse_at(text: str, expected: int) -> None:
    assert parse_at(text, ZONE, now_ns=NOON) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not an ISO 8601"),
        ("10/05/2026 12:00", "not an ISO 8601"),
        ("2026-05-10T12:06", "in the future"),
        ("2027-01-01", "in the future"),
        ("1999-12-31T23:00Z", "before the year 2000"),
    ],
)
def test_parse_at_refuses(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_at(text, ZONE, now_ns=NOON)


# -- CLI: record_done ------------------------------------------------------------------


def done(cfg: Config, huller: str, task: str, **kw: str | None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = record_done(
        cfg,
        huller,
        task,
        note=kw.get("note"),
        at=kw.get("at"),
        by=kw.get("by", "joao"),
        out=out,
        err=err,
        clock_ns=lambda: NOON,
    )
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("huller", "task", "kw", "message"),
    [
        ("desc-9", "oleo", {}, "unknown huller 'desc-9'; hullers: desc-1, desc-2"),
        ("desc-1", "pneus", {}, "has no task 'pneus'; its tasks: oleo, correias"),
        ("desc-2", "oleo", {}, "its tasks: none configured"),
        ("desc-1", "oleo", {"note": "x" * 501}, "at most 500"),
        ("desc-1", "oleo", {"note": "ok\x07"}, "control character (U+0007)"),
        ("desc-1", "oleo", {"by": "\x1b]0;pwned\x07"}, "--by contains a control"),
        ("desc-1", "oleo", {"at": "ontem"}, "not an ISO 8601"),
        ("desc-1", "oleo", {"at": "2026-05-11T00:00"}, "in the future"),
    ],
)
def test_refused_records_write_nothing(
    tmp_path: Path, huller: str, task: str, kw: dict[str, str], message: str
) -> None:
    cfg = make_config(tmp_path)
    code, out, err = done(cfg, huller, task, **kw)
    assert code == 2
    assert message in err
    assert out == ""
    assert not cfg.maintenance_path.exists()
    # Nor into an existing store.
    MaintenanceStore.open(cfg.maintenance_path).close()
    assert done(cfg, huller, task, **kw)[0] == 2
    assert services_in(cfg.maintenance_path) == 0


def test_done_before_the_agent_ever_ran(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    code, out, err = done(cfg, "desc-1", "oleo", note="primeira troca")
    assert (code, err) == (0, "")
    assert "Recorded service #1: desc-1 / oleo (Troca de óleo)" in out
    assert "not read this huller's hours yet: recorded at 0 h" in out
    with MaintenanceStore.open(cfg.maintenance_path) as store:
        (record,) = store.services()
    assert (record.hours_at, record.done_at_ns, record.note, record.by) == (
        0.0,
        NOON,
        "primeira troca",
        "joao",
    )
    assert record.recorded_ns == NOON
    assert not record.published


def test_done_now_uses_the_current_hours(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with MaintenanceStore.open(cfg.maintenance_path) as agent:
        agent.save_state("desc-1", state_at(12345), at_ns=NOON - MIN, snapshot_hours=1234.0)
        code, out, _ = done(cfg, "desc-1", "correias", by=None)
        assert code == 0
        assert "at 1234.5 running hours" in out
        (record,) = agent.unpublished()
    assert record.hours_at == pytest.approx(1234.5)


def test_done_in_the_past_uses_the_hour_snapshot(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with MaintenanceStore.open(cfg.maintenance_path) as agent:
        for hour in range(6):  # 06:00 .. 11:00 site time, 10 h more each hour
            agent.save_state(
                "desc-1",
                state_at(10000 + hour * 100),
                at_ns=NOON - (6 - hour) * HOUR,
                snapshot_hours=1000.0 + hour * 10,
            )
    code, out, _ = done(cfg, "desc-1", "oleo", at="2026-05-10T08:30")
    assert code == 0
    assert "Note" not in out
    code, out, _ = done(cfg, "desc-1", "oleo", at="2026-05-10T05:00")
    assert code == 0
    assert "before hour tracking began; recorded with the first hours known (1000.0 h)" in out
    assert "a later service of this task is on record (2026-05-10 08:30, #1)" in out
    with MaintenanceStore.open(cfg.maintenance_path) as store:
        assert [r.hours_at for r in store.services()] == [1000.0, 1020.0]


def test_done_without_history_uses_the_current_hours(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with MaintenanceStore.open(cfg.maintenance_path) as agent:
        agent.save_state("desc-1", state_at(500), at_ns=NOON)
    code, out, _ = done(cfg, "desc-1", "oleo", at="2026-05-09T12:00")
    assert code == 0
    assert "no hour history yet" in out
    assert services_in(cfg.maintenance_path) == 1


def test_done_when_the_store_cannot_be_written(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.agent.data_dir.parent.mkdir(parents=True, exist_ok=True)
    cfg.agent.data_dir.write_text("not a directory")
    code, _, err = done(cfg, "desc-1", "oleo")
    assert code == 1
    assert "maintenance store" in err


# -- CLI: print_status -----------------------------------------------------------------


def status(cfg: Config, *, as_json: bool) -> tuple[int, str]:
    out = io.StringIO()
    code = print_status(cfg, out, as_json=as_json, err=io.StringIO())
    return code, out.getvalue()


def test_status_before_the_agent_ran_creates_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    code, text = status(cfg, as_json=False)
    assert code == 0
    assert "sem dados" in text
    assert not cfg.maintenance_path.exists()
    code, text = status(cfg, as_json=True)
    doc = json.loads(text)
    assert doc["hullers"][0]["hours_total"] is None
    assert doc["hullers"][0]["tasks"][0]["state"] == "unknown"


def test_status_table_and_json(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with MaintenanceStore.open(cfg.maintenance_path) as store:
        store.save_state("desc-1", state_at(12450, counter_pv=8000), at_ns=NOON)
        store.record_service("desc-1", "oleo", at_ns=NOON - HOUR, hours_at=1000.0, by="ana")
    code, text = status(cfg, as_json=False)
    assert code == 0
    assert "desc-1  Descascador 1" in text
    assert "Horas de funcionamento: 1245.0 h" in text
    assert "Sacas (total): 8000" in text
    assert "Horas desde" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "VENCENDO" in lines["oleo"]  # 245 h of 250, warned 10 h before
    assert "245.0" in lines["oleo"]
    assert "(1000.0 h, ana)" in lines["oleo"]
    assert "ATRASADA" in lines["correias"]  # never serviced: 1245 h of 500
    assert "nunca" in lines["correias"]
    assert "Nenhum" not in text
    doc = json.loads(status(cfg, as_json=True)[1])
    first = doc["hullers"][0]
    assert first["hours_total"] == 1245.0
    assert first["bags_total"] == 8000.0
    oil, belts = first["tasks"]
    assert (oil["task"], oil["state"], oil["hours_since"], oil["remaining_h"]) == (
        "oleo",
        "due",
        245.0,
        5.0,
    )
    assert oil["last_service"]["by"] == "ana"
    assert (belts["state"], belts["last_service"]) == ("overdue", None)
    assert doc["hullers"][1] == {
        "id": "desc-2",
        "name": "",
        "hours_total": None,
        "bags_total": None,
        "updated_ns": None,
        "tasks": [],
    }


def test_status_without_hullers(tmp_path: Path) -> None:
    cfg = parse_config({"site": {"id": "s"}, "agent": {"data_dir": str(tmp_path)}})
    assert "Nenhum descascador" in status(cfg, as_json=False)[1]


def test_status_of_an_unreadable_store(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.maintenance_path.parent.mkdir(parents=True)
    cfg.maintenance_path.write_bytes(b"this is not a database" * 100)
    err = io.StringIO()
    assert print_status(cfg, io.StringIO(), as_json=False, err=err) == 1
    assert "maintenance store" in err.getvalue()
