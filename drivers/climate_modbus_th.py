"""RS-485 temperature/relative-humidity sensors over Modbus RTU: ``climate.modbus_th``.

Theory of operation
-------------------
The cheap DIN-rail and wall-box T/RH transmitters sold for warehouses (XY-MD02 and its
SHT20/SHT30/SHT40 look-alikes) answer plain Modbus RTU reads. Followed here: the
XY-MD02 "Temperature and humidity transmitter" protocol sheet (as reproduced by its
resellers), which gives::

    input register 0x0001   temperature x10, signed 16-bit  (0xFF33 -> -20.5 C)
    input register 0x0002   relative humidity x10           (0x0222 -> 54.6 %)
    holding 0x0101          device address 1-247, default 1
    holding 0x0102          baud rate code 0: 9600, 1: 14400, 2: 19200 (default 9600 8N1)
    holding 0x0103/0x0104   temperature / humidity correction x10, -10.0..10.0

    01 04 00 01 00 01 60 0A  ->  01 04 02 01 31 79 74     temperature 0x0131 = 30.5 C

Other models put the same two values elsewhere (holding registers, address 0, RH
before T, x100): ``RegisterMap`` says where and how, and the defaults are the XY-MD02's.
The agent reads both values with one request covering the span between them
(``RegisterMap.first``/``count``, at most ``MAX_SPAN`` registers), so a poll is one
exchange on a shared bus.

Decoding never raises: a wrong register count, a value outside 16 bits, or a value
outside what the sensing element can measure (SHT20: -40..125 C, 0..100 %RH; a
transmitter with a failed element typically reports 0x7FFF or 0x8000, far outside)
becomes ``Discarded``. A bad reading must not reach the storage alert as a real one.
The frames are ``drivers.modbus_rtu``'s; this module knows the register map and what
the values mean.

Config (``site.toml``) for an XY-MD02 at address 3 needs only the unit; another model::

    [[climate]]
    id = "armazem-1-norte"
    bus = "rs485-armazem"
    unit = 3
    area = "armazem-1"
    [climate.registers]
    function = 3            # holding registers
    temperature = 0x0000
    humidity = 0x0001
    temperature_divisor = 100
    humidity_divisor = 100
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.modbus_rtu import (
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    Response,
    check_reply,
    encode_read_request,
)

__all__ = [
    "DIVISORS",
    "MAX_SPAN",
    "RH_MAX",
    "RH_MIN",
    "TEMPERATURE_MAX_C",
    "TEMPERATURE_MIN_C",
    "XY_MD02",
    "ClimateSample",
    "RegisterMap",
    "decode_registers",
    "decode_reply",
    "encode_registers",
    "read_request",
    "request_bytes",
    "to_measurement",
]

#: Sensing range of the SHT20 element (Sensirion SHT20 datasheet, table 1 and 2).
TEMPERATURE_MIN_C = -40.0
TEMPERATURE_MAX_C = 125.0
RH_MIN = 0.0
RH_MAX = 100.0
#: Longest span read in one request (the values of one sensor sit close together).
MAX_SPAN = 16
#: Scales a register may carry: value = raw / divisor (x1000 cannot hold 100 %RH in 16 bits).
DIVISORS = (1, 10, 100)

_READS = (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where a sensor keeps its temperature and RH, and how they are scaled.

    Attributes:
        function: FC04 (input registers) or FC03 (holding registers).
        temperature: Register address of the temperature (0-based wire address).
        humidity: Register address of the relative humidity.
        temperature_divisor: ``C = raw / divisor`` (one of ``DIVISORS``).
        humidity_divisor: ``%RH = raw / divisor``.
        temperature_signed: Whether the temperature is two's complement.

    Raises:
        DriverUsageError: a function other than FC03/FC04, an address outside
            0..0xFFFF, both values at one address, a span above ``MAX_SPAN``, or a
            divisor not in ``DIVISORS``.
    """

    function: FunctionCode = FunctionCode.READ_INPUT_REGISTERS
    temperature: int = 0x0001
    humidity: int = 0x0002
    temperature_divisor: int = 10
    humidity_divisor: int = 10
    temperature_signed: bool = True

    def __post_init__(self) -> None:
        if self.function not in _READS:
            raise DriverUsageError(f"function must be 3 or 4, not {int(self.function)}")
        for name, address in (("temperature", self.temperature), ("humidity", self.humidity)):
            if not 0 <= address <= 0xFFFF:
                raise DriverUsageError(f"{name} register {address} outside 0..65535")
        if self.temperature == self.humidity:
            raise DriverUsageError("temperature and humidity at the same register")
        if self.count > MAX_SPAN:
            raise DriverUsageError(
                f"temperature and humidity span {self.count} registers (at most {MAX_SPAN})"
            )
        for name, divisor in (
            ("temperature_divisor", self.temperature_divisor),
            ("humidity_divisor", self.humidity_divisor),
        ):
            if divisor not in DIVISORS:
                raise DriverUsageError(f"{name} must be one of {DIVISORS}, not {divisor}")

    @property
    def first(self) -> int:
        """First register of the block read."""
        return min(self.temperature, self.humidity)

    @property
    def count(self) -> int:
        """Registers in the block read (both values and what lies between)."""
        return abs(self.temperature - self.humidity) + 1


#: The XY-MD02 map (the defaults).
XY_MD02 = RegisterMap()


@dataclass(frozen=True, slots=True)
class ClimateSample:
    """One reading of a T/RH sensor.

    Attributes:
        temperature_c: Air temperature, degrees Celsius.
        rh_pct: Relative humidity, percent.
    """

    temperature_c: float
    rh_pct: float


def read_request(unit: int, registers: RegisterMap = XY_MD02) -> ReadRequest:
    """The one request a poll sends."""
    return ReadRequest(unit, registers.function, registers.first, registers.count)


def request_bytes(unit: int, registers: RegisterMap = XY_MD02) -> bytes:
    """The request as an ADU (CRC included).

    Raises:
        DriverUsageError: a unit outside 1..247.
    """
    return encode_read_request(unit, registers.function, registers.first, registers.count)


def _pack(registers: Sequence[int]) -> bytes:
    return b"".join((r & 0xFFFF).to_bytes(2, "big") for r in registers[:128])


def decode_registers(
    registers: Sequence[int], mapping: RegisterMap = XY_MD02
) -> ClimateSample | Discarded:
    """Decode the block that ``read_request`` asks for. Never raises.

    Returns:
        The sample, or ``Discarded`` (data: the registers as on the wire) with reason
        ``bad-count``, ``bad-register`` (a value outside 0..0xFFFF),
        ``temperature-out-of-range`` or ``rh-out-of-range``.
    """
    regs = list(registers)
    if len(regs) != mapping.count:
        return Discarded(data=_pack(regs), reason="bad-count")
    if any(not 0 <= r <= 0xFFFF for r in regs):
        return Discarded(data=_pack(regs), reason="bad-register")
    raw_t = regs[mapping.temperature - mapping.first]
    raw_rh = regs[mapping.humidity - mapping.first]
    if mapping.temperature_signed and raw_t & 0x8000:
        raw_t -= 0x10000
    temperature = raw_t / mapping.temperature_divisor
    rh = raw_rh / mapping.humidity_divisor
    if not TEMPERATURE_MIN_C <= temperature <= TEMPERATURE_MAX_C:
        return Discarded(data=_pack(regs), reason="temperature-out-of-range")
    if not RH_MIN <= rh <= RH_MAX:
        return Discarded(data=_pack(regs), reason="rh-out-of-range")
    return ClimateSample(temperature_c=temperature, rh_pct=rh)


def decode_reply(
    unit: int, response: Response, mapping: RegisterMap = XY_MD02
) -> ClimateSample | Discarded:
    """Decode a reply to ``read_request(unit, mapping)``. Never raises.

    Returns:
        The sample, or ``Discarded`` with a reason from ``decode_registers``, from
        ``check_reply`` (``wrong-unit``, ``wrong-function``, ``wrong-count``), or
        ``exception-NN`` (the slave's exception code, two hex digits).
    """
    why = check_reply(read_request(unit, mapping), response)
    if why is not None:
        return Discarded(data=b"", reason=why)
    if isinstance(response, ExceptionResponse):
        code = response.code & 0xFF
        return Discarded(data=bytes((code,)), reason=f"exception-{code:02x}")
    if not isinstance(response, RegistersResponse):  # pragma: no cover - check_reply refuses it
        return Discarded(data=b"", reason="wrong-function")
    return decode_registers(response.registers, mapping)


def encode_registers(sample: ClimateSample, mapping: RegisterMap = XY_MD02) -> tuple[int, ...]:
    """The block a sensor would answer for ``sample`` (registers in between read 0).

    Raises:
        DriverUsageError: a value that does not fit the map's 16-bit registers.
    """
    raw_t = round(sample.temperature_c * mapping.temperature_divisor)
    raw_rh = round(sample.rh_pct * mapping.humidity_divisor)
    low_t = -0x8000 if mapping.temperature_signed else 0
    high_t = 0x7FFF if mapping.temperature_signed else 0xFFFF
    if not low_t <= raw_t <= high_t:
        raise DriverUsageError(f"temperature {sample.temperature_c} does not fit the register")
    if not 0 <= raw_rh <= 0xFFFF:
        raise DriverUsageError(f"relative humidity {sample.rh_pct} does not fit the register")
    block = [0] * mapping.count
    block[mapping.temperature - mapping.first] = raw_t & 0xFFFF
    block[mapping.humidity - mapping.first] = raw_rh
    return tuple(block)


def to_measurement(sample: ClimateSample, raw: Sequence[int] = ()) -> Measurement:
    """The ``climate`` measurement: float fields ``temperature_c`` and ``rh_pct``."""
    return Measurement(
        measurement="climate",
        fields={"temperature_c": sample.temperature_c, "rh_pct": sample.rh_pct},
        raw=_pack(list(raw)),
    )
