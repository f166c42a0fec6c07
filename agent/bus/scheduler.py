"""The bus's scheduler: one port, one request at a time, every unit on its own intervals.

Theory of operation
-------------------
One ``BusScheduler`` per ``[[buses]]`` adapter that has units on it. It opens the adapter
once (``rtu.open_rtu_master``) and runs, in one ``TaskGroup``, a watcher and the poll loop
of every client attached to it: the hullers' ``BusPoller`` (``agent.hullers.bus``) and the
storage areas' T/RH sensors (``agent.climate.service``), each polling its own units on
their own grids. A client never touches the port; it asks for one attempt at a time
(``attempt``): the scheduler takes the bus lock, waits until ``min_gap_s`` has passed since
the previous exchange ended (a slave needs the line quiet to turn its RS-485 driver
around), sends, and waits at most ``timeout_s`` for the reply. ``asyncio.Lock`` wakes
waiters in order, so the units of every client take turns and a retry queues behind the
requests already waiting: a dead unit holds the line for one attempt at a time, never for
a whole series, whichever client it belongs to.

Each Modbus address on a bus belongs to one unit: ``attach`` refuses a second claim
(the site config refuses it first, naming the keys).

When the port goes (an unplugged adapter), pymodbus drops its transport and calls its
``trace_connect`` hook; the watcher turns that into ``PortError``, the TaskGroup ends every
client's loop, the port is closed, each client is told (``port_down``: its units show
offline) and the same path is reopened after a capped, jittered back-off (1 s doubling to
60 s), as ``agent/devices`` does for stream devices. A port that will not open is handled
the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection, Iterable
from typing import Protocol

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.bus.rtu import (
    BusSpec,
    ClientFactory,
    RtuMaster,
    open_rtu_master,
    pymodbus_client,
)
from coffee_telemetry.agent.config import BusConfig
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.drivers.modbus_rtu import ReadRequest, Response, WriteCoilRequest

__all__ = ["BusClient", "BusScheduler", "bus_schedulers"]

log = logging.getLogger(__name__)


class BusClient(Protocol):
    """A kind of unit on the bus: polls its units through the scheduler."""

    async def poll_loop(self, scheduler: BusScheduler) -> None:
        """Poll every unit until cancelled; called each time the port has opened.

        Raises:
            PortError: The port went (``BusScheduler.attempt`` raised it).
        """
        ...

    async def port_down(self, error: PortError) -> None:
        """The port went or would not open: the client's units learn why."""
        ...


class BusScheduler:
    """Runs every unit of one bus over one port; see the module docstring.

    Args:
        spec: The adapter and its timing.
        client_factory: Builds the pymodbus client (tests pass fakes).
        rng: Jitter source for the reopen back-off.
    """

    def __init__(
        self,
        spec: BusSpec,
        *,
        client_factory: ClientFactory = pymodbus_client,
        rng: random.Random | None = None,
    ) -> None:
        self._spec = spec
        self._client_factory = client_factory
        self._clients: list[tuple[str, BusClient]] = []
        self._addresses: dict[int, str] = {}
        self._reopen = Backoff(
            initial_s=spec.reopen_initial_s, maximum_s=spec.reopen_max_s, rng=rng
        )
        self._lock = asyncio.Lock()
        self._last_end = float("-inf")
        self._master: RtuMaster | None = None
        #: How many times the port was opened (the first open included).
        self.opens = 0

    @property
    def spec(self) -> BusSpec:
        """The adapter."""
        return self._spec

    @property
    def is_open(self) -> bool:
        """Whether the port is open and has not gone."""
        return self._master is not None and not self._master.lost.is_set()

    @property
    def addresses(self) -> dict[int, str]:
        """Each claimed Modbus address and the unit holding it."""
        return dict(self._addresses)

    def attach(self, name: str, client: BusClient, units: Iterable[tuple[int, str]]) -> None:
        """Add a client, claiming the addresses of its units (before ``run_loop``).

        Args:
            name: The client, for task names and logs (``hullers``, ``climate``).
            client: Its poll loop and port-down hook.
            units: ``(address, unit name)`` of each of its units.

        Raises:
            ValueError: An address is claimed twice.
        """
        claimed = dict(self._addresses)
        for address, unit in units:
            owner = claimed.get(address)
            if owner is not None:
                raise ValueError(
                    f"bus {self._spec.name}: two units at address {address} ({owner}, {unit})"
                )
            claimed[address] = unit
        self._addresses = claimed
        self._clients.append((name, client))

    async def attempt(self, request: ReadRequest | WriteCoilRequest) -> Response:
        """Send one request when the line is free and quiet; one attempt, no retry.

        Returns:
            The reply (an exception reply included); it may still not fit the request.

        Raises:
            PortError: The port is not open or went.
            ExchangeFailed: No usable reply.
        """
        loop = asyncio.get_running_loop()
        async with self._lock:
            master = self._master
            if master is None:
                raise PortError(
                    f"bus {self._spec.name} is not open",
                    device=self._spec.name,
                    port=self._spec.port,
                )
            delay = self._last_end + self._spec.min_gap_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                return await master.request(request)
            finally:
                self._last_end = loop.time()

    async def run_loop(self) -> None:
        """Open the port, run every client, and reopen after it goes, until cancelled."""
        task = asyncio.current_task()
        baseline = task.cancelling() if task is not None else 0
        while True:
            error: PortError | None = None
            try:
                await self._run_open()
            except* PortError as group:
                first = group.exceptions[0]
                # Tasks raise PortError itself, never a group of them.
                assert isinstance(first, PortError)
                error = first
            # Python 3.11's TaskGroup, when a child fails while it waits for the others,
            # leaves its own cancel request of this task counted (fixed in 3.12): clients
            # would take it for a stop (``Task.cancelling()``) and the bus would die.
            while task is not None and task.cancelling() > baseline:
                task.uncancel()
            if error is None:  # pragma: no cover - _run_open only ends by raising
                continue
            delay = self._reopen.next_delay()
            log.warning(
                "Modbus bus %s down: %s; reopening in %.1f s (attempt %d)",
                self._spec.name,
                error,
                delay,
                self._reopen.attempts,
            )
            for _, client in self._clients:
                await client.port_down(error)
            await asyncio.sleep(delay)

    async def _run_open(self) -> None:
        spec = self._spec
        async with open_rtu_master(spec, client_factory=self._client_factory) as master:
            self.opens += 1
            log.info(
                "Opened %s for Modbus bus %s (%d units: %s)",
                spec.port,
                spec.name,
                len(self._addresses),
                ", ".join(name for name, _ in self._clients) or "none",
            )
            self._reopen.reset()
            self._master = master
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._watch_loop(master), name=f"watch[{spec.name}]")
                    for name, client in self._clients:
                        tg.create_task(client.poll_loop(self), name=f"{name}[{spec.name}]")
            finally:
                self._master = None

    async def _watch_loop(self, master: RtuMaster) -> None:
        await master.lost.wait()
        raise PortError(
            "connection lost (adapter unplugged?)", device=self._spec.name, port=self._spec.port
        )


def bus_schedulers(
    buses: Iterable[BusConfig],
    used: Collection[str],
    *,
    client_factory: ClientFactory = pymodbus_client,
) -> dict[str, BusScheduler]:
    """One scheduler per ``[[buses]]`` entry whose id is in ``used``, by bus id."""
    return {
        bus.id: BusScheduler(BusSpec.from_config(bus), client_factory=client_factory)
        for bus in buses
        if bus.id in used
    }
