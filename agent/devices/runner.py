"""Device loops: one per configured device, from serial bytes to accepted readings.

Theory of operation
-------------------
A device loop owns one port. It opens the port by its stable path; on any
``PortError`` (unplugged adapter, missing path, port locked by another
process) it closes what it had, marks the device offline, waits a jittered
back-off (1 s doubling to 60 s) and opens the same path again. That outer
loop, and turning measurements into readings, is ``PortRunner``; what happens
while the port is open depends on the device:

- Stream devices (moisture meters, Toledo and ASCII scale indicators) only
  talk: ``DeviceRunner`` pushes the bytes it reads into a sans-I/O
  ``StreamDriver`` (``drivers.stream``) with the arrival time. When the driver wants to be woken
  without new bytes (a ticket ends after an idle gap, a frame waits to see if
  a checksum follows), the read is bounded by its deadline and ``tick`` is
  called.
- MT-SICS balances answer only when asked: ``agent.devices.mtsics.MtSicsRunner``
  writes requests as well as reading replies.

``make_device_runner`` picks the loop for a device. A new driver is made on
every open: a half-received frame from before an unplug must not be glued to
bytes after it.

Each measurement is timed with the wall-clock time its last bytes arrived
(not when an idle gap ended), enriched with site/device/station/product/lot
tags (and, for a device with a ``[devices.meter]`` table, the ``calibration`` field:
the id of its meter record, computed once per loop), and handed to the accept stage
(``agent.accept``: stamp, commit to the outbox, fan out) before more bytes are read:
once ``accept`` returns the reading is safe, and the serial buffers provide the
back-pressure in between. Measurements that are discrete happenings (``EVENT_MEASUREMENTS``:
a weighment) become readings of kind ``event``, published on
``<device>/event``, and carry the lot the station is working on when one is
set (``lot_for_station``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, assert_never

from coffee_telemetry.agent.accept import Accept
from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import MtSicsDevice, StreamDeviceBase
from coffee_telemetry.agent.devices.ports import PortOpener, SerialPort, open_serial_port
from coffee_telemetry.agent.errors import PortError
from coffee_telemetry.agent.evidence.meters import CALIBRATION_FIELD, calibration_ref
from coffee_telemetry.agent.health import DeviceHealth, DeviceState, Health
from coffee_telemetry.agent.lots.store import LotError, validate_lot
from coffee_telemetry.agent.readings import Draft
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement
from coffee_telemetry.drivers.stream import StreamDriver

log = logging.getLogger(__name__)

#: Measurements that are discrete happenings rather than samples: their readings
#: have kind ``event`` and carry the station's current lot.
EVENT_MEASUREMENTS = frozenset({"weighment"})

#: Devices that only talk: read by ``DeviceRunner`` through the ``StreamDriver`` they make.
StreamDevice = StreamDeviceBase


#: Measurements that take the station's active lot when the device gives none.
STATION_LOT_MEASUREMENTS = frozenset({"moisture", "weighment"})

#: The lot a station is working on now, if any (``lot_for_station(station)``).
LotLookup = Callable[[str], str | None]


DeviceT = TypeVar("DeviceT", bound=MtSicsDevice | StreamDeviceBase)


class Runner(Protocol):
    """A device loop, as the agent runs it: one task per device."""

    @property
    def holding(self) -> bool:
        """Whether the loop holds part of a frame (a ticket waiting for its idle gap)."""
        ...

    async def run_loop(self) -> None:
        """Run until cancelled."""
        ...


class PortRunner(abc.ABC, Generic[DeviceT]):
    """The part every device loop shares: reopening the port, stamping, committing.

    Subclasses talk to the device in ``_connection_loop``.

    Args:
        dev: The device's config.
        site: Site id, a tag of every reading.
        accept: The accept stage (stamp, commit, then fan out); once it returns the
            readings are safe.
        health: Where the device's state and counters live.
        open_port: Opens the port (fakes in tests).
        backoff: Delays between reopen attempts (1 s doubling to 60 s).
        lot_for_station: The lot a station works on now; events of the device's
            station are tagged with it.
        clock_ns: Wall clock for timestamps.
        monotonic: The drivers' clock: arrival times and deadlines.
    """

    def __init__(
        self,
        dev: DeviceT,
        *,
        site: str,
        accept: Accept,
        health: Health,
        open_port: PortOpener = open_serial_port,
        backoff: Backoff | None = None,
        lot_for_station: LotLookup | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dev = dev
        self._site = site
        self._accept = accept
        self._health = health
        self._entry: DeviceHealth = health.devices.get(dev.id) or health.add_device(
            dev.id, driver=dev.driver, port=dev.port, station=dev.station
        )
        self._open_port = open_port
        self._backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
        self._lot_for_station = lot_for_station
        #: The id of the device's meter record, computed once (``agent.evidence.meters``).
        self._calibration = calibration_ref(dev.id, dev.meter)
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._last_bytes_ns = 0
        self._seen_ok = 0

    @property
    def holding(self) -> bool:
        """Whether a frame is half received (stopping now would lose it)."""
        return False

    async def run_loop(self) -> None:
        """Open, talk, and reopen after failures, until cancelled."""
        dev = self._dev
        while True:
            try:
                async with self._open_port(
                    device=dev.id, path=dev.port, settings=dev.serial
                ) as port:
                    log.info("Opened %s for device %s (%s)", dev.port, dev.id, dev.driver)
                    self._backoff.reset()
                    self._health.set_device_state(dev.id, DeviceState.ONLINE)
                    self._seen_ok = 0
                    await self._connection_loop(port)
            except PortError as exc:
                self._entry.errors["port"] += 1
                self._health.set_device_state(dev.id, DeviceState.OFFLINE, error=str(exc))
                delay = self._backoff.next_delay()
                log.warning(
                    "Device %s offline: %s; reopening %s in %.1f s (attempt %d)",
                    dev.id,
                    exc,
                    dev.port,
                    delay,
                    self._backoff.attempts,
                )
                await asyncio.sleep(delay)

    @abc.abstractmethod
    async def _connection_loop(self, port: SerialPort) -> None:
        """Talk to the device over ``port`` until it fails (``PortError``) or is cancelled."""

    async def _read(self, port: SerialPort, deadline: float | None) -> bytes | None:
        """Bytes from ``port``, or ``None`` when the monotonic ``deadline`` passes first."""
        if deadline is None:
            data = await port.read()
        else:
            # Deadlines are on the drivers' clock; waiting the difference needs no other.
            try:
                async with asyncio.timeout(max(0.0, deadline - self._monotonic())):
                    data = await port.read()
            except TimeoutError:
                return None
        self._last_bytes_ns = self._clock_ns()
        return data

    def _frames_seen(self, frames_ok: int) -> None:
        """Note the driver's valid-frame count: any valid frame proves the device alive."""
        if frames_ok != self._seen_ok:
            # Even a frame a debounce or duplicate filter kept from becoming a reading.
            self._entry.last_frame_ns = self._last_bytes_ns
            self._seen_ok = frames_ok

    def _discarded(self, event: Discarded) -> None:
        self._entry.frames_discarded += 1
        self._entry.errors[event.reason] += 1
        log.debug(
            "Device %s discarded %d bytes (%s): %r",
            self._dev.id,
            len(event.data),
            event.reason,
            event.data[:64],
        )

    async def _commit(self, drafts: Sequence[Draft]) -> None:
        """Hand drafts to the accept stage, then count the readings it committed."""
        if not drafts:
            return
        readings = await self._accept(drafts)
        entry = self._entry
        entry.readings += len(readings)
        entry.last_reading_ns = readings[-1].ts_ns

    def _draft(self, m: Measurement) -> Draft:
        """A reading of ``m`` to stamp, timed when its bytes arrived and enriched with tags."""
        dev = self._dev
        self._entry.frames_ok += 1
        event = m.measurement in EVENT_MEASUREMENTS
        fields: dict[str, FieldValue] = dict(m.fields)
        tags = {"site": self._site, "device": dev.id, "station": dev.station}
        tags["product"] = m.tags.get("product") or dev.product or ""
        lot = m.tags.get("lot", "")
        if (
            not lot
            and m.measurement in STATION_LOT_MEASUREMENTS
            and dev.station
            and self._lot_for_station is not None
        ):
            lot = self._lot_for_station(dev.station) or ""
        if lot:
            try:
                tags["lot"] = validate_lot(lot)
            except LotError as exc:
                # Keep the reading (nothing is lost) but not the bad tag.
                self._entry.errors["bad-lot"] += 1
                fields["lot_rejected"] = lot[:64]
                log.warning("Device %s has an invalid lot code %r: %s", dev.id, lot[:64], exc)
        for key, value in m.tags.items():
            if key not in ("product", "lot"):
                tags.setdefault(key, value)
        if self._calibration is not None:
            fields[CALIBRATION_FIELD] = self._calibration
        return Draft(
            device=dev.id,
            measurement=m.measurement,
            fields=fields,
            tags=tags,
            kind="event" if event else "reading",
            audit=m.audit,
            ts_ns=self._last_bytes_ns or None,
        )


class DeviceRunner(PortRunner[StreamDevice]):
    """Reads one stream device forever; see the module docstring."""

    _driver: StreamDriver | None = None

    @property
    def holding(self) -> bool:
        """Whether the driver waits on a deadline: a frame that is not complete yet."""
        return self._driver is not None and self._driver.next_deadline() is not None

    async def _connection_loop(self, port: SerialPort) -> None:
        driver = self._driver = self._dev.make_driver()
        while True:
            data = await self._read(port, driver.next_deadline())
            if data is None:
                driver.tick(self._monotonic())
            else:
                driver.receive_data(data, self._monotonic())
            await self._handle(driver)

    async def _handle(self, driver: StreamDriver) -> None:
        self._frames_seen(driver.frames_ok)
        drafts: list[Draft] = []
        for event in driver.events():
            match event:
                case Measurement():
                    drafts.append(self._draft(event))
                case Discarded():
                    self._discarded(event)
                case _:
                    assert_never(event)
        await self._commit(drafts)
