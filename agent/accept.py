"""The accept stage: where a reading becomes the agent's responsibility.

Theory of operation
-------------------
Every source of readings and events, a stream device, a polled Modbus unit, a
balance asked over MT-SICS, ends in the same call: ``AcceptStage.accept``.

1. **Commit.** The readings go to the outbox in one transaction (``commit``,
   the outbox's ``accept``). Once it returns they are on disk, and every sink
   will get them, through crashes, restarts and outages. If the commit fails,
   the error goes back to the device loop (acquisition itself is failing).
2. **Fan out.** Then each listener is called with each reading, in order:
   the alert rules, the local history, the live pages. A listener is an
   interface, not acquisition: one that raises is counted in
   ``Health.interfaces["fanout"]``, logged (rate-limited) and skipped for that
   reading only; the others and the device loop never notice.

Stamping (time, sequence number, tags) happens before, in the source that knows
when the bytes arrived; delivery to the sinks happens after, in the outbox's
delivery loops, each with its own cursor. So the whole pipeline reads:

    sources → stamp → accept: commit (outbox) → fan-out (rules, history, live)
                                   └→ delivery loops → sinks (MQTT, InfluxDB, webhooks)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from coffee_telemetry.agent.commands import RefusalLog
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Reading

log = logging.getLogger(__name__)

#: Called with each accepted reading, after the commit (must not block).
ReadingListener = Callable[[Reading], None]
#: Commits readings; once it returns they are safe (the outbox's ``accept``).
Commit = Callable[[Sequence[Reading]], Awaitable[object]]
#: What sources call: commit, then fan out.
Accept = Callable[[Sequence[Reading]], Awaitable[None]]


class AcceptStage:
    """Commits readings, then hands them to every listener (see the module docstring)."""

    def __init__(
        self,
        commit: Commit,
        *,
        health: Health,
        listeners: Sequence[ReadingListener] = (),
    ) -> None:
        self._commit = commit
        self._listeners = list(listeners)
        self._entry = health.add_interface("fanout")
        self._errors = RefusalLog(log)

    def add_listener(self, listener: ReadingListener) -> None:
        """Call ``listener`` with every reading accepted from now on."""
        self._listeners.append(listener)

    async def accept(self, readings: Sequence[Reading]) -> None:
        """Commit ``readings`` to the outbox, then fan them out (listener errors are contained)."""
        if not readings:
            return
        await self._commit(readings)
        for reading in readings:
            for listener in self._listeners:
                try:
                    listener(reading)
                except Exception as exc:
                    self._failed(listener, reading, exc)

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
