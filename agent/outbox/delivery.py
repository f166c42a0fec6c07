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
from collections.abc import Callable, Sequence

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
) -> None:
    """Deliver ``outbox`` records to ``sink`` forever (cancel to stop)."""
    backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
    depth = max(1, int(getattr(sink, "in_flight", 1)))
    if depth > 1:
        await _pipelined(outbox, sink, depth, health, backoff)
        return
    loop = asyncio.get_running_loop()
    while True:
        cursor = outbox.cursor(sink.name)
        if outbox.ready_id <= cursor:
            await outbox.wait_beyond(cursor)
            continue
        if sink.flush_interval_s > 0 and outbox.backlog(sink.name) < sink.batch_size:
            # Let a batch fill up, but never hold a record past the interval.
            deadline = loop.time() + sink.flush_interval_s
            while outbox.backlog(sink.name) < sink.batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await outbox.wait_beyond(
                    outbox.ready_id, timeout_s=remaining
                ):
                    break
        batch = await outbox.read_batch(sink.name, sink.batch_size)
        if not batch:
            continue
        try:
            rejections = await sink.deliver(batch)
        except SinkUnavailable as exc:
            await _unavailable(outbox, sink, exc, health, backoff)
            continue
        await _settle(outbox, sink, batch, rejections, health, backoff)


async def _pipelined(
    outbox: Outbox,
    sink: Sink,
    depth: int,
    health: SinkHealth | None,
    backoff: Backoff,
) -> None:
    """Keep up to ``depth`` batches in flight; acknowledge them in order."""
    while True:
        window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]]
        window = asyncio.Queue()
        room = asyncio.Semaphore(depth)
        sender = asyncio.create_task(_send(outbox, sink, window, room), name=f"send-{sink.name}")
        sender.add_done_callback(_wake_on_crash(asyncio.current_task()))
        unconfirmed: list[asyncio.Task[list[Rejection]]] = []
        try:
            failure = await _acknowledge(outbox, sink, window, room, unconfirmed, health, backoff)
        except asyncio.CancelledError:
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise OutboxError(f"delivery to {sink.name} stopped") from sender.exception()
            raise
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
        await _unavailable(outbox, sink, failure, health, backoff)


async def _acknowledge(
    outbox: Outbox,
    sink: Sink,
    window: asyncio.Queue[tuple[list[Record], asyncio.Task[list[Rejection]]]],
    room: asyncio.Semaphore,
    unconfirmed: list[asyncio.Task[list[Rejection]]],
    health: SinkHealth | None,
    backoff: Backoff,
) -> SinkUnavailable:
    """Settle the batches in ``window`` in order until one fails; return its failure."""
    while True:
        batch, task = await window.get()
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
) -> None:
    """Hand every ready record to ``sink`` in batches while ``room`` allows."""
    sent = outbox.cursor(sink.name)
    while True:
        if outbox.ready_id <= sent:
            await outbox.wait_beyond(sent)
            continue
        await room.acquire()
        batch = await outbox.read_batch(sink.name, sink.batch_size, after=sent)
        if not batch:
            room.release()
            continue
        window.put_nowait((batch, asyncio.create_task(sink.deliver(batch))))
        sent = batch[-1].id


def _wake_on_crash(acker: asyncio.Task[object] | None) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that interrupts ``acker`` when the sender died of an error."""

    def done(sender: asyncio.Task[None]) -> None:
        if acker is not None and not sender.cancelled() and sender.exception() is not None:
            acker.cancel()

    return done


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
        await asyncio.sleep(delay)  # the server asked for this long
    else:
        await sink.wait_available(delay)


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
