"""Live updates for the dashboard: one hub, many Server-Sent Events streams.

Theory of operation
-------------------
The hub sits on the agent's live fan-out. Device loops call ``on_reading`` for
every accepted reading; the alert service, the lot service and the web
handlers call ``publish``. Each open page holds a ``Subscription``: a bounded
queue of ready-to-send SSE frames. Encoding happens once per event, not once
per page, and not at all while no page is open (``on_reading`` then only
remembers the newest reading per device, which the warehouse page reads so it
never waits for the history's next flush).

A page that stops reading (a tablet gone to sleep with the socket open) must
not hold memory or slow the agent: when its queue is full the subscription is
marked lagging, its queue is emptied and a single ``hello`` is queued; the
page answers ``hello`` by fetching the current state again, which is all it
would have learnt from the dropped events. Readings are the only events that
carry values; the others say *what* changed and the page refetches.

Streams are capped in total and per client address (``[api] max_streams`` and
``max_streams_per_address``): each holds a socket and a queue, and one client,
logged in or not, must not be able to take every stream and leave the real
dashboards with 503.

Device health changes (online/offline, frame and error counters) are not
pushed by the device loops one by one: ``health_loop`` compares each device's
counters once a second and sends one ``devices`` event naming those that
changed, while anyone is listening.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Reading

log = logging.getLogger(__name__)

#: Measurements whose readings are streamed to pages (others are events or internal).
LIVE_MEASUREMENTS = frozenset({"moisture", "weighment", "scale", "huller"})
#: Frames a page may fall behind before it is told to resynchronise.
QUEUE_FRAMES = 256
#: Pages served at once; more get 503 (each holds a socket and a queue).
MAX_SUBSCRIBERS = 64
#: Pages served at once to one client address (``[api] max_streams_per_address``).
MAX_SUBSCRIBERS_PER_ADDRESS = 8

_TAGS = ("station", "lot", "product")


def sse_frame(event: str, data: object) -> bytes:
    """One SSE frame: ``event: <event>`` and the JSON ``data`` (one line; JSON has no newlines)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {text}\n\n".encode()


def reading_doc(reading: Reading) -> dict[str, object]:
    """The ``reading`` event's data: numbers and booleans only, plus station/lot/product.

    ``time_quality`` tells the page to mark a time that is not trusted yet
    (``provisional``, ``estimated``: ``agent.timekeeping``).
    """
    return {
        "device": reading.device,
        "measurement": reading.measurement,
        "ts_ns": reading.ts_ns,
        "seq": reading.seq,
        "fields": {k: v for k, v in reading.fields.items() if isinstance(v, bool | int | float)},
        "tags": {k: reading.tags[k] for k in _TAGS if reading.tags.get(k)},
        "time_quality": reading.time_quality,
    }


class Subscription:
    """One page's stream of frames."""

    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)
        self.lagged = 0
        self.put(sse_frame("hello", {"now_ns": hub.clock_ns()}))

    def put(self, frame: bytes) -> None:
        """Queue ``frame``; if the page is too far behind, replace its queue with a ``hello``."""
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.lagged += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(sse_frame("hello", {"now_ns": self._hub.clock_ns()}))

    async def next_frame(self) -> bytes:
        """The next frame to send (waits)."""
        return await self._queue.get()


class LiveHub:
    """Fan-out of readings and change notices to every open page."""

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.clock_ns = clock_ns
        self._subs: set[Subscription] = set()
        self._by_address: Counter[str] = Counter()
        self._latest: dict[str, Reading] = {}
        #: Subscriptions refused since start: too many pages in all, or from one address.
        self.refused = 0

    @property
    def subscribers(self) -> int:
        """Pages connected now."""
        return len(self._subs)

    @property
    def latest(self) -> Mapping[str, Reading]:
        """The newest live reading per device since the agent started."""
        return self._latest

    def subscribers_from(self, address: str) -> int:
        """Pages connected now from one client address."""
        return self._by_address[address]

    @contextmanager
    def subscribe(
        self,
        address: str | None = None,
        *,
        max_total: int = MAX_SUBSCRIBERS,
        max_per_address: int = MAX_SUBSCRIBERS_PER_ADDRESS,
    ) -> Iterator[Subscription]:
        """A subscription for the duration.

        Args:
            address: The page's client address (``None``: not counted per address).
            max_total: Subscriptions allowed at once.
            max_per_address: Subscriptions allowed at once from ``address``.

        Raises:
            OverflowError: ``max_total`` pages are connected, or ``max_per_address``
                from ``address``; the message says which.
        """
        if len(self._subs) >= max_total:
            self.refused += 1
            raise OverflowError(f"too many live streams: {max_total} pages already connected")
        if address is not None and self._by_address[address] >= max_per_address:
            self.refused += 1
            raise OverflowError(
                f"too many live streams from {address}: {max_per_address} already open"
                " (close another tab or window)"
            )
        sub = Subscription(self)
        self._subs.add(sub)
        if address is not None:
            self._by_address[address] += 1
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            if address is not None:
                self._by_address[address] -= 1
                if not self._by_address[address]:
                    del self._by_address[address]

    def on_reading(self, reading: Reading) -> None:
        """Stream one accepted reading (a ``ReadingListener``; O(1) with no page open)."""
        if reading.measurement not in LIVE_MEASUREMENTS:
            return
        self._latest[reading.device] = reading
        if self._subs:
            self._send(sse_frame("reading", reading_doc(reading)))

    def publish(self, event: str, data: object) -> None:
        """Tell every page that something changed (``alert``, ``lots``, ``service``...)."""
        if self._subs:
            self._send(sse_frame(event, data))

    def _send(self, frame: bytes) -> None:
        for sub in self._subs:
            sub.put(frame)

    async def health_loop(
        self,
        health: Health,
        *,
        backlog: Callable[[str], int] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        """Send ``devices`` events for devices whose health changed (runs until cancelled).

        ``backlog(sink)`` (``Outbox.backlog``) makes a growing backlog a change too, so
        the devices page follows an outage as it happens.
        """
        seen: dict[str, tuple[object, ...]] = {}
        seen_sinks: dict[str, tuple[object, ...]] = {}
        while True:
            await asyncio.sleep(interval_s)
            if not self._subs:
                continue
            changed = []
            for name, d in health.devices.items():
                signature = (
                    d.state,
                    d.frames_ok,
                    d.frames_discarded,
                    d.readings,
                    d.reconnects,
                    d.last_error,
                    sum(d.errors.values()),
                )
                if seen.get(name) != signature:
                    seen[name] = signature
                    changed.append(name)
            sinks: dict[str, tuple[object, ...]] = {
                name: (
                    s.connected,
                    s.delivered,
                    s.rejected,
                    s.last_error,
                    None if backlog is None else backlog(name),
                )
                for name, s in health.sinks.items()
            }
            sinks_changed = sinks != seen_sinks
            seen_sinks = sinks
            if changed or sinks_changed:
                # The page refetches; sinks are always on it, so no names for them.
                self.publish("devices", {"devices": sorted(changed)})
