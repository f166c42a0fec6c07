r"""Tesma Plus2 / Plus2 Printer grain moisture meter: ``moisture.tesma`` (protocols §6 A1).

Manual: Tesma Plus2 Printer, §5 "Comunicación con una PC", p. 32. RS-232C, 9600 8N1,
no handshake, receive only. While on, the meter sends the value it displays once a
second, unasked; the PC output and the ticket printer module are exclusive. Fixed
18-byte frame, no checksum, no temperature, no status::

    [0]     STX        02
    [1..8]  grain      ASCII (latin-1 here), left-aligned, space-padded: "MAIZ    "
    [9..10] CR LF      0D 0A
    [11..14] moisture  "NN.N": two digits, '.', one decimal: "14.4"
    [15..16] CR LF     0D 0A
    [17]    ETX        03

    02 4D 41 49 5A 20 20 20 20 0D 0A 31 34 2E 34 0D 0A 03  ->  MAIZ, 14.4 %

Framing and resync: bytes before an STX are outside any frame; they are dropped and
reported as one ``Discarded(reason="outside-frame")`` when the next STX arrives (this
is how a frame cut by opening the port mid-transmission ends, §4.2). From an STX the
frame runs to the next ETX and must then pass ``decode_frame`` (length 18, CR LF at
9 and 15, ``^\d\d\.\d$`` value, printable grain), else ``Discarded`` with the reason it
failed. A second STX before the ETX cuts the frame (``truncated``) and starts a new one;
``max_frame`` bytes without ETX is ``too-long``, and the parser hunts for STX again.
Nothing outside these bounded buffers is kept.

Reporting: the meter repeats the displayed value every second, so a reading is the
value shown, not a frame. A ``Measurement`` is emitted when a (grain, value) pair
differs from the last one emitted and has just been decoded in ``debounce``
consecutive valid frames. There is no checksum, so a corrupted digit can still make a
valid-looking frame; it does not reach ``debounce`` repeats. An invalid frame (one that
began with STX) breaks the run; stray bytes between frames do not, so a firmware that
pads frames with a line end still reports. The meter-online/offline heartbeat of §6 A1
needs a clock and lives in the agent (``frames_ok`` tells it frames arrive).

Config example (``site.toml``)::

    [[devices]]
    id = "umid-2"
    driver = "moisture.tesma"
    port = "/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.2:1.0-port0"
    baudrate = 9600
    [devices.tesma]
    debounce = 2
"""

from __future__ import annotations

import math
import re

from coffee_telemetry.drivers._framing import TEXT_BYTES, EventQueue, StrayBytes
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, Measurement

__all__ = ["ETX", "FRAME_LEN", "STX", "TesmaParser", "decode_frame", "encode_frame"]

STX = 0x02
ETX = 0x03
#: Every frame is exactly this long.
FRAME_LEN = 18
_GRAIN_LEN = 8
_VALUE = re.compile(rb"[0-9]{2}\.[0-9]")
_GRAIN_BYTES = TEXT_BYTES.replace(b"\t", b"")
_STX_OR_ETX = re.compile(b"[\x02\x03]")


def _decode(frame: bytes) -> tuple[str, float] | str:
    # The (grain, value) pair, or why the frame is invalid.
    if len(frame) != FRAME_LEN or frame[0] != STX or frame[-1] != ETX:
        return "bad-length"
    if frame[9:11] != b"\r\n" or frame[15:17] != b"\r\n":
        return "bad-separator"
    value = frame[11:15]
    if _VALUE.fullmatch(value) is None:
        return "bad-value"
    grain = frame[1:9]
    if grain.translate(None, _GRAIN_BYTES) or not grain.strip():
        return "bad-grain"
    return grain.decode("latin-1").rstrip(), float(value)


def _measurement(pair: tuple[str, float], frame: bytes) -> Measurement:
    grain, moisture = pair
    return Measurement(
        measurement="moisture",
        fields={"moisture_pct": moisture},
        tags={"product": grain},
        raw=frame,
    )


def decode_frame(frame: bytes) -> Measurement | Discarded:
    """Decode one frame, from its STX to its ETX inclusive; never raises.

    Returns:
        The measurement, or ``Discarded`` with reason ``bad-length``,
        ``bad-separator``, ``bad-value`` or ``bad-grain``.
    """
    frame = bytes(frame)
    decoded = _decode(frame)
    if isinstance(decoded, str):
        return Discarded(data=frame, reason=decoded)
    return _measurement(decoded, frame)


def encode_frame(grain: str, moisture_pct: float) -> bytes:
    """Build the frame the meter sends while it shows ``grain`` and ``moisture_pct``.

    The value is rounded to one decimal, as the display shows it.

    Raises:
        DriverUsageError: ``grain`` is empty, longer than 8 latin-1 characters, ends
            with a space (the padding would swallow it) or holds a character outside
            printable latin-1 text; the value is not within 0..99.9 once rounded.
    """
    try:
        raw_grain = grain.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise DriverUsageError(f"grain {grain!r} is not latin-1") from exc
    if not raw_grain.strip() or len(raw_grain) > _GRAIN_LEN:
        raise DriverUsageError(f"grain {grain!r} must have 1 to {_GRAIN_LEN} characters")
    if raw_grain != raw_grain.rstrip() or raw_grain.translate(None, _GRAIN_BYTES):
        raise DriverUsageError(f"grain {grain!r}: trailing space or unprintable character")
    text = f"{moisture_pct:04.1f}" if math.isfinite(moisture_pct) else ""
    if _VALUE.fullmatch(text.encode()) is None:
        raise DriverUsageError(f"moisture_pct {moisture_pct!r} is outside 0..99.9")
    return b"\x02" + raw_grain.ljust(_GRAIN_LEN) + b"\r\n" + text.encode() + b"\r\n\x03"


class TesmaParser(EventQueue[Measurement]):
    """Stream parser for Tesma frames (see the module docstring).

    Args:
        debounce: Consecutive valid frames of one (grain, value) before it is reported.
        max_frame: Bytes after an STX without ETX before the frame is dropped; also
            the cap on ``Discarded.data``.

    Attributes:
        frames_ok: Valid frames decoded (reported or not).
        frames_discarded: ``Discarded`` events produced.

    Raises:
        DriverUsageError: ``debounce`` < 1 or ``max_frame`` < 18.
    """

    def __init__(self, *, debounce: int = 2, max_frame: int = 64) -> None:
        if debounce < 1:
            raise DriverUsageError(f"debounce must be >= 1: {debounce!r}")
        if max_frame < FRAME_LEN:
            raise DriverUsageError(f"max_frame must be >= {FRAME_LEN}: {max_frame!r}")
        super().__init__(max_discarded=max_frame)
        self._debounce = debounce
        self._max = max_frame
        self._frame = bytearray()  # from an STX on; empty while hunting
        self._stray = StrayBytes(max_frame)
        self._run: tuple[str, float] | None = None
        self._run_len = 0
        self._reported: tuple[str, float] | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the frame in progress and the start of a stray run."""
        return len(self._frame) + self._stray.held

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they arrive, cut anywhere."""
        pos = 0
        end = len(data)
        while pos < end:
            if not self._frame:
                found = data.find(STX, pos)
                self._stray.extend(data[pos : end if found < 0 else found])
                if found < 0:
                    return
                # Stray bytes are reported but do not break a debounce run (see above).
                self._flush_stray(self._stray, "outside-frame")
                self._frame.append(STX)
                pos = found + 1
                continue
            limit = min(end, pos + self._max - len(self._frame))
            found_ = _STX_OR_ETX.search(data, pos, limit)
            if found_ is None:
                self._frame += data[pos:limit]
                pos = limit
                if len(self._frame) >= self._max:
                    self._reject(self._take_frame(), "too-long")
            elif data[found_.start()] == STX:
                self._frame += data[pos : found_.start()]
                self._reject(self._take_frame(), "truncated")
                self._frame.append(STX)
                pos = found_.end()
            else:
                self._frame += data[pos : found_.end()]
                pos = found_.end()
                self._complete(self._take_frame())

    def _take_frame(self) -> bytes:
        frame = bytes(self._frame)
        self._frame.clear()
        return frame

    def _reject(self, frame: bytes, reason: str) -> None:
        # An invalid frame breaks the debounce run.
        self._run = None
        self._run_len = 0
        self._discard(frame, reason)

    def _complete(self, frame: bytes) -> None:
        pair = _decode(frame)
        if isinstance(pair, str):
            self._reject(frame, pair)
            return
        self.frames_ok += 1
        if pair == self._run:
            self._run_len += 1
        else:
            self._run = pair
            self._run_len = 1
        if self._run_len >= self._debounce and pair != self._reported:
            self._reported = pair
            self._events.append(_measurement(pair, frame))
