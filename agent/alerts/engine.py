"""The alert engine: every (rule, subject)'s state, and events routed to the rules.

Theory of operation
-------------------
``Engine`` holds the rules and every subject's state in dicts, routes events to the
rules that read them (``evaluate``), and serialises the whole state to JSON
(``snapshot``; ``restore`` continues from it, see ``snapshot``'s docstring). It is
still pure: no clock, no I/O; it is the only mutable thing in the rules, and it
changes only when called. A subject whose alert is closed is kept only while its
rule remembers something about it (a lot's window, a huller's counters).

Cost
----
``Engine.on_reading`` looks the measurement up in a dict built once: a reading visits
only the rules that read its measurement (a ``scale`` reading visits none), and each
touches the one or two subjects the reading names: O(``n``) for a wet lot's window,
O(1) otherwise, whatever the number of lots, devices or open alerts. Messages are
rendered only for emitted events. ``Engine.on_tick`` costs O(devices + sinks + open
alerts), plus once an hour of ``now_ns`` a sweep of the lots remembered
(``forget_after_s`` bounds them). The sweep only frees memory: a forgotten lot is also
recognised on its next reading, so when it runs never changes an alert; its schedule
is in the snapshot all the same, so a restored engine's state matches too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from coffee_telemetry.agent.alerts.evaluate import (
    acknowledge,
    current_alert,
    evaluate,
    subjects,
)
from coffee_telemetry.agent.alerts.kinds import MeterDisagreementRule, Rule, WetLotRule
from coffee_telemetry.agent.alerts.messages import alert_message
from coffee_telemetry.agent.alerts.model import (
    NS,
    Alert,
    Lang,
    LotMemory,
    MetersMemory,
    RuleState,
    Tick,
    to_ns,
)
from coffee_telemetry.agent.alerts.snapshot import decode_snapshot, encode_snapshot
from coffee_telemetry.agent.errors import RuleError
from coffee_telemetry.agent.readings import Reading

#: How often (of ``now_ns``) ``Engine.on_tick`` frees forgotten lots.
SWEEP_NS = 3600 * NS


class Engine:
    """The rules and the state of every (rule, subject); pure, no I/O.

    Args:
        rules: The configured rules; names must be unique.
        lang: Language of the messages (``pt-BR`` or ``en``).

    Raises:
        RuleError: Two rules share a name.
    """

    def __init__(self, rules: Sequence[Rule], *, lang: Lang = "pt-BR") -> None:
        self._rules = tuple(rules)
        self._lang: Lang = lang
        self._by_name: dict[str, Rule] = {}
        for rule in self._rules:
            if rule.name in self._by_name:
                raise RuleError("two rules have this name", rule=rule.name, key="name")
            self._by_name[rule.name] = rule
        by_measurement: dict[str, list[Rule]] = {}
        for rule in self._rules:
            for measurement in sorted(rule.measurements):
                by_measurement.setdefault(measurement, []).append(rule)
        self._by_measurement = {m: tuple(rs) for m, rs in by_measurement.items()}
        self._states: dict[str, dict[str, RuleState]] = {r.name: {} for r in self._rules}
        self._open: dict[str, set[str]] = {r.name: set() for r in self._rules}
        self._next_sweep_ns: int | None = None

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The configured rules, in order."""
        return self._rules

    def rules_for(self, measurement: str) -> tuple[Rule, ...]:
        """The rules a reading of ``measurement`` visits."""
        return self._by_measurement.get(measurement, ())

    def state(self, rule: str, subject: str) -> RuleState | None:
        """The state of one (rule, subject), if the engine holds one."""
        return self._states.get(rule, {}).get(subject)

    def on_reading(self, reading: Reading, now_ns: int) -> list[Alert]:
        """Feed one accepted reading; returns the events it caused, in order."""
        out: list[Alert] = []
        for rule in self._by_measurement.get(reading.measurement, ()):
            states = self._states[rule.name]
            for subject in subjects(rule, reading):
                old = states.get(subject) or RuleState(subject)
                new, alerts = evaluate(rule, old, reading, now_ns, lang=self._lang)
                if new is not old:
                    self._store(rule.name, new)
                out.extend(alerts)
        return out

    def on_tick(self, tick: Tick, now_ns: int) -> list[Alert]:
        """Let time pass with the current health of devices and sinks (about once a second).

        Evaluates the tick's subjects and every open alert (pending delays, repeats,
        forgotten lots), in rule order and then subject order.
        """
        out: list[Alert] = []
        for rule in self._rules:
            states = self._states[rule.name]
            targets = set(self._open[rule.name])
            if rule.on_ticks:
                targets.update(subjects(rule, tick))
            for subject in sorted(targets):
                old = states.get(subject) or RuleState(subject)
                new, alerts = evaluate(rule, old, tick, now_ns, lang=self._lang)
                if new is not old:
                    self._store(rule.name, new)
                out.extend(alerts)
        if self._next_sweep_ns is None or now_ns >= self._next_sweep_ns:
            self._next_sweep_ns = now_ns + SWEEP_NS
            self._sweep(now_ns)
        return out

    def ack(self, rule: str, subject: str, by: str, now_ns: int) -> list[Alert]:
        """Acknowledge a firing alert; returns its ``acknowledged`` event.

        An unknown rule or subject, or an alert that is not firing, gives no event.
        """
        config = self._by_name.get(rule)
        old = self._states.get(rule, {}).get(subject)
        if config is None or old is None:
            return []
        new, alerts = acknowledge(config, old, by=by, at_ns=now_ns, lang=self._lang)
        if new is not old:
            self._store(rule, new)
        return alerts

    def messages(self, alert: Alert) -> dict[str, str]:
        """``alert``'s message in every language, for pages that switch language."""
        rule = self._by_name.get(alert.rule)
        if rule is None:
            return {self._lang: alert.message}
        return {lang: alert_message(rule, alert, lang) for lang in get_args(Lang)}

    def alerts(self, now_ns: int) -> list[Alert]:
        """Every open alert as an event with ``notify`` false (to republish retained state)."""
        out: list[Alert] = []
        for rule in self._rules:
            states = self._states[rule.name]
            for subject in sorted(self._open[rule.name]):
                alert = current_alert(rule, states[subject], now_ns, lang=self._lang)
                if alert is not None:
                    out.append(alert)
        return out

    def snapshot(self) -> str:
        """Every subject's state as JSON, for ``Engine.restore`` after a restart."""
        return encode_snapshot(self._rules, self._states, next_sweep_ns=self._next_sweep_ns)

    @classmethod
    def restore(cls, rules: Sequence[Rule], snapshot: str, *, lang: Lang = "pt-BR") -> Engine:
        """An engine for ``rules`` that continues from ``snapshot``; emits nothing.

        Subjects of rules no longer configured, or whose name now belongs to a rule
        of another kind, are dropped.

        Raises:
            RuleError: Two rules share a name.
            ValueError: ``snapshot`` is not an engine snapshot of this version.
        """
        engine = cls(rules, lang=lang)
        engine._next_sweep_ns, saved = decode_snapshot(snapshot, engine._rules)
        for rule, states in saved.items():
            for state in states:
                engine._store(rule, state)
        return engine

    def _store(self, rule: str, state: RuleState) -> None:
        if state.open:
            self._states[rule][state.subject] = state
            self._open[rule].add(state.subject)
            return
        self._open[rule].discard(state.subject)
        if state.memory is None:
            self._states[rule].pop(state.subject, None)
        else:
            self._states[rule][state.subject] = state

    def _sweep(self, now_ns: int) -> None:
        # Frees closed lots past forget_after_s; their next reading would start afresh
        # anyway (``_forget_lot``), so when this runs never changes an output.
        for rule in self._rules:
            if isinstance(rule, MeterDisagreementRule):
                self._sweep_meters(rule, now_ns)
            if not isinstance(rule, WetLotRule):
                continue
            limit = to_ns(rule.forget_after_s)
            states = self._states[rule.name]
            stale = [
                subject
                for subject, state in states.items()
                if not state.open
                and isinstance(state.memory, LotMemory)
                and now_ns - state.memory.last_ns >= limit
            ]
            for subject in stale:
                del states[subject]

    def _sweep_meters(self, rule: MeterDisagreementRule, now_ns: int) -> None:
        # A closed lot whose meters last read it more than a window ago compares with
        # nothing any more: its memory goes (the next reading starts afresh).
        window = to_ns(rule.window_s)
        states = self._states[rule.name]
        stale = [
            subject
            for subject, state in states.items()
            if not state.open
            and isinstance(state.memory, MetersMemory)
            and all(now_ns - at > window for _, at, _ in state.memory.latest)
        ]
        for subject in stale:
            del states[subject]
