"""The conditions: what each rule's input means for one subject, as a boolean with data.

``condition(rule, state, event, now_ns)`` is the first half of ``evaluate``: it reads
the event (if it speaks about the subject) and returns whether the condition holds,
the alert's data, and what the rule remembers; ``evaluate`` then applies the
lifecycle. Each rule turns its input into the one boolean with hysteresis where a
measured value can hover: a condition that holds is kept until a separate, stricter
clear test passes; in between (the band) nothing changes.

``wet_lot``
    For the lot of the reading, with ``T`` the threshold of the reading's product
    (``thresholds_pct``, matched without regard to case, else
    ``default_threshold_pct``), ``C = T - hysteresis_pct``, ``W`` the lot's last ``n``
    moisture readings, ``N`` the number of all its readings and ``M`` their mean
    (rounded to 6 decimals, so identical readings at the threshold have their mean at
    the threshold, not a float's width below)::

        fires   when  #{x in W : x >= T} >= k   or  (N >= mean_min_readings and M >= T)
        clears  when  #{x in W : x >= C} <  k   and (N <  mean_min_readings or  M <  C)

    A clear implies no fire, so between the two the alert keeps its state. Readings
    that hover around ``T`` (none below ``C``) can fire it once and never clear it.
    Only readings carrying a ``lot`` tag and a finite ``moisture_pct`` count. A lot
    with no reading for ``forget_after_s`` is forgotten: its next reading starts a new
    window and mean, and an alert still open for it is resolved (``forgotten`` in its
    data) by the next tick or reading (``evaluate`` does that part).
``device_silent``
    The device's last valid frame (``DeviceSnapshot.last_frame_ns``; before the first
    one, ``since_ns``) is at least the limit old. Limits are per driver
    (``DEFAULT_SILENT_S``: continuous meters and scales; ticket printers have none,
    they speak when someone measures) and per device, ``None`` meaning never. It
    clears only when a frame arrives (``last_frame_ns`` within the limit): after a
    restart the health registry knows no frame yet, and that must not count as frames
    having returned.
``huller_fault``
    ``comms``: the huller's device has been offline for ``offline_s``, or reported at
    least ``error_count`` new errors within ``error_window_s``; clears when it is online
    and reported none within the window. ``jam``: the motor is running and
    ``bags_total`` has not increased for ``jam_s``; clears when a bag is counted or the
    motor stops. ``wiring``: between consecutive readings (at most ``max_gap_s`` apart)
    that both show the motor input off, ``hours_total`` rose by ``wiring_h`` in all;
    clears when the hours rise while the input is on (the input and the hour meter
    agree again), which is also what resets the sum.
``service_due`` / ``service_overdue``
    One ``ServiceRule`` class with a ``level``: ``due`` holds while the task's
    ``state`` is ``due`` or ``overdue`` (the reading's ``due`` field), ``overdue`` while
    it is ``overdue``. Both clear when a service brings the task back to ``ok``.
``sink_backlog``
    At least ``min_backlog`` records wait and the sink delivered nothing for
    ``undelivered_s`` (before its first delivery, since ``since_ns``); clears when it
    delivers again or nothing waits.
``humid_storage``
    Per storage sensor (subject: its device id), from its ``climate`` readings: holds
    when ``rh_pct >= threshold_pct``; once open (pending included) it holds until a
    reading below ``threshold_pct - hysteresis_pct``. ``pending_s`` (6 h by default) is
    how long the air must stay humid before the alert fires; a reading below the clear
    line while pending starts the wait again. A sensor that stops reporting keeps its
    last state (``device_silent`` is the rule for silence).
``calibration_due``
    Per meter (subject: its device id), from its ``calibration_status`` readings:
    holds while ``days_left <= warn_days`` (a past due date is negative days); clears
    when a new calibration moves the due date out of the warning window.
``meter_disagreement``
    Per lot, from ``moisture`` readings with a lot tag: the rule remembers each meter's
    latest reading of the lot (``MetersMemory``; older than ``window_s`` before the new
    one is forgotten). A reading is compared with the latest of every other meter
    within ``window_s``; it holds when the largest difference exceeds
    ``tolerance_pp`` and clears when a comparison finds none beyond it. A reading with
    no other meter in the window changes nothing. Times are the readings' own.

A device, huller or sink missing from a tick's mapping is taken as removed: its alert
resolves (``removed`` in its data). A tick whose ``devices`` or ``sinks`` is ``None``
says nothing about them.
"""

from __future__ import annotations

import math
from typing import assert_never

from coffee_telemetry.agent.alerts.kinds import (
    CalibrationDueRule,
    DeviceSilentRule,
    HullerFaultRule,
    HumidStorageRule,
    MeterDisagreementRule,
    Rule,
    ServiceRule,
    SinkBacklogRule,
    WetLotRule,
)
from coffee_telemetry.agent.alerts.model import (
    NS,
    Data,
    ErrorMemory,
    JamMemory,
    LotMemory,
    Memory,
    MetersMemory,
    RuleState,
    Tick,
    WiringMemory,
    to_ns,
)
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.drivers.events import FieldValue

#: (condition holds, data, memory) for one subject.
Outcome = tuple[bool, Data, Memory | None]
_NO_DATA: Data = {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def condition(rule: Rule, state: RuleState, event: Reading | Tick, now_ns: int) -> Outcome | None:
    """Whether ``rule``'s condition holds for ``state``'s subject after ``event``.

    Returns:
        (holds, data, memory), or None when ``event`` says nothing about the subject.
    """
    match rule:
        case WetLotRule():
            if isinstance(event, Reading):
                return _wet_lot(rule, state, event, now_ns)
            return None
        case DeviceSilentRule():
            if isinstance(event, Tick):
                return _device_silent(rule, state, event, now_ns)
            return None
        case HullerFaultRule():
            huller, _, part = state.subject.rpartition("/")
            if isinstance(event, Tick):
                return _comms(rule, state, huller, event, now_ns) if part == "comms" else None
            if event.measurement != "huller" or event.device != huller:
                return None
            if part == "jam":
                return _jam(rule, state, huller, event, now_ns)
            if part == "wiring":
                return _wiring(rule, state, huller, event, now_ns)
            return None
        case ServiceRule():
            if isinstance(event, Reading):
                return _service(rule, state, event)
            return None
        case SinkBacklogRule():
            if isinstance(event, Tick):
                return _sink_backlog(rule, state, event, now_ns)
            return None
        case HumidStorageRule():
            if isinstance(event, Reading):
                return _humid_storage(rule, state, event)
            return None
        case CalibrationDueRule():
            if isinstance(event, Reading):
                return _calibration_due(rule, state, event)
            return None
        case MeterDisagreementRule():
            if isinstance(event, Reading):
                return _meter_disagreement(rule, state, event)
            return None
        case _:
            assert_never(rule)


def _wet_lot(rule: WetLotRule, state: RuleState, reading: Reading, now_ns: int) -> Outcome | None:
    if reading.measurement != "moisture" or reading.tags.get("lot") != state.subject:
        return None
    value = _number(reading.fields.get("moisture_pct"))
    if value is None:
        return None
    product = reading.tags.get("product", "")
    old = state.memory if isinstance(state.memory, LotMemory) else None
    memory = LotMemory(
        window=((*old.window, value) if old else (value,))[-rule.n :],
        count=(old.count if old else 0) + 1,
        total=(old.total if old else 0.0) + value,
        max_pct=max(old.max_pct, value) if old else value,
        last_ns=now_ns,
        device=reading.device,
        station=reading.tags.get("station", ""),
        product=product,
    )
    threshold = rule.threshold_for(product)
    clear_below = threshold - rule.hysteresis_pct
    mean = round(memory.total / memory.count, 6)
    mean_counts = memory.count >= rule.mean_min_readings
    if state.open:
        active = sum(x >= clear_below for x in memory.window) >= rule.k or (
            mean_counts and mean >= clear_below
        )
    else:
        active = sum(x >= threshold for x in memory.window) >= rule.k or (
            mean_counts and mean >= threshold
        )
        if not active:
            return False, _NO_DATA, memory  # a closed subject keeps no data
    data: dict[str, FieldValue] = {
        "lot": state.subject,
        "device": memory.device,
        "station": memory.station,
        "product": product,
        "count": memory.count,
        "last_pct": value,
        "max_pct": memory.max_pct,
        "mean_pct": mean,
        "threshold_pct": threshold,
        "clear_below_pct": round(clear_below, 6),
    }
    return active, data, memory


def _removed(state: RuleState) -> Outcome:
    return False, {**state.data, "removed": True}, None


def _device_silent(
    rule: DeviceSilentRule, state: RuleState, tick: Tick, now_ns: int
) -> Outcome | None:
    if tick.devices is None:
        return None
    snap = tick.devices.get(state.subject)
    limit = None if snap is None else rule.limit_s(state.subject, snap.driver)
    if snap is None or limit is None:
        return _removed(state)
    last = snap.last_frame_ns
    silent_ns = now_ns - (snap.since_ns if last is None else last)
    # Open and no frame yet (a restart cleared the registry): frames have not returned.
    active = (state.open and last is None) or silent_ns >= to_ns(limit)
    data: dict[str, FieldValue] = {
        "device": state.subject,
        "driver": snap.driver,
        "station": snap.station,
        "silent_s": round(silent_ns / NS, 3),
        "limit_s": float(limit),
    }
    if last is not None:
        data["last_frame_ns"] = last
    return active, data, None


def _comms(
    rule: HullerFaultRule, state: RuleState, huller: str, tick: Tick, now_ns: int
) -> Outcome | None:
    if tick.devices is None:
        return None
    snap = tick.devices.get(huller)
    if snap is None:
        return _removed(state)
    old = state.memory.samples if isinstance(state.memory, ErrorMemory) else ()
    if not old or snap.errors < old[-1][1]:
        samples: tuple[tuple[int, int], ...] = ((now_ns, snap.errors),)  # first, or restarted
    elif snap.errors != old[-1][1]:
        samples = (*old, (now_ns, snap.errors))
    else:
        samples = old
    # Keep the newest sample at or before the window's start as the baseline.
    start = now_ns - to_ns(rule.error_window_s)
    drop = 0
    while drop + 1 < len(samples) and samples[drop + 1][0] <= start:
        drop += 1
    samples = samples[drop:]
    errors = snap.errors - samples[0][1]
    offline_ns = 0 if snap.online else max(0, now_ns - snap.since_ns)
    if state.open:
        active = not snap.online or errors > 0
    else:
        active = (not snap.online and offline_ns >= to_ns(rule.offline_s)) or (
            errors >= rule.error_count
        )
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": snap.station,
        "fault": "comms",
        "online": snap.online,
        "offline_s": round(offline_ns / NS, 3),
        "errors": errors,
        "window_s": float(rule.error_window_s),
    }
    if snap.last_error:
        data["last_error"] = snap.last_error
    if isinstance(state.memory, ErrorMemory) and samples == old:
        return active, data, state.memory
    return active, data, ErrorMemory(samples)


def _jam(
    rule: HullerFaultRule, state: RuleState, huller: str, reading: Reading, now_ns: int
) -> Outcome | None:
    running = reading.fields.get("running")
    bags = _number(reading.fields.get("bags_total"))
    if not isinstance(running, bool) or bags is None:
        return None
    old = state.memory if isinstance(state.memory, JamMemory) else None
    idle_since: int | None
    if not running:
        idle_since = None
    elif old is None or old.idle_since_ns is None or bags > old.bags:
        idle_since = now_ns
    else:
        idle_since = old.idle_since_ns
    idle_ns = 0 if idle_since is None else now_ns - idle_since
    active = running and idle_ns >= to_ns(rule.jam_s)
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": reading.tags.get("station", ""),
        "fault": "jam",
        "idle_s": round(idle_ns / NS, 3),
        "limit_s": float(rule.jam_s),
        "bags_total": bags,
    }
    return active, data, JamMemory(bags=bags, idle_since_ns=idle_since)


def _wiring(
    rule: HullerFaultRule, state: RuleState, huller: str, reading: Reading, now_ns: int
) -> Outcome | None:
    running = reading.fields.get("running")
    hours = _number(reading.fields.get("hours_total"))
    if not isinstance(running, bool) or hours is None:
        return None
    old = state.memory if isinstance(state.memory, WiringMemory) else None
    gain = old.gain_h if old else 0.0
    if old is not None and 0 < now_ns - old.at_ns <= to_ns(rule.max_gap_s) and hours > old.hours:
        if running:
            gain = 0.0  # the hours rise with the input on: they agree
        elif not old.running:
            gain += hours - old.hours
        # on, then off: the motor stopped between the polls; the rise is expected
    active = gain > 0 if state.open else gain >= rule.wiring_h
    data: dict[str, FieldValue] = {
        "huller": huller,
        "station": reading.tags.get("station", ""),
        "fault": "wiring",
        "gain_h": round(gain, 6),
        "hours_total": hours,
    }
    return active, data, WiringMemory(at_ns=now_ns, hours=hours, running=running, gain_h=gain)


def _service(rule: ServiceRule, state: RuleState, reading: Reading) -> Outcome | None:
    task = reading.tags.get("task", "")
    if reading.measurement != "maintenance_status" or f"{reading.device}/{task}" != state.subject:
        return None
    task_state = reading.fields.get("state")
    if task_state not in ("ok", "due", "overdue"):
        overdue = reading.fields.get("overdue") is True
        task_state = "overdue" if overdue else "due" if reading.fields.get("due") is True else "ok"
    active = task_state == "overdue" or (rule.level == "due" and task_state == "due")
    data: dict[str, FieldValue] = {"huller": reading.device, "task": task, "task_state": task_state}
    for key in ("hours_since", "interval_h", "remaining_h"):
        value = _number(reading.fields.get(key))
        if value is not None:
            data[key] = value
    return active, data, None


def _sink_backlog(
    rule: SinkBacklogRule, state: RuleState, tick: Tick, now_ns: int
) -> Outcome | None:
    if tick.sinks is None:
        return None
    snap = tick.sinks.get(state.subject)
    if snap is None:
        return _removed(state)
    last = snap.last_delivery_ns
    waiting_ns = now_ns - (snap.since_ns if last is None else last)
    waits = snap.backlog >= rule.min_backlog
    if state.open and last is None:
        active = waits  # nothing delivered yet since a restart
    else:
        active = waits and waiting_ns >= to_ns(rule.undelivered_s)
    data: dict[str, FieldValue] = {
        "sink": state.subject,
        "backlog": snap.backlog,
        "undelivered_s": round(waiting_ns / NS, 3),
        "limit_s": float(rule.undelivered_s),
    }
    if last is not None:
        data["last_delivery_ns"] = last
    return active, data, None


def _humid_storage(rule: HumidStorageRule, state: RuleState, reading: Reading) -> Outcome | None:
    if reading.measurement != "climate" or reading.device != state.subject:
        return None
    rh = _number(reading.fields.get("rh_pct"))
    if rh is None:
        return None
    clear_below = rule.threshold_pct - rule.hysteresis_pct
    active = rh >= clear_below if state.open else rh >= rule.threshold_pct
    if not active and not state.open:
        return False, _NO_DATA, None
    data: dict[str, FieldValue] = {
        "device": state.subject,
        "area": reading.tags.get("area", ""),
        "rh_pct": rh,
        "threshold_pct": float(rule.threshold_pct),
        "clear_below_pct": round(clear_below, 6),
        "pending_s": float(rule.pending_s),
    }
    temperature = _number(reading.fields.get("temperature_c"))
    if temperature is not None:
        data["temperature_c"] = temperature
    return active, data, None


def _calibration_due(
    rule: CalibrationDueRule, state: RuleState, reading: Reading
) -> Outcome | None:
    if reading.measurement != "calibration_status" or reading.device != state.subject:
        return None
    days = reading.fields.get("days_left")
    if isinstance(days, bool) or not isinstance(days, int):
        return None
    data: dict[str, FieldValue] = {"device": state.subject, "days_left": days}
    for key, out in (("due", "due_date"), ("certificate", "certificate"), ("calibration",) * 2):
        value = reading.fields.get(key)
        if isinstance(value, str):
            data[out] = value
    station = reading.tags.get("station", "")
    if station:
        data["station"] = station
    return days <= rule.warn_days, data, None


def _meter_disagreement(
    rule: MeterDisagreementRule, state: RuleState, reading: Reading
) -> Outcome | None:
    if reading.measurement != "moisture" or reading.tags.get("lot") != state.subject:
        return None
    value = _number(reading.fields.get("moisture_pct"))
    if value is None:
        return None
    window = to_ns(rule.window_s)
    at = reading.ts_ns
    old = state.memory.latest if isinstance(state.memory, MetersMemory) else ()
    kept = [m for m in old if m[0] != reading.device and at - m[1] <= window]
    others = [m for m in kept if abs(at - m[1]) <= window]
    prev = next((m for m in old if m[0] == reading.device), None)
    own = prev if prev is not None and prev[1] > at else (reading.device, at, value)
    memory = MetersMemory(tuple(sorted([*kept, own])))
    if not others:
        return (state.open, state.data, memory) if state.open else (False, _NO_DATA, memory)
    device, _, pct = max(others, key=lambda o: (abs(o[2] - value), o[0]))
    diff = round(pct - value, 6)
    data: dict[str, FieldValue] = {
        "lot": state.subject,
        "device": reading.device,
        "last_pct": value,
        "other_device": device,
        "other_pct": pct,
        "diff_pp": diff,
        "tolerance_pp": float(rule.tolerance_pp),
    }
    station = reading.tags.get("station", "")
    if station:
        data["station"] = station
    return abs(diff) > rule.tolerance_pp, data, memory
