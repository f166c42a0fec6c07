"""The RTU counter simulator: its units alone, then on a pty through pymodbus and raw bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from coffee_telemetry.agent.config import SerialSettings
from coffee_telemetry.agent.devices.ports import SerialPort, open_serial_port
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.drivers.counter_autonics_ct import CounterSample, Mode, decode_status_pv
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_OFF,
    COIL_ON,
    BitsResponse,
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    OtherRequest,
    ReadRequest,
    RegistersResponse,
    WriteCoilRequest,
    WriteCoilResponse,
    encode_read_request,
    encode_response,
)
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, Faults, RtuBusSim, serve_rtu_bus
from tests.fakes import ManualClock

FC = FunctionCode
H = bytes.fromhex
LINE = SerialSettings(baudrate=9600, parity="N", stopbits=2)  # the CT default, 8N2
STATUS_PV = ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)


def pv_of(unit: CounterUnitSim) -> int:
    response = unit.handle(ReadRequest(unit.address, FC.READ_INPUT_REGISTERS, 0x03E8, 6))
    assert isinstance(response, RegistersResponse)
    sample = decode_status_pv(response.registers)
    assert isinstance(sample, CounterSample)
    return sample.pv


# -- a unit alone ----------------------------------------------------------------------


def test_spec_vector_from_the_unit() -> None:
    unit = CounterUnitSim(1, pv=123456, rate_per_s=0, preset1=100000)
    response = unit.handle(STATUS_PV)
    assert encode_response(response) == H("01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86")


def test_counter_counts_while_running() -> None:
    clock = ManualClock(1000.0)
    unit = CounterUnitSim(1, rate_per_s=2.0, clock=clock)
    clock.now += 10
    assert pv_of(unit) == 20
    unit.set_running(False)
    clock.now += 10
    assert pv_of(unit) == 20
    assert unit.inputs().inhibit
    unit.set_running(True)
    clock.now += 1.4
    assert pv_of(unit) == 22


def test_timer_accumulates_run_seconds_over_run_stop_cycles() -> None:
    clock = ManualClock(1000.0)
    unit = CounterUnitSim(2, mode=Mode.TIMER, run_cycle_s=(2.0, 1.0), clock=clock)
    assert unit.running
    clock.now += 2.5
    assert not unit.running
    assert unit.inputs().inhibit
    clock.now += 3.5  # 6 s: two whole cycles
    assert pv_of(unit) == 4
    response = unit.handle(STATUS_PV)
    assert isinstance(response, RegistersResponse)
    assert response.registers[0] & 0xC000 == 0x4000  # TMR mode


def test_counter_wraps_after_999999() -> None:
    clock = ManualClock(1000.0)
    unit = CounterUnitSim(1, pv=999998, rate_per_s=1.0, clock=clock)
    clock.now += 1
    assert pv_of(unit) == 999999
    clock.now += 3
    assert pv_of(unit) == 2


def test_front_panel_reset_and_fc05_reset() -> None:
    clock = ManualClock(1000.0)
    unit = CounterUnitSim(1, pv=500, rate_per_s=0, batch_pv=9, clock=clock)
    unit.front_panel_reset()
    assert pv_of(unit) == 0
    unit.set_pv(77)
    reset = WriteCoilRequest(1, 0x0000, COIL_ON)
    assert unit.handle(reset) == WriteCoilResponse(1, 0, COIL_ON)
    assert pv_of(unit) == 0
    assert unit.resets == 2
    assert unit.handle(WriteCoilRequest(1, 0x0004, COIL_ON)) == WriteCoilResponse(1, 4, COIL_ON)
    assert unit.batch_pv == 0
    unit.set_pv(5)
    assert unit.handle(WriteCoilRequest(1, 0x0000, COIL_OFF)) == WriteCoilResponse(1, 0, COIL_OFF)
    assert pv_of(unit) == 5  # writing "off" to a reset coil does nothing


def test_coils_and_inputs() -> None:
    unit = CounterUnitSim(3, pv=10, rate_per_s=0, preset1=5, preset2=20, running=False)
    assert unit.handle(ReadRequest(3, FC.READ_COILS, 0, 5)) == BitsResponse(
        3, FC.READ_COILS, (False, False, True, False, False)
    )
    assert unit.handle(ReadRequest(3, FC.READ_DISCRETE_INPUTS, 0, 5)) == BitsResponse(
        3, FC.READ_DISCRETE_INPUTS, (False, False, True, False, False)
    )


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (ReadRequest(1, FC.READ_HOLDING_REGISTERS, 0, 1), ExceptionCode.ILLEGAL_FUNCTION),
        (OtherRequest(1, 6, H("00 00 00 01")), ExceptionCode.ILLEGAL_FUNCTION),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x2000, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03F4, 2), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E7, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 0), ExceptionCode.ILLEGAL_DATA_VALUE),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 126), ExceptionCode.ILLEGAL_DATA_VALUE),
        (ReadRequest(1, FC.READ_DISCRETE_INPUTS, 0, 6), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (WriteCoilRequest(1, 0, 0x1234), ExceptionCode.ILLEGAL_DATA_VALUE),
        (WriteCoilRequest(1, 2, COIL_ON), ExceptionCode.ILLEGAL_DATA_ADDRESS),
    ],
)
def test_exceptions(request_: ReadRequest | WriteCoilRequest | OtherRequest, code: int) -> None:
    response = CounterUnitSim(1).handle(request_)
    assert isinstance(response, ExceptionResponse)
    assert (response.function, response.code) == (request_.function, code)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="address"):
        CounterUnitSim(0)
    with pytest.raises(ValueError, match="pv"):
        CounterUnitSim(1, mode=Mode.TIMER, pv=-1)
    with pytest.raises(ValueError, match="batch_pv"):
        CounterUnitSim(1, batch_pv=1_000_000)
    with pytest.raises(ValueError, match="run_cycle_s"):
        CounterUnitSim(1, run_cycle_s=(0.0, 0.0))
    with pytest.raises(ValueError, match="two units"):
        RtuBusSim(PtyPort(), [CounterUnitSim(1), CounterUnitSim(1)])


# -- on a pty --------------------------------------------------------------------------


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPort]:
    with open_pty_port(link=tmp_path / "ttyRS485") as port:
        yield port


class Trace:
    """pymodbus' trace hook: what it sent, and its receive buffer as it grew."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def __call__(self, sending: bool, data: bytes) -> bytes:
        (self.sent if sending else self.received).append(data)
        return data


@asynccontextmanager
async def pymodbus_on(
    path: str, trace: Trace | None = None
) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        path,
        baudrate=LINE.baudrate,
        stopbits=LINE.stopbits,
        timeout=0.3,
        retries=0,
        reconnect_delay=0,
        trace_packet=trace,
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def raw_port(path: str) -> AsyncIterator[SerialPort]:
    async with open_serial_port(device="master", path=path, settings=LINE) as port:
        yield port


async def read_for(port: SerialPort, seconds: float) -> bytes:
    """Everything the port receives within ``seconds``."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                data += await port.read()
        except TimeoutError:
            return data


async def test_spec_exchanges_through_pymodbus(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, pv=123456, rate_per_s=0, preset1=100000)
    trace = Trace()
    async with serve_rtu_bus(pty, [unit]), pymodbus_on(pty.path, trace) as client:
        rsp: ModbusPDU = await client.read_input_registers(0x03E8, count=6, device_id=1)
        assert rsp.registers == [0x8080, 0, 0, 0xE240, 0x0001, 0]
        assert trace.sent[-1] == H("01 04 03 E8 00 06 F0 78")
        assert trace.received[-1] == H("01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86")

        rsp = await client.read_input_registers(0x2000, count=1, device_id=1)
        assert rsp.isError()
        assert rsp.exception_code == ExceptionCode.ILLEGAL_DATA_ADDRESS
        assert trace.sent[-1] == H("01 04 20 00 00 01 3A 0A")
        assert trace.received[-1] == H("01 84 02 C2 C1")

        rsp = await client.write_coil(0, True, device_id=1)
        assert rsp.bits[0]
        assert trace.sent[-1] == trace.received[-1] == H("01 05 00 00 FF 00 8C 3A")
        assert unit.resets == 1

        rsp = await client.read_holding_registers(0, count=1, device_id=1)
        assert rsp.exception_code == ExceptionCode.ILLEGAL_FUNCTION


async def test_two_units_share_the_pty(pty: PtyPort) -> None:
    bags = CounterUnitSim(1, pv=10, rate_per_s=0)
    hours = CounterUnitSim(2, mode=Mode.TIMER, pv=3600, running=False)
    async with serve_rtu_bus(pty, [bags, hours]) as sim, pymodbus_on(pty.path) as client:
        one = await client.read_input_registers(0x03E8, count=6, device_id=1)
        two = await client.read_input_registers(0x03E8, count=6, device_id=2)
        inputs = await client.read_discrete_inputs(0, count=5, device_id=2)
        assert decode_status_pv(one.registers) == CounterSample(0x8000, 0, 10, 0)
        assert decode_status_pv(two.registers) == CounterSample(0x4000, 0, 3600, 0)
        assert inputs.bits[:5] == [False, False, True, False, False]  # stopped: INHIBIT
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x03E8, count=6, device_id=9)
        assert (bags.requests, hours.requests, sim.unanswered) == (1, 2, 1)


async def test_fault_knobs_through_pymodbus(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, pv=5, rate_per_s=0)
    trace = Trace()
    async with serve_rtu_bus(pty, [unit]), pymodbus_on(pty.path, trace) as client:
        unit.faults = Faults(corrupt_crc=True)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x03E8, count=6, device_id=1)
        good = encode_response(unit.handle(STATUS_PV))
        assert trace.received[-1][:-2] == good[:-2]
        assert trace.received[-1][-2:] != good[-2:]

        unit.faults = Faults(wrong_unit=7)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x03E8, count=6, device_id=1)
        assert trace.received[-1][0] == 7

        unit.faults = Faults(exception=ExceptionCode.SERVER_DEVICE_FAILURE)
        rsp = await client.read_input_registers(0x03E8, count=6, device_id=1)
        assert rsp.exception_code == ExceptionCode.SERVER_DEVICE_FAILURE

        unit.faults = Faults(no_reply=True)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x03E8, count=6, device_id=1)

        unit.faults = Faults()
        rsp = await client.read_input_registers(0x03E8, count=6, device_id=1)
        assert rsp.registers[3] == 5


async def test_late_reply_arrives_after_the_timeout(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, rate_per_s=0)
    unit.faults = Faults(late_reply_s=0.25)
    request = encode_read_request(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)
    async with serve_rtu_bus(pty, [unit]), raw_port(pty.path) as port:
        await port.write(request)
        assert await read_for(port, 0.15) == b""
        assert await read_for(port, 0.3) == encode_response(unit.handle(STATUS_PV))


async def test_bad_crc_request_gets_silence(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, rate_per_s=0)
    request = encode_read_request(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)
    async with serve_rtu_bus(pty, [unit]) as sim, raw_port(pty.path) as port:
        await port.write(request[:-1] + b"\x00")
        assert await read_for(port, 0.2) == b""
        assert sim.crc_errors == 1
        assert unit.requests == 0
        # Noise then a request, and a request cut in two writes: both still answered.
        await port.write(b"\xff\x00" + request)
        await port.write(request[:3])
        await asyncio.sleep(0.001)
        await port.write(request[3:])
        reply = encode_response(unit.handle(STATUS_PV))
        assert await read_for(port, 0.2) == reply * 2


async def test_serves_again_after_replug(pty: PtyPort) -> None:
    unit = CounterUnitSim(1, pv=42, rate_per_s=0)
    async with serve_rtu_bus(pty, [unit]):
        async with pymodbus_on(pty.path) as client:
            rsp = await client.read_input_registers(0x03E8, count=6, device_id=1)
            assert rsp.registers[3] == 42
        pty.unplug()
        with pytest.raises(PortError):
            async with raw_port(pty.path):
                pass
        pty.replug()
        async with pymodbus_on(pty.path) as client:
            rsp = await client.read_input_registers(0x03E8, count=6, device_id=1)
            assert rsp.registers[3] == 42
        assert pty.opens == 2
