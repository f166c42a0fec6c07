"""Storage-area temperature/RH sensors on a Modbus RTU bus, to ``climate`` readings.

Theory of operation
-------------------
Each ``[[climate]]`` sensor sits on a ``[[buses]]`` adapter with a Modbus address and
a register map (``drivers.climate_modbus_th``; the XY-MD02's by default). One task per
bus opens the adapter (``agent.hullers.rtu.open_rtu_master``: the same pymodbus master
and error mapping the hullers use) and polls its sensors one at a time, each on its own
fixed grid of ``poll_interval_s`` (60 s by default: storage air changes slowly). A poll
is one FC04 read covering both values, tried ``1 + retries`` times with the bus's
``min_gap_s`` of quiet before each request.

A bus carries either hullers or climate sensors: the hullers' scheduler
(``agent.hullers.bus.BusPoller``) polls counter blocks only, and two schedulers on one
adapter would fight over it, so ``config`` refuses a sensor on a bus that has hullers.

Each good sample becomes one ``climate`` reading (kind ``reading``; tags site, device =
sensor id, area; fields ``temperature_c`` and ``rh_pct``, float). A failed poll (no
reply, bad CRC, another unit answering, an exception, a value outside the sensing
range) is counted in the sensor's health entry and logged; after ``OFFLINE_AFTER``
failures in a row the sensor shows offline until a poll succeeds. A lost adapter marks
every sensor of the bus offline and is reopened after a capped, jittered back-off.
An outbox failure drops that one reading, logged; polling goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from coffee_telemetry.agent.accept import Accept
from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import ClimateSensorConfig, Config
from coffee_telemetry.agent.errors import OutboxError, PortError
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.hullers.rtu import (
    BusSpec,
    ClientFactory,
    ExchangeFailed,
    RtuMaster,
    open_rtu_master,
    pymodbus_client,
)
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
        client_factory: Builds the Modbus clients (tests pass fakes).
        clock_ns: Wall clock for timestamps.
        rng: Jitter source for the reopen back-off.
    """

    def __init__(
        self,
        *,
        cfg: Config,
        accept: Accept,
        health: Health,
        client_factory: ClientFactory = pymodbus_client,
        clock_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        self._site = cfg.site.id
        self._accept = accept
        self._health = health
        self._client_factory = client_factory
        self._clock_ns = clock_ns
        self._rng = rng
        buses = {b.id: b for b in cfg.buses}
        self._buses: dict[str, tuple[BusSpec, list[_Sensor]]] = {}
        for sc in cfg.climate:
            bus = buses[sc.bus]
            if sc.id not in health.devices:
                health.add_device(sc.id, driver=DRIVER, port=bus.port, station=sc.area)
            sensor = _Sensor(cfg=sc, registers=sc.registers.register_map())
            self._buses.setdefault(bus.id, (BusSpec.from_config(bus), []))[1].append(sensor)
        self.dropped = 0

    async def run_loop(self) -> None:
        """Poll every bus until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for bus_id in self._buses:
                tg.create_task(self._bus_loop(bus_id), name=f"climate-bus[{bus_id}]")

    async def _bus_loop(self, bus_id: str) -> None:
        spec, sensors = self._buses[bus_id]
        reopen = Backoff(
            initial_s=spec.reopen_initial_s, maximum_s=spec.reopen_max_s, rng=self._rng
        )
        while True:
            try:
                async with open_rtu_master(spec, client_factory=self._client_factory) as master:
                    log.info(
                        "Opened %s for climate bus %s (%d sensors)", spec.port, bus_id, len(sensors)
                    )
                    reopen.reset()
                    await self._poll_forever(master, spec, sensors)
            except PortError as exc:
                delay = reopen.next_delay()
                log.warning("Climate bus %s down: %s; reopening in %.1f s", bus_id, exc, delay)
                for sensor in sensors:
                    self._failed(sensor, f"port: {exc}", offline=True)
                await asyncio.sleep(delay)

    async def _poll_forever(self, master: RtuMaster, spec: BusSpec, sensors: list[_Sensor]) -> None:
        loop = asyncio.get_running_loop()
        for sensor in sensors:
            sensor.next_due = loop.time()
        last_end = float("-inf")
        while True:
            sensor = min(sensors, key=lambda s: s.next_due)
            delay = sensor.next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last_end = await self._poll(master, spec, sensor, last_end=last_end)
            # Keep the grid; if a long delay left it behind, start again from now.
            sensor.next_due = max(sensor.next_due + sensor.cfg.poll_interval_s, loop.time())

    async def _poll(
        self, master: RtuMaster, spec: BusSpec, sensor: _Sensor, *, last_end: float
    ) -> float:
        """Read one sensor and accept its reading; returns when the bus went quiet.

        Raises:
            PortError: The adapter is gone.
        """
        loop = asyncio.get_running_loop()
        request = read_request(sensor.cfg.unit, sensor.registers)
        why = "no attempt made"
        for _ in range(1 + spec.retries):
            gap = last_end + spec.min_gap_s - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            try:
                response = await master.request(request)
            except ExchangeFailed as failed:
                why = f"{failed.fault.value}: {failed.detail}"
                continue
            finally:
                last_end = loop.time()
            result = decode_reply(sensor.cfg.unit, response, sensor.registers)
            if isinstance(result, Discarded):
                why = f"{result.reason}: {result.data.hex(' ')}".rstrip(": ")
                continue
            await self._sample(sensor, result)
            return last_end
        self._failed(sensor, why, offline=False)
        return last_end

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
