"""The huller model: bag counters and hour meters on Modbus buses, to readings and service status.

Theory of operation
-------------------
A huller is a bag counter (an Autonics CT in counter mode, ``bag_counter``) and, if
fitted, an hour meter (a CT in timer mode gated by the motor contactor, ``hour_meter``)
on one RS-485 bus (protocols §3.4, §6 D). ``HullerService`` builds one ``BusPoller`` per
bus that has hullers (a client of the bus's scheduler, shared with any T/RH sensors on
the same line), with units named ``<huller>.counter`` and ``<huller>.timer``,
polled every ``poll_interval_s``, and turns what they report into readings:

- Every sample of either unit goes through the unit's ``TotalState`` (``advance_total``):
  the PV may drop (front-panel reset, power loss, the wrap after 999999, a replaced unit
  that starts near 0), the total never does. The huller's whole state is committed to
  the maintenance store before any reading carrying it is accepted; the order of steps
  and what a SIGKILL between them costs are in ``store``. A sample that
  changes nothing (a stopped huller) writes nothing. Samples of one huller are handled
  one at a time (a lock per huller), so its counter and timer never race on its row.
- A PV drop becomes a ``counter_reset`` event (fields ``unit``, ``previous_pv``, ``pv``,
  ``offset``), stored with the state and marked published once accepted; one left
  unpublished by a crash is emitted at the next start, with its stored timestamp.
- Each counter sample gives one ``huller`` reading, with the latest hour meter state
  (the hour meter is tracked on its own polls; while the counter is offline no ``huller``
  readings are emitted but hours keep being persisted and service status keeps going).

The ``huller`` reading (kind ``reading``; tags site, device = huller id, station):

``running`` (bool)
    The motor input when one is configured (``motor_input``, inverted if
    ``motor_input_inverted``; that unit's terminal inputs are then read on every poll).
    Otherwise: the hour meter advanced within one count of its unit plus two polls
    (``HOUR_METER_UNITS``: within ~5 s for a meter counting seconds, an hour for one
    counting hours). Without an hour meter: a bag was counted in the last
    ``state.BAG_RUNNING_HOLD_S`` (or two polls, if longer). Only advances seen between two polls
    of this process count, so ``running`` starts false after a restart.
``bags_total`` (float)
    Counter total x ``bags_per_pulse``.
``hours_total`` (float)
    Hour meter total x ``HOUR_METER_UNITS[hour_meter_unit]``. A huller without an hour
    meter gets the running time the agent counts itself: the time between two counter
    polls while ``running``, each gap capped at two poll intervals so an outage never
    counts as running. Absent until the hours are known.
``bags_today``, ``hours_today`` (float)
    Since local midnight in the site's zone: the totals at the start of the day are
    persisted with the state, so a restart mid-day keeps them. The day's start is the
    last total seen before the day's first sample (the agent down across midnight puts
    what it missed into the new day); a unit's very first PV starts its day at 0.
``bags_per_hour`` (float)
    Bags counted over the last ``state.RATE_WINDOW_S`` (10 min) scaled to an hour, measured
    between the counter sample just before the window and the newest one; 0.0 until two
    samples exist in this process. It falls to 0 within the window after the huller stops.
``counter_pv``, ``timer_pv`` (int)
    The raw PVs (``timer_pv`` once the hour meter was read).

Service tasks: every ``status_interval_s`` (60 s) and right after a service is picked up,
one ``maintenance_status`` reading per task (kind ``reading``; tags site, device = huller,
task; fields ``hours_since``, ``interval_h``, ``remaining_h`` float, ``state`` str,
``due`` bool (``due`` or ``overdue``), ``overdue`` bool), for hullers whose hours are
known. Every ``services_poll_s`` (3 s) unpublished service records (the CLI adds them
while the agent runs) become ``maintenance`` events (kind ``event``; tags site, device =
huller, task; fields ``hours_at`` float, ``interval_h`` float (when the task is still
configured), ``note`` str, ``by`` str, ``service_id`` int; timestamp = ``done_at_ns``).

Health: each huller is a device (driver ``counter.autonics_ct``, port = the bus's port).
It is online once a unit answered and while none of its units is offline; a failed poll
counts its fault (``no-response``, ``bad-crc``, ...) in the device's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import assert_never

from coffee_telemetry.agent.accept import Accept
from coffee_telemetry.agent.bus.rtu import BusSpec, ClientFactory, Fault, pymodbus_client
from coffee_telemetry.agent.bus.scheduler import BusScheduler
from coffee_telemetry.agent.config import HOUR_METER_UNITS, Config
from coffee_telemetry.agent.health import DeviceHealth, DeviceState, Health
from coffee_telemetry.agent.hullers.bus import BusPoller, DeviceError, PollEvent, UnitSpec
from coffee_telemetry.agent.hullers.state import (
    Huller,
    Role,
    advance,
    bags_per_hour,
    count_runtime,
    is_running,
    roll_day,
    snapshot_due,
    wrong_mode,
)
from coffee_telemetry.agent.hullers.store import AsyncMaintenanceStore, MaintenanceError
from coffee_telemetry.agent.hullers.tasks import (
    HullerState,
    ResetRecord,
    ServiceRecord,
    bags_total,
    hours_total,
    task_status,
)
from coffee_telemetry.agent.readings import Draft
from coffee_telemetry.drivers.counter_autonics_ct import (
    CounterSample,
)
from coffee_telemetry.drivers.events import FieldValue

__all__ = ["DRIVER", "HullerService"]

log = logging.getLogger(__name__)

#: The driver name hullers have in ``Health``.
DRIVER = "counter.autonics_ct"
#: How often the agent thins old hour snapshots.
THIN_EVERY_S = 24 * 3600.0


class HullerService:
    """Polls every configured huller and publishes its readings and service status.

    Args:
        cfg: The site configuration (``hullers``, ``buses``, ``site``).
        store: The open maintenance store (``open_maintenance_store``).
        accept: The accept stage: stamps, commits, then fans out.
        health: Each huller is registered there as a device.
        buses: The buses' schedulers by bus id (shared with the climate sensors); the
            pollers attach to them and their owner runs them. A bus missing here gets a
            scheduler of the service's own, run by ``run_loop``.
        client_factory: Builds the Modbus clients of the service's own schedulers.
        clock_ns: Wall clock for timestamps, days and rates.
        status_interval_s: How often ``maintenance_status`` is published.
        services_poll_s: How often the store is checked for new service records.
    """

    def __init__(
        self,
        *,
        cfg: Config,
        store: AsyncMaintenanceStore,
        accept: Accept,
        health: Health,
        buses: Mapping[str, BusScheduler] | None = None,
        client_factory: ClientFactory = pymodbus_client,
        clock_ns: Callable[[], int] = time.time_ns,
        status_interval_s: float = 60.0,
        services_poll_s: float = 3.0,
    ) -> None:
        self._site = cfg.site.id
        self._zone = cfg.site.zone
        self._store = store
        self._accept_fn = accept
        self._health = health
        self._clock_ns = clock_ns
        self._status_interval_s = status_interval_s
        self._services_poll_s = services_poll_s
        self._store_failing = False
        self._restored = False
        self._restore_lock = asyncio.Lock()
        configs = {b.id: b for b in cfg.buses}
        self._hullers: dict[str, Huller] = {}
        self._units: dict[str, tuple[Huller, Role]] = {}
        units_by_bus: dict[str, list[UnitSpec]] = {}
        for hc in cfg.hullers:
            bus = configs[hc.bus]
            h = Huller(cfg=hc, bus=bus, state=None)
            self._hullers[hc.id] = h
            if hc.id not in health.devices:
                health.add_device(hc.id, driver=DRIVER, port=bus.port, station=hc.station)
            roles: list[tuple[Role, int]] = [("counter", hc.bag_counter)]
            if hc.hour_meter is not None:
                roles.append(("timer", hc.hour_meter))
            for role, address in roles:
                name = f"{hc.id}.{role}"
                self._units[name] = (h, role)
                # The unit carrying the motor input has its terminals read every poll: the
                # poller schedules that read from when the previous one ended, so the
                # interval must be shorter than the poll grid's.
                motor = hc.motor_input.startswith(f"{role}.")
                units_by_bus.setdefault(bus.id, []).append(
                    UnitSpec(
                        name=name,
                        address=address,
                        poll_interval_s=hc.poll_interval_s,
                        slow_interval_s=hc.poll_interval_s / 2 if motor else 60.0,
                        backoff_max_s=max(60.0, hc.poll_interval_s),
                    )
                )
        shared = buses or {}
        self._pollers: dict[str, BusPoller] = {
            bus_id: BusPoller(
                BusSpec.from_config(configs[bus_id]),
                units,
                on_event=self.handle_event,
                client_factory=client_factory,
                scheduler=shared.get(bus_id),
            )
            for bus_id, units in units_by_bus.items()
        }
        #: The pollers whose scheduler is the service's own, run by ``run_loop``.
        self._own = {b: p for b, p in self._pollers.items() if b not in shared}

    def states(self) -> dict[str, HullerState | None]:
        """Each huller's current totals (None before its first sample)."""
        return {huller_id: h.state for huller_id, h in self._hullers.items()}

    @property
    def pollers(self) -> Mapping[str, BusPoller]:
        """One poller per bus id (for unit statistics and operator resets)."""
        return self._pollers

    # -- lifecycle ---------------------------------------------------------------------

    async def run_loop(self) -> None:
        """Restore the totals, then poll, publish services and status until cancelled."""
        await self.restore()
        await self.publish_resets()
        await self.publish_services()
        async with asyncio.TaskGroup() as tg:
            for bus_id, poller in self._own.items():
                tg.create_task(poller.run_loop(), name=f"hullers-bus[{bus_id}]")
            tg.create_task(self._services_loop(), name="maintenance-services")
            tg.create_task(self._status_loop(), name="maintenance-status")

    async def restore(self) -> None:
        """Load the persisted state of every huller (once; ``run_loop`` calls it)."""
        async with self._restore_lock:
            if self._restored:
                return
            states = await self._store.load_states()
            for huller_id, h in self._hullers.items():
                h.state = states.get(huller_id)
            self._restored = True

    async def _services_loop(self) -> None:
        while True:
            await asyncio.sleep(self._services_poll_s)
            await self.publish_services()

    async def _status_loop(self) -> None:
        loop = asyncio.get_running_loop()
        thinned = float("-inf")
        while True:
            await self.publish_status()
            if loop.time() - thinned >= THIN_EVERY_S:
                thinned = loop.time()
                try:
                    deleted = await self._store.thin_snapshots(self._clock_ns())
                except MaintenanceError as exc:
                    log.warning("Could not thin old hour snapshots: %s", exc)
                else:
                    if deleted:
                        log.info("Thinned %d old hour snapshots", deleted)
            await asyncio.sleep(self._status_interval_s)

    # -- poll events -------------------------------------------------------------------

    async def handle_event(self, unit: str, event: PollEvent) -> None:
        """Take one event from a bus poller (its ``on_event`` callback)."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The poller's task was asked to stop but the request it was in returned anyway:
            # Python 3.11's ``asyncio.wait_for`` (inside pymodbus) returns a result that
            # arrives with a cancellation and drops the cancellation (CPython gh-86296).
            # Without this the unit task would poll on and its TaskGroup never end.
            raise asyncio.CancelledError
        if not self._restored:
            await self.restore()
        h, role = self._units[unit]
        match event:
            case CounterSample():
                await self._on_sample(h, role, event)
            case DeviceError():
                self._on_error(h, role, event)
            case _:
                assert_never(event)

    def _entry(self, h: Huller) -> DeviceHealth:
        return self._health.devices[h.cfg.id]

    def _refresh_health(self, h: Huller, error: str | None = None) -> None:
        if any(up is False for up in h.units_up.values()):
            self._health.set_device_state(h.cfg.id, DeviceState.OFFLINE, error=error)
        elif h.units_up:
            self._health.set_device_state(h.cfg.id, DeviceState.ONLINE, error=error)

    def _on_error(self, h: Huller, role: Role, event: DeviceError) -> None:
        entry = self._entry(h)
        entry.errors[event.fault.value] += 1
        error = f"{role}: {event.detail}"
        entry.last_error = error
        if event.offline or event.fault is Fault.PORT:
            h.units_up[role] = False
            h.inputs.pop(role, None)  # a dead unit's terminals say nothing about the motor
        self._refresh_health(h, error)

    async def _on_sample(self, h: Huller, role: Role, sample: CounterSample) -> None:
        async with h.lock:
            now = self._clock_ns()
            entry = self._entry(h)
            entry.frames_ok += 1
            entry.last_frame_ns = now
            h.units_up[role] = True
            self._refresh_health(h)
            expected = wrong_mode(h, role, sample)
            if expected is not None:
                log.warning(
                    "Huller %s %s unit reports %s mode, expected %s: check its setup and"
                    " the site config",
                    h.cfg.id,
                    role,
                    sample.mode.value,
                    expected.value,
                )
            if sample.inputs is not None:
                h.inputs[role] = sample.inputs

            old = h.state if h.state is not None else HullerState()
            new, reset = advance(h, role, old, sample.pv, now)
            if reset is not None:
                log.warning(
                    "Huller %s %s PV dropped from %d to %d (reset, power loss, wrap or new"
                    " unit); total continues at %d",
                    h.cfg.id,
                    role,
                    reset.previous_pv,
                    reset.pv,
                    (new.counter if role == "counter" else new.timer).total,
                )
            running = is_running(h, now)
            if role == "counter":
                new = count_runtime(h, new, now, running)
            new = roll_day(old, new, now, self._zone)

            stored: list[ResetRecord] = []
            if new != h.state:
                snapshot = snapshot_due(h, new, now)
                try:
                    stored = await self._store.save_state(
                        h.cfg.id,
                        new,
                        at_ns=now,
                        resets=[] if reset is None else [reset],
                        snapshot_hours=snapshot,
                    )
                except MaintenanceError as exc:
                    # Nothing is emitted and nothing advances: the next poll tries again.
                    entry.errors["store"] += 1
                    if not self._store_failing:
                        log.error("Huller totals cannot be saved, readings held back: %s", exc)
                    self._store_failing = True
                    return
                if self._store_failing:
                    log.info("Huller totals are saved again")
                    self._store_failing = False
                if snapshot is not None:
                    h.snapshot_ns, h.snapshot_hours = now, snapshot
            h.state = new
            h.seen.add(role)
            if role == "counter":
                h.last_counter_ns = now

            readings = [self._reset_reading(r) for r in stored]
            if role == "counter":
                readings.append(self._huller_reading(h, new, sample, now, running))
            if readings:
                await self._accept(h.cfg.id, readings)
            if stored:
                await self._mark_resets([r.id for r in stored])

    # -- readings ----------------------------------------------------------------------

    def _huller_reading(
        self, h: Huller, state: HullerState, sample: CounterSample, now: int, running: bool
    ) -> Draft:
        cfg = h.cfg
        per_pulse = cfg.bags_per_pulse
        bags = bags_total(cfg, state)
        assert bags is not None  # a counter sample was just taken in
        fields: dict[str, FieldValue] = {
            "running": running,
            "bags_total": round(bags, 6),
            "bags_today": round((state.counter.total - state.day_counter) * per_pulse, 6),
            "bags_per_hour": round(bags_per_hour(h, now, bags), 3),
            "counter_pv": sample.pv,
        }
        hours = hours_total(cfg, state)
        if hours is not None:
            if cfg.hour_meter is None:
                today_h = (state.runtime_ms - state.day_runtime_ms) / 3_600_000
            else:
                unit_h = HOUR_METER_UNITS[cfg.hour_meter_unit]
                today_h = (state.timer.total - state.day_timer) * unit_h
            fields["hours_total"] = round(hours, 6)
            fields["hours_today"] = round(today_h, 6)
        if state.timer.last_pv is not None:
            fields["timer_pv"] = state.timer.last_pv
        return Draft(
            device=cfg.id,
            measurement="huller",
            fields=fields,
            tags=self._tags(h.cfg.id, station=cfg.station),
            kind="reading",
            ts_ns=now,
        )

    def _tags(self, huller: str, *, station: str = "", task: str = "") -> dict[str, str]:
        tags = {"site": self._site, "device": huller}
        if station:
            tags["station"] = station
        if task:
            tags["task"] = task
        return tags

    def _event_at(
        self,
        *,
        device: str,
        measurement: str,
        fields: Mapping[str, FieldValue],
        tags: Mapping[str, str],
        ts_ns: int,
    ) -> Draft:
        # Events that may be sent again (after a crash) keep their stored time, so the
        # resend is the same InfluxDB point (``exact``): the stamper would move a past
        # time forward to keep the device's readings apart, which these do not need
        # (their own measurement, and a time fixed when they happened).
        return Draft(
            device=device,
            measurement=measurement,
            fields=fields,
            tags=tags,
            kind="event",
            ts_ns=ts_ns,
            exact=True,
        )

    def _reset_reading(self, record: ResetRecord) -> Draft:
        h = self._hullers.get(record.huller)
        return self._event_at(
            device=record.huller,
            measurement="counter_reset",
            fields={
                "unit": record.unit,
                "previous_pv": record.previous_pv,
                "pv": record.pv,
                "offset": record.offset,
            },
            tags=self._tags(record.huller, station="" if h is None else h.cfg.station),
            ts_ns=record.at_ns,
        )

    def _service_reading(self, record: ServiceRecord) -> Draft:
        fields: dict[str, FieldValue] = {
            "hours_at": float(record.hours_at),
            "note": record.note,
            "by": record.by,
            "service_id": record.id,
        }
        h = self._hullers.get(record.huller)
        task = None if h is None else next((t for t in h.cfg.tasks if t.id == record.task), None)
        if task is not None:
            fields["interval_h"] = float(task.interval_h)
        return self._event_at(
            device=record.huller,
            measurement="maintenance",
            fields=fields,
            tags=self._tags(record.huller, task=record.task),
            ts_ns=record.done_at_ns,
        )

    async def _accept(self, device: str, drafts: Sequence[Draft]) -> None:
        readings = await self._accept_fn(drafts)
        entry = self._health.devices.get(device)
        if entry is not None:
            entry.readings += len(readings)
            entry.last_reading_ns = max(r.ts_ns for r in readings)

    async def _mark_resets(self, ids: Sequence[int]) -> None:
        try:
            await self._store.mark_resets_published(ids)
        except MaintenanceError as exc:
            log.warning(
                "Counter resets %s published but not marked (sent again later): %s", ids, exc
            )

    # -- publishing ----------------------------------------------------------------------

    async def publish_resets(self) -> int:
        """Emit the reset events a crash left unpublished; returns how many."""
        records = await self._store.unpublished_resets()
        for record in records:
            await self._accept(record.huller, [self._reset_reading(record)])
        if records:
            await self._mark_resets([r.id for r in records])
        return len(records)

    async def publish_services(self) -> int:
        """Emit ``maintenance`` events for unpublished service records; returns how many.

        Store errors are logged and retried on the next call.
        """
        try:
            records = await self._store.unpublished()
        except MaintenanceError as exc:
            log.warning("Cannot read new service records (trying again): %s", exc)
            return 0
        if not records:
            return 0
        by_huller: dict[str, list[Draft]] = {}
        for record in records:
            by_huller.setdefault(record.huller, []).append(self._service_reading(record))
        for huller, readings in by_huller.items():
            await self._accept(huller, readings)
        try:
            await self._store.mark_published([r.id for r in records])
        except MaintenanceError as exc:
            log.warning("Services published but not marked (sent again later): %s", exc)
        for record in records:
            log.info(
                "Service %d published: %s / %s at %.1f h",
                record.id,
                record.huller,
                record.task,
                record.hours_at,
            )
        for huller in by_huller:
            if huller in self._hullers:
                await self.publish_status(huller)
        return len(records)

    async def publish_status(self, huller: str | None = None) -> int:
        """Emit ``maintenance_status`` for every task (of one huller); returns how many.

        Hullers whose running hours are not known yet are skipped.
        """
        try:
            last = await self._store.last_services()
        except MaintenanceError as exc:
            log.warning("Cannot read service records for the status: %s", exc)
            return 0
        count = 0
        for h in self._hullers.values():
            if huller is not None and h.cfg.id != huller:
                continue
            hours = hours_total(h.cfg, h.state)
            if hours is None or not h.cfg.tasks:
                continue
            readings: list[Draft] = []
            for task in h.cfg.tasks:
                record = last.get((h.cfg.id, task.id))
                status = task_status(
                    task, hours, None if record is None else record.hours_at, huller=h.cfg.id
                )
                readings.append(
                    Draft(
                        device=h.cfg.id,
                        measurement="maintenance_status",
                        fields={
                            "hours_since": round(status.hours_since, 6),
                            "interval_h": float(status.interval_h),
                            "remaining_h": round(status.remaining_h, 6),
                            "state": status.state,
                            "due": status.due,
                            "overdue": status.overdue,
                        },
                        tags=self._tags(h.cfg.id, task=task.id),
                        kind="reading",
                    )
                )
            await self._accept(h.cfg.id, readings)
            count += len(readings)
        return count
