"""Storage climate end to end inside one process: two simulated T/RH sensors on a real pty,
the real pymodbus client, the climate service, and an outbox on disk.

The north sensor's air turns humid mid-run; the south sensor's element fails for a while
(the driver refuses its 0x7FFF), and its readings come back when it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from coffee_telemetry.agent.climate.service import ClimateService
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.simulators.climate import ClimateUnitSim, serve_climate_bus
from coffee_telemetry.simulators.pty import open_pty_port
from tests.fakes import stage

pytestmark = pytest.mark.integration


def site(tmp_path: Path, port: str) -> Config:
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "buses": [
                {
                    "id": "rs485-armazem",
                    "port": port,
                    "serial": {"baudrate": 9600, "stopbits": 1},  # the XY-MD02's 8N1
                    "timeout_s": 0.3,
                    "min_gap_s": 0.01,
                }
            ],
            "climate": [
                {
                    "id": "armazem-1-norte",
                    "bus": "rs485-armazem",
                    "unit": 1,
                    "area": "armazem-1",
                    "poll_interval_s": 0.15,
                },
                {
                    "id": "armazem-1-sul",
                    "bus": "rs485-armazem",
                    "unit": 2,
                    "area": "armazem-1",
                    "poll_interval_s": 0.15,
                },
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


def of(readings: list[Reading], device: str) -> list[Reading]:
    return [r for r in readings if r.device == device]


async def test_climate_sensors_to_the_outbox(tmp_path: Path) -> None:
    with open_pty_port(link=tmp_path / "ttyRS485") as pty:
        cfg = site(tmp_path, pty.path)
        north = ClimateUnitSim(1, temperature_c=24.3, rh_pct=62.0)
        south = ClimateUnitSim(2, temperature_c=23.9, rh_pct=61.5)
        south.raw_override = (0x7FFF, 0x7FFF)
        health = Health()
        async with (
            serve_climate_bus(pty, [north, south]),
            open_outbox(tmp_path / "outbox.sqlite3", sinks=["probe"]) as outbox,
        ):
            svc = ClimateService(
                cfg=cfg, accept=stage(outbox.accept, Stamper()).accept, health=health
            )
            task = asyncio.create_task(svc.run_loop(), name="climate")
            try:
                await until(outbox, lambda rs: len(of(rs, "armazem-1-norte")) >= 2)
                north.set_air(19.0, 78.5)
                await until(
                    outbox, lambda rs: of(rs, "armazem-1-norte")[-1].fields["rh_pct"] == 78.5
                )
                assert of(await records(outbox), "armazem-1-sul") == []
                assert health.devices["armazem-1-sul"].errors["temperature-out-of-range"] >= 1
                south.raw_override = None
                await until(outbox, lambda rs: bool(of(rs, "armazem-1-sul")))
                assert health.devices["armazem-1-norte"].state is DeviceState.ONLINE
                assert health.devices["armazem-1-sul"].state is DeviceState.ONLINE
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            readings = await records(outbox)

    first = of(readings, "armazem-1-norte")[0]
    assert first.measurement == "climate"
    assert first.kind == "reading"
    assert dict(first.fields) == {"temperature_c": 24.3, "rh_pct": 62.0}
    assert dict(first.tags) == {
        "site": "ourofino",
        "device": "armazem-1-norte",
        "area": "armazem-1",
    }
    assert dict(of(readings, "armazem-1-sul")[0].fields) == {"temperature_c": 23.9, "rh_pct": 61.5}
    # Readings of one sensor are in time order, each stamped once.
    stamps = [r.ts_ns for r in of(readings, "armazem-1-norte")]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
