"""The GPS receiver simulator: what it prints is what drivers.nmea reads, knobs included."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.nmea import GpsTime, NmeaParser
from coffee_telemetry.simulators.gps import NO_FIX_CLOCK, ROLLOVER, GpsSim, open_gps_sim
from coffee_telemetry.simulators.pty import PtyPort

WHEN = datetime(2026, 12, 8, 14, 30, 12, 400_000, tzinfo=UTC)
NS = 1_000_000_000


def read(sim: GpsSim) -> list[GpsTime | Discarded]:
    parser = NmeaParser()
    parser.receive_data(sim.burst())
    return parser.events()


def at(when: datetime) -> int:
    return int(when.replace(microsecond=0).timestamp()) * NS


def test_a_burst_with_a_fix_states_the_second_in_rmc_and_zda() -> None:
    sim = GpsSim(PtyPort(), clock=lambda: WHEN, talker="GN")
    assert read(sim) == [GpsTime(at(WHEN), "RMC", "GN"), GpsTime(at(WHEN), "ZDA", "GN")]
    assert sim.sent == [WHEN.replace(microsecond=0)]


def test_the_knobs_make_what_a_receiver_does_wrong() -> None:
    sim = GpsSim(PtyPort(), clock=lambda: WHEN)
    sim.fix = False
    assert [e.reason for e in read(sim) if isinstance(e, Discarded)] == ["no-fix", "no-fix"]
    sim.fix, sim.week_rollover = True, True
    assert read(sim)[0] == GpsTime(at(WHEN - ROLLOVER), "RMC", "GP")
    sim.week_rollover, sim.bad_checksum, sim.zda = False, True, False
    assert [e.reason for e in read(sim) if isinstance(e, Discarded)] == ["bad-checksum"]
    sim.bad_checksum, sim.garbage, sim.offset_s = False, True, 3600.0
    events = read(sim)
    assert events[-1] == GpsTime(at(WHEN + timedelta(hours=1)), "RMC", "GP")
    assert all(isinstance(e, Discarded) for e in events[:-1])
    assert sim.stated() != NO_FIX_CLOCK


async def test_it_writes_to_a_real_pty() -> None:
    with open_gps_sim(clock=lambda: WHEN) as sim:
        fd = os.open(sim.port.tty_path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            task = asyncio.create_task(sim.run(interval_s=0.01))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            parser = NmeaParser()
            parser.receive_data(os.read(fd, 65536))
        finally:
            os.close(fd)
        times = [e for e in parser.events() if isinstance(e, GpsTime)]
        assert times
        assert {e.utc_ns for e in times} == {at(WHEN)}
