"""Active lots end to end: an MQTT command sets a station's lot on the real agent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
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

pytestmark = pytest.mark.integration


def publish(port: int, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


async def test_lot_command_tags_next_readings(
    mosquitto: MosquittoServer, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", port.path, "recepcao")],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=influxd.url,
        database=influx_db,
    )
    collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
    collector.start()
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    base = f"{prefix}/ourofino"
    try:

        def online() -> bool:
            status = collector.last_status("umid-1")
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(online, timeout_s=20, what="umid-1 online", context=agent.log_tail)
        sim = TicketMeterSim(port, lot=None)
        first = await sim.emit(moisture_pct=11.0)
        assert first is not None
        await eventually(lambda: len(collector.of("umid-1")) == 1, timeout_s=20, what="reading 1")
        assert "lot" not in collector.of("umid-1")[0]["tags"]  # type: ignore[operator]

        publish(mosquitto.port, f"{base}/cmd/lot/recepcao", b'{"lot": "L-0042", "by": "maria"}')
        await eventually(
            lambda: bool(collector.statuses.get("reply")), timeout_s=15, what="command reply"
        )
        reply = json.loads(collector.statuses["reply"][-1][1])
        assert reply == {"ok": True, "station": "recepcao", "lot": "L-0042"}
        await eventually(
            lambda: bool(collector.statuses.get("recepcao")), timeout_s=15, what="lot state"
        )
        assert json.loads(collector.statuses["recepcao"][-1][1])["lot"] == "L-0042"

        second = await sim.emit(moisture_pct=13.4)
        assert second is not None
        await eventually(lambda: len(collector.of("umid-1")) == 2, timeout_s=20, what="reading 2")
        tags = collector.of("umid-1")[1]["tags"]
        assert isinstance(tags, dict)
        assert tags["lot"] == "L-0042"

        # A hostile lot code is refused with a reason; the active lot stays.
        publish(mosquitto.port, f"{base}/cmd/lot/recepcao", b'{"lot": "L 1,x=2\\nfoo"}')
        await eventually(
            lambda: len(collector.statuses.get("reply", [])) >= 2, timeout_s=15, what="refusal"
        )
        refusal = json.loads(collector.statuses["reply"][-1][1])
        assert refusal["ok"] is False
        assert "lot code" in refusal["error"]

        # The CLI changes it while the agent runs; the agent publishes the change.
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "coffee_telemetry.agent.cli",
                "lot",
                "set",
                "-c",
                str(config),
                "recepcao",
                "L-0043",
                "--by",
                "joao",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        await eventually(
            lambda: any(
                doc["measurement"] == "lot_assignment" and doc["fields"]["lot_code"] == "L-0043"  # type: ignore[index]
                for doc in collector.of("agent")
            ),
            timeout_s=15,
            what="lot_assignment event from the CLI change",
        )
        time.sleep(0.2)
        third = await sim.emit(moisture_pct=12.0)
        assert third is not None
        await eventually(lambda: len(collector.of("umid-1")) == 3, timeout_s=20, what="reading 3")
        assert collector.of("umid-1")[2]["tags"]["lot"] == "L-0043"  # type: ignore[index]
        await eventually(
            lambda: len(influxd.query(influx_db, 'SELECT * FROM "lot_assignment"')) == 2,
            timeout_s=20,
            what="lot assignments in InfluxDB",
        )
    finally:
        agent.stop()
        collector.stop()
        port.close()
