"""Captures built in memory, as ``coffee-telemetry capture`` writes them."""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Iterable, Sequence

from coffee_telemetry.agent.onboard.capfile import Capture, CaptureWriter, parse_capture
from coffee_telemetry.agent.onboard.lineformat import LineSettings

STARTED = dt.datetime(2025, 5, 12, 14, 3, tzinfo=dt.UTC)
N81 = LineSettings()


def capture_text(
    bursts: Iterable[bytes],
    *,
    settings: LineSettings = N81,
    first_s: float = 3.0,
    gap_s: tuple[float, float] = (2.5, 6.0),
    seed: int = 1,
    piece: tuple[int, int] = (1, 64),
    port: str = "/dev/ttyUSB0",
) -> str:
    """A capture file of ``bursts`` (one per press of PRINT), cut into chunks as a port
    delivers them, with pauses of ``gap_s`` between bursts."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = CaptureWriter(out, port=port, started=STARTED)
    writer.listen(settings)
    writer.decide(settings)
    t_s = first_s
    for burst in bursts:
        pos = 0
        while pos < len(burst):
            size = rng.randint(*piece)
            writer.chunk(t_s, burst[pos : pos + size])
            pos += size
            t_s += rng.uniform(0.001, 0.04)
        t_s += rng.uniform(*gap_s)
    writer.close("stopped")
    return out.getvalue()


def make_capture(
    bursts: Sequence[bytes],
    *,
    settings: LineSettings = N81,
    gap_s: tuple[float, float] = (2.5, 6.0),
    seed: int = 1,
) -> Capture:
    """``capture_text`` read back."""
    text = capture_text(bursts, settings=settings, gap_s=gap_s, seed=seed)
    return parse_capture(text.encode("ascii"))
