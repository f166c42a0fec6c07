r"""Mettler Toledo "Toledo continuous" output: ``scale.toledo_continuous`` (protocols §2.2, §6 C).

Sources: Rockwell 1771 Toledo interface guide, app. D; Mettler Toledo Wildcat technical
manual, app. 2 (tables 6-8 to 6-11); IND445 manual. Clones: Cardinal 225, Rice Lake
680, Fairbanks FB2550, Liden LUW2001. Receive only, sent at the display rate (about
7 frames/s on a Wildcat). 9600 7E1 on site, 8N1 in tests (serial settings are config).
Frame, 17 or 18 bytes (11 or 12 in the short variant without tare)::

    STX | SWA | SWB | SWC | W1..W6 | T1..T6 | CR | [CHK]
    02    2C    30    20    31 32 33 34 35 36  30 30 30 30 30 30  0D   20
          1234.56 kg gross, stable, tare 0
    02    2C    39    20    20 20 35 30 32 35  20 20 30 35 30 30  0D   5B
          50.25 kg net, in motion, tare 5.00 kg, space-padded

- W, T: weight shown (gross or net) and tare, 6 ASCII digits each, no sign, no point;
  leading zeros may be spaces (``  5025``), at least one digit must be there.
- SWA: bits 0-2 decimal position (0: x100, 1: x10, 2: none, 3..7: 1..5 decimals),
  bits 3-4 increment (01 x1, 10 x2, 11 x5; 00, which no manual lists, reads as x1),
  bit 5 = 1, bit 6 = 0. A byte with other values in bits 5-6 is not SWA: the frame is
  ``bad-status``. The division is increment x decimal step.
- SWB: bit 0 net, 1 negative, 2 out of range, 3 motion, 4 kg (else lb), 5 is 1 on
  Mettler and 0 on Fairbanks, so it is ignored; 6 not zeroed since power-up.
- SWC: bit 0 grams, 3 print request, 4 expanded display (x10, a service mode); 5 = 1.
- CHK (optional): ``(sum(b & 0x7F for b in STX..CR) + CHK) & 0x7F == 0``.

Bit 7 of every byte may be parity (7E1 read as 8N1): every byte is masked with 0x7F
before anything else, and ``raw`` and ``Discarded.data`` hold the masked bytes.

Framing and resync
------------------

Bytes before an STX are outside any frame and become one
``Discarded("outside-frame")`` when the next STX arrives (a frame cut by opening the
port mid-transmission ends this way, §4.2). From an STX the frame runs to CR; a second
STX before the CR cuts it (``truncated``), more than 15 bytes after the STX without CR
is ``too-long``, and a CR after a body of neither 9 nor 15 bytes is ``bad-length``.
The byte after CR is the checksum when ``checksum="on"``, is never read when ``"off"``,
and with ``"auto"`` (the default) it is the checksum unless it is an STX. A checksum
can itself be 0x02; when it also checks, the next byte decides: STX STX never starts a
frame (SWA is 0x20..0x3F), so a second STX means the first was a checksum. Without a
checksum, a frame is held until the next byte shows there is none, or until
``idle_gap_s`` of silence (``tick``). Then ``bad-checksum``, ``bad-status`` and
``bad-digits`` (weight or tare not ``␠*[0-9]+``; the weight is not read when out of
range).

Reporting
---------

These rules live in ``ScaleReporter``, which ``scale_ascii`` shares. Every valid frame
is decoded (``frames_ok``); a ``Measurement`` (``scale``) is published when the weight
changes by more than one division, when any status changes (stability, quality, net,
tare, unit, decimals), and otherwise every ``republish_s`` (5 s). Fields: ``weight_kg``
(float, kg; lb x 0.45359237, g / 1000), ``tare_kg`` (long frames), ``stable`` and
``net`` (bool), ``quality``: ``overload`` or ``underload`` when out of range (sign
decides; no weight then), else ``unstable`` in motion, else ``suspect`` when the
indicator has not been zeroed since power-up, else ``ok``. Tag ``unit_raw``: ``kg``,
``lb`` or ``g``.

A ``weighment`` is one load weighed: ``Measurement("weighment")`` with ``weight_kg``,
``tare_kg`` (long frames), ``net``, ``stable``, tag ``trigger`` (``print`` or
``stable``) and ``unit_raw``. It is emitted when the print request bit rises, or when
the weight has been stable for ``weighment_stable_s`` (2 s) after motion with more than
``weighment_divisions`` (10) divisions on the scale. One per load: after a weighment,
neither trigger fires again until motion is seen. Right after the parser is made the
load's history is unknown: only a print request counts until motion is seen, and a
print bit already set in the first frame is not a rise (the port may open mid-pulse).
A stable run restarts when the weight moves by more than one division or the status
(unit, decimals, net, tare) changes.

Config example (``site.toml``)::

    [[devices]]
    id = "balanca-rodoviaria"
    driver = "scale.toledo_continuous"
    port = "/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.3:1.0-port0"
    baudrate = 9600
    [devices.toledo]
    checksum = "auto"
    weighment_stable_s = 2.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, Literal, assert_never

from coffee_telemetry.drivers._framing import CR, EventQueue, IdleGap, StrayBytes, cap
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement

__all__ = [
    "STX",
    "ChecksumMode",
    "ScaleReading",
    "ScaleReporter",
    "ToledoFrame",
    "ToledoParser",
    "ToledoUnit",
    "checksum",
    "decode_frame",
    "encode_frame",
]

STX: Final = 0x02
_MASK: Final = bytes(b & 0x7F for b in range(256))  # for bytes.translate
_BODY_LONG: Final = 15  # SWA SWB SWC W1..W6 T1..T6
_BODY_SHORT: Final = 9  # SWA SWB SWC W1..W6
_DIGITS: Final = 6
_MAX_COUNT: Final = 10**_DIGITS - 1
_MAX_DISCARDED: Final = 64  # cap on Discarded.data
_LB_KG: Final = 0.45359237

#: How the byte after CR is read (see the module docstring).
ChecksumMode = Literal["auto", "on", "off"]
#: Units the status words can express.
ToledoUnit = Literal["kg", "lb", "g"]

_INCREMENTS: Final = {0: 1, 1: 1, 2: 2, 3: 5}
_INCREMENT_CODES: Final = {1: 1, 2: 2, 5: 3}
_UNIT_KG: Final = {"kg": 1.0, "lb": _LB_KG, "g": 1e-3}


@dataclass(frozen=True, slots=True)
class ToledoFrame:
    """One decoded frame, in the units the indicator shows.

    Attributes:
        weight: Weight shown (gross or net), signed; ``None`` when out of range and
            the digits are not a number.
        tare: Tare; ``None`` in a short frame.
        unit: ``kg``, ``lb`` or ``g``.
        decimals: Decimal places, -2 (x100) to 5.
        increment: Count-by: 1, 2 or 5 units of the last digit.
        net: Net weight shown (else gross).
        negative: The negative bit (out of range, it tells underload from overload).
        motion: The weight is moving.
        out_of_range: Over or under the indicator's range (the sign says which).
        print_request: The operator asked for a print.
        not_zeroed: Not zeroed since power-up.
        expanded: Expanded display (x10) is on.
        checksum: The frame carried a checksum byte.
    """

    weight: float | None
    tare: float | None
    unit: ToledoUnit
    decimals: int
    increment: int
    net: bool = False
    negative: bool = False
    motion: bool = False
    out_of_range: bool = False
    print_request: bool = False
    not_zeroed: bool = False
    expanded: bool = False
    checksum: bool = False

    @property
    def division(self) -> float:
        """The smallest weight step, in ``unit``."""
        return self.increment * _scaled(1, self.decimals)


def _scaled(count: int, decimals: int) -> float:
    # Exact decimal scaling: 123456 with 2 decimals is 1234.56, not 1234.5600000000001.
    return count / 10**decimals if decimals >= 0 else float(count * 10 ** (-decimals))


def checksum(frame: bytes) -> int:
    """The CHK byte for ``frame`` (STX to CR inclusive, any bit 7 ignored)."""
    return -sum(b & 0x7F for b in frame) & 0x7F


def _count(field: bytes) -> int | None:
    digits = field.lstrip(b" ")
    if not digits or not digits.isdigit():
        return None
    return int(digits)


_Decoded = tuple[ToledoFrame, int | None, int | None]  # frame, weight count, tare count


def _decode(body: bytes, has_checksum: bool) -> _Decoded | str:
    # ``body`` is masked, between STX and CR. The decoded frame with its counts, or why not.
    if len(body) not in (_BODY_SHORT, _BODY_LONG):
        return "bad-length"
    swa, swb, swc = body[0], body[1], body[2]
    if swa & 0x60 != 0x20:
        return "bad-status"
    decimals = (swa & 0x07) - 2
    out_of_range = bool(swb & 0x04)
    negative = bool(swb & 0x02)
    count = _count(body[3:9])
    if count is None and not out_of_range:
        return "bad-digits"
    tare_count: int | None = None
    if len(body) == _BODY_LONG:
        tare_count = _count(body[9:15])
        if tare_count is None:
            return "bad-digits"
    unit: ToledoUnit = "g" if swc & 0x01 else "kg" if swb & 0x10 else "lb"
    signed = None if count is None else -count if negative else count
    frame = ToledoFrame(
        weight=None if signed is None else _scaled(signed, decimals),
        tare=None if tare_count is None else _scaled(tare_count, decimals),
        unit=unit,
        decimals=decimals,
        increment=_INCREMENTS[(swa >> 3) & 0x03],
        net=bool(swb & 0x01),
        negative=negative,
        motion=bool(swb & 0x08),
        out_of_range=out_of_range,
        print_request=bool(swc & 0x08),
        not_zeroed=bool(swb & 0x40),
        expanded=bool(swc & 0x10),
        checksum=has_checksum,
    )
    return frame, signed, tare_count


def decode_frame(frame: bytes) -> ToledoFrame | Discarded:
    """Decode one whole frame, STX to CR or to CHK; never raises.

    The length tells whether a checksum is there (11/17 bytes without, 12/18 with).

    Returns:
        The frame, or ``Discarded`` with reason ``bad-length``, ``bad-checksum``,
        ``bad-status`` or ``bad-digits``.
    """
    data = bytes(frame).translate(_MASK)
    has_checksum = len(data) in (_BODY_SHORT + 3, _BODY_LONG + 3)
    end = len(data) - 1 if has_checksum else len(data)
    if end < 2 or data[0] != STX or data[end - 1] != CR:
        return Discarded(data=cap(data, _MAX_DISCARDED), reason="bad-length")
    if has_checksum and checksum(data[:end]) != data[end]:
        return Discarded(data=data, reason="bad-checksum")
    decoded = _decode(data[1 : end - 1], has_checksum)
    if isinstance(decoded, str):
        return Discarded(data=cap(data, _MAX_DISCARDED), reason=decoded)
    return decoded[0]


def _digits(count: int, decimals: int, pad_spaces: int) -> bytes:
    text = f"{count:0{_DIGITS}d}"
    # Leading zeros may be blanked, never the units digit or those after it.
    blankable = min(pad_spaces, _DIGITS - 1 - max(decimals, 0))
    keep = len(text) - len(text.lstrip("0"))
    blank = min(blankable, keep)
    return (" " * blank + text[blank:]).encode("ascii")


def _to_count(name: str, value: float, decimals: int) -> int:
    if not math.isfinite(value):
        raise DriverUsageError(f"{name} is not a finite number: {value!r}")
    scaled = abs(value) * 10.0**decimals
    if scaled >= _MAX_COUNT + 0.5:
        raise DriverUsageError(
            f"{name} {value!r} needs more than {_DIGITS} digits with {decimals} decimals"
        )
    return round(scaled)


def encode_frame(
    weight: float,
    tare: float | None = 0.0,
    *,
    decimals: int = 2,
    increment: int = 1,
    unit: ToledoUnit = "kg",
    net: bool = False,
    motion: bool = False,
    out_of_range: bool = False,
    print_request: bool = False,
    not_zeroed: bool = False,
    expanded: bool = False,
    checksum: bool = True,
    pad_spaces: int = 0,
) -> bytes:
    """Build the frame an indicator sends while it shows these values.

    ``decode_frame`` reads back what was given, rounded to ``decimals``.

    Args:
        weight: Weight shown, signed (the sign goes to SWB bit 1); rounded to
            ``decimals``.
        tare: Tare (not negative); ``None`` sends the short frame without tare.
        decimals: Decimal places, -2 (x100, two dummy zeros) to 5.
        increment: Count-by, 1, 2 or 5.
        unit: ``kg``, ``lb`` or ``g``.
        net: Net (else gross).
        motion: In motion.
        out_of_range: Over (positive weight) or under (negative) range.
        print_request: Print request bit.
        not_zeroed: Not zeroed since power-up.
        expanded: Expanded display.
        checksum: Append the CHK byte.
        pad_spaces: How many leading digit positions may show a space instead of a
            zero (0: zero padding); the units digit and the decimals are never blanked.

    Raises:
        DriverUsageError: What the frame cannot express: a weight or tare needing
            more than 6 digits, a negative tare, a non-finite value, ``decimals``
            outside -2..5, ``increment`` not 1, 2 or 5, an unknown unit, or
            ``pad_spaces`` outside 0..6.
    """
    if not -2 <= decimals <= 5:
        raise DriverUsageError(f"decimals must be -2..5: {decimals!r}")
    if increment not in _INCREMENT_CODES:
        raise DriverUsageError(f"increment must be 1, 2 or 5: {increment!r}")
    if unit not in _UNIT_KG:
        raise DriverUsageError(f"unit must be kg, lb or g: {unit!r}")
    if not 0 <= pad_spaces <= _DIGITS:
        raise DriverUsageError(f"pad_spaces must be 0..{_DIGITS}: {pad_spaces!r}")
    count = _to_count("weight", weight, decimals)
    negative = weight < 0 and count > 0
    swa = 0x20 | _INCREMENT_CODES[increment] << 3 | (decimals + 2)
    swb = (
        0x20
        | net
        | negative << 1
        | out_of_range << 2
        | motion << 3
        | (unit != "lb") << 4
        | not_zeroed << 6
    )
    swc = 0x20 | (unit == "g") | print_request << 3 | expanded << 4
    body = bytes((STX, swa, swb, swc)) + _digits(count, decimals, pad_spaces)
    if tare is not None:
        if tare < 0:
            raise DriverUsageError(f"tare cannot be negative: {tare!r}")
        body += _digits(_to_count("tare", tare, decimals), decimals, pad_spaces)
    body += b"\r"
    return body + bytes((_checksum(body),)) if checksum else body


_checksum = checksum  # encode_frame's ``checksum`` argument shadows the function


@dataclass(frozen=True, slots=True)
class ScaleReading:
    """One decoded reading of a streaming scale, as ``ScaleReporter`` needs it.

    Attributes:
        count: The weight in units of the last digit shown, signed (``None`` out of
            range). Compared with ``increment`` to tell a change from jitter.
        increment: One division, in units of the last digit (count-by: 1, 2, 5).
        status: What else identifies the reading (unit, decimals, net, tare...): a
            change publishes at once and restarts a stable run.
        motion: The scale reports motion.
        out_of_range: Over or under range.
        print_request: The operator asked for a print.
        fields: The ``scale`` measurement's fields (``weight_kg``, ``stable``,
            ``quality``...); a weighment keeps ``weight_kg``, ``tare_kg``, ``net`` and
            ``stable``.
        tags: Tags of both measurements (``unit_raw``).
        raw: The frame or line.
    """

    count: int | None
    increment: int
    status: tuple[object, ...]
    motion: bool
    out_of_range: bool
    print_request: bool
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str]
    raw: bytes


_WEIGHMENT_FIELDS: Final = ("weight_kg", "tare_kg", "net", "stable")


class ScaleReporter:
    """What a streaming scale publishes: rate-limited readings and weighments.

    The rules of the module docstring ("Reporting"), shared with ``scale_ascii``: a
    ``scale`` measurement on a change of more than one division, on any status or
    quality change, else every ``republish_s``; a ``weighment`` when the print request
    rises or after ``weighment_stable_s`` of rest following motion with more than
    ``weighment_divisions`` divisions, one per load.

    Raises:
        DriverUsageError: A negative or non-finite time, or negative divisions.
    """

    def __init__(
        self,
        *,
        republish_s: float = 5.0,
        weighment_stable_s: float = 2.0,
        weighment_divisions: int = 10,
    ) -> None:
        for name, value in (
            ("republish_s", republish_s),
            ("weighment_stable_s", weighment_stable_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise DriverUsageError(f"{name} must be >= 0: {value!r}")
        if weighment_divisions < 0:
            raise DriverUsageError(f"weighment_divisions must be >= 0: {weighment_divisions!r}")
        self._republish_s = republish_s
        self._stable_s = weighment_stable_s
        self._divisions = weighment_divisions
        self._published: tuple[tuple[object, ...], int | None, float] | None = None
        self._load: Literal["unknown", "fresh", "weighed"] = "unknown"
        self._run: tuple[tuple[object, ...], int, float] | None = None  # status, count, since
        self._printing: bool | None = None  # print bit of the last reading; None: none yet

    def report(self, reading: ScaleReading, now: float) -> list[Measurement]:
        """Take one reading that arrived at ``now``; return what to publish."""
        out: list[Measurement] = []
        if self._publish(reading, now):
            out.append(
                Measurement(
                    measurement="scale",
                    fields=dict(reading.fields),
                    tags=dict(reading.tags),
                    raw=reading.raw,
                )
            )
        trigger = self._weighment(reading, now)
        if trigger is not None:
            fields = {k: v for k, v in reading.fields.items() if k in _WEIGHMENT_FIELDS}
            out.append(
                Measurement(
                    measurement="weighment",
                    fields=fields,
                    tags={**reading.tags, "trigger": trigger},
                    raw=reading.raw,
                )
            )
        return out

    def _publish(self, reading: ScaleReading, now: float) -> bool:
        count = reading.count
        key = (reading.status, reading.fields.get("quality"), reading.fields.get("stable"))
        if self._published is not None:
            last_key, last_count, last_at = self._published
            moved = (
                count != last_count
                if count is None or last_count is None
                else abs(count - last_count) > reading.increment
            )
            if key == last_key and not moved and now - last_at < self._republish_s:
                return False
        self._published = (key, count, now)
        return True

    def _weighment(self, reading: ScaleReading, now: float) -> str | None:
        count = reading.count
        if reading.motion:
            self._load = "fresh"
        if not (reading.motion or reading.out_of_range) and count is not None:
            run = self._run
            if run is None or run[0] != reading.status or abs(count - run[1]) > reading.increment:
                self._run = (reading.status, count, now)
        else:
            self._run = None
        rising = reading.print_request and self._printing is False
        self._printing = reading.print_request
        trigger: str | None = None
        if rising and self._load != "weighed" and not reading.out_of_range:
            trigger = "print"
        elif (
            self._load == "fresh"
            and self._run is not None
            and now - self._run[2] >= self._stable_s
            and count is not None
            and abs(count) > self._divisions * reading.increment
        ):
            trigger = "stable"
        if trigger is not None:
            self._load = "weighed"
        return trigger


class _Framer(Enum):
    HUNT = auto()  # looking for STX
    BODY = auto()  # after STX, up to CR
    CHECK = auto()  # after CR: the checksum byte, or (auto) the next STX
    EITHER = auto()  # auto: after CR came 0x02, a valid checksum and an STX alike


#: A whole frame is held to see whether a checksum follows.
_AFTER_CR: Final = frozenset({_Framer.CHECK, _Framer.EITHER})


class ToledoParser(EventQueue[Measurement]):
    """Stream parser for Toledo continuous output (see the module docstring).

    Args:
        checksum: ``auto``, ``on`` or ``off``: how the byte after CR is read.
        republish_s: Publish an unchanged reading again after this long.
        weighment_stable_s: Stable time after motion that makes a weighment.
        weighment_divisions: A weighment needs more than this many divisions.
        idle_gap_s: Silence after which a frame held for its checksum is finished.

    Attributes:
        frames_ok: Valid frames decoded (published or not).
        frames_discarded: ``Discarded`` events produced.

    Raises:
        DriverUsageError: An unknown checksum mode, or a negative or non-finite time.
    """

    def __init__(
        self,
        *,
        checksum: ChecksumMode = "auto",
        republish_s: float = 5.0,
        weighment_stable_s: float = 2.0,
        weighment_divisions: int = 10,
        idle_gap_s: float = 0.5,
    ) -> None:
        if checksum not in ("auto", "on", "off"):
            raise DriverUsageError(f"checksum must be 'auto', 'on' or 'off': {checksum!r}")
        self._idle = IdleGap(idle_gap_s)
        super().__init__(max_discarded=_MAX_DISCARDED)
        self._reporter = ScaleReporter(
            republish_s=republish_s,
            weighment_stable_s=weighment_stable_s,
            weighment_divisions=weighment_divisions,
        )
        self._mode: ChecksumMode = checksum
        self._framer = _Framer.HUNT
        self._frame = bytearray()
        self._stray = StrayBytes(_MAX_DISCARDED)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the frame in progress and the start of a stray run."""
        return len(self._frame) + self._stray.held

    def next_deadline(self) -> float | None:
        """When to call ``tick``: only while a frame waits to see if a checksum follows."""
        return self._idle.deadline(holding=self._framer in _AFTER_CR)

    def tick(self, now: float) -> None:
        """Tell the parser the time; silence after CR finishes a held frame."""
        if not self._idle.ended(now, holding=self._framer in _AFTER_CR):
            return
        if self._framer is _Framer.EITHER:
            # CR, 0x02, silence: a lone STX does not start a frame, so it was the checksum.
            self._finish(bytes(self._frame), STX, now)
        elif self._mode == "on":
            self._discard(bytes(self._frame), "truncated")  # the checksum never came
        else:
            self._finish(bytes(self._frame), None, now)
        self._frame.clear()
        self._framer = _Framer.HUNT

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes that arrived at ``now`` (monotonic seconds), cut anywhere."""
        if not data:
            return
        self._idle.received(now)
        for byte in data.translate(_MASK):
            self._byte(byte, now)

    def _byte(self, byte: int, now: float) -> None:
        match self._framer:
            case _Framer.HUNT:
                if byte == STX:
                    self._flush_stray(self._stray, "outside-frame")
                    self._start()
                else:
                    self._stray.append(byte)
            case _Framer.BODY:
                if byte == STX:
                    self._discard(bytes(self._frame), "truncated")
                    self._start()
                elif byte == CR:
                    self._frame.append(CR)
                    if self._mode == "off":
                        self._finish(bytes(self._frame), None, now)
                        self._framer = _Framer.HUNT
                    else:
                        self._framer = _Framer.CHECK
                elif len(self._frame) > _BODY_LONG:
                    self._discard(bytes(self._frame) + bytes((byte,)), "too-long")
                    self._framer = _Framer.HUNT
                else:
                    self._frame.append(byte)
            case _Framer.CHECK:
                frame = bytes(self._frame)
                if self._mode == "on" or byte != STX:
                    self._finish(frame, byte, now)
                    self._framer = _Framer.HUNT
                elif checksum(frame) == STX:
                    self._framer = _Framer.EITHER
                else:
                    self._finish(frame, None, now)
                    self._start()
            case _Framer.EITHER:
                frame = bytes(self._frame)
                if byte == STX:
                    self._finish(frame, STX, now)
                    self._start()
                else:
                    self._finish(frame, None, now)
                    self._start()
                    self._byte(byte, now)
            case _:  # pragma: no cover
                assert_never(self._framer)

    def _start(self) -> None:
        self._frame.clear()
        self._frame.append(STX)
        self._framer = _Framer.BODY

    def _finish(self, frame: bytes, chk: int | None, now: float) -> None:
        raw = frame if chk is None else frame + bytes((chk,))
        if chk is not None and checksum(frame) != chk:
            self._discard(raw, "bad-checksum")
            return
        decoded = _decode(frame[1:-1], chk is not None)
        if isinstance(decoded, str):
            self._discard(raw, decoded)
            return
        self.frames_ok += 1
        self._report(*decoded, raw, now)

    # -- reporting -----------------------------------------------------------------

    def _report(
        self, frame: ToledoFrame, count: int | None, tare: int | None, raw: bytes, now: float
    ) -> None:
        factor = _UNIT_KG[frame.unit]
        fields: dict[str, FieldValue] = {}
        if frame.out_of_range:
            quality = "underload" if frame.negative else "overload"
        else:
            assert frame.weight is not None  # in range, the digits were checked
            fields["weight_kg"] = round(frame.weight * factor, 9)
            quality = "unstable" if frame.motion else "suspect" if frame.not_zeroed else "ok"
        if frame.tare is not None:
            fields["tare_kg"] = round(frame.tare * factor, 9)
        fields.update(
            stable=not (frame.out_of_range or frame.motion), quality=quality, net=frame.net
        )
        reading = ScaleReading(
            count=count,
            increment=frame.increment,
            status=(frame.unit, frame.decimals, frame.increment, frame.net, tare),
            motion=frame.motion,
            out_of_range=frame.out_of_range,
            print_request=frame.print_request,
            fields=fields,
            tags={"unit_raw": frame.unit},
            raw=raw,
        )
        self._events += self._reporter.report(reading, now)
