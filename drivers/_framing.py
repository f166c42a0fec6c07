"""Framing helpers shared by the stream drivers.

Everything here is pure and bounded: byte-at-a-time state lives in small objects that
keep at most a few bytes (``EscPosStripper``) or one capped line (``LineSplitter``),
so a device that never sends a terminator cannot grow memory.

- ``EscPosStripper``: removes ESC/POS printer commands from a byte stream that may be
  cut anywhere (device-protocols.md §4.2 and §6 A2).
- ``LineSplitter``: CR, LF or CRLF lines, with long lines wrapped at a limit.
- ``LineReader``: whole lines for line protocols, over-long lines dropped as one
  ``Discarded("too-long")``.
- ``IdleGap``: the silence after the last bytes that ends what a parser holds.
- ``parse_decimal``: ``12,3`` and ``12.3`` alike.
- ``looks_misframed``: the wrong-baud heuristic of §4.2.
- ``cap``: copy at most N bytes, for ``raw`` and ``Discarded.data``.
- ``EventQueue``: the base of every driver's parser (and of the MT-SICS client): the
  ``events()`` drain, the ``frames_ok``/``frames_discarded`` counters, and
  ``Discarded`` with capped data.
- ``StrayBytes``: a run of bytes outside any frame, capped, reported as one ``Discarded``.
"""

from __future__ import annotations

import math
import re
from enum import Enum, auto
from typing import Generic, Literal, TypeVar, assert_never

from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded

__all__ = [
    "CR",
    "ESC",
    "FF",
    "GS",
    "LF",
    "TAB",
    "TEXT_BYTES",
    "EscPosStripper",
    "EventQueue",
    "IdleGap",
    "LineEnding",
    "LineReader",
    "LineSplitter",
    "StrayBytes",
    "cap",
    "looks_misframed",
    "parse_decimal",
    "strip_escpos",
]

TAB = 0x09
LF = 0x0A
FF = 0x0C
CR = 0x0D
ESC = 0x1B
GS = 0x1D

#: How lines end: any of CR, LF and CRLF (``auto``), or exactly one of them.
LineEnding = Literal["auto", "cr", "lf", "crlf"]


def _text_bytes() -> bytes:
    # Printable ASCII, TAB, and the latin-1 characters a Portuguese or Spanish ticket
    # prints: letters (0xC0-0xFE without the multiplication and division signs) and the
    # degree and ordinal signs. 0xFF is left out on purpose: bursts of 0xFF are what a
    # line at the wrong baud rate or in a break condition reads as, and no label uses ÿ.
    chars = {TAB, *range(0x20, 0x7F), 0xAA, 0xB0, 0xBA}
    chars.update(b for b in range(0xC0, 0xFF) if b not in (0xD7, 0xF7))
    return bytes(sorted(chars))


#: Bytes that count as text in ``looks_misframed`` (and that encoders may print).
TEXT_BYTES = _text_bytes()


def cap(data: bytes | bytearray, limit: int) -> bytes:
    """Copy at most ``limit`` bytes of ``data``."""
    return bytes(data[: max(limit, 0)])


_DECIMAL = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")


def parse_decimal(text: str) -> float | None:
    """Parse a decimal number printed with a point or a comma.

    Args:
        text: The number as printed, e.g. ``"11,8"``, ``"-3.25"``; surrounding
            whitespace is ignored. Thousands separators are not accepted.

    Returns:
        The value, or ``None`` when ``text`` is not a finite decimal number.
    """
    text = text.strip()
    if _DECIMAL.fullmatch(text) is None:
        return None
    value = float(text.replace(",", "."))
    return value if math.isfinite(value) else None


def looks_misframed(line: bytes, *, threshold: float = 0.10) -> bool:
    """Tell whether a line looks like serial data read at the wrong baud or parity.

    A line is suspect when more than ``threshold`` of its bytes are not text
    (see ``TEXT_BYTES``): control characters, DEL, C1 codes, rare symbols or 0xFF.
    Section 4.2 counts every byte >= 0x80 as suspect; that would reject honest
    Portuguese lines such as ``Grão: Café`` (20 % accented), so latin-1 letters and
    the degree/ordinal signs count as text here. Random bytes are still about half
    non-text, far above the threshold.

    Args:
        line: One line, without its terminator.
        threshold: The fraction of non-text bytes a line may have.
    """
    if not line:
        return False
    bad = len(line.translate(None, TEXT_BYTES))
    return bad > threshold * len(line)


class _Esc(Enum):
    TEXT = auto()
    ESC = auto()  # saw ESC, the command byte comes next
    GS = auto()  # saw GS, the command byte comes next
    GS_V = auto()  # saw GS V (cut), the mode byte comes next


# Parameter bytes that follow the command byte. §4.2 and §6 A2 name ``! E d J a -``
# after ESC and ``!`` after GS; the others are the common one- and two-byte
# commands of the ESC/POS manual, listed so that their parameter never leaks into
# the text as a stray character. Unknown commands take no parameter ("ESC + 1 byte").
_ESC_PARAMS = {
    0x20: 1,  # ESC SP n  right-side character spacing
    0x21: 1,  # ESC ! n   print mode
    0x2D: 1,  # ESC - n   underline
    0x33: 1,  # ESC 3 n   line spacing
    0x45: 1,  # ESC E n   emphasis
    0x47: 1,  # ESC G n   double strike
    0x4A: 1,  # ESC J n   feed n dots
    0x4D: 1,  # ESC M n   font
    0x52: 1,  # ESC R n   international character set
    0x61: 1,  # ESC a n   justification
    0x64: 1,  # ESC d n   feed n lines
    0x74: 1,  # ESC t n   code page
    0x7B: 1,  # ESC { n   upside-down
}
_GS_PARAMS = {
    0x21: 1,  # GS ! n    character size
    0x42: 1,  # GS B n    reverse
    0x48: 1,  # GS H n    barcode text position
    0x4C: 2,  # GS L nL nH  left margin
    0x57: 2,  # GS W nL nH  print area width
    0x66: 1,  # GS f n    barcode font
    0x68: 1,  # GS h n    barcode height
    0x77: 1,  # GS w n    barcode width
}
_GS_V = 0x56
_INIT = 0x40  # the '@' of ESC @
_CUT_WITH_FEED = (0x41, 0x42)  # GS V 'A'|'B' n: a feed count follows the mode
#: Control bytes the text state must act on: every C0 byte but the kept ones.
_SPECIAL = re.compile(b"[\x00-\x08\x0b\x0e-\x1f]")


class EscPosStripper:
    """Remove ESC/POS commands and stray control bytes from a byte stream.

    The stream may be cut anywhere, even inside a command: the few bytes of state
    (which command is open, how many parameter bytes remain) carry over to the next
    ``feed``. Output keeps text (0x20 and above, including DEL and latin-1), TAB, CR,
    LF and FF; every other C0 control byte is dropped.

    A command byte below 0x20 after ESC or GS is not a command: the ESC/GS is dropped
    and the byte is read again as text, so ``ESC CR`` or ``ESC FF`` never swallows a
    line end or the end of a ticket. Parameter bytes are taken whatever their value
    (``ESC d 12`` feeds twelve lines; its 0x0C is not a form feed).

    Args:
        mark_init: Keep each ``ESC @`` (initialise printer) as a single ESC byte in
            the output: a fresh print job is the surest sign a ticket starts there.
    """

    __slots__ = ("_mark_init", "_skip", "_state")

    def __init__(self, *, mark_init: bool = False) -> None:
        self._mark_init = mark_init
        self._state = _Esc.TEXT
        self._skip = 0

    def reset(self) -> None:
        """Forget a command cut by a pause (the next byte starts fresh)."""
        self._state = _Esc.TEXT
        self._skip = 0

    def feed(self, data: bytes) -> bytes:
        """Strip one chunk; returns the text bytes it held."""
        if self._state is _Esc.TEXT and not self._skip and _SPECIAL.search(data) is None:
            return bytes(data)  # plain text and line ends: nothing to strip
        out = bytearray()
        pos = 0
        end = len(data)
        while pos < end:
            if self._skip:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                continue
            match self._state:
                case _Esc.TEXT:
                    found = _SPECIAL.search(data, pos)
                    if found is None:
                        out += data[pos:]
                        break
                    out += data[pos : found.start()]
                    byte = data[found.start()]
                    pos = found.end()
                    if byte == ESC:
                        self._state = _Esc.ESC
                    elif byte == GS:
                        self._state = _Esc.GS
                case _Esc.ESC:
                    byte = data[pos]
                    self._state = _Esc.TEXT
                    if byte < 0x20:
                        continue  # not a command: read the byte again as text
                    pos += 1
                    if byte == _INIT:
                        if self._mark_init:
                            out.append(ESC)
                    else:
                        self._skip = _ESC_PARAMS.get(byte, 0)
                case _Esc.GS:
                    byte = data[pos]
                    self._state = _Esc.TEXT
                    if byte < 0x20:
                        continue
                    pos += 1
                    if byte == _GS_V:
                        self._state = _Esc.GS_V
                    else:
                        self._skip = _GS_PARAMS.get(byte, 0)
                case _Esc.GS_V:
                    # The mode byte is a parameter (0, 1, '0', '1', 'A', 'B'): any value.
                    byte = data[pos]
                    pos += 1
                    self._state = _Esc.TEXT
                    if byte in _CUT_WITH_FEED:
                        self._skip = 1
                case _:  # pragma: no cover
                    assert_never(self._state)
        return bytes(out)


def strip_escpos(data: bytes) -> bytes:
    """Strip ESC/POS commands and control bytes from a whole capture (see ``EscPosStripper``)."""
    return EscPosStripper().feed(data)


_MAY_END = {
    "auto": re.compile(b"[\r\n]"),
    "crlf": re.compile(b"[\r\n]"),
    "cr": re.compile(b"\r"),
    "lf": re.compile(b"\n"),
}


class LineSplitter:
    """Split a byte stream into lines, keeping each line's terminator.

    ``auto`` ends a line at CR, LF or CRLF (a CR followed by LF is one terminator,
    even when the two bytes arrive in different chunks: a line ending in CR is held
    until the next byte shows whether an LF follows). ``cr``, ``lf`` and ``crlf``
    accept only that terminator; any other CR or LF stays in the line as content
    (callers drop them from the text).

    A line that has ``max_line`` bytes when another byte comes is wrapped, as a
    printer wraps at the paper's edge: it comes out without terminator. So at most
    ``max_line`` bytes are ever held.

    Every decision depends only on the state and the next byte, so lines come out
    the same however the stream is cut.

    Args:
        ending: Which terminators end a line.
        max_line: Bytes after which a line wraps.
    """

    __slots__ = ("_buf", "_cr", "_ending", "_max", "_may_end")

    def __init__(self, ending: LineEnding = "auto", *, max_line: int = 4096) -> None:
        self._ending: LineEnding = ending
        self._may_end = _MAY_END[ending]
        self._max = max(max_line, 1)
        self._buf = bytearray()
        self._cr = False  # the buffer ends with a CR that may start a CRLF

    @property
    def pending(self) -> int:
        """Bytes held for the line in progress."""
        return len(self._buf)

    @property
    def partial(self) -> bytes:
        """A copy of the line in progress."""
        return bytes(self._buf)

    def reset(self) -> None:
        """Drop the line in progress."""
        self._buf.clear()
        self._cr = False

    def flush(self) -> list[bytes]:
        """End the line in progress, if any (at the end of a ticket or a pause)."""
        line = bytes(self._buf)
        self.reset()
        return [line] if line else []

    def feed(self, data: bytes) -> list[bytes]:
        """Split one chunk; returns the lines it completed, terminators included."""
        lines: list[bytes] = []
        pos = 0
        while True:
            line, pos = self.next_line(data, pos)
            if line is None:
                return lines
            lines.append(line)

    def next_line(
        self, data: bytes, pos: int = 0, end: int | None = None
    ) -> tuple[bytes | None, int]:
        """Take bytes from ``data[pos:end]`` until one line completes.

        Returns:
            The line (or ``None`` if none completed) and the position reached. A line
            completed by the byte after it (a held CR, a wrap) leaves that byte
            unread, for the next call.
        """
        end = len(data) if end is None else min(end, len(data))
        buf = self._buf
        ending = self._ending
        while pos < end:
            byte = data[pos]
            if byte == LF and (ending in ("auto", "lf") or (ending == "crlf" and self._cr)):
                buf.append(LF)
                return self._emit(), pos + 1
            if byte == CR and ending == "cr":
                buf.append(CR)
                return self._emit(), pos + 1
            if self._cr:
                if ending == "auto":
                    return self._emit(), pos  # the held CR ended its line after all
                self._cr = False  # ``crlf``: a CR without LF is content
            if len(buf) >= self._max:
                return self._emit(), pos  # wrap
            if byte == CR and ending != "lf":
                buf.append(CR)
                self._cr = True
                pos += 1
                continue
            found = self._may_end.search(data, pos + 1, end)
            stop = min(end if found is None else found.start(), pos + self._max - len(buf))
            buf += data[pos:stop]
            pos = stop
        return None, pos

    def _emit(self) -> bytes:
        line = bytes(self._buf)
        self._buf.clear()
        self._cr = False
        return line


class LineReader:
    r"""Whole lines of a line protocol: CR and LF taken out, blank lines skipped.

    Lines come from a ``LineSplitter``. One that wraps there (``max_line`` bytes without
    a terminator) is not a line: it comes out once as ``Discarded(reason="too-long")``
    with those bytes, and the rest of it is skipped up to the next terminator, where
    reading resyncs.

    Args:
        ending: Which terminators end a line.
        max_line: Bytes without a terminator after which a line is dropped.
    """

    __slots__ = ("_skipping", "_splitter")

    def __init__(self, ending: LineEnding = "auto", *, max_line: int) -> None:
        self._splitter = LineSplitter(ending, max_line=max_line)
        self._skipping = False  # dropping the rest of a too-long line

    @property
    def pending(self) -> int:
        """Bytes held for the line in progress."""
        return self._splitter.pending

    def feed(self, data: bytes) -> list[bytes | Discarded]:
        """Split one chunk: the lines it completed, and the too-long ones."""
        taken = (self._take(line) for line in self._splitter.feed(data))
        return [line for line in taken if line is not None]

    def flush(self) -> list[bytes | Discarded]:
        """End the line in progress at a silence.

        A line held to see whether an LF follows its CR comes out whole; a line cut
        short comes out as ``Discarded(reason="truncated")``, unless it is the rest of
        a too-long line.
        """
        out: list[bytes | Discarded] = []
        for line in self._splitter.flush():
            if line.endswith(b"\r"):
                taken = self._take(line)
                if taken is not None:
                    out.append(taken)
            elif not self._skipping:
                out.append(Discarded(data=line, reason="truncated"))
        self._skipping = False
        return out

    def _take(self, line: bytes) -> bytes | Discarded | None:
        if not line.endswith((b"\r", b"\n")):  # wrapped at max_line
            if self._skipping:
                return None
            self._skipping = True
            return Discarded(data=line, reason="too-long")
        if self._skipping:
            self._skipping = False
            return None
        content = line.translate(None, b"\r\n")
        return content if content.strip() else None


class IdleGap:
    """The silence after the last bytes that ends what a parser holds.

    Parsers never read a clock: they pass the agent's monotonic time with each chunk
    (``received``) and each ``tick``, and ask ``deadline`` when the next tick is due.

    Args:
        idle_gap_s: The silence, in seconds.

    Raises:
        DriverUsageError: ``idle_gap_s`` negative or not finite.
    """

    __slots__ = ("_gap_s", "_last_at")

    def __init__(self, idle_gap_s: float) -> None:
        if not (math.isfinite(idle_gap_s) and idle_gap_s >= 0):
            raise DriverUsageError(f"idle_gap_s must be >= 0: {idle_gap_s!r}")
        self._gap_s = idle_gap_s
        self._last_at: float | None = None

    def received(self, now: float) -> None:
        """Bytes arrived at ``now``."""
        self._last_at = now

    def deadline(self, *, holding: bool) -> float | None:
        """When the silence ends, if the parser is ``holding`` bytes that it would end."""
        if holding and self._last_at is not None:
            return self._last_at + self._gap_s
        return None

    def ended(self, now: float, *, holding: bool) -> bool:
        """Whether, at ``now``, the silence has ended what the parser is ``holding``."""
        deadline = self.deadline(holding=holding)
        return deadline is not None and now >= deadline


class StrayBytes:
    """A run of bytes outside any frame, held until it ends (at the next frame's start).

    Only the first ``limit`` bytes are kept, for ``Discarded.data``, so a line that
    never sends a frame cannot grow memory; ``take`` still tells that a run was seen.

    Args:
        limit: Bytes kept of one run.
    """

    __slots__ = ("_held", "_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._held = bytearray()
        self._limit = max(limit, 0)
        self._seen = False

    @property
    def held(self) -> int:
        """Bytes kept of the run in progress."""
        return len(self._held)

    def extend(self, data: bytes | bytearray) -> None:
        """Add bytes to the run (an empty chunk starts none)."""
        if data:
            self._seen = True
            self._held += data[: self._limit - len(self._held)]

    def append(self, byte: int) -> None:
        """Add one byte to the run."""
        self._seen = True
        if len(self._held) < self._limit:
            self._held.append(byte)

    def clear(self) -> None:
        """Forget the run in progress, without reporting it."""
        self._held.clear()
        self._seen = False

    def take(self) -> bytes | None:
        """End the run: its kept bytes, or ``None`` if there was none."""
        if not self._seen:
            return None
        data = bytes(self._held)
        self.clear()
        return data


_E = TypeVar("_E")


class EventQueue(Generic[_E]):
    """What every parser keeps: the events not yet drained, and two counters.

    A parser appends what a frame meant (an ``_E``) to ``_events`` and counts
    ``frames_ok`` itself, since what counts as a good frame is the protocol's business
    (a debounced repeat, a frame that publishes nothing); line noise goes through
    ``_discard`` or ``_flush_stray``, which count ``frames_discarded``.

    Args:
        max_discarded: Cap on ``Discarded.data``.

    Attributes:
        frames_ok: Valid frames decoded.
        frames_discarded: ``Discarded`` events produced.
    """

    def __init__(self, *, max_discarded: int) -> None:
        self._events: list[_E | Discarded] = []
        self._max_discarded = max_discarded
        self.frames_ok = 0
        self.frames_discarded = 0

    def events(self) -> list[_E | Discarded]:
        """Return and forget the events completed so far."""
        events, self._events = self._events, []
        return events

    def _discard(self, data: bytes | bytearray, reason: str) -> None:
        self.frames_discarded += 1
        self._events.append(Discarded(data=cap(data, self._max_discarded), reason=reason))

    def _flush_stray(self, stray: StrayBytes, reason: str) -> None:
        data = stray.take()
        if data is not None:
            self._discard(data, reason)
