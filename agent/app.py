"""The agent process: devices → outbox → sinks, under one task group.

``run_agent`` opens the outbox, the configured sinks and one loop per device,
all in one ``asyncio.TaskGroup``, and runs until ``stop`` is set (SIGTERM,
Ctrl-C). Acquisition (device loops, the RS-485 buses, the outbox) is the one
thing that must never stop: if it fails, the agent exits non-zero and systemd
restarts it; since every accepted reading is already on disk, a crash costs a
few seconds of latency, never data. Everything else is an interface, run by
``agent.supervise``: the web server, the MQTT connection (status topics and
commands), each sink's delivery loop, the lot and alert services, the live
pages and the agent's own status reading. An interface that fails is logged,
counted in health and restarted with back-off; the devices never notice.
Every source hands its readings to one accept stage
(``agent.accept``: commit to the outbox, then fan out to the
alert rules, history and live pages, each listener isolated), and every
command, from MQTT or the web, goes through one ``CommandBoundary``
(``agent.commands``).

Shutdown order: device loops stop first (nothing new is accepted), the sinks
get ``shutdown_grace_s`` to deliver what is pending, then the MQTT connection
publishes ``agent/status = offline`` and disconnects, and the outbox closes.
Whatever was not delivered is delivered after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from coffee_telemetry.agent.accept import AcceptStage, ReadingListener
from coffee_telemetry.agent.alerts.model import Alert
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.bus.scheduler import bus_schedulers
from coffee_telemetry.agent.climate.service import ClimateService
from coffee_telemetry.agent.commands import CommandBoundary
from coffee_telemetry.agent.config import Config, DeviceConfig
from coffee_telemetry.agent.devices import Runner, make_device_runner
from coffee_telemetry.agent.devices.fleet import Fleet
from coffee_telemetry.agent.devices.ports import PortOpener, open_serial_port
from coffee_telemetry.agent.digestfacts import digest_facts_provider
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.evidence.identity import station_identity
from coffee_telemetry.agent.evidence.meters import (
    MeterCalibration,
    record_calibrations,
    run_calibration_status,
)
from coffee_telemetry.agent.evidence.oven import OVEN_COMMAND, oven_command
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.history.service import open_configured_history
from coffee_telemetry.agent.hullers.record import service_command
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import open_maintenance_store
from coffee_telemetry.agent.logs import context_copy
from coffee_telemetry.agent.lots.corrections import MOVE_COMMAND
from coffee_telemetry.agent.lots.outflow import LotRecordEvents
from coffee_telemetry.agent.lots.readiness import DRIED_COMMAND, ReadinessRules, ReadinessService
from coffee_telemetry.agent.lots.receipt import RECEIPT_COMMAND, receipt_command
from coffee_telemetry.agent.lots.records import (
    DETAILS_COMMAND,
    AsyncLotRecords,
    LotRecordSink,
    move_command,
    open_configured_lot_records,
)
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.notify.model import AlertEvent
from coffee_telemetry.agent.notify.runtime import NotifyRuntime, open_notify
from coffee_telemetry.agent.notify.service import Notifier
from coffee_telemetry.agent.outbox.lanes import DeliveryLanes
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Draft, Reading, Stamper
from coffee_telemetry.agent.reload import NotifyReload, Reloader, SinkReload
from coffee_telemetry.agent.sdnotify import SdNotify, status_line, watchdog_loop
from coffee_telemetry.agent.sinks.configured import lane_parts, open_sink, set_epoch, sink_specs
from coffee_telemetry.agent.sinks.homeassistant import discovery_for
from coffee_telemetry.agent.sinks.lineprotocol import encode_line
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from coffee_telemetry.agent.supervise import supervise
from coffee_telemetry.agent.timekeeping import Adjustment, TimeKeeper, TimeQuality
from coffee_telemetry.agent.timesources import gps_loop, modem_loop
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.live import LiveHub
from coffee_telemetry.agent.web.server import make_web_app, open_web
from coffee_telemetry.drivers.events import FieldValue

log = logging.getLogger(__name__)

#: The agent's own health readings use this device id.
AGENT_DEVICE = "agent"


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return None if get is None else str(get())


async def _open_sinks(
    cfg: Config, stack: AsyncExitStack, health: Health
) -> tuple[list[tuple[Sink, AsyncExitStack]], MqttSink | None]:
    """The configured sinks, each with a stack of its own (a reload may close one)."""
    opened: list[tuple[Sink, AsyncExitStack]] = []
    mqtt: MqttSink | None = None
    for spec in sink_specs(cfg).values():
        own = await stack.enter_async_context(AsyncExitStack())
        sink = await open_sink(cfg, spec, own, health)
        if sink is None:
            continue
        if isinstance(sink, MqttSink):
            mqtt = sink
        opened.append((sink, own))
    for sink, _ in opened:
        if sink.name not in health.sinks:
            health.add_sink(sink.name)
    return opened, mqtt


def agent_fields(outbox: Outbox, health: Health, started: float) -> dict[str, FieldValue]:
    """The agent's own health, as fields of the ``agent`` measurement."""
    fields: dict[str, FieldValue] = {
        "uptime_s": round(time.monotonic() - started, 3),
        "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "devices_online": sum(1 for d in health.devices.values() if d.state is DeviceState.ONLINE),
        "devices_total": len(health.devices),
        "outbox_last_id": outbox.last_id,
        "interface_failures": sum(i.failures for i in health.interfaces.values()),
    }
    for name in outbox.sinks:
        if name == LotRecordSink.name:
            continue  # on this box: /api/health and /metrics show it
        fields[f"backlog_{name}"] = outbox.backlog(name)
        sink = health.sinks.get(name)
        if sink is not None:
            fields[f"delivered_{name}"] = sink.delivered
            fields[f"rejected_{name}"] = sink.rejected
    return fields


async def _remember_meters(records: AsyncLotRecords, meters: Sequence[MeterCalibration]) -> None:
    """Keep the configured meters' calibration records with the lot records."""
    now = records.now_ns()
    await records.call(
        records.sync.write_with, lambda conn: record_calibrations(conn, meters, at_ns=now)
    )


async def _status_loop(
    cfg: Config, outbox: Outbox, health: Health, accept: AcceptStage, started: float
) -> None:
    while True:
        await asyncio.sleep(cfg.agent.status_interval_s)
        stats_dropped = (await outbox.stats()).dropped_total
        fields = agent_fields(outbox, health, started)
        fields["outbox_dropped_total"] = stats_dropped
        status = Draft(
            device=AGENT_DEVICE,
            measurement="agent",
            fields=fields,
            tags={"site": cfg.site.id, "device": AGENT_DEVICE, "host": os.uname().nodename},
        )
        await accept.record([status])


def open_configured_outbox(
    cfg: Config, sinks: Sequence[str]
) -> contextlib.AbstractAsyncContextManager[Outbox]:
    """``open_outbox`` with the site's ``[outbox]`` settings (its storage profile's included)."""
    return open_outbox(
        cfg.outbox_path,
        sinks=sinks,
        max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
        synchronous=cfg.outbox.synchronous,
        sync_interval_s=cfg.outbox.sync_interval_s,
        commit_delay_s=cfg.outbox.commit_delay_s,
        cursor_flush_s=cfg.outbox.cursor_flush_s,
        prune_interval_s=cfg.outbox.prune_interval_s,
        checkpoint_interval_s=cfg.outbox.checkpoint_interval_s,
        page_size=cfg.outbox.page_size,
        compress=cfg.outbox.compress,
        line_encoder=encode_line if cfg.influx.enabled else None,
    )


async def run_agent(
    cfg: Config,
    *,
    stop: asyncio.Event,
    listeners: Sequence[ReadingListener] = (),
    open_port: PortOpener = open_serial_port,
    health: Health | None = None,
    shutdown_grace_s: float = 3.0,
    systemd: SdNotify | None = None,
    reload: asyncio.Event | None = None,
    config_path: Path | None = None,
    lots_clock_ns: Callable[[], int] | None = None,
) -> None:
    """Run the agent until ``stop`` is set.

    ``lots_clock_ns`` is the wall clock of the lots' rest after the dryer (tests move it
    by days; default: the agent's clock).

    With ``reload`` and ``config_path``, each time ``reload`` is set (SIGHUP) the site
    file is read again and applied by difference (``agent.reload``).

    Read top to bottom, this is the pipeline: sinks and the outbox, the accept
    stage (commit, then fan out to alert rules, history and live pages), the
    commands, the sources (devices, hullers); then the tasks: acquisition,
    delivery loops to the sinks, and the supervised interfaces.
    """
    health = health or Health()
    systemd = systemd or SdNotify.from_env()  # READY, WATCHDOG, STATUS, STOPPING
    health.counters["systemd"] = systemd.health_doc
    started = time.monotonic()
    devices = [d for d in cfg.devices if d.enabled]
    async with AsyncExitStack() as stack:
        stack.callback(systemd.close)
        # -- where readings go: the sinks, and the outbox in front of them ---------------
        opened, mqtt = await _open_sinks(cfg, stack, health)
        sinks = [sink for sink, _ in opened]
        # Lot records: a sink of their own, so the outbox keeps what they have not taken.
        lot_records: AsyncLotRecords | None = None
        try:
            lot_records = await stack.enter_async_context(open_configured_lot_records(cfg))
        except LotError as exc:  # the meters come first: run without lot records
            log.error("Lot records off for this run: %s", exc)
        else:
            lot_sink = LotRecordSink(lot_records)
            # Each batch is one fsynced transaction: an SD card takes fewer, larger ones.
            lot_sink.flush_interval_s = cfg.lots.flush_interval_s
            sinks.append(lot_sink)
            health.add_sink(LotRecordSink.name)
        outbox = await stack.enter_async_context(
            open_configured_outbox(cfg, [s.name for s in sinks])
        )
        publish_state = mqtt.set_state if mqtt is not None else None
        if mqtt is not None and (discovery := await asyncio.to_thread(discovery_for, cfg)):
            mqtt.set_discovery(discovery)  # Home Assistant MQTT discovery
        set_epoch(sinks, outbox.epoch)  # NATS message ids name the store's life
        # -- time: trusted, provisional or estimated (a Pi has no clock battery) ----------
        keeper = TimeKeeper(
            state_path=cfg.agent.data_dir / "clock.json",
            trust_timeout_s=cfg.agent.time_trust_timeout_min * 60,
            sources=cfg.agent.time_sources,
        )
        health.counters["time"] = keeper.health_doc
        outbox.set_boot(keeper.boot)
        # Provisional readings of an earlier run can no longer be placed: estimated.
        await outbox.resolve(delta_ns=0, quality="estimated", boot=None)
        stamper = Stamper(clock_ns=keeper.now_ns, quality=lambda: keeper.quality.value)
        stamper.restore(await outbox.sequences())

        # -- accept: stamp, commit to the outbox, then fan out ----------------------------
        accept = AcceptStage(outbox.accept, stamper=stamper, health=health, listeners=listeners)
        hub = LiveHub()
        accept.add_listener(hub.on_reading)
        lot_store = await asyncio.to_thread(LotStore.open, cfg.agent.data_dir / "lots.sqlite3")
        stack.callback(lot_store.close)
        lots = LotService(
            store=lot_store,
            # Huller stations too: bags counted there are the active lot's.
            stations={d.station for d in devices if d.station}
            | {h.station for h in cfg.hullers if h.station},
            site=cfg.site.id,
            record=accept.record,
            publish_state=publish_state,
            on_change=lambda station, active: hub.publish(
                "lots", {"station": station, "lot": None if active is None else active.lot}
            ),
        )
        await lots.refresh()
        lots.publish_all()
        history = None
        if cfg.history.enabled:
            history = await stack.enter_async_context(open_configured_history(cfg))
            accept.add_listener(history.add)
        # Notifications to people: their own queues, apart from the outbox.
        notify: NotifyRuntime | None = None
        if cfg.alerts.enabled and cfg.notify.enabled and cfg.notify.contacts:
            notify = await stack.enter_async_context(
                open_notify(
                    cfg.notify,
                    data_dir=cfg.agent.data_dir,
                    site=cfg.site.name or cfg.site.id,
                    zone=cfg.site.zone,
                )
            )
        alerts: AlertService | None = None
        if cfg.alerts.enabled:
            alerts = AlertService(
                cfg=cfg.alerts,
                site=cfg.site.id,
                state_path=cfg.agent.data_dir / "alerts.json",
                record=accept.record,
                outbox=outbox,
                health=health,
                publish_state=publish_state,
                on_alert=lambda doc: hub.publish("alert", doc),
                on_notify=None if notify is None else notify_events(notify.notifier),
            )
            accept.add_listener(alerts.on_reading)

        # -- commands: one boundary for MQTT and the web ----------------------------------
        commands = CommandBoundary({"lot": lots.handle_command})
        readiness: ReadinessService | None = None
        if lot_records is not None:
            commands.add(DETAILS_COMMAND, lot_records.handle_command)
            commands.add(RECEIPT_COMMAND, receipt_command(lot_records))
            commands.add(OVEN_COMMAND, oven_command(lot_records))
            commands.add(MOVE_COMMAND, move_command(lot_records))
            # Lots rested after the dryer and inside the hulling window: announced once.
            readiness = ReadinessService(
                records=lot_records,
                rules=ReadinessRules.from_config(cfg.lots),
                announce=None if notify is None else notify.notifier.submit,
                on_ready=lambda code, r: hub.publish("lots", {"lot": code, "ready": r.state}),
                clock_ns=lots_clock_ns or keeper.now_ns,
                interval_s=cfg.lots.ready_check_s,
                zone=cfg.site.zone,
            )
            commands.add(DRIED_COMMAND, readiness.handle_command)
        health.counters["commands"] = commands.stats.as_doc
        if alerts is not None:
            commands.add("ack", alerts.handle_command)
        if notify is not None:
            notify.notifier.commands = commands
            health.counters["notify"] = notify.notifier.health_doc
        commands.add(
            "service",
            service_command(
                cfg,
                on_done=lambda done: hub.publish(
                    "service", {"huller": done.record.huller, "task": done.record.task}
                ),
            ),
        )
        if mqtt is not None:
            mqtt.set_command_handler(commands)

        # -- sources: serial devices and the hullers on their buses -----------------------
        for dev in devices:
            health.add_device(dev.id, driver=dev.driver, port=dev.port, station=dev.station)

        def make_runner(dev: DeviceConfig) -> Runner:
            return make_device_runner(
                dev,
                site=cfg.site.id,
                accept=accept.accept,
                health=health,
                open_port=open_port,
                clock_ns=keeper.now_ns,
                lot_for_station=lots.lot_for,
            )

        clock = TimeService(keeper, stamper=stamper, outbox=outbox, accept=accept, site=cfg.site.id)
        if history is not None:
            clock.on_restamped.append(history.add)
        # One scheduler per RS-485 bus, shared by the hullers and climate sensors on it.
        buses = bus_schedulers(
            cfg.buses, {h.bus for h in cfg.hullers} | {c.bus for c in cfg.climate}
        )
        hullers: HullerService | None = None
        store = None
        if cfg.hullers:
            store = await stack.enter_async_context(
                open_maintenance_store(
                    cfg.maintenance_path,
                    synchronous=cfg.outbox.synchronous,
                    page_size=cfg.outbox.page_size,
                )
            )
            hullers = HullerService(
                cfg=cfg,
                store=store,
                accept=accept.accept,
                health=health,
                buses=buses,
                clock_ns=keeper.now_ns,
            )
        climate: ClimateService | None = None
        if cfg.climate:  # storage-area T/RH sensors
            climate = ClimateService(
                cfg=cfg, accept=accept.accept, health=health, buses=buses, clock_ns=keeper.now_ns
            )
        if notify is not None:  # the digest's lots, service tasks, devices and backlogs
            notify.notifier.digest_facts = digest_facts_provider(
                cfg=cfg, health=health, outbox=outbox, history=history, hullers=hullers,
                maintenance=store, alerts=alerts,
            )  # fmt: skip
        log.info(
            "Agent for site %s: %d devices, %d hullers, sinks %s, outbox %s",
            cfg.site.id,
            len(devices),
            len(cfg.hullers),
            ", ".join(s.name for s in sinks) or "none",
            cfg.outbox_path,
        )
        web_deps: WebDeps | None = None
        if cfg.api.enabled:
            web_deps = WebDeps(
                cfg=cfg,
                health=health,
                hub=hub,
                lots=lots,
                alerts=alerts,
                history=history,
                hullers=hullers,
                maintenance=store,
                outbox=outbox,
                commands=commands,
                publish=mqtt.send if mqtt is not None else None,
                time_control=clock,
                readiness=readiness,
                station_key=await station_identity(cfg.agent.data_dir),  # made on first use
            )

        def _systemd_status() -> str:
            online = sum(1 for d in health.devices.values() if d.state is DeviceState.ONLINE)
            # The lot records are on this box: the queue shown is what waits to leave it.
            backlog = {s: outbox.backlog(s) for s in outbox.sinks if s != LotRecordSink.name}
            return status_line(online, len(health.devices), backlog)

        def interface(
            name: str, run: Callable[[], Awaitable[None]], **log_fields: str
        ) -> asyncio.Task[None]:
            task = supervise(name, run, health=health)
            return tg.create_task(task, name=name, context=context_copy(**log_fields))

        async with asyncio.TaskGroup() as tg:
            # Acquisition: if one of these fails, the agent exits and systemd restarts it.
            fleet = Fleet(
                make_runner,
                spawn=lambda dev_id, loop: tg.create_task(
                    loop, name=f"device[{dev_id}]", context=context_copy(device=dev_id)
                ),
                health=health,
            )
            fleet.start(devices)
            readers: list[asyncio.Task[None]] = []
            if hullers is not None:
                readers.append(tg.create_task(hullers.run_loop(), name="hullers"))
            if climate is not None:
                readers.append(tg.create_task(climate.run_loop(), name="climate"))
            for bus_id, bus in buses.items():
                readers.append(tg.create_task(bus.run_loop(), name=f"bus[{bus_id}]"))
            # Delivery: one lane per sink (its loop and cursor, its connection), each
            # started and stopped on its own by a reload.
            lanes = DeliveryLanes(
                outbox,
                spawn=lambda name, run, sink: interface(name, run, sink=sink),
                health=health,
            )
            stacks = {sink.name: own for sink, own in opened}
            for sink in sinks:
                loops, close = lane_parts(sink, stacks.get(sink.name) or AsyncExitStack())
                await lanes.start(sink, loops=loops, close=close)
            # Interfaces: restarted with back-off when they fail.
            interfaces: list[asyncio.Task[None]] = []
            if web_deps is not None:
                notifier = None if notify is None else notify.notifier
                interfaces.append(
                    interface(
                        "web",
                        lambda: _serve_web(
                            cfg, web_deps, notifier=notifier, lot_records=lot_records
                        ),
                    )
                )
            interfaces.append(interface("lots", lots.run_loop))
            if readiness is not None:
                interfaces.append(interface("lot-readiness", readiness.run_loop))
            if lot_records is not None:  # details, corrections, blends: on to every sink
                outflow = LotRecordEvents(lot_records, site=cfg.site.id, record=accept.record)
                interfaces.append(interface("lot-record-events", outflow.run_loop))
            interfaces.append(interface("time", clock.run_loop))
            # Time sources on a wire: a GPS receiver, the notifications modem.
            if "gps" in cfg.agent.time_sources and (gps := cfg.agent.time_gps) is not None:
                interfaces.append(interface("time-gps", lambda: gps_loop(gps, clock)))
            if "modem" in cfg.agent.time_sources:
                if notify is not None and (modem := notify.modem) is not None:
                    interfaces.append(interface("time-modem", lambda: modem_loop(modem, clock)))
                else:
                    clock.note("modem", "unavailable", "no notifications modem ([notify.sms])")
            interfaces.append(
                interface(
                    "live-health",
                    lambda: hub.health_loop(
                        health,
                        backlog=lambda sink: outbox.backlog(sink) if sink in outbox.sinks else 0,
                    ),
                )
            )
            if alerts is not None:
                interfaces.append(interface("alerts", alerts.run_loop))
            if notify is not None:
                # One supervisor per channel: a channel that fails never stops another.
                interfaces += [interface(name, loop) for name, loop in notify.loops.items()]
            interfaces.append(
                interface(
                    "agent-status", lambda: _status_loop(cfg, outbox, health, accept, started)
                )
            )
            if reload is not None and config_path is not None:  # SIGHUP: apply the site file
                reloader = Reloader(
                    path=config_path, running=cfg, fleet=fleet, alerts=alerts,
                    systemd=systemd, status=_systemd_status,
                    sinks=SinkReload(lanes=lanes, health=health, mqtt=mqtt, epoch=outbox.epoch),
                    notify=None if notify is None else NotifyReload(
                        notify.notifier, reopen=notify.reopen,
                        spawn=lambda name, run: interface(name, run),
                    ),
                )  # fmt: skip
                health.counters["reload"] = reloader.health_doc
                interfaces.append(interface("reload", lambda: reloader.run_loop(reload)))
            # Meters: calibration records kept with the lot records, status published.
            source: Reloader | None = None
            if reload is not None and config_path is not None:
                source = reloader  # a reload changes the meters too
            remember = (
                None if lot_records is None else functools.partial(_remember_meters, lot_records)
            )
            interfaces.append(
                interface(
                    "meters",
                    lambda: run_calibration_status(
                        lambda: (cfg if source is None else source.running).devices,
                        accept=accept.accept,
                        site=cfg.site.id,
                        tz=cfg.site.zone,
                        remember=remember,
                        interval_s=cfg.agent.status_interval_s,
                        clock_ns=keeper.now_ns,
                    ),
                )
            )
            if systemd.enabled:  # last: its first step (READY=1) runs after every other task's
                interfaces.append(
                    interface("systemd", lambda: watchdog_loop(systemd, _systemd_status))
                )
            await stop.wait()
            systemd.stopping(_systemd_status())
            log.info("Stopping: closing devices, delivering what is pending")
            for task in [*fleet.cancel_all(), *readers, *interfaces]:
                task.cancel()
            await _drain(outbox, lanes.names, shutdown_grace_s)
            await lanes.close_all()  # MQTT publishes offline, NATS disconnects
        log.info("Stopped; %s", _backlog_summary(outbox))


class TimeService:
    """Polls the time sources and re-stamps what waited for them (``agent.timekeeping``).

    When time becomes trusted after a provisional start, the provisional readings of
    this run are re-stamped in the outbox, once, and handed to ``on_restamped`` (the
    local history, which skipped them); when no source came in time, they are released
    as estimated. Every change of anchor is recorded as a ``time`` event of the agent.
    """

    def __init__(
        self,
        keeper: TimeKeeper,
        *,
        stamper: Stamper,
        outbox: Outbox,
        accept: AcceptStage,
        site: str,
        poll_s: float = 5.0,
        save_s: float = 60.0,
    ) -> None:
        self._keeper = keeper
        self._stamper = stamper
        self._outbox = outbox
        self._accept = accept
        self._site = site
        self._poll_s = poll_s
        self._save_s = save_s
        #: How this run's provisional readings were resolved: readings still in flight
        #: then (committed after the re-stamp) get the same.
        self._resolved: tuple[int, str] | None = None
        self.on_restamped: list[Callable[[Reading], None]] = []
        #: One change of anchor at a time (the poll, the GPS, the modem, a person).
        self._anchoring = asyncio.Lock()

    async def run_loop(self) -> None:
        """Poll the sources until cancelled (an interface: restarted if it fails)."""
        loop = asyncio.get_running_loop()
        next_save = loop.time() + self._save_s
        try:
            while True:
                async with self._anchoring:
                    adj = self._keeper.poll()
                    if adj is not None:
                        await self.adjusted(adj)
                    elif self._resolved is not None and self._outbox.held:
                        await self._restamp(*self._resolved)
                if loop.time() >= next_save:
                    self._keeper.save()
                    next_save = loop.time() + self._save_s
                await asyncio.sleep(self._poll_s)
        finally:
            self._keeper.save()

    async def set_by_user(self, user: str, wall_ns: int) -> Adjustment:
        """A person confirmed the time on the dashboard (see ``TimeKeeper.set_by_user``)."""
        async with self._anchoring:
            adj = self._keeper.set_by_user(user, wall_ns)
            await self.adjusted(adj)
        return adj

    def time_doc(self) -> dict[str, object]:
        """Time's quality, source and each source's state (``TimeKeeper.health_doc``)."""
        return self._keeper.health_doc()

    async def offer(self, source: str, wall_ns: int, mono_ns: int) -> bool:
        """A source's time (``agent.timesources``); whether it was believed."""
        async with self._anchoring:
            adj = self._keeper.offer(source, wall_ns, mono_ns=mono_ns)
            if adj is not None:
                await self.adjusted(adj)
        state = self._keeper.states.get(source)
        return state is not None and state.state != "refused"

    def note(self, source: str, state: str, detail: str) -> None:
        """How a source is when it has no time to offer (shown in health)."""
        self._keeper.note(source, state, detail)

    async def adjusted(self, adj: Adjustment) -> None:
        """Bring the stamper, the outbox and the history in line with a new anchor."""
        # Before any await: the next stamp must already follow the new time.
        if adj.before is TimeQuality.PROVISIONAL:
            self._stamper.shift(adj.delta_ns)
            self._resolved = (adj.delta_ns, adj.after.value)
            await self._restamp(*self._resolved)
        elif adj.delta_ns:
            # The estimate was off: readings that carried it stay flagged, new ones
            # follow the trusted time, even where that is behind the estimate.
            self._stamper.forget_times()
        await self._accept.record(
            [
                Draft(
                    device=AGENT_DEVICE,
                    measurement="time",
                    fields={
                        "delta_s": adj.delta_ns / 1e9,
                        "before": adj.before.value,
                        "after": adj.after.value,
                        "source": adj.source,
                    },
                    tags={"site": self._site, "device": AGENT_DEVICE},
                    kind="event",
                )
            ]
        )

    async def _restamp(self, delta_ns: int, quality: str) -> None:
        readings = await self._outbox.resolve(
            delta_ns=delta_ns, quality=quality, boot=self._keeper.boot
        )
        if readings:
            log.info("Re-stamped %d provisional readings (%s)", len(readings), quality)
        for reading in readings:
            for listener in self.on_restamped:
                listener(reading)


def notify_events(
    notifier: Notifier,
) -> Callable[[Sequence[tuple[Alert, dict[str, str]]]], Awaitable[int]]:
    """The alert service's ``on_notify``: its events as the notifier's."""

    def submit(events: Sequence[tuple[Alert, dict[str, str]]]) -> Awaitable[int]:
        return notifier.submit(
            [
                AlertEvent(
                    rule=a.rule,
                    subject=a.subject,
                    state=a.state.value,
                    severity=a.severity.value,
                    since_ns=a.since_ns,
                    at_ns=a.at_ns,
                    repeat=a.repeat,
                    messages=messages,
                    acked_by=a.acked_by,
                    data=dict(a.data),
                )
                for a, messages in events
            ]
        )

    return submit


async def _serve_web(
    cfg: Config,
    deps: WebDeps,
    *,
    notifier: Notifier | None = None,
    lot_records: AsyncLotRecords | None = None,
) -> None:
    """The web server, until cancelled (a fresh application on every start)."""
    app = make_web_app(
        deps, token=_secret(cfg.api_token), notifier=notifier, lot_records=lot_records
    )
    async with open_web(app, host=cfg.api.bind, port=cfg.api.port):
        await asyncio.Event().wait()


async def _drain(outbox: Outbox, sinks: Sequence[str], grace_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s):
            while any(outbox.backlog(s) for s in sinks):
                await outbox.acked()


def _backlog_summary(outbox: Outbox) -> str:
    parts = [f"{s}={outbox.backlog(s)}" for s in outbox.sinks]
    return "backlog kept for next start: " + (", ".join(parts) if parts else "no sinks")
