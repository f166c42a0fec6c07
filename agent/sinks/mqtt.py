"""MQTT sink: every outbox record published at QoS 1, cursor moved on PUBACK.

Theory of operation
-------------------
QoS 1 alone is not store-and-forward: a client's in-flight queue lives in RAM
and dies with the connection or the process. So the outbox is the queue; this
sink only moves its cursor after the broker acknowledged (PUBACK) every
message of a batch. After a disconnect, a crash or a restart, whatever was not
acknowledged is published again from the outbox (at least once; consumers
dedupe on ``(device, seq)``).

Two tasks share two connections to the broker: the control connection (``aiomqtt``:
status, Last Will, commands, retained states) and the data connection the readings go
out on (``agent.sinks.mqttwire``: QoS 1 batches, one write each), opened and lost
together:

* ``connection_loop`` connects (TLS and credentials from config), publishes the
  retained ``agent/status`` = ``online`` (its Last Will is ``offline``), keeps
  the retained ``<device>/status`` documents current (at once on a state
  change, and every ``status_refresh_s``, 5 s, for devices whose counters
  moved), and reconnects after any failure with a jittered back-off capped at
  ``reconnect_max_s`` (2 s by default: a broker on the LAN comes back quickly;
  raise it for a remote broker): one log line per attempt.
* ``deliver`` (driven by the dispatcher) publishes a batch on the data connection
  and waits for all PUBACKs within ``publish_timeout_s``; up to ``in_flight``
  batches are out at once (``agent.outbox.delivery``). If the connection is down it
  waits for it, then reports ``SinkUnavailable`` so the batch is retried, at the
  latest when a new connection is up (``wait_available``).

Topics, under ``<prefix>/<site>/``::

    <device>/reading   JSON reading (see agent.readings), QoS 1, not retained
    <device>/event     JSON event (ticket printed, counter reset), QoS 1
    <device>/status    retained JSON {"state": "online"|"offline", ...}
    agent/status       retained "online" / "offline" (Last Will)
    lots/<station>     retained JSON: the station's active lot
    cmd/...            commands the agent subscribes to (lot assignment, alert
                       acknowledgement), through ``agent.commands``; retained
                       commands are ignored; replies on cmd/.../reply, not retained

``reconnect_with`` (a reload that changed the broker, its credentials or TLS) ends
the current connection the polite way, ``agent/status`` = ``offline`` published on the
old broker, and the loop connects with the new settings, where the retained statuses,
states and the Last Will follow as after any connection.

A device's retained status says what the agent last knew; when ``agent/status``
is ``offline`` the agent is gone and no device status can be trusted.

With ``set_discovery`` (Home Assistant, ``agent.sinks.homeassistant``) retained
discovery documents follow every connection and every retained state, outside the
prefix, on the same connection.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.commands import CommandBoundary, Outgoing, RefusalLog, check_level
from coffee_telemetry.agent.config import TlsConfig
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import Health, SinkHealth
from coffee_telemetry.agent.outbox.sink import ConnectionGate, Record, Rejection
from coffee_telemetry.agent.sinks.mqttwire import PublishConnection, WireError
from coffee_telemetry.agent.tls import client_context, report_tls

log = logging.getLogger(__name__)

#: aiomqtt's and paho's own log lines: the connection loop logs one line per state
#: change itself, so theirs (a warning per pending publish, a traceback-like error
#: when the broker goes away) are kept for debugging only.
_CLIENT_LOG = logging.getLogger(__name__ + ".client")
_CLIENT_LOG.setLevel(logging.CRITICAL)

#: Replies waiting to be published (sent by the web API); past this the oldest go.
MAX_QUEUED_REPLIES = 256


class Discovery(Protocol):
    """Retained documents that follow the agent's own (``agent.sinks.homeassistant``).

    ``publish(topic, payload)`` publishes retained at QoS 1 on an absolute topic.
    """

    async def on_connect(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        """After each connection's statuses and states."""

    async def on_state(
        self, suffix: str, payload: bytes, publish: Callable[[str, bytes], Awaitable[None]]
    ) -> None:
        """After a retained state on ``<prefix>/<site>/<suffix>`` was published."""


class MqttSink:
    """Publishes outbox records and status topics to one broker."""

    flush_interval_s = 0.0
    #: Batches published before the oldest one's PUBACKs are all back (``deliver_loop``).
    in_flight = 8

    def __init__(
        self,
        *,
        host: str,
        port: int,
        prefix: str,
        site: str,
        health: Health,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_insecure: bool = False,
        tls: bool = False,
        keepalive_s: int = 30,
        batch_size: int = 100,
        publish_timeout_s: float = 10.0,
        status_refresh_s: float = 5.0,
        reconnect_max_s: float = 2.0,
        name: str = "mqtt",
        backoff: Backoff | None = None,
        commands: CommandBoundary | None = None,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self._host = host
        self._port = port
        self._base = f"{prefix}/{site}"
        self._health = health
        self._sink_health: SinkHealth = health.sinks.get(name) or health.add_sink(name)
        self._watch = health.watch()
        self._client_id = client_id or f"coffee-telemetry-{site}"
        self._username = username
        self._password = password
        self._tls = tls or bool(tls_ca_file or tls_cert_file)
        self._tls_ca_file = tls_ca_file
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._tls_insecure = tls_insecure
        if self._tls:
            report_tls(health, name, insecure=tls_insecure)  # warns when insecure
        self._keepalive_s = keepalive_s
        self._publish_timeout_s = publish_timeout_s
        self._status_refresh_s = status_refresh_s
        self._backoff = backoff or Backoff(
            initial_s=min(0.5, reconnect_max_s), maximum_s=reconnect_max_s
        )
        self._client: aiomqtt.Client | None = None
        self._wire: PublishConnection | None = None
        self._gate = ConnectionGate()
        #: Set by every new connection; cleared when a delivery finds the sink down.
        self._published_status: dict[str, bytes] = {}
        self._stopping = asyncio.Event()
        #: Set by ``reconnect_with``: end this connection, open one with the new settings.
        self._switch = asyncio.Event()
        self._broken = asyncio.Event()
        self._commands = commands
        self._states: dict[str, bytes] = {}
        self._replies: collections.deque[Outgoing] = collections.deque(maxlen=MAX_QUEUED_REPLIES)
        self.replies_dropped = 0
        self.command_errors = 0
        self._errors = RefusalLog(log)
        self._dirty_states: set[str] = set()
        self._states_changed = asyncio.Event()
        self._discovery: Discovery | None = None

    def reconnect_with(
        self,
        *,
        host: str,
        port: int,
        prefix: str,
        site: str,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_insecure: bool = False,
        tls: bool = False,
        keepalive_s: int = 30,
        batch_size: int = 100,
        publish_timeout_s: float = 10.0,
        reconnect_max_s: float = 2.0,
    ) -> None:
        """Leave the current broker (``offline`` there) and connect with these settings.

        Call it while no delivery runs: a batch in flight would fail and be sent again.
        """
        self._host, self._port = host, port
        self._base = f"{prefix}/{site}"
        self._client_id = client_id or f"coffee-telemetry-{site}"
        self._username, self._password = username, password
        self._tls = tls or bool(tls_ca_file or tls_cert_file)
        self._tls_ca_file, self._tls_cert_file = tls_ca_file, tls_cert_file
        self._tls_key_file, self._tls_insecure = tls_key_file, tls_insecure
        if self._tls:
            report_tls(self._health, self.name, insecure=tls_insecure)
        self._keepalive_s = keepalive_s
        self.batch_size = batch_size
        self._publish_timeout_s = publish_timeout_s
        self._backoff = Backoff(initial_s=min(0.5, reconnect_max_s), maximum_s=reconnect_max_s)
        self._published_status.clear()
        self._gate.closed()
        self._switch.set()

    def set_discovery(self, discovery: Discovery) -> None:
        """Publish ``discovery``'s documents on every connection and after each state."""
        self._discovery = discovery

    def set_command_handler(self, commands: CommandBoundary) -> None:
        """Subscribe to ``<prefix>/<site>/cmd/#`` (from the next connection) and route there."""
        self._commands = commands

    def set_state(self, message: Outgoing) -> None:
        """Keep a retained state topic current (published now, and after reconnects)."""
        if not _valid_suffix(message.topic):
            self._errors.warning("Not publishing a state on invalid topic %r", message.topic[:200])
            return
        self._states[message.topic] = message.payload
        self._dirty_states.add(message.topic)
        self._states_changed.set()

    def send(self, message: Outgoing) -> None:
        """Publish a reply once, not retained, when connected (bounded queue; never raises)."""
        if not _valid_suffix(message.topic):
            self._errors.warning("Not sending a reply on invalid topic %r", message.topic[:200])
            return
        if len(self._replies) == self._replies.maxlen:
            self.replies_dropped += 1
        self._replies.append(Outgoing(message.topic, message.payload, retain=False))
        self._states_changed.set()

    @property
    def status_topic(self) -> str:
        """The retained agent status topic (also the Last Will topic)."""
        return f"{self._base}/agent/status"

    def topic_for(self, record: Record) -> str:
        """The topic a record is published on."""
        return f"{self._base}/{record.device}/{record.kind}"

    def device_status_topic(self, device: str) -> str:
        """The retained status topic of ``device``."""
        return f"{self._base}/{device}/status"

    def _tls_params(self) -> aiomqtt.TLSParameters | None:
        if not self._tls:
            return None
        return aiomqtt.TLSParameters(
            ca_certs=self._tls_ca_file,
            certfile=self._tls_cert_file,
            keyfile=self._tls_key_file,
            cert_reqs=ssl.CERT_NONE if self._tls_insecure else ssl.CERT_REQUIRED,
        )

    def _make_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=self._client_id,
            username=self._username,
            password=self._password,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_params=self._tls_params(),
            tls_insecure=self._tls_insecure if self._tls else None,
            keepalive=self._keepalive_s,
            clean_session=True,
            timeout=self._publish_timeout_s,
            logger=_CLIENT_LOG,
            # Without it, Nagle's algorithm holds a publish written while an earlier one
            # is unacknowledged until the broker's delayed ACK (40 ms on Linux).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Discovery documents go out many at once, by design, not a backlog to warn about.
        client.pending_calls_threshold = 4 * self.batch_size
        return client

    async def connection_loop(self) -> None:
        """Stay connected until ``close`` is called; reconnect on any failure."""
        while not self._stopping.is_set():
            self._switch.clear()
            host, port = self._host, self._port
            try:
                async with self._make_client() as client:
                    self._client = client
                    self._broken.clear()
                    await client.publish(self.status_topic, b"online", qos=1, retain=True)
                    self._watch.take()
                    await self._publish_statuses(client, set(self._health.devices), force=True)
                    self._dirty_states = set(self._states)
                    await self._publish_states(client)
                    if self._discovery is not None:
                        await self._discovery.on_connect(_retained(client))
                    if self._commands is not None:
                        await client.subscribe(f"{self._base}/cmd/#", qos=1)
                    self._wire = await self._open_wire()
                    log.info("Connected to MQTT broker %s:%d", self._host, self._port)
                    self._backoff.reset()
                    self._sink_health.connected = True
                    self._gate.opened()
                    await self._serve(client)
                    if self._stopping.is_set() or self._switch.is_set():
                        await self._publish_offline(client)
                    if self._switch.is_set():
                        log.info("Left MQTT broker %s:%d for new settings", host, port)
            except (aiomqtt.MqttError, WireError) as exc:
                self._sink_health.last_error = str(exc)
                if self._stopping.is_set():
                    return
                delay = self._backoff.next_delay()
                log.warning(
                    "MQTT broker %s:%d unreachable (%s); attempt %d, next in %.1f s",
                    self._host,
                    self._port,
                    exc,
                    self._backoff.attempts,
                    delay,
                )
                await self._wait_stop(delay)
            finally:
                if self._wire is not None:
                    self._wire.close()
                    self._wire = None
                self._client = None
                self._gate.closed()
                self._sink_health.connected = False

    async def _open_wire(self) -> PublishConnection:
        """The connection the readings go out on (``agent.sinks.mqttwire``)."""
        context = None
        if self._tls:
            context = client_context(
                TlsConfig(
                    ca_file=_path(self._tls_ca_file),
                    cert_file=_path(self._tls_cert_file),
                    key_file=_path(self._tls_key_file),
                    insecure=self._tls_insecure,
                )
            )
        return await PublishConnection.open(
            self._host,
            self._port,
            client_id=f"{self._client_id}/data",
            keepalive_s=self._keepalive_s,
            username=self._username,
            password=self._password,
            ssl_context=context,
            timeout_s=self._publish_timeout_s,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish status changes until stopped or the connection breaks."""
        disconnected = asyncio.ensure_future(self._watch_disconnect(client))
        wire = self._wire
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self._status_refresh_s
        try:
            while not self._stopping.is_set() and not self._switch.is_set():
                changed = asyncio.ensure_future(self._watch.changed())
                stop = asyncio.ensure_future(self._stopping.wait())
                broken = asyncio.ensure_future(self._broken.wait())
                states = asyncio.ensure_future(self._states_changed.wait())
                switch = asyncio.ensure_future(self._switch.wait())
                try:
                    waited: set[asyncio.Future[Any]] = {
                        changed,
                        stop,
                        broken,
                        states,
                        switch,
                        disconnected,
                    }
                    if wire is not None:
                        waited.add(wire.lost)
                    await asyncio.wait(
                        waited,
                        timeout=max(0.0, refresh_at - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for fut in (changed, stop, broken, states, switch):
                        fut.cancel()
                if self._switch.is_set():
                    return
                if disconnected.done():
                    disconnected.result()  # raises the MqttError that ended it
                if wire is not None and wire.lost.done():
                    raise WireError(f"data connection: {wire.lost.exception()}")
                if self._broken.is_set():
                    raise aiomqtt.MqttError("publish failed; reconnecting")
                dirty = self._watch.take()
                if loop.time() >= refresh_at:
                    # Counters change without state changes: refresh every device
                    # (only those whose document changed are published).
                    dirty = set(self._health.devices)
                    refresh_at = loop.time() + self._status_refresh_s
                await self._publish_statuses(client, dirty)
                await self._publish_states(client)
        finally:
            disconnected.cancel()

    async def _watch_disconnect(self, client: aiomqtt.Client) -> None:
        # The message iterator raises MqttError when the connection is lost.
        async for message in client.messages:
            try:
                await self._command(client, message)
            except aiomqtt.MqttError:
                raise  # the connection is gone: reconnect
            except Exception as exc:
                # The boundary answers every bad command itself; this is a bug or
                # a resource error. Never let one message end the MQTT loop.
                self.command_errors += 1
                self._errors.warning(
                    "Command on %r not handled: %r", str(message.topic)[:200], exc, exc_info=True
                )

    async def _command(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Hand a command to the boundary and publish its replies."""
        topic = str(message.topic)
        prefix = f"{self._base}/cmd/"
        if self._commands is None or not topic.startswith(prefix) or topic.endswith("/reply"):
            return
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        replies = await self._commands.submit_topic(
            topic.removeprefix(prefix), bytes(payload), source="mqtt", retained=message.retain
        )
        for reply in replies:
            await client.publish(f"{self._base}/{reply.topic}", reply.payload, qos=1)

    async def _publish_states(self, client: aiomqtt.Client) -> None:
        self._states_changed.clear()
        dirty, self._dirty_states = self._dirty_states, set()
        for topic in sorted(dirty):
            await client.publish(f"{self._base}/{topic}", self._states[topic], qos=1, retain=True)
            if self._discovery is not None:
                await self._discovery.on_state(topic, self._states[topic], _retained(client))
        while self._replies:  # best effort: a reply lost with the connection is not resent
            reply = self._replies.popleft()
            await client.publish(f"{self._base}/{reply.topic}", reply.payload, qos=1)

    async def _publish_statuses(
        self, client: aiomqtt.Client, devices: set[str], *, force: bool = False
    ) -> None:
        """Publish the status of ``devices`` whose document changed (all with ``force``)."""
        for device in sorted(devices):
            entry = self._health.devices.get(device)
            if entry is None:
                continue
            payload = json.dumps(entry.as_status(), sort_keys=True, separators=(",", ":")).encode()
            if not force and self._published_status.get(device) == payload:
                continue
            await client.publish(self.device_status_topic(device), payload, qos=1, retain=True)
            self._published_status[device] = payload

    async def _publish_offline(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(self.status_topic, b"offline", qos=1, retain=True, timeout=2.0)
        except aiomqtt.MqttError as exc:
            log.warning("Could not publish agent offline status: %s", exc)

    async def _wait_stop(self, delay: float) -> None:
        """Sleep ``delay``, less if stopped or given new settings."""
        waits = {
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._switch.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Publish ``records`` at QoS 1 and return once all are acknowledged.

        Raises:
            SinkUnavailable: Not connected, or a publish failed or timed out.
        """
        if not await self._gate.wait_up(self._publish_timeout_s):
            raise SinkUnavailable("not connected to the broker", sink=self.name)
        wire = self._wire
        if wire is None:
            self._gate.spent()
            raise SinkUnavailable("not connected to the broker", sink=self.name)
        base = self._base
        try:
            acked = wire.publish_batch(
                [(f"{base}/{rec.device}/{rec.kind}", rec.payload) for rec in records]
            )
            async with asyncio.timeout(self._publish_timeout_s):
                await acked
        except (WireError, TimeoutError) as exc:
            self._gate.spent()
            self._broken.set()
            reason = exc if isinstance(exc, WireError) else "no PUBACK in time"
            raise SinkUnavailable(f"publish failed: {reason}", sink=self.name) from exc
        return []

    async def wait_available(self, timeout_s: float) -> None:
        """Return when a connection newer than the failed delivery is up, or after ``timeout_s``."""
        await self._gate.wait_newer(timeout_s)

    async def close(self) -> None:
        """Ask the connection loop to publish ``offline`` and disconnect."""
        self._stopping.set()


def _path(name: str | None) -> Path | None:
    return None if name is None else Path(name)


def _retained(client: aiomqtt.Client) -> Callable[[str, bytes], Awaitable[None]]:
    async def publish(topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=1, retain=True)

    return publish


def _valid_suffix(topic: str) -> bool:
    """Whether ``topic`` (under ``<prefix>/<site>/``) is levels ``check_level`` accepts."""
    try:
        for level in topic.split("/"):
            check_level(level)
    except ValueError:
        return False
    return True
