r"""A&D and generic OEM weight lines: ``scale.ascii`` (protocols §2.4, §2.5, §6 C).

Sources: A&D EK-L manual §9-2, GX-A/GF-A communication manual p. 18, AD-4404 §9.2.6
(A&D); Tiger TI-02-P, Liden LUW2001, Kern KFB-TM, Triner TS-700 (generic indicators).
Receive only, one line per reading, sent continuously or on print; lines end in CR LF
or CR. Two shapes, told apart by the second field::

    A&D balance     HH , ±DDDDDD.D UUU CR LF        ST,+00123.45  g
                    header ST stable, US unstable, QT count (not a weight), OL overload;
                    sign and 8 characters of zero-filled number, unit right-aligned in 3
    indicator       H1 , H2 , [sign] number [,] unit CR [LF]
                    ST,NT,+0012.34kg   (A&D AD-4404/AD-4325)
                    ST,GS,+  1.250kg   US,NT,- 12.5,lb   (Tiger, Liden, Kern, Triner)
                    H1 ST, US, OL or LO (out of range); H2 GS gross, NT net, TR tare;
                    sign ``+``, ``-``, space or none; the number space- or zero-padded;
                    unit kg, g, t, lb or oz

The indicator grammar is the tolerant regex of §2.5 (checked there against the four
published variants), widened to the A&D headers: ``(ST|US|OL|LO),(GS|NT|TR),?([+\- ]?)
*([\d. ]+?) *,? *(kg|lb|g|t|oz)``. Out of range, the digits may be spaces; the reading
then has no weight. Units become kilograms (g / 1000, t x 1000, lb x 0.45359237, oz x
0.028349523125).

Framing: lines end at CR, LF or CR LF; a line ending in CR is finished when the next
byte arrives or after ``idle_gap_s`` of silence (``tick``); an unterminated line cut
by such a silence is ``truncated``. ``max_line`` bytes without a line end are
``too-long`` and the rest of that line is skipped. Other reasons: ``framing-suspect``
(over 10 % non-text bytes, §4.2), ``bad-line`` (neither grammar), ``bad-weight`` (a
number that is not one), ``unknown-unit``, ``not-a-weight`` (``QT`` piece counts).
Blank lines are ignored.

Reporting is that of the Toledo stream (``scale_toledo.ScaleReporter``): a ``scale``
measurement when the weight moves by more than one unit of its last digit, when the
status changes, else every ``republish_s``; a ``weighment`` after ``weighment_stable_s``
of rest following motion (``US``) with more than ``weighment_divisions`` digits of
weight (these lines carry no print request). Fields: ``weight_kg`` (``tare_kg`` on
``TR`` lines instead), ``stable`` (``ST``), ``quality`` (``ok``, ``unstable``,
``overload``, ``underload`` when out of range with a minus sign), ``net`` (indicator
lines: ``NT``); tag ``unit_raw``.

Config example (``site.toml``)::

    [[devices]]
    id = "balanca-sacaria"
    driver = "scale.ascii"
    port = "/dev/serial/by-id/usb-Prolific_PL2303-if00-port0"
    baudrate = 9600
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from coffee_telemetry.drivers._framing import EventQueue, IdleGap, LineReader, looks_misframed
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement
from coffee_telemetry.drivers.scale_toledo import ScaleReading, ScaleReporter

__all__ = [
    "UNIT_TO_KG",
    "AsciiScaleParser",
    "AsciiWeight",
    "Kind",
    "decode_line",
    "encode_line",
]

#: Kilograms per unit these scales print.
UNIT_TO_KG: Final = {"kg": 1.0, "g": 1e-3, "t": 1e3, "lb": 0.45359237, "oz": 0.028349523125}

BalanceHeader = Literal["ST", "US", "QT", "OL"]
IndicatorHeader = Literal["ST", "US", "OL", "LO"]
Kind = Literal["GS", "NT", "TR"]

_BALANCE = re.compile(rb"(ST|US|QT|OL),([+\-])([0-9.]{7,8}) *([!-~]{1,3}) *")
_INDICATOR = re.compile(rb"(ST|US|OL|LO),(GS|NT|TR),?([+\- ]?) *([0-9. ]*?) *,? *(kg|lb|g|t|oz) *")
_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_OUT_OF_RANGE: Final = frozenset({"OL", "LO"})


@dataclass(frozen=True, slots=True)
class AsciiWeight:
    """One line, decoded.

    Attributes:
        header: ``ST``, ``US``, ``QT``, ``OL`` or ``LO``.
        kind: ``GS``, ``NT`` or ``TR`` on indicator lines; ``None`` on balance lines.
        weight: The number, signed, in ``unit``; ``None`` out of range without digits.
        decimals: Digits after the point.
        unit: As printed.
        negative: A minus sign was printed (out of range: underload).
    """

    header: str
    kind: str | None
    weight: float | None
    decimals: int
    unit: str
    negative: bool = False


def decode_line(line: bytes) -> AsciiWeight | Discarded:
    """Decode one line, with or without its CR/LF; never raises.

    Returns:
        The line, or ``Discarded`` with reason ``framing-suspect``, ``bad-line``,
        ``bad-weight`` or ``unknown-unit``.
    """
    content = bytes(line).rstrip(b"\r\n")
    if looks_misframed(content):
        return Discarded(data=content, reason="framing-suspect")
    kind: str | None
    found = _BALANCE.fullmatch(content)
    if found is not None:
        header, sign, number, unit = (g.decode("ascii") for g in found.groups())
        kind = None
    else:
        found = _INDICATOR.fullmatch(content)
        if found is None:
            return Discarded(data=content, reason="bad-line")
        header, kind, sign, number, unit = (g.decode("ascii") for g in found.groups())
    if unit not in UNIT_TO_KG and header != "QT":
        return Discarded(data=content, reason="unknown-unit")
    number = number.strip()
    parsed = _NUMBER.fullmatch(number)
    if parsed is None and (header not in _OUT_OF_RANGE or number):
        return Discarded(data=content, reason="bad-weight")
    negative = sign == "-"
    weight = None
    decimals = 0
    if parsed is not None:
        decimals = len(parsed.group(2) or "")
        weight = -float(number) if negative else float(number)
    return AsciiWeight(header, kind, weight, decimals, unit, negative)


def encode_line(
    weight: float | None,
    *,
    unit: str = "kg",
    decimals: int = 2,
    header: str = "ST",
    kind: Kind | None = None,
    zero_pad: bool = False,
    comma_before_unit: bool = False,
) -> bytes:
    """Build a line as a scale prints it, CR LF included.

    ``kind=None`` prints the A&D balance shape (``ST,+00123.45  g``); ``GS``, ``NT``
    or ``TR`` the indicator shape (``ST,GS,+  1.250kg``), its number right-aligned in
    7 characters, padded with spaces or (``zero_pad``, A&D) zeros.

    Args:
        weight: Signed weight in ``unit``, rounded to ``decimals``; ``None`` only out
            of range on an indicator (the digits are spaces).
        unit: ``kg``, ``g``, ``t``, ``lb`` or ``oz``.
        decimals: Digits after the point, 0 to 6.
        header: ``ST``, ``US`` or ``OL`` (balance also ``QT``; indicator also ``LO``).
        kind: ``GS``, ``NT``, ``TR``, or ``None`` for the balance shape.
        zero_pad: Pad an indicator's number with zeros.
        comma_before_unit: Print ``,`` before the unit (some indicators).

    Raises:
        DriverUsageError: A header, unit or kind the shape does not have, a number
            too long for its field, a missing weight where one is needed.
    """
    if unit not in UNIT_TO_KG:
        raise DriverUsageError(f"unit must be one of {sorted(UNIT_TO_KG)}: {unit!r}")
    if not 0 <= decimals <= 6:
        raise DriverUsageError(f"decimals must be 0..6: {decimals!r}")
    headers = ("ST", "US", "QT", "OL") if kind is None else ("ST", "US", "OL", "LO")
    if header not in headers:
        raise DriverUsageError(f"header must be one of {headers}: {header!r}")
    if kind is not None and kind not in ("GS", "NT", "TR"):
        raise DriverUsageError(f"kind must be GS, NT, TR or None: {kind!r}")
    if weight is None:
        if kind is None or header not in _OUT_OF_RANGE:
            raise DriverUsageError("only an indicator out of range may print no weight")
        number, sign = "", "+"
    else:
        if not math.isfinite(weight):
            raise DriverUsageError(f"weight is not a finite number: {weight!r}")
        number = f"{abs(weight):.{decimals}f}"
        sign = "-" if weight < 0 and float(number) != 0 else "+"
    if kind is None:
        if len(number) > 8:
            raise DriverUsageError(f"weight {weight!r} does not fit 8 characters")
        text = f"{header},{sign}{number:0>8}{unit:>3}"
    else:
        if len(number) > 7:
            raise DriverUsageError(f"weight {weight!r} does not fit 7 characters")
        padded = f"{number:0>7}" if zero_pad and number else f"{number:>7}"
        text = f"{header},{kind},{sign}{padded}{',' if comma_before_unit else ''}{unit}"
    return text.encode("ascii") + b"\r\n"


class AsciiScaleParser(EventQueue[Measurement]):
    """Stream parser for A&D and generic ASCII weight lines (see the module docstring).

    Args:
        republish_s: Publish an unchanged reading again after this long.
        weighment_stable_s: Rest after motion that makes a weighment.
        weighment_divisions: A weighment needs more than this many last-digit units.
        idle_gap_s: Silence that ends a line left open by a CR (or cuts a line).
        max_line: Bytes without a line end after which a line is dropped.

    Attributes:
        frames_ok: Lines decoded (published or not, counts included).
        frames_discarded: ``Discarded`` events produced.

    Raises:
        DriverUsageError: A negative or non-finite time, or ``max_line`` < 16.
    """

    def __init__(
        self,
        *,
        republish_s: float = 5.0,
        weighment_stable_s: float = 2.0,
        weighment_divisions: int = 10,
        idle_gap_s: float = 0.5,
        max_line: int = 64,
    ) -> None:
        self._idle = IdleGap(idle_gap_s)
        if max_line < 16:
            raise DriverUsageError(f"max_line must be >= 16: {max_line!r}")
        super().__init__(max_discarded=max_line)
        self._reporter = ScaleReporter(
            republish_s=republish_s,
            weighment_stable_s=weighment_stable_s,
            weighment_divisions=weighment_divisions,
        )
        self._lines = LineReader("auto", max_line=max_line)

    def next_deadline(self) -> float | None:
        """When to call ``tick``: only while part of a line is held."""
        return self._idle.deadline(holding=self._lines.pending > 0)

    def tick(self, now: float) -> None:
        """Tell the parser the time; a silence ends the line held."""
        if self._idle.ended(now, holding=self._lines.pending > 0):
            for line in self._lines.flush():
                self._line(line, now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes that arrived at ``now`` (monotonic seconds), cut anywhere."""
        if not data:
            return
        self._idle.received(now)
        for line in self._lines.feed(data):
            self._line(line, now)

    def _line(self, content: bytes | Discarded, now: float) -> None:
        if isinstance(content, Discarded):  # too long, or cut by a silence
            self._discard(content.data, content.reason)
            return
        decoded = decode_line(content)
        if isinstance(decoded, Discarded):
            self._discard(decoded.data, decoded.reason)
            return
        if decoded.header == "QT":
            self._discard(content, "not-a-weight")
            return
        self.frames_ok += 1
        self._events += self._reporter.report(_reading(decoded, content), now)


def _reading(line: AsciiWeight, raw: bytes) -> ScaleReading:
    factor = UNIT_TO_KG[line.unit]
    out_of_range = line.header in _OUT_OF_RANGE
    motion = line.header == "US"
    count = None if line.weight is None else round(line.weight * 10**line.decimals)
    fields: dict[str, FieldValue] = {}
    if line.weight is not None and not out_of_range:
        kg = round(line.weight * factor, 9)
        fields["tare_kg" if line.kind == "TR" else "weight_kg"] = kg
    if out_of_range:
        quality = "underload" if line.negative else "overload"
    else:
        quality = "unstable" if motion else "ok"
    fields.update(stable=not (motion or out_of_range), quality=quality)
    if line.kind in ("GS", "NT"):
        fields["net"] = line.kind == "NT"
    tare = line.kind == "TR"
    return ScaleReading(
        # A tare line is not a weight: no stable run, no weighment; its value is status.
        count=None if tare or out_of_range else count,
        increment=1,
        status=(line.unit, line.decimals, line.kind, count if tare else None),
        motion=motion,
        out_of_range=out_of_range,
        print_request=False,
        fields=fields,
        tags={"unit_raw": line.unit},
        raw=raw,
    )
