"""The sites' status seen centrally: the retained status and its Last Will, through JetStream.

Theory of operation
-------------------
On a site's own broker the agent keeps a retained ``agent/status`` whose Last Will
is ``offline``. NATS has neither retained messages nor a Last Will, so the agent's
``nats`` sink puts a status document in the JetStream key-value bucket
``COFFEE_STATUS`` (key = the site id) when it connects and every ``heartbeat_s``
while connected, and ``offline`` when it shuts down cleanly. The bucket keeps each
site's last document (three replicas): that is the retained status. The Last Will is
a deadline: a site whose last document is ``online`` and that has put nothing for
``TIMEOUT_BEATS * heartbeat_s`` is offline (a box killed or without power, a link
cut). An agent SIGKILLed is therefore shown offline centrally at most
``TIMEOUT_BEATS * heartbeat_s`` after its last heartbeat, plus ``check_s``.

Every recorder runs a ``StatusWatcher``: an ephemeral pull consumer on the bucket's
stream, starting with the last document of every site, then following new ones. A
deadline is declared only after the consumer answered that it exists and has nothing
pending: a watcher that lost its consumer (a node gone) follows the bucket again
instead of finding every site silent.
``StatusBoard`` (pure) turns them into ``agent_status`` points for InfluxDB:

* a document: ``state`` (``online``/``offline``), ``online`` (1/0), ``reason``
  (``heartbeat`` or ``shutdown``), ``devices_online``, ``devices_total``,
  ``heartbeat_s``, at the time the cluster stored the document;
* a missed deadline: ``state = offline``, ``online = 0``, ``reason = timeout``,
  ``devices_online = 0``, at the deadline itself (last document + timeout).

The time of every point is derived from the stream, never from a recorder's clock
at the moment it writes, so two recorders (or one restarted) write the very same
points: InfluxDB keeps one. A document that is not a status (not JSON, wrong
types, oversized) is counted and ignored; a site's NATS user may put only its own
key, so a site cannot speak for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Sink
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sinks.lineprotocol import encode_line

log = logging.getLogger(__name__)

#: Missed heartbeats after which a site is offline.
TIMEOUT_BEATS = 3
#: The measurement the board writes.
MEASUREMENT = "agent_status"
#: The largest status document read (the agent's is about 150 bytes).
MAX_STATUS_BYTES = 4096
#: Heartbeat periods accepted (the agent's config allows 0.5 to 300 s).
MIN_HEARTBEAT_S = 0.5
MAX_HEARTBEAT_S = 300.0
#: Largest device count believed.
MAX_DEVICES = 100_000


class BadStatus(ValueError):
    """A document in the status bucket that is not an agent's status."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One status document, as the agent's ``nats`` sink puts it."""

    state: str
    heartbeat_s: float
    devices_online: int
    devices_total: int


def _count(doc: dict[str, object], key: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEVICES:
        raise BadStatus(f"{key} is not a count: {str(value)[:32]!r}")
    return value


def decode_status(data: bytes) -> AgentStatus:
    """Decode one status document.

    Raises:
        BadStatus: Not JSON, not an object, a field missing or of the wrong type.
    """
    if len(data) > MAX_STATUS_BYTES:
        raise BadStatus(f"{len(data)} bytes (at most {MAX_STATUS_BYTES})")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadStatus(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadStatus("not a JSON object")
    state = doc.get("state")
    if state not in ("online", "offline"):
        raise BadStatus(f"state is not online/offline: {str(state)[:32]!r}")
    beat = doc.get("heartbeat_s")
    if isinstance(beat, bool) or not isinstance(beat, int | float) or not math.isfinite(beat):
        raise BadStatus(f"heartbeat_s is not a number: {str(beat)[:32]!r}")
    return AgentStatus(
        state=str(state),
        heartbeat_s=min(MAX_HEARTBEAT_S, max(MIN_HEARTBEAT_S, float(beat))),
        devices_online=_count(doc, "devices_online"),
        devices_total=_count(doc, "devices_total"),
    )


def _point(site: str, ts_ns: int, fields: dict[str, str | int | float]) -> Reading:
    return Reading(
        ts_ns=ts_ns,
        seq=0,
        device="agent",
        measurement=MEASUREMENT,
        fields=fields,
        tags={"site": site, "device": "agent"},
    )


@dataclass(slots=True)
class _Site:
    status: AgentStatus
    at_ns: int
    timed_out: bool = False


@dataclass(slots=True)
class StatusBoard:
    """Each site's last status and its deadline; turns both into ``agent_status`` points."""

    beats: int = TIMEOUT_BEATS
    sites: dict[str, _Site] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)

    def seen(self, site: str, data: bytes, at_ns: int) -> list[Reading]:
        """A document the cluster stored at ``at_ns``; returns the points to write."""
        try:
            status = decode_status(data)
        except BadStatus as exc:
            self.ignored["bad"] += 1
            log.warning("Ignored the status of %r: %s", site[:64], exc)
            return []
        known = self.sites.get(site)
        if known is not None and at_ns < known.at_ns:
            self.ignored["stale"] += 1
            return []
        self.sites[site] = _Site(status, at_ns)
        online = status.state == "online"
        return [
            _point(
                site,
                at_ns,
                {
                    "state": status.state,
                    "online": int(online),
                    "reason": "heartbeat" if online else "shutdown",
                    "devices_online": status.devices_online if online else 0,
                    "devices_total": status.devices_total,
                    "heartbeat_s": status.heartbeat_s,
                },
            )
        ]

    def deadline_ns(self, site: str) -> int | None:
        """When ``site`` is declared offline unless it speaks (``None``: not online)."""
        known = self.sites.get(site)
        if known is None or known.status.state != "online":
            return None
        return known.at_ns + round(self.beats * known.status.heartbeat_s * 1e9)

    def any_due(self, now_ns: int) -> bool:
        """Whether some site's deadline passed by ``now_ns`` and is not declared yet."""
        for site, known in self.sites.items():
            deadline = self.deadline_ns(site)
            if not known.timed_out and deadline is not None and deadline <= now_ns:
                return True
        return False

    def due(self, now_ns: int) -> list[Reading]:
        """Points for the sites whose deadline passed by ``now_ns`` (each once)."""
        out: list[Reading] = []
        for site, known in self.sites.items():
            deadline = self.deadline_ns(site)
            if known.timed_out or deadline is None or deadline > now_ns:
                continue
            known.timed_out = True
            out.append(
                _point(
                    site,
                    deadline,
                    {
                        "state": "offline",
                        "online": 0,
                        "reason": "timeout",
                        "devices_online": 0,
                        "devices_total": known.status.devices_total,
                        "heartbeat_s": known.status.heartbeat_s,
                    },
                )
            )
        return out


def stored_ns(msg: Msg) -> int:
    """When the cluster stored ``msg`` (JetStream metadata), in whole microseconds."""
    return round(msg.metadata.timestamp.timestamp() * 1e6) * 1000


class StatusWatcher:
    """Follows the status bucket and writes ``agent_status`` points; see the module docstring."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        sink: Sink,
        bucket: str = "COFFEE_STATUS",
        check_s: float = 1.0,
        board: StatusBoard | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._js = js
        self._sink = sink
        self._bucket = bucket
        self._check_s = check_s
        self._clock_ns = clock_ns
        self.board = board or StatusBoard()
        self._stopping = asyncio.Event()
        self._pending: list[Reading] = []
        self.written = 0

    @property
    def stream(self) -> str:
        """The bucket's stream."""
        return f"KV_{self._bucket}"

    async def run(self) -> None:
        """Follow the bucket until ``stop``; errors (an election) recreate the consumer."""
        retry = Backoff(initial_s=0.5, maximum_s=10.0)
        while not self._stopping.is_set():
            try:
                sub = await self._js.pull_subscribe(
                    f"$KV.{self._bucket}.>",
                    stream=self.stream,
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                        ack_policy=AckPolicy.NONE,
                        inactive_threshold=max(30.0, 10 * self._check_s),
                        mem_storage=True,
                    ),
                )
            except (nats.errors.Error, OSError) as exc:
                delay = retry.next_delay()
                log.warning("Status bucket not followed (%s); again in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            try:
                await self._follow(sub)
                retry.reset()
            except (nats.errors.Error, OSError) as exc:
                delay = retry.next_delay()
                log.warning("Status bucket lost (%s); following it again in %.1f s", exc, delay)
                await self._sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _follow(self, sub: JetStreamContext.PullSubscription) -> None:
        prefix = f"$KV.{self._bucket}."
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(256, timeout=self._check_s)
            except TimeoutError:  # nothing new: check the deadlines
                msgs = []
            for msg in msgs:
                if msg.subject.startswith(prefix):
                    site = msg.subject[len(prefix) :]
                    self._pending += self.board.seen(site, msg.data, stored_ns(msg))
            now = self._clock_ns()
            if self.board.any_due(now):
                # Declare a site offline only from a consumer that is alive and has
                # nothing left to hand over (a lost consumer would see every site silent).
                info = await sub.consumer_info()
                if info.num_pending:
                    continue
                self._pending += self.board.due(now)
            await self.flush()

    async def flush(self) -> None:
        """Write the points waiting (kept for the next round if InfluxDB is away)."""
        if not self._pending:
            return
        records = []
        for i, point in enumerate(self._pending):
            try:
                line = encode_line(point)
            except ValueError as exc:  # a site id InfluxDB cannot hold
                log.warning("Status point not written: %s", exc)
                continue
            records.append(
                Record(id=i, payload=b"", reading=point, line=line, device="agent", kind="reading")
            )
        try:
            await self._sink.deliver(records)
        except SinkUnavailable as exc:
            log.warning("Status points kept (%d): %s", len(self._pending), exc)
            return
        self.written += len(records)
        self._pending = []

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    async def stop(self) -> None:
        """End ``run`` after the round in hand."""
        self._stopping.set()
