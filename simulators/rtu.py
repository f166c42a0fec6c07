"""Autonics CT units on one simulated RS-485 bus: a Modbus RTU slave on a pty (protocols §6 D).

Built from the project's own drivers (``drivers.modbus_rtu`` frames, ``drivers.counter_autonics_ct``
registers), not from pymodbus' server, so the agent's pymodbus client is checked against
an independent implementation of the same spec.

- ``CounterUnitSim`` is one CT unit: its registers, coils and inputs, and a PV that moves
  with a clock. Counter mode counts ``rate_per_s`` bags per second while running; timer
  mode accumulates run time in seconds. Running is a flag (``set_running``) or a
  run/stop cycle. The PV wraps to 0 after 999999, as the display does. ``handle()``
  answers one request; it is pure apart from the clock, so tests can call it directly.
- ``RtuBusSim`` serves several units on one ``PtyPort``: it frames requests by expected
  length and CRC (``RequestParser``), with 3.5 characters of silence ending anything
  left over; a bad CRC gets silence, as real slaves do. Requests to addresses nobody has
  get silence too, and so do broadcasts (the CT does not support them). FC01/02/04/05
  are answered per §3.2; other functions get exception 01, addresses outside the map 02,
  illegal counts and coil values 03.
- ``Faults`` (per unit, assign a new one to ``unit.faults`` live): no reply, a reply late
  by a given delay, a corrupted CRC, a reply from another address, or an exception code
  for everything. Late replies are scheduled, not slept on: other units keep answering.

An unplug (``PtyPort.unplug``) makes the serve loop wait for the replug; it then starts
with a fresh parser. Sleeps and timers live here, never in the drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import assert_never

from coffee_telemetry.drivers.counter_autonics_ct import (
    BATCH_PV_MAX,
    PV_MAX,
    PV_MIN,
    Coil,
    CounterSample,
    InputRegister,
    Mode,
    StatusBit,
    TerminalInputs,
    encode_inputs,
    encode_status,
    encode_status_pv,
)
from coffee_telemetry.drivers.events import Discarded
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
    Request,
    RequestParser,
    Response,
    WriteCoilRequest,
    WriteCoilResponse,
    encode_response,
)
from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["CounterUnitSim", "Faults", "RtuBusSim", "serve_rtu_bus"]

log = logging.getLogger(__name__)

_REGISTERS_FIRST = int(InputRegister.STATUS)
_REGISTERS_LAST = int(InputRegister.INPUT_LOGIC)
_BITS = 5  # coils 0x0000-0x0004, discrete inputs 0x0000-0x0004
_WRAP = PV_MAX + 1


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault knobs for one unit.

    Attributes:
        no_reply: Ignore requests (a dead unit, a cut A/B pair).
        late_reply_s: Reply this long after the request (set it above the master's
            timeout for a late reply).
        corrupt_crc: Send replies with a corrupted CRC.
        wrong_unit: Send replies from this address instead (a misconfigured twin).
        exception: Answer every request with this exception code (04: device failure).
    """

    no_reply: bool = False
    late_reply_s: float = 0.0
    corrupt_crc: bool = False
    wrong_unit: int | None = None
    exception: ExceptionCode | None = None


class CounterUnitSim:
    """One Autonics CT unit.

    Args:
        address: Its Modbus address.
        mode: ``Mode.COUNTER`` (bags) or ``Mode.TIMER`` (run seconds).
        pv: Starting present value.
        rate_per_s: Counts per second of running (counter mode).
        running: Whether the huller runs at start (ignored when ``run_cycle_s`` is set).
        run_cycle_s: ``(run, stop)`` seconds: run, stop, run... from construction on.
        batch_pv: Batch counter present value (fixed).
        preset1: OUT1 turns on when the PV reaches it.
        preset2: OUT2 turns on when the PV reaches it.
        display_code: The display unit register.
        clock: Monotonic seconds.

    Attributes:
        faults: The unit's fault knobs.
        requests: Requests addressed to this unit.
        replies: Replies it sent (faulty ones included).
        resets: PV resets by FC05 or from the front panel.
    """

    def __init__(
        self,
        address: int,
        *,
        mode: Mode = Mode.COUNTER,
        pv: int = 0,
        rate_per_s: float = 1.0,
        running: bool = True,
        run_cycle_s: tuple[float, float] | None = None,
        batch_pv: int = 0,
        preset1: int = PV_MAX,
        preset2: int = PV_MAX,
        display_code: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= address <= 247:
            raise ValueError(f"address must be 1..247: {address!r}")
        if run_cycle_s is not None and (min(run_cycle_s) < 0 or sum(run_cycle_s) <= 0):
            raise ValueError(f"run_cycle_s must be two durations, not both 0: {run_cycle_s!r}")
        if not 0 <= batch_pv <= BATCH_PV_MAX:
            raise ValueError(f"batch_pv must be 0..{BATCH_PV_MAX}: {batch_pv!r}")
        self.address = address
        self.mode = mode
        self.rate_per_s = rate_per_s
        self.batch_pv = batch_pv
        self.preset1 = preset1
        self.preset2 = preset2
        self.display_code = display_code
        self.faults = Faults()
        self.requests = 0
        self.replies = 0
        self.resets = 0
        self._clock = clock
        self._cycle = run_cycle_s
        self._t0 = clock()
        self._running = running
        self._base = 0
        self._work = 0.0  # run seconds (timer) or counts (counter) since _base was set
        self._t_last = self._t0
        self.set_pv(pv)

    # -- state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the huller runs now."""
        if self._cycle is None:
            return self._running
        run, stop = self._cycle
        return (self._clock() - self._t0) % (run + stop) < run

    @property
    def pv(self) -> int:
        """The present value now."""
        self._advance()
        value = self._base + math.floor(self._work)
        return value % _WRAP if value >= 0 else value

    def set_running(self, running: bool) -> None:
        """Start or stop the huller (ends a run/stop cycle)."""
        self._advance()
        self._cycle = None
        self._running = running

    def set_pv(self, pv: int) -> None:
        """Set the present value (e.g. just below the wrap)."""
        low = 0 if self.mode is Mode.TIMER else PV_MIN
        if not low <= pv <= PV_MAX:
            raise ValueError(f"pv must be {low}..{PV_MAX}: {pv!r}")
        self._advance()
        self._base = pv
        self._work = 0.0

    def front_panel_reset(self) -> None:
        """Press RESET on the front panel: the PV goes to 0."""
        self.resets += 1
        self.set_pv(0)

    def status(self) -> int:
        """The status register now."""
        pv = self.pv
        return encode_status(self.mode, out1=pv >= self.preset1, out2=pv >= self.preset2)

    def inputs(self) -> TerminalInputs:
        """The terminal inputs now: INHIBIT is active while the huller is stopped."""
        return TerminalInputs(
            ina=False, inb=False, inhibit=not self.running, reset=False, batch_reset=False
        )

    def _advance(self) -> None:
        now = self._clock()
        ran = self._run_time(now) - self._run_time(self._t_last)
        self._t_last = now
        self._work += ran * (self.rate_per_s if self.mode is Mode.COUNTER else 1.0)

    def _run_time(self, t: float) -> float:
        # Seconds of running from _t0 to t (the cycle's integral), or of a flag.
        if self._cycle is None:
            return (t - self._t0) if self._running else 0.0
        run, stop = self._cycle
        periods, into = divmod(t - self._t0, run + stop)
        return periods * run + min(into, run)

    # -- protocol ----------------------------------------------------------------------

    def registers(self) -> tuple[int, ...]:
        """Input registers 0x03E8..0x03F4 as they read now."""
        sample = CounterSample(
            status=self.status(), batch_pv=self.batch_pv, pv=self.pv, display_code=self.display_code
        )
        presets: list[int] = []
        for value in (self.preset2, self.preset1, 0):
            presets += (value & 0xFFFF, value >> 16 & 0xFFFF)
        return (*encode_status_pv(sample), *presets, 0)

    def coils(self) -> tuple[bool, ...]:
        """Coils 0x0000..0x0004 as they read now."""
        status = self.status()
        out2, out1 = bool(status & StatusBit.OUT2), bool(status & StatusBit.OUT1)
        return (False, out2, out1, False, False)

    def handle(self, request: Request) -> Response:
        """Answer one request addressed to this unit (faults aside)."""
        unit = self.address
        match request:
            case ReadRequest(function=FunctionCode.READ_INPUT_REGISTERS):
                return self._read(request, _REGISTERS_FIRST, self.registers(), 125)
            case ReadRequest(function=FunctionCode.READ_COILS):
                return self._read(request, 0, self.coils(), 2000)
            case ReadRequest(function=FunctionCode.READ_DISCRETE_INPUTS):
                return self._read(request, 0, encode_inputs(self.inputs()), 2000)
            case WriteCoilRequest(address=address, value=value):
                fc05 = FunctionCode.WRITE_SINGLE_COIL
                if value not in (COIL_ON, COIL_OFF):
                    return ExceptionResponse(unit, fc05, ExceptionCode.ILLEGAL_DATA_VALUE)
                if address not in (Coil.RESET, Coil.BATCH_RESET):
                    return ExceptionResponse(unit, fc05, ExceptionCode.ILLEGAL_DATA_ADDRESS)
                if value == COIL_ON and address == Coil.RESET:
                    self.front_panel_reset()
                elif value == COIL_ON:
                    self.batch_pv = 0
                return WriteCoilResponse(unit, address, value)
            case ReadRequest(function=function) | OtherRequest(function=function):
                return ExceptionResponse(unit, function, ExceptionCode.ILLEGAL_FUNCTION)
            case _:  # pragma: no cover
                assert_never(request)

    def _read(
        self,
        request: ReadRequest,
        first: int,
        values: tuple[int, ...] | tuple[bool, ...],
        most: int,
    ) -> Response:
        unit, function = self.address, request.function
        if not 1 <= request.count <= most:
            return ExceptionResponse(unit, function, ExceptionCode.ILLEGAL_DATA_VALUE)
        start = request.address - first
        if start < 0 or start + request.count > len(values):
            return ExceptionResponse(unit, function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        chosen = values[start : start + request.count]
        if function is FunctionCode.READ_INPUT_REGISTERS:
            return RegistersResponse(unit, function, tuple(int(v) for v in chosen))
        return BitsResponse(unit, function, tuple(bool(v) for v in chosen))


class RtuBusSim:
    """Several ``CounterUnitSim`` on one pty (see the module docstring).

    Args:
        port: The pty standing for the RS-485 adapter's far end.
        units: The units on the bus (distinct addresses).
        baudrate: Sets the 3.5-character silence (11-bit characters).
        silence_s: Override that silence.

    Attributes:
        units: The units by address.
        requests: Requests heard (any address).
        unanswered: Requests to addresses nobody has, and broadcasts.
        crc_errors: Frames dropped for a bad CRC.
        discarded: Runs of bytes that were not a frame.
    """

    def __init__(
        self,
        port: PtyPort,
        units: Iterable[CounterUnitSim],
        *,
        baudrate: int = 9600,
        silence_s: float | None = None,
    ) -> None:
        self.units: dict[int, CounterUnitSim] = {}
        for unit in units:
            if unit.address in self.units:
                raise ValueError(f"two units at address {unit.address}")
            self.units[unit.address] = unit
        self._port = port
        self._silence_s = silence_s if silence_s is not None else 3.5 * 11 / baudrate
        self._pending: set[asyncio.TimerHandle] = set()
        self.requests = 0
        self.unanswered = 0
        self.crc_errors = 0
        self.discarded = 0

    async def serve_loop(self) -> None:
        """Answer requests until cancelled, across unplugs."""
        port = self._port
        try:
            while True:
                if port.is_open:
                    await self._serve_pty(port.opens)
                else:
                    await asyncio.sleep(0.02)  # PtyPort has no plug event: poll for the replug
        finally:
            for handle in self._pending:
                handle.cancel()
            self._pending.clear()

    async def _serve_pty(self, opens: int) -> None:
        port = self._port
        parser = RequestParser()
        while port.is_open and port.opens == opens:
            try:
                if parser.buffered_bytes:
                    async with asyncio.timeout(self._silence_s):
                        data = await port.read()
                else:
                    data = await port.read()
            except TimeoutError:
                parser.idle()
            except OSError:
                return  # unplugged
            else:
                parser.receive_data(data)
            for event in parser.events():
                if isinstance(event, Discarded):
                    self.discarded += 1
                    self.crc_errors += event.reason == "bad-crc"
                    log.debug("RTU sim dropped %d bytes (%s)", len(event.data), event.reason)
                else:
                    self._answer(event, opens)

    def _answer(self, request: Request, opens: int) -> None:
        self.requests += 1
        unit = self.units.get(request.unit)
        if unit is None:
            self.unanswered += 1
            return
        unit.requests += 1
        faults = unit.faults
        if faults.no_reply:
            return
        if faults.exception is not None:
            response: Response = ExceptionResponse(unit.address, request.function, faults.exception)
        else:
            response = unit.handle(request)
        if faults.wrong_unit is not None:
            response = dataclasses.replace(response, unit=faults.wrong_unit)
        frame = encode_response(response)
        if faults.corrupt_crc:
            frame = frame[:-1] + bytes((frame[-1] ^ 0x5A,))
        unit.replies += 1
        if faults.late_reply_s > 0:
            loop = asyncio.get_running_loop()
            self._pending = {h for h in self._pending if h.when() > loop.time()}
            self._pending.add(loop.call_later(faults.late_reply_s, self._send_late, frame, opens))
        else:
            self._port.write(frame)

    def _send_late(self, frame: bytes, opens: int) -> None:
        if self._port.opens == opens:  # not across an unplug
            self._port.write(frame)


@contextlib.asynccontextmanager
async def serve_rtu_bus(
    port: PtyPort,
    units: Iterable[CounterUnitSim],
    *,
    baudrate: int = 9600,
    silence_s: float | None = None,
) -> AsyncIterator[RtuBusSim]:
    """Run an ``RtuBusSim`` in the background for the duration of an ``async with``."""
    sim = RtuBusSim(port, units, baudrate=baudrate, silence_s=silence_s)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.serve_loop(), name="rtu-sim")
        try:
            yield sim
        finally:
            task.cancel()
