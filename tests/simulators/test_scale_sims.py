"""Scale simulators on real pseudo-terminals, driven through pyserial and the drivers.

Each test opens ``port.path`` as the agent opens ``/dev/ttyUSB0`` (pyserial-asyncio-fast,
9600 8N1). For the MT-SICS balance, ``drive`` is the agent's request/response loop in
miniature: wait for bytes until ``client.next_deadline()``, feed them, ``tick``, write
what ``poll`` returns, all on the loop's monotonic clock. For the Toledo indicator the
bytes go into the parser as they come. Then what the parser reports is compared with
what the simulator says it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path

import pytest
import serial
import serial_asyncio_fast

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.scale_mtsics import (
    DeviceReply,
    MtSicsClient,
    MtSicsEvent,
    NoResponse,
    ProtocolError,
    State,
)
from coffee_telemetry.drivers.scale_toledo import ToledoParser
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.scales import (
    BalanceFaults,
    MtSicsBalanceSim,
    StreamFaults,
    ToledoStreamSim,
)

Until = Callable[[list[MtSicsEvent]], bool]
Link = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def port(tmp_path: Path) -> Iterator[PtyPort]:
    with open_pty_port(link=tmp_path / "ttyUSB-scale") as pty_port:
        yield pty_port


@contextlib.asynccontextmanager
async def open_agent_side(path: str) -> AsyncIterator[Link]:
    """Open the slave the way the agent does, and close it afterwards."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=9600)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def running(sim: MtSicsBalanceSim) -> AsyncIterator[MtSicsBalanceSim]:
    """The balance answering in the background for the duration of the block."""
    task = asyncio.create_task(sim.run(), name="sim[balance]")
    try:
        yield sim
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_some(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(4096)
    if not data:
        raise EOFError("port closed")
    return data


async def drive(
    client: MtSicsClient, link: Link, until: Until, *, timeout_s: float = 5.0
) -> list[MtSicsEvent]:
    """The agent's loop for a request/response device, until ``until(events)``."""
    reader, writer = link
    loop = asyncio.get_running_loop()
    events: list[MtSicsEvent] = []
    async with asyncio.timeout(timeout_s):
        while not until(events):
            data = b""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(client.next_deadline()):
                    data = await read_some(reader)
            now = loop.time()
            if data:
                client.receive_data(data, now)
            client.tick(now)
            events += client.events()
            if (out := client.poll(now)) is not None:
                writer.write(out)
    return events


def weights(events: list[MtSicsEvent] | list[Measurement | Discarded]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement) and e.measurement == "scale"]


def replies(events: list[MtSicsEvent]) -> list[DeviceReply]:
    return [e for e in events if isinstance(e, DeviceReply)]


def count(kind: type[object], n: int) -> Until:
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def stable_weight(kg: float) -> Until:
    return lambda events: any(
        m.fields.get("weight_kg") == kg and m.fields["stable"] for m in weights(events)
    )


def fast_client(**options: object) -> MtSicsClient:
    defaults: dict[str, object] = {"poll_s": 0.05, "republish_s": 0.0, "retry_s": 0.05}
    return MtSicsClient(**(defaults | options))  # type: ignore[arg-type]


async def idle(client: MtSicsClient, link: Link) -> None:
    """Let the first automatic SI go out and come back (tests that use this poll rarely)."""
    await drive(client, link, lambda ev: client.frames_ok > 0 and client.in_flight is None)


# -- MT-SICS balance ----------------------------------------------------------------------


async def test_start_identity_then_polled_weights_equal_what_was_sent(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, unit="g", serial="B0123", model="XS205")
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client()
        link[1].write(client.start(asyncio.get_running_loop().time()))
        sim.load(1.25)
        events = await drive(client, link, count(DeviceReply, 2))
        sim.settle()
        events += await drive(client, link, stable_weight(1.25))
    assert replies(events)[:2] == [
        DeviceReply("I4", "A", b"@\r\n", text="B0123"),
        DeviceReply("I2", "A", b"I2\r\n", text="XS205 10000.00 g"),
    ]
    published = weights(events)
    assert all(m.tags["unit_raw"] == "g" for m in published)
    sent = [s.weight_kg for s in sim.sent if s.status == "S"]
    # Unstable (D) replies are not published; each stable one is, in order.
    assert [m.fields["weight_kg"] for m in published] == sent[: len(published)]
    assert sim.commands[:2] == ["@", "I2"]
    assert set(sim.commands[2:]) == {"SI"}


async def test_dynamic_weights_are_published_when_asked(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, seed=1)
    sim.load(3.0)
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(publish_unstable=True)
        events = await drive(client, link, lambda ev: len(weights(ev)) >= 4)
    published = weights(events)
    assert {m.fields["quality"] for m in published} == {"unstable"}
    assert [m.fields["weight_kg"] for m in published] == [
        s.weight_kg for s in sim.sent[: len(published)]
    ]


async def test_stable_weight_waits_for_the_balance_to_settle(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0)
    sim.load(2.0)
    loop = asyncio.get_running_loop()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(poll_s=60.0)
        await idle(client, link)
        started = loop.time()
        link[1].write(client.command("S", started))
        loop.call_later(0.2, sim.settle)
        await drive(client, link, stable_weight(2.0))
    assert loop.time() - started >= 0.2
    assert [s.status for s in sim.sent][-1] == "S"
    assert client.state is State.IDLE


async def test_a_balance_that_never_settles_answers_busy_and_the_client_gives_up(
    port: PtyPort,
) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, stability_timeout_s=0.1)
    sim.load(2.0)
    loop = asyncio.get_running_loop()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(poll_s=60.0, max_retries=2)
        await idle(client, link)
        link[1].write(client.command("S", loop.time()))
        events = await drive(client, link, count(DeviceReply, 1))
    assert replies(events) == [DeviceReply("S", "I", b"S\r\n")]
    assert sim.commands[-3:] == ["S", "S", "S"]  # the first try and two retries


async def test_sir_streams_until_a_command_and_comes_back(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, sir_rate_hz=50.0)
    sim.load(3.0)
    sim.settle()
    loop = asyncio.get_running_loop()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(mode="stream")
        streamed = await drive(client, link, lambda ev: len(weights(ev)) >= 10)
        assert client.state is State.STREAMING
        link[1].write(client.command("T", loop.time()))
        events = await drive(client, link, count(DeviceReply, 1))
        events += await drive(client, link, lambda ev: len(weights(ev)) >= 3)
    assert {m.fields["weight_kg"] for m in weights(streamed)} == {3.0}
    assert replies(events) == [DeviceReply("T", "S", b"T\r\n", weight_kg=3.0)]
    assert weights(events)[-1].fields["weight_kg"] == 0.0  # the net weight after the tare
    assert sim.commands[:3] == ["SIR", "T", "SIR"]
    assert sim.tare_kg == 3.0


async def test_zero_only_when_stable_and_near_zero(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0)
    loop = asyncio.get_running_loop()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(poll_s=60.0, retry_s=0.1, max_retries=5)
        await idle(client, link)
        sim.load(0.15)  # within 2 % of 10 kg, still moving
        link[1].write(client.command("Z", loop.time()))
        loop.call_later(0.15, sim.settle)
        events = await drive(client, link, count(DeviceReply, 1))
        assert replies(events) == [DeviceReply("Z", "A", b"Z\r\n")]
        assert sim.zero_offset_kg == 0.15
        assert sim.commands.count("Z") >= 2  # Z I first, then Z A after settling

        sim.load(5.0)
        sim.settle()
        link[1].write(client.command("Z", loop.time()))
        events = await drive(client, link, count(DeviceReply, 1))
    assert replies(events) == [DeviceReply("Z", "I", b"Z\r\n")]
    assert sim.zero_offset_kg == 0.15


async def test_tare_commands(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, unit="lb", decimals=3)
    sim.load(0.45359237)
    sim.settle()
    loop = asyncio.get_running_loop()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(poll_s=60.0)
        await idle(client, link)
        got: list[DeviceReply] = []
        for name in ("T", "TA", "TAC", "TA", "TI", "ZI"):
            link[1].write(client.command(name, loop.time()))
            got += replies(await drive(client, link, count(DeviceReply, 1)))
    assert got == [
        DeviceReply("T", "S", b"T\r\n", weight_kg=0.45359237),
        DeviceReply("TA", "A", b"TA\r\n", weight_kg=0.45359237),
        DeviceReply("TAC", "A", b"TAC\r\n"),
        DeviceReply("TA", "A", b"TA\r\n", weight_kg=0.0),
        DeviceReply("TI", "S", b"TI\r\n", weight_kg=0.45359237),
        DeviceReply("ZI", "I", b"ZI\r\n"),  # 1 lb is over 2 % of 10 kg
    ]


async def test_overload_and_underload(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, underload_kg=0.5)
    sim.load(12.0)
    sim.settle()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client()
        events = await drive(client, link, lambda ev: len(weights(ev)) >= 1)
        sim.load(-1.0)
        sim.settle()
        events += await drive(
            client, link, lambda ev: any(m.fields["quality"] == "underload" for m in weights(ev))
        )
        loop = asyncio.get_running_loop()
        await drive(client, link, lambda ev: not client.in_flight)
        link[1].write(client.command("T", loop.time()))
        events += await drive(client, link, count(DeviceReply, 1))
    assert weights(events)[0].fields == {"stable": False, "quality": "overload"}
    assert replies(events) == [DeviceReply("T", "-", b"T\r\n")]


async def test_unknown_and_malformed_commands(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0)
    async with running(sim), open_agent_side(port.path) as (reader, writer):
        client = MtSicsClient()  # not polling: only what the balance says unasked
        writer.write(b"FOO\r\n\r\nS\xff\r\nS\xfe\r\n")
        events: list[MtSicsEvent] = []
        async with asyncio.timeout(5):
            while len(events) < 3:
                client.receive_data(await read_some(reader), 0.0)
                events += client.events()
    assert events == [
        ProtocolError("ES"),
        ProtocolError("ET"),
        ProtocolError("ET", suspect_link=True),
    ]
    assert sim.commands == ["ES", "ET", "ET"]


async def test_garbage_and_echo_do_not_change_the_readings(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0, seed=5)
    sim.knobs = BalanceFaults(garbage_prob=0.5, echo=True)
    sim.load(4.2)
    sim.settle()
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client()
        events = await drive(client, link, lambda ev: len(weights(ev)) >= 8)
    assert {m.fields["weight_kg"] for m in weights(events)} == {4.2}
    assert client.echoes >= 8
    assert client.frames_discarded > 0
    assert {e.reason for e in events if isinstance(e, Discarded)} <= {
        "framing-suspect",
        "bad-reply",
        "bad-weight",
        "unknown-unit",
    }


async def test_busy_knob_and_silence(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0)
    sim.knobs = BalanceFaults(busy=True)
    async with running(sim), open_agent_side(port.path) as link:
        client = fast_client(max_retries=1, reply_timeout_s=0.2)
        events = await drive(client, link, count(DeviceReply, 1))
        assert replies(events) == [DeviceReply("S", "I", b"SI\r\n")]
        sim.knobs = BalanceFaults(no_reply=True)
        events = await drive(client, link, count(NoResponse, 2))
    assert [e for e in events if isinstance(e, NoResponse)][:2] == [NoResponse(b"SI\r\n")] * 2


async def test_unplug_breaks_the_link_and_a_new_client_starts_over(port: PtyPort) -> None:
    sim = MtSicsBalanceSim(port, capacity_kg=10.0)
    sim.load(1.0)
    sim.settle()
    loop = asyncio.get_running_loop()
    async with running(sim):
        async with open_agent_side(port.path) as link:
            client = fast_client()
            await drive(client, link, lambda ev: len(weights(ev)) >= 2)
            port.unplug()
            with pytest.raises((serial.SerialException, OSError, EOFError)) as failure:
                await drive(client, link, lambda ev: False, timeout_s=2.0)
            assert not isinstance(failure.value, TimeoutError)
        await asyncio.sleep(0.05)
        port.replug()
        async with open_agent_side(port.path) as link:
            client = fast_client()  # the agent makes a new driver per connection
            link[1].write(client.start(loop.time()))
            events = await drive(client, link, lambda ev: len(weights(ev)) >= 1)
    assert replies(events)[0] == DeviceReply("I4", "A", b"@\r\n", text="B123456789")
    assert weights(events)[0].fields["weight_kg"] == 1.0
    assert "@" in sim.commands


# -- Toledo continuous indicator -----------------------------------------------------------


async def pump_until_quiet(
    reader: asyncio.StreamReader, parser: ToledoParser, *, quiet_s: float = 0.4
) -> list[Measurement | Discarded]:
    """Feed what arrives until the line has been quiet for ``quiet_s``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(20):
        while True:
            try:
                async with asyncio.timeout(quiet_s):
                    data = await read_some(reader)
            except TimeoutError:
                break
            parser.receive_data(data, loop.time())
    parser.tick(loop.time() + 1.0)  # a frame held for its checksum ends in the silence
    return parser.events()


async def play(
    sim: ToledoStreamSim,
    parser: ToledoParser,
    script: Callable[[], Coroutine[object, object, None]],
) -> list[Measurement | Discarded]:
    """Run ``script`` on the simulator while the parser reads the pty."""
    async with open_agent_side(sim.port.path) as (reader, _), asyncio.TaskGroup() as tg:
        tg.create_task(script(), name="sim[toledo]")
        events = await pump_until_quiet(reader, parser)
    return events


def weighment_view(events: list[Measurement | Discarded]) -> list[tuple[object, ...]]:
    return [
        (e.fields["weight_kg"], e.fields["tare_kg"], e.tags["trigger"])
        for e in events
        if isinstance(e, Measurement) and e.measurement == "weighment"
    ]


async def test_weighment_with_a_print_pulse(port: PtyPort) -> None:
    # The print pulse comes 0.2 s into the rest, well before a rest counts (1 s).
    sim = ToledoStreamSim(port, rate_hz=50.0, auto_weighment_s=1.0, seed=2)
    parser = ToledoParser(weighment_stable_s=1.0)

    async def script() -> None:
        await sim.weigh(120.5, motion_s=0.2, stable_s=0.2, rest_s=0.2)

    events = await play(sim, parser, script)
    assert weighment_view(events) == [(w.weight_kg, w.tare_kg, w.trigger) for w in sim.weighments]
    assert [w.trigger for w in sim.weighments] == ["print"]
    assert parser.frames_ok == sum(f.valid for f in sim.sent) == len(sim.sent)
    assert parser.frames_discarded == 0
    assert weights(events)[-1].fields["weight_kg"] == 0.0  # unloaded


async def test_weighment_by_resting_load_with_tare(port: PtyPort) -> None:
    sim = ToledoStreamSim(port, rate_hz=50.0, auto_weighment_s=0.3, pad_spaces=3)
    parser = ToledoParser(weighment_stable_s=0.3)

    async def script() -> None:
        await sim.weigh(80.0, tare=12.5, motion_s=0.2, stable_s=0.6, print_pulse=False, rest_s=0.2)
        # Rests long enough, then prints: still one weighment.
        await sim.weigh(60.0, motion_s=0.2, stable_s=0.6, rest_s=0.2)

    events = await play(sim, parser, script)
    assert weighment_view(events) == [(80.0, 12.5, "stable"), (60.0, 0.0, "stable")]
    assert weighment_view(events) == [(w.weight_kg, w.tare_kg, w.trigger) for w in sim.weighments]
    nets = {m.fields["net"] for m in weights(events) if m.fields.get("tare_kg") == 12.5}
    assert nets == {True}


async def test_faulty_line_loses_only_the_damaged_frames(port: PtyPort) -> None:
    sim = ToledoStreamSim(port, rate_hz=100.0, checksum=True, seed=11)
    sim.knobs = StreamFaults(bad_checksum_prob=0.15, truncate_prob=0.15, parity_noise=True)
    parser = ToledoParser(republish_s=0.0)

    async def script() -> None:
        sim.weight = 42.42
        await sim.hold(0.6)
        sim.knobs = StreamFaults()  # clean frames last: a cut frame ends at the next STX
        await sim.hold(0.05)

    events = await play(sim, parser, script)
    valid = sum(f.valid for f in sim.sent)
    assert 0 < valid < len(sim.sent)
    assert parser.frames_ok == valid
    assert parser.frames_discarded == len(sim.sent) - valid
    assert {e.reason for e in events if isinstance(e, Discarded)} <= {"bad-checksum", "truncated"}
    assert {m.fields["weight_kg"] for m in weights(events)} == {42.42}


async def test_no_checksum_and_space_padding_in_auto_mode(port: PtyPort) -> None:
    sim = ToledoStreamSim(port, rate_hz=100.0, checksum=False, pad_spaces=6, unit="lb")
    sim.knobs = StreamFaults(truncate_prob=0.2, parity_noise=True)
    parser = ToledoParser(republish_s=0.0)

    async def script() -> None:
        sim.weight = 7.5
        await sim.hold(0.5)
        sim.knobs = StreamFaults(silent=True)
        await sim.hold(0.1)

    events = await play(sim, parser, script)
    sent = [f for f in sim.sent if f.weight == 7.5]
    assert parser.frames_ok == sum(f.valid for f in sent)
    assert {m.fields["weight_kg"] for m in weights(events)} == {round(7.5 * 0.45359237, 9)}
    assert {m.tags["unit_raw"] for m in weights(events)} == {"lb"}


async def test_run_weighs_loads_until_cancelled(port: PtyPort) -> None:
    sim = ToledoStreamSim(port, rate_hz=100.0, seed=4)
    parser = ToledoParser()
    async with open_agent_side(port.path) as (reader, _):
        task = asyncio.create_task(sim.run(), name="sim[toledo]")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            while parser.frames_ok < 30:
                parser.receive_data(await read_some(reader), loop.time())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert any(f.motion for f in sim.sent)
    assert weights(parser.events())


def test_simulator_refuses_settings_the_protocol_cannot_express(port: PtyPort) -> None:
    with pytest.raises(ValueError, match="unit"):
        MtSicsBalanceSim(port, capacity_kg=1.0, unit="ct")
    with pytest.raises(DriverUsageError):
        ToledoStreamSim(port, decimals=7)
