"""Modbus RTU framing: CRC-16/MODBUS, FC01/02/04/05 frames both ways, exceptions (protocols §3.1).

Specs: Modbus over Serial Line V1.02 §2.5 (RTU framing, CRC); Modbus Application Protocol
V1.1b3 §6 (function codes) and §7 (exception codes). Every frame (ADU) is::

    unit(1) | function(1) | data(n) | crc lo | crc hi           at most 256 bytes

    FC01/02/03/04 request   unit fc  addr hi lo  count hi lo  crc          8 bytes
    FC01/02 response        unit fc  n  bits ... (bit 0 = LSB of 1st byte)  crc    5 + n
    FC03/04 response        unit fc  n  reg hi lo ...                   crc    5 + n
    FC05 request = reply    unit 05  coil hi lo  FF 00 | 00 00          crc    8 bytes
    exception response      unit fc|0x80  code                          crc    5 bytes

    01 04 03 E8 00 06 F0 78  ->  01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86

CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001, sent low byte first; the check
value of ``01 03 00 00 00 01`` is ``84 0A``. Unit 0 is broadcast (requests only, no reply).

Framing: the spec delimits frames by 3.5 character times of silence, which USB adapters
blur (§3.1), so both parsers frame by *expected length*: the function code (and for
FC01-04 responses and FC15/16 requests the byte count) gives the length, and the CRC
confirms it. A candidate whose CRC fails is not trusted to say where the next frame
starts: the parser drops one byte and hunts from the next (pymodbus' "hunting mode"), so
garbage before a frame costs nothing. Dropped bytes come out as one ``Discarded`` just
before the next good frame, or at ``idle()``. ``idle()`` is the silence fallback the
caller drives from its clock: nothing more belongs to a frame in progress, so a frame of
a function whose length this module does not know is taken whole if its CRC holds, and
everything else left over is discarded. Without ``idle()`` nothing is lost, only held.
Buffers stay within ``max_frame`` bytes; feeding bytes never raises.

``RequestParser`` is the slave side (what a simulator hears), ``ResponseParser`` the
master side (what an agent hears; pymodbus does the agent's live framing, this one sorts
out bytes that failed). Bit lists come back whole bytes long, the padding ``False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar, assert_never

from coffee_telemetry.drivers._framing import EventQueue, StrayBytes, cap
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded

__all__ = [
    "COIL_OFF",
    "COIL_ON",
    "MAX_ADU",
    "BitsResponse",
    "ExceptionCode",
    "ExceptionResponse",
    "FunctionCode",
    "OtherRequest",
    "OtherResponse",
    "ReadRequest",
    "RegistersResponse",
    "Request",
    "RequestParser",
    "Response",
    "ResponseParser",
    "WriteCoilRequest",
    "WriteCoilResponse",
    "check_reply",
    "crc16",
    "decode_request",
    "decode_response",
    "encode_bits_response",
    "encode_exception_response",
    "encode_read_request",
    "encode_registers_response",
    "encode_request",
    "encode_response",
    "encode_write_coil_request",
    "expected_response_length",
    "with_crc",
]


class FunctionCode(IntEnum):
    """Public function codes this project meets on a serial line."""

    #: Read 1-2000 coils (output bits).
    READ_COILS = 0x01
    #: Read 1-2000 discrete inputs (input bits).
    READ_DISCRETE_INPUTS = 0x02
    #: Read 1-125 holding registers.
    READ_HOLDING_REGISTERS = 0x03
    #: Read 1-125 input registers.
    READ_INPUT_REGISTERS = 0x04
    #: Write one coil: ``FF00`` on, ``0000`` off; the reply echoes the request.
    WRITE_SINGLE_COIL = 0x05
    #: Write one holding register; the reply echoes the request.
    WRITE_SINGLE_REGISTER = 0x06
    #: Write several coils (request carries a byte count).
    WRITE_MULTIPLE_COILS = 0x0F
    #: Write several holding registers (request carries a byte count).
    WRITE_MULTIPLE_REGISTERS = 0x10


class ExceptionCode(IntEnum):
    """Exception codes a slave answers with (function code | 0x80)."""

    #: The function is not supported by this slave.
    ILLEGAL_FUNCTION = 0x01
    #: The address, or address + count, is outside what the slave has.
    ILLEGAL_DATA_ADDRESS = 0x02
    #: A value in the request is not allowed (a count of 0, a coil value not FF00/0000).
    ILLEGAL_DATA_VALUE = 0x03
    #: The slave failed while performing the request.
    SERVER_DEVICE_FAILURE = 0x04
    #: Accepted, but it will take long; poll for completion.
    ACKNOWLEDGE = 0x05
    #: Busy with a long command; retry later.
    SERVER_DEVICE_BUSY = 0x06
    #: Memory parity error reading a record file.
    MEMORY_PARITY_ERROR = 0x08
    #: A gateway has no path to the target.
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    #: A gateway's target did not answer.
    GATEWAY_TARGET_FAILED = 0x0B


#: Largest RTU frame, CRC included (Serial Line §2.5.1.1).
MAX_ADU = 256
#: The two legal values of a single coil write.
COIL_ON = 0xFF00
COIL_OFF = 0x0000

_READS = frozenset(
    {
        FunctionCode.READ_COILS,
        FunctionCode.READ_DISCRETE_INPUTS,
        FunctionCode.READ_HOLDING_REGISTERS,
        FunctionCode.READ_INPUT_REGISTERS,
    }
)
_BIT_READS = frozenset({FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS})
_MAX_COUNT = {
    FunctionCode.READ_COILS: 2000,
    FunctionCode.READ_DISCRETE_INPUTS: 2000,
    FunctionCode.READ_HOLDING_REGISTERS: 125,
    FunctionCode.READ_INPUT_REGISTERS: 125,
}
_MIN_ADU = 4  # unit, function, crc(2)


# -- CRC -----------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of ``data``; on the wire it goes low byte first.

    >>> f"{crc16(bytes.fromhex('010300000001')):04X}"
    '0A84'
    """
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC, low byte first."""
    return frame + crc16(frame).to_bytes(2, "little")


def _crc_ok(adu: bytes | bytearray) -> bool:
    return len(adu) >= _MIN_ADU and crc16(adu[:-2]) == int.from_bytes(adu[-2:], "little")


# -- events --------------------------------------------------------------------------

# A request and its reply are distinct events, even where the wire gives them the
# same fields (an FC05 reply echoes its request); the private bases hold those fields.


@dataclass(frozen=True, slots=True)
class _CoilWrite:
    unit: int
    address: int
    value: int

    @property
    def function(self) -> FunctionCode:
        """Always ``WRITE_SINGLE_COIL``."""
        return FunctionCode.WRITE_SINGLE_COIL


@dataclass(frozen=True, slots=True)
class _OtherFrame:
    unit: int
    function: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """FC01/02/03/04: read ``count`` bits or registers from ``address``.

    Decoded requests keep whatever count the wire carried (0 included): answering an
    illegal count with exception 03 is the slave's job.
    """

    unit: int
    function: FunctionCode
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class WriteCoilRequest(_CoilWrite):
    """FC05: set one coil. ``value`` is the raw field, ``COIL_ON`` or ``COIL_OFF`` when legal."""


@dataclass(frozen=True, slots=True)
class OtherRequest(_OtherFrame):
    """A request with a good CRC and a function this module does not decode."""


@dataclass(frozen=True, slots=True)
class BitsResponse:
    """FC01/02 reply; ``bits`` is whole bytes long (padding is ``False``)."""

    unit: int
    function: FunctionCode
    bits: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class RegistersResponse:
    """FC03/04 reply."""

    unit: int
    function: FunctionCode
    registers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteCoilResponse(_CoilWrite):
    """FC05 reply: the request echoed."""


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """A slave refused the request.

    Attributes:
        function: The request's function (without the 0x80 bit).
        code: An ``ExceptionCode`` value, kept as a plain int when not a standard one.
    """

    unit: int
    function: int
    code: int


@dataclass(frozen=True, slots=True)
class OtherResponse(_OtherFrame):
    """A reply with a good CRC and a function this module does not decode."""


#: What a slave hears.
Request = ReadRequest | WriteCoilRequest | OtherRequest
#: What a master hears.
Response = BitsResponse | RegistersResponse | WriteCoilResponse | ExceptionResponse | OtherResponse


# -- encoders ------------------------------------------------------------------------


def _check_unit(unit: int, *, broadcast: bool = False) -> None:
    low = 0 if broadcast else 1
    if not low <= unit <= 247:
        raise DriverUsageError(f"unit must be {low}..247: {unit!r}")


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise DriverUsageError(f"{name} must be 0..65535: {value!r}")


def encode_read_request(unit: int, function: FunctionCode, address: int, count: int) -> bytes:
    """Build an FC01/02/03/04 request.

    Raises:
        DriverUsageError: ``unit`` not 1..247 (reads cannot be broadcast), ``function``
            not a read, ``count`` outside 1..2000 (bits) or 1..125 (registers), or the
            range running past address 65535.
    """
    _check_unit(unit)
    if function not in _READS:
        raise DriverUsageError(f"not a read function: {function!r}")
    _check_u16("address", address)
    limit = _MAX_COUNT[function]
    if not 1 <= count <= limit:
        raise DriverUsageError(f"count for {function.name} must be 1..{limit}: {count!r}")
    if address + count > 0x10000:
        raise DriverUsageError(f"address {address} + count {count} runs past 65535")
    return with_crc(bytes((unit, function)) + address.to_bytes(2, "big") + count.to_bytes(2, "big"))


def encode_write_coil_request(unit: int, address: int, on: bool) -> bytes:
    """Build an FC05 request (unit 0 broadcasts).

    Raises:
        DriverUsageError: ``unit`` not 0..247 or ``address`` not 0..65535.
    """
    _check_unit(unit, broadcast=True)
    _check_u16("address", address)
    value = COIL_ON if on else COIL_OFF
    return with_crc(bytes((unit, FunctionCode.WRITE_SINGLE_COIL)) + _u16s(address, value))


def encode_bits_response(unit: int, function: FunctionCode, bits: Sequence[bool]) -> bytes:
    """Build an FC01/02 reply; ``bits`` is padded with ``False`` to whole bytes.

    Raises:
        DriverUsageError: ``unit`` not 1..247, ``function`` not FC01/02, or 0 or more
            than 2000 bits.
    """
    _check_unit(unit)
    if function not in _BIT_READS:
        raise DriverUsageError(f"not a bit read: {function!r}")
    if not 1 <= len(bits) <= 2000:
        raise DriverUsageError(f"a bit reply holds 1..2000 bits: {len(bits)}")
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i // 8] |= 1 << (i % 8)
    return with_crc(bytes((unit, function, len(packed))) + packed)


def encode_registers_response(unit: int, function: FunctionCode, registers: Sequence[int]) -> bytes:
    """Build an FC03/04 reply.

    Raises:
        DriverUsageError: ``unit`` not 1..247, ``function`` not FC03/04, 0 or more
            than 125 registers, or a register outside 0..65535.
    """
    _check_unit(unit)
    if function not in _READS - _BIT_READS:
        raise DriverUsageError(f"not a register read: {function!r}")
    if not 1 <= len(registers) <= 125:
        raise DriverUsageError(f"a register reply holds 1..125 registers: {len(registers)}")
    for reg in registers:
        _check_u16("register", reg)
    return with_crc(bytes((unit, function, 2 * len(registers))) + _u16s(*registers))


def encode_exception_response(unit: int, function: int, code: int) -> bytes:
    """Build an exception reply to a request of ``function``.

    Raises:
        DriverUsageError: ``unit`` not 1..247, ``function`` not 1..127 or ``code`` not
            1..255.
    """
    _check_unit(unit)
    if not 1 <= function <= 0x7F:
        raise DriverUsageError(f"function must be 1..127: {function!r}")
    if not 1 <= code <= 0xFF:
        raise DriverUsageError(f"exception code must be 1..255: {code!r}")
    return with_crc(bytes((unit, function | 0x80, code)))


def encode_request(request: Request) -> bytes:
    """Build the frame for any request event (the inverse of ``decode_request``).

    Raises:
        DriverUsageError: As the specific encoders; a ``WriteCoilRequest`` value other
            than ``COIL_ON``/``COIL_OFF``; an ``OtherRequest`` too long for one frame.
    """
    match request:
        case ReadRequest(unit=unit, function=function, address=address, count=count):
            return encode_read_request(unit, function, address, count)
        case WriteCoilRequest(unit=unit, address=address, value=value):
            if value not in (COIL_ON, COIL_OFF):
                raise DriverUsageError(f"coil value must be FF00 or 0000: {value:#06x}")
            return encode_write_coil_request(unit, address, value == COIL_ON)
        case OtherRequest(unit=unit, function=function, data=data):
            _check_unit(unit, broadcast=True)
            return _encode_other(unit, function, data)
        case _:  # pragma: no cover
            assert_never(request)


def encode_response(response: Response) -> bytes:
    """Build the frame for any response event (the inverse of ``decode_response``).

    Raises:
        DriverUsageError: As the specific encoders.
    """
    match response:
        case BitsResponse(unit=unit, function=function, bits=bits):
            return encode_bits_response(unit, function, bits)
        case RegistersResponse(unit=unit, function=function, registers=registers):
            return encode_registers_response(unit, function, registers)
        case WriteCoilResponse(unit=unit, address=address, value=value):
            _check_unit(unit)
            _check_u16("address", address)
            _check_u16("value", value)
            return with_crc(bytes((unit, FunctionCode.WRITE_SINGLE_COIL)) + _u16s(address, value))
        case ExceptionResponse(unit=unit, function=function, code=code):
            return encode_exception_response(unit, function, code)
        case OtherResponse(unit=unit, function=function, data=data):
            _check_unit(unit)
            return _encode_other(unit, function, data)
        case _:  # pragma: no cover
            assert_never(response)


def _encode_other(unit: int, function: int, data: bytes) -> bytes:
    if not 1 <= function <= 0x7F:
        raise DriverUsageError(f"function must be 1..127: {function!r}")
    if len(data) > MAX_ADU - _MIN_ADU:
        raise DriverUsageError(f"data too long for one frame: {len(data)} bytes")
    return with_crc(bytes((unit, function)) + data)


def _u16s(*values: int) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


# -- decoders ------------------------------------------------------------------------


def _function(code: int) -> FunctionCode | None:
    try:
        return FunctionCode(code)
    except ValueError:
        return None


def _fields(adu: bytes) -> tuple[int, int, bytes] | Discarded:
    # Unit, function code and data of a frame whose length and CRC hold, or why not.
    if not _MIN_ADU <= len(adu) <= MAX_ADU:
        return Discarded(data=cap(adu, MAX_ADU), reason="bad-length")
    if not _crc_ok(adu):
        return Discarded(data=adu, reason="bad-crc")
    return adu[0], adu[1], adu[2:-2]


def decode_request(adu: bytes) -> Request | Discarded:
    """Decode one whole request frame, CRC included; never raises.

    Returns:
        The request, or ``Discarded`` with reason ``bad-length``, ``bad-crc``,
        ``bad-unit`` (above 247) or ``bad-function`` (0 or with the exception bit).
    """
    adu = bytes(adu)
    fields = _fields(adu)
    if isinstance(fields, Discarded):
        return fields
    unit, code, data = fields
    if unit > 247:
        return Discarded(data=adu, reason="bad-unit")
    if not 1 <= code <= 0x7F:
        return Discarded(data=adu, reason="bad-function")
    function = _function(code)
    if function in _READS and len(data) == 4:
        address, count = _words(data)
        return ReadRequest(unit=unit, function=function, address=address, count=count)
    if function is FunctionCode.WRITE_SINGLE_COIL and len(data) == 4:
        address, value = _words(data)
        return WriteCoilRequest(unit=unit, address=address, value=value)
    if function is not None and _request_length(adu, 0) not in (None, len(adu)):
        return Discarded(data=adu, reason="bad-length")
    return OtherRequest(unit=unit, function=code, data=data)


def decode_response(adu: bytes) -> Response | Discarded:
    """Decode one whole response frame, CRC included; never raises.

    Returns:
        The response, or ``Discarded`` with reason ``bad-length``, ``bad-crc``,
        ``bad-unit`` (0 or above 247), ``bad-function`` (0 or 0x80) or
        ``bad-byte-count`` (a byte count that disagrees with the frame, or an odd one
        in a register reply).
    """
    adu = bytes(adu)
    fields = _fields(adu)
    if isinstance(fields, Discarded):
        return fields
    unit, code, data = fields
    if not 1 <= unit <= 247:
        return Discarded(data=adu, reason="bad-unit")
    if code in (0, 0x80):
        return Discarded(data=adu, reason="bad-function")
    if code & 0x80:
        if len(data) != 1:
            return Discarded(data=adu, reason="bad-length")
        return ExceptionResponse(unit=unit, function=code & 0x7F, code=data[0])
    function = _function(code)
    if function in _READS:
        if not data or data[0] != len(data) - 1:
            return Discarded(data=adu, reason="bad-byte-count")
        body = data[1:]
        if function in _BIT_READS:
            bits = tuple(bool(byte >> i & 1) for byte in body for i in range(8))
            return BitsResponse(unit=unit, function=function, bits=bits)
        if len(body) % 2:
            return Discarded(data=adu, reason="bad-byte-count")
        return RegistersResponse(unit=unit, function=function, registers=_words(body))
    if function is FunctionCode.WRITE_SINGLE_COIL:
        if len(data) != 4:
            return Discarded(data=adu, reason="bad-length")
        address, value = _words(data)
        return WriteCoilResponse(unit=unit, address=address, value=value)
    if function is not None and len(adu) != 8:
        return Discarded(data=adu, reason="bad-length")
    return OtherResponse(unit=unit, function=code, data=data)


def _words(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def expected_response_length(request: ReadRequest | WriteCoilRequest) -> int:
    """Length of a normal reply to ``request``, CRC included (an exception reply is 5)."""
    match request:
        case ReadRequest(function=function, count=count):
            size = (count + 7) // 8 if function in _BIT_READS else 2 * count
            return 5 + size
        case WriteCoilRequest():
            return 8
        case _:  # pragma: no cover
            assert_never(request)


def check_reply(request: ReadRequest | WriteCoilRequest, response: Response) -> str | None:
    """Tell why ``response`` does not answer ``request``, or ``None`` when it does.

    An exception reply from the right unit to the right function answers the request.

    Returns:
        ``None``, or ``wrong-unit``, ``wrong-function``, ``wrong-count`` or ``wrong-echo``.
    """
    if response.unit != request.unit:
        return "wrong-unit"
    if response.function != request.function:
        return "wrong-function"
    match request, response:
        case _, ExceptionResponse():
            return None
        case ReadRequest(function=function, count=count), BitsResponse(bits=bits):
            if function not in _BIT_READS:
                return "wrong-function"
            return None if len(bits) == 8 * ((count + 7) // 8) else "wrong-count"
        case ReadRequest(function=function, count=count), RegistersResponse(registers=registers):
            if function in _BIT_READS:
                return "wrong-function"
            return None if len(registers) == count else "wrong-count"
        case WriteCoilRequest(address=address, value=value), WriteCoilResponse():
            same = (response.address, response.value) == (address, value)
            return None if same else "wrong-echo"
        case _:
            return "wrong-function"


# -- stream parsers ------------------------------------------------------------------

# What _length() may say about a candidate frame starting at some position.
_MORE = 0  # need more bytes to tell its length
_NOT_A_FRAME = -1  # this byte cannot start a frame
_UNKNOWN = -2  # a function of unknown length: only silence (idle) ends it


def _request_length(buf: bytes | bytearray, pos: int) -> int | None:
    # Length of a request of a known function, None when the function is unknown.
    code = buf[pos + 1]
    if code == 0 or code & 0x80:
        return _NOT_A_FRAME
    if 1 <= code <= 6:
        return 8
    if code in (FunctionCode.WRITE_MULTIPLE_COILS, FunctionCode.WRITE_MULTIPLE_REGISTERS):
        if len(buf) - pos < 7:
            return _MORE
        return 9 + buf[pos + 6]
    return None


def _response_length(buf: bytes | bytearray, pos: int) -> int | None:
    code = buf[pos + 1]
    if code in (0, 0x80):
        return _NOT_A_FRAME
    if code & 0x80:
        return 5
    if 1 <= code <= 4:
        if len(buf) - pos < 3:
            return _MORE
        return 5 + buf[pos + 2]
    if code in (5, 6, FunctionCode.WRITE_MULTIPLE_COILS, FunctionCode.WRITE_MULTIPLE_REGISTERS):
        return 8
    return None


_E = TypeVar("_E", Request, Response)


@dataclass(frozen=True, slots=True)
class _Side(Generic[_E]):
    # What differs between the two directions.
    lowest_unit: int  # requests may be broadcast (unit 0), responses not
    length: Callable[[bytearray, int], int | None]
    decode: Callable[[bytes], _E | Discarded]


_REQUESTS: _Side[Request] = _Side(0, _request_length, decode_request)
_RESPONSES: _Side[Response] = _Side(1, _response_length, decode_response)


class _FrameParser(EventQueue[_E]):
    _side: _Side[_E]  # the direction, set by each subclass

    def __init__(self, *, max_frame: int = MAX_ADU) -> None:
        if not 8 <= max_frame <= MAX_ADU:
            raise DriverUsageError(f"max_frame must be 8..{MAX_ADU}: {max_frame!r}")
        super().__init__(max_discarded=max_frame)
        self._max = max_frame
        self._buf = bytearray()
        self._junk = StrayBytes(max_frame)
        self._junk_crc = False  # a whole candidate in the dropped run failed its CRC
        self.crc_errors = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the frame in progress and the start of a dropped run."""
        return len(self._buf) + self._junk.held

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they arrive, cut anywhere."""
        self._buf += data
        self._scan(final=False)

    def idle(self) -> None:
        """The line went silent (3.5 characters): end what is buffered."""
        self._scan(final=True)
        self._flush_junk()

    def reset(self) -> None:
        """Forget everything buffered (after a reconnect), without reporting it."""
        self._buf.clear()
        self._junk.clear()
        self._junk_crc = False

    def _scan(self, *, final: bool) -> None:
        buf = self._buf
        pos = 0
        while pos < len(buf):
            left = len(buf) - pos
            length = self._candidate(buf, pos)
            if length == _NOT_A_FRAME:
                self._drop(buf, pos, crc=False)
                pos += 1
            elif length == _UNKNOWN:
                if not final and left <= self._max:
                    break
                if final and left >= _MIN_ADU and _crc_ok(buf[pos:]):
                    self._frame(bytes(buf[pos:]))
                    pos = len(buf)
                else:
                    self._drop(buf, pos, crc=False)
                    pos += 1
            elif length == _MORE or left < length:
                if not final:
                    break
                self._drop(buf, pos, crc=False)
                pos += 1
            elif _crc_ok(buf[pos : pos + length]):
                self._frame(bytes(buf[pos : pos + length]))
                pos += length
            else:
                self._drop(buf, pos, crc=True)
                pos += 1
        del buf[:pos]

    def _candidate(self, buf: bytearray, pos: int) -> int:
        if len(buf) - pos < 2:
            return _MORE
        if not self._side.lowest_unit <= buf[pos] <= 247:
            return _NOT_A_FRAME
        length = self._side.length(buf, pos)
        if length is None:
            return _UNKNOWN
        if length != _MORE and length > self._max:
            return _NOT_A_FRAME
        return length

    def _drop(self, buf: bytearray, pos: int, *, crc: bool) -> None:
        if crc and not self._junk_crc:
            self._junk_crc = True
            self.crc_errors += 1
        self._junk.append(buf[pos])

    def _flush_junk(self) -> None:
        self._flush_stray(self._junk, "bad-crc" if self._junk_crc else "no-frame")
        self._junk_crc = False

    def _frame(self, adu: bytes) -> None:
        self._flush_junk()
        event = self._side.decode(adu)
        if isinstance(event, Discarded):
            self.frames_discarded += 1
        else:
            self.frames_ok += 1
        self._events.append(event)


class ResponseParser(_FrameParser[Response]):
    """Master-side stream parser: bytes from the slaves in, responses out (see the module doc).

    Args:
        max_frame: Longest frame accepted, and the cap on ``Discarded.data``.

    Attributes:
        frames_ok: Responses decoded.
        frames_discarded: ``Discarded`` events produced.
        crc_errors: Dropped runs that held a whole candidate frame with a bad CRC.

    Raises:
        DriverUsageError: ``max_frame`` not 8..256.
    """

    _side = _RESPONSES


class RequestParser(_FrameParser[Request]):
    """Slave-side stream parser: bytes from the master in, requests out (see the module doc).

    Arguments, attributes and errors are those of ``ResponseParser``; ``frames_ok``
    counts requests. Unlike responses, requests may be broadcast (unit 0).
    """

    _side = _REQUESTS
