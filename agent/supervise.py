"""Supervisors: interfaces fail and come back; acquisition keeps reading.

Theory of operation
-------------------
The agent's first duty is to read the meters and commit their readings to the
outbox. Everything else is an *interface* to people and programs: the web
server, MQTT commands and status topics, the sinks' delivery loops, the alert
and lot services, the live pages. An interface may fail on input nobody
foresaw, on a bug, or on a resource error (``EMFILE`` when the open-file limit
is reached, ``ENOSPC`` on a side store). None of that may stop acquisition.

``supervise`` runs one interface as a coroutine; when it raises, the error is
logged with its traceback, counted in ``Health.interfaces``, and the interface
is started again after a capped, jittered back-off (1 s doubling to 60 s,
reset after it ran a minute without failing). An interface that returns has
finished on purpose (the MQTT connection after ``close``) and is not
restarted. Cancellation (shutdown) goes through. Device loops and the outbox
are *not* supervised here: if they fail, the process ends and systemd
restarts it, since every accepted reading is already on disk.

The listeners of accepted readings (alert rules, history, live pages) follow
the same rule inside the accept stage (``agent.accept``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.health import Health, InterfaceState

log = logging.getLogger(__name__)

#: An interface that ran this long without failing starts its back-off afresh.
HEALTHY_AFTER_S = 60.0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    health: Health,
    backoff: Backoff | None = None,
) -> None:
    """Run ``run()`` until it returns, restarting it with back-off whenever it raises.

    Args:
        name: The interface's name in health and logs (``web``, ``mqtt``, ``alerts``).
        run: Starts the interface; it is expected to run until cancelled.
        health: Where restarts and the last error are recorded.
        backoff: Delays between restarts (default 1 s doubling to 60 s).
    """
    backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
    entry = health.add_interface(name)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        entry.state = InterfaceState.RUNNING
        try:
            await run()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("Interface %s failed: %s", name, error, exc_info=exc)
        else:
            log.info("Interface %s finished", name)
            return
        if loop.time() - started >= HEALTHY_AFTER_S:
            backoff.reset()
        delay = backoff.next_delay()
        entry.state = InterfaceState.RESTARTING
        entry.failures += 1
        entry.last_error = error
        entry.last_error_ns = health.clock_ns()
        log.warning("Interface %s restarts in %.1f s (failure %d)", name, delay, entry.failures)
        await asyncio.sleep(delay)
