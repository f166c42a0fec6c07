"""The Modbus bus scheduler: on a pty simulator through the real pymodbus client, and with
fake clients for the exception mapping and cancellation."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import serial
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse as PduException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadDiscreteInputsResponse, WriteSingleCoilResponse
from pymodbus.pdu.register_message import ReadInputRegistersResponse

from coffee_telemetry.agent.bus.rtu import (
    BusSpec,
    ExchangeFailed,
    Fault,
    RtuMaster,
    open_rtu_master,
    pymodbus_client,
)
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.hullers.bus import Block, BusPoller, DeviceError, UnitSpec, UnitState
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_ON,
    BitsResponse,
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    Request,
    Response,
    WriteCoilRequest,
    WriteCoilResponse,
    with_crc,
)
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, Faults, serve_rtu_bus
from tests.fakes import Answer, FakeModbusClient, PollRecorder

FC = FunctionCode
STATUS_PV = ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)


@asynccontextmanager
async def running(poller: BusPoller) -> AsyncIterator[asyncio.Task[None]]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(poller.run_loop(), name="bus[test]")
        try:
            yield task
        finally:
            task.cancel()


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPort]:
    with open_pty_port(link=tmp_path / "ttyRS485") as port:
        yield port


def fast_bus(path: str, **overrides: float) -> BusSpec:
    options: dict[str, float] = {
        "timeout_s": 0.1,
        "min_gap_s": 0.01,
        "reopen_initial_s": 0.1,
        "reopen_max_s": 0.3,
    }
    options.update(overrides)
    return BusSpec(
        path,
        timeout_s=options["timeout_s"],
        min_gap_s=options["min_gap_s"],
        reopen_initial_s=options["reopen_initial_s"],
        reopen_max_s=options["reopen_max_s"],
    )


def fast_unit(name: str, address: int, interval_s: float = 0.2, **kw: float) -> UnitSpec:
    return UnitSpec(
        name,
        address,
        poll_interval_s=interval_s,
        slow_interval_s=kw.get("slow_interval_s", 60.0),
        offline_after=int(kw.get("offline_after", 2)),
        backoff_max_s=kw.get("backoff_max_s", 0.6),
    )


# -- on a pty, through pymodbus -------------------------------------------------------


async def test_two_units_on_one_bus(pty: PtyPort) -> None:
    bags = CounterUnitSim(1, rate_per_s=20)
    hours = CounterUnitSim(2, mode=Mode.TIMER, pv=7200, running=False, display_code=3)
    rec = PollRecorder()
    units = [fast_unit("bags", 1), fast_unit("hours", 2)]
    poller = BusPoller(fast_bus(pty.path), units, on_event=rec)
    async with serve_rtu_bus(pty, [bags, hours]), running(poller):
        await rec.wait_for(lambda: len(rec.samples("bags")) >= 4 and len(rec.samples("hours")) >= 4)
    bag_samples = [s for _, s in rec.samples("bags")]
    hour_samples = [s for _, s in rec.samples("hours")]
    assert all(s.mode is Mode.COUNTER for s in bag_samples)
    pvs = [s.pv for s in bag_samples]
    assert pvs == sorted(pvs)
    assert pvs[-1] > pvs[0]
    assert {s.pv for s in hour_samples} == {7200}
    assert hour_samples[0].mode is Mode.TIMER
    # The first poll also reads the terminal inputs and the display unit; the next
    # ones do not (60 s apart).
    first = hour_samples[0]
    assert first.inputs is not None
    assert first.inputs.inhibit  # stopped
    assert first.display_code == 3
    assert all(s.inputs is None for s in hour_samples[1:])
    for name in ("bags", "hours"):
        stats = poller.stats[name]
        assert stats.state is UnitState.ONLINE
        assert stats.requests == stats.replies
        assert stats.timeouts == stats.crc_errors == stats.polls_failed == 0
        assert not rec.errors(name)
    assert bags.requests == poller.stats["bags"].requests


async def test_faults_are_counted(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, rate_per_s=0, pv=5)
    rec = PollRecorder()
    poller = BusPoller(fast_bus(pty.path), [fast_unit("bags", 1)], on_event=rec)
    stats = poller.stats["bags"]

    def faulted(fault: Fault) -> Callable[[], bool]:
        return lambda: any(e.fault is fault for e in rec.errors("bags"))

    async with serve_rtu_bus(pty, [unit]), running(poller):
        await rec.wait_for(lambda: bool(rec.samples("bags")))
        unit.faults = Faults(corrupt_crc=True)
        await rec.wait_for(faulted(Fault.BAD_CRC))
        assert stats.crc_errors >= 2  # the attempt and its retry
        unit.faults = Faults(wrong_unit=9)
        await rec.wait_for(faulted(Fault.WRONG_UNIT))
        assert stats.wrong_unit >= 1
        unit.faults = Faults(no_reply=True)
        await rec.wait_for(faulted(Fault.NO_RESPONSE))
        timeouts = stats.timeouts
        unit.faults = Faults(late_reply_s=0.25)  # beyond the 0.1 s timeout
        await rec.wait_for(lambda: stats.timeouts >= timeouts + 2)
        assert poller.stats["bags"].state is UnitState.OFFLINE
        unit.faults = Faults()
        count = len(rec.samples("bags"))
        await rec.wait_for(lambda: len(rec.samples("bags")) > count)
    assert stats.state is UnitState.ONLINE
    assert stats.consecutive_failures == 0
    assert stats.crc_error_ratio > 0
    errors = rec.errors("bags")
    assert all(e.retry_in_s is not None and e.retry_in_s > 0 for e in errors)
    assert any(e.offline for e in errors)
    assert stats.polls_failed == len(errors)


async def test_dead_unit_does_not_delay_the_other(pty: PtyPort) -> None:
    interval = 0.3
    healthy = CounterUnitSim(1, rate_per_s=5)
    dead = CounterUnitSim(2)
    dead.faults = Faults(no_reply=True)
    rec = PollRecorder()
    units = [
        fast_unit("healthy", 1, interval_s=interval),
        fast_unit("dead", 2, interval_s=interval, backoff_max_s=0.6),
    ]
    poller = BusPoller(fast_bus(pty.path), units, on_event=rec)
    async with serve_rtu_bus(pty, [healthy, dead]), running(poller):
        await rec.wait_for(lambda: len(rec.samples("healthy")) >= 12, timeout_s=10)
    times = [t for t, _ in rec.samples("healthy")]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    # A dead unit costs the bus one timed-out attempt at a time (about 0.1 s here),
    # never the healthy unit's slot: generous bounds, no tight timing.
    assert max(intervals) < 2 * interval
    assert statistics.mean(intervals) < 1.3 * interval
    dead_errors = rec.errors("dead")
    assert sum(e.offline for e in dead_errors) >= 2  # went offline and is still probed
    assert all(e.fault is Fault.NO_RESPONSE for e in dead_errors)
    assert poller.stats["dead"].state is UnitState.OFFLINE
    assert poller.stats["healthy"].polls_failed == 0


class NoInputs(CounterUnitSim):
    """A unit without terminal inputs (FC02) nor a lone display unit read: exception 02."""

    def handle(self, request: Request) -> Response:
        lone_display = isinstance(request, ReadRequest) and request.address == 0x03ED
        if request.function is FC.READ_DISCRETE_INPUTS or lone_display:
            return ExceptionResponse(self.address, request.function, 2)
        return super().handle(request)


async def test_exceptions_back_off_or_disable(pty: PtyPort) -> None:
    failing = CounterUnitSim(1)
    failing.faults = Faults(exception=ExceptionCode.SERVER_DEVICE_FAILURE)
    wrong = CounterUnitSim(2)
    wrong.faults = Faults(exception=ExceptionCode.ILLEGAL_DATA_ADDRESS)
    no_inputs = NoInputs(3, pv=9, rate_per_s=0)
    rec = PollRecorder()
    units = [
        fast_unit("failing", 1),
        fast_unit("wrong", 2),
        fast_unit("no-inputs", 3, slow_interval_s=0.2),
    ]
    poller = BusPoller(fast_bus(pty.path), units, on_event=rec)
    async with serve_rtu_bus(pty, [failing, wrong, no_inputs]), running(poller):
        await rec.wait_for(
            lambda: len(rec.errors("failing")) >= 2 and len(rec.samples("no-inputs")) >= 3
        )
    first = rec.errors("failing")[0]
    assert (first.fault, first.exception_code) == (Fault.DEVICE_FAILURE, 4)
    assert first.retry_in_s is not None
    assert poller.stats["failing"].exceptions[4] >= 2
    # 01/02/03: reported once, the block is given up; without the main block, the unit.
    (config,) = rec.errors("wrong")
    assert (config.fault, config.block, config.exception_code) == (Fault.CONFIG, Block.STATUS_PV, 2)
    assert wrong.requests == 1
    assert not rec.samples("wrong")
    given_up = [(e.fault, e.block) for e in rec.errors("no-inputs")]
    assert given_up == [(Fault.CONFIG, Block.INPUTS), (Fault.CONFIG, Block.DISPLAY_UNIT)]
    assert poller.stats["no-inputs"].disabled == {Block.INPUTS, Block.DISPLAY_UNIT}
    samples = [s for _, s in rec.samples("no-inputs")]
    assert all(s.inputs is None and s.pv == 9 and s.display_code == 0 for s in samples)
    assert no_inputs.requests == 2 + len(samples)  # each block refused once, then not asked


async def test_unplug_and_replug(pty: PtyPort) -> None:
    units = [CounterUnitSim(1, rate_per_s=10), CounterUnitSim(2, mode=Mode.TIMER)]
    rec = PollRecorder()
    poller = BusPoller(
        fast_bus(pty.path), [fast_unit("bags", 1), fast_unit("hours", 2)], on_event=rec
    )
    async with serve_rtu_bus(pty, units), running(poller):
        await rec.wait_for(lambda: len(rec.samples("bags")) >= 2 and bool(rec.samples("hours")))
        pty.unplug()
        await rec.wait_for(lambda: bool(rec.errors("bags")) and bool(rec.errors("hours")))
        assert [e.fault for e in rec.errors("bags") + rec.errors("hours")] == [Fault.PORT] * 2
        assert all(s.state is UnitState.OFFLINE for s in poller.stats.values())
        assert await poller.reset_counter("bags") == DeviceError(
            unit="bags",
            address=1,
            fault=Fault.PORT,
            detail=f"bus {pty.path} is not open",
            block=Block.RESET,
            offline=True,
        )
        await asyncio.sleep(0.4)  # a few reopen attempts against a missing path
        before = {name: len(rec.samples(name)) for name in ("bags", "hours")}
        pty.replug()
        await rec.wait_for(
            lambda: all(len(rec.samples(n)) > before[n] for n in ("bags", "hours")), timeout_s=5
        )
    assert all(s.state is UnitState.ONLINE for s in poller.stats.values())
    assert pty.opens == 2
    # One PORT event per unit per outage, not one per reopen attempt.
    assert len(rec.errors("bags")) == len(rec.errors("hours")) == 1


async def test_operator_reset(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, pv=5000, rate_per_s=0)
    rec = PollRecorder()
    poller = BusPoller(fast_bus(pty.path), [fast_unit("bags", 1)], on_event=rec)
    async with serve_rtu_bus(pty, [unit]), running(poller):
        await rec.wait_for(lambda: bool(rec.samples("bags")))
        assert await poller.reset_counter("bags") is None
        count = len(rec.samples("bags"))
        await rec.wait_for(lambda: len(rec.samples("bags")) > count)
        unit.faults = Faults(exception=ExceptionCode.SERVER_DEVICE_FAILURE)
        refused = await poller.reset_counter("bags")
        unit.faults = Faults(no_reply=True)
        silent = await poller.reset_counter("bags")
    assert unit.resets == 1
    assert rec.samples("bags")[0][1].pv == 5000
    assert rec.samples("bags")[-1][1].pv == 0
    assert refused is not None
    assert (refused.fault, refused.exception_code) == (Fault.DEVICE_FAILURE, 4)
    assert silent is not None
    assert silent.fault is Fault.NO_RESPONSE
    with pytest.raises(KeyError):
        await poller.reset_counter("nobody")


# -- the pymodbus boundary, with fake clients -----------------------------------------


def modbus_error(cls: type[ModbusException], text: str) -> ModbusException:
    return cls(text)  # their __init__ is unannotated; mypy accepts the call through type[]


def raising(exc: BaseException) -> Answer:
    async def answer(kind: str, address: int, unit: int) -> ModbusPDU:
        raise exc

    return answer


async def hang_like_pymodbus(kind: str, address: int, unit: int) -> ModbusPDU:
    # pymodbus 3.11 turns a cancellation from outside into this ModbusIOException.
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError as exc:
        raise modbus_error(ModbusIOException, "Request cancelled outside pymodbus.") from exc
    raise AssertionError("unreachable")


async def hang_converting_to_modbus_exception(kind: str, address: int, unit: int) -> ModbusPDU:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError as exc:
        raise modbus_error(ModbusException, "cancelled") from exc
    raise AssertionError("unreachable")


async def hang(kind: str, address: int, unit: int) -> ModbusPDU:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def good(kind: str, address: int, unit: int) -> ModbusPDU:
    pdu: ModbusPDU
    if kind == "fc04" and address == 0x03E8:
        pdu = ReadInputRegistersResponse(registers=[0x8000, 0, 0, 12, 0, 0])
    elif kind == "fc04":
        pdu = ReadInputRegistersResponse(registers=[0])
    elif kind == "fc02":
        pdu = ReadDiscreteInputsResponse(
            bits=[True, False, False, False, False, False, False, False]
        )
    else:
        pdu = WriteSingleCoilResponse(address=address, bits=[True])
    pdu.dev_id = unit
    return pdu


@asynccontextmanager
async def master_with(answer: Answer, timeout_s: float = 0.05) -> AsyncIterator[RtuMaster]:
    fake = FakeModbusClient(answer)
    async with open_rtu_master(
        BusSpec("/dev/fake", timeout_s=timeout_s), client_factory=fake.factory
    ) as master:
        assert fake.max_no_responses > 1000  # pymodbus must never close the bus itself
        yield master
    assert fake.closed


@pytest.mark.parametrize(
    "exc",
    [
        modbus_error(ConnectionException, "Not connected"),
        serial.SerialException("read failed: [Errno 5] Input/output error"),
        OSError(5, "Input/output error"),
    ],
)
async def test_port_exceptions_map_to_port_error(exc: Exception) -> None:
    async with master_with(raising(exc)) as master:
        with pytest.raises(PortError) as info:
            await master.request(STATUS_PV)
    assert info.value.__cause__ is exc
    assert info.value.port == "/dev/fake"


@pytest.mark.parametrize(
    "exc",
    [
        modbus_error(ModbusIOException, "Unable to decode request"),
        modbus_error(ModbusException, "Unknown response 7"),
    ],
)
async def test_other_modbus_exceptions_are_bad_replies(exc: Exception) -> None:
    async with master_with(raising(exc)) as master:
        with pytest.raises(ExchangeFailed) as info:
            await master.request(STATUS_PV)
    assert info.value.fault is Fault.BAD_REPLY


async def test_io_error_after_the_port_went_is_a_port_error() -> None:
    fake = FakeModbusClient(good)

    async def lose_port(kind: str, address: int, unit: int) -> ModbusPDU:
        fake.connected = False  # as pymodbus does when the transport drops mid-request
        raise modbus_error(ModbusIOException, "closing")

    fake.answer = lose_port
    async with open_rtu_master(BusSpec("/dev/fake"), client_factory=fake.factory) as master:
        with pytest.raises(PortError):
            await master.request(STATUS_PV)
        with pytest.raises(PortError):  # and it is not even tried again
            await master.request(STATUS_PV)
        fake.connected = True
        fake.trace_connect(False)
        assert master.lost.is_set()
        with pytest.raises(PortError):
            await master.request(STATUS_PV)
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("heard", "fault", "detail"),
    [
        (b"", Fault.NO_RESPONSE, "no reply"),
        # The reply to STATUS_PV with its last byte corrupted.
        (bytes.fromhex("01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 87"), Fault.BAD_CRC, "CRC"),
        (with_crc(bytes.fromhex("07 84 02")), Fault.WRONG_UNIT, "unit 7"),
        (bytes.fromhex("01 04 0C 80"), Fault.NO_RESPONSE, "no usable reply: 01 04 0c 80"),
    ],
)
async def test_silence_is_told_apart_by_what_was_heard(
    heard: bytes, fault: Fault, detail: str
) -> None:
    fake = FakeModbusClient(good)

    async def mumble(kind: str, address: int, unit: int) -> ModbusPDU:
        fake.trace_packet(True, b"request")
        # pymodbus shows the hook its receive buffer as it grows, chunk after chunk.
        for end in range(2, len(heard) + 2, 3):
            fake.trace_packet(False, heard[:end])
        return await hang(kind, address, unit)

    fake.answer = mumble
    async with open_rtu_master(
        BusSpec("/dev/fake", timeout_s=0.05), client_factory=fake.factory
    ) as master:
        with pytest.raises(ExchangeFailed) as info:
            await master.request(STATUS_PV)
    assert info.value.fault is fault
    assert detail in info.value.detail


@pytest.mark.parametrize("answer", [hang_like_pymodbus, hang])
async def test_timeout_is_no_response(answer: Answer) -> None:
    async with master_with(answer, timeout_s=0.05) as master:
        with pytest.raises(ExchangeFailed) as info:
            await master.request(STATUS_PV)
    assert info.value.fault is Fault.NO_RESPONSE


@pytest.mark.parametrize("answer", [hang_like_pymodbus, hang_converting_to_modbus_exception, hang])
async def test_cancellation_is_not_swallowed(answer: Answer) -> None:
    async with master_with(answer, timeout_s=30) as master:
        task = asyncio.create_task(master.request(STATUS_PV))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()


async def test_cancelling_the_poller_mid_request_ends_it() -> None:
    fake = FakeModbusClient(hang_like_pymodbus)
    poller = BusPoller(
        BusSpec("/dev/fake", timeout_s=30),
        [fast_unit("a", 1), fast_unit("b", 2)],
        on_event=PollRecorder(),
        client_factory=fake.factory,
    )
    task = asyncio.create_task(poller.run_loop())
    await asyncio.sleep(0.05)
    assert fake.calls
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert fake.closed


async def test_responses_are_converted() -> None:
    async with master_with(good) as master:
        assert await master.request(STATUS_PV) == RegistersResponse(
            1, FC.READ_INPUT_REGISTERS, (0x8000, 0, 0, 12, 0, 0)
        )
        inputs = await master.request(ReadRequest(2, FC.READ_DISCRETE_INPUTS, 0, 5))
        assert inputs == BitsResponse(2, FC.READ_DISCRETE_INPUTS, (True,) + (False,) * 7)
        reset = await master.request(WriteCoilRequest(3, 0, COIL_ON))
        assert reset == WriteCoilResponse(3, 0, COIL_ON)

    async def refuse(kind: str, address: int, unit: int) -> ModbusPDU:
        return PduException(4, 2, device_id=unit)

    async with master_with(refuse) as master:
        assert await master.request(STATUS_PV) == ExceptionResponse(1, 4, 2)
        with pytest.raises(ValueError, match="does not send"):
            await master.request(ReadRequest(1, FC.READ_HOLDING_REGISTERS, 0, 1))


async def test_port_that_will_not_open() -> None:
    fake = FakeModbusClient(good, connects=False)
    with pytest.raises(PortError, match="cannot open"):
        async with open_rtu_master(BusSpec("/dev/fake"), client_factory=fake.factory):
            pass
    assert fake.closed

    class Exploding(FakeModbusClient):
        async def connect(self) -> bool:
            raise serial.SerialException("could not open port")

    exploding = Exploding(good)
    with pytest.raises(PortError, match="could not open port"):
        async with open_rtu_master(BusSpec("/dev/fake"), client_factory=exploding.factory):
            pass


async def test_requests_keep_the_minimum_gap() -> None:
    fake = FakeModbusClient(good)
    rec = PollRecorder()
    poller = BusPoller(
        BusSpec("/dev/fake", min_gap_s=0.05),
        [fast_unit("a", 1), fast_unit("b", 2), fast_unit("c", 3)],
        on_event=rec,
        client_factory=fake.factory,
    )
    async with running(poller):
        await rec.wait_for(lambda: len(fake.calls) >= 12)
    starts = [t for t, _, _ in fake.calls]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045
    first = rec.samples("a")[0][1]
    assert first.pv == 12
    assert first.inputs is not None
    assert first.inputs.ina


def replying(pdu: ModbusPDU) -> Answer:
    async def answer(kind: str, address: int, unit: int) -> ModbusPDU:
        pdu.dev_id = unit
        return pdu

    return answer


@pytest.mark.parametrize(
    ("answer", "fault", "detail"),
    [
        # 7 registers for 6, and a PV a six-digit display cannot show.
        (
            replying(ReadInputRegistersResponse(registers=[0x8000, 0, 0, 0, 0, 0, 0])),
            Fault.BAD_REPLY,
            "wrong-count",
        ),
        (
            replying(ReadInputRegistersResponse(registers=[0x8000, 0, 0, 0x4240, 0x000F, 0])),
            Fault.BAD_REPLY,
            "pv-out-of-range",
        ),
        (raising(modbus_error(ModbusException, "Unknown response 9")), Fault.BAD_REPLY, "9"),
        (replying(PduException(4, 0x42)), Fault.DEVICE_FAILURE, "exception 66 reading"),
        (replying(PduException(4, 6)), Fault.DEVICE_FAILURE, "06 SERVER_DEVICE_BUSY"),
    ],
)
async def test_failed_polls(answer: Answer, fault: Fault, detail: str) -> None:
    fake = FakeModbusClient(answer)
    rec = PollRecorder()
    poller = BusPoller(
        BusSpec("/dev/fake"), [fast_unit("a", 1)], on_event=rec, client_factory=fake.factory
    )
    async with running(poller):
        await rec.wait_for(lambda: bool(rec.errors("a")))
    error = rec.errors("a")[0]
    assert error.fault is fault
    assert detail in error.detail
    assert not rec.samples("a")


async def test_reset_when_the_port_goes_mid_request() -> None:
    fake = FakeModbusClient(good)
    rec = PollRecorder()
    poller = BusPoller(
        BusSpec("/dev/fake"), [fast_unit("a", 1)], on_event=rec, client_factory=fake.factory
    )
    async with running(poller):
        await rec.wait_for(lambda: bool(rec.samples("a")))
        fake.answer = raising(modbus_error(ConnectionException, "Not connected"))
        refused = await poller.reset_counter("a")
    assert refused is not None
    assert (refused.fault, refused.block) == (Fault.PORT, Block.RESET)


def test_real_client_factory_builds_a_pymodbus_client() -> None:
    async def build() -> None:
        client = pymodbus_client(
            BusSpec("/dev/does-not-exist"),
            trace_packet=lambda s, d: d,
            trace_connect=lambda up: None,
        )
        assert not client.connected
        client.close()

    asyncio.run(build())


@pytest.mark.parametrize(
    "make",
    [
        lambda: BusSpec("/dev/x", timeout_s=0),
        lambda: BusSpec("/dev/x", retries=-1),
        lambda: BusSpec("/dev/x", reopen_initial_s=5, reopen_max_s=1),
        lambda: UnitSpec("u", 0),
        lambda: UnitSpec("u", 248),
        lambda: UnitSpec("u", 1, poll_interval_s=0),
        lambda: UnitSpec("u", 1, offline_after=0),
        lambda: UnitSpec("u", 1, poll_interval_s=10, backoff_max_s=5),
    ],
)
def test_specs_are_checked(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        make()


async def test_units_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="two units named"):
        BusPoller(BusSpec("/dev/x"), [UnitSpec("a", 1), UnitSpec("a", 2)], on_event=PollRecorder())
    with pytest.raises(ValueError, match="two units at address"):
        BusPoller(BusSpec("/dev/x"), [UnitSpec("a", 1), UnitSpec("b", 1)], on_event=PollRecorder())
    assert BusSpec("/dev/x").name == "/dev/x"
    assert BusSpec("/dev/x", name="rs485-a").name == "rs485-a"
    assert BusSpec("/dev/x").serial.stopbits == 2
