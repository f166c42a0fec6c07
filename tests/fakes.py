"""Fakes the tests share, in place of what the agent would touch for real.

``ManualClock``
    A monotonic clock that moves only when a test sets ``now``.
``FakeSerialPort``, ``FakePorts``
    A ``SerialPort`` fed from a queue, and the ``PortOpener`` that hands them out; a
    device loop reads and writes them as it would ``/dev/ttyUSB0``.
``FakeModbusClient``
    Stands for pymodbus' ``AsyncModbusSerialClient`` behind ``ClientFactory``: scripted
    replies, or the replies of simulated units (``CounterUnitSim``).
``PollRecorder``
    A ``BusPoller``'s ``on_event`` callback that keeps what it was told.

They are fakes, not mocks: each behaves like the real thing as far as the agent can
tell, and records what happened for the test to look at afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

from pymodbus.pdu import ExceptionResponse as PduException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadDiscreteInputsResponse, WriteSingleCoilResponse
from pymodbus.pdu.register_message import ReadInputRegistersResponse

from coffee_telemetry.agent.accept import AcceptStage, Commit
from coffee_telemetry.agent.bus.rtu import BusSpec, ModbusClient
from coffee_telemetry.agent.config import SerialSettings
from coffee_telemetry.agent.devices.ports import SerialPort
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.hullers.bus import DeviceError, PollEvent
from coffee_telemetry.agent.readings import Stamper
from coffee_telemetry.drivers._framing import LineSplitter
from coffee_telemetry.drivers.counter_autonics_ct import CounterSample
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_OFF,
    COIL_ON,
    BitsResponse,
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    WriteCoilRequest,
    WriteCoilResponse,
)
from coffee_telemetry.drivers.scale_mtsics import decode_command
from coffee_telemetry.simulators.rtu import CounterUnitSim

__all__ = [
    "Answer",
    "FakeModbusClient",
    "FakePorts",
    "FakeSerialPort",
    "ManualClock",
    "PollRecorder",
]


class ManualClock:
    """A monotonic clock in seconds that moves only when ``now`` is set."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSerialPort:
    """A port fed from a queue; ``None`` in the queue means 'unplugged'.

    Queue raw bytes, or ``(data, t)`` (what ``send(data, at=t)`` does) to set ``clock``
    to ``t`` when the device loop reads them. What the agent writes is kept in
    ``written``. With ``replies``, it is also read as MT-SICS command lines: each name
    goes to ``commands`` and is answered from ``replies`` (a missing command gets no
    answer), as a balance would.
    """

    def __init__(
        self,
        *,
        device: str = "fake",
        path: str = "/dev/fake",
        replies: Mapping[str, bytes] | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.queue: asyncio.Queue[bytes | tuple[bytes, float | None] | None] = asyncio.Queue()
        self.device = device
        self.path = path
        self.replies = replies
        self.clock = clock
        self.written: list[bytes] = []
        self.commands: list[str] = []
        self._lines = LineSplitter("crlf")

    async def read(self) -> bytes:
        item = await self.queue.get()
        if item is None:
            raise PortError("gone", device=self.device, port=self.path)
        if isinstance(item, bytes):
            return item
        data, at = item
        if at is not None and self.clock is not None:
            self.clock.now = at
        return data

    async def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.replies is None:
            return
        for line in self._lines.feed(data):
            name = decode_command(line)
            assert isinstance(name, str), f"the agent wrote a bad command line: {line!r}"
            self.commands.append(name)
            reply = self.replies.get(name)
            if reply is not None:
                self.send(reply)

    def send(self, data: bytes, *, at: float | None = None) -> None:
        self.queue.put_nowait((data, at))

    def unplug(self) -> None:
        self.queue.put_nowait(None)


class FakePorts:
    """Opens fake ports as ``open_serial_port`` would (a ``PortOpener``).

    While ``missing`` is set, opening fails like an absent adapter. ``opened`` lists every
    port opened, ``current`` is the last; ``changed`` is set at each open. New ports get
    ``replies`` (the same mapping, so a test may change it later) and ``clock``.
    """

    def __init__(
        self, *, replies: Mapping[str, bytes] | None = None, clock: ManualClock | None = None
    ) -> None:
        self.opened: list[FakeSerialPort] = []
        self.missing = False
        self.changed = asyncio.Event()
        self._replies = replies
        self._clock = clock

    @property
    def current(self) -> FakeSerialPort | None:
        return self.opened[-1] if self.opened else None

    @asynccontextmanager
    async def open(
        self, *, device: str, path: str, settings: SerialSettings
    ) -> AsyncIterator[SerialPort]:
        if self.missing:
            raise PortError("no such file", device=device, port=path)
        port = FakeSerialPort(device=device, path=path, replies=self._replies, clock=self._clock)
        self.opened.append(port)
        self.changed.set()
        yield port


#: Scripts a ``FakeModbusClient``: ``await answer(kind, address, unit)``, kind ``fc02``,
#: ``fc04`` or ``fc05``.
Answer = Callable[[str, int, int], Awaitable[ModbusPDU]]

_KINDS = {
    FunctionCode.READ_DISCRETE_INPUTS: "fc02",
    FunctionCode.READ_INPUT_REGISTERS: "fc04",
    FunctionCode.WRITE_SINGLE_COIL: "fc05",
}


class FakeModbusClient:
    """Stands for pymodbus' client (a ``ModbusClient``), without a serial line.

    Replies come from ``answer`` when one is given, else from ``units`` (the
    ``CounterUnitSim`` at the request's address, by address in ``units``). ``calls``
    keeps ``(loop time, kind, unit)`` of every request. ``factory`` is the
    ``ClientFactory`` that hands this client out; it keeps pymodbus' hooks
    (``trace_packet``, ``trace_connect``) for the test to call as pymodbus would.
    """

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        units: Sequence[CounterUnitSim] = (),
        connects: bool = True,
    ) -> None:
        self.answer = answer
        self.units = {u.address: u for u in units}
        self.connects = connects
        self.connected = False
        self.closed = False
        self.max_no_responses = 0
        self.calls: list[tuple[float, str, int]] = []
        self.trace_connect: Callable[[bool], None] = lambda up: None
        self.trace_packet: Callable[[bool, bytes], bytes] = lambda sending, data: data

    def factory(
        self,
        bus: BusSpec,
        *,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_connect: Callable[[bool], None],
    ) -> ModbusClient:
        self.trace_connect = trace_connect
        self.trace_packet = trace_packet
        return self

    async def connect(self) -> bool:
        self.connected = self.connects
        return self.connects

    def close(self) -> None:
        self.closed = True
        self.connected = False

    def set_max_no_responses(self, max_count: int) -> None:
        self.max_no_responses = max_count

    def _call(self, request: ReadRequest | WriteCoilRequest) -> Awaitable[ModbusPDU]:
        kind = _KINDS[request.function]
        self.calls.append((asyncio.get_running_loop().time(), kind, request.unit))
        if self.answer is not None:
            return self.answer(kind, request.address, request.unit)
        return self._from_units(request)

    async def _from_units(self, request: ReadRequest | WriteCoilRequest) -> ModbusPDU:
        response = self.units[request.unit].handle(request)
        pdu: ModbusPDU
        match response:
            case RegistersResponse(registers=registers):
                pdu = ReadInputRegistersResponse(registers=list(registers))
            case BitsResponse(bits=bits):
                pdu = ReadDiscreteInputsResponse(bits=[*bits, False, False, False])
            case WriteCoilResponse(address=address, value=value):
                pdu = WriteSingleCoilResponse(address=address, bits=[value == COIL_ON])
            case ExceptionResponse(code=code):
                pdu = PduException(int(request.function), code)
            case _:
                raise AssertionError(response)
        pdu.dev_id = request.unit
        return pdu

    def read_input_registers(
        self,
        address: int,
        *,
        count: int = 1,
        device_id: int = 1,
        no_response_expected: bool = False,
    ) -> Awaitable[ModbusPDU]:
        return self._call(ReadRequest(device_id, FunctionCode.READ_INPUT_REGISTERS, address, count))

    def read_discrete_inputs(
        self,
        address: int,
        *,
        count: int = 1,
        device_id: int = 1,
        no_response_expected: bool = False,
    ) -> Awaitable[ModbusPDU]:
        return self._call(ReadRequest(device_id, FunctionCode.READ_DISCRETE_INPUTS, address, count))

    def write_coil(
        self, address: int, value: bool, *, device_id: int = 1, no_response_expected: bool = False
    ) -> Awaitable[ModbusPDU]:
        return self._call(WriteCoilRequest(device_id, address, COIL_ON if value else COIL_OFF))


class PollRecorder:
    """A bus poller's event callback: keeps ``(loop time, unit, event)``."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, PollEvent]] = []
        self._changed = asyncio.Event()

    async def __call__(self, unit: str, event: PollEvent) -> None:
        self.events.append((asyncio.get_running_loop().time(), unit, event))
        self._changed.set()

    def samples(self, unit: str) -> list[tuple[float, CounterSample]]:
        return [(t, e) for t, u, e in self.events if u == unit and isinstance(e, CounterSample)]

    def errors(self, unit: str) -> list[DeviceError]:
        return [e for _, u, e in self.events if u == unit and isinstance(e, DeviceError)]

    async def wait_for(self, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self._changed.clear()
                await self._changed.wait()


def stage(commit: Commit, stamper: Stamper | None = None) -> AcceptStage:
    """The accept stage over ``commit`` (an outbox's ``accept``, or a recording fake)."""
    return AcceptStage(commit, stamper=stamper or Stamper(), health=Health())
