"""Reload that moves the sinks while four meters stream: the real agent, two Mosquittos, InfluxDB.

Four simulated ticket meters print on ptys to the real agent process, which delivers to
Mosquitto A and InfluxDB database ``db1`` and notifies a contact through ntfy (a
stand-in server on 127.0.0.1). ``coffee-telemetry reload`` then applies a site file
that moves MQTT to Mosquitto B, InfluxDB to database ``db2`` and the contact to another
ntfy topic, while the meters go on printing. Every reading is counted by
``(device, seq)``: each one is on exactly one of the brokers and one of the databases,
the old ones holding the readings up to the switch and the new ones every reading
after it, none missing from the union. The agent's status says ``offline`` on A and
``online`` on B, no meter's port was reopened, and a wet lot after the reload reaches
the contact's new topic.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from coffee_telemetry.agent.config import load_config
from coffee_telemetry.simulators.moisture import SentReading, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer
from tests.services.net import free_port

pytestmark = pytest.mark.integration

SITE = "ourofino"
METERS = ("umid-1", "umid-2", "umid-3", "umid-4")


@dataclass
class Meter:
    """A ticket meter printing every ``interval_s`` while ``running`` is set."""

    sim: TicketMeterSim
    lot: str
    values: tuple[float, ...]
    sent: list[SentReading] = field(default_factory=list)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    interval_s: float = 0.12

    async def loop(self) -> None:
        i = 0
        while True:
            await self.running.wait()
            got = await self.sim.emit(moisture_pct=self.values[i % len(self.values)], lot=self.lot)
            assert got is not None, "the simulator could not write a whole ticket"
            self.sent.append(got)
            i += 1
            await asyncio.sleep(self.interval_s)


class Phone:
    """An ntfy server that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.messages.append(json.loads(await request.read()))
        return web.json_response({"id": str(len(self.messages))})

    def to(self, topic: str) -> list[str]:
        return [json.dumps(m, ensure_ascii=False) for m in self.messages if m["topic"] == topic]

    async def __aenter__(self) -> Phone:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def site_file(
    path: Path, tmp: Path, *, broker: int, prefix: str, influx: str, database: str,
    ntfy: int, topic: str,
) -> Path:  # fmt: skip
    write_site_config(
        path,
        data_dir=tmp / "data",
        devices=[DeviceSpec(dev, "moisture.ticket", str(tmp / "dev" / dev)) for dev in METERS],
        mqtt_port=broker,
        prefix=prefix,
        influx_url=influx,
        database=database,
        site=SITE,
    )
    with path.open("a") as f:
        f.write(
            "[alerts.wet_lot]\nk = 2\nn = 3\ndefault_threshold_pct = 12.0\nhysteresis_pct = 0.5\n"
            "[notify]\n"
            f'[notify.ntfy]\nurl = "http://127.0.0.1:{ntfy}"\n'
            f'[[notify.contacts]]\nname = "Ana"\nchannels = {{ ntfy = "{topic}" }}\n'
            '[[notify.routes]]\nname = "plantao"\nrules = ["wet_lot"]\ncontacts = ["Ana"]\n'
        )
    return path


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[dict[str, PtyPort]]:
    (tmp_path / "dev").mkdir()
    made = {dev: PtyPort(link=tmp_path / "dev" / dev) for dev in METERS}
    for port in made.values():
        port.open()
    yield made
    for port in made.values():
        port.close()


def health(api_port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/health", timeout=5) as resp:
        doc: dict[str, object] = json.load(resp)
    return doc


def seqs(collector: MqttCollector, device: str) -> list[int]:
    return sorted(seq for dev, seq in collector.readings if dev == device)


def influx_seqs(influxd: InfluxServer, database: str) -> Callable[[str], list[int]]:
    rows = influxd.query(database, 'SELECT "seq", "device" FROM "moisture"')

    def of(device: str) -> list[int]:
        return sorted(int(str(r["seq"])) for r in rows if r.get("device") == device)

    return of


@pytest.mark.timeout(180)  # two brokers, a database and four meters, on two cores
async def test_reload_moves_mqtt_and_influx_while_four_meters_stream(
    tmp_path: Path,
    ports: dict[str, PtyPort],
    mosquitto_factory: Callable[[], MosquittoServer],
    influxd: InfluxServer,
) -> None:
    broker_a, broker_b = mosquitto_factory(), mosquitto_factory()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    db1, db2 = (f"sw_{uuid.uuid4().hex[:8]}" for _ in range(2))
    for db in (db1, db2):
        influxd.create_database(db)
    config = tmp_path / "site.toml"
    on_a = MqttCollector(port=broker_a.port, prefix=prefix, client_id=f"a-{prefix}")
    on_b = MqttCollector(port=broker_b.port, prefix=prefix, client_id=f"b-{prefix}")
    agent = AgentProcess(config, tmp_path / "agent.log")
    tasks: list[asyncio.Task[None]] = []

    def context() -> str:
        return f"agent log tail:\n{agent.log_tail()}"

    async with Phone() as phone:
        site_file(
            config, tmp_path, broker=broker_a.port, prefix=prefix, influx=influxd.url,
            database=db1, ntfy=phone.port, topic="armazem-ana",
        )  # fmt: skip
        api_port = load_config(config).api.port
        meters = {
            dev: Meter(
                TicketMeterSim(port),
                lot="L-UMIDO-1" if dev == "umid-1" else f"L-000{dev[-1]}",
                values=(13.0, 13.4, 12.8) if dev == "umid-1" else (10.0, 10.5, 11.0),
            )
            for dev, port in ports.items()
        }
        try:
            on_a.start()
            on_b.start()
            agent.start()
            await eventually(
                lambda: all(
                    isinstance(s := on_a.last_status(dev), dict) and s.get("state") == "online"
                    for dev in METERS
                ),
                timeout_s=30,
                what="4 meters online on broker A",
                context=context,
            )
            tasks = [asyncio.create_task(m.loop()) for m in meters.values()]
            for meter in meters.values():
                meter.running.set()
            await eventually(
                lambda: (
                    all(len(seqs(on_a, dev)) >= 10 for dev in METERS)
                    and bool(phone.to("armazem-ana"))
                ),
                timeout_s=40,
                what="readings on A and the first wet lot's notification",
                context=context,
            )
            assert on_a.last_status("agent") == "online"

            # The new file, while the meters print: B, db2, Ana on another topic.
            new = tmp_path / "site.new.toml"
            site_file(
                new, tmp_path, broker=broker_b.port, prefix=prefix, influx=influxd.url,
                database=db2, ntfy=phone.port, topic="armazem-ana-2",
            )  # fmt: skip
            new.replace(config)
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "coffee_telemetry.agent.cli", "reload", "-c", str(config)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            await eventually(
                lambda: "Reloaded " in agent.log_tail(1_000_000),
                timeout_s=30,
                what="the reload in the log",
                context=context,
            )
            await eventually(
                lambda: all(len(seqs(on_b, dev)) >= 10 for dev in METERS),
                timeout_s=40,
                what="readings on B",
                context=context,
            )
            meters["umid-1"].lot = "L-UMIDO-2"  # a new wet lot, after the reload
            await eventually(
                lambda: bool(phone.to("armazem-ana-2")),
                timeout_s=40,
                what="the second wet lot's notification on the new topic",
                context=context,
            )
            for meter in meters.values():
                meter.running.clear()
            await asyncio.sleep(0.5)  # a ticket being printed is finished
            sent = {dev: len(meters[dev].sent) for dev in METERS}

            # -- every reading once, on the old targets up to the switch, the new after
            await eventually(
                lambda: all(
                    len(set(seqs(on_a, d)) | set(seqs(on_b, d))) >= n for d, n in sent.items()
                ),
                timeout_s=30,
                what=f"{sent} readings on A and B",
                context=context,
            )

            def in_influx() -> bool:
                old, new = influx_seqs(influxd, db1), influx_seqs(influxd, db2)
                return all(len(old(d)) + len(new(d)) >= n for d, n in sent.items())

            await eventually(in_influx, timeout_s=30, what="every reading in InfluxDB")
            old_db, new_db = influx_seqs(influxd, db1), influx_seqs(influxd, db2)
            assert not set(on_a.readings) & set(on_b.readings), "a record on both brokers"
            for dev, n in sent.items():
                for before, after, where in (
                    (seqs(on_a, dev), seqs(on_b, dev), "MQTT"),
                    (old_db(dev), new_db(dev), "InfluxDB"),
                ):
                    assert sorted(before + after) == list(range(1, n + 1)), (dev, where)
                    assert before, (dev, where)
                    assert after, (dev, where)
                    # The old target has a prefix, the new one everything from the switch on.
                    assert before == list(range(1, len(before) + 1)), (dev, where)
                    assert after == list(range(len(before) + 1, n + 1)), (dev, where)
            assert on_a.duplicates == 0
            assert on_b.duplicates == 0

            # -- the agent's status moved with MQTT; the devices were never touched
            assert on_a.last_status("agent") == "offline"
            assert on_b.last_status("agent") == "online"
            for dev in METERS:
                status = on_b.last_status(dev)
                assert isinstance(status, dict)
                assert status["state"] == "online"
            log = agent.log_tail(10_000_000)
            for dev in METERS:
                assert log.count(f"for device {dev} (moisture.ticket)") == 1, dev
            doc = health(api_port)
            devices = doc["devices"]
            assert isinstance(devices, dict)
            for dev in METERS:
                assert devices[dev]["reconnects"] == 0
            counters = doc["counters"]
            assert isinstance(counters, dict)
            reload = counters["reload"]
            assert reload["ok"] == 1
            changes = reload["last_changes"]
            assert changes == [
                "sink mqtt changed (mqtt.port)",
                "sink influx changed (influx.database)",
                "notify.contacts changed (~Ana)",
            ]
            for line in changes:
                assert f"Reload: {line}" in log
            assert "needs a restart: api.port" in log
            assert "needs a restart" not in log.replace("needs a restart: api.port", "")

            # -- the contact change: the old topic had the first lot, the new one the second
            assert any("L-UMIDO-1" in m for m in phone.to("armazem-ana"))
            assert not any("L-UMIDO-2" in m for m in phone.to("armazem-ana"))
            assert any("L-UMIDO-2" in m for m in phone.to("armazem-ana-2"))
            assert agent.stop() == 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if agent.alive:
                agent.stop()
            on_a.stop()
            on_b.stop()
