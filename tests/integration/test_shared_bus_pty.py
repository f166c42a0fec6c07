"""One RS-485 bus, one scheduler: a huller and a storage T/RH sensor on the same pty.

The bus simulator answers a bag counter, an hour meter and an XY-MD02-style sensor on one
pseudo-terminal; the agent opens it once through the bus's scheduler, the real pymodbus
client, and both the huller and the climate service as its clients, into an outbox on
disk. Both series arrive, each on its own interval; the adapter is then unplugged: every
unit of both kinds shows offline, and both series come back after the replug, through one
reopen of the one port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from coffee_telemetry.agent.bus.scheduler import bus_schedulers
from coffee_telemetry.agent.climate.service import ClimateService
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import open_maintenance_store
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.climate import ClimateUnitSim, serve_climate_bus
from coffee_telemetry.simulators.pty import open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim
from tests.fakes import stage

pytestmark = pytest.mark.integration


def site(tmp_path: Path, port: str) -> Config:
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "buses": [
                {
                    "id": "rs485",
                    "port": port,
                    "serial": {"baudrate": 9600, "stopbits": 2},
                    "timeout_s": 0.3,
                    "min_gap_s": 0.01,
                }
            ],
            "hullers": [
                {
                    "id": "desc-1",
                    "bus": "rs485",
                    "bag_counter": 1,
                    "hour_meter": 2,
                    "poll_interval_s": 0.15,
                }
            ],
            "climate": [
                {
                    "id": "armazem-1-norte",
                    "bus": "rs485",
                    "unit": 7,
                    "area": "armazem-1",
                    "poll_interval_s": 0.4,
                }
            ],
        }
    )


async def records(outbox: Outbox) -> list[Reading]:
    return [r.reading for r in await outbox.read_batch("probe", 100_000)]


async def until(
    outbox: Outbox, check: Callable[[list[Reading]], bool], timeout_s: float = 10
) -> None:
    async with asyncio.timeout(timeout_s):
        while not check(await records(outbox)):
            await asyncio.sleep(0.05)


def of(readings: list[Reading], measurement: str) -> list[Reading]:
    return [r for r in readings if r.measurement == measurement]


def states(health: Health) -> set[DeviceState]:
    return {health.devices[d].state for d in ("desc-1", "armazem-1-norte")}


async def test_hullers_and_climate_share_one_bus(tmp_path: Path) -> None:
    with open_pty_port(link=tmp_path / "ttyRS485") as pty:
        cfg = site(tmp_path, pty.path)
        counter = CounterUnitSim(1, pv=100, rate_per_s=5)
        hours = CounterUnitSim(2, mode=Mode.TIMER, pv=3600)
        sensor = ClimateUnitSim(7, temperature_c=22.4, rh_pct=66.0)
        health = Health()
        async with (
            serve_climate_bus(pty, [sensor], [counter, hours]),
            open_outbox(tmp_path / "outbox.sqlite3", sinks=["probe"]) as outbox,
            open_maintenance_store(cfg.maintenance_path) as store,
        ):
            accept = stage(outbox.accept, Stamper()).accept
            buses = bus_schedulers(cfg.buses, {"rs485"})
            hullers = HullerService(cfg=cfg, store=store, accept=accept, health=health, buses=buses)
            climate = ClimateService(cfg=cfg, accept=accept, health=health, buses=buses)
            (bus,) = buses.values()
            assert bus.addresses == {
                1: "desc-1.counter",
                2: "desc-1.timer",
                7: "armazem-1-norte",
            }
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(hullers.run_loop(), name="hullers"),
                    tg.create_task(climate.run_loop(), name="climate"),
                    tg.create_task(bus.run_loop(), name="bus[rs485]"),
                ]
                try:
                    await until(
                        outbox,
                        lambda rs: len(of(rs, "huller")) >= 6 and len(of(rs, "climate")) >= 2,
                    )
                    # One port, opened once, for both kinds of unit.
                    assert pty.opens == 1
                    assert bus.opens == 1
                    sensor.set_air(21.0, 74.5)
                    await until(outbox, lambda rs: of(rs, "climate")[-1].fields["rh_pct"] == 74.5)
                    assert states(health) == {DeviceState.ONLINE}

                    pty.unplug()
                    async with asyncio.timeout(5):
                        while states(health) != {DeviceState.OFFLINE}:
                            await asyncio.sleep(0.02)
                    before = await records(outbox)
                    pty.replug()
                    await until(
                        outbox,
                        lambda rs: (
                            len(of(rs, "huller")) > len(of(before, "huller"))
                            and len(of(rs, "climate")) > len(of(before, "climate"))
                        ),
                    )
                    assert pty.opens == 2
                    assert bus.opens == 2
                finally:
                    for task in tasks:
                        task.cancel()
            readings = await records(outbox)

    huller = of(readings, "huller")
    climate_readings = of(readings, "climate")
    # Each kind on its own interval: the counter's 0.15 s grid against the sensor's 0.4 s.
    assert len(huller) > len(climate_readings)
    assert dict(climate_readings[0].fields) == {"temperature_c": 22.4, "rh_pct": 66.0}
    assert dict(climate_readings[0].tags) == {
        "site": "ourofino",
        "device": "armazem-1-norte",
        "area": "armazem-1",
    }
    assert huller[0].tags["device"] == "desc-1"
    bags = [float(r.fields["bags_total"]) for r in huller]
    assert bags == sorted(bags)
    assert bags[-1] > bags[0]
    # The simulator answered every unit, each request in turn on the one line.
    assert counter.replies > 0
    assert hours.replies > 0
    assert sensor.replies >= len(climate_readings)
