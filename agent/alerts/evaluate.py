"""The pure core of the alert rules: events in, one subject's new state and alert events out.

Theory of operation
-------------------
Everything here is a function of its inputs. Time is the ``now_ns`` argument (UTC
nanoseconds); nothing reads a clock, sleeps, logs or touches a file or socket, so the
same inputs always give the same alerts, and a test drives days of alerts in
microseconds. The agent feeds it and delivers what comes out. The core is three
functions on one subject's ``RuleState``, in the shape
``evaluate(rule, state, reading) -> (state, alerts)``:

- ``subjects(rule, event)``: which subjects an event speaks about;
- ``evaluate(rule, state, event, now_ns)``: apply the event (if it speaks about the
  subject; ``conditions`` says how), then the timers;
- ``acknowledge(rule, state, by=..., at_ns=...)``.

``engine.Engine`` holds every subject's state and routes events to these.

Subjects
    Each rule watches subjects, and each (rule, subject) has at most one alert:

    ===================  =========================  ====================================
    rule (kind)          subject                    input
    ===================  =========================  ====================================
    ``wet_lot``          the lot code               ``moisture`` readings with a lot tag
    ``device_silent``    the device id              ticks (``Tick.devices``)
    ``huller_fault``     ``<huller>/comms``         ticks (the huller's device health)
    ``huller_fault``     ``<huller>/jam``,          ``huller`` readings
                         ``<huller>/wiring``
    ``service_due``,     ``<huller>/<task>``        ``maintenance_status`` readings
    ``service_overdue``
    ``sink_backlog``     the sink name              ticks (``Tick.sinks``)
    ``humid_storage``    the sensor's device id     ``climate`` readings
    ``calibration_due``  the meter's device id      ``calibration_status`` readings
    ``meter_disagreement`` the lot code             ``moisture`` readings with a lot tag
    ===================  =========================  ====================================

Lifecycle
    Per (rule, subject), driven by the condition and by time::

        resolved --condition--> pending --pending_s elapsed--> firing --ack--> acknowledged
           ^                       |                             |                |
           +------- condition clears (from any state) ----------+----------------+

    =========================================  ============  ========================
    transition                                 event state   ``notify``
    =========================================  ============  ========================
    condition starts, ``pending_s > 0``        pending       no
    condition starts and ``pending_s`` passed  firing        yes
    firing, ``repeat_s`` since last notice     firing        yes (``repeat`` counts)
    ``ack`` while firing                       acknowledged  yes
    condition clears while pending             resolved      no (nobody was told)
    condition clears while firing or acked     resolved      yes
    =========================================  ============  ========================

    Nothing else emits: new readings while an alert is firing update its data (a wet
    lot's mean, a device's silence) without an event, and the next repeat carries the
    new data. Acknowledging stops repeats; acknowledging anything but a firing alert
    changes nothing and returns no event. ``since_ns`` is when the episode began (the
    condition first held) and stays with it to the resolved event; with ``rule`` and
    ``subject`` it names the episode. The pending delay and the repeat interval are
    checked whenever the subject is evaluated and on every tick, so their resolution
    is the tick period. Messages are rendered (``messages``) only for emitted events.
"""

from __future__ import annotations

import dataclasses
from typing import assert_never

from coffee_telemetry.agent.alerts.conditions import condition
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
from coffee_telemetry.agent.alerts.messages import alert_message
from coffee_telemetry.agent.alerts.model import (
    Alert,
    AlertState,
    Data,
    Lang,
    LotMemory,
    Memory,
    RuleState,
    Tick,
    to_ns,
)
from coffee_telemetry.agent.readings import Reading


def subjects(rule: Rule, event: Reading | Tick) -> list[str]:
    """The subjects of ``rule`` that ``event`` speaks about."""
    if isinstance(event, Tick):
        match rule:
            case DeviceSilentRule():
                if event.devices is None:
                    return []
                return [
                    device
                    for device, snap in event.devices.items()
                    if rule.limit_s(device, snap.driver) is not None
                ]
            case HullerFaultRule():
                if event.devices is None:
                    return []
                return [
                    f"{device}/comms"
                    for device, snap in event.devices.items()
                    if snap.driver == rule.driver
                ]
            case SinkBacklogRule():
                return [] if event.sinks is None else list(event.sinks)
            case (
                WetLotRule()
                | ServiceRule()
                | HumidStorageRule()
                | CalibrationDueRule()
                | MeterDisagreementRule()
            ):
                return []
            case _:
                assert_never(rule)
    if event.measurement not in rule.measurements:
        return []
    match rule:
        case WetLotRule() | MeterDisagreementRule():
            lot = event.tags.get("lot", "")
            return [lot] if lot else []
        case HullerFaultRule():
            return [f"{event.device}/jam", f"{event.device}/wiring"]
        case ServiceRule():
            task = event.tags.get("task", "")
            return [f"{event.device}/{task}"] if task else []
        case HumidStorageRule() | CalibrationDueRule():
            return [event.device]
        case DeviceSilentRule() | SinkBacklogRule():  # pragma: no cover - no measurements
            return []
        case _:
            assert_never(rule)


def evaluate(
    rule: Rule,
    state: RuleState,
    event: Reading | Tick,
    now_ns: int,
    *,
    lang: Lang = "pt-BR",
) -> tuple[RuleState, list[Alert]]:
    """Apply ``event`` to one subject's state, then its timers.

    An event that says nothing about the subject (another lot, a tick for a reading
    rule) only lets time pass: a pending delay may elapse, a repeat may fall due, a
    forgotten lot's alert resolves. When nothing changes, ``state`` itself is returned.

    Args:
        rule: The rule.
        state: The subject's state (``RuleState(subject)`` for a new one).
        event: A reading, or a tick.
        now_ns: The current time, UTC nanoseconds.
        lang: Language of the messages.

    Returns:
        The new state and the events to publish, in order.
    """
    alerts: list[Alert] = []
    if isinstance(rule, WetLotRule):
        state = _forget_lot(rule, state, now_ns, lang, alerts)
    outcome = condition(rule, state, event, now_ns)
    if outcome is not None:
        state = _apply(rule, state, *outcome, now_ns, lang, alerts)
    state = _timers(rule, state, now_ns, lang, alerts)
    return state, alerts


def acknowledge(
    rule: Rule, state: RuleState, *, by: str, at_ns: int, lang: Lang = "pt-BR"
) -> tuple[RuleState, list[Alert]]:
    """Acknowledge a firing alert: no more repeats; it still resolves when it clears.

    Anything but a firing alert (pending, already acknowledged, resolved) is left as
    it is, with no event.
    """
    if state.state is not AlertState.FIRING:
        return state, []
    state = dataclasses.replace(
        state, state=AlertState.ACKNOWLEDGED, acked_by=by, acked_at_ns=at_ns
    )
    return state, [_alert(rule, state, at_ns, lang, notify=True)]


def current_alert(
    rule: Rule, state: RuleState, at_ns: int, *, lang: Lang = "pt-BR"
) -> Alert | None:
    """The open alert of ``state`` as an event (``notify`` false), or None if closed."""
    if not state.open:
        return None
    return _alert(rule, state, at_ns, lang, notify=False)


def _apply(
    rule: Rule,
    state: RuleState,
    active: bool,
    data: Data,
    memory: Memory | None,
    now_ns: int,
    lang: Lang,
    alerts: list[Alert],
) -> RuleState:
    # Positional constructors: this runs for every reading, and ``replace`` is slow.
    if active:
        if state.open:
            return RuleState(
                state.subject,
                state.state,
                state.since_ns,
                state.notified_ns,
                state.repeat,
                state.acked_by,
                state.acked_at_ns,
                data,
                memory,
            )
        state = RuleState(state.subject, AlertState.PENDING, now_ns, 0, 0, None, None, data, memory)
        if rule.pending_s > 0:
            alerts.append(_alert(rule, state, now_ns, lang, notify=False))
        return state
    if state.open:
        return _resolve(rule, state, data, memory, now_ns, lang, alerts)
    if state.memory is memory and not state.data:
        return state
    return RuleState(state.subject, memory=memory)


def _resolve(
    rule: Rule,
    state: RuleState,
    data: Data,
    memory: Memory | None,
    now_ns: int,
    lang: Lang,
    alerts: list[Alert],
) -> RuleState:
    # Nobody was told about a pending alert, so nobody is told it is over.
    notify = state.state is not AlertState.PENDING
    closed = dataclasses.replace(state, state=AlertState.RESOLVED, data=data)
    alerts.append(_alert(rule, closed, now_ns, lang, notify=notify))
    return RuleState(subject=state.subject, memory=memory)


def _timers(
    rule: Rule, state: RuleState, now_ns: int, lang: Lang, alerts: list[Alert]
) -> RuleState:
    if state.state is AlertState.PENDING:
        if now_ns - state.since_ns >= to_ns(rule.pending_s):
            state = dataclasses.replace(
                state, state=AlertState.FIRING, notified_ns=now_ns, repeat=0
            )
            alerts.append(_alert(rule, state, now_ns, lang, notify=True))
    elif (
        state.state is AlertState.FIRING
        and rule.repeat_s is not None
        and now_ns - state.notified_ns >= to_ns(rule.repeat_s)
    ):
        state = dataclasses.replace(state, notified_ns=now_ns, repeat=state.repeat + 1)
        alerts.append(_alert(rule, state, now_ns, lang, notify=True))
    return state


def _alert(rule: Rule, state: RuleState, at_ns: int, lang: Lang, *, notify: bool) -> Alert:
    return Alert(
        rule=rule.name,
        subject=state.subject,
        state=state.state,
        severity=rule.severity,
        message=alert_message(rule, state, lang),
        data=state.data,
        notify=notify,
        since_ns=state.since_ns,
        at_ns=at_ns,
        repeat=state.repeat,
        acked_by=state.acked_by,
        acked_at_ns=state.acked_at_ns,
    )


def _forget_lot(
    rule: WetLotRule, state: RuleState, now_ns: int, lang: Lang, alerts: list[Alert]
) -> RuleState:
    memory = state.memory
    if not isinstance(memory, LotMemory) or now_ns - memory.last_ns < to_ns(rule.forget_after_s):
        return state
    if state.open:
        _resolve(rule, state, {**state.data, "forgotten": True}, None, now_ns, lang, alerts)
    return RuleState(subject=state.subject)
