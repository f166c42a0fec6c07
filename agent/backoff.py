"""Capped exponential back-off with jitter, shared by ports, sinks and MQTT."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial_s`` up to ``maximum_s``, with jitter.

    Jitter (each delay shortened by up to ``jitter`` of itself, so the cap is
    never exceeded) keeps a fleet of agents, or several devices on one box,
    from retrying in lock-step after a shared outage.
    """

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        maximum_s: float = 60.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or maximum_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("invalid back-off parameters")
        self._initial = initial_s
        self._maximum = maximum_s
        self._factor = factor
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._next = initial_s
        self.attempts = 0

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self._initial
        self.attempts = 0

    def next_delay(self) -> float:
        """Return the delay before the next attempt and grow the following one."""
        base = self._next
        self._next = min(self._maximum, self._next * self._factor)
        self.attempts += 1
        return base * (1.0 - self._rng.uniform(0.0, self._jitter))
