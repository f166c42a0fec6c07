"""Time on a box without a clock battery: trusted, provisional, estimated (injected clocks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.app import TimeService
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Draft, Reading, Stamper, decode_reading
from coffee_telemetry.agent.sinks.lineprotocol import encode_line
from coffee_telemetry.agent.timekeeping import NS, TimeKeeper, TimeQuality

FLOOR = 1_800_000_000 * NS
EPOCH_1970 = 5 * NS  # a Pi that booted without a clock


class Clocks:
    """A wall clock that can be wrong and stepped, a monotonic one that only runs."""

    def __init__(self, wall: int, *, synced: bool | None = False) -> None:
        self.wall = wall
        self.mono = 1_000 * NS
        self.synced = synced

    def run(self, seconds: float) -> None:
        self.wall += int(seconds * NS)
        self.mono += int(seconds * NS)

    def keeper(self, tmp: Path | None = None, timeout_s: float = 600.0) -> TimeKeeper:
        return TimeKeeper(
            state_path=None if tmp is None else tmp / "clock.json",
            trust_timeout_s=timeout_s,
            ntp=lambda: self.synced,
            wall_ns=lambda: self.wall,
            mono_ns=lambda: self.mono,
            floor_ns=FLOOR,
        )


def test_a_synchronised_clock_is_trusted_at_once() -> None:
    c = Clocks(FLOOR + 100 * NS, synced=True)
    keeper = c.keeper()
    assert keeper.quality is TimeQuality.TRUSTED
    assert keeper.now_ns() == c.wall


def test_a_1970_boot_is_provisional_never_dated_before_the_floor() -> None:
    c = Clocks(EPOCH_1970)
    keeper = c.keeper()
    assert keeper.quality is TimeQuality.PROVISIONAL
    assert keeper.now_ns() >= FLOOR


def test_ntp_that_says_synchronised_to_1970_is_not_believed() -> None:
    c = Clocks(EPOCH_1970, synced=True)
    keeper = c.keeper()
    assert keeper.quality is TimeQuality.PROVISIONAL
    assert keeper.reason == "ntp time before the floor"


def test_sync_after_a_1970_boot_gives_the_correction_for_every_provisional_stamp() -> None:
    c = Clocks(EPOCH_1970)
    keeper = c.keeper()
    c.run(30)
    provisional = keeper.now_ns()
    c.run(90)
    assert keeper.poll() is None
    true_wall = FLOOR + 7 * 86400 * NS
    c.wall, c.synced = true_wall, True
    adj = keeper.poll()
    assert adj is not None
    assert (adj.before, adj.after) == (TimeQuality.PROVISIONAL, TimeQuality.TRUSTED)
    # The reading taken 90 s before the sync, re-stamped: trusted wall minus 90 s.
    assert provisional + adj.delta_ns == true_wall - 90 * NS
    assert keeper.now_ns() == true_wall


def test_no_source_within_the_timeout_adopts_the_saved_estimate(tmp_path: Path) -> None:
    (tmp_path / "clock.json").write_text(json.dumps({"wall_ns": FLOOR + 3600 * NS}))
    c = Clocks(EPOCH_1970)
    keeper = c.keeper(tmp_path, timeout_s=600)
    assert keeper.now_ns() == FLOOR + 3600 * NS  # the last run's time, not 1970
    c.run(599)
    assert keeper.poll() is None
    c.run(1)
    adj = keeper.poll()
    assert adj is not None
    assert adj.after is TimeQuality.ESTIMATED
    assert adj.delta_ns == 0
    assert "10 min" in keeper.reason
    # A trusted source later: the offset it finds is reported, time follows it.
    c.wall, c.synced = FLOOR + 86400 * NS, True
    later = keeper.poll()
    assert later is not None
    assert later.before is TimeQuality.ESTIMATED
    assert later.delta_ns == c.wall - (FLOOR + 3600 * NS + 600 * NS)
    keeper.save()
    assert json.loads((tmp_path / "clock.json").read_text())["wall_ns"] == c.wall


def test_a_step_of_the_wall_clock_without_a_source_changes_nothing() -> None:
    c = Clocks(FLOOR + 1000 * NS, synced=True)
    keeper = c.keeper()
    c.synced = False  # a step by hand clears the kernel's synchronised state
    c.wall -= 3600 * NS
    c.run(10)
    assert keeper.poll() is None
    assert keeper.now_ns() == FLOOR + 1010 * NS
    assert keeper.quality is TimeQuality.TRUSTED


def test_a_corrupt_saved_time_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "clock.json").write_text("{not json")
    keeper = Clocks(EPOCH_1970).keeper(tmp_path)
    assert keeper.now_ns() == FLOOR


@given(st.binary(max_size=200))
def test_any_saved_file_gives_a_time_at_or_after_the_floor(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "clock.json").write_bytes(data)
        keeper = Clocks(EPOCH_1970).keeper(Path(tmp))
        assert keeper.now_ns() >= FLOOR


def test_a_user_cannot_set_a_time_before_the_floor() -> None:
    keeper = Clocks(EPOCH_1970).keeper()
    with contextlib.suppress(ValueError):
        keeper.set_by_user("ana", EPOCH_1970)
    assert keeper.quality is TimeQuality.PROVISIONAL
    adj = keeper.set_by_user("ana", FLOOR + NS)
    assert adj.source == "user:ana"
    assert keeper.trusted


class Sink:
    name = "influx"
    batch_size = 100
    flush_interval_s = 0.0

    def __init__(self) -> None:
        self.got: list[Reading] = []
        self.changed = asyncio.Event()

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        self.got += [decode_reading(r.payload) for r in records]
        self.changed.set()
        return []

    async def wait_available(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)


def draft(i: int) -> Draft:
    return Draft(device="umid-1", measurement="moisture", fields={"moisture_pct": 11.0 + i})


async def test_provisional_readings_wait_then_reach_the_sink_once_re_stamped(
    tmp_path: Path,
) -> None:
    c = Clocks(EPOCH_1970)
    keeper = c.keeper()
    stamper = Stamper(clock_ns=keeper.now_ns, quality=lambda: keeper.quality.value)
    heard: list[Reading] = []
    restamped: list[Reading] = []
    sink = Sink()
    async with open_outbox(tmp_path / "o.db", sinks=["influx"], line_encoder=encode_line) as ob:
        ob.set_boot(keeper.boot)
        stage = AcceptStage(ob.accept, stamper=stamper, health=Health(), listeners=[heard.append])
        clock = TimeService(keeper, stamper=stamper, outbox=ob, accept=stage, site="s1")
        clock.on_restamped.append(restamped.append)
        task = asyncio.create_task(deliver_loop(ob, sink, health=None))
        try:
            first = []
            for i in range(3):
                first += await stage.accept([draft(i)])
                c.run(10)
            # Live listeners heard them at once, marked provisional; the sink got nothing.
            assert [r.time_quality for r in heard] == ["provisional"] * 3
            await asyncio.sleep(0.05)
            assert sink.got == []
            assert ob.held
            true_wall = FLOOR + 30 * 86400 * NS
            c.wall, c.synced = true_wall, True
            adj = keeper.poll()
            assert adj is not None
            await clock.adjusted(adj)
            after = await stage.accept([draft(9)])
            while len(sink.got) < 5:  # 3 re-stamped, the time event, 1 new
                sink.changed.clear()
                await asyncio.wait_for(sink.changed.wait(), 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    readings = [r for r in sink.got if r.device == "umid-1"]
    # Each provisional reading arrives exactly once, at trusted wall - elapsed since it.
    assert [r.seq for r in readings] == [1, 2, 3, 4]
    assert [r.ts_ns for r in readings[:3]] == [
        true_wall - 30 * NS,
        true_wall - 20 * NS,
        true_wall - 10 * NS,
    ]
    assert {r.time_quality for r in readings} == {"trusted"}
    assert readings[3].ts_ns == after[0].ts_ns == true_wall
    assert [r.seq for r in restamped] == [1, 2, 3]
    assert first[0].ts_ns != readings[0].ts_ns
    (event,) = [r for r in sink.got if r.measurement == "time"]
    assert event.fields["after"] == "trusted"
    assert event.fields["before"] == "provisional"


async def test_an_earlier_runs_provisional_readings_are_released_as_estimated(
    tmp_path: Path,
) -> None:
    c = Clocks(EPOCH_1970)
    keeper = c.keeper()
    stamper = Stamper(clock_ns=keeper.now_ns, quality=lambda: keeper.quality.value)
    async with open_outbox(tmp_path / "o.db", sinks=["influx"], line_encoder=encode_line) as ob:
        ob.set_boot("earlier-run")
        stage = AcceptStage(ob.accept, stamper=stamper, health=Health())
        kept = await stage.accept([draft(1), draft(2)])
        assert await ob.read_batch("influx", 10) == []
    async with open_outbox(tmp_path / "o.db", sinks=["influx"], line_encoder=encode_line) as ob:
        assert ob.held
        released = await ob.resolve(delta_ns=0, quality="estimated", boot=None)
        assert not ob.held
        batch = await ob.read_batch("influx", 10)
    assert [r.ts_ns for r in released] == [r.ts_ns for r in kept]
    assert [decode_reading(r.payload).time_quality for r in batch] == ["estimated"] * 2
    assert all(r.line is not None and 'time_quality="estimated"' in r.line for r in batch)
