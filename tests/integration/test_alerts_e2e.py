"""Alerts end to end: a wet lot fires on MQTT, in InfluxDB and at a webhook.

Real Mosquitto, real InfluxDB, the real agent process and a simulated meter on
a pty; the webhook receiver is a small local HTTP server run by the test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from coffee_telemetry.simulators.moisture import TicketMeterSim
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


@dataclass
class Receiver:
    port: int
    posts: list[dict[str, object]] = field(default_factory=list)

    def states(self) -> list[str]:
        return [str(p["state"]) for p in self.posts]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(port=free_port())

    async def hook(request: web.Request) -> web.Response:
        rec.posts.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", rec.port)
    await site.start()
    yield rec
    await runner.cleanup()


def publish(port: int, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


def alert_state(collector: MqttCollector, subject: str) -> dict[str, object] | None:
    got = collector.alert_states.get(subject)
    return got[-1] if got else None


class Rig:
    def __init__(
        self,
        tmp: Path,
        broker: MosquittoServer,
        influx: InfluxServer,
        db: str,
        rec: Receiver,
        repeat_s: float,
    ) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        (tmp / "dev").mkdir()
        self.port = PtyPort(link=tmp / "dev" / "umid-1")
        self.port.open()
        config = write_site_config(
            tmp / "site.toml",
            data_dir=tmp / "data",
            devices=[DeviceSpec("umid-1", "moisture.ticket", self.port.path, "recepcao")],
            mqtt_port=broker.port,
            prefix=self.prefix,
            influx_url=influx.url,
            database=db,
        )
        with config.open("a") as f:
            f.write(
                "[alerts.wet_lot]\nk = 2\nn = 3\ndefault_threshold_pct = 12.5\n"
                f"hysteresis_pct = 0.5\nrepeat_s = {repeat_s}\n"
                '[[alerts.webhooks]]\nname = "plantao"\n'
                f'url = "http://127.0.0.1:{rec.port}/hook"\n'
                'headers = {"X-Site" = "ourofino"}\n'
            )
        self.collector = MqttCollector(
            port=broker.port, prefix=self.prefix, client_id=f"c-{self.prefix}"
        )
        self.collector.start()
        self.config = config
        self.agent = AgentProcess(config, tmp / "agent.log")
        self.base = f"{self.prefix}/ourofino"
        self.sim = TicketMeterSim(self.port, lot="L-WET")

    async def start(self, *, after_ns: int = 0) -> None:
        self.agent.start()

        def online() -> bool:
            status = self.collector.last_status("umid-1", after_ns=after_ns)
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(online, timeout_s=20, what="umid-1 online", context=self.agent.log_tail)

    async def emit(self, *values: float) -> None:
        for value in values:
            sent = await self.sim.emit(moisture_pct=value)
            assert sent is not None
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self.agent.alive:
            self.agent.stop()
        self.collector.stop()
        self.port.close()


async def test_wet_lot_fires_is_acknowledged_and_resolves(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, mosquitto, influxd, influx_db, receiver, repeat_s=2.0)
    try:
        await rig.start()
        await rig.emit(11.8, 13.0, 13.2)  # two of the last three at or above 12.5 %
        await eventually(
            lambda: (alert_state(rig.collector, "L-WET") or {}).get("state") == "firing",
            timeout_s=15,
            what="retained firing alert",
            context=rig.agent.log_tail,
        )
        state = alert_state(rig.collector, "L-WET")
        assert state is not None
        assert state["rule"] == "wet_lot"
        await eventually(lambda: "firing" in receiver.states(), timeout_s=15, what="webhook firing")
        first = receiver.posts[0]
        assert first["subject"] == "L-WET"
        assert "úmido" in str(first["message"]).lower() or "umid" in str(first["message"]).lower()
        # Unacknowledged, it repeats.
        await eventually(
            lambda: receiver.states().count("firing") >= 2, timeout_s=15, what="repeat"
        )

        publish(mosquitto.port, f"{rig.base}/cmd/ack/wet_lot/L-WET", b'{"by": "maria"}')
        await eventually(
            lambda: (alert_state(rig.collector, "L-WET") or {}).get("state") == "acknowledged",
            timeout_s=15,
            what="acknowledged state",
        )
        await eventually(
            lambda: "acknowledged" in receiver.states(), timeout_s=15, what="webhook ack"
        )
        repeats = receiver.states().count("firing")
        await asyncio.sleep(5)  # more than two repeat intervals
        assert receiver.states().count("firing") == repeats, "acknowledged alerts do not repeat"

        await rig.emit(10.5, 10.5, 10.5, 10.5, 10.5)
        await eventually(
            lambda: (alert_state(rig.collector, "L-WET") or {}).get("state") == "resolved",
            timeout_s=15,
            what="resolved state",
        )
        await eventually(
            lambda: "resolved" in receiver.states(), timeout_s=15, what="webhook resolve"
        )
        await eventually(
            lambda: (
                {str(r["state"]) for r in influxd.query(influx_db, 'SELECT * FROM "alert"')}
                >= {"firing", "acknowledged", "resolved"}
            ),
            timeout_s=20,
            what="alert events in InfluxDB",
        )
    finally:
        rig.close()


async def test_restart_while_firing_does_not_notify_again(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, mosquitto, influxd, influx_db, receiver, repeat_s=3600.0)
    try:
        await rig.start()
        await rig.emit(13.0, 13.1)
        await eventually(lambda: "firing" in receiver.states(), timeout_s=15, what="webhook firing")
        rig.agent.kill()  # no goodbye: the state on disk is all there is
        restarted = time.time_ns()
        await rig.start(after_ns=restarted)
        await asyncio.sleep(4)
        # Killed before its cursor reached the disk, the agent may post the same firing
        # again (at least once; receivers dedupe on the id): never a new one.
        firing = {str(p["id"]) for p in receiver.posts if p["state"] == "firing"}
        assert len(firing) == 1, receiver.posts
        state = alert_state(rig.collector, "L-WET")
        assert state is not None
        assert state["state"] == "firing"

        # The CLI lists it and acknowledges it through the broker.
        listed = cli("alerts", "list", "-c", str(rig.config))
        assert listed.returncode == 0
        assert "firing" in listed.stdout
        assert "wet_lot/L-WET" in listed.stdout
        refused = cli("alerts", "ack", "-c", str(rig.config), "no_such_rule", "L-WET")
        assert refused.returncode == 2
        assert "unknown rule" in refused.stderr
        acked = cli("alerts", "ack", "-c", str(rig.config), "wet_lot", "L-WET", "--by", "ana")
        assert acked.returncode == 0, acked.stderr
        await eventually(
            lambda: (alert_state(rig.collector, "L-WET") or {}).get("state") == "acknowledged",
            timeout_s=15,
            what="acknowledged by the CLI",
        )
        await eventually(
            lambda: "acknowledged" in receiver.states(), timeout_s=15, what="webhook ack"
        )
    finally:
        rig.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
