"""Time from a wire: the keeper's rules for offered times, a GPS receiver on a real pty,
the modem's network time shared with SMS sending, and the +CCLK parser."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.app import TimeService
from coffee_telemetry.agent.config import TimeGpsConfig
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.notify.config import SmsConfig
from coffee_telemetry.agent.notify.gsm import AtParser, Discarded, Line, NetworkTime, decode_cclk
from coffee_telemetry.agent.notify.model import Sent
from coffee_telemetry.agent.notify.sms import ModemChannel
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Draft, Reading, Stamper, decode_reading
from coffee_telemetry.agent.sinks.lineprotocol import encode_line
from coffee_telemetry.agent.timekeeping import FLOOR_NS, NS, TimeKeeper, TimeQuality
from coffee_telemetry.agent.timesources import gps_loop, modem_loop
from coffee_telemetry.simulators.gps import GpsSim
from coffee_telemetry.simulators.modem import ModemSim, encode_cclk
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.notify.helpers import until
from tests.agent.notify.test_sms import sms, texts

FLOOR = 1_800_000_000 * NS
EPOCH_1970 = 5 * NS


class Clocks:
    """A wrong wall clock and a monotonic one, both moved by the test."""

    def __init__(self, wall: int = EPOCH_1970, *, synced: bool = False) -> None:
        self.wall, self.mono, self.synced = wall, 1_000 * NS, synced

    def run(self, seconds: float) -> None:
        self.wall += int(seconds * NS)
        self.mono += int(seconds * NS)

    def keeper(self, sources: Sequence[str] = ("ntp", "gps", "modem", "user")) -> TimeKeeper:
        return TimeKeeper(
            ntp=lambda: self.synced,
            wall_ns=lambda: self.wall,
            mono_ns=lambda: self.mono,
            floor_ns=FLOOR,
            sources=sources,
            rtc_set_clock=lambda: False,
        )


def states(keeper: TimeKeeper) -> dict[str, object]:
    doc = keeper.health_doc()["sources"]
    assert isinstance(doc, dict)
    return {name: s["state"] for name, s in doc.items()}


# -- the keeper's rules ----------------------------------------------------------------


def test_an_offered_time_before_the_floor_is_refused_and_shown() -> None:
    c = Clocks()
    keeper = c.keeper()
    assert keeper.offer("gps", FLOOR - 1024 * 7 * 86400 * NS, mono_ns=c.mono) is None
    assert keeper.quality is TimeQuality.PROVISIONAL
    assert states(keeper)["gps"] == "refused"
    assert "before the release date" in keeper.states["gps"].detail


def test_a_gps_time_anchors_a_provisional_clock_counting_the_bytes_delay() -> None:
    c = Clocks()
    keeper = c.keeper()
    provisional = keeper.now_ns()
    true = FLOOR + 86400 * NS
    arrived = c.mono
    c.run(0.4)  # the loop handed it over 0.4 s after the bytes arrived
    adj = keeper.offer("gps", true, mono_ns=arrived)
    assert adj is not None
    assert adj.before is TimeQuality.PROVISIONAL
    assert adj.source == "gps"
    assert keeper.now_ns() == true + int(0.4 * NS)
    assert adj.delta_ns == true - provisional
    assert states(keeper) == {"ntp": "waiting", "gps": "ok", "modem": "waiting", "user": "waiting"}


def test_a_source_never_overrides_a_better_one_that_still_answers() -> None:
    c = Clocks(FLOOR + 100 * NS, synced=True)
    keeper = c.keeper()
    assert keeper.source == "ntp"
    assert keeper.offer("gps", c.wall + 30 * NS, mono_ns=c.mono) is None
    assert keeper.now_ns() == c.wall
    assert states(keeper)["gps"] == "standby"
    assert keeper.user_refusal_code() == (
        "trusted-source",
        "ntp",
        "time already comes from a trusted source (ntp)",
    )
    with pytest.raises(ValueError, match="trusted source"):
        keeper.set_by_user("ana", c.wall)


def test_gps_beats_the_modem_and_the_modem_takes_over_when_gps_goes_quiet() -> None:
    c = Clocks()
    keeper = c.keeper()
    true = FLOOR + 5 * 86400 * NS
    assert keeper.offer("modem", true + 60 * NS, mono_ns=c.mono) is not None
    assert keeper.source == "modem"
    adj = keeper.offer("gps", true, mono_ns=c.mono)  # 60 s apart: the better one wins
    assert adj is not None
    assert keeper.source == "gps"
    assert adj.delta_ns == -60 * NS
    assert keeper.offer("modem", true + 60 * NS, mono_ns=c.mono) is None
    assert keeper.now_ns() == true
    assert states(keeper)["modem"] == "standby"
    c.run(301)  # the receiver lost its antenna: no fix for five minutes
    adj = keeper.offer("modem", true + 301 * NS + 60 * NS, mono_ns=c.mono)
    assert adj is not None
    assert adj.source == "modem"


def test_a_source_within_its_tolerance_takes_the_name_without_a_step() -> None:
    c = Clocks()
    keeper = c.keeper()
    true = FLOOR + NS
    keeper.offer("modem", true, mono_ns=c.mono)
    assert keeper.offer("gps", true + NS, mono_ns=c.mono) is None  # 1 s: within 2 s
    assert keeper.source == "gps"
    assert keeper.now_ns() == true


def test_a_person_may_set_the_time_only_while_no_source_answers() -> None:
    c = Clocks()
    keeper = c.keeper()
    true = FLOOR + NS
    keeper.offer("gps", true, mono_ns=c.mono)
    with pytest.raises(ValueError, match=r"trusted source \(gps\)"):
        keeper.set_by_user("ana", true + 600 * NS)
    c.run(400)
    assert keeper.user_refusal() is None
    adj = keeper.set_by_user("ana", true + 400 * NS + 5 * NS)
    assert adj.source == "user:ana"
    assert states(keeper)["user"] == "ok"
    assert keeper.health_doc()["sources"]["user"]["detail"] == "ana"  # type: ignore[index]
    # A GPS fix later still wins over a person's browser.
    adj2 = keeper.offer("gps", true + 400 * NS, mono_ns=c.mono)
    assert adj2 is not None
    assert keeper.source == "gps"


def test_setting_by_hand_can_be_off() -> None:
    keeper = Clocks().keeper(sources=("ntp",))
    assert keeper.user_refusal_code() is not None
    assert keeper.health_doc()["user_refusal_code"] == "off"
    with pytest.raises(ValueError, match="off"):
        keeper.set_by_user("ana", FLOOR + NS)


def test_an_unknown_source_is_ignored_and_notes_show_in_health() -> None:
    c = Clocks()
    keeper = c.keeper(sources=("gps",))
    assert keeper.offer("modem", FLOOR + NS, mono_ns=c.mono) is None
    keeper.note("gps", "unavailable", "no fix")
    keeper.note("modem", "unavailable", "ignored")
    doc = keeper.health_doc()["sources"]
    assert doc == {"gps": {"state": "unavailable", "detail": "no fix", "last_ns": None}}


# -- through the time service ----------------------------------------------------------


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


@dataclass
class Agent:
    keeper: TimeKeeper
    service: TimeService
    stage: AcceptStage
    outbox: Outbox
    sink: Sink


@contextlib.asynccontextmanager
async def agent(tmp: Path, sources: Sequence[str]) -> AsyncIterator[Agent]:
    """A box whose wall clock says 1970; the monotonic clock is the real one."""
    keeper = TimeKeeper(
        ntp=lambda: False,
        wall_ns=lambda: EPOCH_1970,
        sources=sources,
        rtc_set_clock=lambda: False,
    )
    stamper = Stamper(clock_ns=keeper.now_ns, quality=lambda: keeper.quality.value)
    sink = Sink()
    async with open_outbox(tmp / "o.db", sinks=["influx"], line_encoder=encode_line) as ob:
        ob.set_boot(keeper.boot)
        stage = AcceptStage(ob.accept, stamper=stamper, health=Health())
        service = TimeService(keeper, stamper=stamper, outbox=ob, accept=stage, site="s1")
        task = asyncio.create_task(deliver_loop(ob, sink, health=None))
        try:
            yield Agent(keeper, service, stage, ob, sink)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_gps_on_a_pty_dates_the_readings_that_waited_for_it(tmp_path: Path) -> None:
    port = PtyPort(link=tmp_path / "gps")
    port.open()
    sim = GpsSim(port, talker="GN")
    sim.fix = False
    async with agent(tmp_path, ("gps", "user")) as a:
        waited = await a.stage.accept(
            [Draft(device="umid-1", measurement="moisture", fields={"moisture_pct": 11.5})]
        )
        assert waited[0].time_quality == "provisional"
        cfg = TimeGpsConfig(port=port.path, baud=9600, interval_s=1)
        tasks = [
            asyncio.create_task(sim.run(interval_s=0.1)),
            asyncio.create_task(gps_loop(cfg, a.service)),
        ]
        try:
            await until(lambda: states(a.keeper)["gps"] == "unavailable", timeout_s=5)
            assert "no fix" in a.keeper.states["gps"].detail
            assert a.sink.got == []  # held back: its time is provisional
            assert a.keeper.user_refusal() is None  # no source answers: a person may set it
            sim.fix = True
            await until(lambda: a.keeper.trusted, timeout_s=5)
            assert a.keeper.source == "gps"
            assert abs(a.keeper.now_ns() - time.time_ns()) < 2 * NS
            await until(lambda: any(r.device == "umid-1" for r in a.sink.got), timeout_s=5)
            (reading,) = [r for r in a.sink.got if r.device == "umid-1"]
            assert reading.time_quality == "trusted"
            assert reading.seq == waited[0].seq
            # Dated from the GPS, at the moment it was taken (a second or so ago).
            assert 0 <= time.time_ns() - reading.ts_ns < 5 * NS
            (event,) = [r for r in a.sink.got if r.measurement == "time"]
            assert event.fields["source"] == "gps"
            assert a.keeper.user_refusal_code() == (
                "trusted-source",
                "gps",
                "time already comes from a trusted source (gps)",
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            port.close()


async def test_a_gps_with_the_week_roll_over_bug_or_bad_checksums_is_never_believed(
    tmp_path: Path,
) -> None:
    port = PtyPort(link=tmp_path / "gps")
    port.open()
    sim = GpsSim(port)
    sim.week_rollover = True
    sim.garbage = True
    async with agent(tmp_path, ("gps",)) as a:
        cfg = TimeGpsConfig(port=port.path, baud=4800, interval_s=1)
        tasks = [
            asyncio.create_task(sim.run(interval_s=0.1)),
            asyncio.create_task(gps_loop(cfg, a.service)),
        ]
        try:
            await until(lambda: states(a.keeper)["gps"] == "refused", timeout_s=5)
            assert "before the release date" in a.keeper.states["gps"].detail
            sim.week_rollover, sim.bad_checksum = False, True
            await asyncio.sleep(0.5)
            assert not a.keeper.trusted
            sim.bad_checksum = False
            await until(lambda: a.keeper.trusted, timeout_s=5)
            port.unplug()
            await until(lambda: states(a.keeper)["gps"] == "unavailable", timeout_s=5)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            port.close()


async def test_a_receiver_read_at_the_wrong_baud_rate_is_shown(tmp_path: Path) -> None:
    port = PtyPort(link=tmp_path / "gps")
    port.open()

    async def wrong_baud() -> None:
        while True:  # what 9600 baud sentences look like read at 4800
            port.write(bytes(range(0x80, 0xC0)) + b"\r\n")
            await asyncio.sleep(0.05)

    async with agent(tmp_path, ("gps",)) as a:
        cfg = TimeGpsConfig(port=port.path, baud=4800)
        tasks = [
            asyncio.create_task(wrong_baud()),
            asyncio.create_task(gps_loop(cfg, a.service, silent_s=0.5)),
        ]
        try:
            await until(lambda: states(a.keeper)["gps"] == "unavailable", timeout_s=5)
            assert "baud rate?" in a.keeper.states["gps"].detail
            assert not a.keeper.trusted
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            port.close()


async def test_a_missing_gps_port_is_shown_as_unavailable(tmp_path: Path) -> None:
    async with agent(tmp_path, ("gps",)) as a:
        cfg = TimeGpsConfig(port=str(tmp_path / "no-such-port"))
        task = asyncio.create_task(gps_loop(cfg, a.service))
        try:
            await until(lambda: states(a.keeper)["gps"] == "unavailable", timeout_s=5)
            assert "cannot open" in a.keeper.states["gps"].detail
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- the modem's network time --------------------------------------------------------


@contextlib.asynccontextmanager
async def modem(tmp: Path) -> AsyncIterator[tuple[ModemSim, ModemChannel]]:
    port = PtyPort(link=tmp / "modem")
    port.open()
    sim = ModemSim(port)
    cfg = SmsConfig(port=port.path, reply_timeout_s=1.0, send_timeout_s=2.0)
    channel = ModemChannel(cfg)
    tasks = [asyncio.create_task(sim.run()), asyncio.create_task(channel.run_loop())]
    try:
        await until(lambda: channel.status.connected, timeout_s=5)
        yield sim, channel
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        port.close()


async def test_the_modems_default_clock_is_refused_and_the_network_time_believed(
    tmp_path: Path,
) -> None:
    async with agent(tmp_path, ("modem", "user")) as a, modem(tmp_path) as (sim, channel):
        sim.network_clock = None  # no NITZ yet: the modem counts from 1980-01-06
        task = asyncio.create_task(modem_loop(channel, a.service, interval_s=60, retry_s=0.05))
        try:
            await until(lambda: states(a.keeper)["modem"] == "refused", timeout_s=5)
            assert "1980-01-06" in a.keeper.states["modem"].detail
            assert not a.keeper.trusted
            sim.network_clock = lambda: datetime.now(UTC)
            await until(lambda: a.keeper.trusted, timeout_s=5)
            assert a.keeper.source == "modem"
            assert abs(a.keeper.now_ns() - time.time_ns()) < 2 * NS
            assert "AT+CCLK?" in sim.commands
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_asking_the_time_never_comes_between_an_sms_and_its_pdu(tmp_path: Path) -> None:
    async with agent(tmp_path, ("modem",)) as a, modem(tmp_path) as (sim, channel):
        task = asyncio.create_task(modem_loop(channel, a.service, interval_s=0.0, retry_s=0.0))
        try:
            await until(lambda: sim.commands.count("AT+CCLK?") >= 3, timeout_s=5)
            outcomes = [await channel.send(sms()) for _ in range(3)]
            assert all(isinstance(o, Sent) for o in outcomes), outcomes
            assert len(texts(sim)) == 6  # three messages of two UCS-2 parts, all whole
            between = sim.commands[
                sim.commands.index(next(c for c in sim.commands if c.startswith("AT+CMGS"))) :
            ]
            assert "AT+CCLK?" in between  # the questions went on between the messages
            assert a.keeper.source == "modem"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_modem_that_is_not_connected_is_shown(tmp_path: Path) -> None:
    channel = ModemChannel(SmsConfig(port=str(tmp_path / "none")))
    async with agent(tmp_path, ("modem",)) as a:
        task = asyncio.create_task(modem_loop(channel, a.service, retry_s=0.05))
        try:
            await until(lambda: states(a.keeper)["modem"] == "unavailable", timeout_s=5)
            assert a.keeper.states["modem"].detail == "modem not connected"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- +CCLK ---------------------------------------------------------------------------

CCLK_CASES = [
    # Brasília (UTC-3 = -12 quarters), 21:30 on the 7th is 00:30 UTC on the 8th.
    ('+CCLK: "26/12/07,21:30:00-12"', "2026-12-08T00:30:00+00:00", -12),
    ('+CCLK: "26/12/08,00:30:00+00"', "2026-12-08T00:30:00+00:00", 0),
    ('+CCLK: "27/01/01,05:45:00+23"', "2026-12-31T23:59:59+00:00", 23),  # Nepal, +5:45
    ('+CCLK:"26/12/08,10:00:00+8"', "2026-12-08T08:00:00+00:00", 8),  # one digit, no space
    # Power-up defaults: read as the past (1980, 2004), never as 2080.
    ('+CCLK: "80/01/06,00:01:31+00"', "1980-01-06T00:01:31+00:00", 0),
    ('+CCLK: "04/01/01,00:00:13+00"', "2004-01-01T00:00:13+00:00", 0),
]


@pytest.mark.parametrize(("line", "utc", "zone"), CCLK_CASES)
def test_cclk_golden_cases(line: str, utc: str, zone: int) -> None:
    got = decode_cclk(line)
    assert isinstance(got, NetworkTime)
    want = datetime.fromisoformat(utc)
    if zone == 23:
        want += timedelta(seconds=1)
    assert got.utc_ns == int(want.timestamp()) * NS
    assert got.zone_quarters == zone


@pytest.mark.parametrize(
    "line",
    [
        '+CCLK: "26/12/07,21:30:00"',  # no zone: local time of an unknown zone
        '+CCLK: "26/02/30,10:00:00-12"',  # 30 February
        '+CCLK: "26/12/07,24:00:00-12"',
        '+CCLK: "26/12/07,21:30:00-99"',  # no such zone
        "+CCLK: 26/12/07,21:30:00-12",  # no quotes
        "+CME ERROR: 3",
        "",
    ],
)
def test_cclk_refusals(line: str) -> None:
    assert isinstance(decode_cclk(line), Discarded)


@given(st.text(max_size=80))
def test_cclk_text_is_read_or_refused_never_raises(text: str) -> None:
    got = decode_cclk(text)
    assert isinstance(got, NetworkTime | Discarded)
    if isinstance(got, NetworkTime):
        assert "+CCLK" in text
        assert 1980 <= datetime.fromtimestamp(got.utc_ns // NS, UTC).year <= 2080


@settings(max_examples=300)
@given(
    when=st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2079, 12, 30)),
    zone=st.integers(-48, 56),
)
def test_what_the_simulator_says_is_read_back(when: datetime, zone: int) -> None:
    moment = when.replace(microsecond=0, tzinfo=UTC)
    got = decode_cclk(encode_cclk(moment, zone))
    assert got == NetworkTime(int(moment.timestamp()) * NS, zone)


@settings(max_examples=300)
@given(noise=st.binary(max_size=200), cut=st.integers(0, 60))
def test_cclk_lines_in_a_noisy_at_stream(noise: bytes, cut: int) -> None:
    line = b'\r\n+CCLK: "26/12/07,21:30:00-12"\r\n\r\nOK\r\n'
    parser = AtParser()
    parser.receive_data(noise + b"\r\n")
    parser.receive_data(line[:cut])
    parser.receive_data(line[cut:])
    times = []
    for event in parser.events():
        if isinstance(event, Line):
            got = decode_cclk(event.text)
            if isinstance(got, NetworkTime):
                times.append(got.utc_ns)
    assert times[-1] == int(datetime(2026, 12, 8, 0, 30, tzinfo=UTC).timestamp()) * NS
    assert times[-1] > FLOOR_NS


def test_the_battery_clock_shows_whether_it_set_the_time() -> None:
    c = Clocks(FLOOR + NS)
    without = TimeKeeper(
        ntp=lambda: False,
        wall_ns=lambda: c.wall,
        mono_ns=lambda: c.mono,
        floor_ns=FLOOR,
        sources=("rtc", "system"),
        rtc_set_clock=lambda: False,
    )
    assert without.source == "system"  # no battery clock: the next source still counts
    assert states(without) == {"system": "ok", "rtc": "unavailable"}
    with_rtc = TimeKeeper(
        ntp=lambda: False,
        wall_ns=lambda: c.wall,
        mono_ns=lambda: c.mono,
        floor_ns=FLOOR,
        sources=("rtc", "gps", "modem"),
        rtc_set_clock=lambda: True,
    )
    assert states(with_rtc) == {"gps": "waiting", "rtc": "ok", "modem": "waiting"}
    assert with_rtc.offer("modem", c.wall + 60 * NS, mono_ns=c.mono) is None  # rtc is better
    assert with_rtc.offer("gps", c.wall + 60 * NS, mono_ns=c.mono) is not None  # gps is better
    assert states(with_rtc)["rtc"] == "standby"
