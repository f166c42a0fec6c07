"""The device fleet: a new device list applied by difference, with fake ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import DeviceConfig, SerialSettings, parse_config
from coffee_telemetry.agent.devices import make_device_runner
from coffee_telemetry.agent.devices.fleet import Fleet, diff_devices
from coffee_telemetry.agent.devices.ports import SerialPort
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.moisture_tesma import encode_frame
from tests.fakes import FakePorts, FakeSerialPort, stage


def devices(*specs: Mapping[str, object]) -> tuple[DeviceConfig, ...]:
    docs = [{"driver": "moisture.tesma", "station": "secador", **spec} for spec in specs]
    return parse_config({"site": {"id": "s1"}, "devices": docs}).devices


class TrackedPorts(FakePorts):
    """Fake ports that also note which were closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[FakeSerialPort] = []

    @asynccontextmanager
    async def open(
        self, *, device: str, path: str, settings: SerialSettings
    ) -> AsyncIterator[SerialPort]:
        async with super().open(device=device, path=path, settings=settings) as port:
            try:
                yield port
            finally:
                assert isinstance(port, FakeSerialPort)
                self.closed.append(port)

    def of(self, device: str) -> list[FakeSerialPort]:
        return [p for p in self.opened if p.device == device]


class Rig:
    def __init__(self) -> None:
        self.ports = TrackedPorts()
        self.health = Health()
        self.accepted: list[Reading] = []
        self.tasks: list[asyncio.Task[None]] = []
        accept = stage(self._commit, Stamper()).accept

        def make_runner(dev: DeviceConfig) -> Any:
            return make_device_runner(
                dev,
                site="s1",
                accept=accept,
                health=self.health,
                open_port=self.ports.open,
                backoff=Backoff(initial_s=0.01, maximum_s=0.02, jitter=0.0),
            )

        def spawn(dev_id: str, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            task = asyncio.create_task(loop, name=f"device[{dev_id}]")
            self.tasks.append(task)
            return task

        self.fleet = Fleet(make_runner, spawn=spawn, health=self.health)

    async def _commit(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)

    async def until(self, cond: Any, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.005)

    async def online(self, *ids: str) -> None:
        await self.until(
            lambda: all(
                i in self.health.devices and self.health.devices[i].state is DeviceState.ONLINE
                for i in ids
            )
        )

    def readings_of(self, device: str) -> list[Reading]:
        return [r for r in self.accepted if r.device == device]

    async def close(self) -> None:
        for task in self.fleet.cancel_all():
            await asyncio.wait([task])


def send_reading(port: FakeSerialPort, moisture_pct: float) -> None:
    """A continuous meter reports a value once it reads the same twice."""
    for _ in range(2):
        port.send(encode_frame("CAFE", moisture_pct))


A = {"id": "umid-a", "port": "/dev/fake-a"}
B = {"id": "umid-b", "port": "/dev/fake-b"}
C = {"id": "umid-c", "port": "/dev/fake-c"}
D = {"id": "umid-d", "port": "/dev/fake-d"}


def test_diff_by_id_and_equality() -> None:
    old = devices(A, B, C)
    new = devices(A, {**B, "station": "recepcao"}, D)
    change = diff_devices(old, new)
    assert change.added == ("umid-d",)
    assert change.removed == ("umid-c",)
    assert change.changed == ("umid-b",)
    assert change.unchanged == ("umid-a",)
    assert change.summary() == "devices +umid-d -umid-c ~umid-b"
    # Configs parsed twice from the same settings are equal: nothing to do.
    assert diff_devices(old, devices(A, B, C)).empty


async def test_apply_touches_only_what_differs() -> None:
    rig = Rig()
    rig.fleet.start(devices(A, B, C))
    await rig.online("umid-a", "umid-b", "umid-c")
    port_a = rig.ports.of("umid-a")[0]
    send_reading(port_a, 11.0)
    await rig.until(lambda: len(rig.readings_of("umid-a")) == 1)
    task_a = rig.fleet.tasks[0]

    change = await rig.fleet.apply(devices(A, {**B, "station": "recepcao"}, D))

    assert (change.added, change.removed, change.changed) == (("umid-d",), ("umid-c",), ("umid-b",))
    await rig.online("umid-a", "umid-b", "umid-d")
    # Unchanged: the same task and the same open port, which keeps delivering.
    assert rig.fleet.tasks[0] is task_a
    assert not task_a.done()
    assert rig.ports.of("umid-a") == [port_a]
    assert port_a not in rig.ports.closed
    send_reading(port_a, 11.5)
    await rig.until(lambda: len(rig.readings_of("umid-a")) == 2)
    assert rig.health.devices["umid-a"].reconnects == 0
    # Removed: the port closed, the health entry is gone, no loop left.
    assert rig.ports.of("umid-c")[0] in rig.ports.closed
    assert "umid-c" not in rig.health.devices
    assert [d.id for d in rig.fleet.devices] == ["umid-a", "umid-b", "umid-d"]
    # Changed: the old port closed before the new one opened; readings carry the new station.
    old_b, new_b = rig.ports.of("umid-b")
    assert old_b in rig.ports.closed
    assert new_b not in rig.ports.closed
    assert rig.health.devices["umid-b"].station == "recepcao"
    send_reading(new_b, 12.0)
    await rig.until(lambda: len(rig.readings_of("umid-b")) == 1)
    assert rig.readings_of("umid-b")[0].tags["station"] == "recepcao"
    # Added: a new loop reads its port.
    send_reading(rig.ports.of("umid-d")[0], 13.0)
    await rig.until(lambda: len(rig.readings_of("umid-d")) == 1)
    await rig.close()
    assert all(task.done() for task in rig.tasks)


async def test_apply_same_devices_changes_nothing() -> None:
    rig = Rig()
    rig.fleet.start(devices(A, B))
    await rig.online("umid-a", "umid-b")
    tasks = rig.fleet.tasks
    change = await rig.fleet.apply(devices(A, B))
    assert change.empty
    assert rig.fleet.tasks == tasks
    assert len(rig.ports.opened) == 2
    assert not rig.ports.closed
    await rig.close()


async def test_changed_port_moves_the_device() -> None:
    rig = Rig()
    rig.fleet.start(devices(A))
    await rig.online("umid-a")
    change = await rig.fleet.apply(devices({**A, "port": "/dev/fake-z"}))
    assert change.changed == ("umid-a",)
    await rig.online("umid-a")
    assert [p.path for p in rig.ports.of("umid-a")] == ["/dev/fake-a", "/dev/fake-z"]
    assert rig.ports.of("umid-a")[0] in rig.ports.closed
    assert rig.health.devices["umid-a"].port == "/dev/fake-z"
    await rig.close()


async def test_a_ticket_waiting_for_its_idle_gap_is_committed_before_its_loop_stops() -> None:
    rig = Rig()
    meter = {
        "id": "umid-t",
        "driver": "moisture.ticket",
        "port": "/dev/t",
        "ticket": {"idle_gap_s": 0.3},
    }
    (before,) = devices(meter)
    rig.fleet.start([before])
    await rig.online("umid-t")
    port = rig.ports.of("umid-t")[0]
    await asyncio.sleep(0.4)  # past the opening's idle gap: the next ticket is whole
    # A ticket with no form feed: complete only once the line has been quiet 0.3 s.
    port.send(b"GEHAKA G650\r\nProduto: cafe\r\nUmidade: 11,8 %\r\nAmostra: 0007\r\n")
    await rig.until(lambda: rig.fleet._running["umid-t"][2].holding)
    assert rig.readings_of("umid-t") == []

    change = await rig.fleet.apply(devices({**meter, "station": "recepcao"}))

    # Reconfigured, and the ticket the old loop held was committed before it went.
    assert change.changed == ("umid-t",)
    (got,) = rig.readings_of("umid-t")
    assert got.fields["moisture_pct"] == 11.8
    assert got.tags["station"] == "secador"
    assert port in rig.ports.closed
