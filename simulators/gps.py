"""A GPS receiver on a pseudo-terminal: NMEA 0183 bursts, once a second.

Each burst is what a u-blox or a cheap multi-constellation receiver prints: ``RMC``
(status ``A`` with a fix, ``V`` without), ``GGA``, ``GSV`` and, with ``zda``, a ``ZDA``,
all built by ``drivers.nmea``'s encoders. Before a fix a receiver prints the time of
its own clock, which may be anything: here ``no_fix_clock`` (by default 1980-01-06, a
cold receiver's GPS epoch).

Fault knobs, live: ``fix`` (False: no satellites, RMC ``V``), ``week_rollover`` (the
date 1024 weeks early, as receivers with the roll-over bug print), ``garbage`` (a
burst of random bytes before each burst), ``bad_checksum`` (every RMC's checksum
wrong), ``silent`` (nothing). ``offset_s`` moves the time it states. ``sent`` keeps
the times stated with a valid fix. Unplug and replug are ``PtyPort`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from coffee_telemetry.drivers.nmea import encode_rmc, encode_sentence, encode_zda
from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["GpsSim", "open_gps_sim"]

#: What a cold receiver's clock says before it has heard a satellite.
NO_FIX_CLOCK = datetime(1980, 1, 6, tzinfo=UTC)
#: 1024 GPS weeks: how far back a receiver with the roll-over bug dates things.
ROLLOVER = timedelta(weeks=1024)


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


class GpsSim:
    """A receiver's output on ``port`` (module docstring).

    Args:
        port: The open ``PtyPort``.
        clock: The true time (the test's, or the wall clock).
        talker: ``GP`` (GPS only) or ``GN`` (several constellations).
    """

    def __init__(
        self, port: PtyPort, *, clock: Callable[[], datetime] = _now, talker: str = "GP"
    ) -> None:
        self.port = port
        self.clock = clock
        self.talker = talker
        self.fix = True
        self.zda = True
        self.week_rollover = False
        self.garbage = False
        self.bad_checksum = False
        self.silent = False
        self.offset_s = 0.0
        self.sent: list[datetime] = []
        self._since_start = 0.0
        self._rng = random.Random(7)

    def stated(self) -> datetime:
        """The time the next burst states (the fix's second)."""
        if not self.fix:
            return NO_FIX_CLOCK + timedelta(seconds=self._since_start)
        when = self.clock() + timedelta(seconds=self.offset_s)
        if self.week_rollover:
            when -= ROLLOVER
        return when.replace(microsecond=0)

    def burst(self) -> bytes:
        """One second's sentences."""
        when = self.stated()
        status = "A" if self.fix else "V"
        position = ("2150.12345,S", "04530.56789,W") if self.fix else (",", ",")
        rmc = encode_rmc(
            when,
            status=status,
            talker=self.talker,
            mode="A" if self.fix else "N",
            latitude=position[0],
            longitude=position[1],
        )
        if self.bad_checksum:
            rmc = rmc[:-4] + (b"00" if not rmc.endswith(b"00\r\n") else b"11") + b"\r\n"
        quality = "1,07,1.23,874.2,M,-5.1,M,," if self.fix else "0,00,99.99,,,,,,"
        gga_pos = ",".join(position) if self.fix else ",,,"
        gga = encode_sentence(f"{self.talker}GGA,{when:%H%M%S}.00,{gga_pos},{quality}")
        gsv = encode_sentence("GPGSV,1,1,03,10,45,120,38,12,30,210,33,24,60,045,41")
        out = rmc + gga + gsv
        if self.zda:
            out += encode_zda(when, talker=self.talker)
        if self.garbage:
            out = bytes(self._rng.randrange(256) for _ in range(24)) + b"\r\n" + out
        if self.fix and not self.bad_checksum:
            self.sent.append(when)
        return out

    def emit(self) -> None:
        """Write one burst now (unless ``silent``)."""
        if not self.silent:
            self.port.write(self.burst())
        self._since_start += 1.0

    async def run(self, *, interval_s: float = 1.0) -> None:
        """Emit a burst every ``interval_s`` until cancelled."""
        while True:
            self.emit()
            await asyncio.sleep(interval_s)


@contextlib.contextmanager
def open_gps_sim(
    *, link: str | None = None, clock: Callable[[], datetime] = _now
) -> Iterator[GpsSim]:
    """A GPS receiver on a fresh ``PtyPort`` (start ``run()`` yourself)."""
    port = PtyPort(link=link)
    port.open()
    try:
        yield GpsSim(port, clock=clock)
    finally:
        port.close()
