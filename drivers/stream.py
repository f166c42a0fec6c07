"""What a device loop drives: the interface every receive-only stream driver offers.

A stream driver is fed the bytes a port delivers with their arrival time on a
monotonic clock, may ask to be woken at a deadline without new bytes (a ticket
ends after an idle gap), and hands out what the bytes meant as ``Measurement``
and ``Discarded`` events. ``ClocklessDriver`` gives that interface to a parser
that needs no clock at all (it frames by bytes alone, like the Tesma frames).
"""

from __future__ import annotations

from typing import Protocol

from coffee_telemetry.drivers.events import Discarded, Measurement

__all__ = ["ClocklessDriver", "ClocklessParser", "StreamDriver"]


class StreamDriver(Protocol):
    """What a device loop needs from a receive-only stream driver."""

    @property
    def frames_ok(self) -> int:
        """Valid frames seen so far."""
        ...

    @property
    def frames_discarded(self) -> int:
        """Discarded events so far."""
        ...

    def receive_data(self, data: bytes, now: float) -> None:
        """Push bytes that arrived at monotonic time ``now``."""
        ...

    def tick(self, now: float) -> None:
        """Let time pass without bytes (idle gaps end tickets)."""
        ...

    def next_deadline(self) -> float | None:
        """Monotonic time at which ``tick`` should be called, if any."""
        ...

    def events(self) -> list[Measurement | Discarded]:
        """Drain complete events."""
        ...


class ClocklessParser(Protocol):
    """A parser that frames by bytes alone and never needs the time."""

    @property
    def frames_ok(self) -> int:
        """Valid frames seen so far."""
        ...

    @property
    def frames_discarded(self) -> int:
        """Discarded events so far."""
        ...

    def receive_data(self, data: bytes) -> None:
        """Push bytes as they arrive, cut anywhere."""
        ...

    def events(self) -> list[Measurement | Discarded]:
        """Drain complete events."""
        ...


class ClocklessDriver:
    """A ``StreamDriver`` around a ``ClocklessParser``: time passes, nothing happens."""

    def __init__(self, parser: ClocklessParser) -> None:
        self._parser = parser

    @property
    def frames_ok(self) -> int:
        """Valid frames the parser decoded."""
        return self._parser.frames_ok

    @property
    def frames_discarded(self) -> int:
        """``Discarded`` events the parser produced."""
        return self._parser.frames_discarded

    def receive_data(self, data: bytes, now: float) -> None:
        """Push bytes to the parser (their arrival time does not matter to it)."""
        self._parser.receive_data(data)

    def tick(self, now: float) -> None:
        """Nothing waits on time."""

    def next_deadline(self) -> float | None:
        """Never: the parser has no deadlines."""
        return None

    def events(self) -> list[Measurement | Discarded]:
        """The parser's completed events."""
        return self._parser.events()
