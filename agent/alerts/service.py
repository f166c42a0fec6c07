"""Alerts in the running agent: feed the rule engine, publish and persist what it says.

Theory of operation
-------------------
The rules and their engine (``agent.alerts.engine``) are pure; this module is their
I/O. Every reading the agent accepts is handed to ``on_reading`` (a live fan-out
listener, called after the outbox commit) and evaluated at once, synchronously: a
wet lot is known in the same event-loop turn as the reading that made it wet. A tick loop
feeds device and sink health once a second (silent devices, huller faults,
undelivered backlogs), and ``handle_command`` acknowledges alerts from
``<prefix>/<site>/cmd/ack/<rule>/<subject>``.

What the engine returns goes to a bounded pending list that ``run_loop``
drains: each alert event becomes

* the retained ``<prefix>/<site>/alerts/<rule>/<subject>`` state (resolved
  alerts are kept as ``resolved``, not deleted), and
* an ``alert`` event in the outbox (device ``alerts``), which InfluxDB stores
  and the webhook sinks POST when the event says ``notify``, and
* for notifying and acknowledged events, a hand-over to ``on_notify`` (the
  notifier's own queues, ``agent.notify``), awaited before the state is saved.

The engine's state is written to ``alerts.json`` in the data directory after a
batch with notifications reached the outbox (at most every
``MIN_SAVE_INTERVAL_S``: the snapshot costs time in proportion to the open
subjects), and every minute for quieter changes (lot means). A crash between
the outbox commit and the state write can only repeat a notification, never
lose one; a restart in the firing state neither forgets the alert nor
notifies it again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from coffee_telemetry.agent.alerts.engine import Engine
from coffee_telemetry.agent.alerts.formats import alert_payload, alert_point, alert_topic
from coffee_telemetry.agent.alerts.kinds import build_rules
from coffee_telemetry.agent.alerts.model import (
    Alert,
    AlertState,
    DeviceSnapshot,
    SinkSnapshot,
    Tick,
)
from coffee_telemetry.agent.alerts.snapshot import decode_recent, encode_recent
from coffee_telemetry.agent.commands import Command, CommandRefused, Outgoing, encode_json
from coffee_telemetry.agent.config import AlertsConfig
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.store import Outbox
from coffee_telemetry.agent.readings import Draft, Reading

log = logging.getLogger(__name__)

#: Device id of alert events in the outbox (MQTT ``<prefix>/<site>/alerts/event``).
ALERTS_DEVICE = "alerts"

#: Alert events waiting for the outbox; past this the oldest non-notifying ones go.
MAX_PENDING = 10_000

#: Recent notified alert events kept in memory for the dashboard's alert page.
RECENT_ALERTS = 100

#: Longest alert subject an acknowledgement may name.
MAX_SUBJECT_LEN = 120

#: Shortest time between two saves of the engine state after notifications.
MIN_SAVE_INTERVAL_S = 0.5

#: Takes notifying alert events, each with its message in every language (the app
#: wires the notifier here, so this package imports nothing of it).
NotifyCallback = Callable[[Sequence[tuple[Alert, dict[str, str]]]], Awaitable[object]]


class AlertService:
    """Feeds the engine and publishes its alerts (see the module docstring)."""

    def __init__(
        self,
        *,
        cfg: AlertsConfig,
        site: str,
        state_path: Path,
        record: Callable[[Sequence[Draft]], Awaitable[object]],
        outbox: Outbox,
        health: Health,
        publish_state: Callable[[Outgoing], None] | None = None,
        on_alert: Callable[[dict[str, object]], None] | None = None,
        on_notify: NotifyCallback | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        tick_s: float = 1.0,
        save_s: float = 60.0,
    ) -> None:
        self._site = site
        self._path = state_path
        self._record = record
        self._outbox = outbox
        self._health = health
        self._publish_state = publish_state
        self._on_alert = on_alert
        self._on_notify = on_notify
        self._recent_path = state_path.with_name(state_path.stem + "-recent.json")
        self._recent = self._load_recent()
        self._clock_ns = clock_ns
        self._tick_s = tick_s
        self._save_s = save_s
        self._rules = build_rules(cfg)
        self._lang = cfg.lang
        self._engine = self._restore()
        self._pending: list[Alert] = []
        self._wake = asyncio.Event()
        self._started_ns = clock_ns()
        self._dirty = False
        self._save_due = False
        self._last_save = float("-inf")

    def _restore(self) -> Engine:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Engine(self._rules, lang=self._lang)
        except OSError as exc:
            log.warning("Could not read alert state %s (%s); starting afresh", self._path, exc)
            return Engine(self._rules, lang=self._lang)
        try:
            return Engine.restore(self._rules, text, lang=self._lang)
        except ConfigError as exc:  # a newer version's state: refused, never overwritten
            raise ConfigError(exc.problems, source=str(self._path)) from exc
        except ValueError as exc:
            log.warning("Alert state %s unreadable (%s); starting afresh", self._path, exc)
            return Engine(self._rules, lang=self._lang)

    @property
    def engine(self) -> Engine:
        """The rule engine (read-only use: current alerts for pages and commands)."""
        return self._engine

    def replace_rules(self, cfg: AlertsConfig) -> None:
        """Evaluate with the rules of ``cfg`` from now on, carrying the engine's state over.

        Subjects of rules still configured keep their state (an open alert stays open,
        a lot keeps its window); those of rules gone are dropped (``Engine.restore``).

        Raises:
            RuleError: ``cfg``'s rules cannot be built; the running ones stay.
        """
        rules = build_rules(cfg)
        self._engine = Engine.restore(rules, self._engine.snapshot(), lang=cfg.lang)
        self._rules, self._lang = rules, cfg.lang
        self._dirty = True

    def alert_doc(self, alert: Alert) -> dict[str, object]:
        """``alert_payload`` plus ``messages``: the message in every language (for pages)."""
        return {**alert_payload(alert), "messages": self._engine.messages(alert)}

    def open_docs(self) -> list[dict[str, object]]:
        """Every open alert as ``alert_doc``."""
        return [self.alert_doc(a) for a in self._engine.alerts(self._clock_ns())]

    def recent(self) -> list[dict[str, object]]:
        """The latest notified transitions and acknowledgements, newest first.

        Kept beside the engine state (``alerts-recent.json``), so a restart keeps them.
        """
        return list(reversed(self._recent))

    def _load_recent(self) -> collections.deque[dict[str, object]]:
        recent: collections.deque[dict[str, object]] = collections.deque(maxlen=RECENT_ALERTS)
        try:
            recent.extend(decode_recent(self._recent_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return recent
        except ConfigError as exc:  # a newer version's: refused, never overwritten
            raise ConfigError(exc.problems, source=str(self._recent_path)) from exc
        except (OSError, ValueError) as exc:
            log.warning("Recent alerts %s unreadable (%s); starting afresh", self._recent_path, exc)
            return recent
        return recent

    def publish_all(self) -> None:
        """Push the retained state of every open alert (at start, after a restore)."""
        for alert in self._engine.alerts(self._clock_ns()):
            self._retain(alert)

    def on_reading(self, reading: Reading) -> None:
        """Evaluate one accepted reading (a ``ReadingListener``)."""
        if reading.device == ALERTS_DEVICE:
            return
        self._add(self._engine.on_reading(reading, self._clock_ns()))
        self._dirty = True

    def _add(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        self._pending.extend(alerts)
        if len(self._pending) > MAX_PENDING:
            # Keep every notification; shed the oldest silent updates first.
            excess = len(self._pending) - MAX_PENDING
            kept = [a for a in self._pending if a.notify]
            silent = [a for a in self._pending if not a.notify][excess:]
            self._pending = sorted(kept + silent, key=lambda a: a.at_ns)
            log.warning("Alert queue over %d events: dropped %d updates", MAX_PENDING, excess)
        self._wake.set()

    def tick(self) -> None:
        """Feed device and sink health to the engine."""
        now = self._clock_ns()
        devices = {
            name: DeviceSnapshot.from_health(entry) for name, entry in self._health.devices.items()
        }
        sinks = {
            name: SinkSnapshot(
                backlog=self._outbox.backlog(name),
                last_delivery_ns=sink.last_delivery_ns,
                since_ns=self._started_ns,
            )
            for name, sink in self._health.sinks.items()
            if name in self._outbox.sinks
        }
        self._add(self._engine.on_tick(Tick(devices=devices, sinks=sinks), now))

    async def run_loop(self) -> None:
        """Publish pending alerts, tick once a second, save the state."""
        self.publish_all()
        try:
            await self._serve()
        finally:
            self.close()

    def close(self) -> None:
        """Write the state now if anything is unsaved (on shutdown; blocks briefly)."""
        if self._save_due or self._dirty:
            _write_atomic(self._path, self._engine.snapshot())
            _write_atomic(self._recent_path, encode_recent(self._recent))
            self._save_due = self._dirty = False

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        next_save = loop.time() + self._save_s
        while True:
            if loop.time() >= next_tick:
                self.tick()
                next_tick = loop.time() + self._tick_s
            if self._pending:
                await self._flush()
            if self._save_due and loop.time() - self._last_save >= MIN_SAVE_INTERVAL_S:
                await self._save()
            if loop.time() >= next_save:
                if self._dirty:
                    await self._save()
                next_save = loop.time() + self._save_s
            self._wake.clear()
            try:
                async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        drafts: list[Draft] = []
        for alert in batch:
            self._retain(alert)
            keep = alert.notify or alert.state is AlertState.ACKNOWLEDGED
            if keep or self._on_alert is not None:
                doc = self.alert_doc(alert)  # one document for the recent list and the pages
                if keep:
                    self._recent.append(doc)
                if self._on_alert is not None:
                    self._on_alert(doc)
            point = alert_point(alert, site=self._site)
            # The device an alert is about becomes ``source_device``: ``device``
            # is the tag every point carries (here ``alerts``), and a field of
            # the same name makes InfluxQL queries ambiguous.
            fields = {
                ("source_device" if key == "device" else key): value
                for key, value in point.fields.items()
            }
            drafts.append(
                Draft(
                    device=ALERTS_DEVICE,
                    measurement=point.measurement,
                    fields=fields,
                    tags={**point.tags, "device": ALERTS_DEVICE},
                    kind="event",
                    ts_ns=point.ts_ns,
                )
            )
            if alert.notify:
                log.warning(
                    "Alert %s/%s %s: %s",
                    alert.rule,
                    alert.subject,
                    alert.state.value,
                    alert.message,
                )
        await self._record(drafts)
        await self._hand_to_notifier(batch)
        if any(alert.notify for alert in batch):
            # What was notified must survive a restart (or it would be notified
            # again); the snapshot costs O(open subjects), so at most every
            # MIN_SAVE_INTERVAL_S, and quieter changes wait for the minute save.
            self._save_due = True
            if asyncio.get_running_loop().time() - self._last_save >= MIN_SAVE_INTERVAL_S:
                await self._save()
        else:
            self._dirty = True

    async def _hand_to_notifier(self, batch: Sequence[Alert]) -> None:
        # After the outbox commit and before the state save: a crash in between can
        # only hand an event over again, and the notifier recognises a repeat.
        events = [a for a in batch if a.notify or a.state is AlertState.ACKNOWLEDGED]
        if not events or self._on_notify is None:
            return
        try:
            await self._on_notify([(a, self._engine.messages(a)) for a in events])
        except Exception as exc:  # people not told is bad; alerts that stop are worse
            log.error("Could not hand %d alert events to the notifier", len(events), exc_info=exc)

    def _retain(self, alert: Alert) -> None:
        if self._publish_state is None:
            return
        payload = encode_json(alert_payload(alert))
        self._publish_state(Outgoing(topic=alert_topic(alert), payload=payload, retain=True))

    async def _save(self) -> None:
        text = self._engine.snapshot()
        recent = encode_recent(self._recent)
        self._dirty = False
        self._save_due = False
        self._last_save = asyncio.get_running_loop().time()
        try:
            await asyncio.to_thread(_write_atomic, self._path, text)
            await asyncio.to_thread(_write_atomic, self._recent_path, recent)
        except OSError as exc:
            # EMFILE, ENOSPC, a read-only card: the alerts still work from memory;
            # the save is tried again at the next minute and shown in health.
            self._dirty = True
            entry = self._health.add_interface("alerts-state")
            entry.failures += 1
            entry.last_error = f"cannot save {self._path.name}: {exc}"
            entry.last_error_ns = self._clock_ns()
            log.error("Cannot save the alert state %s: %s; retrying", self._path, exc)

    async def handle_command(self, cmd: Command) -> dict[str, object]:
        """Acknowledge ``ack/<rule>/<subject>`` (payload ``{"by": "name"}``); the reply document.

        Raises:
            CommandRefused: Not ``ack/<rule>/<subject>``, an unknown rule, or no
                firing alert to acknowledge.
        """
        if len(cmd.path) != 3 or cmd.path[0] != "ack":
            raise CommandRefused("expected cmd/ack/<rule>/<subject>")
        rule, subject = cmd.path[1], cmd.path[2]
        if rule not in {r.name for r in self._rules}:
            raise CommandRefused(f"unknown rule {rule[:40]!r}")
        if len(subject) > MAX_SUBJECT_LEN or not subject.isprintable():
            raise CommandRefused("subject is not valid")
        alerts = self._engine.ack(rule, subject, cmd.by, self._clock_ns())
        if not alerts:
            raise CommandRefused("no firing alert to acknowledge", rule=rule, subject=subject)
        self._add(alerts)
        return {"rule": rule, "subject": subject, "by": cmd.by}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
