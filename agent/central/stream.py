"""The central streams and the recorders' shared consumer, created idempotently.

Theory of operation
-------------------
``COFFEE`` holds what the sites' agents publish (``<prefix>.<site>.<device>.reading``
and ``.event``), replicated on ``replicas`` nodes (3 in production: a node may die
without losing a stored message). It is a *work queue*: a message is removed once a
recorder acknowledged it, so the stream holds only what is not yet in InfluxDB. When
it is full (``max_bytes``) it refuses new messages (``discard = new``) instead of
dropping old ones: the publishing agents get no PubAck, keep the readings in their
outboxes and retry; nothing is lost centrally, the backlog stays at the edge. Its
``duplicate_window`` is how long a ``Nats-Msg-Id`` is remembered (resends after a
lost PubAck are stored once).

``COFFEE_DEAD`` holds what the recorders refused (not JSON, not a reading, a site
that is not the subject's, too large, refused by InfluxDB), each with the reason in
a header, kept ``dead_max_age_s`` for inspection.

One durable pull consumer (``recorder``) is shared by every recorder instance:
each message goes to one of them; one that is not acknowledged within ``ack_wait_s``
(a recorder that crashed mid-batch) is delivered again to another. ``max_deliver``
is unlimited: a message is never given up because InfluxDB was down.

``COFFEE_STATUS`` is a JetStream key-value bucket (the stream ``KV_COFFEE_STATUS``):
each site's last status document, put by its agent every heartbeat (the retained
``agent/status`` of the site's broker, seen centrally; ``agent.central.status``).

``ensure_streams`` creates what is missing and updates what differs, so every
recorder may call it at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Names and limits of the central streams and consumer (README "Central": sizing)."""

    prefix: str = "coffee"
    stream: str = "COFFEE"
    dead_stream: str = "COFFEE_DEAD"
    status_bucket: str = "COFFEE_STATUS"
    consumer: str = "recorder"
    replicas: int = 3
    max_bytes: int = 8 * 1024**3
    max_msg_size: int = 1024 * 1024
    duplicate_window_s: float = 600.0
    dead_max_age_s: float = 30 * 86400.0
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20_000

    @property
    def subjects(self) -> list[str]:
        """The readings and events subjects of every site and device."""
        return [f"{self.prefix}.*.*.reading", f"{self.prefix}.*.*.event"]

    @property
    def dead_prefix(self) -> str:
        """Subjects of dead letters: ``<dead_prefix>.<site or _>``."""
        return f"{self.prefix}-dead"


def stream_config(s: StreamSettings) -> StreamConfig:
    """The readings stream: a replicated work queue that refuses when full."""
    return StreamConfig(
        name=s.stream,
        subjects=s.subjects,
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_bytes=s.max_bytes,
        max_msg_size=s.max_msg_size,
        storage=StorageType.FILE,
        num_replicas=s.replicas,
        duplicate_window=s.duplicate_window_s,
    )


def dead_stream_config(s: StreamSettings) -> StreamConfig:
    """The dead-letter stream: kept for ``dead_max_age_s``, oldest dropped first."""
    return StreamConfig(
        name=s.dead_stream,
        subjects=[f"{s.dead_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=s.dead_max_age_s,
        max_bytes=max(1, s.max_bytes // 8),
        storage=StorageType.FILE,
        num_replicas=s.replicas,
        duplicate_window=s.duplicate_window_s,
    )


def status_bucket_config(s: StreamSettings) -> StreamConfig:
    """The status bucket: a key-value bucket (one document per site, the last one)."""
    return StreamConfig(
        name=f"KV_{s.status_bucket}",
        subjects=[f"$KV.{s.status_bucket}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=1,
        max_msg_size=4096,
        max_bytes=64 * 1024 * 1024,
        allow_rollup_hdrs=True,
        deny_delete=True,
        storage=StorageType.FILE,
        num_replicas=s.replicas,
        duplicate_window=60.0,
    )


def consumer_config(s: StreamSettings) -> ConsumerConfig:
    """The recorders' shared durable pull consumer."""
    return ConsumerConfig(
        durable_name=s.consumer,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=s.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=s.max_ack_pending,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
        log.info("Created stream %s (%d replicas)", config.name, config.num_replicas or 1)
        return
    await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create or update the streams, the status bucket and the recorders' consumer.

    Raises:
        nats.js.errors.APIError: The cluster refused (too few nodes for the replicas ...).
    """
    await _ensure_stream(js, stream_config(settings))
    await _ensure_stream(js, dead_stream_config(settings))
    await _ensure_stream(js, status_bucket_config(settings))
    await js.add_consumer(settings.stream, consumer_config(settings))
