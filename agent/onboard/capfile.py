r"""Capture files: what a serial port said, when, at which settings, as plain text.

A capture is written while ``coffee-telemetry capture`` listens and read by
``propose`` and ``replay``. It is line-oriented ASCII with lines of at most 80
characters, so it survives being pasted into an e-mail, and it can be read by eye::

    coffee-telemetry capture 1
    port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0
    started: 2025-05-12T14:03:00.120Z
    listen: 9600 8N1
    0.000000 < 1b40474548414b41204736353020640d0a
    #| <ESC>@GEHAKA G650 d<CR><LF>
    serial: 9600 8N1
    confidence: 0.98
    detected: texto limpo, 212 bytes, 11 linhas
    3.250117 < 1b40474548414b41204736353020640d0a3132
    + 2f30352f32303235202031343a30330d0a
    end: chunks 2, bytes 75, crc32 5f1e03aa, reason stopped

Grammar, one line at a time:

- The first line is the magic ``coffee-telemetry capture 1`` (1 is the format).
- ``key: value`` lines may appear anywhere before ``end``:
  ``port``, ``started`` (UTC, ISO 8601), ``listen`` (what the port is set to from here
  on), ``serial`` (the settings decided for the meter: the chunks after this line are
  the *recording*), ``heard`` (when the port could not be set to ``serial``, e.g. a
  pseudo-terminal refusing parity: the 8-bit settings the recording was heard at),
  ``confidence`` (0..1) and ``detected`` (why). Unknown keys are kept as warnings, so
  a newer writer's files still read.
- ``<seconds> <dir> <hex>``: one chunk as the port delivered it. Seconds since the
  capture started (monotonic clock, 6 decimals, never decreasing); ``<`` received,
  ``>`` sent to the meter (only with ``capture --send``); at most 30 bytes of hex per
  line, the rest on ``+ <hex>`` continuation lines, so chunk boundaries survive.
- ``#`` starts a comment: the writer adds ``#|`` lines with the chunk's text, control
  codes made visible, for people; readers ignore them.
- ``end: chunks N, bytes M, crc32 X, reason R`` closes the file: N chunks and M bytes
  in both directions, CRC-32 of those bytes in file order, and why the capture stopped
  (``stopped``, ``duration``, ``idle``, ``port-lost``, ``error``).

Reading is strict where a change would mislead and lenient where a capture was merely
cut short: a file without ``end`` (power lost, process killed) reads with a warning,
its last line dropped if it has no line end; a file whose bytes do not match ``end``
(edited, damaged) is refused, as are lines that are not the grammar above, times that
go backwards, and files that are not ASCII. Every refusal is a ``CaptureFormatError``
naming the file and line; nothing else escapes ``read_capture``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from coffee_telemetry.agent.onboard.lineformat import LineSettings, SettingsError
from coffee_telemetry.agent.onboard.visible import visible

__all__ = [
    "MAGIC",
    "MAX_FILE_BYTES",
    "Capture",
    "CaptureFormatError",
    "CaptureWriter",
    "Chunk",
    "EndReason",
    "parse_capture",
    "read_capture",
]

MAGIC = "coffee-telemetry capture 1"
#: Bytes of one chunk per data line (60 hex digits; lines stay within 80 characters).
BYTES_PER_LINE = 30
#: Files larger than this are refused (hours of a chatty scale are a few MB).
MAX_FILE_BYTES = 64 * 1024 * 1024
_MAX_LINE = 4096

EndReason = Literal["stopped", "duration", "idle", "port-lost", "error"]
_END_REASONS = ("stopped", "duration", "idle", "port-lost", "error")
_KEYS = ("port", "started", "listen", "serial", "heard", "confidence", "detected")

_DATA = re.compile(r"(\d{1,9}\.\d{1,9}) ([<>]) ((?:[0-9a-f]{2})+)")
_MORE = re.compile(r"\+ ((?:[0-9a-f]{2})+)")
_KEY = re.compile(r"([a-z][a-z0-9-]{0,31}): ?(.*)")
_END = re.compile(
    r"end: chunks (\d{1,12}), bytes (\d{1,15}), crc32 ([0-9a-f]{8}), reason ([a-z-]{1,16})"
)


_DEFAULT_SETTINGS = LineSettings()


class CaptureFormatError(ValueError):
    """A capture file that cannot be read as one; the message says where and why.

    Attributes:
        path: The file.
        line: The 1-based line number, or ``None`` for the file as a whole.
        problem: What is wrong.
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = path if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes the port delivered (or that were sent) at one time.

    Attributes:
        t_s: Seconds since the capture started.
        data: The bytes.
        sent: Written to the meter rather than received from it.
        listen: What the port was set to.
        recording: After the ``serial`` decision (part of the recording).
    """

    t_s: float
    data: bytes
    sent: bool = False
    listen: LineSettings = _DEFAULT_SETTINGS
    recording: bool = False


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture file, read.

    Attributes:
        port: The port it was taken from.
        started: When, as written (UTC, ISO 8601).
        chunks: Every chunk in file order (detection included).
        serial: The meter's settings as decided, if a decision was written.
        heard: The settings the recording was heard at, when the port refused ``serial``.
        confidence: How sure detection was (0..1), when it ran.
        detected: Detection's explanation.
        end_reason: Why the capture stopped; ``None`` if the file has no end line.
        warnings: What was odd but readable (cut short, unknown keys, lost bytes).
    """

    port: str = ""
    started: str = ""
    chunks: tuple[Chunk, ...] = ()
    serial: LineSettings | None = None
    heard: LineSettings | None = None
    confidence: float | None = None
    detected: str = ""
    end_reason: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        """Whether the file ends with its ``end`` line."""
        return self.end_reason is not None

    def recording(self) -> list[Chunk]:
        """The received chunks after the decision, as the agent will read them.

        When the recording was heard at 8 data bits without parity but the meter sends
        7 data bits plus parity, bit 7 of every byte is the parity bit: it is cleared,
        which is what a port set to ``serial`` delivers.
        """
        mask = self.serial is not None and self.serial.bytesize == 7
        out = []
        for chunk in self.chunks:
            if not chunk.recording or chunk.sent:
                continue
            if mask and chunk.listen.bytesize == 8:
                chunk = Chunk(
                    chunk.t_s, bytes(b & 0x7F for b in chunk.data), False, chunk.listen, True
                )
            out.append(chunk)
        return out

    def recorded_bytes(self) -> bytes:
        """All the recording's bytes, joined."""
        return b"".join(c.data for c in self.recording())


class CaptureWriter:
    """Writes a capture file line by line, flushing each, so a crash keeps what came.

    Args:
        out: A text file open for writing.
        port: The port's path.
        started: Wall-clock time the capture started (UTC).
    """

    def __init__(self, out: IO[str], *, port: str, started: dt.datetime) -> None:
        self._out = out
        self._crc = 0
        self._chunks = 0
        self._bytes = 0
        self._closed = False
        stamp = started.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        self._lines([MAGIC, f"port: {_one_line(port)}", f"started: {stamp.replace('+00:00', 'Z')}"])

    @property
    def chunks(self) -> int:
        """Chunks written so far."""
        return self._chunks

    @property
    def closed(self) -> bool:
        """Whether ``close`` has written the end line."""
        return self._closed

    def listen(self, settings: LineSettings) -> None:
        """The port is set to ``settings`` from now on."""
        self._lines([f"listen: {settings}"])

    def decide(
        self,
        settings: LineSettings,
        *,
        confidence: float | None = None,
        detected: str = "",
        heard: LineSettings | None = None,
    ) -> None:
        """The meter's settings are known: the chunks from now on are the recording."""
        lines = [f"serial: {settings}"]
        if heard is not None and heard != settings:
            lines.append(f"heard: {heard}")
        if confidence is not None:
            lines.append(f"confidence: {confidence:.2f}")
        if detected:
            lines.append(f"detected: {_one_line(detected)}")
        self._lines(lines)

    def chunk(self, t_s: float, data: bytes, *, sent: bool = False) -> None:
        """Record one chunk ``t_s`` seconds after the start."""
        if not data:
            return
        self._crc = zlib.crc32(data, self._crc)
        self._chunks += 1
        self._bytes += len(data)
        pieces = [data[i : i + BYTES_PER_LINE] for i in range(0, len(data), BYTES_PER_LINE)]
        lines = [f"{max(t_s, 0.0):.6f} {'>' if sent else '<'} {pieces[0].hex()}"]
        lines += [f"+ {piece.hex()}" for piece in pieces[1:]]
        text = visible(data)
        lines += [f"#| {text[i : i + 76]}" for i in range(0, len(text), 76)]
        self._lines(lines)

    def close(self, reason: EndReason) -> None:
        """Write the end line (once)."""
        if self._closed:
            return
        self._closed = True
        self._lines(
            [
                f"end: chunks {self._chunks}, bytes {self._bytes}, crc32 {self._crc:08x},"
                f" reason {reason}"
            ]
        )

    def _lines(self, lines: list[str]) -> None:
        self._out.write("".join(line + "\n" for line in lines))
        self._out.flush()


def _one_line(text: str) -> str:
    # Header values are one printable ASCII line: accents dropped, the rest "?".
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in folded)[:200]


def read_capture(path: Path) -> Capture:
    """Read a capture file.

    Raises:
        CaptureFormatError: The file is missing, too large, not a capture, or damaged
            (see the module docstring); the message names the line.
    """
    name = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CaptureFormatError(name, None, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise CaptureFormatError(name, None, f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    return parse_capture(raw, name=name)


@dataclass
class _Reading:
    name: str
    port: str = ""
    started: str = ""
    listen: LineSettings | None = None
    serial: LineSettings | None = None
    heard: LineSettings | None = None
    confidence: float | None = None
    detected: str = ""
    recording: bool = False
    chunks: list[Chunk] = field(default_factory=list)
    open_chunk: tuple[float, bool, bytearray] | None = None
    last_t: float = 0.0
    crc: int = 0
    total: int = 0
    warnings: list[str] = field(default_factory=list)
    end: tuple[int, int, int, str] | None = None

    def close_chunk(self) -> None:
        if self.open_chunk is None:
            return
        t_s, sent, data = self.open_chunk
        assert self.listen is not None
        chunk = Chunk(t_s, bytes(data), sent, self.listen, self.recording)
        self.chunks.append(chunk)
        self.crc = zlib.crc32(chunk.data, self.crc)
        self.total += len(chunk.data)
        self.open_chunk = None


def parse_capture(raw: bytes, *, name: str = "<capture>") -> Capture:
    """Parse the bytes of a capture file (see ``read_capture``).

    Raises:
        CaptureFormatError: As ``read_capture``.
    """
    lines = raw.split(b"\n")
    cut = lines.pop()  # after the last newline: b"" unless the file was cut mid-line
    state = _Reading(name)
    if not lines and not cut:
        raise CaptureFormatError(name, None, "empty file")
    first = (lines[0] if lines else cut).rstrip(b"\r")
    if first != MAGIC.encode():
        if first.startswith(b"coffee-telemetry capture "):
            raise CaptureFormatError(
                name,
                1,
                f"format {first[25:40].decode('ascii', 'replace')!r} is not one this"
                " program reads (1)",
            )
        raise CaptureFormatError(
            name, 1, f"not a coffee-telemetry capture file (it starts with {first[:24]!r})"
        )
    for number, line_bytes in enumerate(lines[1:], start=2):
        if state.end is not None:
            if line_bytes.strip() and not line_bytes.startswith(b"#"):
                raise CaptureFormatError(name, number, "text after the end line")
            continue
        _parse_line(state, number, line_bytes.rstrip(b"\r"))
    state.close_chunk()
    if cut:
        state.warnings.append(
            f"the last line (line {len(lines) + 1}) was cut short and is left out"
        )
    end_reason: str | None = None
    if state.end is None:
        state.warnings.append(
            f"no end line: the capture was cut short; {len(state.chunks)} chunks kept"
        )
    else:
        chunks, total, crc, end_reason = state.end
        if (chunks, total, crc) != (len(state.chunks), state.total, state.crc):
            raise CaptureFormatError(
                name,
                None,
                f"the chunks ({len(state.chunks)} chunks, {state.total} bytes, crc32"
                f" {state.crc:08x}) do not match the end line ({chunks} chunks, {total} bytes,"
                f" crc32 {crc:08x}): the file was edited or damaged. To use part of a"
                " capture, delete the end line (it then reads as cut short).",
            )
        if end_reason not in _END_REASONS:
            state.warnings.append(f"unknown end reason {end_reason!r}")
    serial = state.serial
    if serial is not None and serial.bytesize == 8 and serial.parity != "N":
        heard_8n1 = any(
            c.recording and c.listen.parity == "N" and c.listen.bytesize == 8 for c in state.chunks
        )
        if heard_8n1:
            state.warnings.append(
                f"the recording was heard at 8N1 but the meter sends {serial.format}:"
                " bytes whose parity bit landed on the stop bit were lost"
            )
    return Capture(
        port=state.port,
        started=state.started,
        chunks=tuple(state.chunks),
        serial=serial,
        heard=state.heard,
        confidence=state.confidence,
        detected=state.detected,
        end_reason=end_reason,
        warnings=tuple(state.warnings),
    )


def _parse_line(state: _Reading, number: int, line_bytes: bytes) -> None:
    name = state.name
    if len(line_bytes) > _MAX_LINE:
        raise CaptureFormatError(name, number, f"line longer than {_MAX_LINE} characters")
    try:
        line = line_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise CaptureFormatError(name, number, "not ASCII text (binary data?)") from None
    if not line.strip() or line.startswith("#"):
        return
    if found := _DATA.fullmatch(line):
        if state.listen is None:
            raise CaptureFormatError(name, number, "data before any 'listen:' line")
        t_s = float(found.group(1))
        if t_s < state.last_t:
            raise CaptureFormatError(
                name, number, f"time goes backwards ({t_s} after {state.last_t}): edited?"
            )
        state.close_chunk()
        state.last_t = t_s
        state.open_chunk = (t_s, found.group(2) == ">", bytearray.fromhex(found.group(3)))
        return
    if found := _MORE.fullmatch(line):
        if state.open_chunk is None:
            raise CaptureFormatError(name, number, "a '+' line must follow a data line")
        state.open_chunk[2].extend(bytes.fromhex(found.group(1)))
        return
    if found := _END.fullmatch(line):
        state.close_chunk()
        crc = int(found.group(3), 16)
        state.end = (int(found.group(1)), int(found.group(2)), crc, found.group(4))
        return
    if found := _KEY.fullmatch(line):
        state.close_chunk()
        _header(state, number, found.group(1), found.group(2).strip())
        return
    raise CaptureFormatError(name, number, f"not a capture line: {line[:40]!r}")


def _settings(state: _Reading, number: int, key: str, value: str) -> LineSettings:
    try:
        return LineSettings.parse(value)
    except SettingsError as exc:
        raise CaptureFormatError(state.name, number, f"{key}: {exc}") from None


def _header(state: _Reading, number: int, key: str, value: str) -> None:
    match key:
        case "port":
            state.port = value
        case "started":
            state.started = value
        case "listen":
            state.listen = _settings(state, number, key, value)
        case "serial":
            state.serial = _settings(state, number, key, value)
            state.heard = None
            state.recording = True
        case "heard":
            state.heard = _settings(state, number, key, value)
        case "confidence":
            try:
                confidence = float(value)
            except ValueError:
                confidence = math.nan
            if not 0.0 <= confidence <= 1.0:
                raise CaptureFormatError(state.name, number, f"confidence {value!r}: not 0..1")
            state.confidence = confidence
        case "detected":
            state.detected = value
        case _:
            if key not in _KEYS:
                state.warnings.append(f"line {number}: unknown key {key!r} ignored")
