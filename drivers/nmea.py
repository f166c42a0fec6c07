r"""GPS receivers' time, NMEA 0183 (v2.3 to v4.11): ``$--RMC`` and ``$--ZDA``.

A GPS receiver on a serial port (USB ones enumerate as ``/dev/ttyACM0`` or a CP210x
``/dev/ttyUSB0``; 4800 or 9600 baud, 8N1) prints one burst of sentences a second.
Only two of them carry the date, and those are what this driver reads::

    $ talker(2) type(3) , field , ... * xor(2 hex) CR LF        at most 82 characters

    $GPRMC,hhmmss.ss,S,llll.ll,N,yyyyy.yy,W,knots,course,ddmmyy,magvar,E[,mode[,nav]]*hh
    $GPZDA,hhmmss.ss,dd,mm,yyyy,zone_h,zone_m*hh

The checksum is the XOR of every byte between ``$`` and ``*``, in two hex digits; it
is required (NMEA 0183 v2.3 and later make it mandatory on RMC and ZDA). Talkers:
``GP`` (GPS), ``GN`` (several constellations), ``GL``, ``GA``, ``GB``/``BD``, ``GQ``.

What counts as a time:

* **RMC** with status ``A`` (a valid fix) and, when the v2.3 mode indicator is there,
  a mode other than ``N`` (no fix). Status ``V`` is ``Discarded("no-fix")``: before a
  fix, receivers print the time of their own clock, which may be anything (a cold
  u-blox counts from 1980 or from its firmware's build date). RMC's year has two
  digits, read from the GPS epoch on: 80-99 are 1980-1999, 00-79 are 2000-2079 (so
  a receiver's default date is in the past, never decades ahead). A receiver hit by
  the GPS week roll-over prints a date 1024 weeks early; that is a valid sentence
  here, and the agent's sanity floor refuses it.
* **ZDA** carries a four-digit year but no status, so it counts only while the last
  RMC of the stream said ``A``: ZDA alone, or after an RMC with ``V``, is
  ``Discarded("no-fix")``. Its local zone fields are ignored (the time is UTC).

The time stated is the instant of the fix, the start of the second; the burst that
carries it arrives up to a second later, so a reading of this driver is good to about
a second (the agent stamps it with the time its bytes arrived).

Other well-formed sentences (GGA, GSA, GSV, VTG, TXT, proprietary ``$P...``) are
skipped without a word; they are most of the traffic. What is not a sentence is
``Discarded`` with one of: ``stray`` (bytes before a ``$``, such as the tail of a
sentence cut when the port opened), ``not-a-sentence`` (no ``$``, or bytes outside
printable ASCII), ``no-checksum``, ``bad-checksum``, ``too-long`` (over ``max_line``
bytes without a line end), ``bad-time`` (fields missing or out of range, a date
that does not exist, a leap second) and ``no-fix``. Feeding bytes never raises.

Config example (``site.toml``)::

    [agent]
    time_sources = ["ntp", "gps", "user"]

    [agent.time_gps]
    port = "/dev/serial/by-id/usb-u-blox_AG_-_www.u-blox.com_u-blox_7_-_GPS_GNSS_Receiver-if00"
    baud = 9600
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from coffee_telemetry.drivers._framing import EventQueue, LineReader
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded

__all__ = [
    "MAX_LINE",
    "TALKERS",
    "GpsTime",
    "NmeaParser",
    "checksum",
    "decode_sentence",
    "encode_rmc",
    "encode_sentence",
    "encode_zda",
]

#: Talker ids whose RMC and ZDA are read.
TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ"})
#: The longest line kept (NMEA's limit is 82 characters; some receivers exceed it a little).
MAX_LINE = 128

_NS = 1_000_000_000
_BODY = re.compile(rb"[ -~]*")  # printable ASCII
_TIME = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})(?:\.([0-9]{1,9}))?")
_TWO = re.compile(r"[0-9]{2}")
_FOUR = re.compile(r"[0-9]{4}")
_DATE = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})")
_HEX = re.compile(rb"[0-9A-Fa-f]{2}")


@dataclass(frozen=True, slots=True)
class GpsTime:
    """The time a receiver with a valid fix stated.

    Attributes:
        utc_ns: That time, UTC, in nanoseconds since the epoch.
        sentence: ``RMC`` or ``ZDA``.
        talker: ``GP``, ``GN``, ...
    """

    utc_ns: int
    sentence: str
    talker: str


def checksum(body: bytes) -> int:
    """The XOR of ``body``'s bytes (what follows ``$`` up to ``*``)."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def _time_of_day(text: str) -> tuple[int, int, int, int] | None:
    found = _TIME.fullmatch(text)
    if found is None:
        return None
    hour, minute, second = int(found[1]), int(found[2]), int(found[3])
    if hour > 23 or minute > 59 or second > 59:  # a leap second (60) is not kept
        return None
    fraction = found[4] or "0"
    return hour, minute, second, int(fraction.ljust(9, "0"))


def _utc_ns(year: int, month: int, day: int, clock: tuple[int, int, int, int]) -> int | None:
    hour, minute, second, nanos = clock
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # 30 February and the like
        return None
    return int(moment.timestamp()) * _NS + nanos


def _rmc(talker: str, fields: list[str]) -> GpsTime | str:
    if len(fields) < 10:
        return "bad-time"
    if fields[2] != "A" or (len(fields) > 12 and fields[12] == "N"):
        return "no-fix"
    clock = _time_of_day(fields[1])
    date = _DATE.fullmatch(fields[9])
    if clock is None or date is None:
        return "bad-time"
    yy = int(date[3])
    utc = _utc_ns(1900 + yy if yy >= 80 else 2000 + yy, int(date[2]), int(date[1]), clock)
    return "bad-time" if utc is None else GpsTime(utc, "RMC", talker)


def _zda(talker: str, fields: list[str]) -> GpsTime | str:
    if len(fields) < 5:
        return "bad-time"
    clock = _time_of_day(fields[1])
    day, month, year = fields[2:5]
    if (
        clock is None
        or _TWO.fullmatch(day) is None
        or _TWO.fullmatch(month) is None
        or _FOUR.fullmatch(year) is None
    ):
        return "bad-time"
    utc = _utc_ns(int(year), int(month), int(day), clock)
    return "bad-time" if utc is None else GpsTime(utc, "ZDA", talker)


def decode_sentence(line: bytes) -> GpsTime | Discarded | None:
    """Decode one sentence (``$`` to checksum, line end optional); never raises.

    ZDA is decoded here whatever the fix (``NmeaParser`` adds the RMC status rule).

    Returns:
        The time of an RMC (status ``A``) or ZDA; ``None`` for any other well-formed
        sentence; ``Discarded`` for the rest (reasons in the module docstring).
    """
    content = bytes(line).rstrip(b"\r\n")
    if not content.startswith(b"$") or _BODY.fullmatch(content) is None:
        return Discarded(data=content, reason="not-a-sentence")
    star = content.rfind(b"*")
    if star < 0:
        return Discarded(data=content, reason="no-checksum")
    body, given = content[1:star], content[star + 1 :]
    if _HEX.fullmatch(given) is None or int(given, 16) != checksum(body):
        return Discarded(data=content, reason="bad-checksum")
    fields = body.decode("ascii").split(",")
    address = fields[0]
    if len(address) != 5 or address[:2] not in TALKERS:
        return None
    talker, kind = address[:2], address[2:]
    if kind == "RMC":
        result = _rmc(talker, fields)
    elif kind == "ZDA":
        result = _zda(talker, fields)
    else:
        return None
    return Discarded(data=content, reason=result) if isinstance(result, str) else result


class NmeaParser(EventQueue[GpsTime]):
    """A GPS receiver's byte stream in, ``GpsTime`` and ``Discarded`` out.

    ZDA counts only while the last RMC said ``A`` (module docstring); a stream that
    has shown no RMC yet has no fix as far as this parser knows.

    Args:
        max_line: Bytes without a line end after which a line is dropped.
        max_discarded: Cap on ``Discarded.data``.

    Attributes:
        sentences_skipped: Well-formed sentences that carry no time (GGA, GSV, ...).
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_discarded: int = 64) -> None:
        if max_line < 16:
            raise DriverUsageError(f"max_line must be at least 16: {max_line!r}")
        super().__init__(max_discarded=max_discarded)
        self._lines = LineReader("auto", max_line=max_line)
        self._fix = False
        self.sentences_skipped = 0

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they arrived; never raises."""
        for line in self._lines.feed(data):
            if isinstance(line, Discarded):
                self._discard(line.data, line.reason)
                continue
            start = line.find(b"$")
            if start < 0:
                self._discard(line, "not-a-sentence")
                continue
            if start > 0:
                self._discard(line[:start], "stray")
            self._sentence(line[start:])

    def _sentence(self, line: bytes) -> None:
        event = decode_sentence(line)
        if event is None:
            self.sentences_skipped += 1
            return
        if isinstance(event, Discarded):
            if event.reason == "no-fix" and line[3:6] == b"RMC":
                self._fix = False
            self._discard(event.data, event.reason)
            return
        if event.sentence == "RMC":
            self._fix = True
        elif not self._fix:
            self._discard(line, "no-fix")
            return
        self.frames_ok += 1
        self._events.append(event)


# -- the other direction: what a receiver prints (the simulator's encoders) -----------


def encode_sentence(body: str) -> bytes:
    """``$`` + ``body`` + ``*`` + checksum + CR LF.

    Raises:
        DriverUsageError: ``body`` holds bytes a sentence cannot (``$``, ``*``, line
            ends, anything outside printable ASCII).
    """
    raw = body.encode("ascii", errors="replace")
    if _BODY.fullmatch(raw) is None or b"$" in raw or b"*" in raw or raw != body.encode():
        raise DriverUsageError(f"not a sentence body: {body[:40]!r}")
    return b"$" + raw + b"*" + f"{checksum(raw):02X}".encode() + b"\r\n"


def _check(when: datetime, talker: str) -> datetime:
    if talker not in TALKERS:
        raise DriverUsageError(f"talker must be one of {sorted(TALKERS)}: {talker!r}")
    if when.tzinfo is None:
        raise DriverUsageError("the time must be timezone-aware (UTC)")
    return when.astimezone(UTC)


def encode_rmc(
    when: datetime,
    *,
    status: str = "A",
    talker: str = "GP",
    mode: str | None = "A",
    latitude: str = "2150.1234,S",
    longitude: str = "04530.5678,W",
) -> bytes:
    """An RMC sentence as a receiver prints it (hundredths of a second).

    Args:
        when: The fix's time (timezone-aware); years 1980 to 2079.
        status: ``A`` valid, ``V`` no fix.
        talker: The talker id.
        mode: The v2.3 mode indicator (``A`` autonomous, ``D``, ``E``, ``N`` no fix),
            or ``None`` for an NMEA 2.1 sentence without it.
        latitude: ``ddmm.mmmm,N|S`` as printed (empty fields before a fix: ``","``).
        longitude: ``dddmm.mmmm,E|W`` as printed.

    Raises:
        DriverUsageError: A naive time, a year RMC cannot hold, an unknown talker or status.
    """
    utc = _check(when, talker)
    if not 1980 <= utc.year <= 2079:
        raise DriverUsageError(f"RMC holds years 1980-2079: {utc.year}")
    if status not in ("A", "V"):
        raise DriverUsageError(f"status must be A or V: {status!r}")
    clock = f"{utc:%H%M%S}.{utc.microsecond // 10_000:02d}"
    fields = ["RMC", clock, status, latitude, longitude, "0.02", "31.66", f"{utc:%d%m%y}", ","]
    if mode is not None:
        fields.append(mode)
    return encode_sentence(talker + ",".join(fields))


def encode_zda(when: datetime, *, talker: str = "GP") -> bytes:
    """A ZDA sentence (hundredths of a second, zone fields 00,00).

    Raises:
        DriverUsageError: A naive time, a year before 1000, an unknown talker.
    """
    utc = _check(when, talker)
    if utc.year < 1000:
        raise DriverUsageError(f"ZDA holds four-digit years: {utc.year}")
    clock = f"{utc:%H%M%S}.{utc.microsecond // 10_000:02d}"
    return encode_sentence(f"{talker}ZDA,{clock},{utc:%d},{utc:%m},{utc.year:04d},00,00")
