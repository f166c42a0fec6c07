"""Simulated moisture meters: a ticket printer (Gehaka style) and a Tesma Plus2.

Both write what the drivers' own encoders build (``encode_ticket``, ``encode_frame``)
to a ``PtyPort``, so a simulator cannot drift from its parser. Each keeps ``sent``:
the readings a correct parser on the other end must report, in order, so a test can
compare the two lists. Fault knobs (``Faults``) damage the stream the way real links
do; ``sent`` accounts for them (a damaged ticket or frame is not a reading).

``emit()`` writes once, now (tests drive it directly); ``run()`` emits every
``interval_s`` until cancelled. Unplug and replug are ``PtyPort`` methods. Sleeps
live here, never in the drivers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Iterator

from coffee_telemetry.drivers.moisture_tesma import encode_frame
from coffee_telemetry.drivers.moisture_ticket import MOISTURE_RANGE, encode_ticket
from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["Faults", "MoistureSource", "SentReading", "TesmaMeterSim", "TicketMeterSim"]

#: Where the next moisture value comes from: a function, a finite or endless
#: iterable (``run()`` returns when it ends), or ``None`` for a random walk.
MoistureSource = Callable[[], float] | Iterable[float] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """Fault knobs; assign a new ``Faults`` to a simulator's ``knobs`` to change them live.

    Attributes:
        garbage_prob: Chance, per ticket or frame, of a burst of random bytes before
            it. Ticket bursts end with CR LF FF (an escape sequence cut at the end of
            a burst takes at most two bytes as parameters, so the FF always ends the
            burst and it cannot swallow the next ticket); Tesma bursts hold no STX or
            ETX, so they stay outside frames.
        wrong_baud: Every ticket or frame is replaced by as many random bytes with the
            high bit set, as a line at the wrong baud rate reads.
        partial_at_connect: Before the first ticket or frame, write the tail of one,
            as if the port opened mid-transmission.
        no_form_feed: Tickets end without FF; the parser must rely on the idle gap
            (or on the next ``ESC @`` when ``escpos`` is on).
        copies: Print each ticket this many times (the meter's "número de cópias").
        silent: Write nothing (printer output off, meter idle or powered down).
        truncate_prob: Chance a ticket is cut before its moisture line (power lost
            while printing) or a frame is cut short.
        flip_prob: Chance a Tesma frame has one byte corrupted (a separator or value
            byte, so the frame is always invalid, never a wrong reading).
    """

    garbage_prob: float = 0.0
    wrong_baud: bool = False
    partial_at_connect: bool = False
    no_form_feed: bool = False
    copies: int = 1
    silent: bool = False
    truncate_prob: float = 0.0
    flip_prob: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class SentReading:
    """A reading the simulator sent whole; what the parser must report.

    Attributes:
        ts_ns: ``time.time_ns()`` right after the write that completed it.
        moisture_pct: As printed (rounded to one decimal).
        product: Product or grain tag, if printed.
        sample_id: Sample number, if printed.
        lot: Lot tag, if printed.
        temperature_c: As printed, if printed.
        bulk_density_kg_hl: As printed, if printed.
        meter_time: The meter's clock as printed, if printed.
    """

    ts_ns: int
    moisture_pct: float
    product: str | None = None
    sample_id: str | None = None
    lot: str | None = None
    temperature_c: float | None = None
    bulk_density_kg_hl: float | None = None
    meter_time: str | None = None


def _moisture_source(source: MoistureSource, rng: random.Random) -> Callable[[], float | None]:
    if source is None:
        value = 12.0

        def walk() -> float:
            nonlocal value
            value = min(14.0, max(10.0, value + rng.uniform(-0.3, 0.3)))
            return round(value, 1)

        return walk
    if callable(source):
        return source
    values: Iterator[float] = iter(source)
    return lambda: next(values, None)


def _high_bit_noise(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(0x80, 0x100) for _ in range(size))


class TicketMeterSim:
    """A moisture meter that prints a ticket per sample (``moisture.ticket``).

    Args:
        port: Where to write (opened by the caller).
        interval_s: Time between tickets in ``run()``.
        product: The ``Produto:`` line; ``None`` prints none.
        moisture: Source of moisture values for ``run()`` (default: random walk in
            10.0..14.0 %).
        lot: The ``Lote:`` line; ``None`` prints none.
        seed: Seed for every random choice (values and faults).
        knobs: Fault knobs.
        header: First ticket line.
        escpos: Wrap tickets in ESC/POS commands.
        line_ending: Line terminator.
        decimal_comma: Print ``11,8`` rather than ``11.8``.
        extras: Print temperature and bulk density (random, plausible) when ``emit``
            is not given them.

    Attributes:
        sent: Every valid ticket written whole, once even when printed in copies.
        knobs: The current fault knobs.
    """

    def __init__(
        self,
        port: PtyPort,
        *,
        interval_s: float = 5.0,
        product: str | None = "CAFE",
        moisture: MoistureSource = None,
        lot: str | None = None,
        seed: int | None = None,
        knobs: Faults = Faults(),
        header: str = "GEHAKA G650",
        escpos: bool = True,
        line_ending: bytes = b"\r\n",
        decimal_comma: bool = True,
        extras: bool = True,
    ) -> None:
        self.port = port
        self.interval_s = interval_s
        self.product = product
        self.lot = lot
        self.knobs = knobs
        self.header = header
        self.escpos = escpos
        self.line_ending = line_ending
        self.decimal_comma = decimal_comma
        self.extras = extras
        self.sent: list[SentReading] = []
        self._rng = random.Random(seed)
        self._next_moisture = _moisture_source(moisture, self._rng)
        self._next_sample = 1
        self._tail_written = False

    async def emit(
        self,
        *,
        moisture_pct: float,
        lot: str | None = None,
        sample_id: str | None = None,
        product: str | None = None,
        temperature_c: float | None = None,
        bulk_density_kg_hl: float | None = None,
        meter_time: str | None = None,
    ) -> SentReading | None:
        """Print one ticket now.

        ``lot`` and ``product`` default to the simulator's; ``sample_id`` to the next
        of ``0001``, ``0002``...; ``meter_time`` to the local clock.

        Returns:
            What the parser should report, or ``None`` if no valid ticket went out
            (a fault, silence, moisture outside 0..60, or the pty dropped bytes).

        Raises:
            DriverUsageError: A value the ticket cannot print.
        """
        rng = self._rng
        if sample_id is None:
            sample_id = f"{self._next_sample:04d}"
            self._next_sample += 1
        if self.extras:
            if temperature_c is None:
                temperature_c = round(rng.uniform(20.0, 28.0), 1)
            if bulk_density_kg_hl is None:
                bulk_density_kg_hl = round(rng.uniform(36.0, 40.0), 2)
        reading = SentReading(
            ts_ns=0,
            moisture_pct=float(f"{moisture_pct:.1f}"),
            product=self.product if product is None else product,
            sample_id=sample_id,
            lot=self.lot if lot is None else lot,
            temperature_c=None if temperature_c is None else float(f"{temperature_c:.1f}"),
            bulk_density_kg_hl=(
                None if bulk_density_kg_hl is None else float(f"{bulk_density_kg_hl:.2f}")
            ),
            meter_time=meter_time or time.strftime("%d/%m/%Y %H:%M:%S"),
        )
        knobs = self.knobs
        ticket = encode_ticket(
            moisture_pct=reading.moisture_pct,
            product=reading.product,
            temperature_c=reading.temperature_c,
            bulk_density_kg_hl=reading.bulk_density_kg_hl,
            sample_id=reading.sample_id,
            lot=reading.lot,
            meter_time=reading.meter_time,
            header=self.header,
            escpos=self.escpos,
            form_feed=not knobs.no_form_feed,
            line_ending=self.line_ending,
            decimal_comma=self.decimal_comma,
        )
        if knobs.silent:
            return None
        port = self.port
        if knobs.partial_at_connect and not self._tail_written:
            # Never from byte 0 or 1: the tail must not begin with ESC @.
            port.write(ticket[rng.randint(2, len(ticket) - 1) :])
            self._tail_written = True
        if rng.random() < knobs.garbage_prob:
            port.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + b"\r\n\x0c")
        if knobs.wrong_baud:
            port.write(_high_bit_noise(rng, len(ticket)))
            return None
        if rng.random() < knobs.truncate_prob:
            port.write(ticket[: rng.randint(1, ticket.index(b"Umidade"))])
            return None
        whole = port.write(ticket) == len(ticket)
        for _ in range(knobs.copies - 1):
            port.write(ticket)
        low, high = MOISTURE_RANGE
        if not (whole and low <= reading.moisture_pct <= high):
            return None
        stamped = dataclasses.replace(reading, ts_ns=time.time_ns())
        self.sent.append(stamped)
        return stamped

    async def run(self) -> None:
        """Print a ticket every ``interval_s`` (the first at once) until cancelled."""
        while (value := self._next_moisture()) is not None:
            await self.emit(moisture_pct=value)
            await asyncio.sleep(self.interval_s)


class TesmaMeterSim:
    """A Tesma Plus2 sending its displayed value every ``interval_s`` (``moisture.tesma``).

    Args:
        port: Where to write (opened by the caller).
        interval_s: Time between frames in ``run()`` (the meter: 1 s).
        grain: Grain shown, up to 8 latin-1 characters.
        moisture_pct: Value shown.
        debounce: The parser's debounce, to know when it will report.
        moisture: If given, ``run()`` shows a new value from it every
            ``frames_per_sample`` frames (a new sample in the meter); ``None`` keeps
            the value until ``set_value``.
        frames_per_sample: See ``moisture``.
        seed: Seed for every random choice.
        knobs: Fault knobs (``copies`` and ``no_form_feed`` do not apply).

    Attributes:
        sent: Each (grain, value) the parser should report, when the frame that
            completed its debounce run was written.
        knobs: The current fault knobs.
    """

    def __init__(
        self,
        port: PtyPort,
        *,
        interval_s: float = 1.0,
        grain: str = "MAIZ",
        moisture_pct: float = 14.4,
        debounce: int = 2,
        moisture: MoistureSource = None,
        frames_per_sample: int = 5,
        seed: int | None = None,
        knobs: Faults = Faults(),
    ) -> None:
        self.port = port
        self.interval_s = interval_s
        self.debounce = debounce
        self.frames_per_sample = frames_per_sample
        self.knobs = knobs
        self.sent: list[SentReading] = []
        self._rng = random.Random(seed)
        self._next_moisture = None if moisture is None else _moisture_source(moisture, self._rng)
        self._frame = b""
        self._pair = ("", 0.0)
        self.set_value(grain, moisture_pct)
        # A model of the parser's debounce, fed with what actually went out.
        self._run: tuple[str, float] | None = None
        self._run_len = 0
        self._reported: tuple[str, float] | None = None
        self._opens = port.opens
        self._tail_written = False

    def set_value(self, grain: str, moisture_pct: float) -> None:
        """Show a new grain and value from the next frame on.

        Raises:
            DriverUsageError: The frame cannot carry them.
        """
        self._frame = encode_frame(grain, moisture_pct)
        self._pair = (grain, float(f"{moisture_pct:04.1f}"))

    async def emit(self) -> SentReading | None:
        """Send one frame now (or what the fault knobs make of it).

        Returns:
            The reading this frame makes the parser report, if any.
        """
        if self.port.opens != self._opens:
            # A new pty means a new connection and a fresh parser on the other end.
            self._opens = self.port.opens
            self._invalid()
            self._reported = None
        knobs, rng, port, frame = self.knobs, self._rng, self.port, self._frame
        if knobs.silent:
            return None
        if knobs.partial_at_connect and not self._tail_written:
            port.write(frame[rng.randint(1, len(frame) - 1) :])  # no STX: outside any frame
            self._tail_written = True
        if rng.random() < knobs.garbage_prob:
            port.write(bytes(rng.choice(_NOT_STX_ETX) for _ in range(rng.randint(1, 32))))
        if knobs.wrong_baud:
            port.write(_high_bit_noise(rng, len(frame)))
            return None
        if rng.random() < knobs.truncate_prob:
            port.write(frame[: rng.randint(1, len(frame) - 1)])
            self._invalid()
            return None
        if rng.random() < knobs.flip_prob:
            # Bytes 9..16 are CR LF NN.N CR LF; XOR 0x40 makes each of them invalid
            # (M, J, p..y, n) and never an STX or ETX.
            position = rng.randint(9, 16)
            flipped = bytearray(frame)
            flipped[position] ^= 0x40
            port.write(bytes(flipped))
            self._invalid()
            return None
        written = port.write(frame)
        if written != len(frame):
            if written:
                self._invalid()  # the parser will see a cut frame
            return None
        return self._valid(self._pair)

    async def run(self) -> None:
        """Send a frame every ``interval_s`` (the first at once) until cancelled."""
        frames = 0
        while True:
            if self._next_moisture is not None and frames % self.frames_per_sample == 0:
                value = self._next_moisture()
                if value is None:
                    return
                self.set_value(self._pair[0], value)
            await self.emit()
            frames += 1
            await asyncio.sleep(self.interval_s)

    def _invalid(self) -> None:
        self._run = None
        self._run_len = 0

    def _valid(self, pair: tuple[str, float]) -> SentReading | None:
        if pair == self._run:
            self._run_len += 1
        else:
            self._run, self._run_len = pair, 1
        if self._run_len < self.debounce or pair == self._reported:
            return None
        self._reported = pair
        reading = SentReading(ts_ns=time.time_ns(), moisture_pct=pair[1], product=pair[0])
        self.sent.append(reading)
        return reading


_NOT_STX_ETX = bytes(b for b in range(256) if b not in (0x02, 0x03))
