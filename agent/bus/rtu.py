"""One Modbus RTU master on one RS-485 adapter: requests out, replies or mapped errors back.

``RtuMaster`` wraps one pymodbus ``AsyncModbusSerialClient`` (``pymodbus_client``; tests
pass fakes through ``ClientFactory``) and sends one request at a time for the bus's
``BusScheduler`` (``scheduler``), which owns the port, the bus lock and the gaps. ``BusSpec``
says which adapter and how fast; ``Fault`` says what went wrong with an attempt.

pymodbus at the boundary (3.11.4)
---------------------------------
Everything pymodbus raises or hides is mapped in ``RtuMaster.request``:

- calls take ``device_id=`` (``slave=`` in older releases; 3.11.4 knows only ``device_id``);
- a request cancelled from outside, our timeout scope included, comes back as
  ``ModbusIOException("Request cancelled outside pymodbus.")``: a timeout when our scope
  expired, and re-raised as ``CancelledError`` when the task itself is being cancelled,
  so cancellation is never swallowed;
- frames with a bad CRC or from another unit are dropped silently and look like a
  timeout: the bytes of the attempt, taken from the ``trace_packet`` hook, are run
  through ``drivers.modbus_rtu.ResponseParser`` to tell ``BAD_CRC`` and ``WRONG_UNIT``
  from ``NO_RESPONSE``;
- ``ConnectionException``, a lost transport, and pyserial or OS errors are ``PortError``;
  any other ``ModbusException`` is a ``BAD_REPLY``;
- the client's own timeout, retries, reconnect and "close after retries + 3 silent
  requests" are disabled or pushed out of the way: this module owns those decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol, assert_never

import serial
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from coffee_telemetry.agent.config import BusConfig, SerialSettings
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_ON,
    BitsResponse,
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    Response,
    ResponseParser,
    WriteCoilRequest,
    WriteCoilResponse,
)

if TYPE_CHECKING:
    from pymodbus.pdu import ModbusPDU

__all__ = [
    "BusSpec",
    "ClientFactory",
    "ExchangeFailed",
    "Fault",
    "ModbusClient",
    "RtuMaster",
    "open_rtu_master",
    "pymodbus_client",
]

# pymodbus closes the port itself after ``retries + 3`` requests in a row without a
# reply. On a shared bus that would punish every unit for one dead one; never let it.
_NEVER = 1 << 30


def _default_serial() -> SerialSettings:
    return SerialSettings(baudrate=9600, parity="N", stopbits=2)  # CT factory default


@dataclass(frozen=True, slots=True)
class BusSpec:
    """One RS-485 adapter.

    Attributes:
        port: Stable path of the adapter (``/dev/serial/by-id/...``).
        serial: Line settings (default 9600 8N2, the CT's factory setting).
        name: For logs, task names and ``PortError.device``; defaults to ``port``.
        min_gap_s: Quiet time between the end of one exchange and the next request.
        timeout_s: How long one attempt waits for its reply.
        retries: Extra attempts per request (offline units get none).
        reopen_initial_s: First delay before reopening a lost port.
        reopen_max_s: Cap of that delay.
    """

    port: str
    serial: SerialSettings = field(default_factory=_default_serial)
    name: str = ""
    min_gap_s: float = 0.02
    timeout_s: float = 0.5
    retries: int = 1
    reopen_initial_s: float = 1.0
    reopen_max_s: float = 60.0

    @classmethod
    def from_config(cls, bus: BusConfig) -> BusSpec:
        """The adapter a ``[[buses]]`` entry describes."""
        return cls(
            port=bus.port,
            serial=bus.serial,
            name=bus.id,
            min_gap_s=bus.min_gap_s,
            timeout_s=bus.timeout_s,
            retries=bus.retries,
        )

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.port)
        if self.min_gap_s < 0 or self.timeout_s <= 0 or self.retries < 0:
            raise ValueError(f"bus {self.name}: need min_gap_s >= 0, timeout_s > 0, retries >= 0")
        if not 0 < self.reopen_initial_s <= self.reopen_max_s:
            raise ValueError(f"bus {self.name}: need 0 < reopen_initial_s <= reopen_max_s")


class Fault(Enum):
    """Why a poll (or one attempt of it) failed."""

    NO_RESPONSE = "no-response"  # nothing usable came back in time
    BAD_CRC = "bad-crc"  # a reply came back with a bad CRC
    WRONG_UNIT = "wrong-unit"  # a reply came back from another address
    DEVICE_FAILURE = "device-failure"  # exception 04 and above
    BAD_REPLY = "bad-reply"  # a reply that does not fit the request, or out-of-range values
    CONFIG = "config"  # exception 01/02/03: the block is not read again
    PORT = "port"  # the adapter is gone


class ModbusClient(Protocol):
    """The part of pymodbus' ``AsyncModbusSerialClient`` this module uses."""

    @property
    def connected(self) -> bool:
        """Whether the transport is up."""
        ...

    async def connect(self) -> bool:
        """Open the port; ``False`` when it cannot."""
        ...

    def close(self) -> None:
        """Close the port."""
        ...

    def set_max_no_responses(self, max_count: int) -> None:
        """How many silent requests in a row before the client closes the port."""
        ...

    def read_input_registers(
        self,
        address: int,
        *,
        count: int = 1,
        device_id: int = 1,
        no_response_expected: bool = False,
    ) -> Awaitable[ModbusPDU]:
        """FC04."""
        ...

    def read_discrete_inputs(
        self,
        address: int,
        *,
        count: int = 1,
        device_id: int = 1,
        no_response_expected: bool = False,
    ) -> Awaitable[ModbusPDU]:
        """FC02."""
        ...

    def write_coil(
        self, address: int, value: bool, *, device_id: int = 1, no_response_expected: bool = False
    ) -> Awaitable[ModbusPDU]:
        """FC05."""
        ...


class ClientFactory(Protocol):
    """Builds the client for a bus (``pymodbus_client``; tests pass fakes)."""

    def __call__(
        self,
        bus: BusSpec,
        *,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_connect: Callable[[bool], None],
    ) -> ModbusClient:
        """A client for ``bus``, calling the two hooks as pymodbus does."""
        ...


def pymodbus_client(
    bus: BusSpec,
    *,
    trace_packet: Callable[[bool, bytes], bytes],
    trace_connect: Callable[[bool], None],
) -> ModbusClient:
    """The real client for ``bus``: retries, reconnects and timeouts are ours, not its own."""
    # Imported here: pymodbus' client (3 MB) is loaded only by an agent with a bus.
    from pymodbus.client import AsyncModbusSerialClient

    return AsyncModbusSerialClient(
        bus.port,
        baudrate=bus.serial.baudrate,
        bytesize=bus.serial.bytesize,
        parity=bus.serial.parity,
        stopbits=bus.serial.stopbits,
        name=bus.name,
        # Its timeout bounds the port open and, as a backstop, each reply; our own
        # timeout scope in ``RtuMaster.request`` is shorter and is the one that fires.
        timeout=bus.timeout_s + 1.0,
        retries=0,
        reconnect_delay=0,
        trace_packet=trace_packet,
        trace_connect=trace_connect,
    )


class ExchangeFailed(Exception):
    """A request got no usable reply; the unit is blamed, not the port.

    Attributes:
        fault: ``NO_RESPONSE``, ``BAD_CRC``, ``WRONG_UNIT``, ``BAD_REPLY`` or
            ``DEVICE_FAILURE``.
        detail: One line for humans.
        code: The Modbus exception code, for ``DEVICE_FAILURE``.
    """

    def __init__(self, fault: Fault, detail: str, *, code: int | None = None) -> None:
        super().__init__(detail)
        self.fault = fault
        self.detail = detail
        self.code = code


class _Capture:
    # Rebuilds what arrived during one attempt from pymodbus' ``trace_packet`` hook. The
    # hook sees the client's whole receive buffer each time bytes arrive; the RTU framer
    # either keeps that buffer or empties it, so a buffer that starts with the previous
    # one has grown and only its tail is new.
    def __init__(self) -> None:
        self.data = bytearray()
        self._seen = b""

    def start(self) -> None:
        self.data.clear()
        self._seen = b""

    def trace(self, sending: bool, packet: bytes) -> bytes:
        if sending:
            self._seen = b""
        else:
            grown = bool(self._seen) and packet.startswith(self._seen)
            self.data += packet[len(self._seen) :] if grown else packet
            self._seen = packet
            del self.data[:-1024]  # bounded: only the last frames matter
        return packet


def _classify_silence(request: ReadRequest | WriteCoilRequest, data: bytes) -> ExchangeFailed:
    # What the bytes of an attempt that timed out were, as the driver's parser reads them.
    if not data:
        return ExchangeFailed(Fault.NO_RESPONSE, "no reply")
    parser = ResponseParser()
    parser.receive_data(data)
    parser.idle()
    events = parser.events()
    if any(isinstance(e, Discarded) and e.reason == "bad-crc" for e in events):
        return ExchangeFailed(Fault.BAD_CRC, f"reply with a bad CRC: {data[:32].hex(' ')}")
    others = sorted({e.unit for e in events if not isinstance(e, Discarded)} - {request.unit})
    if others:
        return ExchangeFailed(Fault.WRONG_UNIT, f"reply from unit {others[0]} instead")
    return ExchangeFailed(Fault.NO_RESPONSE, f"no usable reply: {data[:32].hex(' ')}")


def _to_response(request: ReadRequest | WriteCoilRequest, pdu: ModbusPDU) -> Response:
    unit = request.unit
    if pdu.isError():
        return ExceptionResponse(unit, pdu.function_code & 0x7F, pdu.exception_code)
    match request:
        case ReadRequest(function=FunctionCode.READ_DISCRETE_INPUTS | FunctionCode.READ_COILS):
            return BitsResponse(unit, request.function, tuple(bool(b) for b in pdu.bits))
        case ReadRequest(function=function):
            return RegistersResponse(unit, function, tuple(pdu.registers))
        case WriteCoilRequest():
            value = COIL_ON if pdu.bits and pdu.bits[0] else 0
            return WriteCoilResponse(unit, pdu.address, value)
        case _:  # pragma: no cover
            assert_never(request)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RtuMaster:
    """One open pymodbus client: our requests in, our responses out, errors mapped.

    Use ``open_rtu_master``. ``lost`` is set when the port goes away.
    """

    def __init__(self, bus: BusSpec, *, client_factory: ClientFactory = pymodbus_client) -> None:
        self._bus = bus
        self._capture = _Capture()
        self.lost = asyncio.Event()
        self._client = client_factory(
            bus, trace_packet=self._capture.trace, trace_connect=self._on_connect
        )
        self._client.set_max_no_responses(_NEVER)

    def _on_connect(self, up: bool) -> None:
        if not up:
            self.lost.set()

    def _port_error(self, message: str) -> PortError:
        return PortError(message, device=self._bus.name, port=self._bus.port)

    async def connect(self) -> None:
        """Open the port.

        Raises:
            PortError: It cannot be opened.
        """
        try:
            ok = await self._client.connect()
        except (OSError, serial.SerialException, ModbusException) as exc:
            raise self._port_error(f"cannot open: {exc}") from exc
        if not ok or not self._client.connected:
            raise self._port_error("cannot open (missing, busy or refused the settings)")

    def close(self) -> None:
        """Close the port (safe to call twice)."""
        self._client.close()

    async def request(self, request: ReadRequest | WriteCoilRequest) -> Response:
        """Send one request and wait ``timeout_s`` for its reply; one attempt.

        Returns:
            The reply (an exception reply included); it may still not fit the request.

        Raises:
            PortError: The port is gone.
            ExchangeFailed: No usable reply (``NO_RESPONSE``, ``BAD_CRC``, ``WRONG_UNIT``) or
                an unreadable one (``BAD_REPLY``).
        """
        client = self._client
        if self.lost.is_set() or not client.connected:
            raise self._port_error("port closed (adapter unplugged?)")
        self._capture.start()
        scope = asyncio.timeout(self._bus.timeout_s)
        try:
            async with scope:
                pdu = await self._call(request)
        except TimeoutError:
            raise _classify_silence(request, bytes(self._capture.data)) from None
        except ConnectionException as exc:
            raise self._port_error(f"connection: {exc}") from exc
        except ModbusIOException as exc:
            if _cancelling():
                # pymodbus turned our own cancellation into an error: give it back.
                raise asyncio.CancelledError from exc
            if scope.expired():
                raise _classify_silence(request, bytes(self._capture.data)) from None
            if self.lost.is_set() or not client.connected:
                raise self._port_error(f"i/o: {exc}") from exc
            raise ExchangeFailed(Fault.BAD_REPLY, f"i/o: {exc}") from exc
        except ModbusException as exc:
            if _cancelling():
                raise asyncio.CancelledError from exc
            raise ExchangeFailed(Fault.BAD_REPLY, str(exc)) from exc
        except (serial.SerialException, OSError) as exc:
            raise self._port_error(f"serial: {exc}") from exc
        if _cancelling():
            # asyncio.wait_for inside pymodbus can return a reply and drop a
            # cancellation that arrived with it (CPython gh-86296): honour it.
            raise asyncio.CancelledError
        return _to_response(request, pdu)

    def _call(self, request: ReadRequest | WriteCoilRequest) -> Awaitable[ModbusPDU]:
        client = self._client
        match request:
            case ReadRequest(function=FunctionCode.READ_INPUT_REGISTERS):
                return client.read_input_registers(
                    request.address, count=request.count, device_id=request.unit
                )
            case ReadRequest(function=FunctionCode.READ_DISCRETE_INPUTS):
                return client.read_discrete_inputs(
                    request.address, count=request.count, device_id=request.unit
                )
            case WriteCoilRequest():
                return client.write_coil(
                    request.address, request.value == COIL_ON, device_id=request.unit
                )
            case _:
                raise ValueError(f"RtuMaster does not send {request!r}")


@contextlib.asynccontextmanager
async def open_rtu_master(
    bus: BusSpec, *, client_factory: ClientFactory = pymodbus_client
) -> AsyncIterator[RtuMaster]:
    """Open the bus's port; close it on exit whatever happened.

    Raises:
        PortError: The port cannot be opened.
    """
    master = RtuMaster(bus, client_factory=client_factory)
    try:
        await master.connect()
        yield master
    finally:
        master.close()
