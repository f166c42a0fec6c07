"""Hostile commands against the real agent: poison retained commands, hostile API paths.

Before the command boundary, each of these ended the agent (exit 1), and a
retained one ended it again at every start, while the meters' tickets were lost
at the port. Here the agent stays up, readings keep flowing, and none is lost
across a restart with the poison still retained on the broker.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    write_site_config,
)
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

TOKEN = "t0k3n-" + "9f8e7d6c5b4a3928" * 3  # at least 128 bits: check-config refuses less

#: Under the 1 KiB limit, each of these once raised out of the MQTT loop.
POISON = {
    "cmd/lot/recepcao": b"[" * 1000,
    "cmd/ack/wet_lot/L-1": b'{"by": ' + b"{" * 900,
    "cmd/ack/wet_lot/bad%zzescape": b"{}",
    "cmd/lot/recepcao/x/y/z": b"{}",
    "cmd/unknown": b"\xff\xfe\x00garbage",
    "cmd/lot/recepcao\u2028": b'{"lot": "L-1"}',
}


def publish_all(port: int, messages: dict[str, bytes], *, retain: bool) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"evil-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages.items():
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


async def test_poison_commands_and_hostile_api_paths_never_stop_the_agent(
    mosquitto: MosquittoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    base = f"{prefix}/ourofino"
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", port.path, "recepcao")],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=None,
    )
    text = config.read_text().replace("[api]\n", '[api]\ntoken_env = "COFFEE_TEST_TOKEN"\n')
    config.write_text(text)
    match = re.search(r"\[api\]\n(?:.*\n)*?port = (\d+)", text)
    assert match is not None
    api = f"http://127.0.0.1:{match.group(1)}"
    monkeypatch.setenv("COFFEE_TEST_TOKEN", TOKEN)

    # The poison is on the broker, retained, before the agent ever starts.
    publish_all(mosquitto.port, {f"{base}/{t}": p for t, p in POISON.items()}, retain=True)
    collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
    collector.start()
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    sim = TicketMeterSim(port, lot=None)
    sent = 0
    try:

        def online() -> bool:
            status = collector.last_status("umid-1")
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(online, timeout_s=30, what="umid-1 online", context=agent.log_tail)
        for value in (11.0, 11.5):
            assert await sim.emit(moisture_pct=value) is not None
            sent += 1
        await eventually(
            lambda: len(collector.of("umid-1")) == sent,
            timeout_s=20,
            what="readings with poison retained",
            context=agent.log_tail,
        )
        assert agent.alive, agent.log_tail()
        assert "Ignored a retained command" in agent.log_tail(100_000)

        # The same poison, not retained: refused with a reply each, agent still up.
        publish_all(mosquitto.port, {f"{base}/{t}": p for t, p in POISON.items()}, retain=False)
        await eventually(
            lambda: len(collector.statuses.get("reply", [])) >= 3,
            timeout_s=15,
            what="refusal replies",
            context=agent.log_tail,
        )
        replies = [json.loads(p) for _, p in collector.statuses["reply"]]
        assert all(r["ok"] is False for r in replies)
        assert any("nests deeper" in r["error"] for r in replies)

        # Hostile API paths (percent-encoded wildcards, NUL, slashes, bad lot codes).
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            for path in (
                "/api/alerts/wet_lot/a%2B%23b/ack",
                "/api/alerts/wet_lot/a%00b/ack",
                "/api/alerts/wet_lot/%2F%2F%2F/ack",
                "/api/alerts/wet_lot/" + "%E2%80%A8" * 3 + "/ack",
                "/api/lots/rec%2Bepcao",
                "/api/hullers/%23/services",
            ):
                async with session.post(
                    api + path, data=b'{"by": "x"}', headers=auth, skip_auto_headers=["Origin"]
                ) as r:
                    assert r.status in (400, 404), (path, r.status, await r.text())
            async with session.post(
                api + "/api/lots/recepcao", data=b"[" * 1000, headers=auth
            ) as r:
                assert r.status == 400
                assert "nests deeper" in (await r.json())["error"]
            async with session.get(api + "/api/health") as r:
                health = await r.json()
        counters = health["counters"]["commands"]
        assert counters["refused"] >= 6
        assert counters["failed"] == 0
        assert counters["ignored_retained"] == len(POISON)
        assert agent.alive, agent.log_tail()

        # A restart with the poison still retained: up again, and nothing lost.
        assert agent.stop() == 0
        agent.start()
        await eventually(
            lambda: "Connected to MQTT broker" in agent.log_tail(100_000).split("Stopped;")[-1],
            timeout_s=30,
            what="agent reconnected after restart",
            context=agent.log_tail,
        )
        for value in (12.0, 12.5, 13.0):
            assert await sim.emit(moisture_pct=value) is not None
            sent += 1
        await eventually(
            lambda: len(collector.of("umid-1")) == sent,
            timeout_s=30,
            what="readings after restart",
            context=agent.log_tail,
        )
        assert [d["seq"] for d in collector.of("umid-1")] == list(range(1, sent + 1))
        assert agent.alive, agent.log_tail()
    finally:
        agent.stop()
        collector.stop()
        publish_all(mosquitto.port, {f"{base}/{t}": b"" for t in POISON}, retain=True)
        port.close()
        os.environ.pop("COFFEE_TEST_TOKEN", None)
