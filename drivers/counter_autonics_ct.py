"""Autonics CT series counter/timer over Modbus RTU: ``counter.autonics_ct`` (protocols §3.2, §6 D).

Manual: Autonics "CT Series User Manual for Communication" (register tables pp. 18-22).
RS-485, Modbus RTU, no broadcast, units 1-127, factory default 9600 8N2. This module
knows the register map and what the values mean; the frames are ``drivers.modbus_rtu``'s
and the polling is ``agent.hullers.bus``'s. What the agent reads::

    every poll   FC04 0x03E8 x6   status | batch PV lo hi | PV lo hi | display unit
    every 60 s   FC02 0x0000 x5   INA | INB | INHIBIT | RESET | BATCH RESET terminals
                 FC04 0x03ED x1   display unit: counter decimal point / timer time range
    operator     FC05 coil 0x0000 = FF00 resets the PV (never sent automatically)

    01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86
             ^^^^^ status 0x8080: CNT mode, OUT1
                               ^^^^^^^^^^^ PV words E240 0001 -> 0x0001E240 = 123456

32-bit values put the low word at the lower address ("upper data has high number
address"); the counter PV is signed (-99999..999999; the sign handling is INFERRED).
Status bits: b5 BA.O (batch output), b6 OUT2, b7 OUT1, b10 BA.S, b11 LOCK, b12 PRESET2,
b13 PRESET1, b14 TMR mode, b15 CNT mode; bits outside that set are reported in
``unknown_status_bits``, not refused. Out-of-range values (a PV beyond what six digits
show, a register above 0xFFFF, a wrong register count) become ``Discarded``: a glitch
must not turn into a jump of a million bags.

Totals: the PV goes back to 0 (or the preset) on a front-panel reset, a power loss, or
at the wrap after 999999. ``TotalTracker`` turns the PV into a total that never goes
down: when the PV drops, the last PV is added to an offset and a ``CounterReset`` is
reported. A negative PV (an up/down counter below zero) adds nothing. The tracker's
state is a small frozen ``TotalState`` the agent persists, so totals survive restarts.
Counts made between the last poll and a reset are lost; at a wrap that is at least one.

Config example (``site.toml``): a bus per RS-485 adapter, and a huller naming the
addresses of its bag counter and run-hour timer on that bus::

    [[buses]]
    id = "rs485-beneficio"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1ABC-if00-port0"
    [buses.serial]
    baudrate = 9600
    parity = "N"
    stopbits = 2

    [[hullers]]
    id = "descascador-1"
    bus = "rs485-beneficio"
    bag_counter = 1
    hour_meter = 2
    poll_interval_s = 2.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag

from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement

__all__ = [
    "BATCH_PV_MAX",
    "INPUTS_ADDRESS",
    "INPUTS_COUNT",
    "KNOWN_STATUS_BITS",
    "PV_MAX",
    "PV_MIN",
    "STATUS_PV_ADDRESS",
    "STATUS_PV_COUNT",
    "Coil",
    "CounterReset",
    "CounterSample",
    "DiscreteInput",
    "DisplayUnit",
    "InputRegister",
    "Mode",
    "StatusBit",
    "TerminalInputs",
    "TotalState",
    "TotalTracker",
    "advance_total",
    "decode_display_unit",
    "decode_inputs",
    "decode_status_pv",
    "encode_inputs",
    "encode_status",
    "encode_status_pv",
    "to_measurement",
]


class Coil(IntEnum):
    """Coils: read with FC01; write ``FF00`` with FC05 to act."""

    #: Reset the present value (write FF00).
    RESET = 0x0000
    #: OUT2 output state.
    OUT2 = 0x0001
    #: OUT1 output state.
    OUT1 = 0x0002
    #: Batch output state.
    BATCH_OUT = 0x0003
    #: Reset the batch counter (write FF00).
    BATCH_RESET = 0x0004


class DiscreteInput(IntEnum):
    """Discrete inputs (FC02): the terminal inputs."""

    #: Count input A.
    INA = 0x0000
    #: Count input B.
    INB = 0x0001
    #: Inhibit terminal (counting paused while active).
    INHIBIT = 0x0002
    #: Reset terminal.
    RESET = 0x0003
    #: Batch reset terminal.
    BATCH_RESET = 0x0004


class InputRegister(IntEnum):
    """Input registers (FC04); manual numbers 310001.. are wire 0x03E8.."""

    #: LED/status bits (``StatusBit``).
    STATUS = 0x03E8
    #: Batch counter present value, low word.
    BATCH_PV_LOW = 0x03E9
    #: Batch counter present value, high word.
    BATCH_PV_HIGH = 0x03EA
    #: Counter/timer present value, low word (signed 32-bit).
    PV_LOW = 0x03EB
    #: Counter/timer present value, high word.
    PV_HIGH = 0x03EC
    #: Display unit: counter decimal point or timer time range code.
    DISPLAY_UNIT = 0x03ED
    #: PRESET2, low word.
    PRESET2_LOW = 0x03EE
    #: PRESET2, high word.
    PRESET2_HIGH = 0x03EF
    #: PRESET1, low word.
    PRESET1_LOW = 0x03F0
    #: PRESET1, high word.
    PRESET1_HIGH = 0x03F1
    #: Batch set value, low word.
    BATCH_SET_LOW = 0x03F2
    #: Batch set value, high word.
    BATCH_SET_HIGH = 0x03F3
    #: Input logic: 0 NPN, 1 PNP.
    INPUT_LOGIC = 0x03F4


class StatusBit(IntFlag):
    """Bits of the status register (``InputRegister.STATUS``)."""

    #: BA.O: batch output on.
    BATCH_OUT = 1 << 5
    #: OUT2 on.
    OUT2 = 1 << 6
    #: OUT1 on.
    OUT1 = 1 << 7
    #: BA.S: batch set value indicator.
    BATCH_SET = 1 << 10
    #: Front-panel keys locked.
    LOCK = 1 << 11
    #: PRESET2 indicator.
    PRESET2 = 1 << 12
    #: PRESET1 indicator.
    PRESET1 = 1 << 13
    #: Timer mode.
    TIMER = 1 << 14
    #: Counter mode.
    COUNTER = 1 << 15


#: Every status bit the manual names.
KNOWN_STATUS_BITS = int(
    StatusBit.BATCH_OUT
    | StatusBit.OUT2
    | StatusBit.OUT1
    | StatusBit.BATCH_SET
    | StatusBit.LOCK
    | StatusBit.PRESET2
    | StatusBit.PRESET1
    | StatusBit.TIMER
    | StatusBit.COUNTER
)

#: FC04 block read every poll: status, batch PV, PV, display unit.
STATUS_PV_ADDRESS = int(InputRegister.STATUS)
STATUS_PV_COUNT = 6
#: FC02 block read every 60 s: the five terminal inputs.
INPUTS_ADDRESS = int(DiscreteInput.INA)
INPUTS_COUNT = 5
#: What six digits show.
PV_MIN = -99999
PV_MAX = 999999
BATCH_PV_MAX = 999999


class Mode(Enum):
    """What the unit is set up as (status b15 / b14)."""

    COUNTER = "counter"
    TIMER = "timer"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TerminalInputs:
    """The five terminal inputs (FC02 0x0000 x5)."""

    ina: bool
    inb: bool
    inhibit: bool
    reset: bool
    batch_reset: bool


@dataclass(frozen=True, slots=True)
class DisplayUnit:
    """The display unit register read with the unit's mode.

    The code tables were not retrieved (§3.2): ``decimal_places`` reads a counter's code
    0-5 as digits after the point (INFERRED); a timer's ``time_range_code`` is kept raw
    for a site table to convert run time to hours.
    """

    mode: Mode
    code: int

    @property
    def decimal_places(self) -> int | None:
        """Digits after the decimal point (counter mode, code 0-5), else ``None``."""
        return self.code if self.mode is Mode.COUNTER and 0 <= self.code <= 5 else None

    @property
    def time_range_code(self) -> int | None:
        """The timer's time range code (timer mode), else ``None``."""
        return self.code if self.mode is Mode.TIMER else None


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One poll of a CT unit.

    Attributes:
        status: The raw status register; the properties read its bits.
        batch_pv: Batch counter present value, 0..999999.
        pv: Present value (counter: count, may be negative; timer: run time in the
            unit of its time range).
        display_code: The display unit register, when it was read.
        inputs: The terminal inputs, on the polls that read them.
    """

    status: int
    batch_pv: int
    pv: int
    display_code: int | None = None
    inputs: TerminalInputs | None = None

    @property
    def mode(self) -> Mode:
        """Counter if b15, else timer if b14, else unknown."""
        if self.status & StatusBit.COUNTER:
            return Mode.COUNTER
        if self.status & StatusBit.TIMER:
            return Mode.TIMER
        return Mode.UNKNOWN

    @property
    def out1(self) -> bool:
        """OUT1 on."""
        return bool(self.status & StatusBit.OUT1)

    @property
    def out2(self) -> bool:
        """OUT2 on."""
        return bool(self.status & StatusBit.OUT2)

    @property
    def batch_out(self) -> bool:
        """Batch output on."""
        return bool(self.status & StatusBit.BATCH_OUT)

    @property
    def locked(self) -> bool:
        """Front-panel keys locked."""
        return bool(self.status & StatusBit.LOCK)

    @property
    def unknown_status_bits(self) -> int:
        """Status bits the manual does not name (reported, not refused)."""
        return self.status & ~KNOWN_STATUS_BITS & 0xFFFF

    @property
    def display(self) -> DisplayUnit | None:
        """The display unit, when it was read."""
        return None if self.display_code is None else DisplayUnit(self.mode, self.display_code)


def _pack(registers: Sequence[int]) -> bytes:
    return b"".join((r & 0xFFFF).to_bytes(2, "big") for r in registers)


def _int32(low: int, high: int) -> int:
    value = low | high << 16
    return value - (1 << 32) if value & 0x8000_0000 else value


def decode_status_pv(registers: Sequence[int]) -> CounterSample | Discarded:
    """Decode the FC04 block at 0x03E8 (5 registers, or 6 with the display unit).

    Never raises: unusable values come back as ``Discarded`` whose data is the
    registers as they were on the wire.

    Returns:
        The sample, or ``Discarded`` with reason ``bad-count``, ``bad-register``
        (a value outside 0..0xFFFF), ``batch-pv-out-of-range`` or ``pv-out-of-range``
        (outside -99999..999999; a timer's PV must not be negative).
    """
    regs = list(registers)
    if len(regs) not in (STATUS_PV_COUNT - 1, STATUS_PV_COUNT):
        return Discarded(data=_pack(regs[:128]), reason="bad-count")
    if any(not 0 <= r <= 0xFFFF for r in regs):
        return Discarded(data=_pack(regs), reason="bad-register")
    status, batch_low, batch_high, pv_low, pv_high = regs[:5]
    batch_pv = batch_low | batch_high << 16
    pv = _int32(pv_low, pv_high)
    sample = CounterSample(
        status=status,
        batch_pv=batch_pv,
        pv=pv,
        display_code=regs[5] if len(regs) == STATUS_PV_COUNT else None,
    )
    if batch_pv > BATCH_PV_MAX:
        return Discarded(data=_pack(regs), reason="batch-pv-out-of-range")
    low = 0 if sample.mode is Mode.TIMER else PV_MIN
    if not low <= pv <= PV_MAX:
        return Discarded(data=_pack(regs), reason="pv-out-of-range")
    return sample


def encode_status(
    mode: Mode,
    *,
    out1: bool = False,
    out2: bool = False,
    batch_out: bool = False,
    locked: bool = False,
    extra_bits: int = 0,
) -> int:
    """Build a status register value (for simulators and tests).

    Raises:
        DriverUsageError: ``extra_bits`` outside 0..0xFFFF.
    """
    if not 0 <= extra_bits <= 0xFFFF:
        raise DriverUsageError(f"extra_bits must be 0..0xFFFF: {extra_bits!r}")
    status = extra_bits
    status |= {Mode.COUNTER: StatusBit.COUNTER, Mode.TIMER: StatusBit.TIMER, Mode.UNKNOWN: 0}[mode]
    for on, bit in (
        (out1, StatusBit.OUT1),
        (out2, StatusBit.OUT2),
        (batch_out, StatusBit.BATCH_OUT),
        (locked, StatusBit.LOCK),
    ):
        if on:
            status |= bit
    return int(status)


def encode_status_pv(sample: CounterSample) -> tuple[int, ...]:
    """The six FC04 0x03E8 registers of a unit in ``sample``'s state.

    The inverse of ``decode_status_pv``; the sixth register is the display code (0 when
    unset). ``inputs`` are not registers and are left out.

    Raises:
        DriverUsageError: A value ``decode_status_pv`` would discard.
    """
    if not 0 <= sample.status <= 0xFFFF:
        raise DriverUsageError(f"status must be 0..0xFFFF: {sample.status!r}")
    if not 0 <= sample.batch_pv <= BATCH_PV_MAX:
        raise DriverUsageError(f"batch_pv must be 0..{BATCH_PV_MAX}: {sample.batch_pv!r}")
    low = 0 if sample.mode is Mode.TIMER else PV_MIN
    if not low <= sample.pv <= PV_MAX:
        raise DriverUsageError(f"pv must be {low}..{PV_MAX} in {sample.mode.value} mode")
    display = 0 if sample.display_code is None else sample.display_code
    if not 0 <= display <= 0xFFFF:
        raise DriverUsageError(f"display_code must be 0..0xFFFF: {display!r}")
    pv = sample.pv & 0xFFFF_FFFF
    return (
        sample.status,
        sample.batch_pv & 0xFFFF,
        sample.batch_pv >> 16,
        pv & 0xFFFF,
        pv >> 16,
        display,
    )


def decode_inputs(bits: Sequence[bool]) -> TerminalInputs | Discarded:
    """Decode the FC02 block at 0x0000; padding bits after the fifth are ignored.

    Returns:
        The inputs, or ``Discarded(reason="bad-count")`` for fewer than five bits.
    """
    if len(bits) < INPUTS_COUNT:
        packed = bytes(int(b) for b in bits[:INPUTS_COUNT])
        return Discarded(data=packed, reason="bad-count")
    ina, inb, inhibit, reset, batch_reset = (bool(b) for b in bits[:INPUTS_COUNT])
    return TerminalInputs(ina=ina, inb=inb, inhibit=inhibit, reset=reset, batch_reset=batch_reset)


def encode_inputs(inputs: TerminalInputs) -> tuple[bool, ...]:
    """The five FC02 bits, in address order (the inverse of ``decode_inputs``)."""
    return (inputs.ina, inputs.inb, inputs.inhibit, inputs.reset, inputs.batch_reset)


def decode_display_unit(register: int, mode: Mode) -> DisplayUnit | Discarded:
    """Decode the display unit register (0x03ED) for a unit in ``mode``.

    Returns:
        The display unit, or ``Discarded(reason="bad-register")`` outside 0..0xFFFF.
    """
    if not 0 <= register <= 0xFFFF:
        return Discarded(data=_pack([register]), reason="bad-register")
    return DisplayUnit(mode=mode, code=register)


def to_measurement(sample: CounterSample, *, total: int | None = None) -> Measurement:
    """The ``counter`` measurement for a sample (and its monotonic total, if tracked).

    Fields keep one type: ``mode`` str; ``pv``, ``batch_pv``, ``total``, ``status``,
    ``unknown_status_bits``, ``display_code`` int; the rest bool. Inputs appear only on
    the polls that read them.
    """
    fields: dict[str, FieldValue] = {
        "mode": sample.mode.value,
        "pv": sample.pv,
        "batch_pv": sample.batch_pv,
        "out1": sample.out1,
        "out2": sample.out2,
        "batch_out": sample.batch_out,
        "status": sample.status,
        "unknown_status_bits": sample.unknown_status_bits,
    }
    if total is not None:
        fields["total"] = total
    if sample.display_code is not None:
        fields["display_code"] = sample.display_code
    if sample.inputs is not None:
        inputs: Mapping[str, bool] = {
            "in_a": sample.inputs.ina,
            "in_b": sample.inputs.inb,
            "inhibit": sample.inputs.inhibit,
            "reset_input": sample.inputs.reset,
            "batch_reset_input": sample.inputs.batch_reset,
        }
        fields.update(inputs)
    return Measurement(measurement="counter", fields=fields, raw=_raw(sample))


def _raw(sample: CounterSample) -> bytes:
    # The registers as read (masked, not checked: ``raw`` is for debugging only).
    pv = sample.pv & 0xFFFF_FFFF
    batch = sample.batch_pv & 0xFFFF_FFFF
    return _pack((sample.status, batch, batch >> 16, pv, pv >> 16))


# -- monotonic totals ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotalState:
    """What the agent persists per unit so totals never go backwards.

    Attributes:
        offset: Sum of the PVs seen just before each reset.
        last_pv: The last PV seen, ``None`` before the first.
    """

    offset: int = 0
    last_pv: int | None = None

    @property
    def total(self) -> int:
        """``offset`` plus the last PV (a negative PV counts as 0)."""
        return self.offset + max(self.last_pv or 0, 0)


@dataclass(frozen=True, slots=True)
class CounterReset:
    """The PV dropped: a front-panel reset, a power loss or the wrap after 999999.

    Attributes:
        previous_pv: The PV before the drop.
        pv: The PV after it.
        total: The total after it (never less than before).
    """

    previous_pv: int
    pv: int
    total: int


def advance_total(state: TotalState, pv: int) -> tuple[TotalState, CounterReset | None]:
    """Take one PV into ``state``; pure.

    Returns:
        The new state (its ``total`` never less than before) and a ``CounterReset`` when
        the PV dropped.
    """
    last = state.last_pv
    if last is None or pv >= last:
        return TotalState(offset=state.offset, last_pv=pv), None
    new = TotalState(offset=state.offset + max(last, 0), last_pv=pv)
    return new, CounterReset(previous_pv=last, pv=pv, total=new.total)


class TotalTracker:
    """``advance_total`` with the state kept; ``state`` is what to persist.

    Args:
        state: The persisted state to continue from.
    """

    __slots__ = ("state",)

    def __init__(self, state: TotalState | None = None) -> None:
        self.state = state if state is not None else TotalState()

    @property
    def total(self) -> int:
        """The current total."""
        return self.state.total

    def update(self, pv: int) -> tuple[int, CounterReset | None]:
        """Take one PV; returns the total and a ``CounterReset`` when the PV dropped."""
        self.state, reset = advance_total(self.state, pv)
        return self.state.total, reset
