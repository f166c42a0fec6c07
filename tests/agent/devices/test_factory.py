"""The driver registry: every ``driver`` name builds its config, its driver and its loop."""

from __future__ import annotations

from typing import get_args

import pytest

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.config import (
    DRIVERS,
    DeviceConfig,
    MtSicsDevice,
    StreamDeviceBase,
    parse_config,
)
from coffee_telemetry.agent.devices import make_device_runner
from coffee_telemetry.agent.devices.mtsics import MtSicsRunner
from coffee_telemetry.agent.devices.runner import DeviceRunner
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Stamper
from coffee_telemetry.drivers.events import Measurement

MODELS = get_args(get_args(DeviceConfig)[0])


async def _commit(readings: object) -> None:
    return None


def _device(driver: str) -> DeviceConfig:
    cfg = parse_config(
        {"site": {"id": "s1"}, "devices": [{"id": "d1", "driver": driver, "port": "/dev/null"}]}
    )
    return cfg.devices[0]


def test_driver_names_come_from_the_registry() -> None:
    assert len(DRIVERS) == len(MODELS) == len(set(DRIVERS))
    for name, model in zip(DRIVERS, MODELS, strict=True):
        assert get_args(model.model_fields["driver"].annotation) == (name,)
    assert {"moisture.ticket", "moisture.tesma", "scale.mtsics"} <= set(DRIVERS)


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_driver_gets_its_loop(driver: str) -> None:
    dev = _device(driver)
    health = Health()
    runner = make_device_runner(
        dev,
        site="s1",
        accept=AcceptStage(_commit, stamper=Stamper(), health=health).accept,
        health=health,
    )
    expected = MtSicsRunner if isinstance(dev, MtSicsDevice) else DeviceRunner
    assert type(runner) is expected


@pytest.mark.parametrize("driver", [d for d in DRIVERS if d != "scale.mtsics"])
def test_stream_drivers_are_fresh_per_open_and_take_timed_bytes(driver: str) -> None:
    dev = _device(driver)
    assert isinstance(dev, StreamDeviceBase)
    first, second = dev.make_driver(), dev.make_driver()
    assert first is not second
    first.receive_data(b"\x00\xffgarbage\r\n", 1.0)
    first.tick(100.0)
    events = first.events()
    assert not any(isinstance(e, Measurement) for e in events)
    assert first.frames_ok == 0
    assert second.events() == []
