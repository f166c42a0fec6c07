"""A GSM/LTE USB modem on a pseudo-terminal: the AT commands an SMS sender uses (27.005).

What it answers, as a Quectel or SIMCom modem does in PDU mode:

    AT, ATE0/ATE1, AT+CMEE=n, AT+CMGF=0, AT+CNMI=..., AT+CSCS=..  OK
    AT+CPIN?                  +CPIN: SIM PIN | +CPIN: READY
    AT+CPIN="1234"            OK, or +CME ERROR: 16 (wrong PIN)
    AT+CSQ                    +CSQ: <rssi>,99
    AT+CREG?                  +CREG: 0,<1 home | 5 roaming | 2 searching>
    AT+CMGS=<len> CR          "> ", then the PDU in hex and Ctrl-Z:
                              +CMGS: <mr> OK, +CMS ERROR: <n>, or nothing while slow
    AT+CMGR=<i>               +CMGR: <stat>,,<len> / <pdu> / OK
    AT+CMGD=<i>               OK
    AT+CMGL=4                 every stored message, as +CMGR does
    AT+CCLK?                  +CCLK: "yy/MM/dd,hh:mm:ss±zz" (local time, zz in quarter
                              hours): the network's time, or the power-up default
                              ``80/01/06,...`` while ``network_clock`` is None

and on its own ``+CMTI: "SM",<i>`` when a text arrives (``deliver``) and
``+CDS: <len>`` with a status-report PDU after each message that asked for one.

The simulator builds the PDUs it hands out (SMS-DELIVER, SMS-STATUS-REPORT) itself and
never decodes what it is sent beyond the octets it needs (the first octet and TP-MR):
``submitted`` keeps each SMS-SUBMIT PDU as received, for the test to decode with an
implementation of its own. Replies are UCS-2, or GSM 7-bit when they hold only ASCII
letters, digits and spaces (the same code points in both alphabets).

Fault knobs: ``pin`` (a SIM that asks for one), ``registered`` (False: no network,
``+CMS ERROR: 331``), ``fail_next`` (CMS codes for the next sends), ``reply_delay_s``
(a slow modem), ``silent_sends`` (no answer to the next sends at all),
``network_clock`` (None: the network sent no time; a function: the time it did send)
and ``zone_quarters``; unplug and
replug are ``PtyPort`` methods (``port``). A replug is a power cycle: echo on, PIN again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from coffee_telemetry.simulators.pty import PtyPort

__all__ = [
    "ModemSim",
    "Submitted",
    "encode_cclk",
    "encode_deliver",
    "encode_status_report",
    "open_modem_sim",
]

_CTRL_Z = 0x1A
_ESC = 0x1B
_TIMESTAMP = "62113001144100"  # 2026-11-30 10:41:14, GMT-3, semi-octets swapped


def _swap(digits: str) -> str:
    padded = digits + ("F" if len(digits) % 2 else "")
    return "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))


def _address(number: str) -> str:
    digits = number.lstrip("+")
    toa = "91" if number.startswith("+") else "81"
    return f"{len(digits):02X}{toa}{_swap(digits)}"


def _septets_ascii(text: str) -> bytes:
    # Letters, digits and space have the same codes in GSM 7-bit as in ASCII.
    acc = 0
    for i, ch in enumerate(text):
        acc |= ord(ch) << (7 * i)
    return acc.to_bytes((7 * len(text) + 7) // 8, "little")


def encode_deliver(sender: str, text: str) -> str:
    """An SMS-DELIVER PDU (hex, with an empty SMSC) of ``text`` from ``sender``."""
    if re.fullmatch(r"[A-Za-z0-9 ]*", text):
        dcs, udl, ud = "00", len(text), _septets_ascii(text)
    else:
        ud = text.encode("utf-16-be")
        dcs, udl = "08", len(ud)
    return f"0004{_address(sender)}00{dcs}{_TIMESTAMP}{udl:02X}{ud.hex().upper()}"


def encode_status_report(reference: int, recipient: str, status: int = 0) -> str:
    """An SMS-STATUS-REPORT PDU (hex, empty SMSC) for message ``reference``."""
    return f"0006{reference:02X}{_address(recipient)}{_TIMESTAMP}{_TIMESTAMP}{status:02X}"


#: What a Quectel modem's clock says after power-up, before the network's time.
CLOCK_DEFAULT = "80/01/06,00:01:31+00"


def encode_cclk(when: datetime, zone_quarters: int) -> str:
    """The ``+CCLK:`` line for ``when`` shown in the zone ``zone_quarters`` (27.007 §8.15)."""
    local = when.astimezone(UTC) + timedelta(minutes=15 * zone_quarters)
    sign = "-" if zone_quarters < 0 else "+"
    return f'+CCLK: "{local:%y/%m/%d,%H:%M:%S}{sign}{abs(zone_quarters):02d}"'


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Submitted:
    """An SMS-SUBMIT the modem took.

    Attributes:
        pdu: As the agent typed it (hex, SMSC first).
        length: The ``AT+CMGS`` length.
        reference: The TP-MR the modem answered with.
    """

    pdu: str
    length: int
    reference: int


class ModemSim:
    """The modem's side of the AT conversation on a ``PtyPort`` (module docstring)."""

    def __init__(self, port: PtyPort, *, pin: str | None = None, number: str = "+5535988880000"):
        self.port = port
        self.pin = pin
        self.number = number
        self.registered = True
        self.csq = 21
        self.fail_next: list[int] = []
        self.silent_sends = 0
        self.reply_delay_s = 0.0
        self.submitted: list[Submitted] = []
        self.commands: list[str] = []
        self.storage: dict[int, str] = {}
        self.network_clock: Callable[[], datetime] | None = _now
        self.zone_quarters = -12  # Brasília, UTC-3
        self._unlocked = pin is None
        self._echo = True
        self._mr = 0
        self._index = 0
        self._opens = port.opens

    # -- what the test does ------------------------------------------------------------

    def deliver(self, sender: str, text: str) -> int:
        """A text from ``sender`` arrives: stored, and ``+CMTI`` said. Returns its index."""
        self._index += 1
        self.storage[self._index] = encode_deliver(sender, text)
        self._say(f'+CMTI: "SM",{self._index}')
        return self._index

    # -- the conversation --------------------------------------------------------------

    def _say(self, *lines: str) -> None:
        self.port.write(b"".join(f"\r\n{line}\r\n".encode("latin-1") for line in lines))

    async def run(self) -> None:
        """Answer commands until cancelled; an unplugged port waits for the replug."""
        buf = bytearray()
        pending_len: int | None = None
        while True:
            try:
                data = await self.port.read()
            except OSError:
                buf.clear()
                pending_len = None
                await self._wait_replug()
                continue
            if self.port.opens != self._opens:  # replugged: a power cycle
                self._opens = self.port.opens
                self._echo, self._unlocked = True, self.pin is None
            buf += data
            while True:
                if pending_len is not None:
                    end = buf.find(bytes([_CTRL_Z]))
                    cancel = buf.find(bytes([_ESC]))
                    if cancel >= 0 and (end < 0 or cancel < end):
                        del buf[: cancel + 1]
                        pending_len = None
                        self._say("OK")
                        continue
                    if end < 0:
                        break
                    pdu = buf[:end].decode("latin-1").strip()
                    del buf[: end + 1]
                    length, pending_len = pending_len, None
                    await self._submit(pdu, length)
                    continue
                end = buf.find(b"\r")
                if end < 0:
                    break
                line = buf[:end].decode("latin-1").strip()
                del buf[: end + 1]
                if not line:
                    continue
                if self._echo:
                    self.port.write(line.encode("latin-1") + b"\r")
                pending_len = await self._command(line)

    async def _wait_replug(self) -> None:
        # PtyPort has no event for a replug (the test calls open()); poll it, as a
        # modem's firmware polls its USB link.
        while not self.port.is_open:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def _command(self, line: str) -> int | None:
        self.commands.append(line)
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        cmd = line.upper()
        if cmd in ("AT", "AT+CMGF=0", 'AT+CSCS="GSM"') or cmd.startswith(
            ("AT+CMEE=", "AT+CNMI=", "AT+CREG=", "AT+CSMP=")
        ):
            self._say("OK")
        elif cmd in ("ATE0", "ATE1"):
            self._echo = cmd == "ATE1"
            self._say("OK")
        elif cmd == "AT+CPIN?":
            self._say("+CPIN: READY" if self._unlocked else "+CPIN: SIM PIN", "OK")
        elif cmd.startswith("AT+CPIN="):
            if line.split("=", 1)[1].strip('"') == self.pin:
                self._unlocked = True
                self._say("OK")
            else:
                self._say("+CME ERROR: 16")
        elif not self._unlocked:
            self._say("+CME ERROR: 11")  # SIM PIN required
        elif cmd == "AT+CSQ":
            self._say(f"+CSQ: {self.csq if self.registered else 99},99", "OK")
        elif cmd == "AT+CCLK?":
            if self.network_clock is None:
                self._say(f'+CCLK: "{CLOCK_DEFAULT}"', "OK")
            else:
                self._say(encode_cclk(self.network_clock(), self.zone_quarters), "OK")
        elif cmd == "AT+CREG?":
            self._say(f"+CREG: 0,{1 if self.registered else 2}", "OK")
        elif cmd.startswith("AT+CMGS="):
            try:
                length = int(cmd.split("=", 1)[1])
            except ValueError:
                self._say("+CMS ERROR: 304")
                return None
            self.port.write(b"\r\n> ")
            return length
        elif cmd.startswith("AT+CMGR="):
            self._read(int(cmd.split("=", 1)[1]))
        elif cmd.startswith("AT+CMGL"):
            for index in sorted(self.storage):
                pdu = self.storage[index]
                self._say(f"+CMGL: {index},0,,{len(pdu) // 2 - 1}", pdu)
            self._say("OK")
        elif cmd.startswith("AT+CMGD="):
            self.storage.pop(int(cmd.split("=", 1)[1].split(",")[0]), None)
            self._say("OK")
        else:
            self._say("ERROR")
        return None

    def _read(self, index: int) -> None:
        pdu = self.storage.get(index)
        if pdu is None:
            self._say("+CMS ERROR: 321")  # invalid memory index
            return
        self._say(f"+CMGR: 0,,{len(pdu) // 2 - 1}", pdu, "OK")

    async def _submit(self, pdu: str, length: int) -> None:
        if self.silent_sends:
            self.silent_sends -= 1
            return
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        try:
            raw = bytes.fromhex(pdu)
            tpdu = raw[raw[0] + 1 :]
        except (ValueError, IndexError):
            self._say("+CMS ERROR: 304")
            return
        if len(tpdu) != length:
            self._say("+CMS ERROR: 304")
            return
        if not self.registered:
            self._say("+CMS ERROR: 331")  # no network service
            return
        if self.fail_next:
            self._say(f"+CMS ERROR: {self.fail_next.pop(0)}")
            return
        self._mr = (self._mr + 1) % 256
        self.submitted.append(Submitted(pdu=pdu, length=length, reference=self._mr))
        self._say(f"+CMGS: {self._mr}", "OK")
        if tpdu and tpdu[0] & 0x20:  # a status report was asked for
            digits = tpdu[2]
            address = tpdu[4 : 4 + (digits + 1) // 2].hex().upper()
            number = "".join(address[i + 1] + address[i] for i in range(0, len(address), 2))
            report = encode_status_report(self._mr, "+" + number[:digits])
            self._say(f"+CDS: {len(report) // 2 - 1}", report)


@contextlib.contextmanager
def open_modem_sim(*, link: str | None = None, pin: str | None = None) -> Iterator[ModemSim]:
    """A modem simulator on a fresh ``PtyPort`` (start ``run()`` yourself)."""
    port = PtyPort(link=link)
    port.open()
    try:
        yield ModemSim(port, pin=pin)
    finally:
        port.close()
