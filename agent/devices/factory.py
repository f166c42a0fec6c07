"""Which loop runs a device.

Every device that only talks (a ``StreamDeviceBase`` in the config's driver
registry, ``DeviceConfig``) runs in ``runner.DeviceRunner`` through the driver
its config makes, so a new stream driver changes nothing here. A device that is
asked rather than listened to gets a runner of its own, like
``mtsics.MtSicsRunner``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import assert_never

from coffee_telemetry.agent.accept import Accept
from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import DeviceConfig, MtSicsDevice, StreamDeviceBase
from coffee_telemetry.agent.devices.mtsics import MtSicsRunner
from coffee_telemetry.agent.devices.ports import PortOpener, open_serial_port
from coffee_telemetry.agent.devices.runner import (
    DeviceRunner,
    DeviceT,
    LotLookup,
    PortRunner,
    Runner,
)
from coffee_telemetry.agent.health import Health


def make_device_runner(
    dev: DeviceConfig,
    *,
    site: str,
    accept: Accept,
    health: Health,
    open_port: PortOpener = open_serial_port,
    backoff: Backoff | None = None,
    lot_for_station: LotLookup | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    monotonic: Callable[[], float] = time.monotonic,
) -> Runner:
    """The loop for ``dev``: ``DeviceRunner`` for stream devices, ``MtSicsRunner`` for balances.

    Arguments are those of ``PortRunner``.
    """

    def build(runner: type[PortRunner[DeviceT]], device: DeviceT) -> Runner:
        return runner(
            device,
            site=site,
            accept=accept,
            health=health,
            open_port=open_port,
            backoff=backoff,
            lot_for_station=lot_for_station,
            clock_ns=clock_ns,
            monotonic=monotonic,
        )

    match dev:
        case MtSicsDevice():
            return build(MtSicsRunner, dev)
        case StreamDeviceBase():
            return build(DeviceRunner, dev)
        case _:
            assert_never(dev)
