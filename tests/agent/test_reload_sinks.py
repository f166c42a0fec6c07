"""Reloading sinks and notification contacts: lanes, cursors, the plan, the reloader."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import DeviceConfig, load_config
from coffee_telemetry.agent.devices import Runner
from coffee_telemetry.agent.devices.fleet import Fleet
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.outbox.lanes import DeliveryLanes
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.reload import NotifyReload, Reloader, SinkReload, plan_reload
from coffee_telemetry.agent.sinks.configured import lane_parts, open_sink, sink_specs
from tests.agent.notify.helpers import (
    RecordingChannel,
    WallClock,
    event,
    local_ns,
    notify_config,
    open_notifier,
)
from tests.services.net import free_port


def readings(stamper: Stamper, n: int, device: str = "d") -> list[Reading]:
    return [
        stamper.stamp(device=device, measurement="moisture", fields={"moisture_pct": 11.0}, tags={})
        for _ in range(n)
    ]


class GatedSink:
    """Delivers only while ``gate`` is set; keeps every id it delivered."""

    def __init__(self, name: str, *, open_gate: bool = True, batch_size: int = 10) -> None:
        self.name = name
        self.batch_size = batch_size
        self.flush_interval_s = 0.0
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.started = asyncio.Event()
        self.delivered: list[int] = []
        self.closed = False
        self.down = False

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        if self.down:
            raise SinkUnavailable("down", sink=self.name)
        self.started.set()
        await self.gate.wait()
        self.delivered += [r.id for r in records]
        return []

    async def wait_available(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    async def close(self) -> None:
        self.closed = True


@dataclass
class Rig:
    outbox: Outbox
    lanes: DeliveryLanes
    health: Health
    stamper: Stamper = field(default_factory=Stamper)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def accept(self, n: int, device: str = "d") -> list[int]:
        ids = await self.outbox.accept(readings(self.stamper, n, device))
        return ids

    async def start(self, sink: GatedSink) -> None:
        await self.lanes.start(sink, close=sink.close)


@asynccontextmanager
async def rig(tmp: Path, sinks: Sequence[str], *, grace_s: float = 5.0) -> AsyncIterator[Rig]:
    health = Health()
    async with open_outbox(tmp / "outbox.sqlite3", sinks=sinks, cursor_flush_s=0.01) as outbox:
        tasks: list[asyncio.Task[None]] = []

        def spawn(name: str, run: Callable[[], Awaitable[None]], sink: str) -> asyncio.Task[None]:
            async def go() -> None:
                await run()

            task = asyncio.create_task(go(), name=name)
            tasks.append(task)
            return task

        lanes = DeliveryLanes(outbox, spawn=spawn, health=health, grace_s=grace_s)
        r = Rig(outbox=outbox, lanes=lanes, health=health, tasks=tasks)
        try:
            yield r
        finally:
            await lanes.close_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


def disk_cursors(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {str(s): int(c) for s, c in conn.execute("SELECT sink, delivered_id FROM cursors")}


# -- lanes and cursors -------------------------------------------------------------------


async def test_a_changed_sink_finishes_its_batch_and_the_new_one_starts_on_its_cursor(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, ["influx"]) as r:
        old = GatedSink("influx", open_gate=False)
        await r.start(old)
        await r.accept(25)
        await asyncio.wait_for(old.started.wait(), 5)
        # The switch waits for the batch in flight (ids 1..10) to be confirmed.
        stopping = asyncio.create_task(r.lanes.stop("influx", forget=False))
        await asyncio.sleep(0.05)
        assert not stopping.done()
        await r.accept(5)  # the devices go on meanwhile
        old.gate.set()
        await asyncio.wait_for(stopping, 5)
        assert old.delivered == list(range(1, 11))
        assert old.closed
        assert r.outbox.cursor("influx") == 10
        new = GatedSink("influx")
        await r.start(new)
        await r.accept(5)
        await until(lambda: len(new.delivered) == 25)
        assert new.delivered == list(range(11, 36))
        assert not set(old.delivered) & set(new.delivered)
        assert r.health.sinks["influx"].delivered == 35


async def test_a_removed_sink_keeps_its_cursor_and_resumes_after_it_when_added_back(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, ["a", "b"]) as r:
        a, b = GatedSink("a"), GatedSink("b")
        await r.start(a)
        await r.start(b)
        await r.accept(10)
        await until(lambda: len(a.delivered) == len(b.delivered) == 10)
        await r.lanes.stop("b", forget=True)
        assert r.outbox.sinks == ("a",)
        assert "b" not in r.health.sinks
        await r.outbox.flush()
        assert disk_cursors(tmp_path / "outbox.sqlite3")["b"] == 10  # kept on disk
        # While b is gone, a lagging a holds records 11..20: b is not what holds them.
        a.gate.clear()
        await r.accept(10)
        await asyncio.sleep(0.05)
        b_again = GatedSink("b")
        await r.start(b_again)
        await until(lambda: len(b_again.delivered) == 10)
        assert b_again.delivered == list(range(11, 21))  # nothing of 1..10 twice
        a.gate.set()
        await until(lambda: len(a.delivered) == 20)
        # Removed again while every record was delivered: the outbox frees them.
        await r.lanes.stop("b", forget=True)
        await r.accept(5)
        await until(lambda: len(a.delivered) == 25)
        await r.outbox.flush()
        await r.accept(1)  # the next commit prunes what a (alone now) confirmed
        await until(lambda: len(a.delivered) == 26)
        await r.outbox.flush()
        assert r.outbox.backlog("a") == 0
        b_third = GatedSink("b")
        await r.start(b_third)
        await r.accept(2)
        await until(lambda: len(b_third.delivered) >= 2)
        # Records accepted while b was not configured, and already freed, are not owed.
        assert b_third.delivered[-2:] == [27, 28]
        assert min(b_third.delivered) > 20


async def test_an_added_sink_starts_with_the_oldest_record_held(tmp_path: Path) -> None:
    async with rig(tmp_path, ["a"]) as r:
        a = GatedSink("a", open_gate=False)
        await r.start(a)
        await r.accept(12)
        new = GatedSink("webhook")
        await r.start(new)
        await r.accept(3)
        await until(lambda: len(new.delivered) == 15)
        assert new.delivered == list(range(1, 16))
        assert r.outbox.sinks == ("a", "webhook")
        with pytest.raises(ValueError, match="lane already"):
            await r.start(GatedSink("webhook"))
        a.gate.set()


async def test_pause_ends_at_once_when_the_sink_is_down_and_keeps_the_batch(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, ["mqtt"]) as r:
        sink = GatedSink("mqtt")
        sink.down = True
        await r.start(sink)
        await r.accept(4)
        await asyncio.sleep(0.05)
        async with asyncio.timeout(1):
            await r.lanes.pause("mqtt")
        assert r.outbox.cursor("mqtt") == 0
        sink.down = False
        r.lanes.resume("mqtt")
        await until(lambda: len(sink.delivered) == 4)
        assert sink.delivered == [1, 2, 3, 4]


async def test_a_batch_stuck_past_the_grace_is_cancelled_and_sent_again(tmp_path: Path) -> None:
    async with rig(tmp_path, ["influx"], grace_s=0.1) as r:
        stuck = GatedSink("influx", open_gate=False)
        await r.start(stuck)
        await r.accept(3)
        await asyncio.wait_for(stuck.started.wait(), 5)
        await r.lanes.stop("influx", forget=False)
        assert stuck.delivered == []
        assert r.outbox.cursor("influx") == 0
        fresh = GatedSink("influx")
        await r.start(fresh)
        await until(lambda: len(fresh.delivered) == 3)
        assert fresh.delivered == [1, 2, 3]


# -- the plan ----------------------------------------------------------------------------


def site_text(
    tmp: Path,
    *,
    influx: str = "http://127.0.0.1:9/",
    database: str = "a",
    mqtt: bool = False,
    broker: int = 1883,
    hooks: Sequence[str] = (),
    contacts: str = "",
    extra: str = "",
) -> str:
    lines = [
        "[site]",
        'id = "s1"',
        "[agent]",
        f'data_dir = "{tmp / "data"}"',
        "[mqtt]",
        f"enabled = {'true' if mqtt else 'false'}",
        f"port = {broker}",
        "[influx]",
        "enabled = true",
        f'url = "{influx}"',
        f'database = "{database}"',
        "flush_interval_s = 0.02",
        "create_database = false",
        "timeout_s = 2",
    ]
    for hook in hooks:
        lines += ["[[alerts.webhooks]]", f'name = "{hook}"', f'url = "{influx}hook/{hook}"']
    return "\n".join(lines) + "\n" + contacts + extra


NOTIFY = """
[notify]
public_url = "http://armazem.local:8780"
[notify.ntfy]
url = "{url}"
[[notify.contacts]]
name = "ana"
channels = {{ ntfy = "{topic}" }}
[[notify.routes]]
name = "plantao"
contacts = ["ana"]
"""


def test_plan_applies_sinks_and_contacts_live_and_names_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        site_text(tmp_path, mqtt=True, contacts=NOTIFY.format(url="http://x", topic="t1"))
    )
    running = load_config(path)
    path.write_text(
        site_text(
            tmp_path,
            mqtt=True,
            broker=1884,
            database="b",
            hooks=["h1"],
            contacts=NOTIFY.format(url="http://y", topic="t2"),
        ).replace("[mqtt]\n", "[mqtt]\nhomeassistant_discovery = true\n")
    )
    new = load_config(path)
    plan = plan_reload(
        running, new, alerts_live=True, sinks_live=True, mqtt_live=True, notify_live=True
    )
    assert plan.restart == ("mqtt.homeassistant_discovery", "notify.ntfy")
    assert plan.running.mqtt.port == 1884
    assert not plan.running.mqtt.homeassistant_discovery
    assert plan.running.influx.database == "b"
    assert [h.name for h in plan.running.alerts.webhooks] == ["h1"]
    assert plan.notify is not None
    assert plan.notify.contacts[0].channels == {"ntfy": "t2"}
    assert plan.notify.ntfy == running.notify.ntfy  # the channel needs a restart
    assert plan.notify_changed == ("notify.contacts changed (~ana)",)
    assert sorted(sink_specs(plan.running)) == ["h1", "influx", "mqtt"]
    # No MQTT connection to move (started without, or removed): enabling it waits.
    off = running.model_copy(update={"mqtt": running.mqtt.model_copy(update={"enabled": False})})
    plan = plan_reload(off, new, alerts_live=True, sinks_live=True, mqtt_live=False)
    assert "mqtt.enabled" in plan.restart
    assert not plan.running.mqtt.enabled
    assert "notify.contacts" in plan.restart  # no notifier running
    # Without lanes, every sink difference needs a restart, as before.
    plan = plan_reload(running, new, alerts_live=True)
    assert {"mqtt.port", "influx.database", "alerts.webhooks"} <= set(plan.restart)
    assert plan.running.influx.database == "a"


# -- the reloader, on a stand-in InfluxDB and webhook receiver ----------------------------


@dataclass
class Receiver:
    """A loopback HTTP server taking InfluxDB writes (by database) and webhook posts."""

    port: int = field(default_factory=free_port)
    writes: dict[str, list[str]] = field(default_factory=dict)
    hooks: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/write":
            body = await request.text()
            lines = [line for line in body.splitlines() if line]
            self.writes.setdefault(request.query["db"], []).extend(lines)
            return web.Response(status=204)
        if request.path.startswith("/hook/"):
            name = request.path.removeprefix("/hook/")
            self.hooks[name] = self.hooks.get(name, 0) + 1
            return web.json_response({"ok": True})
        return web.json_response({"results": [{}]})

    def seqs(self, database: str) -> list[int]:
        out = []
        for line in self.writes.get(database, []):
            fields = line.split(" ")[1]
            seq = next(f for f in fields.split(",") if f.startswith("seq="))
            out.append(int(seq.removeprefix("seq=").rstrip("i")))
        return out


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


async def test_reload_moves_influx_to_a_new_database_and_adds_and_removes_a_webhook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="coffee_telemetry.agent.reload")
    async with receiver() as rec:
        path = tmp_path / "site.toml"
        path.write_text(site_text(tmp_path, influx=rec.url))
        cfg = load_config(path)
        health = Health()
        async with rig(tmp_path, list(sink_specs(cfg))) as r:
            for spec in sink_specs(cfg).values():
                stack_sink = await _open(cfg, spec, health)
                await r.lanes.start(stack_sink[0], loops=stack_sink[1], close=stack_sink[2])
            fleet = fleet_without_devices(health)
            reloader = Reloader(
                path=path, running=cfg, fleet=fleet, sinks=SinkReload(lanes=r.lanes, health=health)
            )
            await r.accept(20)
            await until(lambda: len(rec.seqs("a")) == 20)
            # Readings keep coming while the reload runs.
            producer = asyncio.create_task(produce(r, 40))
            await asyncio.sleep(0.05)
            path.write_text(site_text(tmp_path, influx=rec.url, database="b", hooks=["h1"]))
            outcome = await reloader.reload()
            assert outcome.ok, outcome.error
            assert outcome.changes == (
                "sink influx changed (influx.database)",
                "sink h1 added",
            )
            assert outcome.summary == "sinks ~influx +h1"
            await producer
            await until(lambda: len(rec.seqs("a")) + len(rec.seqs("b")) == 60)
            a, b = rec.seqs("a"), rec.seqs("b")
            # Every reading exactly once in the union; the new database from the switch on.
            assert sorted(a + b) == list(range(1, 61))
            assert b == list(range(len(a) + 1, 61))
            assert len(a) >= 20
            assert r.outbox.sinks == ("influx", "h1")
            doc = reloader.health_doc()
            assert doc["last_changes"] == list(outcome.changes)
            # An invalid file: refused, the lanes untouched.
            lane = r.lanes.sink("influx")
            path.write_text(site_text(tmp_path, influx="not a url", database=""))
            refused = await reloader.reload()
            assert not refused.ok
            assert r.lanes.sink("influx") is lane
            assert reloader.running.influx.database == "b"
            # The same errors as check-config's, the sink's keys named.
            assert main(["check-config", str(path)]) == 2
            printed = capsys.readouterr().err
            assert refused.error is not None
            assert "influx.url" in refused.error
            assert "influx.database" in refused.error
            for line in refused.error.splitlines():
                assert line in printed
            # The webhook removed: its lane ends, its cursor stays on disk.
            path.write_text(site_text(tmp_path, influx=rec.url, database="b"))
            removed = await reloader.reload()
            assert removed.changes == ("sink h1 removed",)
            assert list(r.outbox.sinks) == ["influx"]
            await r.outbox.flush()
            assert "h1" in disk_cursors(tmp_path / "outbox.sqlite3")
            assert "Reload: sink h1 removed" in caplog.text


async def produce(r: Rig, n: int) -> None:
    for _ in range(n):
        await r.accept(1)
        await asyncio.sleep(0.002)


async def _open(cfg: Any, spec: Any, health: Health) -> tuple[Any, Any, Any]:
    from contextlib import AsyncExitStack

    stack = AsyncExitStack()
    sink = await open_sink(cfg, spec, stack, health)
    assert sink is not None
    loops, close = lane_parts(sink, stack)
    return sink, loops, close


def _no_spawn(dev_id: str, loop: Any) -> asyncio.Task[None]:  # pragma: no cover - no devices
    raise AssertionError(dev_id)


def _no_runner(dev: DeviceConfig) -> Runner:  # pragma: no cover - no devices
    raise AssertionError(dev.id)


def fleet_without_devices(health: Health) -> Fleet:
    """A fleet without devices: these reloads change sinks only."""
    return Fleet(_no_runner, spawn=_no_spawn, health=health)


async def test_a_sink_that_cannot_be_opened_leaves_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with receiver() as rec:
        path = tmp_path / "site.toml"
        path.write_text(site_text(tmp_path, influx=rec.url))
        cfg = load_config(path)
        health = Health()

        async def refuse(*args: object, **kwargs: object) -> None:
            raise OSError("cannot read the CA file")

        async with rig(tmp_path, ["influx"]) as r:
            sink, loops, close = await _open(cfg, sink_specs(cfg)["influx"], health)
            await r.lanes.start(sink, loops=loops, close=close)
            fleet = fleet_without_devices(health)
            sinks = SinkReload(lanes=r.lanes, health=health, open=refuse)
            reloader = Reloader(path=path, running=cfg, fleet=fleet, sinks=sinks)
            path.write_text(site_text(tmp_path, influx=rec.url, database="b"))
            outcome = await reloader.reload()
            assert outcome.ok
            assert outcome.changes == ("sink influx not changed: see the log",)
            assert "cannot read the CA file" in caplog.text
            assert r.lanes.sink("influx") is sink  # still delivering to database a
            await r.accept(3)
            await until(lambda: len(rec.seqs("a")) == 3)
            # The next reload tries again (with an opener that works).
            reloader._sinks = SinkReload(lanes=r.lanes, health=health)
            outcome = await reloader.reload()
            assert outcome.changes == ("sink influx changed (influx.database)",)
            await r.accept(2)
            await until(lambda: len(rec.seqs("b")) == 2)


# -- notification contacts ---------------------------------------------------------------


async def test_a_contact_change_takes_effect_and_queued_messages_are_kept(
    tmp_path: Path,
) -> None:
    clock = WallClock(local_ns("2026-11-30 10:00"))
    email = RecordingChannel("email", forever=None)
    sms = RecordingChannel("sms")
    async with open_notifier(tmp_path, [email, sms], clock=clock) as notifier:
        # Queued for João and Maria before the reload, not sent yet.
        await notifier.submit([event(since_ns=clock() - 60 * 10**9, subject="L-1")])
        old_cfg = notifier.config
        contacts = [
            {"name": "Bia", "channels": {"email": "bia@coop.example"}},
            {"name": "Maria", "channels": {"email": "maria@coop.example"}, "lang": "en"},
        ]
        routes = [{"name": "plantao", "contacts": ["Bia"]}]
        new_cfg = notify_config(contacts=contacts, routes=routes)
        plan = plan_reload(
            _with_notify(tmp_path, old_cfg),
            _with_notify(tmp_path, new_cfg),
            alerts_live=True,
            notify_live=True,
        )
        assert plan.notify is not None
        assert plan.notify_changed == (
            "notify.contacts changed (+Bia -João)",
            "notify.routes changed (~plantao)",
        )
        notifier.reconfigure(plan.notify)
        await notifier.submit([event(since_ns=clock(), subject="L-2")])
        tasks = [asyncio.ensure_future(loop()) for loop in notifier.loops().values()]
        try:
            await email.wait_for(lambda: len(email.sent) >= 2)
            await sms.wait_for(lambda: len(sms.sent) >= 1)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        got = {(m.contact, m.episode.split("/")[1]) for m in email.sent + sms.sent}
        # Before: João's (both channels) were queued and are sent; after: Bia alone.
        assert ("João", "L-1") in got
        assert ("Bia", "L-2") in got
        assert ("João", "L-2") not in got


def _with_notify(tmp: Path, cfg: Any) -> Any:
    path = tmp / "n.toml"
    path.write_text(site_text(tmp))
    return load_config(path).model_copy(update={"notify": cfg})


# -- fuzz: any reload file gives an outcome, never an exception ---------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=300))
def test_any_bytes_as_the_new_file_are_refused_or_applied(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path))
    cfg = load_config(path)
    health = Health()

    async def go() -> None:
        async with rig(tmp_path, []) as r:
            fleet = fleet_without_devices(health)
            reloader = Reloader(
                path=path, running=cfg, fleet=fleet, sinks=SinkReload(lanes=r.lanes, health=health)
            )
            path.write_bytes(site_text(tmp_path).encode() + data)
            outcome = await reloader.reload()
            assert outcome.ok or outcome.error
            if not outcome.ok:
                assert reloader.running is cfg

    asyncio.run(go())


EMAIL = """
[notify.email]
host = "127.0.0.1"
port = 2525
security = "none"
sender = "alerta@coop.example"
"""


async def test_reload_replaces_adds_and_removes_notification_channels(
    tmp_path: Path,
) -> None:
    clock = WallClock(local_ns("2026-11-30 10:00"))
    path = tmp_path / "site.toml"
    path.write_text(site_text(tmp_path, contacts=NOTIFY.format(url="http://x", topic="t1")))
    cfg = load_config(path)
    first = RecordingChannel("ntfy")
    made: dict[str, RecordingChannel] = {}
    spawned: dict[str, asyncio.Task[None]] = {}

    async def reopen(name: str, new: NotifyConfig) -> RecordingChannel:
        if name == "email" and new.email is not None and new.email.port == 1:
            raise OSError("cannot reach the relay")
        made[name] = RecordingChannel(name)
        return made[name]

    def spawn(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        spawned[name] = asyncio.ensure_future(run())
        return spawned[name]

    async with open_notifier(tmp_path, [first], cfg=cfg.notify, clock=clock) as notifier:
        ntfy_loop = asyncio.ensure_future(notifier.channel_loop("ntfy"))
        reloader = Reloader(
            path=path,
            running=cfg,
            fleet=fleet_without_devices(Health()),
            notify=NotifyReload(notifier, reopen=reopen, spawn=spawn),
        )
        try:
            # ntfy on another server, Ana on another topic, e-mail added for Bia.
            extra = EMAIL + '[[notify.contacts]]\nname = "bia"\nchannels = { email = "b@c.d" }\n'
            path.write_text(
                site_text(
                    tmp_path,
                    contacts=NOTIFY.format(url="http://y", topic="t2").replace(
                        'contacts = ["ana"]', 'contacts = ["ana", "bia"]'
                    ),
                    extra=extra,
                )
            )
            outcome = await reloader.reload()
            assert outcome.ok, outcome.error
            assert outcome.changes == (
                "notify.contacts changed (+bia ~ana)",
                "notify.routes changed (~plantao)",
                "notify.email added",
                "notify.ntfy changed",
            )
            assert notifier.channels["ntfy"] is made["ntfy"]
            assert notifier.channels["email"] is made["email"]
            assert list(spawned) == ["notify[email]"]
            assert reloader.running.notify.ntfy is not None
            assert reloader.running.notify.ntfy.url == "http://y"
            await notifier.submit([event(since_ns=clock(), subject="L-9")])
            await made["ntfy"].wait_for(lambda: len(made["ntfy"].sent) == 1)
            assert made["ntfy"].sent[0].address == "t2"
            assert first.sent == []
            # E-mail that cannot be opened: the running section stays, named in health.
            path.write_text(
                site_text(
                    tmp_path,
                    contacts=NOTIFY.format(url="http://y", topic="t2"),
                    extra=EMAIL.replace("2525", "1")
                    + '[[notify.contacts]]\nname = "bia"\nchannels = { email = "b@c.d" }\n',
                )
            )
            outcome = await reloader.reload()
            assert "notify.email not changed: see the log" in outcome.changes
            assert reloader.running.notify.email is not None
            assert reloader.running.notify.email.port == 2525
            # E-mail removed: its loop ends; what it had queued stays queued.
            path.write_text(site_text(tmp_path, contacts=NOTIFY.format(url="http://y", topic="t2")))
            outcome = await reloader.reload()
            assert "notify.email removed" in outcome.changes
            assert "email" not in notifier.channels
            await asyncio.wait_for(spawned["notify[email]"], 5)
            assert "email" not in notifier.health_doc()["channels"]  # type: ignore[operator]
        finally:
            for task in (ntfy_loop, *spawned.values()):
                task.cancel()
            await asyncio.gather(ntfy_loop, *spawned.values(), return_exceptions=True)
