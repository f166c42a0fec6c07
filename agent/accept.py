"""The accept stage: where a reading becomes the agent's responsibility.

Theory of operation
-------------------
Every source of readings and events ends in this one stage: a stream device, a
polled Modbus unit, a balance asked over MT-SICS (``AcceptStage.accept``), and
the agent's own records, lot changes, alert transitions, its status
(``AcceptStage.record``). A source hands over ``Draft`` readings: what it
measured, with the time its bytes arrived; the stage does the rest.

1. **Stamp.** Each draft gets its device's next sequence number and a timestamp
   unique for that device (``readings.Stamper``), in the order given. One
   stamper for the whole agent, so ``(device, seq)`` never repeats, across
   restarts too (the outbox keeps the last numbers).
2. **Commit.** The readings go to the outbox in one transaction (``commit``,
   the outbox's ``accept``). Once it returns they are on disk, and every sink
   will get them, through crashes, restarts and outages. If the commit fails,
   the error goes back to the source (acquisition itself is failing).
3. **Fan out** (``accept`` only). Then each listener is called with each
   reading, in order: the alert rules, the local history, the live pages. A
   listener is an interface, not acquisition: one that raises is counted in
   ``Health.interfaces["fanout"]``, logged (rate-limited) and skipped for that
   reading only; the others and the source never notice. The agent's own
   records are outcomes of that fan-out (an alert transition, a lot change
   already shown on the pages), so ``record`` does not feed them back.

Delivery to the sinks happens after, in the outbox's delivery loops, each with
its own cursor. So the whole pipeline reads:

    sources → accept: stamp → commit (outbox) → fan-out (rules, history, live)
                                   └→ delivery loops → sinks (MQTT, InfluxDB, webhooks)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from coffee_telemetry.agent.commands import RefusalLog
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Draft, Reading, Stamper

log = logging.getLogger(__name__)

#: Called with each accepted reading, after the commit (must not block).
ReadingListener = Callable[[Reading], None]
#: Commits readings; once it returns they are safe (the outbox's ``accept``).
Commit = Callable[[Sequence[Reading]], Awaitable[object]]
#: What sources call: stamp, commit, then fan out; returns the stamped readings.
Accept = Callable[[Sequence[Draft]], Awaitable[Sequence[Reading]]]


class AcceptStage:
    """Stamps drafts, commits them, then hands them to every listener (see the module docstring).

    Args:
        commit: The outbox's ``accept``.
        stamper: The agent's one stamper, restored from the outbox's last sequences.
        health: Where listener failures are counted (``interfaces["fanout"]``).
        listeners: Called with each accepted reading, after the commit.
    """

    def __init__(
        self,
        commit: Commit,
        *,
        stamper: Stamper,
        health: Health,
        listeners: Sequence[ReadingListener] = (),
    ) -> None:
        self._commit = commit
        self._stamper = stamper
        self._listeners = list(listeners)
        self._entry = health.add_interface("fanout")
        self._errors = RefusalLog(log)

    def add_listener(self, listener: ReadingListener) -> None:
        """Call ``listener`` with every reading accepted from now on."""
        self._listeners.append(listener)

    async def accept(self, drafts: Sequence[Draft]) -> list[Reading]:
        """Stamp and commit ``drafts``, then fan them out (listener errors are contained).

        Returns:
            The readings as committed, in the order of ``drafts``.

        Raises:
            OutboxError: The commit failed; nothing was accepted or fanned out.
        """
        if not drafts:
            return []
        readings = self._stamper.stamp_drafts(drafts)
        await self._commit(readings)
        listeners = self._listeners
        for reading in readings:
            for listener in listeners:
                try:
                    listener(reading)
                except Exception as exc:
                    self._failed(listener, reading, exc)
        return readings

    async def record(self, drafts: Sequence[Draft]) -> list[Reading]:
        """Stamp and commit the agent's own records (no fan-out: see the module docstring).

        Raises:
            OutboxError: The commit failed; nothing was recorded.
        """
        if not drafts:
            return []
        readings = self._stamper.stamp_drafts(drafts)
        await self._commit(readings)
        return readings

    def _failed(self, listener: ReadingListener, reading: Reading, exc: Exception) -> None:
        self._entry.failures += 1
        self._entry.last_error = f"{type(exc).__name__}: {exc}"
        self._entry.last_error_ns = reading.ts_ns
        self._errors.warning(
            "Listener %s failed on a reading of %s: %r",
            getattr(listener, "__qualname__", repr(listener)),
            reading.device,
            exc,
            exc_info=True,
        )
