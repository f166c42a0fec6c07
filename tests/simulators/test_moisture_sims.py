"""Moisture simulators on real pseudo-terminals, read back through pyserial and the drivers.

Each test opens ``port.path`` as the agent opens ``/dev/ttyUSB0`` (pyserial-asyncio-fast,
9600 8N1), runs the agent's read loop in miniature (bytes and ticks into the parser,
with the loop's monotonic time) and checks that the readings equal ``sim.sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import serial
import serial_asyncio_fast

from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.moisture_tesma import TesmaParser
from coffee_telemetry.drivers.moisture_ticket import TicketOptions, TicketParser
from coffee_telemetry.simulators.moisture import Faults, SentReading, TesmaMeterSim, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port

Event = Measurement | Discarded
Until = Callable[[list[Event]], bool]


@contextlib.asynccontextmanager
async def open_agent_side(path: str) -> AsyncIterator[asyncio.StreamReader]:
    """Open the slave the way the agent does, and close it afterwards."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=9600)
    try:
        yield reader
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def read_some(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(4096)
    if not data:
        raise EOFError("port closed")
    return data


def readings(events: list[Event]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement)]


def reasons(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Discarded)]


def has_readings(count: int) -> Until:
    return lambda events: len(readings(events)) >= count


async def pump_ticket(
    reader: asyncio.StreamReader, parser: TicketParser, until: Until, timeout_s: float = 5.0
) -> list[Event]:
    """The agent's loop: read until the parser's deadline, then tick."""
    loop = asyncio.get_running_loop()
    events: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while not until(events):
            deadline = parser.next_deadline()
            try:
                async with asyncio.timeout_at(deadline):
                    data = await read_some(reader)
            except TimeoutError:
                parser.tick(loop.time())
            else:
                parser.receive_data(data, loop.time())
            events += parser.events()
    return events


async def pump_tesma(
    reader: asyncio.StreamReader, parser: TesmaParser, until: Until, timeout_s: float = 5.0
) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while not until(events):
            parser.receive_data(await read_some(reader))
            events += parser.events()
    return events


def ticket_view(m: Measurement) -> tuple[object, ...]:
    f, t = m.fields, m.tags
    return (
        f["moisture_pct"],
        t.get("product"),
        f.get("sample_id"),
        t.get("lot"),
        f.get("temperature_c"),
        f.get("bulk_density_kg_hl"),
        f.get("meter_time"),
    )


def sent_view(s: SentReading) -> tuple[object, ...]:
    return (
        s.moisture_pct,
        s.product,
        s.sample_id,
        s.lot,
        s.temperature_c,
        s.bulk_density_kg_hl,
        s.meter_time,
    )


def tesma_view(m: Measurement) -> tuple[object, object]:
    return m.tags["product"], m.fields["moisture_pct"]


@pytest.fixture
def port(tmp_path: Path) -> Iterator[PtyPort]:
    with open_pty_port(link=tmp_path / "ttyUSB-moisture") as pty_port:
        yield pty_port


# -- the pty itself -----------------------------------------------------------------------


def test_link_follows_the_pty_across_replugs(port: PtyPort, tmp_path: Path) -> None:
    assert port.path == str(tmp_path / "ttyUSB-moisture")
    assert port.tty_path.startswith("/dev/pts/")
    assert os.path.realpath(port.path) == port.tty_path
    port.unplug()
    assert not os.path.lexists(port.path)
    with pytest.raises(serial.SerialException):
        serial.Serial(port.path, 9600)
    port.replug()
    assert os.path.realpath(port.path) == port.tty_path
    assert port.opens == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "ttyUSB-moisture"]  # no temporary links left


async def test_pty_is_raw_both_ways(port: PtyPort) -> None:
    raw = b"UMID 12.3\r\n\x00\x03\x11\x13\x7f\xff"  # CR kept, no XON/XOFF, no echo
    with serial.Serial(port.path, 9600, timeout=2) as agent:
        assert port.write(raw) == len(raw)
        assert await asyncio.to_thread(agent.read, len(raw)) == raw
        agent.write(b"READ\r")
        assert await port.read() == b"READ\r"  # and nothing of ours echoed back
        waiting = asyncio.create_task(port.read())
        await asyncio.sleep(0.05)
        agent.write(b"LATER\r")
        assert await waiting == b"LATER\r"


async def test_writes_never_block_and_drops_are_counted(port: PtyPort) -> None:
    chunk = b"x" * 4096
    started = time.monotonic()
    for _ in range(256):  # 1 MiB and nobody reading
        port.write(chunk)
    assert time.monotonic() - started < 2.0
    assert port.dropped_bytes > 0
    assert port.written_bytes + port.dropped_bytes == 256 * 4096
    port.unplug()
    assert port.write(b"lost") == 0
    assert not port.is_open


async def test_unplug_breaks_the_reader_and_replug_restores_the_same_path(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=3)
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        sent = await sim.emit(moisture_pct=11.0)
        events = await pump_ticket(reader, parser, has_readings(1))
        assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
        assert sent is not None
        port.unplug()
        with pytest.raises((serial.SerialException, OSError)):
            await pump_ticket(reader, parser, has_readings(2))
    assert await sim.emit(moisture_pct=11.1) is None  # unplugged: nothing went out

    port.replug()
    parser = TicketParser()  # the agent starts afresh on a new connection
    async with open_agent_side(port.path) as reader:
        await sim.emit(moisture_pct=11.2)
        events = await pump_ticket(reader, parser, has_readings(1))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(sim.sent[-1])]
    assert [s.moisture_pct for s in sim.sent] == [11.0, 11.2]


async def test_a_blocking_pyserial_reader_sees_the_unplug(port: PtyPort) -> None:
    with serial.Serial(port.path, 9600, timeout=5) as agent:
        reading = asyncio.create_task(asyncio.to_thread(agent.read, 100))
        await asyncio.sleep(0.1)
        port.unplug()
        with pytest.raises(serial.SerialException):
            await reading


async def test_pending_read_fails_on_unplug(port: PtyPort) -> None:
    waiting = asyncio.create_task(port.read())
    await asyncio.sleep(0.05)
    port.unplug()
    with pytest.raises(OSError, match="unplugged"):
        await waiting
    with pytest.raises(OSError, match="unplugged"):
        await port.read()


def test_port_misuse() -> None:
    port = PtyPort()
    with pytest.raises(RuntimeError):
        _ = port.path
    port.open()
    try:
        with pytest.raises(RuntimeError):
            port.open()
        assert port.path == port.tty_path
    finally:
        port.close()
        port.close()


# -- ticket meter ---------------------------------------------------------------------------


async def test_ticket_readings_equal_sent(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=1, lot="L-0001")
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        await sim.emit(moisture_pct=11.8, sample_id="0042", meter_time="12/05/2025 14:03")
        await sim.emit(moisture_pct=12.05, lot="L-0002")
        await sim.emit(moisture_pct=75.0)  # out of range: printed, never a reading
        await sim.emit(moisture_pct=10.0, product="MILHO")
        events = await pump_ticket(reader, parser, has_readings(3))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert reasons(events) == ["out-of-range"]
    assert [s.sample_id for s in sim.sent] == ["0042", "0001", "0003"]
    assert all(s.ts_ns > 0 for s in sim.sent)


async def test_ticket_run_emits_every_interval(port: PtyPort) -> None:
    sim = TicketMeterSim(port, interval_s=0.05, moisture=[11.0, 11.5, 12.0], seed=2)
    parser = TicketParser()
    async with open_agent_side(port.path) as reader, asyncio.TaskGroup() as tg:
        tg.create_task(sim.run(), name="sim[ticket]")  # ends with its values
        events = await pump_ticket(reader, parser, has_readings(3))
    assert [m.fields["moisture_pct"] for m in readings(events)] == [11.0, 11.5, 12.0]
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]


async def test_ticket_plain_printer_without_extras(port: PtyPort) -> None:
    values = iter([10.25, 10.75, 11.25])
    sim = TicketMeterSim(
        port,
        interval_s=0.2,
        moisture=lambda: next(values, 11.0),  # a function: never runs dry
        product=None,
        header="",
        escpos=False,
        line_ending=b"\n",
        decimal_comma=False,
        extras=False,
        seed=12,
    )
    parser = TicketParser(TicketOptions(idle_gap_s=0.05))
    async with open_agent_side(port.path) as reader:
        parser.tick(asyncio.get_running_loop().time())
        await asyncio.sleep(0.1)  # quiet line first: the first ticket is known whole
        task = asyncio.create_task(sim.run(), name="sim[ticket]")
        events = await pump_ticket(reader, parser, has_readings(3))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    got = [ticket_view(m) for m in readings(events)]
    assert got == [sent_view(s) for s in sim.sent[:3]]
    assert [(s.moisture_pct, s.temperature_c, s.product) for s in sim.sent[:3]] == [
        (10.2, None, None),  # one decimal, exact halves to even (as Python formats)
        (10.8, None, None),
        (11.2, None, None),
    ]


async def test_ticket_random_walk_until_cancelled(port: PtyPort) -> None:
    sim = TicketMeterSim(port, interval_s=0.02, seed=4)
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        task = asyncio.create_task(sim.run(), name="sim[ticket]")
        events = await pump_ticket(reader, parser, has_readings(4))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    got = [ticket_view(m) for m in readings(events)]
    assert got == [sent_view(s) for s in sim.sent[: len(got)]]
    assert all(10.0 <= s.moisture_pct <= 14.0 for s in sim.sent)


async def test_ticket_garbage_between_tickets(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=5, knobs=Faults(garbage_prob=1.0))
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        for value in (10.5, 11.5, 12.5):
            await sim.emit(moisture_pct=value)
        events = await pump_ticket(reader, parser, has_readings(3))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert len(sim.sent) == 3
    assert reasons(events)  # the bursts were seen and dropped


async def test_ticket_wrong_baud(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=6, knobs=Faults(wrong_baud=True))
    parser = TicketParser(TicketOptions(idle_gap_s=0.1))
    async with open_agent_side(port.path) as reader:
        for value in (10.5, 11.5):
            assert await sim.emit(moisture_pct=value) is None
        events = await pump_ticket(reader, parser, lambda ev: bool(reasons(ev)))
        assert reasons(events) == ["framing-suspect"]
        sim.knobs = Faults()  # baud fixed on site
        await asyncio.sleep(0.15)  # the line is quiet before the next ticket
        await sim.emit(moisture_pct=12.5)
        events += await pump_ticket(reader, parser, has_readings(1))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert [s.moisture_pct for s in sim.sent] == [12.5]


async def test_ticket_partial_at_connect_is_not_a_reading(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=7, knobs=Faults(partial_at_connect=True))
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        loop = asyncio.get_running_loop()
        parser.tick(loop.time())  # as the agent does once the port is open
        await sim.emit(moisture_pct=11.0)  # the tail of a ticket, then a whole one
        await sim.emit(moisture_pct=12.0)
        events = await pump_ticket(reader, parser, has_readings(2))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert reasons(events) == ["partial"]


async def test_ticket_without_form_feed_ends_by_idle_gap(port: PtyPort) -> None:
    sim = TicketMeterSim(
        port,
        interval_s=0.3,
        moisture=[11.0, 11.5, 12.0],
        escpos=False,  # no ESC @ either: only silence separates tickets
        knobs=Faults(no_form_feed=True),
        seed=8,
    )
    parser = TicketParser(TicketOptions(idle_gap_s=0.1))
    async with open_agent_side(port.path) as reader:
        loop = asyncio.get_running_loop()
        parser.tick(loop.time())
        await asyncio.sleep(0.15)  # the meter is idle for a while after the port opens
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sim.run(), name="sim[ticket]")
            events = await pump_ticket(reader, parser, has_readings(3))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert reasons(events) == []


async def test_ticket_copies_are_reported_once(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=9, knobs=Faults(copies=3))
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        await sim.emit(moisture_pct=11.0)
        await sim.emit(moisture_pct=11.0)  # a new sample with the same value: not a copy
        events = await pump_ticket(reader, parser, lambda ev: len(ev) >= 6)
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert len(sim.sent) == 2
    assert reasons(events) == ["duplicate"] * 4


async def test_ticket_silent_meter_sends_nothing(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=10, knobs=Faults(silent=True))
    async with open_agent_side(port.path) as reader:
        assert await sim.emit(moisture_pct=11.0) is None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await read_some(reader)
    assert sim.sent == []
    assert port.written_bytes == 0


async def test_ticket_truncated_by_power_loss(port: PtyPort) -> None:
    sim = TicketMeterSim(port, seed=11, knobs=Faults(truncate_prob=1.0))
    parser = TicketParser()
    async with open_agent_side(port.path) as reader:
        assert await sim.emit(moisture_pct=11.0) is None
        assert await sim.emit(moisture_pct=11.5) is None
        sim.knobs = Faults()
        await sim.emit(moisture_pct=12.0)  # its ESC @ ends the cut one before it
        events = await pump_ticket(reader, parser, has_readings(1))
    assert [ticket_view(m) for m in readings(events)] == [sent_view(s) for s in sim.sent]
    assert [s.moisture_pct for s in sim.sent] == [12.0]
    assert set(reasons(events)) == {"no-moisture"}


# -- Tesma meter ------------------------------------------------------------------------------


async def test_tesma_readings_equal_sent(port: PtyPort) -> None:
    sim = TesmaMeterSim(port, seed=20)
    parser = TesmaParser()
    async with open_agent_side(port.path) as reader:
        for grain, value, frames in [
            ("MAIZ", 14.4, 3),
            ("SOJA", 12.04, 2),
            ("SOJA", 12.1, 1),
            ("MAIZ", 13.0, 2),
        ]:
            sim.set_value(grain, value)
            for _ in range(frames):
                await sim.emit()
        events = await pump_tesma(reader, parser, has_readings(3))
    assert [tesma_view(m) for m in readings(events)] == [
        (s.product, s.moisture_pct) for s in sim.sent
    ]
    assert [(s.product, s.moisture_pct) for s in sim.sent] == [
        ("MAIZ", 14.4),
        ("SOJA", 12.0),
        ("MAIZ", 13.0),
    ]


@pytest.mark.parametrize(
    "knobs",
    [
        Faults(flip_prob=0.3),
        Faults(truncate_prob=0.3),
        Faults(garbage_prob=0.5),
        Faults(partial_at_connect=True, flip_prob=0.2, truncate_prob=0.2, garbage_prob=0.2),
    ],
    ids=["flip", "truncate", "garbage", "all"],
)
async def test_tesma_faults_never_make_wrong_readings(port: PtyPort, knobs: Faults) -> None:
    sim = TesmaMeterSim(port, seed=21, knobs=knobs)
    parser = TesmaParser()
    async with open_agent_side(port.path) as reader:
        for i in range(60):
            if i % 4 == 0:
                sim.set_value("MAIZ" if i % 8 else "TRIGO", 10.0 + i / 10)
            await sim.emit()
        sim.knobs = Faults()
        await sim.emit()  # a clean last frame: a cut frame before it ends at its STX
        want = [(s.product, s.moisture_pct) for s in sim.sent]
        events = await pump_tesma(reader, parser, lambda ev: len(readings(ev)) >= len(want))
        # Whatever else is still in flight, it must not be a reading.
        with contextlib.suppress(TimeoutError):
            events += await pump_tesma(reader, parser, lambda ev: False, timeout_s=0.2)
    assert [tesma_view(m) for m in readings(events)] == want
    assert 3 <= len(want) <= 15
    assert reasons(events)


async def test_tesma_wrong_baud_and_silence(port: PtyPort) -> None:
    sim = TesmaMeterSim(port, seed=22, knobs=Faults(wrong_baud=True))
    parser = TesmaParser()
    async with open_agent_side(port.path) as reader:
        for _ in range(3):
            assert await sim.emit() is None
        sim.knobs = Faults(silent=True)
        assert await sim.emit() is None
        sim.knobs = Faults()
        await sim.emit()
        await sim.emit()
        events = await pump_tesma(reader, parser, has_readings(1))
    assert [tesma_view(m) for m in readings(events)] == [("MAIZ", 14.4)]
    assert reasons(events) == ["outside-frame"]  # the noise, reported at the first STX


async def test_tesma_run_with_a_moisture_source(port: PtyPort) -> None:
    sim = TesmaMeterSim(
        port, interval_s=0.01, moisture=[11.0, 11.5, 12.0], frames_per_sample=3, seed=23
    )
    parser = TesmaParser()
    async with open_agent_side(port.path) as reader, asyncio.TaskGroup() as tg:
        tg.create_task(sim.run(), name="sim[tesma]")
        events = await pump_tesma(reader, parser, has_readings(3))
    assert [tesma_view(m) for m in readings(events)] == [
        ("MAIZ", 11.0),
        ("MAIZ", 11.5),
        ("MAIZ", 12.0),
    ]
    assert [(s.product, s.moisture_pct) for s in sim.sent] == [
        ("MAIZ", 11.0),
        ("MAIZ", 11.5),
        ("MAIZ", 12.0),
    ]


async def test_tesma_replug_reports_the_value_again(port: PtyPort) -> None:
    sim = TesmaMeterSim(port, seed=24)
    async with open_agent_side(port.path) as reader:
        await sim.emit()
        await sim.emit()
        events = await pump_tesma(reader, TesmaParser(), has_readings(1))
        port.unplug()
        with pytest.raises((serial.SerialException, OSError)):
            await pump_tesma(reader, TesmaParser(), has_readings(1))
    await sim.emit()  # lost: unplugged
    port.replug()
    async with open_agent_side(port.path) as reader:
        await sim.emit()
        await sim.emit()
        events += await pump_tesma(reader, TesmaParser(), has_readings(1))
    # A new connection has a new parser, which reports the shown value again.
    assert [tesma_view(m) for m in readings(events)] == [("MAIZ", 14.4)] * 2
    assert [(s.product, s.moisture_pct) for s in sim.sent] == [("MAIZ", 14.4)] * 2
