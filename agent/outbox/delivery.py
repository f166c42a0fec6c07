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

A sink that says it can keep several batches in flight (``Sink.in_flight``, the MQTT
sink: QoS 1 publishes whose PUBACKs come back later) is fed without waiting for each
batch's confirmation before sending the next: one slow acknowledgement (a broker's
PUBACK held back by TCP's delayed ACK, 40 ms on Linux) then delays no later reading.
The cursor still moves in id order, and only past batches the sink confirmed; when a
batch fails, the batches sent after it are abandoned and sent again from the cursor
(at-least-once, as after any outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import OutboxError, SinkUnavailable
from coffee_telemetry.agent.health import SinkHealth
from coffee_telemetry.agent.outbox.sink import Record, Rejection, Sink
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

    With ``stop``, the loop returns once it is set, after the batches in flight (if
    any) were confirmed and acknowledged (module docstring).
    """
    backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
    depth = max(1, int(getattr(sink, "in_flight", 1)))
    if depth > 1:
        await _pipelined(outbox, sink, depth, health, backoff, stop)
        return
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
            await _unavailable(outbox, sink, exc, health, backoff, stop)
            continue
        await _settle(outbox, sink, batch, rejections, health, backoff)


async def _pipelined(
    outbox: Outbox,
    sink: Sink,
    depth: int,
    health: SinkHealth | None,
    backoff: Backoff,
    stop: asyncio.Event | None,
) -> None:
    """Keep up to ``depth`` batches in flight; acknowledge them in order."""
    while stop is None or not stop.is_set():
        window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]]
        window = asyncio.Queue()
        room = asyncio.Semaphore(depth)
        sender = asyncio.create_task(
            _send(outbox, sink, window, room, stop), name=f"send-{sink.name}"
        )
        unconfirmed: list[asyncio.Task[list[Rejection]]] = []
        try:
            failure = await _acknowledge(
                outbox, sink, window, room, sender, unconfirmed, health, backoff
            )
        finally:
            # What was sent after a failed batch is abandoned and sent again from the
            # cursor; on cancellation nothing unconfirmed is acknowledged either.
            sender.cancel()
            unconfirmed.extend(task for _, task in _drain(window))
            for task in unconfirmed:
                task.cancel()
            for each in (sender, *unconfirmed):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await each
        if failure is None:
            return  # stopped, with every batch sent confirmed
        await _unavailable(outbox, sink, failure, health, backoff, stop)


async def _acknowledge(
    outbox: Outbox,
    sink: Sink,
    window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]],
    room: asyncio.Semaphore,
    sender: asyncio.Task[None],
    unconfirmed: list[asyncio.Task[list[Rejection]]],
    health: SinkHealth | None,
    backoff: Backoff,
) -> SinkUnavailable | None:
    """Settle the batches in ``window`` in order.

    Returns the failure of the first batch that fails, or ``None`` once the sender
    stopped and every batch it sent is settled.
    """
    while True:
        if window.empty():
            if sender.done():
                if not sender.cancelled() and sender.exception() is not None:
                    raise OutboxError(f"delivery to {sink.name} stopped") from sender.exception()
                return None
            getting = asyncio.ensure_future(window.get())
            await asyncio.wait({getting, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                continue
            batch, task = getting.result()
        else:
            batch, task = window.get_nowait()
        unconfirmed[:] = [task]
        try:
            rejections = await task
        except SinkUnavailable as exc:
            return exc
        unconfirmed.clear()
        await _settle(outbox, sink, batch, rejections, health, backoff)
        room.release()


async def _send(
    outbox: Outbox,
    sink: Sink,
    window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]],
    room: asyncio.Semaphore,
    stop: asyncio.Event | None,
) -> None:
    """Hand every ready record to ``sink`` in batches while ``room`` allows, until ``stop``."""
    sent = outbox.cursor(sink.name)
    while stop is None or not stop.is_set():
        if outbox.ready_id <= sent:
            await _unless(stop, outbox.wait_beyond(sent))
            continue
        if not await _unless(stop, room.acquire()):
            continue
        batch = await outbox.read_batch(sink.name, sink.batch_size, after=sent)
        if not batch:
            room.release()
            # Nothing held past ``sent`` yet (a sink added back after the records it
            # missed were freed): wait for new ones rather than spin.
            await _unless(stop, outbox.wait_beyond(outbox.ready_id))
            continue
        window.put_nowait((batch, asyncio.create_task(sink.deliver(batch))))
        sent = batch[-1].id


def _drain(
    window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]],
) -> list[tuple[list[Record], asyncio.Task[list[Rejection]]]]:
    items = []
    while not window.empty():
        items.append(window.get_nowait())
    return items


async def _unavailable(
    outbox: Outbox,
    sink: Sink,
    exc: SinkUnavailable,
    health: SinkHealth | None,
    backoff: Backoff,
    stop: asyncio.Event | None = None,
) -> None:
    """Count and log a failed delivery, then wait to retry (the batch is kept)."""
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


async def _settle(
    outbox: Outbox,
    sink: Sink,
    batch: Sequence[Record],
    rejections: Sequence[Rejection],
    health: SinkHealth | None,
    backoff: Backoff,
) -> None:
    """Acknowledge a confirmed ``batch``: move the cursor, dead-letter ``rejections``."""
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
