"""Delivery lanes: each sink with its delivery loop, its connection and its resources.

A *lane* is one sink's share of the agent: the delivery loop that moves the sink's
outbox cursor (``deliver_loop``), the loops the sink needs besides (the MQTT or NATS
connection), and what closes it. Lanes start and stop one at a time, so a reload can
change one sink while the devices and every other sink go on:

* ``start`` gives the outbox a cursor for the sink (``Outbox.add_sink``: a sink the
  store knew resumes from its kept cursor, a new one starts with the oldest record
  held) and starts its loops;
* ``pause`` ends the delivery loop after the batch in flight was confirmed and its
  cursor moved (``deliver_loop``'s ``stop``), ``resume`` starts a new one on the same
  cursor: what a sink whose connection changes in place needs (MQTT);
* ``stop`` pauses, closes the sink and ends its other loops; with ``forget`` the outbox
  stops holding records for it (``Outbox.remove_sink``), its cursor kept on disk.

A delivery loop that does not end within ``grace_s`` (a batch to a server that no
longer answers) is cancelled: its batch was not confirmed, so its cursor did not move
and the next loop sends it again (at least once, as after any failure).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.outbox.store import Outbox

__all__ = ["DeliveryLanes", "Spawn"]

log = logging.getLogger(__name__)

#: Starts a supervised task: ``spawn(interface_name, run, sink_name)``.
Spawn = Callable[[str, Callable[[], Awaitable[None]], str], "asyncio.Task[None]"]


@dataclass
class _Lane:
    sink: Sink
    close: Callable[[], Awaitable[None]] | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    deliver: asyncio.Task[None] | None = None
    loops: list[asyncio.Task[None]] = field(default_factory=list)


class DeliveryLanes:
    """The running lanes by sink name (see the module docstring).

    Args:
        outbox: The outbox whose cursors the lanes move.
        spawn: Starts each loop as a supervised task of the agent's task group.
        health: Where each sink's delivery counters are.
        grace_s: Longest a delivery loop may take to finish its batch when stopped.
    """

    def __init__(
        self, outbox: Outbox, *, spawn: Spawn, health: Health, grace_s: float = 15.0
    ) -> None:
        self._outbox = outbox
        self._spawn = spawn
        self._health = health
        self._grace_s = grace_s
        self._lanes: dict[str, _Lane] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The sinks with a lane, in the order they started."""
        return tuple(self._lanes)

    def sink(self, name: str) -> Sink:
        """The sink of lane ``name``."""
        return self._lanes[name].sink

    def delivery_tasks(self) -> list[asyncio.Task[None]]:
        """The delivery loops running now."""
        return [lane.deliver for lane in self._lanes.values() if lane.deliver is not None]

    async def start(
        self,
        sink: Sink,
        *,
        loops: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Give ``sink`` a cursor and start its delivery loop and its ``loops``."""
        name = sink.name
        if name in self._lanes:
            raise ValueError(f"sink {name!r} has a lane already")
        await self._outbox.add_sink(name)
        if name not in self._health.sinks:
            self._health.add_sink(name)
        lane = self._lanes[name] = _Lane(sink=sink, close=close)
        lane.loops = [self._spawn(loop, run, name) for loop, run in (loops or {}).items()]
        self._deliver(lane)

    def _deliver(self, lane: _Lane) -> None:
        lane.stop = asyncio.Event()
        name = lane.sink.name
        run = functools.partial(
            deliver_loop,
            self._outbox,
            lane.sink,
            health=self._health.sinks[name],
            stop=lane.stop,
        )
        lane.deliver = self._spawn(f"deliver[{name}]", run, name)

    async def pause(self, name: str) -> None:
        """End ``name``'s delivery loop once its batch in flight is confirmed."""
        lane = self._lanes[name]
        task, lane.deliver = lane.deliver, None
        lane.stop.set()
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self._grace_s)
        if not done:
            log.warning(
                "Sink %s did not finish its batch within %.0f s; it is sent again",
                name,
                self._grace_s,
            )
            task.cancel()
            await asyncio.wait({task})

    def resume(self, name: str) -> None:
        """Start ``name``'s delivery loop again, from its cursor."""
        lane = self._lanes[name]
        if lane.deliver is None:
            self._deliver(lane)

    async def stop(self, name: str, *, forget: bool) -> None:
        """Pause, close and end lane ``name``; ``forget``: the outbox holds nothing for it."""
        await self.pause(name)
        lane = self._lanes.pop(name)
        if lane.close is not None:
            await lane.close()
        if lane.loops:
            _, pending = await asyncio.wait(lane.loops, timeout=self._grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if forget:
            await self._outbox.remove_sink(name)
            self._health.sinks.pop(name, None)
            self._health.interfaces.pop(f"deliver[{name}]", None)

    async def close_all(self) -> None:
        """At shutdown: cancel the delivery loops, then close every sink."""
        for lane in self._lanes.values():
            if lane.deliver is not None:
                lane.deliver.cancel()
        for lane in list(self._lanes.values()):
            if lane.close is not None:
                await lane.close()
