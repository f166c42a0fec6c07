"""Simulated scales: an MT-SICS balance and a Toledo-continuous indicator.

Both speak through a ``PtyPort`` with the drivers' own encoders (``encode_reply``,
``decode_command``, ``encode_frame``), so a simulator cannot drift from its parser.
Each keeps a record a test compares with what the parser reports: ``sent`` (every
weight line or valid frame written whole) and, for the indicator, ``weighments``.
Sleeps live here, never in the drivers; unplug and replug are ``PtyPort`` methods.

``MtSicsBalanceSim`` (protocols §6 B) holds a pan: ``load``/``settle``/``unload``
change what lies on it; ``run()`` answers commands until cancelled. State: ``gross_kg``
(on the pan), ``zero_offset_kg``, ``tare_kg``, ``stable``; the display shows
``gross - zero_offset - tare``; over ``capacity_kg`` (gross - zero) it answers ``+``,
below ``-underload_kg`` it answers ``-``. ``S`` waits until stable, or answers ``S I``
after ``stability_timeout_s``; ``SI`` answers ``S S`` or ``S D``; ``SIR`` streams at
``sir_rate_hz`` until any command; ``Z`` zeroes only when stable and within 2 % of
capacity of the current zero, else ``Z I``; ``T`` tares when stable, else ``T I``;
unknown commands get ``ES``, malformed ones (non-ASCII) ``ET``.

``ToledoStreamSim`` (protocols §6 C) sends frames at ``rate_hz``. ``weigh()`` plays one
scripted weighment (load on with motion, stable, print pulse, unload); ``hold()`` sends
the current display for a while; ``run()`` weighs random loads until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from typing import Literal

from coffee_telemetry.drivers._framing import LineSplitter
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.scale_mtsics import (
    UNIT_TO_KG,
    ErrorCode,
    decode_command,
    encode_error,
    encode_reply,
)
from coffee_telemetry.drivers.scale_toledo import (
    STX,
    ToledoFrame,
    ToledoUnit,
    decode_frame,
    encode_frame,
)
from coffee_telemetry.simulators.pty import PtyPort

__all__ = [
    "BalanceFaults",
    "MtSicsBalanceSim",
    "SentFrame",
    "SentWeight",
    "StreamFaults",
    "ToledoStreamSim",
    "Weighment",
]


# -- MT-SICS balance -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BalanceFaults:
    """Fault knobs of the balance; assign a new one to ``knobs`` to change them live.

    Attributes:
        garbage_prob: Chance, per reply, of a line of random bytes (no CR or LF in
            it) ending in CR LF before the reply; the client discards it.
        no_reply: Read commands and answer nothing.
        echo: Send each command line back before answering (an echoing adapter).
        busy: Answer weight, zero and tare commands with ``<ID> I``.
    """

    garbage_prob: float = 0.0
    no_reply: bool = False
    echo: bool = False
    busy: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class SentWeight:
    """A weight line the balance wrote whole.

    Attributes:
        ts_ns: ``time.time_ns()`` after the write.
        status: ``S``, ``D``, ``+`` or ``-``.
        weight_kg: The weight as printed, in kg (``None`` for ``+``/``-``).
        line: The bytes written.
    """

    ts_ns: int
    status: str
    weight_kg: float | None
    line: bytes


_NOT_EOL = bytes(b for b in range(256) if b not in (0x0A, 0x0D))


class MtSicsBalanceSim:
    """A balance answering MT-SICS commands on a pty (see the module docstring).

    Args:
        port: The pty (opened by the caller).
        capacity_kg: Weighing capacity; above it (from zero) replies are ``+``.
        unit: Unit printed (``kg``, ``g``, ``lb``...).
        decimals: Decimals printed.
        serial: Serial number (``I4``).
        model: Model name (``I2``).
        stability_timeout_s: How long ``S`` waits for stability before ``S I``.
        sir_rate_hz: Lines per second while ``SIR`` runs.
        underload_kg: Below minus this (from zero), replies are ``-``.
        seed: Seed for the random choices (noise, garbage).
        knobs: Fault knobs.

    Attributes:
        sent: Weight lines written whole.
        commands: Command lines received, decoded (``ES``/``ET`` for bad ones).
    """

    def __init__(
        self,
        port: PtyPort,
        *,
        capacity_kg: float,
        unit: str = "kg",
        decimals: int = 2,
        serial: str = "B123456789",
        model: str = "SIM-MT",
        stability_timeout_s: float = 5.0,
        sir_rate_hz: float = 5.0,
        underload_kg: float = 1.0,
        seed: int | None = None,
        knobs: BalanceFaults = BalanceFaults(),
    ) -> None:
        if unit not in UNIT_TO_KG:
            raise ValueError(f"unit must be one of {sorted(UNIT_TO_KG)}: {unit!r}")
        self.port = port
        self.capacity_kg = capacity_kg
        self.unit = unit
        self.decimals = decimals
        self.serial = serial
        self.model = model
        self.stability_timeout_s = stability_timeout_s
        self.sir_rate_hz = sir_rate_hz
        self.underload_kg = underload_kg
        self.knobs = knobs
        self.gross_kg = 0.0
        self.zero_offset_kg = 0.0
        self.tare_kg = 0.0
        self.sent: list[SentWeight] = []
        self.commands: list[str] = []
        self._rng = random.Random(seed)
        self._stable = asyncio.Event()
        self._stable.set()
        self._stream: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None

    # -- the pan -------------------------------------------------------------------

    @property
    def stable(self) -> bool:
        """Whether the reading has settled."""
        return self._stable.is_set()

    def load(self, kg: float) -> None:
        """Put ``kg`` on the pan (replacing what was there); the reading moves."""
        self.gross_kg = kg
        self._stable.clear()

    def settle(self) -> None:
        """Let the reading settle."""
        self._stable.set()

    def unload(self) -> None:
        """Empty the pan; the reading moves until ``settle``."""
        self.load(0.0)

    @property
    def display_kg(self) -> float:
        """The net weight the balance shows."""
        return self.gross_kg - self.zero_offset_kg - self.tare_kg

    def _range_status(self) -> str | None:
        above_zero = self.gross_kg - self.zero_offset_kg
        if above_zero > self.capacity_kg:
            return "+"
        if above_zero < -self.underload_kg:
            return "-"
        return None

    # -- the serial side -----------------------------------------------------------

    async def run(self) -> None:
        """Answer commands until cancelled; waits out unplugs (a replug is a new pty)."""
        splitter = LineSplitter("auto", max_line=256)
        opens = self.port.opens
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            try:
                while True:
                    try:
                        data = await self.port.read()
                    except OSError:
                        await self._stop_stream()
                        # PtyPort has no replug notification to wait on; poll its counter.
                        while not self.port.is_open or self.port.opens == opens:  # noqa: ASYNC110
                            await asyncio.sleep(0.02)
                        opens = self.port.opens
                        splitter.reset()
                        continue
                    for line in splitter.feed(data):
                        await self._stop_stream()  # any command ends SIR
                        await self._command(line)
            finally:
                await self._stop_stream()
                self._tasks = None

    async def _command(self, line: bytes) -> None:
        knobs = self.knobs
        name = decode_command(line)
        if isinstance(name, Discarded) and name.reason == "empty":
            return
        if knobs.echo:
            self.port.write(line)
        if isinstance(name, Discarded):
            code: ErrorCode = "ET" if name.reason == "malformed" else "ES"
            self.commands.append(code)
            if not knobs.no_reply:
                self._write(encode_error(code))
            return
        self.commands.append(name)
        if knobs.no_reply:
            return
        match name:
            case "@":
                self._write(encode_reply("I4", "A", text=self.serial))
            case "I2":
                capacity = f"{self.capacity_kg / UNIT_TO_KG[self.unit]:.{self.decimals}f}"
                self._write(encode_reply("I2", "A", text=f"{self.model} {capacity} {self.unit}"))
            case "I4":
                self._write(encode_reply("I4", "A", text=self.serial))
            case "S":
                await self._stable_weight()
            case "SI":
                self._weight()
            case "SIR":
                if self._tasks is not None:
                    self._stream = self._tasks.create_task(self._stream_loop(), name="sim[SIR]")
            case "Z" | "ZI":
                self._zero(name)
            case "T" | "TI":
                self._tare(name)
            case "TA":
                self._write(self._reply_kg("TA", "A", self.tare_kg))
            case "TAC":
                self.tare_kg = 0.0
                self._write(encode_reply("TAC", "A"))
            case _:  # pragma: no cover - decode_command only returns known names
                raise AssertionError(name)

    def _write(self, data: bytes) -> bool:
        rng = self._rng
        if rng.random() < self.knobs.garbage_prob:
            junk = bytes(rng.choice(_NOT_EOL) for _ in range(rng.randint(1, 24)))
            self.port.write(junk + b"\r\n")
        return self.port.write(data) == len(data)

    def _reply_kg(self, reply_id: str, status: str, kg: float) -> bytes:
        value = round(kg / UNIT_TO_KG[self.unit], self.decimals)
        return encode_reply(reply_id, status, value=value, unit=self.unit, decimals=self.decimals)

    def _weight(self) -> None:
        if self.knobs.busy:
            self._write(encode_reply("S", "I"))
            return
        status = self._range_status()
        if status is not None:
            line = encode_reply("S", status)
            kg = None
        else:
            status = "S" if self.stable else "D"
            shown = self.display_kg
            if status == "D":
                # A moving reading wobbles around the load.
                shown += self._rng.uniform(-0.01, 0.01) * max(self.capacity_kg, 1.0)
            line = self._reply_kg("S", status, shown)
            value = round(shown / UNIT_TO_KG[self.unit], self.decimals)
            kg = round(value * UNIT_TO_KG[self.unit], 9)
        if self._write(line):
            self.sent.append(SentWeight(time.time_ns(), status, kg, line))

    async def _stable_weight(self) -> None:
        if not self.knobs.busy and self._range_status() is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stability_timeout_s):
                    await self._stable.wait()
            if not self.stable:
                self._write(encode_reply("S", "I"))
                return
        self._weight()

    async def _stream_loop(self) -> None:
        while True:
            self._weight()
            await asyncio.sleep(1 / self.sir_rate_hz)

    async def _stop_stream(self) -> None:
        task, self._stream = self._stream, None
        if task is not None:
            task.cancel()
            # wait() does not raise the task's CancelledError, so ours still gets through.
            await asyncio.wait({task})

    def _zero(self, name: Literal["Z", "ZI"]) -> None:
        near_zero = abs(self.gross_kg - self.zero_offset_kg) <= 0.02 * self.capacity_kg
        if self.knobs.busy or not near_zero or (name == "Z" and not self.stable):
            self._write(encode_reply(name, "I"))
            return
        self.zero_offset_kg = self.gross_kg
        self.tare_kg = 0.0
        if name == "Z":
            self._write(encode_reply("Z", "A"))
        else:
            self._write(encode_reply("ZI", "S" if self.stable else "D"))

    def _tare(self, name: Literal["T", "TI"]) -> None:
        status = self._range_status()
        if status is not None and not self.knobs.busy:
            self._write(encode_reply(name, status))
            return
        if self.knobs.busy or (name == "T" and not self.stable):
            self._write(encode_reply(name, "I"))
            return
        self.tare_kg = self.gross_kg - self.zero_offset_kg
        self._write(self._reply_kg(name, "S" if self.stable else "D", self.tare_kg))


# -- Toledo continuous indicator -----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StreamFaults:
    """Fault knobs of the indicator; assign a new one to ``knobs`` to change them live.

    Attributes:
        bad_checksum_prob: Chance a frame carries a wrong checksum (with checksums on;
            never 0x02, which the parser could read as the next STX).
        parity_noise: Set bit 7 of bytes at random, as 7E1 read as 8N1 looks.
        truncate_prob: Chance a frame is cut before its CR.
        silent: Send nothing (indicator off).
    """

    bad_checksum_prob: float = 0.0
    parity_noise: bool = False
    truncate_prob: float = 0.0
    silent: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class SentFrame:
    """A frame the indicator sent; the ``valid`` ones are what the parser must decode.

    Attributes:
        ts_ns: ``time.time_ns()`` after the write.
        weight: Weight shown (display units, as the frame carries it).
        tare: Tare shown.
        motion: Motion bit.
        print_request: Print bit.
        valid: Written whole with a correct checksum (if any).
    """

    ts_ns: int
    weight: float
    tare: float
    motion: bool
    print_request: bool
    valid: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Weighment:
    """A weighment the parser must report.

    Attributes:
        weight_kg: The weight shown when it happened, in kg.
        tare_kg: The tare, in kg.
        trigger: ``print`` (a print pulse went out) or ``stable`` (the load rested
            ``auto_weighment_s`` after motion).
    """

    weight_kg: float
    tare_kg: float
    trigger: Literal["print", "stable"]


_UNIT_KG = {"kg": 1.0, "lb": 0.45359237, "g": 1e-3}


class ToledoStreamSim:
    """An indicator streaming Toledo continuous frames (see the module docstring).

    Args:
        port: The pty (opened by the caller).
        rate_hz: Frames per second.
        decimals: Decimals of the display.
        increment: Count-by (1, 2 or 5).
        unit: Display unit.
        checksum: Send the CHK byte.
        pad_spaces: Leading zero positions sent as spaces (see ``encode_frame``).
        auto_weighment_s: The parser's ``weighment_stable_s``, to know when a resting
            load makes it report a weighment.
        weighment_divisions: The parser's ``weighment_divisions``.
        seed: Seed for every random choice.
        knobs: Fault knobs.

    Attributes:
        weight: Weight shown now (display units).
        tare: Tare shown now.
        motion: Motion bit now.
        print_request: Print bit now.
        sent: Every frame written, valid or not.
        weighments: Weighments the parser should report, in order.
    """

    def __init__(
        self,
        port: PtyPort,
        *,
        rate_hz: float = 7.0,
        decimals: int = 2,
        increment: int = 1,
        unit: ToledoUnit = "kg",
        checksum: bool = True,
        pad_spaces: int = 0,
        auto_weighment_s: float = 2.0,
        weighment_divisions: int = 10,
        seed: int | None = None,
        knobs: StreamFaults = StreamFaults(),
    ) -> None:
        self.port = port
        self.rate_hz = rate_hz
        self.decimals = decimals
        self.increment = increment
        self.unit: ToledoUnit = unit
        self.checksum = checksum
        self.pad_spaces = pad_spaces
        self.auto_weighment_s = auto_weighment_s
        self.weighment_divisions = weighment_divisions
        self.knobs = knobs
        self.weight = 0.0
        self.tare = 0.0
        self.motion = False
        self.print_request = False
        self.sent: list[SentFrame] = []
        self.weighments: list[Weighment] = []
        self._rng = random.Random(seed)
        encode_frame(0.0, decimals=decimals, increment=increment, unit=unit, pad_spaces=pad_spaces)

    @property
    def division(self) -> float:
        """The display's step, in display units."""
        return self.increment * 10.0**-self.decimals

    def _frame(self) -> bytes:
        return encode_frame(
            self.weight,
            self.tare,
            decimals=self.decimals,
            increment=self.increment,
            unit=self.unit,
            net=self.tare > 0,
            motion=self.motion,
            print_request=self.print_request,
            checksum=self.checksum,
            pad_spaces=self.pad_spaces,
        )

    def emit(self) -> bool:
        """Send one frame of the current display now; returns whether it went out valid."""
        knobs, rng = self.knobs, self._rng
        if knobs.silent:
            return False
        frame = bytearray(self._frame())
        valid = True
        if self.checksum and rng.random() < knobs.bad_checksum_prob:
            good = frame[-1]
            frame[-1] = rng.choice([b for b in range(0x80) if b not in (good, STX)])
            valid = False
        if rng.random() < knobs.truncate_prob:
            frame = frame[: rng.randint(1, frame.index(b"\r"))]
            valid = False
        if knobs.parity_noise:
            frame = bytearray(b | (0x80 if rng.random() < 0.5 else 0) for b in frame)
        valid = self.port.write(bytes(frame)) == len(frame) and valid
        weight, tare = self._shown()
        self.sent.append(
            SentFrame(
                ts_ns=time.time_ns(),
                weight=weight,
                tare=tare,
                motion=self.motion,
                print_request=self.print_request,
                valid=valid,
            )
        )
        return valid

    async def _frames(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i
            self.emit()
            await asyncio.sleep(1 / self.rate_hz)

    async def hold(self, seconds: float) -> None:
        """Send the current display for ``seconds``."""
        async for _ in self._frames(max(1, round(seconds * self.rate_hz))):
            pass

    async def weigh(
        self,
        load: float,
        *,
        tare: float = 0.0,
        motion_s: float = 1.5,
        stable_s: float = 2.5,
        print_pulse: bool = True,
        unload: bool = True,
        rest_s: float = 1.0,
    ) -> Weighment | None:
        """Play one weighment: load on, motion, stable, print pulse, unload.

        Args:
            load: Weight shown once settled (net of ``tare``), display units.
            tare: Tare shown during the weighment (``net`` when > 0).
            motion_s: Time the weight moves towards ``load`` with the motion bit.
            stable_s: Time it then rests before the print pulse. Keep it a few frames
                away from ``auto_weighment_s``: which trigger the parser sees first
                near that boundary depends on timing jitter.
            print_pulse: Set the print bit for two frames after the rest.
            unload: Then move back to zero (motion for half a second) and rest there.
            rest_s: How long the empty scale then rests.

        Returns:
            The weighment recorded in ``weighments``, if the parser should see one.
        """
        start = self.weight
        self.tare = tare
        self.motion = True
        frames = max(1, round(motion_s * self.rate_hz))
        async for i in self._frames(frames):
            # Overshoot and ring down towards the load.
            progress = (i + 1) / frames
            wobble = (1 - progress) * 0.05 * (load - start) * self._rng.uniform(-1, 1)
            self.weight = start + (load - start) * min(1.0, progress * 1.2) + wobble
        self.weight = load
        self.motion = False
        recorded: Weighment | None = None
        heavy = abs(load) > self.weighment_divisions * self.division
        resting = max(1, round(stable_s * self.rate_hz))
        # The parser times the rest from the first stable frame to the last one.
        if heavy and (resting - 1) / self.rate_hz >= self.auto_weighment_s:
            recorded = self._record("stable")
        await self.hold(stable_s)
        if print_pulse:
            self.print_request = True
            seen = False  # the parser sees the rise at the first pulse frame that is valid
            for _ in range(2):
                seen = self.emit() or seen
                await asyncio.sleep(1 / self.rate_hz)
            self.print_request = False
            if seen and recorded is None:
                recorded = self._record("print")
        if unload:
            self.motion = True
            async for i in self._frames(max(1, round(0.5 * self.rate_hz))):
                self.weight = load * (1 - (i + 1) / max(1, round(0.5 * self.rate_hz)))
            self.weight = 0.0
            self.tare = 0.0
            self.motion = False
            await self.hold(rest_s)
        return recorded

    def _shown(self) -> tuple[float, float]:
        # What the parser reads back from the frame: the encoder's rounding, not ours.
        shown = decode_frame(self._frame())
        assert isinstance(shown, ToledoFrame)
        assert shown.weight is not None
        return shown.weight, shown.tare or 0.0

    def _record(self, trigger: Literal["print", "stable"]) -> Weighment:
        factor = _UNIT_KG[self.unit]
        weight, tare = self._shown()
        weighment = Weighment(
            weight_kg=round(weight * factor, 9),
            tare_kg=round(tare * factor, 9),
            trigger=trigger,
        )
        self.weighments.append(weighment)
        return weighment

    async def run(self) -> None:
        """Weigh random loads (a sack or a lorry's worth) until cancelled."""
        while True:
            load = round(self._rng.uniform(20.0, 900.0), max(self.decimals, 0))
            await self.weigh(load, print_pulse=self._rng.random() < 0.7)
            await self.hold(self._rng.uniform(1.0, 3.0))
