"""The bus's scheduler: one port for every client, one request at a time, addresses once."""

from __future__ import annotations

import asyncio
import itertools
from typing import cast

import pytest

from coffee_telemetry.agent.bus.rtu import BusSpec
from coffee_telemetry.agent.bus.scheduler import BusScheduler, bus_schedulers
from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.drivers.climate_modbus_th import XY_MD02, read_request
from coffee_telemetry.drivers.modbus_rtu import FunctionCode, ReadRequest, RegistersResponse
from coffee_telemetry.simulators.climate import ClimateUnitSim
from coffee_telemetry.simulators.rtu import CounterUnitSim
from tests.fakes import FakeModbusClient

GAP_S = 0.02


class Client:
    """A client polling its one unit as fast as the line lets it."""

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        self.replies: list[tuple[float, RegistersResponse]] = []
        self.downs: list[PortError] = []
        self.cancelling_at_down: list[int] = []

    async def poll_loop(self, scheduler: BusScheduler) -> None:
        loop = asyncio.get_running_loop()
        while True:
            response = await scheduler.attempt(self.request)
            assert isinstance(response, RegistersResponse)
            self.replies.append((loop.time(), response))

    async def port_down(self, error: PortError) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.cancelling_at_down.append(task.cancelling())
        self.downs.append(error)


def bus(fake: FakeModbusClient) -> BusScheduler:
    spec = BusSpec("/dev/rs485", name="rs485", min_gap_s=GAP_S, timeout_s=0.1)
    return BusScheduler(spec, client_factory=fake.factory)


def test_an_address_belongs_to_one_unit() -> None:
    scheduler = bus(FakeModbusClient())
    scheduler.attach(
        "hullers",
        Client(ReadRequest(1, FunctionCode.READ_INPUT_REGISTERS, 0, 1)),
        [(1, "desc-1.counter")],
    )
    with pytest.raises(ValueError, match=r"two units at address 1 \(desc-1.counter, norte\)"):
        scheduler.attach("climate", Client(read_request(1, XY_MD02)), [(1, "norte")])
    with pytest.raises(ValueError, match="address 5"):
        scheduler.attach("climate", Client(read_request(5, XY_MD02)), [(5, "a"), (5, "b")])
    # A refused client claims nothing.
    assert scheduler.addresses == {1: "desc-1.counter"}


async def test_attempt_needs_an_open_port() -> None:
    scheduler = bus(FakeModbusClient())
    with pytest.raises(PortError, match="bus rs485 is not open"):
        await scheduler.attempt(read_request(1, XY_MD02))
    assert not scheduler.is_open


async def test_clients_take_turns_on_one_port_with_quiet_between() -> None:
    sensor = ClimateUnitSim(7, temperature_c=20.5, rh_pct=65.0)
    counter = CounterUnitSim(1, pv=42)
    fake = FakeModbusClient(units=cast("list[CounterUnitSim]", [counter, sensor]))
    scheduler = bus(fake)
    climate = Client(read_request(7, XY_MD02))
    hullers = Client(ReadRequest(1, FunctionCode.READ_INPUT_REGISTERS, 0x03E8, 6))
    scheduler.attach("climate", climate, [(7, "norte")])
    scheduler.attach("hullers", hullers, [(1, "desc-1.counter")])
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        task = tg.create_task(scheduler.run_loop())
        while len(climate.replies) < 5 or len(hullers.replies) < 5:
            await asyncio.sleep(0.01)
        assert scheduler.is_open
        task.cancel()
    assert scheduler.opens == 1
    assert climate.replies[0][1].registers == (205, 650)
    # Both clients hammer the line; once both wait for it, neither starves the other:
    # they alternate, request by request.
    units = [unit for _, _, unit in fake.calls]
    both = units[units.index(1) :]
    assert len(both) >= 8
    assert all(a != b for a, b in itertools.pairwise(both))
    # And the line is quiet for min_gap_s between exchanges, whoever sent them.
    times = [t for t, _, _ in fake.calls]
    assert all(b - a >= GAP_S * 0.9 for a, b in itertools.pairwise(times))


async def test_a_lost_port_tells_every_client_and_is_reopened() -> None:
    fake = FakeModbusClient(units=[CounterUnitSim(1)])
    spec = BusSpec(
        "/dev/rs485", name="rs485", timeout_s=0.1, reopen_initial_s=0.05, reopen_max_s=0.05
    )
    scheduler = BusScheduler(spec, client_factory=fake.factory)
    hullers = Client(ReadRequest(1, FunctionCode.READ_INPUT_REGISTERS, 0x03E8, 6))
    climate = Client(read_request(7, XY_MD02))  # nobody answers at 7: it only learns of outages
    scheduler.attach("hullers", hullers, [(1, "desc-1.counter")])
    scheduler.attach("climate", _Idle(climate), [(7, "norte")])
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        task = tg.create_task(scheduler.run_loop())
        for outage in (1, 2):
            while len(hullers.replies) < 2 * outage:
                await asyncio.sleep(0.005)
            fake.trace_connect(False)  # pymodbus: the transport went
            while scheduler.opens < outage + 1:
                await asyncio.sleep(0.005)
        task.cancel()
    assert [str(e) for e in climate.downs] == [str(e) for e in hullers.downs]
    assert len(hullers.downs) == 2
    assert "connection lost" in str(hullers.downs[0])
    # The scheduler's task is not left looking cancelled when its clients hear of it.
    assert hullers.cancelling_at_down == climate.cancelling_at_down == [0, 0]


class _Idle:
    # A client with nothing to poll (its poll loop waits), still told of outages.
    def __init__(self, client: Client) -> None:
        self._client = client

    async def poll_loop(self, scheduler: BusScheduler) -> None:
        await asyncio.Event().wait()

    async def port_down(self, error: PortError) -> None:
        await self._client.port_down(error)


def test_one_scheduler_per_used_bus(tmp_path: object) -> None:
    cfg = parse_config(
        {
            "site": {"id": "s", "timezone": "UTC"},
            "agent": {"data_dir": str(tmp_path)},
            "buses": [
                {"id": "a", "port": "/dev/a", "timeout_s": 0.2, "min_gap_s": 0.05},
                {"id": "b", "port": "/dev/b"},
            ],
        }
    )
    schedulers = bus_schedulers(cfg.buses, {"a"})
    assert list(schedulers) == ["a"]
    spec = schedulers["a"].spec
    assert (spec.name, spec.port, spec.timeout_s, spec.min_gap_s) == ("a", "/dev/a", 0.2, 0.05)
