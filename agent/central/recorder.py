"""The recorder: readings from the central stream into InfluxDB, acknowledged after the write.

Theory of operation
-------------------
Any number of recorders fetch from one durable pull consumer (``agent.central.stream``):
each batch of messages goes to one recorder. A batch is handled in four steps:

1. *Check* every message: its subject is ``<prefix>.<site>.<device>.<kind>``, it is
   at most ``max_message_bytes``, it decodes as the agent's JSON reading
   (``agent.readings.decode_reading``), its ``site`` tag, device and kind are the
   subject's (the subject is what the site's NATS credentials allowed it to publish
   on, so a reading naming another site is a forgery), and it renders as a line.
2. *Dead-letter* the refused ones: each is published to the dead-letter stream with
   its reason in the ``Coffee-Dead-Reason`` header and the original subject and
   stream sequence, and acknowledged once the dead-letter stream has it. They are
   counted by reason and never block the batch.
3. *Write* the good ones with the agent's own InfluxDB sink code
   (``agent.sinks.influx``): one request per batch, the same error policy (a line
   InfluxDB refuses for good becomes a dead letter). While InfluxDB is unavailable
   the batch is kept and retried with back-off (or as soon as ``/ping`` answers),
   and the messages' ack deadline is pushed back (``in_progress``) so the stream
   does not hand them to another recorder meanwhile.
4. *Acknowledge* them, only now.

A recorder that dies between 1 and 4 acknowledged nothing of its batch; after the
consumer's ``ack_wait`` the stream delivers it again, to any recorder. Writing it
twice is harmless: a reading has a fixed timestamp and tags, so InfluxDB overwrites
the same point. Recorders hold no state; start as many as the load needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.central.stream import StreamSettings
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Rejection, Sink
from coffee_telemetry.agent.readings import Reading, decode_reading
from coffee_telemetry.agent.sinks.lineprotocol import encode_line

log = logging.getLogger(__name__)

#: Largest message a recorder decodes (a reading is a few hundred bytes).
MAX_MESSAGE_BYTES = 64 * 1024

#: Header naming why a message was dead-lettered.
REASON_HEADER = "Coffee-Dead-Reason"
#: Headers naming where a dead letter came from.
SUBJECT_HEADER = "Coffee-Subject"
SEQUENCE_HEADER = "Coffee-Stream-Seq"

#: Longest text kept in a reason header.
MAX_REASON_CHARS = 200


class Refused(ValueError):
    """A message that can never be recorded; ``kind`` counts it, ``str()`` explains it."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}"[:MAX_REASON_CHARS])
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Checked:
    """A message that passed every check, ready to write."""

    msg: Msg
    reading: Reading
    line: str


@dataclass(slots=True)
class RecorderStats:
    """What one recorder did since it started."""

    batches: int = 0
    written: int = 0
    redelivered: int = 0
    write_retries: int = 0
    dead: Counter[str] = field(default_factory=Counter)

    @property
    def dead_total(self) -> int:
        """Messages dead-lettered, all reasons."""
        return sum(self.dead.values())


def check_message(subject: str, data: bytes, *, prefix: str) -> tuple[Reading, str]:
    """Decode and check one message from the stream.

    Returns:
        The reading and its InfluxDB line.

    Raises:
        Refused: The message can never be recorded (the reason says why).
    """
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != prefix or parts[3] not in ("reading", "event"):
        raise Refused("subject", f"not {prefix}.<site>.<device>.<kind>: {subject[:80]!r}")
    _, site, device, kind = parts
    if len(data) > MAX_MESSAGE_BYTES:
        raise Refused("too-large", f"{len(data)} bytes (at most {MAX_MESSAGE_BYTES})")
    try:
        reading = decode_reading(data)
    except (ValueError, RecursionError) as exc:
        raise Refused("not-a-reading", str(exc)) from None
    if reading.tags.get("site") != site:
        raise Refused(
            "site", f"tag site={reading.tags.get('site', '')[:48]!r} published as {site!r}"
        )
    if reading.device != device or reading.kind != kind:
        raise Refused("device", f"{reading.device[:48]!r}/{reading.kind[:16]!r} on {subject!r}")
    try:
        line = encode_line(reading)
    except ValueError as exc:
        raise Refused("line", str(exc)) from None
    return reading, line


class Recorder:
    """One recorder instance: fetch, check, dead-letter, write, acknowledge."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        sink: Sink,
        settings: StreamSettings,
        batch_size: int = 1000,
        fetch_timeout_s: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._js = js
        self._sink = sink
        self._settings = settings
        self._batch_size = batch_size
        self._fetch_timeout_s = fetch_timeout_s
        self._backoff = backoff or Backoff(initial_s=0.5, maximum_s=30.0)
        self.stats = RecorderStats()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Record until ``stop``; fetch errors (a leader election) are waited out."""
        sub = await self._js.pull_subscribe_bind(
            durable=self._settings.consumer, stream=self._settings.stream
        )
        retry = Backoff(initial_s=0.2, maximum_s=5.0)
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self._batch_size, timeout=self._fetch_timeout_s)
            except TimeoutError:
                continue  # nothing to do
            except (nats.errors.Error, OSError) as exc:
                delay = retry.next_delay()
                log.warning("Fetch failed (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            retry.reset()
            try:
                await self.handle(msgs)
            except (nats.errors.Error, OSError) as exc:
                # A dead letter not confirmed (the cluster is electing a leader): what
                # was not acknowledged comes back after ack_wait.
                delay = retry.next_delay()
                log.warning("Batch left unfinished (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """End ``run`` after the batch in hand."""
        self._stopping.set()

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """One batch: check, dead-letter the refused, write the rest, acknowledge."""
        self.stats.batches += 1
        good: list[Checked] = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                self.stats.redelivered += 1
            try:
                reading, line = check_message(msg.subject, msg.data, prefix=self._settings.prefix)
            except Refused as refused:
                await self._dead(msg, refused.kind, str(refused))
                continue
            good.append(Checked(msg, reading, line))
        if not good:
            return
        records = [
            Record(
                id=i,
                payload=c.msg.data,
                reading=c.reading,
                line=c.line,
                device=c.reading.device,
                kind=c.reading.kind,
            )
            for i, c in enumerate(good)
        ]
        rejections = await self._write(records, [c.msg for c in good])
        rejected = {r.record_id: r for r in rejections}
        for i, checked in enumerate(good):
            rejection = rejected.get(i)
            if rejection is not None:
                await self._dead(checked.msg, "influx", f"influx: {rejection.reason}")
            else:
                await checked.msg.ack()
        self.stats.written += len(good) - len(rejected)

    async def _write(self, records: Sequence[Record], msgs: Sequence[Msg]) -> list[Rejection]:
        """Write until InfluxDB took the batch; keep the messages ours meanwhile."""
        while True:
            try:
                rejections = await self._sink.deliver(records)
            except SinkUnavailable as exc:
                self.stats.write_retries += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "InfluxDB unavailable (%s); %d messages kept, retry in %.1f s",
                    exc,
                    len(records),
                    delay,
                )
                await self._keep(msgs)
                await self._sink.wait_available(min(delay, self._settings.ack_wait_s / 3))
                continue
            self._backoff.reset()
            return rejections

    async def _keep(self, msgs: Sequence[Msg]) -> None:
        """Push back the messages' ack deadline (best effort: redelivery is harmless)."""
        for msg in msgs:
            try:
                await msg.in_progress()
            except (nats.errors.Error, OSError):
                return

    async def _dead(self, msg: Msg, kind: str, reason: str) -> None:
        """Store ``msg`` in the dead-letter stream with ``reason``, then acknowledge it.

        Raises:
            nats.errors.Error: The dead-letter stream did not confirm; the message is not
                acknowledged, so it comes back.
        """
        seq = msg.metadata.sequence.stream
        site = msg.subject.split(".")[1] if msg.subject.count(".") == 3 else "_"
        headers = {
            REASON_HEADER: reason.replace("\r", " ").replace("\n", " "),
            SUBJECT_HEADER: msg.subject[:200],
            SEQUENCE_HEADER: str(seq),
            "Nats-Msg-Id": f"dead/{self._settings.stream}/{seq}",
        }
        await self._js.publish(
            f"{self._settings.dead_prefix}.{site}",
            msg.data,
            stream=self._settings.dead_stream,
            headers=headers,
        )
        await msg.ack()
        self.stats.dead[kind] += 1
        log.warning("Dead-lettered stream message %d (%s): %s", seq, msg.subject[:200], reason)
