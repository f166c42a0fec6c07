"""`coffee-telemetry demo`: zero setup, live readings visible to any MQTT client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from coffee_telemetry.agent.cli.demo import AMQTT_DEFAULTS
from tests.services.net import free_port, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_broker_defaults_match_broker_config() -> None:
    documented = yaml.safe_load((ROOT / "broker_config" / "amqtt.yaml").read_text())
    assert documented == AMQTT_DEFAULTS


def test_demo_serves_readings_over_mqtt(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coffee_telemetry.agent.cli",
            "demo",
            "--port",
            str(port),
            "--interval",
            "1",
            "--duration",
            "12",
            "--data-dir",
            str(tmp_path),
            "--api-port",
            str(free_port()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    got: dict[str, list[dict[str, object]]] = {}
    statuses: dict[str, bytes] = {}

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if parts[-1] == "reading":
            got.setdefault(parts[-2], []).append(json.loads(msg.payload))
        elif parts[-1] == "status":
            statuses[parts[-2]] = bytes(msg.payload)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-watcher")
    client.on_message = on_message
    try:
        assert wait_for_port(port, timeout_s=20), "the embedded broker did not start"
        client.connect("127.0.0.1", port)
        client.subscribe("coffee/#", qos=1)
        client.loop_start()
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and len(got) < 5:
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=40)
    finally:
        client.loop_stop()
        client.disconnect()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "embedded amqtt" in out
    assert f"mosquitto_sub -h 127.0.0.1 -p {port}" in out
    expected = {"umid-recepcao", "umid-armazem", "umid-secador", "balanca-recepcao"}
    assert expected | {"descascador-1"} <= set(got), out
    first = got["umid-recepcao"][0]
    assert first["measurement"] == "moisture"
    assert isinstance(first["fields"], dict)
    assert 0 < float(first["fields"]["moisture_pct"]) < 60
    assert json.loads(statuses["umid-recepcao"])["state"] in ("online", "offline")
    huller = got["descascador-1"][-1]
    assert huller["measurement"] == "huller"
    assert isinstance(huller["fields"], dict)
    assert huller["fields"]["hours_total"] >= 95.0
    # The demo leaves a site file the maintenance commands can use.
    site = tmp_path / "site.toml"
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "coffee_telemetry.agent.cli",
            "maintenance",
            "status",
            "-c",
            str(site),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    status = json.loads(check.stdout)
    assert status["hullers"][0]["id"] == "descascador-1"
    # Every reading accepted is printed on the console too.
    assert "umid-recepcao" in out
    assert "moisture_pct=" in out
