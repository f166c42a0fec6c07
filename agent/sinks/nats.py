"""NATS JetStream sink: outbox records published to a central stream, cursor moved on PubAck.

Theory of operation
-------------------
A site's agent delivers to a central NATS cluster with JetStream. A plain NATS
publish (or a QoS 1 publish through NATS's MQTT listener) is acknowledged before
the message is stored in a replicated stream, and is lost if the stream's leader
dies in between. A JetStream publish is answered by the stream itself, with a
``PubAck`` sent once the message is stored on a quorum of its replicas; so this
sink moves its outbox cursor only after every record of a batch has its PubAck.
Whatever was not acknowledged is published again from the outbox.

Every message carries ``Nats-Msg-Id`` = ``<site>/<device>/<epoch>/<seq>``. The
stream drops a second message with an id it saw within its duplicate window, so a
resend after a lost PubAck is stored once (the PubAck says ``duplicate``). The
``epoch`` is the outbox store's own random id (``Outbox.epoch``): a box with a new
SD card or a wiped store numbers ``seq`` from 1 again, in a new epoch, so its
messages never collide with those of its earlier life. Past the window, a resend
is harmless too: the recorder writes a reading to the same InfluxDB point.

Subjects mirror the MQTT topics::

    <prefix>.<site>.<device>.reading    JSON reading (see agent.readings)
    <prefix>.<site>.<device>.event      JSON event

Site and device ids are lowercase letters, digits, ``-`` and ``_`` (checked by the
config), so they are always single subject tokens. The cluster gives each site
credentials whose publish permission is ``<prefix>.<site>.>`` and whose subscribe
permission is its own inbox prefix ``_INBOX_<site>.>`` (where its PubAcks arrive): a
box can neither write in another site's name nor read another site's replies.

Connection: ``connection_loop`` connects to one of the configured servers (tried in
a random order; TLS and credentials from files), with nats-py's own reconnection
off: when the connection is lost the loop reconnects after a jittered back-off
doubling up to ``reconnect_max_s``. Hundreds of sites that lost the central cluster
together (a regional outage) then come back spread over the back-off, not at once.

Status (the retained ``agent/status`` and its Last Will, through the cluster): NATS
keeps no retained messages and has no Last Will, so while connected the sink puts
the site's status document in the JetStream key-value bucket ``status_bucket``
(``COFFEE_STATUS``, key = the site id, subject ``$KV.COFFEE_STATUS.<site>``) every
``heartbeat_s``: ``{"state": "online", "heartbeat_s": ..., "devices_online": ...,
"devices_total": ..., "epoch": ..., "ts": ...}``. The bucket keeps the last document
of each site (retained); a clean shutdown puts ``"state": "offline"`` before it
disconnects. The recorders watch the bucket (``agent.central.status``) and declare a
site offline when its heartbeats stop for ``3 * heartbeat_s`` (a box killed, a link
cut): that is the Last Will. A site's user may put only its own key. A status that
cannot be put (no bucket yet, a cluster electing) is logged and tried at the next
beat; it never holds back delivery.

Errors: a publish that times out, finds the connection down or no stream
(``no responders``) raises ``SinkUnavailable`` and the batch is kept. A record the
stream refuses for good (larger than the stream's or the server's largest message)
is returned as a ``Rejection`` and goes to the outbox's dead letters. A permission
violation (a site publishing outside its subjects: wrong credentials or prefix) is
reported by the server on the connection, logged, shown in health, and the batch
is kept: it is a configuration problem, not a bad record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import DeviceState, Health, SinkHealth
from coffee_telemetry.agent.outbox.sink import ConnectionGate, Record, Rejection

log = logging.getLogger(__name__)

#: JetStream's error code for a message larger than the stream allows.
_TOO_LARGE_CODES = frozenset({10054})

#: Most publishes of one batch in flight at once.
MAX_IN_FLIGHT = 256


def message_id(site: str, device: str, epoch: str, seq: int) -> str:
    """The ``Nats-Msg-Id`` of one record: ``site/device/epoch/seq``."""
    return f"{site}/{device}/{epoch}/{seq}"


def subject_for(prefix: str, site: str, device: str, kind: str) -> str:
    """The subject a record is published on."""
    return f"{prefix}.{site}.{device}.{kind}"


def status_subject(bucket: str, site: str) -> str:
    """The subject of ``site``'s key in the status bucket (a JetStream KV put)."""
    return f"$KV.{bucket}.{site}"


def status_stream(bucket: str) -> str:
    """The stream behind the status bucket."""
    return f"KV_{bucket}"


class NatsSink:
    """Publishes outbox records to a JetStream stream; see the module docstring."""

    flush_interval_s = 0.0

    def __init__(
        self,
        *,
        servers: Sequence[str],
        site: str,
        health: Health,
        prefix: str = "coffee",
        stream: str | None = "COFFEE",
        epoch: str | None = None,
        username: str | None = None,
        password: str | None = None,
        creds_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        batch_size: int = 100,
        publish_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        status_bucket: str | None = "COFFEE_STATUS",
        heartbeat_s: float = 15.0,
        name: str = "nats",
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not servers:
            raise ValueError("at least one NATS server is needed")
        self.name = name
        self.batch_size = batch_size
        self.epoch = epoch
        self._servers = list(servers)
        self._site = site
        self._prefix = prefix
        self._stream = stream
        self._username = username
        self._password = password
        self._creds_file = creds_file
        self._ssl_context = ssl_context
        self._publish_timeout_s = publish_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._health = health
        self._sink_health: SinkHealth = health.sinks.get(name) or health.add_sink(name)
        self._status_bucket = status_bucket
        self._heartbeat_s = heartbeat_s
        self._backoff = backoff or Backoff(
            initial_s=min(0.5, reconnect_max_s), maximum_s=reconnect_max_s, jitter=0.5
        )
        self._rng = rng or random.Random()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._gate = ConnectionGate()
        self._stopping = asyncio.Event()
        #: Errors the server reported on the connection (permission violations ...).
        self.server_errors = 0
        #: Records the stream already held (a resend within its duplicate window).
        self.duplicates = 0
        #: Status documents the bucket stored, and those it did not.
        self.status_puts = 0
        self.status_failures = 0
        self._status_ok = True

    def subject(self, record: Record) -> str:
        """The subject ``record`` is published on."""
        return subject_for(self._prefix, self._site, record.device, record.kind)

    # -- the connection -----------------------------------------------------------------

    async def _connect_once(self) -> tuple[NatsClient, asyncio.Event]:
        """Connect to the first server that answers, each tried once, in a random order.

        Returns:
            The client, and an event set when its connection is lost.
        """
        order = list(self._servers)
        self._rng.shuffle(order)
        nc = NatsClient()
        lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()

        try:
            await nc.connect(
                servers=order,
                dont_randomize=True,
                name=f"coffee-telemetry-{self._site}",
                # nats-py's own reconnection is off: connection_loop reconnects with
                # jitter. One attempt per server (nats-py counts attempts after the first).
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=max(1, round(self._connect_timeout_s)),
                user=self._username,
                password=self._password,
                user_credentials=str(self._creds_file) if self._creds_file else None,
                tls=self._ssl_context,
                error_cb=self._on_error,
                disconnected_cb=on_lost,
                closed_cb=on_lost,
                inbox_prefix=f"_INBOX_{self._site}",
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise ConnectionError(f"no NATS server answered: {exc!r}") from exc
        return nc, lost

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, OSError | TimeoutError):
            return  # a server that does not answer: connection_loop reports it
        self.server_errors += 1
        self._sink_health.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("NATS reported an error for site %s: %s", self._site, exc)

    async def connection_loop(self) -> None:
        """Stay connected until ``close``; reconnect after a jittered back-off."""
        while not self._stopping.is_set():
            try:
                nc, lost_event = await self._connect_once()
            except ConnectionError as exc:
                self._sink_health.last_error = str(exc)
                delay = self._backoff.next_delay()
                log.warning(
                    "NATS unreachable (%s); attempt %d, next in %.1f s",
                    exc,
                    self._backoff.attempts,
                    delay,
                )
                await self._wait_stop(delay)
                continue
            self._nc = nc
            self._js = nc.jetstream(timeout=self._publish_timeout_s)
            self._backoff.reset()
            self._sink_health.connected = True
            self._gate.opened()
            log.info("Connected to NATS %s", nc.connected_url.netloc if nc.connected_url else "?")
            beats = asyncio.ensure_future(self._heartbeats(self._js))
            try:
                stop = asyncio.ensure_future(self._stopping.wait())
                lost = asyncio.ensure_future(lost_event.wait())
                try:
                    await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    lost.cancel()
                    beats.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beats
                if self._stopping.is_set() and not lost_event.is_set():
                    await self._put_status(self._js, "offline")  # the clean goodbye
            finally:
                self._gate.closed()
                self._sink_health.connected = False
                self._nc = None
                self._js = None
                with contextlib.suppress(Exception):
                    await nc.close()
            if not self._stopping.is_set():
                delay = self._backoff.next_delay()
                log.warning("Lost the NATS connection; reconnecting in %.1f s", delay)
                await self._wait_stop(delay)

    def status_document(self, state: str) -> bytes:
        """The site's status as put in the bucket (``state``: online or offline)."""
        devices = self._health.devices.values()
        doc = {
            "state": state,
            "heartbeat_s": self._heartbeat_s,
            "devices_online": sum(1 for d in devices if d.state is DeviceState.ONLINE),
            "devices_total": len(devices),
            "epoch": self.epoch or "",
            "ts": round(time.time(), 3),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    async def _put_status(self, js: JetStreamContext | None, state: str) -> bool:
        """Put the status document; a failure is counted and logged, never raised."""
        if self._status_bucket is None or js is None:
            return False
        try:
            await js.publish(
                status_subject(self._status_bucket, self._site),
                self.status_document(state),
                # A goodbye must not hold up the shutdown for long.
                timeout=min(self._publish_timeout_s, max(1.0, self._heartbeat_s))
                if state == "online"
                else min(self._publish_timeout_s, 2.0),
                stream=status_stream(self._status_bucket),
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self.status_failures += 1
            # One warning per streak of failures (a missing bucket fails every beat).
            level = logging.WARNING if self._status_ok else logging.DEBUG
            log.log(level, "Status %s not stored in %s: %r", state, self._status_bucket, exc)
            self._status_ok = False
            return False
        self.status_puts += 1
        self._status_ok = True
        return True

    async def _heartbeats(self, js: JetStreamContext | None) -> None:
        """``online`` now and every ``heartbeat_s`` while this connection lasts."""
        if self._status_bucket is None:
            return
        while True:
            await self._put_status(js, "online")
            await asyncio.sleep(self._heartbeat_s)

    async def _wait_stop(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    # -- delivery -----------------------------------------------------------------------

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Publish ``records`` and return once the stream acknowledged every one.

        Raises:
            SinkUnavailable: Not connected, or a publish failed or got no PubAck.
        """
        if self.epoch is None:
            raise SinkUnavailable("the outbox epoch is not known yet", sink=self.name)
        if not await self._gate.wait_up(self._publish_timeout_s):
            raise SinkUnavailable("not connected to NATS", sink=self.name)
        js = self._js
        if js is None:
            self._gate.spent()
            raise SinkUnavailable("not connected to NATS", sink=self.name)
        rejections: list[Rejection] = []
        for start in range(0, len(records), MAX_IN_FLIGHT):
            chunk = records[start : start + MAX_IN_FLIGHT]
            results = await asyncio.gather(
                *(self._publish(js, record) for record in chunk), return_exceptions=True
            )
            for record, result in zip(chunk, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, Rejection):
                    log.warning(
                        "Rejected record %d for %s: %s", record.id, self.name, result.reason
                    )
                    rejections.append(result)
                elif isinstance(result, BaseException):
                    self._gate.spent()
                    raise SinkUnavailable(
                        f"publish failed: {type(result).__name__}: {result}", sink=self.name
                    ) from result
        return rejections

    async def _publish(self, js: JetStreamContext, record: Record) -> Rejection | None:
        """Publish one record; a refusal for good is returned, anything else raised."""
        seq = record.reading.seq
        assert self.epoch is not None
        headers = {"Nats-Msg-Id": message_id(self._site, record.device, self.epoch, seq)}
        try:
            ack = await js.publish(
                self.subject(record),
                record.payload,
                timeout=self._publish_timeout_s,
                stream=self._stream,
                headers=headers,
            )
        except nats.errors.MaxPayloadError as exc:
            return Rejection(record.id, f"larger than the server's largest message: {exc}")
        except nats.js.errors.APIError as exc:
            if exc.err_code in _TOO_LARGE_CODES:
                return Rejection(record.id, f"refused by the stream: {exc.description}")
            raise
        if ack.duplicate:
            self.duplicates += 1
        return None

    async def wait_available(self, timeout_s: float) -> None:
        """Return when a connection newer than the failed delivery is up, or after ``timeout_s``."""
        await self._gate.wait_newer(timeout_s)

    async def close(self) -> None:
        """Ask the connection loop to disconnect and end."""
        self._stopping.set()
