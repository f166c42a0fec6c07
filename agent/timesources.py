"""Time sources the agent asks over a wire: a GPS receiver and the GSM modem.

Theory of operation
-------------------
Each source is a loop, run as an interface (restarted if it fails), that reads a time
and offers it to the agent's clock (``TimeTarget.offer``: the time service, which asks
``TimeKeeper.offer`` whether to believe it, and re-stamps what waited for it). A loop
never sets the clock itself, and it tells health how it is (``note``) when it has no
time to offer.

* ``gps_loop`` holds the receiver's serial port (``[agent.time_gps]``, opened
  exclusively, reopened with back-off when it goes) and feeds every byte to
  ``drivers.nmea.NmeaParser``. The first time with a valid fix is offered at once,
  then one every ``interval_s``, stamped with the monotonic time its bytes arrived.
  No fix (RMC ``V``), no bytes for ``SILENT_S``, bytes but no sentence for as long (a
  wrong baud rate) or a port that will not open is shown as ``unavailable`` with the
  reason.
* ``modem_loop`` shares the notifications modem (``[notify.sms]``): it never opens the
  port, but asks the SMS channel, which owns it, to put ``AT+CCLK?`` between its own
  commands (``ModemChannel.network_time``: the same lock as an SMS being sent). A
  modem that has the network's time (NITZ) answers with it; one that does not answers
  its power-up default (1980, 2004), which the keeper refuses as before the release
  date. It asks every ``RETRY_S`` until a time is believed, then every ``interval_s``
  (4 min: within the five minutes a quiet source keeps counting as answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import serial
import serial_asyncio_fast

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import TimeGpsConfig
from coffee_telemetry.agent.notify.gsm import Discarded as AtDiscarded
from coffee_telemetry.agent.notify.gsm import NetworkTime
from coffee_telemetry.agent.timekeeping import Adjustment
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.nmea import NmeaParser

__all__ = [
    "RETRY_S",
    "SILENT_S",
    "NetworkClock",
    "TimeControl",
    "TimeTarget",
    "gps_loop",
    "modem_loop",
]

log = logging.getLogger(__name__)

#: A receiver that sends nothing for this long is shown as unavailable.
SILENT_S = 10.0
#: How often the modem is asked while it has no believable time.
RETRY_S = 5.0
_PORT_ERRORS = (serial.SerialException, OSError, ValueError)


class TimeTarget(Protocol):
    """Where a source's times go (the agent's time service)."""

    async def offer(self, source: str, wall_ns: int, mono_ns: int) -> bool:
        """A time the source read, and the monotonic time its bytes arrived.

        Returns whether it was believed (it set the time, or agrees with it).
        """

    def note(self, source: str, state: str, detail: str) -> None:
        """How the source is, when it has no time to offer."""


class TimeControl(Protocol):
    """The agent's clock as the dashboard sees it (the time service)."""

    def time_doc(self) -> dict[str, object]:
        """Quality, source, each source's state, and why a person may not set it."""

    async def set_by_user(self, user: str, wall_ns: int) -> Adjustment:
        """A person set the time.

        Raises:
            ValueError: Refused (the message says why).
        """


class NetworkClock(Protocol):
    """The modem, as the time source sees it (``ModemChannel``)."""

    async def network_time(self) -> tuple[NetworkTime | AtDiscarded, int] | None:
        """``AT+CCLK?``'s answer and when it arrived; None while not connected."""


async def gps_loop(
    cfg: TimeGpsConfig,
    target: TimeTarget,
    *,
    mono_ns: Callable[[], int] = time.monotonic_ns,
    silent_s: float = SILENT_S,
) -> None:
    """Read the receiver's time and offer it, until cancelled (module docstring).

    Args:
        cfg: The receiver's port and speed, and how often its time is offered.
        target: The time service.
        mono_ns: The monotonic clock the target's keeper uses.
        silent_s: How long without bytes, or without a sentence, before it is unavailable.
    """
    backoff = Backoff(initial_s=1.0, maximum_s=30.0)
    while True:
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=cfg.port, baudrate=cfg.baud, exclusive=True
            )
        except _PORT_ERRORS as exc:
            target.note("gps", "unavailable", f"cannot open {cfg.port}: {exc}")
            await asyncio.sleep(backoff.next_delay())
            continue
        log.info("GPS receiver on %s open at %d baud", cfg.port, cfg.baud)
        try:
            await _read_gps(reader, cfg, target, mono_ns, backoff, silent_s)
        except _PORT_ERRORS as exc:
            target.note("gps", "unavailable", f"{cfg.port}: {exc}")
        finally:
            with contextlib.suppress(*_PORT_ERRORS):
                writer.close()
        await asyncio.sleep(backoff.next_delay())


async def _read_gps(
    reader: asyncio.StreamReader,
    cfg: TimeGpsConfig,
    target: TimeTarget,
    mono_ns: Callable[[], int],
    backoff: Backoff,
    silent_s: float,
) -> None:
    parser = NmeaParser()
    next_offer: int | None = None  # monotonic ns; None: offer the first time at once
    interval_ns = int(cfg.interval_s * 1e9)
    silent_ns = int(silent_s * 1e9)
    heard = mono_ns()  # the last well-formed sentence (or the port's opening)
    while True:
        try:
            async with asyncio.timeout(silent_s):
                data = await reader.read(1024)
        except TimeoutError:
            target.note("gps", "unavailable", f"no data from {cfg.port} for {silent_s:g} s")
            continue
        if not data:
            raise OSError("port closed (receiver unplugged?)")
        arrived = mono_ns()
        sentences = parser.frames_ok + parser.sentences_skipped
        parser.receive_data(data)
        if parser.frames_ok + parser.sentences_skipped > sentences:
            heard = arrived
        for event in parser.events():
            if isinstance(event, Discarded):
                if event.reason == "no-fix":
                    heard = arrived
                    target.note("gps", "unavailable", "no fix (no satellites in view)")
                continue
            backoff.reset()
            if next_offer is None or arrived >= next_offer:
                next_offer = arrived + interval_ns
                await target.offer("gps", event.utc_ns, arrived)
        if arrived - heard > silent_ns:
            target.note(
                "gps", "unavailable", f"bytes but no NMEA sentence for {silent_s:g} s (baud rate?)"
            )


async def modem_loop(
    modem: NetworkClock,
    target: TimeTarget,
    *,
    interval_s: float = 240.0,
    retry_s: float = RETRY_S,
) -> None:
    """Ask the modem for the network's time and offer it, until cancelled."""
    while True:
        answer = await modem.network_time()
        delay = retry_s
        if answer is None:
            target.note("modem", "unavailable", "modem not connected")
        else:
            said, arrived = answer
            if isinstance(said, AtDiscarded):
                target.note("modem", "unavailable", f"{said.reason}: {said.data!r}")
            elif await target.offer("modem", said.utc_ns, arrived):
                delay = interval_s
        await asyncio.sleep(delay)
