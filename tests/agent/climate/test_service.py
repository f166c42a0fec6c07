"""Climate sensors: their config, and the service polling them through a fake Modbus client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest
from pymodbus.pdu import ModbusPDU

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.climate.service import OFFLINE_AFTER, ClimateService
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.errors import ConfigError, OutboxError
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.climate_modbus_th import XY_MD02
from coffee_telemetry.simulators.climate import ClimateUnitSim
from coffee_telemetry.simulators.rtu import CounterUnitSim
from tests.fakes import FakeModbusClient

FAST_BUS = {"id": "rs485-armazem", "port": "/dev/armazem", "timeout_s": 0.05, "retries": 1}


def make_config(tmp_path: Path, *sensors: dict[str, object], **extra: object) -> Config:
    doc: dict[str, object] = {
        "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
        "agent": {"data_dir": str(tmp_path / "data")},
        "buses": [FAST_BUS],
        "climate": list(sensors),
    }
    doc.update(extra)
    return parse_config(doc)


def sensor(id_: str = "armazem-1-norte", unit: int = 3, **more: object) -> dict[str, object]:
    return {
        "id": id_,
        "bus": "rs485-armazem",
        "unit": unit,
        "area": "armazem-1",
        "poll_interval_s": 0.2,
        **more,
    }


# -- config ------------------------------------------------------------------------------


def test_defaults_are_the_xy_md02(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor())
    (sc,) = cfg.climate
    assert sc.registers.register_map() == XY_MD02
    assert (
        parse_config(
            {
                "site": {"id": "s", "timezone": "UTC"},
                "agent": {"data_dir": str(tmp_path)},
                "buses": [FAST_BUS],
                "climate": [{"id": "c", "bus": "rs485-armazem", "unit": 1, "area": "a"}],
            }
        )
        .climate[0]
        .poll_interval_s
        == 60.0
    )


def test_other_register_map(tmp_path: Path) -> None:
    regs = {"temperature": 0, "humidity": 1, "temperature_divisor": 100, "humidity_divisor": 100}
    cfg = make_config(tmp_path, sensor(registers=regs))
    mapping = cfg.climate[0].registers.register_map()
    assert (mapping.first, mapping.count, mapping.temperature_divisor) == (0, 2, 100)


@pytest.mark.parametrize(
    ("sensors", "extra", "message"),
    [
        ([sensor(bus="nowhere")], {}, "no \\[\\[buses\\]\\] entry"),
        ([sensor(), sensor("armazem-1-sul")], {}, "address 3 is already used"),
        ([sensor(), sensor(unit=4)], {}, "already used"),
        ([sensor(registers={"temperature": 0, "humidity": 40})], {}, "span"),
        ([sensor(registers={"temperature": 2})], {}, "same register"),
        ([sensor(registers={"function": 3})], {}, "function"),
        ([sensor(registers={"humidity_divisor": 1000})], {}, "humidity_divisor"),
        (
            [sensor()],
            {"hullers": [{"id": "desc-1", "bus": "rs485-armazem", "bag_counter": 3}]},
            "climate\\[0\\].unit: address 3 is already used",
        ),
    ],
)
def test_config_refusals(
    tmp_path: Path, sensors: list[dict[str, object]], extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, *sensors, **extra)


def test_a_sensor_shares_a_bus_with_hullers(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        sensor(),
        hullers=[{"id": "desc-1", "bus": "rs485-armazem", "bag_counter": 1, "hour_meter": 2}],
    )
    assert cfg.climate[0].bus == cfg.hullers[0].bus == "rs485-armazem"


# -- the service -----------------------------------------------------------------------------


class Harness:
    """A ClimateService over a fake Modbus client answering from simulated sensors."""

    def __init__(self, cfg: Config, sims: Sequence[ClimateUnitSim], *, connects: bool = True):
        self.accepted: list[Reading] = []
        self.fail_commits = False
        self.changed = asyncio.Event()
        self.health = Health()
        # The fake answers from any unit with ``handle``; it is typed for counters.
        self.client = FakeModbusClient(
            units=cast("list[CounterUnitSim]", list(sims)), connects=connects
        )
        stage = AcceptStage(self.commit, stamper=Stamper(), health=self.health)
        self.svc = ClimateService(
            cfg=cfg, accept=stage.accept, health=self.health, client_factory=self.client.factory
        )

    async def commit(self, readings: Sequence[Reading]) -> None:
        self.changed.set()
        if self.fail_commits:
            raise OutboxError("disk full")
        self.accepted.extend(readings)

    async def run_until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            task = tg.create_task(self.svc.run_loop())
            while not done():
                await asyncio.sleep(0.01)
            task.cancel()


async def test_readings_from_two_sensors(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor(), sensor("armazem-2", unit=4, area="armazem-2"))
    north = ClimateUnitSim(3, temperature_c=24.3, rh_pct=71.2)
    two = ClimateUnitSim(4, temperature_c=-1.5, rh_pct=40.0)
    h = Harness(cfg, [north, two])
    await h.run_until(lambda: len(h.accepted) >= 4)
    first = {r.device: r for r in h.accepted[:2]}
    assert first["armazem-1-norte"].measurement == "climate"
    assert dict(first["armazem-1-norte"].fields) == {"temperature_c": 24.3, "rh_pct": 71.2}
    assert dict(first["armazem-1-norte"].tags) == {
        "site": "ourofino",
        "device": "armazem-1-norte",
        "area": "armazem-1",
    }
    assert dict(first["armazem-2"].fields) == {"temperature_c": -1.5, "rh_pct": 40.0}
    entry = h.health.devices["armazem-1-norte"]
    assert entry.state is DeviceState.ONLINE
    assert entry.station == "armazem-1"
    assert entry.readings >= 2
    assert {unit for _, kind, unit in h.client.calls} == {3, 4}
    assert {kind for _, kind, _ in h.client.calls} == {"fc04"}


async def test_bad_values_are_refused_and_the_sensor_goes_offline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor())
    sim = ClimateUnitSim(3)
    sim.raw_override = (0x7FFF, 0x7FFF)  # a failed element
    h = Harness(cfg, [sim])
    entry = h.health.devices["armazem-1-norte"]
    await h.run_until(lambda: sum(entry.errors.values()) >= OFFLINE_AFTER)
    assert h.accepted == []
    assert entry.state is DeviceState.OFFLINE
    assert entry.errors["temperature-out-of-range"] >= OFFLINE_AFTER
    assert len(h.client.calls) >= 2 * OFFLINE_AFTER  # each poll tried 1 + retries times
    sim.raw_override = None
    await h.run_until(lambda: bool(h.accepted))
    assert h.health.devices["armazem-1-norte"].state is DeviceState.ONLINE


async def test_a_silent_sensor_is_counted_and_goes_offline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor())
    h = Harness(cfg, [])

    async def never(kind: str, address: int, unit: int) -> ModbusPDU:
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    h.client.answer = never
    entry = h.health.devices["armazem-1-norte"]
    await h.run_until(lambda: entry.errors["no-response"] >= OFFLINE_AFTER)
    assert entry.state is DeviceState.OFFLINE
    assert len(h.client.calls) >= 2 * OFFLINE_AFTER
    assert h.accepted == []


async def test_outbox_failure_drops_the_reading_and_polling_goes_on(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor())
    h = Harness(cfg, [ClimateUnitSim(3)])
    h.fail_commits = True
    await h.run_until(lambda: h.svc.dropped >= 2)
    h.fail_commits = False
    await h.run_until(lambda: bool(h.accepted))
    assert h.accepted[0].measurement == "climate"


async def test_port_that_will_not_open_marks_sensors_offline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sensor())
    h = Harness(cfg, [ClimateUnitSim(3)], connects=False)
    entry = h.health.devices["armazem-1-norte"]
    await h.run_until(lambda: entry.last_error is not None)
    assert entry.state is DeviceState.OFFLINE
    assert entry.last_error is not None
    assert entry.last_error.startswith("port")
    assert h.accepted == []
