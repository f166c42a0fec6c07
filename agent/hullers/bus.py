"""The hullers' counters on an RS-485 bus: one poller per bus (protocols §6 D).

Theory of operation
-------------------
One ``BusPoller`` per bus that has counters. It is a client of the bus's scheduler
(``agent.bus.scheduler.BusScheduler``), which opens the port once and runs, beside the
poller, the other units of the bus (the storage areas' T/RH sensors). Each time the port
opens the poller runs one task per unit in a ``TaskGroup``.

The bus carries one request at a time: each attempt goes through the scheduler, which
takes the bus lock and keeps ``min_gap_s`` of quiet before it. A request is tried
``1 + retries`` times and each attempt takes the lock anew, so other units' requests go
in between. A dead unit therefore holds the bus for at most one attempt at a time,
never for a whole series.

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

When the port goes (an unplugged adapter), the scheduler ends the unit tasks, tells the
poller (each unit not yet offline reports a ``PORT`` error) and reopens the port after a
back-off. A poller built without a scheduler makes its own and ``run_loop`` runs it.

Bus specs, faults and the pymodbus client are in ``agent.bus.rtu``: one request out, one
reply or error back.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import assert_never

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.bus.rtu import (
    BusSpec,
    ClientFactory,
    ExchangeFailed,
    Fault,
    pymodbus_client,
)
from coffee_telemetry.agent.bus.scheduler import BusScheduler
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
    WriteCoilRequest,
    check_reply,
)

__all__ = [
    "Block",
    "BusPoller",
    "DeviceError",
    "EventCallback",
    "PollEvent",
    "UnitSpec",
    "UnitState",
    "UnitStats",
]

log = logging.getLogger(__name__)


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
        client_factory: Builds the pymodbus client (tests pass fakes) of the scheduler
            the poller makes when none is given.
        rng: Jitter source for the back-offs.
        scheduler: The bus's scheduler, shared with its other units; the poller
            attaches itself. ``None``: a scheduler of its own, run by ``run_loop``.

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
        scheduler: BusScheduler | None = None,
    ) -> None:
        self._bus = bus
        self._units: dict[str, _Unit] = {}
        for spec in units:
            if spec.name in self._units:
                raise ValueError(f"bus {bus.name}: two units named {spec.name!r}")
            self._units[spec.name] = _Unit(spec, rng)
        self._on_event = on_event
        if scheduler is None:
            scheduler = BusScheduler(bus, client_factory=client_factory, rng=rng)
        self._scheduler = scheduler
        scheduler.attach(
            "hullers", self, ((u.spec.address, u.spec.name) for u in self._units.values())
        )

    @property
    def stats(self) -> Mapping[str, UnitStats]:
        """Per-unit counters, by unit name."""
        return {name: unit.stats for name, unit in self._units.items()}

    # -- the port ----------------------------------------------------------------------

    @property
    def scheduler(self) -> BusScheduler:
        """The bus's scheduler this poller runs under."""
        return self._scheduler

    async def run_loop(self) -> None:
        """Run the scheduler (the port, its reopening and every client), until cancelled."""
        await self._scheduler.run_loop()

    async def poll_loop(self, scheduler: BusScheduler) -> None:
        """One task per unit while the port is open (the scheduler calls it)."""
        async with asyncio.TaskGroup() as tg:
            for unit in self._units.values():
                tg.create_task(
                    self._unit_loop(unit), name=f"poll[{self._bus.name}/{unit.spec.name}]"
                )

    async def port_down(self, error: PortError) -> None:
        """The port went: once per outage per unit, the units not already offline learn why."""
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

    async def _unit_loop(self, unit: _Unit) -> None:
        loop = asyncio.get_running_loop()
        unit.slow_due = next_due = loop.time()
        while Block.STATUS_PV not in unit.stats.disabled:
            delay = next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                sample = await self._poll(unit)
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

    async def _poll(self, unit: _Unit) -> CounterSample | None:
        loop = asyncio.get_running_loop()
        response = await self._read(unit, Block.STATUS_PV)
        if response is None:
            return None
        assert isinstance(response, RegistersResponse)
        sample = decode_status_pv(response.registers)
        if isinstance(sample, Discarded):
            unit.stats.bad_replies += 1
            raise ExchangeFailed(Fault.BAD_REPLY, f"{sample.reason}: {sample.data.hex(' ')}")
        if loop.time() >= unit.slow_due:
            inputs = await self._read(unit, Block.INPUTS)
            if isinstance(inputs, BitsResponse):
                decoded = decode_inputs(inputs.bits)
                if isinstance(decoded, Discarded):  # pragma: no cover - check_reply counted
                    raise ExchangeFailed(Fault.BAD_REPLY, decoded.reason)
                sample = dataclasses.replace(sample, inputs=decoded)
            display = await self._read(unit, Block.DISPLAY_UNIT)
            if isinstance(display, RegistersResponse):
                sample = dataclasses.replace(sample, display_code=display.registers[0])
            unit.slow_due = loop.time() + unit.spec.slow_interval_s
        return sample

    async def _read(self, unit: _Unit, block: Block) -> Response | None:
        # The block's reply, or None when the block is (now) given up.
        if block in unit.stats.disabled:
            return None
        request = unit.request(block)
        attempts = 1 if unit.offline else 1 + self._bus.retries
        response = await self._exchange(unit, request, attempts=attempts)
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
        unit: _Unit,
        request: ReadRequest | WriteCoilRequest,
        *,
        attempts: int,
    ) -> Response:
        stats = unit.stats
        failure = ExchangeFailed(Fault.NO_RESPONSE, "no attempt made")
        for _ in range(attempts):
            stats.requests += 1
            try:
                response = await self._scheduler.attempt(request)
            except ExchangeFailed as failed:
                failure = failed
                self._count(stats, failed.fault)
                continue
            reason = check_reply(request, response)
            if reason is not None:
                stats.bad_replies += 1
                raise ExchangeFailed(Fault.BAD_REPLY, f"{reason}: {response!r}")
            stats.replies += 1
            return response
        raise failure

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

        if not self._scheduler.is_open:
            return error(Fault.PORT, f"bus {self._bus.name} is not open")
        try:
            response = await self._exchange(unit, request, attempts=1 + self._bus.retries)
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
