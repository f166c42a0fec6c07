"""SMS through a GSM/LTE USB modem on its serial AT port (pyserial), in PDU mode.

Theory of operation
-------------------
When the internet link is down, SMS is what still reaches a phone: the modem talks to
the mobile network on its own. ``ModemChannel.run_loop`` keeps the modem's AT port
open (reopening with back-off after an unplug, like a meter's port) and owns it:

1. **Start-up.** ``AT`` until it answers, ``ATE0`` (no echo), ``AT+CMEE=1`` (numeric
   errors), ``AT+CPIN?`` and, if the SIM asks, its PIN from ``pin_file`` — once: a
   refused PIN is never tried again by itself (three wrong ones lock the SIM), it is
   reported in health until the agent restarts. Then ``AT+CMGF=0`` (PDU mode),
   ``AT+CNMI=2,1,0,1,0`` (say ``+CMTI`` when a text arrives, ``+CDS`` for delivery
   reports) and ``AT+CMGL=4``: texts that arrived while the agent was down are read too.
2. **Health.** Every ``health_interval_s``: ``AT+CSQ`` (signal, 0-31, 99 unknown) and
   ``AT+CREG?`` (1 home, 5 roaming; 0, 2, 3 not registered).
3. **Answers.** ``+CMTI`` → ``AT+CMGR`` → the SMS-DELIVER is handed to ``on_reply``
   (the notifier looks for an acknowledgement code from a contact's number) →
   ``AT+CMGD``. ``+CDS`` → a delivery report, counted and logged.
4. **Sending** (``send``, called by the notifier's SMS loop): each PDU of the message
   (``gsm.encode_submit``) is ``AT+CMGS=<length>``, the ``> `` prompt, the PDU and
   Ctrl-Z, then ``+CMGS: <mr>`` and ``OK``, or ``+CMS ERROR: <n>``.

One command is on the line at a time (a lock); a command's answer is every line up to
its final result, within ``reply_timeout_s`` (``send_timeout_s`` for a message: the
network answers ``+CMGS``). The reader task feeds ``gsm.AtParser`` and sorts what it
says: unsolicited lines to the serve loop, the rest to the command in progress.

What a send's failure means:

* a ``+CMS ERROR`` in ``PERMANENT_CMS`` (unassigned number, rejected, barred, a PDU the
  network refuses) is ``Refused``: a dead letter;
* any other ``+CMS ERROR`` (331 no network, 332 network timeout, 38 network out of
  order, 42 congestion, 500 unknown), no prompt or no answer in time, a modem that is
  unplugged or not started is ``Retry``. A long message that failed after some of its
  parts went is sent again whole, with the same concatenation reference, so a phone
  that got the first parts reassembles the message from either try.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import serial
import serial_asyncio_fast

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.notify.config import SmsConfig
from coffee_telemetry.agent.notify.gsm import (
    AtParser,
    Discarded,
    Final,
    Incoming,
    Line,
    NetworkTime,
    Prompt,
    StatusReport,
    Unsolicited,
    decode_cclk,
    decode_pdu,
    encode_submit,
)
from coffee_telemetry.agent.notify.model import Message, Outcome, Refused, Retry, Sent

__all__ = ["PERMANENT_CMS", "ModemChannel", "ModemError"]

log = logging.getLogger(__name__)

#: ``+CMS ERROR`` codes that will not change with a retry (TS 24.011 §E.2, 27.005 §3.2.5).
PERMANENT_CMS = frozenset({1, 8, 10, 21, 27, 28, 29, 30, 50, 96, 304, 305})
#: How many times ``AT`` is tried at start before the modem counts as not answering.
SYNC_TRIES = 5
_CTRL_Z, _ESC = b"\x1a", b"\x1b"
_PORT_ERRORS = (serial.SerialException, OSError)

ReplyHandler = Callable[[str, str], Awaitable[object]]


class ModemError(Exception):
    """The modem is gone, silent, or refused to start (the port is reopened)."""


@dataclass(slots=True)
class _Answer:
    lines: list[str]
    final: Final


@dataclass(slots=True)
class ModemHealth:
    """What health shows about the modem."""

    connected: bool = False
    csq: int | None = None
    registration: int | None = None
    pin_refused: bool = False
    last_error: str | None = None
    delivered: int = 0
    undelivered: int = 0
    replies: int = 0
    opens: int = 0
    since_ns: int | None = None
    references: dict[int, str] = field(default_factory=dict)


class _Link:
    """An open AT port: the reader task and what it sorted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = AtParser()
        self.replies: asyncio.Queue[Line | Prompt | Final | None] = asyncio.Queue()
        self.unsolicited: asyncio.Queue[Unsolicited | None] = asyncio.Queue()
        self.gone: str | None = None

    async def read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(4096)
                if not data:
                    raise ModemError("port closed (modem unplugged?)")
                self.parser.receive_data(data)
                for event in self.parser.events():
                    if isinstance(event, Unsolicited):
                        self.unsolicited.put_nowait(event)
                    elif isinstance(event, Discarded):
                        log.warning("Modem: discarded %s", event.reason)
                    else:
                        self.replies.put_nowait(event)
        except (ModemError, *_PORT_ERRORS) as exc:
            self.gone = str(exc) or type(exc).__name__
        finally:
            self.replies.put_nowait(None)
            self.unsolicited.put_nowait(None)

    async def write(self, data: bytes) -> None:
        if self.gone is not None:
            raise ModemError(self.gone)
        try:
            self.writer.write(data)
            await self.writer.drain()
        except _PORT_ERRORS as exc:
            raise ModemError(f"write failed: {exc}") from exc

    async def next_reply(self) -> Line | Prompt | Final:
        event = await self.replies.get()
        if event is None:
            self.replies.put_nowait(None)  # keep telling whoever asks next
            raise ModemError(self.gone or "modem gone")
        return event

    def close(self) -> None:
        with contextlib.suppress(*_PORT_ERRORS):
            self.writer.close()


class ModemChannel:
    """SMS through a modem (``[notify.sms]``); run ``run_loop`` beside the notifier."""

    def __init__(
        self,
        cfg: SmsConfig,
        *,
        on_reply: ReplyHandler | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._cfg = cfg
        self.on_reply = on_reply
        self._clock_ns = clock_ns
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self.status = ModemHealth()

    @property
    def name(self) -> str:
        """``sms``."""
        return "sms"

    def health(self) -> dict[str, object]:
        """Port, connection, signal, registration, PIN, delivery reports."""
        s = self.status
        return {
            "port": self._cfg.port,
            "connected": s.connected,
            "signal_csq": s.csq,
            "registration": s.registration,
            "registered": s.registration in (1, 5),
            "pin_refused": s.pin_refused,
            "modem_error": s.last_error,
            "delivered": s.delivered,
            "undelivered": s.undelivered,
            "replies": s.replies,
        }

    # -- the port's life ---------------------------------------------------------------

    async def run_loop(self) -> None:
        """Keep the modem open and listened to; reopen with back-off when it goes."""
        backoff = Backoff(initial_s=1.0, maximum_s=30.0)
        while True:
            try:
                async with self._open() as link:
                    await self._start(link)
                    backoff.reset()
                    await self._serve(link)
            except ModemError as exc:
                self.status.last_error = str(exc)
                delay = backoff.next_delay()
                log.warning("Modem %s: %s; reopening in %.1f s", self._cfg.port, exc, delay)
                await asyncio.sleep(delay)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[_Link]:
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=self._cfg.port, baudrate=self._cfg.baudrate, exclusive=True
            )
        except (*_PORT_ERRORS, ValueError) as exc:
            raise ModemError(f"cannot open: {exc}") from exc
        link = _Link(reader, writer)
        reading = asyncio.create_task(link.read_loop(), name="modem-reader")
        self.status.opens += 1
        try:
            yield link
        finally:
            self._link = None
            self.status.connected = False
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            link.close()

    async def _start(self, link: _Link) -> None:
        for _ in range(SYNC_TRIES):
            try:
                await self._command(link, "AT", timeout_s=1.0)
                break
            except ModemError:
                if link.gone is not None:
                    raise
                continue
        else:
            raise ModemError("no answer to AT")
        await self._expect_ok(link, "ATE0")
        await self._expect_ok(link, "AT+CMEE=1")
        answer = await self._command(link, "AT+CPIN?")
        state = next((ln.split(":", 1)[1].strip() for ln in answer.lines if "+CPIN" in ln), "")
        if state == "SIM PIN":
            pin = self._cfg.secret
            if pin is None:
                raise ModemError("the SIM asks for a PIN: set [notify.sms] pin_file")
            if self.status.pin_refused:
                raise ModemError("the SIM refused its PIN; not trying again (check pin_file)")
            if not (await self._command(link, f'AT+CPIN="{pin}"')).final.ok:
                self.status.pin_refused = True
                raise ModemError("the SIM refused its PIN; not trying again (check pin_file)")
            await asyncio.sleep(0.5)  # the SIM reads its files after the PIN
        elif state != "READY" and answer.final.ok:
            raise ModemError(f"the SIM is not ready: {state or answer.final.text}")
        await self._expect_ok(link, "AT+CMGF=0")
        await self._expect_ok(link, "AT+CNMI=2,1,0,1,0")
        self._link = link
        self.status.connected = True
        self.status.last_error = None
        await self._read_health(link)
        log.info(
            "Modem on %s ready: signal %s, registration %s",
            self._cfg.port,
            self.status.csq,
            self.status.registration,
        )
        stored = await self._command(link, "AT+CMGL=4")
        await self._take_stored(link, stored.lines)

    async def _serve(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        next_health = loop.time() + self._cfg.health_interval_s
        while True:
            try:
                async with asyncio.timeout(max(0.0, next_health - loop.time())):
                    event = await link.unsolicited.get()
            except TimeoutError:
                await self._read_health(link)
                next_health = loop.time() + self._cfg.health_interval_s
                continue
            if event is None:
                raise ModemError(link.gone or "modem gone")
            await self._unsolicited(link, event)

    async def _unsolicited(self, link: _Link, event: Unsolicited) -> None:
        if event.text.startswith("+CMTI:"):
            index = event.text.rsplit(",", 1)[-1].strip()
            if index.isdigit():
                answer = await self._command(link, f"AT+CMGR={index}")
                await self._take_stored(link, [f"+CMGL: {index}", *answer.lines[1:]])
        elif event.text.startswith("+CDS:") and event.pdu is not None:
            report = decode_pdu(event.pdu)
            if isinstance(report, StatusReport):
                what = self.status.references.pop(report.reference, "?")
                if report.delivered:
                    self.status.delivered += 1
                    log.info("SMS %s (ref %d) delivered", what, report.reference)
                elif report.status >= 0x40:
                    self.status.undelivered += 1
                    log.warning(
                        "SMS %s (ref %d) not delivered: status 0x%02X",
                        what,
                        report.reference,
                        report.status,
                    )

    async def _take_stored(self, link: _Link, lines: list[str]) -> None:
        """Hand each ``+CMGL: <index>`` / PDU pair to ``on_reply`` and delete it."""
        for header, pdu in itertools.pairwise(lines):
            match = re.match(r"\+CMG[LR]: (\d+)", header)
            if match is None:
                continue
            message = decode_pdu(pdu)
            if isinstance(message, Incoming):
                self.status.replies += 1
                log.info("SMS from %s: %r", message.sender, message.text[:160])
                if self.on_reply is not None:
                    try:
                        await self.on_reply(message.sender, message.text)
                    except Exception as exc:
                        log.error("SMS reply handler failed", exc_info=exc)
            await self._command(link, f"AT+CMGD={match.group(1)}")

    async def _read_health(self, link: _Link) -> None:
        csq = await self._command(link, "AT+CSQ")
        for line in csq.lines:
            if m := re.match(r"\+CSQ: (\d+),", line):
                self.status.csq = int(m.group(1))
        reg = await self._command(link, "AT+CREG?")
        for line in reg.lines:
            if m := re.match(r"\+CREG: \d+,(\d+)", line):
                self.status.registration = int(m.group(1))

    # -- commands ----------------------------------------------------------------------

    async def _command(self, link: _Link, text: str, *, timeout_s: float | None = None) -> _Answer:
        async with self._lock:
            return await self._command_locked(link, text, timeout_s=timeout_s)

    async def _command_locked(
        self, link: _Link, text: str, *, timeout_s: float | None = None
    ) -> _Answer:
        _drain(link)
        await link.write(text.encode("ascii") + b"\r")
        lines: list[str] = []
        try:
            async with asyncio.timeout(timeout_s or self._cfg.reply_timeout_s):
                while True:
                    event = await link.next_reply()
                    if isinstance(event, Final):
                        return _Answer(lines, event)
                    if isinstance(event, Line):
                        lines.append(event.text)
        except TimeoutError:
            raise ModemError(f"no answer to {text.split('=')[0]}") from None

    async def _expect_ok(self, link: _Link, text: str) -> None:
        answer = await self._command(link, text)
        if not answer.final.ok:
            raise ModemError(f"{text}: {answer.final.text}")

    async def send(self, message: Message) -> Outcome:
        """Send ``message.body`` to ``message.address`` (all its parts)."""
        link = self._link
        if link is None:
            return Retry(f"modem on {self._cfg.port} not connected: {self.status.last_error}")
        reference = hashlib.sha256(message.key.encode()).digest()[0]
        try:
            pdus = encode_submit(
                message.address,
                message.body,
                reference=reference,
                status_report=self._cfg.delivery_reports,
            )
        except ValueError as exc:
            return Refused(str(exc))
        try:
            for n, (length, pdu) in enumerate(pdus, start=1):
                async with self._lock:
                    outcome = await self._send_pdu(link, length, pdu)
                if not isinstance(outcome, Sent):
                    if len(pdus) > 1:
                        log.warning("SMS part %d of %d failed: %s", n, len(pdus), outcome)
                    return outcome
                self.status.references[int(outcome.detail)] = message.contact
                if len(self.status.references) > 256:
                    self.status.references.pop(next(iter(self.status.references)))
        except ModemError as exc:
            return Retry(f"modem: {exc}")
        return Sent(f"{len(pdus)} part(s)")

    async def network_time(self) -> tuple[NetworkTime | Discarded, int] | None:
        """Ask the modem for the network's time (``AT+CCLK?``, ``gsm.decode_cclk``).

        The port stays this channel's: the question takes the lock every command and
        every part of a message takes, so it never comes between an ``AT+CMGS`` and its
        PDU, and nothing else ever opens the port.

        Returns:
            What the modem said and the monotonic time its answer arrived; None while
            the modem is not connected or when it did not answer.
        """
        link = self._link
        if link is None:
            return None
        try:
            answer = await self._command(link, "AT+CCLK?")
        except ModemError:
            return None
        arrived = time.monotonic_ns()
        if not answer.final.ok:
            return Discarded(answer.final.text, "the modem refused AT+CCLK?"), arrived
        line = next((ln for ln in answer.lines if ln.startswith("+CCLK")), None)
        if line is None:
            return Discarded(" ".join(answer.lines)[:80], "no +CCLK line"), arrived
        return decode_cclk(line), arrived

    async def _send_pdu(self, link: _Link, length: int, pdu: str) -> Outcome:
        _drain(link)
        await link.write(f"AT+CMGS={length}\r".encode("ascii"))
        try:
            async with asyncio.timeout(self._cfg.reply_timeout_s):
                event = await link.next_reply()
                while isinstance(event, Line):
                    event = await link.next_reply()
        except TimeoutError:
            await link.write(_ESC)
            return Retry("modem gave no prompt for the message")
        if isinstance(event, Final):
            return _cms_outcome(event)
        await link.write(pdu.encode("ascii") + _CTRL_Z)
        reference: int | None = None
        try:
            async with asyncio.timeout(self._cfg.send_timeout_s):
                while True:
                    event = await link.next_reply()
                    if isinstance(event, Line) and event.text.startswith("+CMGS:"):
                        ref = event.text.split(":", 1)[1].strip().split(",")[0]
                        reference = int(ref) if ref.isdigit() else 0
                    elif isinstance(event, Final):
                        break
        except TimeoutError:
            return Retry(f"no answer from the network within {self._cfg.send_timeout_s:g} s")
        if event.ok:
            return Sent(str(reference or 0))
        return _cms_outcome(event)


def _drain(link: _Link) -> None:
    # Answers nobody waited for (a command that timed out) must not be taken for ours.
    while not link.replies.empty():
        if link.replies.get_nowait() is None:
            link.replies.put_nowait(None)
            return


def _cms_outcome(final: Final) -> Outcome:
    if final.cms is not None and final.cms in PERMANENT_CMS:
        return Refused(f"modem: {final.text}", final.cms)
    return Retry(f"modem: {final.text}")
