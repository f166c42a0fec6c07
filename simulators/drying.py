"""A dryer's moisture over time, for a simulated meter watching a drying run.

Grain in a dryer loses water fast at first, then ever slower as it nears the moisture
it would be in balance with the drying air (the equilibrium moisture): an exponential
approach, ``m(t) = me + (m0 - me) * exp(-k * t)``. ``DryingCurve`` is that curve on a
clock, with a little meter noise, as a ``MoistureSource`` for the meter simulators
(``simulators.moisture``): each call gives the moisture shown now.

Its parameters are known, so a test (or the demo) can compare a fitted curve with the
truth: ``remaining_s(target)`` is the true time left to reach ``target``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

__all__ = ["DryingCurve"]


class DryingCurve:
    """Moisture of a drying lot, falling towards ``me_pct`` (see the module docstring).

    Args:
        m0_pct: Moisture when the run starts (percent, wet basis).
        me_pct: Equilibrium moisture, approached but never reached.
        k_per_h: Drying rate (per hour): the gap to ``me_pct`` shrinks by ``e`` every
            ``1 / k_per_h`` hours.
        noise_pp: Standard deviation of the meter's noise, percentage points.
        decimals: Decimals the meter shows.
        clock: Seconds, monotonic (the run starts at the first call).
        seed: Seed of the noise.
    """

    def __init__(
        self,
        *,
        m0_pct: float = 18.0,
        me_pct: float = 10.5,
        k_per_h: float = 6.0,
        noise_pp: float = 0.05,
        decimals: int = 1,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if not me_pct < m0_pct or k_per_h <= 0:
            raise ValueError("a drying run starts above its equilibrium and dries at k > 0")
        self.m0_pct = m0_pct
        self.me_pct = me_pct
        self.k_per_h = k_per_h
        self.noise_pp = noise_pp
        self.decimals = decimals
        self._clock = clock
        self._rng = random.Random(seed)
        self._start: float | None = None

    def true_pct(self, elapsed_s: float) -> float:
        """The moisture ``elapsed_s`` into the run, without noise or rounding."""
        return self.me_pct + (self.m0_pct - self.me_pct) * math.exp(
            -self.k_per_h * elapsed_s / 3600
        )

    def elapsed_s(self) -> float:
        """Seconds since the run started (0 before the first call)."""
        return 0.0 if self._start is None else self._clock() - self._start

    def remaining_s(self, target_pct: float) -> float | None:
        """True seconds left until the moisture reaches ``target_pct`` (None: never)."""
        if target_pct <= self.me_pct:
            return None
        total = math.log((self.m0_pct - self.me_pct) / (target_pct - self.me_pct))
        return max(0.0, total / self.k_per_h * 3600 - self.elapsed_s())

    def __call__(self) -> float:
        """The moisture shown now."""
        if self._start is None:
            self._start = self._clock()
        value = self.true_pct(self.elapsed_s()) + self._rng.gauss(0.0, self.noise_pp)
        return round(value, self.decimals)
