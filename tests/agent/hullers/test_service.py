"""The huller model: totals, derived fields, health, services and status, on a manual clock.

Most tests hand ``CounterSample``/``DeviceError`` events to ``HullerService.handle_event``
(the bus poller's callback) with a manual clock; one runs the whole service with a fake
Modbus client that answers from ``CounterUnitSim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.bus.rtu import Fault
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.hullers.bus import DeviceError
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import (
    AsyncMaintenanceStore,
    MaintenanceError,
    MaintenanceStore,
    open_maintenance_store,
)
from coffee_telemetry.agent.hullers.tasks import HullerState, ResetRecord, ServiceRecord
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.counter_autonics_ct import (
    CounterSample,
    Mode,
    TerminalInputs,
    encode_status,
)
from coffee_telemetry.simulators.rtu import CounterUnitSim
from tests.fakes import FakeModbusClient, stage

S = 1_000_000_000
MIN = 60 * S
#: 2026-05-10 12:00 in São Paulo (UTC-3).
NOON = int(datetime(2026, 5, 10, 15, 0, tzinfo=UTC).timestamp()) * S
#: 2026-05-10 23:58 in São Paulo.
BEFORE_MIDNIGHT = NOON + 11 * 60 * MIN + 58 * MIN


def make_config(tmp_path: Path, **huller: object) -> Config:
    first: dict[str, object] = {
        "id": "desc-1",
        "bus": "rs485",
        "station": "beneficio",
        "bag_counter": 1,
        "hour_meter": 2,
        "hour_meter_unit": "s",
        "tasks": [{"id": "oleo", "interval_h": 250, "warn_before_h": 10}],
    }
    first.update(huller)
    second = {
        "id": "desc-2",
        "bus": "rs485",
        "bag_counter": 3,
        "tasks": [{"id": "limpeza", "interval_h": 8, "warn_before_h": 1}],
    }
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "buses": [{"id": "rs485", "port": "/dev/rs485"}],
            "hullers": [first, second],
        }
    )


def sample(
    pv: int, mode: Mode = Mode.COUNTER, inputs: TerminalInputs | None = None
) -> CounterSample:
    return CounterSample(status=encode_status(mode), batch_pv=0, pv=pv, inputs=inputs)


def terminals(*, inhibit: bool = False, ina: bool = False) -> TerminalInputs:
    return TerminalInputs(ina=ina, inb=False, inhibit=inhibit, reset=False, batch_reset=False)


class Killed(Exception):
    """The agent dies here (what SIGKILL would do to the rest of the poll)."""


class Harness:
    """A HullerService on a manual clock, its accepted readings, and crash knobs."""

    def __init__(self, cfg: Config, store: AsyncMaintenanceStore, *, now: int = NOON) -> None:
        self.now = now
        self.accepted: list[Reading] = []
        self.kill_on_accept = False
        self.health = Health(clock_ns=lambda: self.now)
        self.stamper = Stamper(clock_ns=lambda: self.now)
        self.svc = HullerService(
            cfg=cfg,
            store=store,
            accept=stage(self.accept, self.stamper).accept,
            health=self.health,
            clock_ns=lambda: self.now,
        )

    async def accept(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)
        if self.kill_on_accept:
            raise Killed

    async def counter(
        self, pv: int, *, dt_s: float = 2.0, huller: str = "desc-1", **kw: TerminalInputs
    ) -> Reading:
        self.now += int(dt_s * S)
        await self.svc.handle_event(f"{huller}.counter", sample(pv, inputs=kw.get("inputs")))
        return self.readings("huller")[-1]

    async def timer(
        self, pv: int, *, dt_s: float = 0.0, inputs: TerminalInputs | None = None
    ) -> None:
        self.now += int(dt_s * S)
        await self.svc.handle_event("desc-1.timer", sample(pv, Mode.TIMER, inputs))

    def readings(self, measurement: str) -> list[Reading]:
        return [r for r in self.accepted if r.measurement == measurement]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncMaintenanceStore]:
    async with open_maintenance_store(tmp_path / "maintenance.sqlite3") as opened:
        yield opened


# -- totals ----------------------------------------------------------------------------


async def test_totals_never_go_back_through_reset_wrap_and_replaced_unit(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    h = Harness(make_config(tmp_path), store)
    pvs = [100, 150, 0, 20, 999_990, 999_999, 3, 10, 2, 5]
    #                ^ front panel      ^ wrap    ^ new unit starting near 0
    totals = [(await h.counter(pv)).fields["bags_total"] for pv in pvs]
    assert totals == [
        100.0,
        150.0,
        150.0,
        170.0,
        1_000_140.0,
        1_000_149.0,
        1_000_152.0,
        1_000_159.0,
        1_000_161.0,
        1_000_164.0,
    ]
    resets = h.readings("counter_reset")
    assert [r.fields for r in resets] == [
        {"unit": "counter", "previous_pv": 150, "pv": 0, "offset": 150},
        {"unit": "counter", "previous_pv": 999_999, "pv": 3, "offset": 1_000_149},
        {"unit": "counter", "previous_pv": 10, "pv": 2, "offset": 1_000_159},
    ]
    assert {r.kind for r in resets} == {"event"}
    assert resets[0].tags == {"site": "ourofino", "device": "desc-1", "station": "beneficio"}
    # The event comes in the same accept as the reading with the new total, before it.
    third = h.accepted.index(resets[0])
    assert h.accepted[third + 1].fields["counter_pv"] == 0
    assert await store.unpublished_resets() == []
    huller = h.readings("huller")[-1]
    assert huller.kind == "reading"
    assert huller.tags == {"site": "ourofino", "device": "desc-1", "station": "beneficio"}


async def test_timer_resets_keep_hours_monotonic(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    h = Harness(make_config(tmp_path), store)
    hours = []
    for timer_pv in (7200, 9000, 0, 1800):
        await h.timer(timer_pv)
        hours.append((await h.counter(10)).fields["hours_total"])
    assert hours == [2.0, 2.5, 2.5, 3.0]
    assert [r.fields["unit"] for r in h.readings("counter_reset")] == ["timer"]
    assert h.readings("huller")[-1].fields["timer_pv"] == 1800


async def test_restart_continues_totals(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    cfg = make_config(tmp_path)
    first = Harness(cfg, store)
    await first.timer(3600)
    for pv in (10, 500):
        await first.counter(pv)
    # A new service on the same store; the counter was reset while the agent was down.
    second = Harness(cfg, store, now=first.now + 10 * MIN)
    reading = await second.counter(7)
    assert reading.fields["bags_total"] == 507.0
    assert reading.fields["hours_total"] == 1.0
    assert reading.fields["bags_today"] == 497.0  # the day's start survived the restart
    assert [r.fields["previous_pv"] for r in second.readings("counter_reset")] == [500]


async def test_crash_between_save_and_accept(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    cfg = make_config(tmp_path)
    first = Harness(cfg, store)
    await first.counter(500)
    first.kill_on_accept = True
    with pytest.raises(Killed):
        await first.counter(10)  # a reset: saved, then the agent dies in accept
    (lost,) = first.readings("counter_reset")
    (pending,) = await store.unpublished_resets()
    # The restarted agent sends the reset again, as the same point, and counts once.
    second = Harness(cfg, store, now=first.now + MIN)
    assert await second.svc.publish_resets() == 1
    (again,) = second.readings("counter_reset")
    assert (again.ts_ns, again.fields, again.tags) == (lost.ts_ns, lost.fields, lost.tags)
    assert again.ts_ns == pending.at_ns
    assert await store.unpublished_resets() == []
    reading = await second.counter(12)
    assert reading.fields["bags_total"] == 512.0
    assert second.readings("counter_reset") == [again]


class FailingStore(AsyncMaintenanceStore):
    """Saves fail while ``failing`` is set (a full disk)."""

    def __init__(self, inner: AsyncMaintenanceStore) -> None:
        self._inner = inner
        self.failing = False

    async def load_states(self) -> dict[str, HullerState]:
        return await self._inner.load_states()

    async def save_state(
        self,
        huller: str,
        state: HullerState,
        *,
        at_ns: int,
        resets: Sequence[ResetRecord] = (),
        snapshot_hours: float | None = None,
    ) -> list[ResetRecord]:
        if self.failing:
            raise MaintenanceError("disk I/O error", path=Path("m.sqlite3"))
        return await self._inner.save_state(
            huller, state, at_ns=at_ns, resets=resets, snapshot_hours=snapshot_hours
        )

    async def mark_resets_published(self, ids: Sequence[int]) -> None:
        await self._inner.mark_resets_published(ids)


class FlakyStore(AsyncMaintenanceStore):
    """Reads of services, or marks of anything published, fail while their knob is set."""

    def __init__(self, inner: AsyncMaintenanceStore) -> None:
        self._inner = inner
        self.fail_reads = False
        self.fail_marks = False

    @staticmethod
    def _fail(knob: bool) -> None:
        if knob:
            raise MaintenanceError("database is locked", path=Path("m.sqlite3"))

    async def load_states(self) -> dict[str, HullerState]:
        return await self._inner.load_states()

    async def save_state(
        self,
        huller: str,
        state: HullerState,
        *,
        at_ns: int,
        resets: Sequence[ResetRecord] = (),
        snapshot_hours: float | None = None,
    ) -> list[ResetRecord]:
        return await self._inner.save_state(
            huller, state, at_ns=at_ns, resets=resets, snapshot_hours=snapshot_hours
        )

    async def unpublished(self, limit: int = 100) -> list[ServiceRecord]:
        self._fail(self.fail_reads)
        return await self._inner.unpublished(limit)

    async def last_services(self) -> dict[tuple[str, str], ServiceRecord]:
        self._fail(self.fail_reads)
        return await self._inner.last_services()

    async def mark_published(self, ids: Sequence[int]) -> None:
        self._fail(self.fail_marks)
        await self._inner.mark_published(ids)

    async def mark_resets_published(self, ids: Sequence[int]) -> None:
        self._fail(self.fail_marks)
        await self._inner.mark_resets_published(ids)


async def test_store_errors_while_publishing_mean_sending_again(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    cfg = make_config(tmp_path)
    flaky = FlakyStore(store)
    h = Harness(cfg, flaky)
    await h.counter(100)
    record = await store.record_service("desc-1", "oleo", at_ns=NOON, hours_at=1.0)
    flaky.fail_reads = True
    assert await h.svc.publish_services() == 0  # cannot read them now: next time
    assert await h.svc.publish_status() == 0
    flaky.fail_reads = False
    flaky.fail_marks = True
    await h.counter(3)  # a reset: saved and sent, not marked
    assert await h.svc.publish_services() == 1  # sent, not marked
    flaky.fail_marks = False
    assert await h.svc.publish_services() == 1  # so sent again
    assert await h.svc.publish_services() == 0
    first, again = h.readings("maintenance")
    assert first.fields == again.fields
    assert first.fields["service_id"] == record.id
    # The unmarked reset goes out again at the next start.
    restarted = Harness(cfg, store, now=h.now + MIN)
    assert await restarted.svc.publish_resets() == 1
    assert [r.fields["previous_pv"] for r in restarted.readings("counter_reset")] == [100]


async def test_store_failure_holds_readings_back(
    tmp_path: Path, store: AsyncMaintenanceStore, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingStore(store)
    h = Harness(make_config(tmp_path), failing)
    await h.counter(100)
    failing.failing = True
    with caplog.at_level(logging.ERROR):
        for pv in (0, 5):
            h.now += 2 * S
            await h.svc.handle_event("desc-1.counter", sample(pv))
    assert len(h.readings("huller")) == 1
    assert h.health.devices["desc-1"].errors["store"] == 2
    assert len([r for r in caplog.records if "cannot be saved" in r.message]) == 1
    failing.failing = False
    reading = await h.counter(7)  # the drop is seen now, against the last saved PV
    assert reading.fields["bags_total"] == 107.0
    assert [r.fields["previous_pv"] for r in h.readings("counter_reset")] == [100]


async def test_a_dropped_cancellation_is_honoured(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    # What Python 3.11's asyncio.wait_for inside pymodbus can do to a poller's unit task:
    # the task is cancelled, the request returns a reply anyway, the callback follows.
    h = Harness(make_config(tmp_path), store)

    async def unit_task() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as wait_for does
            await asyncio.sleep(0)
        await h.svc.handle_event("desc-1.counter", sample(5))
        raise AssertionError("polled on after being cancelled")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(unit_task())
    assert h.accepted == []


async def test_a_unit_in_the_wrong_mode_is_reported_once(
    tmp_path: Path, store: AsyncMaintenanceStore, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(make_config(tmp_path), store)
    with caplog.at_level(logging.WARNING):
        for pv in (1, 2):
            await h.svc.handle_event("desc-1.timer", sample(pv, Mode.COUNTER))
    assert len([r for r in caplog.records if "reports counter mode" in r.message]) == 1


# -- derived fields --------------------------------------------------------------------


async def test_running_from_an_inverted_motor_input(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    cfg = make_config(tmp_path, motor_input="counter.INHIBIT", motor_input_inverted=True)
    h = Harness(cfg, store)
    assert (await h.counter(1, inputs=terminals(inhibit=False))).fields["running"] is True
    assert (await h.counter(1, inputs=terminals(inhibit=True))).fields["running"] is False
    # Between reads of the terminals, the last level holds.
    assert (await h.counter(1)).fields["running"] is False
    # A unit gone offline says nothing: fall back to the hour meter (not moving here).
    await h.svc.handle_event(
        "desc-1.counter",
        DeviceError(
            unit="desc-1.counter", address=1, fault=Fault.PORT, detail="gone", offline=True
        ),
    )
    assert (await h.counter(1)).fields["running"] is False


async def test_running_from_a_timer_motor_input(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    h = Harness(make_config(tmp_path, motor_input="timer.INA"), store)
    await h.timer(0, inputs=terminals(ina=True))
    assert (await h.counter(1)).fields["running"] is True


async def test_running_from_the_hour_meter(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    h = Harness(make_config(tmp_path), store)
    await h.timer(100)
    assert (await h.counter(1, dt_s=0)).fields["running"] is False  # one PV says nothing
    await h.timer(102, dt_s=2)
    assert (await h.counter(1, dt_s=0)).fields["running"] is True
    # Stopped: no count for longer than one count (1 s) plus two polls (4 s).
    await h.timer(102, dt_s=4)
    assert (await h.counter(1, dt_s=0)).fields["running"] is True
    await h.timer(102, dt_s=2)
    assert (await h.counter(1, dt_s=0)).fields["running"] is False


async def test_hours_counted_by_the_agent_without_an_hour_meter(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    h = Harness(make_config(tmp_path), store)
    first = await h.counter(10, huller="desc-2")
    assert (first.fields["running"], first.fields["hours_total"]) == (False, 0.0)
    assert "timer_pv" not in first.fields
    for pv in range(11, 11 + 1800):  # a bag every 2 s for an hour
        reading = await h.counter(pv, huller="desc-2")
    assert reading.fields["running"] is True
    assert reading.fields["hours_total"] == pytest.approx(1.0)
    # An outage of ten minutes counts as two polls at most.
    reading = await h.counter(2000, huller="desc-2", dt_s=600)
    assert reading.fields["hours_total"] == pytest.approx(1.0 + 4 / 3600)
    # Stopped: running until no bag for two minutes, and no hours after that.
    for _ in range(60):
        reading = await h.counter(2000, huller="desc-2")
    assert reading.fields["running"] is True
    reading = await h.counter(2000, huller="desc-2")
    assert reading.fields["running"] is False
    assert reading.fields["hours_total"] == pytest.approx(1.0 + 4 / 3600 + 120 / 3600)
    assert reading.fields["hours_today"] == reading.fields["hours_total"]


async def test_bags_and_hours_today_roll_at_local_midnight(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    cfg = make_config(tmp_path)
    h = Harness(cfg, store, now=BEFORE_MIDNIGHT)
    await h.timer(36_000)
    reading = await h.counter(1000)
    assert (reading.fields["bags_today"], reading.fields["hours_today"]) == (0.0, 0.0)
    await h.timer(36_060, dt_s=60)
    assert (await h.counter(1010, dt_s=0)).fields["bags_today"] == 10.0
    # 00:00:02 in São Paulo (03:00:02 UTC): a new day.
    await h.timer(36_120, dt_s=60)
    reading = await h.counter(1015, dt_s=0)
    assert reading.fields["bags_today"] == 5.0
    assert reading.fields["hours_today"] == pytest.approx(60 / 3600, abs=1e-6)
    assert reading.fields["bags_total"] == 1015.0
    # Restart at 10:00 the same day: today's start was persisted.
    later = Harness(cfg, store, now=h.now + 10 * 60 * MIN)
    await later.timer(36_120 + 3600)
    reading = await later.counter(1100, dt_s=0)
    assert reading.fields["bags_today"] == 90.0
    assert reading.fields["hours_today"] == pytest.approx(1 + 60 / 3600, abs=1e-6)


async def test_bags_per_hour_over_ten_minutes(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    h = Harness(make_config(tmp_path, bags_per_pulse=0.5), store)
    assert (await h.counter(0)).fields["bags_per_hour"] == 0.0
    for pv in range(4, 3600, 4):  # two pulses a second = one bag a second
        reading = await h.counter(pv)
    assert reading.fields["bags_per_hour"] == pytest.approx(3600.0)
    assert reading.fields["bags_total"] == 1798.0
    # Half the window stopped: half the rate; a whole window stopped: none.
    for _ in range(150):
        reading = await h.counter(3596)
    assert reading.fields["bags_per_hour"] == pytest.approx(1800.0, rel=0.01)
    for _ in range(151):
        reading = await h.counter(3596)
    assert reading.fields["bags_per_hour"] == 0.0
    assert reading.fields["running"] is False


async def test_field_types_never_change(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    h = Harness(make_config(tmp_path), store)
    await h.timer(0)
    for pv in (0, 3, 3, 0, 7):
        await h.counter(pv)
        await h.timer(pv * 10)
    types = {
        "running": bool,
        "bags_total": float,
        "hours_total": float,
        "bags_today": float,
        "hours_today": float,
        "bags_per_hour": float,
        "counter_pv": int,
        "timer_pv": int,
    }
    for reading in h.readings("huller"):
        assert {k: type(v) for k, v in reading.fields.items()} == types


# -- health ----------------------------------------------------------------------------


async def test_health_follows_both_units(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    h = Harness(make_config(tmp_path), store)
    entry = h.health.devices["desc-1"]

    def state() -> DeviceState:
        return entry.state

    assert (entry.driver, entry.port, entry.station, entry.state) == (
        "counter.autonics_ct",
        "/dev/rs485",
        "beneficio",
        DeviceState.OFFLINE,
    )
    await h.counter(1)
    assert state() is DeviceState.ONLINE
    assert (entry.frames_ok, entry.readings) == (1, 1)

    def error(unit: str, fault: Fault, *, offline: bool) -> DeviceError:
        return DeviceError(unit=unit, address=2, fault=fault, detail="no reply", offline=offline)

    await h.svc.handle_event(
        "desc-1.timer", error("desc-1.timer", Fault.NO_RESPONSE, offline=False)
    )
    assert state() is DeviceState.ONLINE
    await h.svc.handle_event("desc-1.timer", error("desc-1.timer", Fault.NO_RESPONSE, offline=True))
    assert state() is DeviceState.OFFLINE
    assert entry.last_error == "timer: no reply"
    await h.counter(2)  # the counter alone does not bring the huller back
    assert state() is DeviceState.OFFLINE
    await h.timer(5)
    assert state() is DeviceState.ONLINE
    await h.svc.handle_event(
        "desc-1.counter", error("desc-1.counter", Fault.BAD_CRC, offline=False)
    )
    assert dict(entry.errors) == {"no-response": 2, "bad-crc": 1}


# -- services and status ---------------------------------------------------------------


async def test_services_are_published_once_and_again_after_a_crash(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    cfg = make_config(tmp_path)
    h = Harness(cfg, store)
    await h.timer(3600 * 100)
    await h.counter(1)
    with MaintenanceStore.open(store.path) as cli:  # another process, while the agent runs
        record = cli.record_service(
            "desc-1", "oleo", at_ns=NOON - 3 * MIN, hours_at=99.5, note="20W-50", by="ana"
        )
    assert await h.svc.publish_services() == 1
    assert await h.svc.publish_services() == 0
    (event,) = h.readings("maintenance")
    assert event.kind == "event"
    assert event.ts_ns == record.done_at_ns
    assert event.tags == {"site": "ourofino", "device": "desc-1", "task": "oleo"}
    assert event.fields == {
        "hours_at": 99.5,
        "interval_h": 250.0,
        "note": "20W-50",
        "by": "ana",
        "service_id": record.id,
    }
    # Right after it: the task's status, counted from the service.
    (status,) = h.readings("maintenance_status")
    assert status.fields["hours_since"] == pytest.approx(0.5)

    with MaintenanceStore.open(store.path) as cli:
        cli.record_service("desc-1", "oleo", at_ns=NOON, hours_at=100.0)
    h.kill_on_accept = True
    with pytest.raises(Killed):
        await h.svc.publish_services()  # accepted, then killed before it was marked
    sent = h.readings("maintenance")[-1]
    restarted = Harness(cfg, store, now=h.now + MIN)
    assert await restarted.svc.publish_services() == 1
    (again,) = restarted.readings("maintenance")
    assert (again.ts_ns, again.fields, again.tags) == (sent.ts_ns, sent.fields, sent.tags)
    assert await store.unpublished() == []


async def test_service_for_an_unknown_task_still_goes_out(
    tmp_path: Path, store: AsyncMaintenanceStore
) -> None:
    h = Harness(make_config(tmp_path), store)
    await store.record_service("desc-1", "removida", at_ns=NOON, hours_at=1.0)
    assert await h.svc.publish_services() == 1
    (event,) = h.readings("maintenance")
    assert "interval_h" not in event.fields


async def test_maintenance_status(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    h = Harness(make_config(tmp_path), store)
    assert await h.svc.publish_status() == 0  # no hours known yet
    await h.timer(3600 * 245)
    await h.counter(1)
    await h.counter(1, huller="desc-2")
    assert await h.svc.publish_status() == 2
    oil, cleaning = h.readings("maintenance_status")
    assert oil.tags == {"site": "ourofino", "device": "desc-1", "task": "oleo"}
    assert oil.kind == "reading"
    assert oil.fields == {
        "hours_since": 245.0,
        "interval_h": 250.0,
        "remaining_h": 5.0,
        "state": "due",
        "due": True,
        "overdue": False,
    }
    assert cleaning.fields["state"] == "ok"
    await store.record_service("desc-1", "oleo", at_ns=NOON, hours_at=245.0)
    assert await h.svc.publish_status("desc-1") == 1
    assert h.readings("maintenance_status")[-1].fields["state"] == "ok"


# -- the whole service, with a fake Modbus client --------------------------------------


async def test_run_loop_polls_every_huller(tmp_path: Path, store: AsyncMaintenanceStore) -> None:
    cfg = make_config(
        tmp_path, poll_interval_s=0.1, motor_input="timer.INHIBIT", motor_input_inverted=True
    )
    cfg = cfg.model_copy(
        update={
            "hullers": (cfg.hullers[0], cfg.hullers[1].model_copy(update={"poll_interval_s": 0.1}))
        }
    )
    await store.record_service("desc-1", "oleo", at_ns=NOON, hours_at=0.0)
    sim = FakeModbusClient(
        units=[
            CounterUnitSim(1, pv=500, rate_per_s=50),
            CounterUnitSim(2, mode=Mode.TIMER, pv=3600),
            CounterUnitSim(3, pv=999_999, rate_per_s=0, running=False),
        ]
    )
    accepted: list[Reading] = []
    changed = asyncio.Event()

    async def commit(readings: Sequence[Reading]) -> None:
        accepted.extend(readings)
        changed.set()

    health = Health()
    heard: list[Reading] = []
    accept = AcceptStage(commit, stamper=Stamper(), health=health, listeners=[heard.append]).accept
    svc = HullerService(
        cfg=cfg,
        store=store,
        accept=accept,
        health=health,
        client_factory=sim.factory,
        status_interval_s=0.05,
        services_poll_s=0.05,
    )
    assert set(svc.pollers) == {"rs485"}

    def huller(device: str) -> list[Reading]:
        return [r for r in accepted if r.measurement == "huller" and r.device == device]

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(svc.run_loop(), name="hullers")
        async with asyncio.timeout(5):
            while len(huller("desc-1")) < 4 or not huller("desc-2"):
                changed.clear()
                await changed.wait()
        sim.units[1].front_panel_reset()
        await store.record_service("desc-2", "limpeza", at_ns=NOON, hours_at=0.0)
        async with asyncio.timeout(5):
            while (
                not [r for r in accepted if r.measurement == "counter_reset"]
                or len([r for r in accepted if r.measurement == "maintenance"]) < 2
            ):
                changed.clear()
                await changed.wait()
        task.cancel()
    totals = [float(r.fields["bags_total"]) for r in huller("desc-1")]
    assert totals == sorted(totals)
    assert totals[0] >= 500.0
    last = huller("desc-1")[-1]
    assert last.fields["running"] is True  # INHIBIT off, inverted: the motor runs
    assert float(last.fields["hours_total"]) >= 1.0
    assert huller("desc-2")[0].fields["bags_total"] == 999_999.0
    assert [r.fields["service_id"] for r in accepted if r.measurement == "maintenance"] == [1, 2]
    assert {r.tags["task"] for r in accepted if r.measurement == "maintenance_status"} == {
        "oleo",
        "limpeza",
    }
    assert heard == accepted
    assert health.devices["desc-1"].state is DeviceState.ONLINE
    assert health.devices["desc-2"].state is DeviceState.ONLINE
    assert svc.pollers["rs485"].stats["desc-1.timer"].polls_ok >= 1
