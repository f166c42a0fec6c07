"""One huller as the agent tracks it: totals, the day, running, snapshots, the rate.

``Huller`` is a huller's live state in this process: its persisted ``HullerState``
(``tasks``) and what only this process saw (which units answered, when a total last
advanced, terminal inputs, the samples of the rate window, the last hour snapshot). The
functions here compute from it, and log what an operator should hear of (a PV drop, a
unit in the wrong mode); none waits, stores or emits anything. ``HullerService``
(``service``) calls them under the huller's lock, commits the new state, and only then
takes it as current (the order is in ``store``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Literal

from coffee_telemetry.agent.config import HOUR_METER_UNITS, BusConfig, HullerConfig
from coffee_telemetry.agent.hullers.tasks import (
    SNAPSHOT_EVERY_NS,
    HullerState,
    ResetRecord,
    hours_total,
)
from coffee_telemetry.drivers.counter_autonics_ct import (
    CounterSample,
    Mode,
    TerminalInputs,
    advance_total,
)

__all__ = [
    "BAG_RUNNING_HOLD_S",
    "RATE_WINDOW_S",
    "Huller",
    "Role",
    "advance",
    "bags_per_hour",
    "count_runtime",
    "is_running",
    "roll_day",
    "snapshot_due",
    "wrong_mode",
]

#: ``bags_per_hour`` is measured over this window.
RATE_WINDOW_S = 600.0
#: Without a motor input or hour meter, running = a bag counted this recently.
BAG_RUNNING_HOLD_S = 120.0

#: Which unit of a huller: its bag counter or its hour meter.
Role = Literal["counter", "timer"]
_EXPECTED_MODE: Mapping[Role, Mode] = {"counter": Mode.COUNTER, "timer": Mode.TIMER}
_NS = 1_000_000_000


@dataclass(slots=True)
class Huller:
    """One huller's live state; ``state`` is what the store holds (None before any sample)."""

    cfg: HullerConfig
    bus: BusConfig
    state: HullerState | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    seen: set[Role] = field(default_factory=set)  # units sampled by this process
    advanced_ns: dict[Role, int] = field(default_factory=dict)  # last total increase seen
    inputs: dict[Role, TerminalInputs] = field(default_factory=dict)
    units_up: dict[Role, bool] = field(default_factory=dict)
    last_counter_ns: int | None = None
    window: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    snapshot_ns: int = 0
    snapshot_hours: float | None = None
    mode_warned: set[Role] = field(default_factory=set)


def advance(
    h: Huller, role: Role, old: HullerState, pv: int, now: int
) -> tuple[HullerState, ResetRecord | None]:
    """Take ``role``'s PV at ``now`` into ``old``; the new state, and a reset if the PV dropped.

    Notes in ``h`` when a total advanced (for ``is_running``); the reset's ``id`` is 0
    until it is stored.
    """
    before = old.counter if role == "counter" else old.timer
    after, drop = advance_total(before, pv)
    if role in h.seen and after.total > before.total:
        h.advanced_ns[role] = now
    # A unit's very first PV starts its day there, not at 0 (the PV is history).
    first = before.last_pv is None
    if role == "counter":
        day_counter = after.total if first else old.day_counter
        new = dataclasses.replace(old, counter=after, day_counter=day_counter)
    else:
        day_timer = after.total if first else old.day_timer
        new = dataclasses.replace(old, timer=after, day_timer=day_timer)
    if drop is None:
        return new, None
    record = ResetRecord(
        id=0,
        huller=h.cfg.id,
        unit=role,
        at_ns=now,
        previous_pv=drop.previous_pv,
        pv=drop.pv,
        offset=after.offset,
    )
    return new, record


def count_runtime(h: Huller, new: HullerState, now: int, running: bool) -> HullerState:
    """Add the running time since the last counter poll (hullers without an hour meter).

    Each gap counts at most two poll intervals, so an outage never counts as running.
    """
    last = h.last_counter_ns
    if h.cfg.hour_meter is not None or last is None or not running or now <= last:
        return new
    cap_ns = int(2 * h.cfg.poll_interval_s * _NS)
    ran_ms = min(now - last, cap_ns) // 1_000_000
    return dataclasses.replace(new, runtime_ms=new.runtime_ms + ran_ms)


def roll_day(old: HullerState, new: HullerState, now: int, zone: tzinfo) -> HullerState:
    """Start a new local day in ``zone`` when ``now`` is past the state's day."""
    today = datetime.fromtimestamp(now / _NS, zone).date().isoformat()
    if new.day == today:
        return new
    # The day's start is the last total seen before its first sample; a unit seen for
    # the first time just now starts at its own total (set by ``advance``).
    fresh = {r for r, s in (("counter", old.counter), ("timer", old.timer)) if s.last_pv is None}
    return dataclasses.replace(
        new,
        day=today,
        day_counter=new.day_counter if "counter" in fresh else old.counter.total,
        day_timer=new.day_timer if "timer" in fresh else old.timer.total,
        day_runtime_ms=old.runtime_ms,
    )


def is_running(h: Huller, now: int) -> bool:
    """The motor input, else whether a total advanced recently enough (``service``)."""
    cfg = h.cfg
    if cfg.motor_input != "none":
        role, _, pin = cfg.motor_input.partition(".")
        inputs = h.inputs.get("counter" if role == "counter" else "timer")
        if inputs is not None:
            level = {"INA": inputs.ina, "INB": inputs.inb, "INHIBIT": inputs.inhibit}[pin]
            return level != cfg.motor_input_inverted
    poll_s = cfg.poll_interval_s
    if cfg.hour_meter is not None:
        advanced = h.advanced_ns.get("timer")
        hold_s = HOUR_METER_UNITS[cfg.hour_meter_unit] * 3600 + 2 * poll_s
    else:
        advanced = h.advanced_ns.get("counter")
        hold_s = max(BAG_RUNNING_HOLD_S, 2 * poll_s)
    return advanced is not None and now - advanced <= hold_s * _NS


def snapshot_due(h: Huller, state: HullerState, now: int) -> float | None:
    """The hours to snapshot with ``state``: when they moved, at most once a minute."""
    hours = hours_total(h.cfg, state)
    if hours is None or hours == h.snapshot_hours:
        return None
    if h.snapshot_hours is not None and now - h.snapshot_ns < SNAPSHOT_EVERY_NS:
        return None
    return hours


def bags_per_hour(h: Huller, now: int, bags: float) -> float:
    """Take ``bags`` at ``now`` into the window; bags per hour over ``RATE_WINDOW_S``."""
    window = h.window
    window.append((now, bags))
    cutoff = now - int(RATE_WINDOW_S * _NS)
    # Keep one sample at or before the window's start, so the rate spans the window.
    while len(window) > 2 and window[1][0] <= cutoff:
        window.popleft()
    (t0, b0), (t1, b1) = window[0], window[-1]
    if t1 <= t0:
        return 0.0
    return max(0.0, (b1 - b0) * 3600 * _NS / (t1 - t0))


def wrong_mode(h: Huller, role: Role, sample: CounterSample) -> Mode | None:
    """The mode ``role``'s unit should be in, the first time it reports another; else None."""
    expected = _EXPECTED_MODE[role]
    if sample.mode is expected or role in h.mode_warned:
        return None
    h.mode_warned.add(role)
    return expected
