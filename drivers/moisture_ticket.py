r"""Moisture meter printing a ticket per sample: ``moisture.ticket`` (device-protocols.md §6 A2).

For meters that drive a small printer and send the same human-readable ticket to the
serial port: Gehaka G-series (G650, G610i, G810), DICKEY-john with PRN20, Kett with a
printer. No manual documents the bytes; the layout below is inferred and the labels
are configurable (confirm them on site, §6 "Open items"). 9600 8N1, receive only: the
agent never writes to these meters (Inmetro-approved instruments, §1.1).

A ticket as the simulator prints it (``encode_ticket``), shaped like the spec's example::

    ESC @                                  1B 40        initialise printer
    GEHAKA G650 CR LF                                   header, not a field
    12/05/2025  14:03 CR LF                             meter_time
    Produto: CAFE CR LF                                 product tag
    Lote: L-0042 CR LF                                  lot tag
    Umidade:  11,8 % CR LF                              moisture_pct (required)
    Temp.: 24,6 C CR LF                                 temperature_c
    PH: 38,20 CR LF                                     bulk_density_kg_hl
    Peso amostra: 250,00 g CR LF                        sample_mass_g
    Amostra: 0042 CR LF                                 sample_id
    GS V 42 00                             1D 56 42 00  cut
    FF                                     0C           end of ticket

Theory of operation
-------------------

Bytes pass through three stages, each bounded and each able to stop anywhere:

1. ``EscPosStripper`` drops ESC/POS commands and control bytes except CR, LF, TAB and
   FF, and turns ``ESC @`` into a marker.
2. ``LineSplitter`` cuts lines at CR, LF or CRLF (``line_ending``).
3. The ticket framer gathers lines. A ticket ends at FF, at ``ESC @`` (a new print job),
   at a line matching ``end_regex`` (inclusive), before a line matching
   ``start_regex``, or after ``idle_gap_s`` without bytes. It is dropped as
   ``too-long`` past ``max_lines`` lines or ``max_bytes`` bytes; the rest of it is
   skipped up to the next boundary, so memory stays bounded even if the device never
   sends a terminator. A single line longer than ``max_bytes`` where a ticket would
   begin (line noise between two tickets) is dropped up to its own line ending and
   the parser stays at the boundary it was at: the noise costs no ticket.

A finished ticket is judged in this order, the first failure naming the reason of the
``Discarded`` event:

- ``framing-suspect``: a line has more than 10 % non-text bytes (wrong baud or parity,
  §4.2; latin-1 letters and ``°ºª`` are text, see ``looks_misframed``).
- ``partial``: we did not see the ticket start. A ticket starts cleanly after a
  boundary (FF, ``ESC @``, an end line, an idle gap), or, when ``start_regex`` is set,
  only at a line it matches. Right after the parser is made the start is unknown: the
  port may have opened mid-ticket (§4.2), and a tail that still holds ``Umidade`` would
  give a reading without its product or lot. So the first ticket counts only if it
  begins with ``ESC @`` or a start line, or if the line had been silent for
  ``idle_gap_s`` before it: call ``tick(now)`` as soon as the port is open (that is why
  ``next_deadline()`` answers ``0.0`` until the parser has been given a time).
- ``no-moisture``: no line matched the ``moisture_pct`` pattern.
- ``out-of-range``: moisture outside 0..60 %.
- ``duplicate``: the same fields and tags (sample id, values, meter time) as the last
  accepted ticket, within ``duplicate_window_s`` of it (``copies=N`` on the meter).

Blank tickets (whitespace only, e.g. a line feed after the form feed) are ignored
without an event.

Fields are found line by line with the ``patterns`` table: for each field the first
line that matches wins. Labels are anchored at the line start, so ``id`` never matches
inside ``Umidade``; ``SEP`` (``[\s.:=]*``) is any mix of spaces, dot leaders, colon
or ``=`` between label and value. Floats accept a decimal comma or point. ``product``
and ``lot`` become tags, the rest fields. The default table, case-insensitive
(Portuguese; confirm on site)::

    moisture_pct       ^\s*umid(?:ade)?\b SEP (\d{1,2}[.,]\d{1,2})\s*%?
    temperature_c      ^\s*temp(?:eratura)?\b SEP (-?\d{1,2}[.,]\d)\s*(?:°|º)?\s*C
    bulk_density_kg_hl ^\s*(?:p\.?\s*h\.?|peso\s+hectol\w*|dens\w*) SEP (\d{2,3}[.,]\d{1,2})
    sample_mass_g      ^\s*(?:peso|massa)(?:\s+amostra)?\b SEP (\d{1,4}[.,]\d{1,2})\s*g\b
    product            ^\s*(?:produto|gr[aã]o|curva)\b SEP (.+)
    sample_id          ^\s*(?:amostra|id)\b\s*(?:n[ºo°.]*)? SEP (\S+)
    lot                ^\s*lote\b\s*(?:n[ºo°.]*)? SEP (\S+)
    meter_time         (\d{2}/\d{2}/\d{2,4})\s+(\d{2}:\d{2}(?::\d{2})?)   -> "date time"

A ``Measurement`` carries ``raw`` (the sanitised ticket bytes) and ``audit`` (the
ticket text, lines joined by ``\n``), both capped at ``max_audit_bytes``. Online and
offline status (no ticket for a long time is normal here) belong to the agent.

Config example (``site.toml``)::

    [[devices]]
    id = "umid-1"
    driver = "moisture.ticket"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0"
    baudrate = 9600
    [devices.ticket]
    line_ending = "auto"
    idle_gap_s = 2.0
    end_regex = "^\\s*amostra\\b"   # optional: the last line of this meter's ticket
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, assert_never

from coffee_telemetry.drivers._framing import (
    TEXT_BYTES,
    EscPosStripper,
    EventQueue,
    LineEnding,
    LineSplitter,
    cap,
    looks_misframed,
    parse_decimal,
)
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement

__all__ = [
    "DEFAULT_PATTERNS",
    "MOISTURE_RANGE",
    "TAG_FIELDS",
    "FieldPattern",
    "TicketOptions",
    "TicketParser",
    "decode_ticket",
    "encode_ticket",
]

#: Valid moisture, percent wet basis (§6 A2).
MOISTURE_RANGE = (0.0, 60.0)

#: Pattern fields that become tags rather than fields.
TAG_FIELDS = frozenset({"product", "lot"})


@dataclass(frozen=True, slots=True)
class FieldPattern:
    """How to find one field on a ticket line.

    Attributes:
        field: The output name, e.g. ``moisture_pct``; ``product`` and ``lot`` are tags.
        regex: Applied to each line (trailing spaces stripped), case-insensitive.
            Group 1 is the value; for text fields every group that matched is joined
            with a space (``meter_time`` captures date and time).
        kind: ``float`` (decimal comma or point) or ``text`` (stripped).
    """

    field: str
    regex: str
    kind: Literal["float", "text"]


_SEP = r"[\s.:=]*"

#: The Portuguese label table of §6 A2.
DEFAULT_PATTERNS: tuple[FieldPattern, ...] = (
    FieldPattern(
        "moisture_pct", rf"^\s*umid(?:ade)?\b{_SEP}(\d{{1,2}}[.,]\d{{1,2}})\s*%?", "float"
    ),
    FieldPattern(
        "temperature_c",
        rf"^\s*temp(?:eratura)?\b{_SEP}(-?\d{{1,2}}[.,]\d)\s*(?:°|º)?\s*C",
        "float",
    ),
    FieldPattern(
        "bulk_density_kg_hl",
        rf"^\s*(?:p\.?\s*h\.?|peso\s+hectol\w*|dens\w*){_SEP}(\d{{2,3}}[.,]\d{{1,2}})",
        "float",
    ),
    FieldPattern(
        "sample_mass_g",
        rf"^\s*(?:peso|massa)(?:\s+amostra)?\b{_SEP}(\d{{1,4}}[.,]\d{{1,2}})\s*g\b",
        "float",
    ),
    FieldPattern("product", rf"^\s*(?:produto|gr[aã]o|curva)\b{_SEP}(.+)", "text"),
    FieldPattern("sample_id", rf"^\s*(?:amostra|id)\b\s*(?:n[ºo°.]*)?{_SEP}(\S+)", "text"),
    FieldPattern("lot", rf"^\s*lote\b\s*(?:n[ºo°.]*)?{_SEP}(\S+)", "text"),
    FieldPattern("meter_time", r"(\d{2}/\d{2}/\d{2,4})\s+(\d{2}:\d{2}(?::\d{2})?)", "text"),
)


@dataclass(frozen=True, slots=True)
class TicketOptions:
    """How one meter's tickets look (parsed once from config).

    Attributes:
        line_ending: ``auto`` accepts CR, LF and CRLF.
        idle_gap_s: Silence that ends a ticket, and that proves the next one starts
            at its beginning.
        start_regex: A line that starts a ticket; ``None``: any line after a boundary.
        end_regex: A line that ends a ticket (it belongs to the ticket).
        max_lines: Lines a ticket may have.
        max_bytes: Sanitised bytes a ticket may have.
        patterns: The field table, applied in order.
        duplicate_window_s: A repeat of the last accepted ticket within this time is
            a copy, not a new sample.
        max_audit_bytes: Cap on ``raw``, ``audit`` and ``Discarded.data``.
    """

    line_ending: LineEnding = "auto"
    idle_gap_s: float = 2.0
    start_regex: str | None = None
    end_regex: str | None = None
    max_lines: int = 60
    max_bytes: int = 4096
    patterns: tuple[FieldPattern, ...] = DEFAULT_PATTERNS
    duplicate_window_s: float = 10.0
    max_audit_bytes: int = 2048


_Pattern = tuple[str, re.Pattern[str], Literal["float", "text"]]


def _compile(regex: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise DriverUsageError(f"{what}: invalid regular expression {regex!r}: {exc}") from exc


def _compile_patterns(options: TicketOptions) -> tuple[_Pattern, ...]:
    if options.line_ending not in ("auto", "cr", "lf", "crlf"):
        raise DriverUsageError(f"line_ending must be auto, cr, lf or crlf: {options.line_ending!r}")
    if not (options.idle_gap_s > 0 and math.isfinite(options.idle_gap_s)):
        raise DriverUsageError(f"idle_gap_s must be positive: {options.idle_gap_s!r}")
    if options.duplicate_window_s < 0:
        raise DriverUsageError(f"duplicate_window_s must be >= 0: {options.duplicate_window_s!r}")
    for name in ("max_lines", "max_bytes", "max_audit_bytes"):
        if getattr(options, name) < 1:
            raise DriverUsageError(f"{name} must be >= 1")
    compiled: list[_Pattern] = []
    for pattern in options.patterns:
        regex = _compile(pattern.regex, f"pattern {pattern.field}")
        if pattern.kind not in ("float", "text"):
            raise DriverUsageError(f"pattern {pattern.field}: kind must be float or text")
        if regex.groups < 1:
            raise DriverUsageError(f"pattern {pattern.field}: the regex needs a group")
        compiled.append((pattern.field, regex, pattern.kind))
    if not any(f == "moisture_pct" and k == "float" for f, _, k in compiled):
        raise DriverUsageError("patterns must find moisture_pct as a float")
    return tuple(compiled)


_DedupKey = tuple[tuple[tuple[str, FieldValue], ...], tuple[tuple[str, str], ...]]


class TicketParser(EventQueue[Measurement]):
    """Stream parser for printed moisture tickets (see the module docstring).

    Sans-I/O: the agent passes the monotonic time of each chunk and calls ``tick``
    when ``next_deadline`` says; the parser never reads a clock and never raises on
    input bytes.

    Attributes:
        frames_ok: Tickets accepted as measurements.
        frames_discarded: ``Discarded`` events produced.
    """

    def __init__(self, options: TicketOptions = TicketOptions()) -> None:
        self._patterns = _compile_patterns(options)
        super().__init__(max_discarded=options.max_audit_bytes)
        self._start = (
            None if options.start_regex is None else _compile(options.start_regex, "start_regex")
        )
        self._end = None if options.end_regex is None else _compile(options.end_regex, "end_regex")
        self._opts = options
        self._stripper = EscPosStripper(mark_init=True)
        self._splitter = LineSplitter(options.line_ending, max_line=options.max_bytes)
        self._raw = bytearray()  # completed lines of this ticket, terminators included
        self._lines: list[str] = []
        self._suspect = False
        self._clean = False  # we saw this ticket begin
        self._skipping = False  # the ticket went too long: skip to the next boundary
        self._noise = False  # an over-long line began at a boundary: drop it to its end
        self._last_at: float | None = None  # last byte, or the first tick
        self._accepted: tuple[_DedupKey, float] | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the ticket in progress (never more than ``max_bytes``)."""
        return len(self._raw) + self._splitter.pending

    def next_deadline(self) -> float | None:
        """When to call ``tick`` next, in the agent's monotonic seconds.

        ``0.0`` (at once) until the parser has been given a time: the silence since the
        port opened then counts as an idle gap. ``None`` when nothing is pending.
        """
        if self._last_at is None:
            return 0.0
        if self._pending():
            return self._last_at + self._opts.idle_gap_s
        return None

    def tick(self, now: float) -> None:
        """Tell the parser the time while no bytes arrive; an idle gap ends a ticket."""
        if self._last_at is None:
            self._last_at = now
        elif self._pending() and now - self._last_at >= self._opts.idle_gap_s:
            self._idle()

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes that arrived at ``now`` (monotonic seconds)."""
        if not data:
            self.tick(now)
            return
        if self._last_at is not None and now - self._last_at >= self._opts.idle_gap_s:
            self._idle()
        self._last_at = now
        text = self._stripper.feed(data)
        pos = 0
        for found in _BOUNDARY.finditer(text):
            self._text(text[pos : found.start()])
            self._boundary()  # FF ends a ticket; ESC @ begins a print job
            pos = found.end()
        self._text(text[pos:])

    # -- framing -------------------------------------------------------------------

    def _pending(self) -> bool:
        return self._skipping or self._noise or self.buffered_bytes > 0

    def _idle(self) -> None:
        # A command cut by a long pause is not resumed by the next print job.
        self._stripper.reset()
        self._boundary()

    def _text(self, text: bytes) -> None:
        # One line at a time, and never past the first byte over the limit: every
        # decision (end, start, too long) then falls on the same byte however the
        # stream was cut into chunks.
        limit = self._opts.max_bytes
        pos = 0
        size = len(text)
        while pos < size:
            end = size if self._skipping else min(size, pos + limit - self.buffered_bytes + 1)
            line, pos = self._splitter.next_line(text, pos, end)
            if line is not None:
                self._dispatch(line)
            if not self._skipping and self.buffered_bytes > limit:
                self._too_long()

    def _boundary(self) -> None:
        for line in self._splitter.flush():
            self._dispatch(line)
        self._noise = False
        if self._skipping:
            self._skipping = False
        else:
            self._finish()
        self._clean = self._start is None

    def _dispatch(self, line: bytes) -> None:
        wrapped = len(line) >= self._opts.max_bytes and line[-1:] not in (b"\r", b"\n")
        if self._noise:
            # The rest of a noise line: dropped up to and including its terminator.
            self._noise = wrapped
            return
        if wrapped and not self._lines and not self._skipping:
            # A line longer than a whole ticket may be, where a ticket would begin:
            # line noise between two tickets. Drop it and stay at the boundary, so
            # the next ticket still begins cleanly.
            self._noise = True
            self._discard(line, "too-long")
            return
        content = line.translate(None, b"\r\n")
        text = content.decode("latin-1").rstrip()
        starts = self._start is not None and self._start.search(text) is not None
        ends = self._end is not None and self._end.search(text) is not None
        if self._skipping:
            if not (starts or ends):
                return
            self._skipping = False
            if not starts:
                self._clean = self._start is None
                return
        if starts:
            self._finish()
            self._clean = True
        self._raw += line
        self._lines.append(text)
        self._suspect = self._suspect or looks_misframed(content)
        if len(self._lines) > self._opts.max_lines:
            self._too_long()
        elif ends:
            self._finish()
            self._clean = self._start is None

    def _too_long(self) -> None:
        data = self._raw + self._splitter.partial  # a copy; _discard caps it
        self._reset_ticket()
        self._skipping = True
        self._discard(data, "too-long")

    def _reset_ticket(self) -> None:
        self._raw.clear()
        self._lines.clear()
        self._suspect = False

    # -- judging a ticket ----------------------------------------------------------

    def _finish(self) -> None:
        lines = list(self._lines)
        raw = cap(self._raw, self._opts.max_audit_bytes)
        suspect, clean = self._suspect, self._clean
        self._reset_ticket()
        if not any(lines):
            return
        if suspect:
            self._discard(raw, "framing-suspect")
            return
        if not clean:
            self._discard(raw, "partial")
            return
        fields, tags = self._extract(lines)
        moisture = fields.get("moisture_pct")
        if moisture is None:
            self._discard(raw, "no-moisture")
            return
        low, high = MOISTURE_RANGE
        if not (isinstance(moisture, float) and low <= moisture <= high):
            self._discard(raw, "out-of-range")
            return
        now = self._last_at if self._last_at is not None else 0.0
        key: _DedupKey = (tuple(fields.items()), tuple(tags.items()))
        if self._accepted is not None:
            last_key, last_at = self._accepted
            if key == last_key and now - last_at <= self._opts.duplicate_window_s:
                self._discard(raw, "duplicate")
                return
        self._accepted = (key, now)
        self.frames_ok += 1
        self._events.append(
            Measurement(
                measurement="moisture",
                fields=fields,
                tags=tags,
                raw=raw,
                audit=_audit_text(lines, self._opts.max_audit_bytes),
            )
        )

    def _extract(self, lines: list[str]) -> tuple[dict[str, FieldValue], dict[str, str]]:
        fields: dict[str, FieldValue] = {}
        tags: dict[str, str] = {}
        for name, regex, kind in self._patterns:
            if name in fields or name in tags:
                continue
            for line in lines:
                value = _match(regex, kind, line)
                if value is None:
                    continue
                if name in TAG_FIELDS and isinstance(value, str):
                    tags[name] = value
                else:
                    fields[name] = value
                break
        return fields, tags


_BOUNDARY = re.compile(b"[\x0c\x1b]")  # FF, and the ESC that marks ESC @


def _match(regex: re.Pattern[str], kind: Literal["float", "text"], line: str) -> FieldValue | None:
    found = regex.search(line)
    if found is None:
        return None
    match kind:
        case "float":
            group = found.group(1)
            return None if group is None else parse_decimal(group)
        case "text":
            text = " ".join(g.strip() for g in found.groups() if g and g.strip())
            return text or None
        case _:  # pragma: no cover
            assert_never(kind)


def _audit_text(lines: list[str], limit: int) -> str:
    first = next(i for i, line in enumerate(lines) if line)
    last = max(i for i, line in enumerate(lines) if line)
    return "\n".join(lines[first : last + 1])[:limit]


def decode_ticket(
    data: bytes, options: TicketOptions = TicketOptions()
) -> list[Measurement | Discarded]:
    """Decode a capture known to hold whole tickets (a file, a golden case).

    The line is taken as silent before the first byte, every byte as arriving at
    once, and the end of ``data`` as an idle gap, so a last ticket without FF counts.
    """
    parser = TicketParser(options)
    parser.tick(0.0)
    parser.receive_data(data, options.idle_gap_s)
    parser.tick(3 * options.idle_gap_s)
    return parser.events()


# -- encoding (the simulator's side) -----------------------------------------------

_TEXT_CHARS = frozenset(TEXT_BYTES.decode("latin-1")) - {"\t"}
_DEFAULT_REGEXES = tuple((p.field, re.compile(p.regex, re.IGNORECASE)) for p in DEFAULT_PATTERNS)
_METER_TIME = re.compile(r"(\d{2}/\d{2}/\d{2,4}) (\d{2}:\d{2}(?::\d{2})?)", re.ASCII)
_LINE_ENDINGS = (b"\r\n", b"\r", b"\n")


def _number(name: str, value: float, decimals: int, low: float, high: float, comma: bool) -> str:
    if not math.isfinite(value):
        raise DriverUsageError(f"{name} is not a finite number: {value!r}")
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")  # "-0,0" would not read back as a number
    if not low <= float(text) <= high:
        raise DriverUsageError(f"{name} {value!r} cannot be printed (range {low}..{high})")
    return text.replace(".", ",") if comma else text


def _printable(name: str, value: str) -> str:
    bad = sorted(set(value) - _TEXT_CHARS)
    if bad:
        raise DriverUsageError(
            f"{name} {value!r}: cannot print {''.join(bad)!r} (latin-1 text only)"
        )
    return value


def _text(name: str, value: str, *, word: bool) -> str:
    _printable(name, value)
    if not value or value != value.strip():
        raise DriverUsageError(f"{name} {value!r}: empty, or spaces around it would be lost")
    if word and any(c.isspace() for c in value):
        raise DriverUsageError(f"{name} {value!r}: must be one word")
    if value[0] in ".:=":
        raise DriverUsageError(f"{name} {value!r}: a leading {value[0]!r} reads as a separator")
    return value


def _reads_as(line: str) -> set[str]:
    return {name for name, regex in _DEFAULT_REGEXES if regex.search(line)}


def encode_ticket(
    *,
    moisture_pct: float,
    product: str | None = None,
    temperature_c: float | None = None,
    bulk_density_kg_hl: float | None = None,
    sample_mass_g: float | None = None,
    sample_id: str | None = None,
    lot: str | None = None,
    meter_time: str | None = None,
    header: str = "GEHAKA G650",
    escpos: bool = True,
    form_feed: bool = True,
    line_ending: bytes = b"\r\n",
    decimal_comma: bool = True,
) -> bytes:
    """Print one ticket as a Gehaka-style meter would (see the module docstring).

    Numbers are rounded as the meter displays them: moisture and temperature to one
    decimal, density and mass to two. ``decode_ticket`` with the default options reads
    back exactly what was given (after that rounding).

    Args:
        moisture_pct: Printed even when outside 0..60, so tests can send such tickets.
        product: The ``Produto:`` line (tag ``product``).
        temperature_c: The ``Temp.:`` line, in °C.
        bulk_density_kg_hl: The ``PH:`` (peso hectolítrico) line.
        sample_mass_g: The ``Peso amostra:`` line.
        sample_id: The ``Amostra:`` line, one word.
        lot: The ``Lote:`` line, one word (tag ``lot``).
        meter_time: ``DD/MM/YYYY HH:MM[:SS]`` (year may have 2 digits), one space.
        header: First line (model name); must not read as a field.
        escpos: Wrap the ticket in ``ESC @`` ... ``GS V 42 00`` like a printer job.
        form_feed: End with FF.
        line_ending: ``CR LF``, ``CR`` or ``LF``.
        decimal_comma: Print ``11,8`` rather than ``11.8``.

    Raises:
        DriverUsageError: A value the ticket cannot carry: a number out of the
            printable range, text outside latin-1 letters and printable ASCII, a line
            break inside a field, or a header or product that would read as another
            field.
    """
    if line_ending not in _LINE_ENDINGS:
        raise DriverUsageError(f"line_ending must be CR LF, CR or LF: {line_ending!r}")
    lines: list[str] = []
    if header:
        _printable("header", header)
        if _reads_as(header):
            raise DriverUsageError(f"header {header!r} would read as {sorted(_reads_as(header))}")
        lines.append(header)
    if meter_time is not None:
        found = _METER_TIME.fullmatch(meter_time)
        if found is None:
            raise DriverUsageError(f"meter_time {meter_time!r}: expected DD/MM/YYYY HH:MM[:SS]")
        lines.append(f"{found.group(1)}  {found.group(2)}")
    if product is not None:
        line = f"Produto: {_text('product', product, word=False)}"
        if _reads_as(line) != {"product"}:
            raise DriverUsageError(f"product {product!r} would also read as another field")
        lines.append(line)
    if lot is not None:
        lines.append(f"Lote: {_text('lot', lot, word=True)}")
    comma = decimal_comma
    lines.append(f"Umidade:  {_number('moisture_pct', moisture_pct, 1, 0.0, 99.9, comma)} %")
    if temperature_c is not None:
        lines.append(f"Temp.: {_number('temperature_c', temperature_c, 1, -99.9, 99.9, comma)} C")
    if bulk_density_kg_hl is not None:
        density = _number("bulk_density_kg_hl", bulk_density_kg_hl, 2, 10.0, 999.99, comma)
        lines.append(f"PH: {density}")
    if sample_mass_g is not None:
        lines.append(
            f"Peso amostra: {_number('sample_mass_g', sample_mass_g, 2, 0.0, 9999.99, comma)} g"
        )
    if sample_id is not None:
        lines.append(f"Amostra: {_text('sample_id', sample_id, word=True)}")
    body = b"".join(line.encode("latin-1") + line_ending for line in lines)
    if escpos:
        body = b"\x1b@" + body + b"\x1dVB\x00"
    return body + (b"\x0c" if form_feed else b"")
