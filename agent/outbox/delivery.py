"""Delivery loops: one per sink, each moving its own outbox cursor.

A loop reads the records after its cursor, waits a little for a fuller batch
when the sink prefers batches (InfluxDB: up to 5000 lines or ``flush_interval_s``),
hands the batch to the sink and acknowledges what the sink confirmed. On
``SinkUnavailable`` it keeps the batch and backs off (1 s doubling to 60 s with
jitter, or the server's ``Retry-After``), but retries at once when the sink
says it is available again (``Sink.wait_available``: the MQTT connection is
back, InfluxDB answers ``/ping``), so delivery resumes within about a second of
the end of an outage. The devices and the other sinks are not affected because
the backlog waits on disk, not in memory.

A loop given a ``stop`` event ends when it is set, but never in the middle of a
batch: a batch handed to the sink is confirmed (and the cursor moved) or refused
first, so a reload that replaces the sink lets the next loop start from the exact
cursor the old connection reached. A loop waiting for records or for an unavailable
sink ends at once; the batch it kept stays in the outbox for the next loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import SinkHealth
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.outbox.store import Outbox

log = logging.getLogger(__name__)


async def deliver_loop(
    outbox: Outbox,
    sink: Sink,
    *,
    health: SinkHealth | None = None,
    backoff: Backoff | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Deliver ``outbox`` records to ``sink`` until cancelled or ``stop`` is set.

    With ``stop``, the loop returns once it is set, after the batch in flight (if any)
    was confirmed and acknowledged (module docstring).
    """
    backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
    loop = asyncio.get_running_loop()
    while stop is None or not stop.is_set():
        cursor = outbox.cursor(sink.name)
        if outbox.ready_id <= cursor:
            await _unless(stop, outbox.wait_beyond(cursor))
            continue
        if sink.flush_interval_s > 0 and outbox.backlog(sink.name) < sink.batch_size:
            # Let a batch fill up, but never hold a record past the interval.
            deadline = loop.time() + sink.flush_interval_s
            while outbox.backlog(sink.name) < sink.batch_size and not (stop and stop.is_set()):
                remaining = deadline - loop.time()
                if remaining <= 0 or not await _unless(
                    stop, outbox.wait_beyond(outbox.ready_id, timeout_s=remaining)
                ):
                    break
        batch = await outbox.read_batch(sink.name, sink.batch_size)
        if not batch:
            # The cursor is below the oldest record held (a sink added back after the
            # records it missed were freed): nothing is ready past what is held yet.
            await _unless(stop, outbox.wait_beyond(outbox.ready_id))
            continue
        try:
            rejections = await sink.deliver(batch)
        except SinkUnavailable as exc:
            delay = backoff.next_delay()
            if exc.retry_after_s is not None:
                delay = max(delay, min(exc.retry_after_s, 600.0))
            if health is not None:
                health.failures += 1
                health.last_error = str(exc)
            log.warning(
                "Sink %s unavailable (%s); %d records kept, retry %d in %.1f s or when it is back",
                sink.name,
                exc,
                outbox.backlog(sink.name),
                backoff.attempts,
                delay,
            )
            if exc.retry_after_s is not None:
                await _unless(stop, asyncio.sleep(delay))  # the server asked for this long
            else:
                await _unless(stop, sink.wait_available(delay))
            continue
        for rej in rejections:
            log.error(
                "Sink %s refused record %d for good (status %s): %s; moved to dead letters",
                sink.name,
                rej.record_id,
                rej.status,
                rej.reason,
            )
        await outbox.ack(sink.name, batch[-1].id, rejected=rejections)
        backoff.reset()
        if health is not None:
            health.last_delivery_ns = outbox.clock_ns()
            health.delivered += len(batch) - len(rejections)
            health.rejected += len(rejections)
            health.last_error = None


async def _unless(stop: asyncio.Event | None, waiting: Awaitable[object]) -> bool:
    """Await ``waiting``, unless ``stop`` is set first (it is then cancelled): its truth."""
    if stop is None:
        return bool(await waiting)
    task = asyncio.ensure_future(waiting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()  # no-op when it is done
    return bool(task.result()) if task.done() and not task.cancelled() else False
