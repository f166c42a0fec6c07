"""Storage-area temperature/RH sensors on a Modbus RTU bus, to ``climate`` readings.

Theory of operation
-------------------
Each ``[[climate]]`` sensor sits on a ``[[buses]]`` adapter with a Modbus address and
a register map (``drivers.climate_modbus_th``; the XY-MD02's by default). The bus is the
bus's scheduler's (``agent.bus.scheduler.BusScheduler``): it opens the adapter once and
runs, beside the sensors, any hullers' counters on the same RS-485 line, one request at
a time. Per bus, the sensors are one client of that scheduler; it polls them one at a
time, each on its own fixed grid of ``poll_interval_s`` (60 s by default: storage air
changes slowly), while the counters keep their own. A poll is one FC04 read covering
both values, tried ``1 + retries`` times; each attempt waits its turn on the line and
the bus's ``min_gap_s`` of quiet.

Each good sample becomes one ``climate`` reading (kind ``reading``; tags site, device =
sensor id, area; fields ``temperature_c`` and ``rh_pct``, float). A failed poll (no
reply, bad CRC, another unit answering, an exception, a value outside the sensing
range) is counted in the sensor's health entry and logged; after ``OFFLINE_AFTER``
failures in a row the sensor shows offline until a poll succeeds. A lost adapter marks
every sensor of the bus offline; the scheduler reopens it after a capped, jittered
back-off.
An outbox failure drops that one reading, logged; polling goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from coffee_telemetry.agent.accept import Accept
from coffee_telemetry.agent.bus.rtu import BusSpec, ClientFactory, ExchangeFailed, pymodbus_client
from coffee_telemetry.agent.bus.scheduler import BusScheduler
from coffee_telemetry.agent.config import ClimateSensorConfig, Config
from coffee_telemetry.agent.errors import OutboxError, PortError
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Draft
from coffee_telemetry.drivers.climate_modbus_th import (
    ClimateSample,
    RegisterMap,
    decode_reply,
    read_request,
)
from coffee_telemetry.drivers.events import Discarded

__all__ = ["DRIVER", "OFFLINE_AFTER", "ClimateService"]

log = logging.getLogger(__name__)

#: The driver name shown in health and status.
DRIVER = "climate.modbus_th"
#: Failed polls in a row after which a sensor shows offline.
OFFLINE_AFTER = 3


@dataclass(slots=True)
class _Sensor:
    cfg: ClimateSensorConfig
    registers: RegisterMap
    next_due: float = 0.0
    failures: int = 0


class ClimateService:
    """Polls every configured climate sensor and accepts its readings.

    Args:
        cfg: The site configuration (``climate``, ``buses``, ``site``).
        accept: The accept stage: stamps, commits, then fans out.
        health: Each sensor is registered there as a device (station = its area).
        buses: The buses' schedulers by bus id (shared with the hullers); the sensors
            attach to them and their owner runs them. A bus missing here gets a
            scheduler of the service's own, run by ``run_loop``.
        client_factory: Builds the Modbus clients of the service's own schedulers.
        clock_ns: Wall clock for timestamps.
    """

    def __init__(
        self,
        *,
        cfg: Config,
        accept: Accept,
        health: Health,
        buses: Mapping[str, BusScheduler] | None = None,
        client_factory: ClientFactory = pymodbus_client,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._site = cfg.site.id
        self._accept = accept
        self._health = health
        self._clock_ns = clock_ns
        configs = {b.id: b for b in cfg.buses}
        by_bus: dict[str, list[_Sensor]] = {}
        for sc in cfg.climate:
            bus = configs[sc.bus]
            if sc.id not in health.devices:
                health.add_device(sc.id, driver=DRIVER, port=bus.port, station=sc.area)
            sensor = _Sensor(cfg=sc, registers=sc.registers.register_map())
            by_bus.setdefault(bus.id, []).append(sensor)
        shared = buses or {}
        #: The schedulers this service made itself and runs in ``run_loop``.
        self._own: dict[str, BusScheduler] = {}
        for bus_id, sensors in by_bus.items():
            scheduler = shared.get(bus_id)
            if scheduler is None:
                scheduler = BusScheduler(
                    BusSpec.from_config(configs[bus_id]), client_factory=client_factory
                )
                self._own[bus_id] = scheduler
            scheduler.attach(
                "climate",
                _ClimateBus(self, sensors),
                ((s.cfg.unit, s.cfg.id) for s in sensors),
            )
        self.dropped = 0

    async def run_loop(self) -> None:
        """Run the schedulers of the service's own buses until cancelled (none: return)."""
        async with asyncio.TaskGroup() as tg:
            for bus_id, scheduler in self._own.items():
                tg.create_task(scheduler.run_loop(), name=f"climate-bus[{bus_id}]")

    async def _sample(self, sensor: _Sensor, sample: ClimateSample) -> None:
        sc = sensor.cfg
        now = self._clock_ns()
        entry = self._health.devices[sc.id]
        entry.frames_ok += 1
        entry.last_frame_ns = now
        if sensor.failures or entry.state is not DeviceState.ONLINE:
            log.info("Climate sensor %s (address %d) online", sc.id, sc.unit)
        sensor.failures = 0
        self._health.set_device_state(sc.id, DeviceState.ONLINE)
        draft = Draft(
            device=sc.id,
            measurement="climate",
            fields={"temperature_c": sample.temperature_c, "rh_pct": sample.rh_pct},
            tags={"site": self._site, "device": sc.id, "area": sc.area},
            kind="reading",
            ts_ns=now,
        )
        try:
            readings = await self._accept([draft])
        except OutboxError as exc:
            self.dropped += 1
            log.warning("Climate reading of %s not accepted: %s", sc.id, exc)
            return
        entry.readings += len(readings)
        entry.last_reading_ns = now

    def _failed(self, sensor: _Sensor, why: str, *, offline: bool) -> None:
        sc = sensor.cfg
        entry = self._health.devices[sc.id]
        entry.errors[why.split(":", 1)[0]] += 1
        entry.last_error = why
        sensor.failures += 1
        if offline or sensor.failures >= OFFLINE_AFTER:
            if entry.state is not DeviceState.OFFLINE:
                log.warning("Climate sensor %s (address %d) offline: %s", sc.id, sc.unit, why)
            self._health.set_device_state(sc.id, DeviceState.OFFLINE, error=why)
        else:
            log.debug("Climate sensor %s poll failed: %s", sc.id, why)


class _ClimateBus:
    # The sensors of one bus, as one client of the bus's scheduler.
    def __init__(self, service: ClimateService, sensors: list[_Sensor]) -> None:
        self._service = service
        self._sensors = sensors

    async def poll_loop(self, scheduler: BusScheduler) -> None:
        loop = asyncio.get_running_loop()
        sensors = self._sensors
        for sensor in sensors:
            sensor.next_due = loop.time()
        while True:
            sensor = min(sensors, key=lambda s: s.next_due)
            delay = sensor.next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._poll(scheduler, sensor)
            # Keep the grid; if a long delay left it behind, start again from now.
            sensor.next_due = max(sensor.next_due + sensor.cfg.poll_interval_s, loop.time())

    async def port_down(self, error: PortError) -> None:
        for sensor in self._sensors:
            self._service._failed(sensor, f"port: {error}", offline=True)

    async def _poll(self, scheduler: BusScheduler, sensor: _Sensor) -> None:
        """Read one sensor and accept its reading.

        Raises:
            PortError: The adapter is gone.
        """
        request = read_request(sensor.cfg.unit, sensor.registers)
        why = "no attempt made"
        for _ in range(1 + scheduler.spec.retries):
            try:
                response = await scheduler.attempt(request)
            except ExchangeFailed as failed:
                why = f"{failed.fault.value}: {failed.detail}"
                continue
            result = decode_reply(sensor.cfg.unit, response, sensor.registers)
            if isinstance(result, Discarded):
                why = f"{result.reason}: {result.data.hex(' ')}".rstrip(": ")
                continue
            await self._service._sample(sensor, result)
            return
        self._service._failed(sensor, why, offline=False)
