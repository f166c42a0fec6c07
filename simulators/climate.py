"""A simulated RS-485 T/RH sensor (XY-MD02 style) for the Modbus RTU bus simulator.

Built from the project's own drivers (``drivers.modbus_rtu`` frames,
``drivers.climate_modbus_th`` register map), like ``simulators.rtu``'s counters.

- ``ClimateUnitSim`` is one sensor: the map's block of registers (FC04 or FC03 as the
  map says), plus the XY-MD02 settings block in holding registers 0x0101..0x0104
  (address, baud code, temperature and humidity corrections) when the map reads input
  registers. The air it measures is set with ``set_air`` or follows ``profile``, a
  function of the clock's seconds (a humid night, a dry afternoon). ``raw_override``
  puts a given raw block on the wire instead (a failed element's 0x7FFF, a spike).
  ``handle()`` answers one request; it is pure apart from the clock.
- It has the attributes ``RtuBusSim`` uses (``address``, ``faults``, ``requests``,
  ``replies``, ``handle``), so ``serve_climate_bus`` serves sensors, alone or with
  counters, on one pty through the same bus simulator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import assert_never, cast

from coffee_telemetry.drivers.climate_modbus_th import (
    XY_MD02,
    ClimateSample,
    RegisterMap,
    encode_registers,
)
from coffee_telemetry.drivers.modbus_rtu import (
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    OtherRequest,
    ReadRequest,
    RegistersResponse,
    Request,
    Response,
    WriteCoilRequest,
)
from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.rtu import CounterUnitSim, Faults, RtuBusSim, serve_rtu_bus

__all__ = ["SETTINGS_ADDRESS", "ClimateUnitSim", "serve_climate_bus"]

#: First XY-MD02 settings register (holding): address, baud code, T and RH corrections.
SETTINGS_ADDRESS = 0x0101
_MAX_READ = 125


class ClimateUnitSim:
    """One T/RH sensor (see the module docstring).

    Args:
        address: Its Modbus address.
        temperature_c: Air temperature at start.
        rh_pct: Relative humidity at start.
        registers: The register map it answers with.
        profile: When given, the air as a function of the clock (overrides ``set_air``).
        clock: Seconds, for ``profile``.

    Attributes:
        faults: Fault knobs (``simulators.rtu.Faults``).
        raw_override: A raw block answered instead of the air's (``None``: the air's).
        requests: Requests addressed to this unit.
        replies: Replies it sent.
    """

    def __init__(
        self,
        address: int,
        *,
        temperature_c: float = 25.0,
        rh_pct: float = 60.0,
        registers: RegisterMap = XY_MD02,
        profile: Callable[[float], ClimateSample] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= address <= 247:
            raise ValueError(f"address {address} outside 1..247")
        self.address = address
        self.map = registers
        self.faults = Faults()
        self.raw_override: tuple[int, ...] | None = None
        self.requests = 0
        self.replies = 0
        self._air = ClimateSample(temperature_c, rh_pct)
        self._profile = profile
        self._clock = clock
        encode_registers(self._air, registers)  # refuse an unencodable start now

    def set_air(self, temperature_c: float, rh_pct: float) -> None:
        """Change the air the sensor measures."""
        air = ClimateSample(temperature_c, rh_pct)
        encode_registers(air, self.map)
        self._air = air

    def air(self) -> ClimateSample:
        """The air as the sensor measures it now."""
        return self._profile(self._clock()) if self._profile is not None else self._air

    def block(self) -> tuple[int, ...]:
        """The measurement block as it reads now."""
        if self.raw_override is not None:
            return self.raw_override
        return encode_registers(self.air(), self.map)

    def settings(self) -> tuple[int, ...]:
        """Holding registers 0x0101..0x0104: address, 9600 baud, no corrections."""
        return (self.address, 0, 0, 0)

    def handle(self, request: Request) -> Response:
        """Answer one request addressed to this unit (faults aside)."""
        match request:
            case ReadRequest(function=function, address=address, count=count) if function in (
                FunctionCode.READ_INPUT_REGISTERS,
                FunctionCode.READ_HOLDING_REGISTERS,
            ):
                if not 1 <= count <= _MAX_READ:
                    return self._refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE)
                if function is self.map.function:
                    first, values = self.map.first, self.block()
                elif function is FunctionCode.READ_HOLDING_REGISTERS:
                    first, values = SETTINGS_ADDRESS, self.settings()
                else:
                    return self._refuse(function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
                start = address - first
                if start < 0 or start + count > len(values):
                    return self._refuse(function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
                return RegistersResponse(self.address, function, values[start : start + count])
            case ReadRequest(function=function) | OtherRequest(function=function):
                return self._refuse(function, ExceptionCode.ILLEGAL_FUNCTION)
            case WriteCoilRequest(function=function):
                return self._refuse(function, ExceptionCode.ILLEGAL_FUNCTION)
            case _:  # pragma: no cover
                assert_never(request)

    def _refuse(self, function: int, code: ExceptionCode) -> Response:
        return ExceptionResponse(self.address, function, code)


@contextlib.asynccontextmanager
async def serve_climate_bus(
    port: PtyPort,
    sensors: Iterable[ClimateUnitSim],
    counters: Iterable[CounterUnitSim] = (),
    *,
    baudrate: int = 9600,
    silence_s: float | None = None,
) -> AsyncIterator[RtuBusSim]:
    """Serve sensors (and counters) on one pty for the duration of an ``async with``."""
    # RtuBusSim only uses address/faults/requests/replies/handle, which a sensor has.
    units = [*counters, *cast("list[CounterUnitSim]", list(sensors))]
    async with serve_rtu_bus(port, units, baudrate=baudrate, silence_s=silence_s) as sim:
        yield sim
