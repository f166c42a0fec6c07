"""The T/RH sensor simulator: a sensor alone, then beside a counter on a pty through pymodbus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient

from coffee_telemetry.drivers.climate_modbus_th import (
    ClimateSample,
    RegisterMap,
    decode_registers,
    decode_reply,
    read_request,
)
from coffee_telemetry.drivers.counter_autonics_ct import CounterSample, decode_status_pv
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_ON,
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    OtherRequest,
    ReadRequest,
    RegistersResponse,
    WriteCoilRequest,
    encode_response,
)
from coffee_telemetry.simulators.climate import ClimateUnitSim, serve_climate_bus
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, Faults
from tests.fakes import ManualClock

FC = FunctionCode
H = bytes.fromhex


def air_of(unit: ClimateUnitSim) -> ClimateSample | Discarded:
    return decode_reply(unit.address, unit.handle(read_request(unit.address, unit.map)), unit.map)


# -- a sensor alone --------------------------------------------------------------------


def test_datasheet_reply_from_the_sensor() -> None:
    unit = ClimateUnitSim(1, temperature_c=30.5, rh_pct=54.6)
    one = unit.handle(ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x0001, 1))
    assert encode_response(one) == H("01 04 02 01 31 79 74")
    assert air_of(unit) == ClimateSample(30.5, 54.6)


def test_negative_temperature_and_set_air() -> None:
    unit = ClimateUnitSim(4)
    unit.set_air(-20.5, 54.6)
    both = unit.handle(read_request(4))
    assert both == RegistersResponse(4, FC.READ_INPUT_REGISTERS, (0xFF33, 0x0222))
    with pytest.raises(ValueError, match="fit"):
        unit.set_air(25.0, 7000.0)


def test_profile_follows_the_clock() -> None:
    clock = ManualClock(0.0)

    def humid_night(t: float) -> ClimateSample:
        return ClimateSample(18.0, 80.0) if t >= 3600 else ClimateSample(26.0, 55.0)

    unit = ClimateUnitSim(1, profile=humid_night, clock=clock)
    assert air_of(unit) == ClimateSample(26.0, 55.0)
    clock.now = 7200.0
    assert air_of(unit) == ClimateSample(18.0, 80.0)


def test_failed_element_is_discarded_by_the_driver() -> None:
    unit = ClimateUnitSim(1)
    unit.raw_override = (0x7FFF, 0x7FFF)
    result = air_of(unit)
    assert isinstance(result, Discarded)
    assert result.reason == "temperature-out-of-range"


def test_other_register_map_and_settings_block() -> None:
    mapping = RegisterMap(
        function=FC.READ_HOLDING_REGISTERS,
        temperature=0,
        humidity=1,
        temperature_divisor=100,
        humidity_divisor=100,
    )
    unit = ClimateUnitSim(9, temperature_c=25.75, rh_pct=70.0, registers=mapping)
    assert air_of(unit) == ClimateSample(25.75, 70.0)
    # The XY-MD02 settings sit in holding registers only when the values are inputs.
    xy = ClimateUnitSim(9)
    settings = xy.handle(ReadRequest(9, FC.READ_HOLDING_REGISTERS, 0x0101, 4))
    assert settings == RegistersResponse(9, FC.READ_HOLDING_REGISTERS, (9, 0, 0, 0))


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x0000, 2), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x0001, 3), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x0001, 0), ExceptionCode.ILLEGAL_DATA_VALUE),
        (ReadRequest(1, FC.READ_HOLDING_REGISTERS, 0x0001, 2), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (ReadRequest(1, FC.READ_COILS, 0x0000, 1), ExceptionCode.ILLEGAL_FUNCTION),
        (WriteCoilRequest(1, 0x0000, COIL_ON), ExceptionCode.ILLEGAL_FUNCTION),
        (OtherRequest(1, 0x06, b"\x01\x01\x00\x02"), ExceptionCode.ILLEGAL_FUNCTION),
    ],
)
def test_exceptions(request_: ReadRequest | WriteCoilRequest | OtherRequest, code: int) -> None:
    response = ClimateUnitSim(1).handle(request_)
    assert isinstance(response, ExceptionResponse)
    assert (response.function, response.code) == (request_.function, code)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="address"):
        ClimateUnitSim(0)
    with pytest.raises(ValueError, match="fit"):
        ClimateUnitSim(1, temperature_c=4000.0)


# -- on a pty, beside a counter ----------------------------------------------------------


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPort]:
    with open_pty_port(link=tmp_path / "ttyRS485") as port:
        yield port


@asynccontextmanager
async def pymodbus_on(path: str) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        path, baudrate=9600, stopbits=1, timeout=0.3, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def test_sensor_and_counter_share_the_pty(pty: PtyPort) -> None:
    bags = CounterUnitSim(1, pv=10, rate_per_s=0)
    north = ClimateUnitSim(3, temperature_c=24.3, rh_pct=71.2)
    async with (
        serve_climate_bus(pty, [north], [bags]) as sim,
        pymodbus_on(pty.path) as client,
    ):
        counter = await client.read_input_registers(0x03E8, count=6, device_id=1)
        climate = await client.read_input_registers(0x0001, count=2, device_id=3)
        assert decode_status_pv(counter.registers) == CounterSample(0x8000, 0, 10, 0)
        assert decode_registers(climate.registers) == ClimateSample(24.3, 71.2)
        north.faults = Faults(exception=ExceptionCode.SERVER_DEVICE_FAILURE)
        failed = await client.read_input_registers(0x0001, count=2, device_id=3)
        assert failed.isError()
        assert (bags.requests, north.requests, north.replies, sim.unanswered) == (1, 2, 2, 0)
