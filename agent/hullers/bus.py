"""Modbus RTU bus scheduler: several counters on one RS-485 adapter (protocols §6 D).

Theory of operation
-------------------
One ``BusPoller`` per adapter. It opens one pymodbus ``AsyncModbusSerialClient`` on the
bus's stable path and runs, in a ``TaskGroup``, one task per unit and a watcher.

The bus carries one request at a time: a unit takes the bus lock for one attempt,
waits until ``min_gap_s`` has passed since the previous exchange ended (a slave needs
the line quiet to turn its RS-485 driver around), sends, and waits at most
``timeout_s`` for the reply. A request is tried ``1 + retries`` times and each attempt
takes the lock anew, so other units' requests go in between (``asyncio.Lock`` wakes
waiters in order). A dead unit therefore holds the bus for at most one attempt at a
time, never for a whole series.

A unit polls on a fixed grid of ``poll_interval_s``, so a poll delayed by a neighbour
does not shift the following ones. Every poll reads FC04 0x03E8 x6 (status, batch PV,
PV, display unit); every ``slow_interval_s`` also FC02 0x0000 x5 (terminal inputs) and
FC04 0x03ED (display unit). The result is one ``CounterSample``.

A poll fails when a request still fails after its retries (no reply, bad CRC, reply
from another unit), when the unit answers exception 04 or above, or when the reply is
unusable. The unit then waits a back-off (from its poll interval, doubling, jittered,
up to ``backoff_max_s``) instead of its next slot; after ``offline_after`` failed polls
in a row it is offline, and its probes are single attempts. Its slot stays empty until
the back-off expires, so the other units keep their pace. Each failed poll is reported
as a ``DeviceError``. Exceptions 01, 02 and 03 mean the unit does not have what the
configuration asks for: that is logged once and the block is not read again (without
the 0x03E8 block there is nothing to report and the unit is not polled at all).

When the port goes (an unplugged adapter), pymodbus drops its transport and calls its
``trace_connect`` hook; the watcher turns that into ``PortError``, the TaskGroup ends the
unit tasks, the client is closed and the same path is reopened after a capped, jittered
back-off (1 s doubling to 60 s), as ``agent/devices.py`` does for stream devices.

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
import collections
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, assert_never

import serial
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import SerialSettings
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.drivers.counter_autonics_ct import (
    INPUTS_ADDRESS,
    INPUTS_COUNT,
    STATUS_PV_ADDRESS,
    STATUS_PV_COUNT,
    Coil,
    CounterSample,
    InputRegister,
    decode_inputs,
    decode_status_pv,
)
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_ON,
    BitsResponse,
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    Response,
    ResponseParser,
    WriteCoilRequest,
    WriteCoilResponse,
    check_reply,
)

__all__ = [
    "Block",
    "BusPoller",
    "BusSpec",
    "ClientFactory",
    "DeviceError",
    "EventCallback",
    "ExchangeFailed",
    "Fault",
    "ModbusClient",
    "PollEvent",
    "RtuMaster",
    "UnitSpec",
    "UnitState",
    "UnitStats",
    "open_rtu_master",
    "pymodbus_client",
]

log = logging.getLogger(__name__)

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

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.port)
        if self.min_gap_s < 0 or self.timeout_s <= 0 or self.retries < 0:
            raise ValueError(f"bus {self.name}: need min_gap_s >= 0, timeout_s > 0, retries >= 0")
        if not 0 < self.reopen_initial_s <= self.reopen_max_s:
            raise ValueError(f"bus {self.name}: need 0 < reopen_initial_s <= reopen_max_s")


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """One Autonics CT on a bus.

    Attributes:
        name: Device id, as events and logs name it.
        address: Modbus address, 1..247 (the CT itself takes 1..127).
        poll_interval_s: Time between polls of the 0x03E8 block.
        slow_interval_s: Time between reads of the terminal inputs and display unit.
        offline_after: Failed polls in a row after which the unit is offline.
        backoff_max_s: Cap of the delay between polls of a failing unit.
    """

    name: str
    address: int
    poll_interval_s: float = 2.0
    slow_interval_s: float = 60.0
    offline_after: int = 3
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.address <= 247:
            raise ValueError(f"unit {self.name}: address must be 1..247: {self.address!r}")
        if self.poll_interval_s <= 0 or self.slow_interval_s <= 0 or self.offline_after < 1:
            raise ValueError(f"unit {self.name}: intervals must be > 0, offline_after >= 1")
        if self.backoff_max_s < self.poll_interval_s:
            raise ValueError(f"unit {self.name}: backoff_max_s must be >= poll_interval_s")


class Block(Enum):
    """What a request was for."""

    STATUS_PV = "status_pv"  # FC04 0x03E8 x6, every poll
    INPUTS = "inputs"  # FC02 0x0000 x5, every slow interval
    DISPLAY_UNIT = "display_unit"  # FC04 0x03ED x1, every slow interval
    RESET = "reset"  # FC05 coil 0x0000, operator only


class Fault(Enum):
    """Why a poll (or one attempt of it) failed."""

    NO_RESPONSE = "no-response"  # nothing usable came back in time
    BAD_CRC = "bad-crc"  # a reply came back with a bad CRC
    WRONG_UNIT = "wrong-unit"  # a reply came back from another address
    DEVICE_FAILURE = "device-failure"  # exception 04 and above
    BAD_REPLY = "bad-reply"  # a reply that does not fit the request, or out-of-range values
    CONFIG = "config"  # exception 01/02/03: the block is not read again
    PORT = "port"  # the adapter is gone


class UnitState(Enum):
    """What the scheduler thinks of a unit."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class DeviceError:
    """A poll failed, a block was given up, or the port went.

    Attributes:
        unit: The unit's name.
        address: Its Modbus address.
        fault: What went wrong.
        detail: One line for humans.
        block: The block being read, if any.
        exception_code: The Modbus exception code, for ``DEVICE_FAILURE`` and ``CONFIG``.
        offline: The unit is (now) offline.
        retry_in_s: When the unit will be polled again; ``None`` for ``CONFIG`` (a
            block given up) and ``PORT`` (it waits for the port).
    """

    unit: str
    address: int
    fault: Fault
    detail: str
    block: Block | None = None
    exception_code: int | None = None
    offline: bool = False
    retry_in_s: float | None = None


#: What a bus poller reports, with the unit's name.
PollEvent = CounterSample | DeviceError
#: ``await on_event(unit_name, event)``; a slow callback holds back that unit only.
EventCallback = Callable[[str, PollEvent], Awaitable[None]]


@dataclass(slots=True)
class UnitStats:
    """Counters since start, per unit (read them for health and status topics).

    Attributes:
        requests: Attempts sent.
        replies: Replies that answered their request (exception replies included).
        timeouts: Attempts that got nothing usable back in time.
        crc_errors: Attempts whose reply had a bad CRC.
        wrong_unit: Attempts answered from another address.
        bad_replies: Replies that did not fit or held out-of-range values.
        exceptions: Exception replies by code.
        polls_ok: Polls that produced a sample.
        polls_failed: Polls that did not.
        consecutive_failures: Failed polls since the last good one.
        state: Online, offline, or unknown before the first poll.
        disabled: Blocks given up after exception 01/02/03.
    """

    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    wrong_unit: int = 0
    bad_replies: int = 0
    exceptions: collections.Counter[int] = field(default_factory=collections.Counter)
    polls_ok: int = 0
    polls_failed: int = 0
    consecutive_failures: int = 0
    state: UnitState = UnitState.UNKNOWN
    disabled: set[Block] = field(default_factory=set)

    @property
    def crc_error_ratio(self) -> float:
        """CRC errors per attempt; above 0.05 suspect termination or baud (§6 D)."""
        return self.crc_errors / self.requests if self.requests else 0.0


# -- the pymodbus boundary ------------------------------------------------------------


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


# -- the scheduler --------------------------------------------------------------------

_BLOCKS: Mapping[Block, ReadRequest] = {
    # Unit 1 is a placeholder; ``_Unit.request`` puts the unit's address in.
    Block.STATUS_PV: ReadRequest(
        1, FunctionCode.READ_INPUT_REGISTERS, STATUS_PV_ADDRESS, STATUS_PV_COUNT
    ),
    Block.INPUTS: ReadRequest(1, FunctionCode.READ_DISCRETE_INPUTS, INPUTS_ADDRESS, INPUTS_COUNT),
    Block.DISPLAY_UNIT: ReadRequest(
        1, FunctionCode.READ_INPUT_REGISTERS, InputRegister.DISPLAY_UNIT, 1
    ),
}
_CONFIG_CODES = frozenset(
    {
        ExceptionCode.ILLEGAL_FUNCTION,
        ExceptionCode.ILLEGAL_DATA_ADDRESS,
        ExceptionCode.ILLEGAL_DATA_VALUE,
    }
)


def _exception_name(code: int) -> str:
    try:
        return f"{code:02d} {ExceptionCode(code).name}"
    except ValueError:
        return f"{code:02d}"


class _Unit:
    def __init__(self, spec: UnitSpec, rng: random.Random | None) -> None:
        self.spec = spec
        self.stats = UnitStats()
        self.backoff = Backoff(
            initial_s=spec.poll_interval_s, maximum_s=spec.backoff_max_s, rng=rng
        )
        self.slow_due = 0.0

    def request(self, block: Block) -> ReadRequest:
        return dataclasses.replace(_BLOCKS[block], unit=self.spec.address)

    @property
    def offline(self) -> bool:
        return self.stats.state is UnitState.OFFLINE


class BusPoller:
    """Polls the units of one bus forever; see the module docstring.

    Args:
        bus: The adapter and its timing.
        units: The units on it (distinct names and addresses).
        on_event: Awaited with ``(unit_name, CounterSample | DeviceError)``.
        client_factory: Builds the pymodbus client (tests pass fakes).
        rng: Jitter source for the back-offs.

    Attributes:
        stats: Per-unit counters, by unit name.
    """

    def __init__(
        self,
        bus: BusSpec,
        units: Iterable[UnitSpec],
        *,
        on_event: EventCallback,
        client_factory: ClientFactory = pymodbus_client,
        rng: random.Random | None = None,
    ) -> None:
        self._bus = bus
        self._units: dict[str, _Unit] = {}
        for spec in units:
            if spec.name in self._units:
                raise ValueError(f"bus {bus.name}: two units named {spec.name!r}")
            if any(u.spec.address == spec.address for u in self._units.values()):
                raise ValueError(f"bus {bus.name}: two units at address {spec.address}")
            self._units[spec.name] = _Unit(spec, rng)
        self._on_event = on_event
        self._client_factory = client_factory
        self._reopen = Backoff(initial_s=bus.reopen_initial_s, maximum_s=bus.reopen_max_s, rng=rng)
        self._lock = asyncio.Lock()
        self._last_end = float("-inf")
        self._master: RtuMaster | None = None

    @property
    def stats(self) -> Mapping[str, UnitStats]:
        """Per-unit counters, by unit name."""
        return {name: unit.stats for name, unit in self._units.items()}

    # -- the port ----------------------------------------------------------------------

    async def run_loop(self) -> None:
        """Open the port, poll, and reopen after it goes, until cancelled."""
        while True:
            error: PortError | None = None
            try:
                await self._run_open()
            except* PortError as group:
                first = group.exceptions[0]
                # Tasks raise PortError itself, never a group of them.
                assert isinstance(first, PortError)
                error = first
            if error is None:  # pragma: no cover - _run_open only ends by raising
                continue
            delay = self._reopen.next_delay()
            log.warning(
                "Modbus bus down: %s; reopening in %.1f s (attempt %d)",
                error,
                delay,
                self._reopen.attempts,
            )
            await self._port_down(error)
            await asyncio.sleep(delay)

    async def _run_open(self) -> None:
        bus = self._bus
        async with open_rtu_master(bus, client_factory=self._client_factory) as master:
            log.info("Opened %s for Modbus bus %s (%d units)", bus.port, bus.name, len(self._units))
            self._reopen.reset()
            self._master = master
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._watch_loop(master), name=f"watch[{bus.name}]")
                    for unit in self._units.values():
                        tg.create_task(
                            self._unit_loop(master, unit), name=f"poll[{bus.name}/{unit.spec.name}]"
                        )
            finally:
                self._master = None

    async def _watch_loop(self, master: RtuMaster) -> None:
        await master.lost.wait()
        raise PortError(
            "connection lost (adapter unplugged?)", device=self._bus.name, port=self._bus.port
        )

    async def _port_down(self, error: PortError) -> None:
        # Once per outage per unit: the units that were not already offline learn why.
        for unit in self._units.values():
            if unit.offline:
                continue
            unit.stats.state = UnitState.OFFLINE
            await self._on_event(
                unit.spec.name,
                DeviceError(
                    unit=unit.spec.name,
                    address=unit.spec.address,
                    fault=Fault.PORT,
                    detail=str(error),
                    offline=True,
                ),
            )

    # -- one unit ----------------------------------------------------------------------

    async def _unit_loop(self, master: RtuMaster, unit: _Unit) -> None:
        loop = asyncio.get_running_loop()
        unit.slow_due = next_due = loop.time()
        while Block.STATUS_PV not in unit.stats.disabled:
            delay = next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                sample = await self._poll(master, unit)
            except ExchangeFailed as failed:
                next_due = loop.time() + await self._poll_failed(unit, failed)
                continue
            if sample is None:
                continue  # the main block was just given up
            self._poll_ok(unit)
            await self._on_event(unit.spec.name, sample)
            # Keep the grid; if a long delay left it behind, start again from now.
            next_due = max(next_due + unit.spec.poll_interval_s, loop.time())
        log.warning(
            "Unit %s (address %d on %s) is not polled any more",
            unit.spec.name,
            unit.spec.address,
            self._bus.name,
        )

    async def _poll(self, master: RtuMaster, unit: _Unit) -> CounterSample | None:
        loop = asyncio.get_running_loop()
        response = await self._read(master, unit, Block.STATUS_PV)
        if response is None:
            return None
        assert isinstance(response, RegistersResponse)
        sample = decode_status_pv(response.registers)
        if isinstance(sample, Discarded):
            unit.stats.bad_replies += 1
            raise ExchangeFailed(Fault.BAD_REPLY, f"{sample.reason}: {sample.data.hex(' ')}")
        if loop.time() >= unit.slow_due:
            inputs = await self._read(master, unit, Block.INPUTS)
            if isinstance(inputs, BitsResponse):
                decoded = decode_inputs(inputs.bits)
                if isinstance(decoded, Discarded):  # pragma: no cover - check_reply counted
                    raise ExchangeFailed(Fault.BAD_REPLY, decoded.reason)
                sample = dataclasses.replace(sample, inputs=decoded)
            display = await self._read(master, unit, Block.DISPLAY_UNIT)
            if isinstance(display, RegistersResponse):
                sample = dataclasses.replace(sample, display_code=display.registers[0])
            unit.slow_due = loop.time() + unit.spec.slow_interval_s
        return sample

    async def _read(self, master: RtuMaster, unit: _Unit, block: Block) -> Response | None:
        # The block's reply, or None when the block is (now) given up.
        if block in unit.stats.disabled:
            return None
        request = unit.request(block)
        attempts = 1 if unit.offline else 1 + self._bus.retries
        response = await self._exchange(master, unit, request, attempts=attempts)
        if not isinstance(response, ExceptionResponse):
            return response
        code = response.code
        unit.stats.exceptions[code] += 1
        what = f"exception {_exception_name(code)} reading {block.value}"
        if code not in _CONFIG_CODES:
            raise ExchangeFailed(Fault.DEVICE_FAILURE, what, code=code)
        unit.stats.disabled.add(block)
        log.error(
            "Unit %s (address %d) answers %s: check its model and the site config; "
            "%s is not read again",
            unit.spec.name,
            unit.spec.address,
            what,
            block.value,
        )
        await self._on_event(
            unit.spec.name,
            DeviceError(
                unit=unit.spec.name,
                address=unit.spec.address,
                fault=Fault.CONFIG,
                detail=what,
                block=block,
                exception_code=code,
                offline=unit.offline,
            ),
        )
        return None

    async def _exchange(
        self,
        master: RtuMaster,
        unit: _Unit,
        request: ReadRequest | WriteCoilRequest,
        *,
        attempts: int,
    ) -> Response:
        stats = unit.stats
        failure = ExchangeFailed(Fault.NO_RESPONSE, "no attempt made")
        for _ in range(attempts):
            async with self._lock:
                await self._wait_gap()
                stats.requests += 1
                try:
                    response = await master.request(request)
                except ExchangeFailed as failed:
                    failure = failed
                    self._count(stats, failed.fault)
                    continue
                finally:
                    self._last_end = asyncio.get_running_loop().time()
            reason = check_reply(request, response)
            if reason is not None:
                stats.bad_replies += 1
                raise ExchangeFailed(Fault.BAD_REPLY, f"{reason}: {response!r}")
            stats.replies += 1
            return response
        raise failure

    async def _wait_gap(self) -> None:
        delay = self._last_end + self._bus.min_gap_s - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    @staticmethod
    def _count(stats: UnitStats, fault: Fault) -> None:
        match fault:
            case Fault.NO_RESPONSE:
                stats.timeouts += 1
            case Fault.BAD_CRC:
                stats.crc_errors += 1
            case Fault.WRONG_UNIT:
                stats.wrong_unit += 1
            case Fault.BAD_REPLY:
                stats.bad_replies += 1
            case Fault.DEVICE_FAILURE | Fault.CONFIG | Fault.PORT:  # pragma: no cover
                pass
            case _:  # pragma: no cover
                assert_never(fault)

    def _poll_ok(self, unit: _Unit) -> None:
        stats = unit.stats
        if stats.state is not UnitState.ONLINE:
            log.info(
                "Unit %s (address %d on %s) online",
                unit.spec.name,
                unit.spec.address,
                self._bus.name,
            )
        stats.state = UnitState.ONLINE
        stats.polls_ok += 1
        stats.consecutive_failures = 0
        unit.backoff.reset()

    async def _poll_failed(self, unit: _Unit, failed: ExchangeFailed) -> float:
        # Count, maybe go offline, report; returns the delay before the next poll.
        spec, stats = unit.spec, unit.stats
        stats.polls_failed += 1
        stats.consecutive_failures += 1
        delay = unit.backoff.next_delay()
        if not unit.offline and stats.consecutive_failures >= spec.offline_after:
            stats.state = UnitState.OFFLINE
        if unit.offline:
            log.warning(
                "Unit %s (address %d on %s) offline: %s; polling again in %.1f s (attempt %d)",
                spec.name,
                spec.address,
                self._bus.name,
                failed.detail,
                delay,
                stats.consecutive_failures,
            )
        else:
            log.debug("Unit %s poll failed: %s", spec.name, failed.detail)
        await self._on_event(
            spec.name,
            DeviceError(
                unit=spec.name,
                address=spec.address,
                fault=failed.fault,
                detail=failed.detail,
                exception_code=failed.code,
                offline=unit.offline,
                retry_in_s=delay,
            ),
        )
        return delay

    # -- operator commands ---------------------------------------------------------------

    async def reset_counter(self, unit_name: str) -> DeviceError | None:
        """Reset a unit's PV (FC05 coil 0x0000 = FF00); operator-initiated only.

        Returns:
            ``None`` once the unit echoed the write, else what went wrong.

        Raises:
            KeyError: No unit of that name on this bus.
        """
        unit = self._units[unit_name]
        spec = unit.spec
        request = WriteCoilRequest(spec.address, Coil.RESET, COIL_ON)

        def error(fault: Fault, detail: str, code: int | None = None) -> DeviceError:
            return DeviceError(
                unit=spec.name,
                address=spec.address,
                fault=fault,
                detail=detail,
                block=Block.RESET,
                exception_code=code,
                offline=unit.offline,
            )

        master = self._master
        if master is None:
            return error(Fault.PORT, f"bus {self._bus.name} is not open")
        try:
            response = await self._exchange(master, unit, request, attempts=1 + self._bus.retries)
        except ExchangeFailed as failed:
            return error(failed.fault, failed.detail)
        except PortError as exc:
            return error(Fault.PORT, str(exc))
        if isinstance(response, ExceptionResponse):
            unit.stats.exceptions[response.code] += 1
            fault = Fault.CONFIG if response.code in _CONFIG_CODES else Fault.DEVICE_FAILURE
            return error(fault, f"exception {_exception_name(response.code)}", response.code)
        log.info("Unit %s (address %d) counter reset by operator", spec.name, spec.address)
        return None
