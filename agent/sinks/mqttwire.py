"""A lean MQTT 3.1.1 publishing connection for readings: QoS 1, whole batches per write.

Theory of operation
-------------------
The MQTT sink's readings are the agent's hottest output: at a busy site hundreds of
QoS 1 publishes a second, each needing its PUBACK before the outbox cursor moves. A
general-purpose client pays per message for what this path never uses (a message
object with a lock, a future per publish, a ``send()`` per packet and three
``recv()`` calls per PUBACK). This connection does only what the path needs:

* ``publish_batch`` encodes every PUBLISH of a batch and hands them to the transport in
  one write; it returns one future, resolved when the broker has acknowledged every
  message of the batch (PUBACK per packet id), or failed when the connection is lost;
* ``data_received`` decodes whatever the socket delivered in one pass: a buffer of
  PUBACKs (and the CONNACK, PINGRESPs) in any split across reads;
* a keep-alive task sends PINGREQ when nothing was written for half the keep-alive
  interval, and drops the connection when the broker stayed silent for one and a half
  intervals after it (the broker's own rule, applied from this side);
* a PUBLISH the broker sends anyway (this connection subscribes to nothing, but some
  brokers deliver to every session, amqtt among them) is acknowledged as its QoS asks
  (PUBACK; PUBREC, then PUBCOMP on PUBREL) and dropped;
* anything else (an unknown packet, a malformed length, a packet over ``MAX_INCOMING``)
  ends the connection: the sink reconnects and the outbox sends again what was not
  acknowledged.

It carries no subscriptions, no Last Will and no retained messages: the sink's control
connection (``aiomqtt``) keeps those. Its client id is the control connection's with
``/data`` appended, so a broker's per-user ACLs cover both.

Packet ids come from a 16-bit counter that skips ids still in flight (the sink keeps
at most ``in_flight * batch_size`` messages out, far below 65 535).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

#: Longest packet accepted from the broker: its own answers are 2 to 4 bytes; a PUBLISH
#: it sends anyway is at most the shipped Mosquitto's ``max_packet_size``.
MAX_INCOMING = 262_144
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

PUBLISH_QOS1 = 0x32
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62
PUBCOMP = 0x70
CONNACK = 0x20
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"


class WireError(Exception):
    """The broker refused the connection, broke the protocol, or the link was lost."""


def _length(n: int) -> bytes:
    """MQTT's variable-length "remaining length" (1 to 4 bytes)."""
    if not 0 <= n <= 268_435_455:
        raise WireError(f"packet too long for MQTT ({n} bytes)")
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise WireError("string field longer than 65 535 bytes")
    return len(value).to_bytes(2, "big") + value


def connect_packet(
    client_id: str, *, keepalive_s: int, username: str | None, password: str | None
) -> bytes:
    """CONNECT, protocol level 4 (3.1.1), clean session."""
    flags = 0x02
    payload = _string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    variable = _string(b"MQTT") + bytes((4, flags)) + keepalive_s.to_bytes(2, "big")
    body = variable + payload
    return bytes((0x10,)) + _length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1, not retained."""
    head = _string(topic) + packet_id.to_bytes(2, "big")
    return bytes((PUBLISH_QOS1,)) + _length(len(head) + len(payload)) + head + payload


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet from the broker: its first byte and its body."""

    kind: int
    body: bytes


@dataclass
class PacketReader:
    """Split a byte stream from the broker into packets; refuse anything else."""

    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Packet]:
        """The packets completed by ``data``.

        Raises:
            WireError: A length over ``MAX_INCOMING`` or a malformed length field.
        """
        buf = self.buffer
        buf += data
        packets: list[Packet] = []
        pos = 0
        while len(buf) - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= len(buf):
                    del buf[:pos]
                    return packets
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise WireError("malformed remaining length from the broker")
            if length > MAX_INCOMING:
                raise WireError(f"packet of {length} bytes from the broker refused")
            if len(buf) - i < length:
                break
            packets.append(Packet(buf[pos], bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return packets


class _Batch:
    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining


class PublishConnection(asyncio.Protocol):
    """One TCP (or TLS) connection that publishes batches at QoS 1."""

    def __init__(self, keepalive_s: int) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._keepalive_s = keepalive_s
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader()
        self._connack: asyncio.Future[None] = loop.create_future()
        #: Done when the connection is gone (with the reason as its exception).
        self.lost: asyncio.Future[None] = loop.create_future()
        self._pending: dict[int, _Batch] = {}
        self._next_id = 1
        self._last_write = loop.time()
        self._last_read = loop.time()
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        keepalive_s: int,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
    ) -> PublishConnection:
        """Connect and wait for the broker's CONNACK.

        Raises:
            WireError: Refused (with the broker's reason), unreachable or timed out.
        """
        loop = asyncio.get_running_loop()
        proto: PublishConnection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                _, proto = await loop.create_connection(
                    lambda: cls(keepalive_s),
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                )
                proto._send(
                    connect_packet(
                        client_id, keepalive_s=keepalive_s, username=username, password=password
                    )
                )
                await proto._connack
        except BaseException as exc:
            if proto is not None:
                proto.close()
            if isinstance(exc, TimeoutError):
                raise WireError(f"no CONNACK from {host}:{port} within {timeout_s:g} s") from None
            if isinstance(exc, OSError):
                raise WireError(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        proto._keepalive = asyncio.create_task(proto._keep_alive(), name="mqtt-data-keepalive")
        return proto

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acknowledged."""
        return len(self._pending)

    def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Publish ``messages`` (topic, payload) in one write; the future ends on the last PUBACK.

        Raises:
            WireError: The connection is gone.
        """
        if self.lost.done() or self._transport is None:
            raise WireError("the data connection is closed")
        future: asyncio.Future[None] = self._loop.create_future()
        if not messages:
            future.set_result(None)
            return future
        batch = _Batch(future, len(messages))
        pending = self._pending
        packets = []
        next_id = self._next_id
        for topic, payload in messages:
            while next_id in pending:
                next_id = next_id % 0xFFFF + 1
            pending[next_id] = batch
            packets.append(publish_packet(topic.encode(), payload, next_id))
            next_id = next_id % 0xFFFF + 1
        self._next_id = next_id
        self._send(b"".join(packets))
        return future

    def close(self) -> None:
        """Say DISCONNECT and close (pending batches fail)."""
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(Exception):
                self._transport.write(DISCONNECT)
            self._transport.close()
        self._fail(WireError("the data connection was closed"))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        try:
            packets = self._reader.feed(data)
            for packet in packets:
                self._handle(packet)
        except WireError as exc:
            log.warning("MQTT data connection: %s; reconnecting", exc)
            self._fail(exc)
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(WireError(f"connection to the broker lost{reason}"))

    # internals

    def _handle(self, packet: Packet) -> None:
        kind, body = packet.kind, packet.body
        if kind == PUBACK and len(body) == 2:
            batch = self._pending.pop(int.from_bytes(body, "big"), None)
            if batch is not None:
                batch.remaining -= 1
                if batch.remaining == 0 and not batch.future.done():
                    batch.future.set_result(None)
        elif kind == PINGRESP and not body:
            pass
        elif kind >> 4 == 3:
            self._dropped_publish(kind, body)
        elif kind == PUBREL and len(body) == 2:
            self._send(bytes((PUBCOMP, 2)) + body)
        elif kind == CONNACK and len(body) == 2 and not self._connack.done():
            code = body[1]
            if code == 0:
                self._connack.set_result(None)
            else:
                reason = CONNACK_REASONS.get(code, f"refused with code {code}")
                raise WireError(f"the broker refused the connection: {reason}")
        else:
            raise WireError(f"unexpected packet 0x{kind:02x} ({len(body)} bytes) from the broker")

    def _dropped_publish(self, kind: int, body: bytes) -> None:
        """Acknowledge a PUBLISH this connection never asked for, and drop it."""
        qos = (kind >> 1) & 0x03
        if qos == 0:
            return
        topic_len = int.from_bytes(body[:2], "big") if len(body) >= 2 else len(body)
        packet_id = body[2 + topic_len : 4 + topic_len]
        if qos == 3 or len(packet_id) != 2:
            raise WireError("malformed PUBLISH from the broker")
        self._send(bytes((PUBACK if qos == 1 else PUBREC, 2)) + packet_id)

    def _send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._last_write = self._loop.time()

    def _fail(self, exc: WireError) -> None:
        if not self._connack.done():
            self._connack.set_exception(exc)
        batches = {id(b): b for b in self._pending.values()}
        self._pending.clear()
        for batch in batches.values():
            if not batch.future.done():
                batch.future.set_exception(exc)
                batch.future.exception()  # retrieved: a batch nobody awaits any more
        if not self.lost.done():
            self.lost.set_exception(exc)
            self.lost.exception()
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()

    async def _keep_alive(self) -> None:
        interval = self._keepalive_s
        if interval <= 0:
            return
        while not self.lost.done():
            await asyncio.sleep(interval / 4)
            now = self._loop.time()
            if now - self._last_read > 1.5 * interval:
                self._fail(WireError(f"the broker stayed silent for {1.5 * interval:g} s"))
                if self._transport is not None:
                    self._transport.abort()
                return
            if now - self._last_write >= interval / 2:
                self._send(PINGREQ)
