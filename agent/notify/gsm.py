"""GSM modems, sans-I/O: SMS PDUs (3GPP TS 23.040 / 23.038) and the AT reply stream (27.005).

Text in PDU mode
----------------
A message goes out as one or more SMS-SUBMIT PDUs, hex-encoded for ``AT+CMGS``::

    SMSC(00: the SIM's) | first octet | MR(00) | DA len, TOA 91, BCD digits
      | PID 00 | DCS | VP A7 (24 h) | UDL | [UDH] UD

The alphabet is GSM 7-bit (the default alphabet plus its escape table; ``{`` ``}`` ``€``
and friends cost two septets) when every character has a code there, else UCS-2 (most
Portuguese text: ``ã õ ç á í ó ú ê ô`` are not in the default alphabet). One PDU carries
160 septets or 70 UCS-2 units; a longer text becomes parts of 153 septets or 67 units,
each with a concatenation header (IEI 00: reference, count, number), never cutting an
escape pair or a surrogate pair. ``encode_submit`` builds them; the reference should be
stable for one message (a resend then reassembles with the first try's parts).

Answers come back as SMS-DELIVER PDUs (``+CMGR`` after ``+CMTI``), delivery reports as
SMS-STATUS-REPORT PDUs (``+CDS``). ``decode_pdu`` reads both and never raises: anything
else, or a broken PDU, is ``Discarded``.

The AT stream
-------------
``AtParser`` takes the modem's bytes and yields what it said: ``Line`` (an information
line: ``+CMGS: 12``, ``+CSQ: 21,0``, a PDU after ``+CMGR:``), ``Prompt`` (``> ``, the
invitation to type a PDU), ``Final`` (``OK``, ``ERROR``, ``+CMS ERROR: n``,
``+CME ERROR: n``) and ``Unsolicited`` (``+CMTI``: a message arrived; ``+CDS`` with the
report PDU of the line after it; ``RING`` and the like). Echoed commands (a modem
fresh from power-up echoes until ``ATE0``) and empty lines are dropped. A line longer
than ``MAX_LINE`` is cut and reported as ``Discarded``.

The network's time
------------------
``AT+CCLK?`` answers ``+CCLK: "yy/MM/dd,hh:mm:ss±zz"`` (27.007 §8.15): the modem's
clock as local time, ``zz`` the zone in quarters of an hour. Where the network sends
its time (NITZ) and the modem is set to take it (Quectel ``AT+CTZU=1``, SIMCom
``AT+CLTS=1``), that clock is the network's; otherwise it counts from the modem's
power-up default (Quectel ``80/01/06``, SIMCom ``04/01/01``). ``decode_cclk`` reads the
line into UTC and never raises; it reads years 80-99 as 1980-1999 (those defaults),
the rest as 20yy, so a default is a time in the past, which the agent's floor refuses,
never one in the future. A clock without its zone is ``Discarded``: local time of an
unknown zone is no time at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "MAX_LINE",
    "AtParser",
    "Discarded",
    "Final",
    "Incoming",
    "Line",
    "NetworkTime",
    "Prompt",
    "StatusReport",
    "Unsolicited",
    "decode_cclk",
    "decode_pdu",
    "encode_submit",
    "gsm7_encode",
]

#: The default alphabet (TS 23.038 §6.2.1), by code; 0x1B is the escape to the table below.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The escape table's characters (after 0x1B), by code.
GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
            0x3E: "]", 0x40: "|", 0x65: "€"}  # fmt: skip
_BASIC = {ch: code for code, ch in enumerate(GSM7_BASIC) if code != 0x1B}
_EXT = {ch: code for code, ch in GSM7_EXT.items()}

#: Septets or UCS-2 units in one PDU, alone and as a part of a long message.
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
#: Most parts a message may have (the header's count is one octet).
MAX_PARTS = 255
#: Longest AT line kept.
MAX_LINE = 2048


def gsm7_encode(text: str) -> list[list[int]] | None:
    """Each character's septets (one, or ESC and one), or None if one has no code."""
    out: list[list[int]] = []
    for ch in text:
        if ch in _BASIC:
            out.append([_BASIC[ch]])
        elif ch in _EXT:
            out.append([0x1B, _EXT[ch]])
        else:
            return None
    return out


def _pack(septets: list[int], *, skip_bits: int = 0) -> bytes:
    """Pack septets LSB first, after ``skip_bits`` zero bits (the fill after a header).

    Seven spare bits at the end would read as ``@`` to a receiver that ignores the
    length, so they hold CR instead (TS 23.038 §6.1.2.3.1).
    """
    acc, bits = 0, skip_bits
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
    if (-bits) % 8 == 7:
        acc |= 0x0D << bits
    data = acc.to_bytes((bits + 7) // 8, "little")
    return data[skip_bits // 8 :]


def _unpack(data: bytes, count: int, *, skip_bits: int = 0) -> list[int]:
    acc = int.from_bytes(data, "little")
    return [(acc >> (skip_bits + 7 * i)) & 0x7F for i in range(count)]


def _gsm7_decode(septets: list[int]) -> str:
    out, escaped = [], False
    for septet in septets:
        if escaped:
            out.append(GSM7_EXT.get(septet, " "))
            escaped = False
        elif septet == 0x1B:
            escaped = True
        else:
            out.append(GSM7_BASIC[septet])
    return "".join(out)


def _address(number: str) -> bytes:
    digits = number.lstrip("+")
    if not digits.isdigit() or not 1 <= len(digits) <= 20:
        raise ValueError(f"not a phone number: {number!r}")
    toa = 0x91 if number.startswith("+") else 0x81
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), toa]) + bytes.fromhex(swapped)


def _chunks_gsm7(chars: list[list[int]]) -> list[list[int]]:
    if sum(len(c) for c in chars) <= GSM7_SINGLE:
        return [[s for c in chars for s in c]]
    parts: list[list[int]] = [[]]
    for septets in chars:  # an escape pair stays in one part
        if len(parts[-1]) + len(septets) > GSM7_PART:
            parts.append([])
        parts[-1].extend(septets)
    return parts


def _chunks_ucs2(text: str) -> list[bytes]:
    units = text.encode("utf-16-be")
    if len(units) <= 2 * UCS2_SINGLE:
        return [units]
    parts, start = [], 0
    while start < len(units):
        end = min(start + 2 * UCS2_PART, len(units))
        if end < len(units) and 0xD8 <= units[end - 2] <= 0xDB:  # a high surrogate
            end -= 2
        parts.append(units[start:end])
        start = end
    return parts


def encode_submit(
    number: str, text: str, *, reference: int, status_report: bool = True
) -> list[tuple[int, str]]:
    """The SMS-SUBMIT PDUs of ``text`` to ``number``: ``(TPDU length, hex)`` per part.

    Args:
        number: The recipient, ``+<country><number>`` (or national digits).
        text: The message; any Unicode (UCS-2 when GSM 7-bit cannot hold it).
        reference: The concatenation reference (0-255) of a long message.
        status_report: Ask the network for a delivery report.

    Raises:
        ValueError: Not a phone number, or a text over ``MAX_PARTS`` parts.
    """
    address = _address(number)
    chars = gsm7_encode(text)
    bodies: list[tuple[int, bytes, int]] = []  # (DCS, payload, UDL without header)
    if chars is not None:
        for septets in _chunks_gsm7(chars):
            bodies.append((0x00, bytes(septets), len(septets)))
    else:
        for units in _chunks_ucs2(text):
            bodies.append((0x08, units, len(units)))
    if len(bodies) > MAX_PARTS:
        raise ValueError(f"text needs {len(bodies)} parts; at most {MAX_PARTS}")
    out = []
    for number_in, (dcs, payload, length) in enumerate(bodies, start=1):
        first = 0x01 | 0x10 | (0x20 if status_report else 0)
        udh = b""
        if len(bodies) > 1:
            first |= 0x40
            udh = bytes([0x05, 0x00, 0x03, reference & 0xFF, len(bodies), number_in])
        if dcs == 0x00:
            fill = (7 - (len(udh) * 8) % 7) % 7
            header_septets = (len(udh) * 8 + fill) // 7
            ud = udh + _pack(list(payload), skip_bits=len(udh) * 8 + fill)
            udl = header_septets + length
        else:
            ud = udh + payload
            udl = len(ud)
        tpdu = bytes([first, 0x00]) + address + bytes([0x00, dcs, 0xA7, udl]) + ud
        out.append((len(tpdu), "00" + tpdu.hex().upper()))
    return out


# -- what the modem hands back ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    """An SMS-DELIVER: a text someone sent to the modem's number.

    Attributes:
        sender: ``+<digits>`` for an international number, digits otherwise.
        text: The text (of this part).
        part: ``(reference, count, number)`` of a concatenated part, else None.
    """

    sender: str
    text: str
    part: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT: what became of a message the modem sent.

    Attributes:
        reference: The TP-MR ``+CMGS`` answered with.
        recipient: Who it was for.
        status: TP-ST: 0x00-0x1F delivered or on its way, 0x20-0x3F still trying,
            0x40 and above failed for good.
    """

    reference: int
    recipient: str
    status: int

    @property
    def delivered(self) -> bool:
        """Whether the handset got it."""
        return self.status <= 0x02


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes that were no message we read, and why."""

    data: str
    reason: str


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("PDU ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def octet(self) -> int:
        return self.take(1)[0]

    def address(self) -> str:
        digits, toa = self.octet(), self.octet()
        raw = self.take((digits + 1) // 2)
        if toa & 0x70 == 0x50:  # alphanumeric sender (a company name)
            return _gsm7_decode(_unpack(raw, digits * 4 // 7))
        text = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in raw)[:digits]
        return ("+" if toa & 0x70 == 0x10 else "") + text


def _alphabet(dcs: int) -> str:
    group = dcs >> 4
    if group <= 0x07:  # general data coding (and its auto-deletion variant)
        return {0: "gsm7", 1: "8bit", 2: "ucs2"}.get((dcs >> 2) & 0x03, "gsm7")
    if group == 0x0F:
        return "8bit" if dcs & 0x04 else "gsm7"
    if group == 0x0E:
        return "ucs2"
    return "gsm7"


def _user_data(r: _Reader, first: int, dcs: int) -> tuple[str, tuple[int, int, int] | None]:
    udl = r.octet()
    alphabet = _alphabet(dcs)
    rest = r.data[r.pos :]
    header_len = rest[0] + 1 if first & 0x40 and rest else 0
    part = None
    if header_len:
        header = rest[1:header_len]
        i = 0
        while i + 1 < len(header):
            iei, length = header[i], header[i + 1]
            value = header[i + 2 : i + 2 + length]
            if iei == 0x00 and len(value) == 3:
                part = (value[0], value[1], value[2])
            elif iei == 0x08 and len(value) == 4:
                part = (value[0] << 8 | value[1], value[2], value[3])
            i += 2 + length
    if alphabet == "gsm7":
        skip = header_len * 8 + (7 - (header_len * 8) % 7) % 7 if header_len else 0
        count = udl - skip // 7
        if count < 0 or (skip + 7 * count + 7) // 8 > len(rest):
            raise ValueError("user data shorter than its length")
        return _gsm7_decode(_unpack(rest, count, skip_bits=skip)), part
    if udl > len(rest):
        raise ValueError("user data shorter than its length")
    body = rest[header_len:udl]
    if alphabet == "ucs2":
        return body.decode("utf-16-be", errors="replace"), part
    return body.decode("latin-1"), part


def decode_pdu(hex_pdu: str) -> Incoming | StatusReport | Discarded:
    """Read a PDU the modem received (with its SMSC prefix); never raises."""
    shown = hex_pdu[:400]
    try:
        r = _Reader(bytes.fromhex(hex_pdu.strip()))
        r.take(r.octet())  # the SMSC
        first = r.octet()
        kind = first & 0x03
        if kind == 0x00:
            sender = r.address()
            r.octet()  # PID
            dcs = r.octet()
            r.take(7)  # SCTS
            text, part = _user_data(r, first, dcs)
            return Incoming(sender=sender, text=text, part=part)
        if kind == 0x02:
            reference = r.octet()
            recipient = r.address()
            r.take(14)  # SCTS, discharge time
            return StatusReport(reference=reference, recipient=recipient, status=r.octet())
    except (ValueError, IndexError) as exc:
        return Discarded(shown, str(exc) or "broken PDU")
    return Discarded(shown, f"not a message we read (type {kind})")


# -- the AT stream -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """An information line of the command in progress."""

    text: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """``> ``: the modem waits for the PDU (then Ctrl-Z)."""


@dataclass(frozen=True, slots=True)
class Final:
    """A command's last line.

    Attributes:
        ok: ``OK``.
        text: The line as sent.
        cms: The ``+CMS ERROR`` code (message service), if that was it.
        cme: The ``+CME ERROR`` code (equipment: SIM, PIN), if that was it.
    """

    ok: bool
    text: str
    cms: int | None = None
    cme: int | None = None


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """Something the modem says on its own (``+CMTI``, ``+CDS`` with its PDU, ``RING``).

    Attributes:
        text: The line.
        pdu: The PDU line that follows ``+CDS``.
    """

    text: str
    pdu: str | None = None


#: What ``AtParser`` yields.
AtEvent = Line | Prompt | Final | Unsolicited | Discarded

_FINAL = re.compile(r"^(OK|ERROR|NO CARRIER|\+CMS ERROR: ?(.+)|\+CME ERROR: ?(.+))$")
_UNSOLICITED = ("+CMTI:", "+CDS:", "RING", "+CLIP:", "^", "+CUSD:", "+CBM:")


def _code(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else -1


class AtParser:
    """The modem's replies, bytes in, ``AtEvent`` out (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._events: list[AtEvent] = []
        self._cds: str | None = None  # a +CDS line waiting for its PDU line

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they arrived; never raises."""
        self._buf += data
        while True:
            stripped = self._buf.lstrip(b"\r\n")
            if len(stripped) != len(self._buf):
                del self._buf[: len(self._buf) - len(stripped)]
            if self._buf.startswith(b"> ") or self._buf == b">":
                if self._buf == b">":
                    return  # the space may still come
                del self._buf[:2]
                self._events.append(Prompt())
                continue
            end = min((i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0),
                      default=-1)  # fmt: skip
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._events.append(Discarded(self._buf[:200].hex(), "line too long"))
                    self._buf.clear()
                return
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._line(raw.decode("latin-1").strip())

    def _line(self, text: str) -> None:
        if not text:
            return
        if self._cds is not None:
            self._events.append(Unsolicited(self._cds, pdu=text))
            self._cds = None
            return
        if text.upper().startswith("AT"):
            return  # echo
        final = _FINAL.match(text)
        if final:
            self._events.append(
                Final(
                    ok=text == "OK",
                    text=text,
                    cms=_code(final.group(2)),
                    cme=_code(final.group(3)),
                )
            )
        elif text.startswith("+CDS:"):
            self._cds = text
        elif text.startswith(_UNSOLICITED):
            self._events.append(Unsolicited(text))
        else:
            self._events.append(Line(text))

    def events(self) -> list[AtEvent]:
        """What is complete, in order (drained)."""
        out, self._events = self._events, []
        return out


# -- the network's time -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkTime:
    """What ``AT+CCLK?`` said, in UTC.

    Attributes:
        utc_ns: The time, nanoseconds since the epoch.
        zone_quarters: The zone it was given in, quarters of an hour east of UTC.
    """

    utc_ns: int
    zone_quarters: int


_CCLK = re.compile(
    r'\+CCLK: ?"([0-9]{2})/([0-9]{2})/([0-9]{2}),'  # yy/MM/dd
    r'([0-9]{2}):([0-9]{2}):([0-9]{2})([+-])([0-9]{1,2})"'  # hh:mm:ss±zz
)


def decode_cclk(line: str) -> NetworkTime | Discarded:
    """Read a ``+CCLK:`` line (the module docstring); never raises."""
    shown = line[:80]
    found = _CCLK.fullmatch(line.strip())
    if found is None:
        return Discarded(shown, "not a +CCLK time with its zone")
    yy, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    quarters = int(found[8]) * (-1 if found[7] == "-" else 1)
    if abs(quarters) > 14 * 4:
        return Discarded(shown, "zone out of range")
    year = 1900 + yy if yy >= 80 else 2000 + yy
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return Discarded(shown, "no such date or time")
    utc = int(local.timestamp()) - quarters * 900
    return NetworkTime(utc_ns=utc * 1_000_000_000, zone_quarters=quarters)
