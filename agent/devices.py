"""Device loops: one per configured device, from serial bytes to accepted readings.

Theory of operation
-------------------
A device loop owns one port and one driver. It opens the port by its stable
path; on any ``PortError`` (unplugged adapter, missing path, port locked by
another process) it closes what it had, marks the device offline, waits a
jittered back-off (1 s doubling to 60 s) and opens the same path again. A new
driver is made on every open: a half-received frame from before an unplug
must not be glued to bytes after it.

Bytes read are pushed into the sans-I/O driver with the arrival time; when the
driver wants to be woken without new bytes (a ticket ends after an idle gap),
the read is bounded by its deadline and ``tick`` is called. Each measurement
is stamped with the wall-clock time its last bytes arrived (not when an idle
gap ended), enriched with site/device/station/product/lot tags, and committed
to the outbox before more bytes are read: once ``accept`` returns the reading
is safe, and the serial buffers provide the back-pressure in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, assert_never

from agent.backoff import Backoff
from agent.config import DeviceConfig, TesmaDevice, TicketDevice
from agent.errors import PortError
from agent.health import DeviceHealth, DeviceState, Health
from agent.lots import LotError, validate_lot
from agent.ports import PortOpener, SerialPort, open_serial_port
from agent.readings import Reading, Stamper
from drivers.events import Discarded, FieldValue, Measurement
from drivers.moisture_tesma import TesmaParser
from drivers.moisture_ticket import FieldPattern, TicketOptions, TicketParser

log = logging.getLogger(__name__)


class StreamDriver(Protocol):
    """What the device loop needs from a receive-only stream driver."""

    @property
    def frames_ok(self) -> int:
        """Valid frames seen so far."""
        ...

    @property
    def frames_discarded(self) -> int:
        """Discarded events so far."""
        ...

    def feed(self, data: bytes, now: float) -> None:
        """Push bytes that arrived at monotonic time ``now``."""
        ...

    def tick(self, now: float) -> None:
        """Let time pass without bytes (idle gaps end tickets)."""
        ...

    def next_deadline(self) -> float | None:
        """Monotonic time at which ``tick`` should be called, if any."""
        ...

    def events(self) -> list[Measurement | Discarded]:
        """Drain complete events."""
        ...


class _TicketDriver:
    def __init__(self, options: TicketOptions) -> None:
        self._parser = TicketParser(options)

    @property
    def frames_ok(self) -> int:
        return self._parser.frames_ok

    @property
    def frames_discarded(self) -> int:
        return self._parser.frames_discarded

    def feed(self, data: bytes, now: float) -> None:
        self._parser.receive_data(data, now)

    def tick(self, now: float) -> None:
        self._parser.tick(now)

    def next_deadline(self) -> float | None:
        return self._parser.next_deadline()

    def events(self) -> list[Measurement | Discarded]:
        return self._parser.events()


class _TesmaDriver:
    def __init__(self, debounce: int) -> None:
        self._parser = TesmaParser(debounce=debounce)

    @property
    def frames_ok(self) -> int:
        return self._parser.frames_ok

    @property
    def frames_discarded(self) -> int:
        return self._parser.frames_discarded

    def feed(self, data: bytes, now: float) -> None:
        self._parser.receive_data(data)

    def tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def events(self) -> list[Measurement | Discarded]:
        return self._parser.events()


def ticket_options(dev: TicketDevice) -> TicketOptions:
    """Driver options from a ticket device's config."""
    opts = dev.ticket
    base = TicketOptions()
    patterns = (
        tuple(FieldPattern(field=f.field, regex=f.regex, kind=f.kind) for f in opts.fields)
        if opts.fields is not None
        else base.patterns
    )
    return TicketOptions(
        line_ending=opts.line_ending,
        idle_gap_s=opts.idle_gap_s,
        start_regex=opts.start_regex,
        end_regex=opts.end_regex,
        max_lines=opts.max_lines,
        max_bytes=opts.max_bytes,
        patterns=patterns,
        duplicate_window_s=opts.duplicate_window_s,
    )


def make_driver(dev: DeviceConfig) -> StreamDriver:
    """A fresh driver for a device (one per port open)."""
    match dev:
        case TicketDevice():
            return _TicketDriver(ticket_options(dev))
        case TesmaDevice():
            return _TesmaDriver(dev.tesma.debounce)
        case _:
            assert_never(dev)


#: Called with each accepted reading (live fan-out: console, rules, history).
ReadingListener = Callable[[Reading], None]


class DeviceRunner:
    """Reads one device forever; see the module docstring."""

    def __init__(
        self,
        dev: DeviceConfig,
        *,
        site: str,
        stamper: Stamper,
        accept: Callable[[Sequence[Reading]], Awaitable[object]],
        health: Health,
        open_port: PortOpener = open_serial_port,
        backoff: Backoff | None = None,
        listeners: Sequence[ReadingListener] = (),
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dev = dev
        self._site = site
        self._stamper = stamper
        self._accept = accept
        self._health = health
        self._entry: DeviceHealth = health.devices.get(dev.id) or health.add_device(
            dev.id, driver=dev.driver, port=dev.port, station=dev.station
        )
        self._open_port = open_port
        self._backoff = backoff or Backoff(initial_s=1.0, maximum_s=60.0)
        self._listeners = list(listeners)
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._last_bytes_ns = 0
        self._seen_ok = 0

    async def run_loop(self) -> None:
        """Open, read, and reopen after failures, until cancelled."""
        dev = self._dev
        while True:
            try:
                async with self._open_port(
                    device=dev.id, path=dev.port, settings=dev.serial
                ) as port:
                    log.info("Opened %s for device %s (%s)", dev.port, dev.id, dev.driver)
                    self._backoff.reset()
                    self._health.set_device_state(dev.id, DeviceState.ONLINE)
                    await self._read_loop(port, make_driver(dev))
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

    async def _read_loop(self, port: SerialPort, driver: StreamDriver) -> None:
        loop = asyncio.get_running_loop()
        self._seen_ok = 0
        while True:
            deadline = driver.next_deadline()
            if deadline is None:
                data = await port.read()
            else:
                # The driver's clock is monotonic; so is the loop's by default.
                delay = max(0.0, deadline - self._monotonic())
                try:
                    async with asyncio.timeout_at(loop.time() + delay):
                        data = await port.read()
                except TimeoutError:
                    driver.tick(self._monotonic())
                    await self._handle(driver)
                    continue
            self._last_bytes_ns = self._clock_ns()
            driver.feed(data, self._monotonic())
            await self._handle(driver)

    async def _handle(self, driver: StreamDriver) -> None:
        entry = self._entry
        if driver.frames_ok != self._seen_ok:
            # Any valid frame proves the device alive, even one a debounce
            # or duplicate filter kept from becoming a reading.
            entry.last_frame_ns = self._last_bytes_ns
            self._seen_ok = driver.frames_ok
        readings: list[Reading] = []
        for event in driver.events():
            match event:
                case Measurement():
                    entry.frames_ok += 1
                    readings.append(self._stamp(event))
                case Discarded(data=data, reason=reason):
                    entry.frames_discarded += 1
                    entry.errors[reason] += 1
                    log.debug(
                        "Device %s discarded %d bytes (%s): %r",
                        self._dev.id,
                        len(data),
                        reason,
                        data[:64],
                    )
                case _:
                    assert_never(event)
        if readings:
            await self._accept(readings)
            entry.readings += len(readings)
            entry.last_reading_ns = readings[-1].ts_ns
            for reading in readings:
                for listener in self._listeners:
                    listener(reading)

    def _stamp(self, m: Measurement) -> Reading:
        dev = self._dev
        fields: dict[str, FieldValue] = dict(m.fields)
        tags = {"site": self._site, "device": dev.id, "station": dev.station}
        product = m.tags.get("product") or dev.product or ""
        tags["product"] = product
        lot = m.tags.get("lot", "")
        if lot:
            try:
                tags["lot"] = validate_lot(lot)
            except LotError as exc:
                # Keep the reading (nothing is lost) but not the bad tag.
                self._entry.errors["bad-lot"] += 1
                fields["lot_rejected"] = lot[:64]
                log.warning("Device %s printed an invalid lot code %r: %s", dev.id, lot[:64], exc)
        for key, value in m.tags.items():
            if key not in ("product", "lot"):
                tags.setdefault(key, value)
        return self._stamper.stamp(
            device=dev.id,
            measurement=m.measurement,
            fields=fields,
            tags=tags,
            kind="reading",
            audit=m.audit,
            ts_ns=self._last_bytes_ns or None,
        )
