"""The device loops of the running agent, one task per device id, changed by difference.

Theory of operation
-------------------
``Fleet`` owns one acquisition task per enabled device. ``start`` launches the loops
of the configured devices; ``apply`` takes the devices of a new site file and
compares them with the running ones by id and by config equality (device configs
are frozen models, so equal settings compare equal):

* a device that is new gets a loop (its health entry is added first);
* a device that is gone has its loop cancelled and awaited: the port closes in the
  loop's ``async with``, and its health entry goes (the silent-device rule forgets it);
  a loop holding half a frame (a ticket waiting for its idle gap) is first given up
  to ``settle_s`` to finish and commit it, so a reload loses no ticket;
* a device whose settings differ has its old loop cancelled and awaited *before* the
  new one starts, so the port is never held twice (ports are opened exclusively), and
  a path that was just closed gets ``release_s`` before it is opened again; its
  health entry is made afresh with the new port and station;
* every other device is not touched: its loop, its open port and its driver state go on.

A readings' commit is shielded in the outbox, so cancelling a loop never cancels a
commit that has begun. ``spawn`` creates the task where the caller wants it (the
agent's task group: a loop that fails still stops the agent, as at start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from coffee_telemetry.agent.config import DeviceConfig
from coffee_telemetry.agent.devices.runner import Runner
from coffee_telemetry.agent.health import DeviceState, Health

log = logging.getLogger(__name__)

#: Seconds a stopped loop's port gets to close before its path is opened again (the
#: transport closes the fd in the background; a reopen that still finds it locked only
#: backs off and retries, so this is a courtesy, not a condition).
PORT_RELEASE_S = 0.25

#: Longest wait for a loop to finish the frame it holds before it is stopped: past a
#: ticket's idle gap (2 s by default, at most 60) the ticket has ended or never will.
SETTLE_S = 5.0
SETTLE_POLL_S = 0.05

#: Makes the loop of one device (``make_device_runner`` with the agent's wiring).
RunnerFactory = Callable[[DeviceConfig], Runner]

#: Creates the task of one device's loop, given the device id and the coroutine.
Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@dataclass(frozen=True)
class FleetChange:
    """What ``Fleet.apply`` did, by device id (each sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        """Whether no loop was started or stopped."""
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line: ``devices +umid-5 -umid-4 ~umid-3`` (``""`` when nothing changed)."""
        parts = [f"+{d}" for d in self.added]
        parts += [f"-{d}" for d in self.removed]
        parts += [f"~{d}" for d in self.changed]
        return "devices " + " ".join(parts) if parts else ""


def diff_devices(running: Sequence[DeviceConfig], wanted: Sequence[DeviceConfig]) -> FleetChange:
    """Which devices of ``wanted`` are new, gone or changed compared with ``running``."""
    old = {d.id: d for d in running}
    new = {d.id: d for d in wanted}
    return FleetChange(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        changed=tuple(sorted(k for k in old.keys() & new.keys() if old[k] != new[k])),
        unchanged=tuple(sorted(k for k in old.keys() & new.keys() if old[k] == new[k])),
    )


class Fleet:
    """One acquisition task per device (see the module docstring).

    Args:
        make_runner: The loop of a device config.
        spawn: Creates a loop's task (in the agent's task group).
        health: Where the devices' entries live.
        release_s: How long a port stopped is given to close before it is opened again.
    """

    def __init__(
        self,
        make_runner: RunnerFactory,
        *,
        spawn: Spawn,
        health: Health,
        release_s: float = PORT_RELEASE_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._make_runner = make_runner
        self._release_s = release_s
        self._settle_s = settle_s
        self._spawn = spawn
        self._health = health
        self._running: dict[str, tuple[DeviceConfig, asyncio.Task[None], Runner]] = {}
        self._lock = asyncio.Lock()

    @property
    def devices(self) -> tuple[DeviceConfig, ...]:
        """The configs of the running loops, in start order."""
        return tuple(dev for dev, _, _ in self._running.values())

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The running loops' tasks."""
        return [task for _, task, _ in self._running.values()]

    def start(self, devices: Sequence[DeviceConfig]) -> None:
        """Start a loop for each of ``devices`` (at the agent's start)."""
        for dev in devices:
            self._start(dev)

    async def apply(self, devices: Sequence[DeviceConfig]) -> FleetChange:
        """Make the running loops those of ``devices``, touching only what differs."""
        async with self._lock:
            change = diff_devices(self.devices, devices)
            wanted = {d.id: d for d in devices}
            freed = {self._running[d][0].port for d in change.changed}
            freed |= {self._running[d][0].port for d in change.removed}
            for dev_id in change.removed:
                await self._stop(dev_id)
                self._health.set_device_state(
                    dev_id, DeviceState.OFFLINE, error="removed from the configuration"
                )
                self._health.devices.pop(dev_id, None)
            for dev_id in change.changed:
                await self._stop(dev_id)
            starting = [wanted[d] for d in (*change.changed, *change.added)]
            if any(dev.port in freed for dev in starting):
                # The serial transport closes its fd in the background after the loop
                # ends; opening the path again at once would find it still locked.
                await asyncio.sleep(self._release_s)
            for dev in starting:
                self._start(dev, fresh=True)
            return change

    def cancel_all(self) -> list[asyncio.Task[None]]:
        """Cancel every loop (at shutdown); the tasks, to await if wanted."""
        tasks = self.tasks
        for task in tasks:
            task.cancel()
        return tasks

    def _start(self, dev: DeviceConfig, *, fresh: bool = False) -> None:
        if fresh or dev.id not in self._health.devices:
            self._health.add_device(dev.id, driver=dev.driver, port=dev.port, station=dev.station)
        runner = self._make_runner(dev)
        self._running[dev.id] = (dev, self._spawn(dev.id, runner.run_loop()), runner)

    async def _stop(self, dev_id: str) -> None:
        _, task, runner = self._running.pop(dev_id)
        # A ticket waiting for its idle gap is complete on paper: let it end and be
        # committed before the loop goes (bounded: a line that never goes quiet).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle_s
        while runner.holding and not task.done() and loop.time() < deadline:  # noqa: ASYNC110 (a rare reload polls; nothing on the hot path signals it)
            await asyncio.sleep(SETTLE_POLL_S)
        task.cancel()
        # Wait for the port to close; the task's own cancellation is not ours to raise.
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("Device %s loop ended with %r when stopped", dev_id, task.exception())
