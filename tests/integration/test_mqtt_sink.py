"""MQTT sink against a real Mosquitto: PUBACKs, retained statuses, Last Will, reconnect."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Stamper, decode_reading, encode_reading
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from tests.services.mosquitto import MosquittoServer
from tests.services.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def make_sink(port: int, prefix: str, health: Health) -> MqttSink:
    return MqttSink(
        host="127.0.0.1",
        port=port,
        prefix=prefix,
        site="s1",
        health=health,
        client_id=f"agent-{prefix}",
        publish_timeout_s=3.0,
        backoff=Backoff(initial_s=0.1, maximum_s=0.5),
    )


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.connection_loop())
    try:
        yield task
    finally:
        await sink.close()
        async with asyncio.timeout(10):
            await task


async def collect(port: int, topic: str, n: int, timeout_s: float = 10.0) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout_s):
            async for msg in client.messages:
                got.append(msg)
                if len(got) >= n:
                    break
    return got


def records(n: int) -> list[Record]:
    stamper = Stamper()
    out = []
    for i in range(n):
        r = stamper.stamp(
            device="umid-1",
            measurement="moisture",
            fields={"moisture_pct": 11.0 + i / 10},
            tags={"site": "s1", "device": "umid-1"},
        )
        out.append(Record(id=i + 1, payload=encode_reading(r), reading=r))
    return out


async def test_publishes_payload_bytes_and_statuses(
    mosquitto: MosquittoServer, mqtt_prefix: str
) -> None:
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    sink = make_sink(mosquitto.port, mqtt_prefix, health)
    recs = records(5)
    async with running(sink):
        listener = asyncio.create_task(collect(mosquitto.port, f"{mqtt_prefix}/s1/+/reading", 5))
        await asyncio.sleep(0.3)
        assert await sink.deliver(recs) == []
        got = await listener
        health.set_device_state("umid-1", DeviceState.ONLINE)
        await asyncio.sleep(0.3)
        status = await collect(mosquitto.port, f"{mqtt_prefix}/s1/umid-1/status", 1)
        agent = await collect(mosquitto.port, f"{mqtt_prefix}/s1/agent/status", 1)
    assert [bytes(m.payload) for m in got] == [r.payload for r in recs]
    assert all(m.qos == 1 for m in got)
    assert json.loads(bytes(status[0].payload))["state"] == "online"
    assert status[0].retain
    assert bytes(agent[0].payload) == b"online"
    # After a clean close the retained agent status says offline.
    final = await collect(mosquitto.port, f"{mqtt_prefix}/s1/agent/status", 1)
    assert bytes(final[0].payload) == b"offline"


async def test_unreachable_broker_is_unavailable_not_lost() -> None:
    health = Health()
    sink = make_sink(free_port(), "p", health)
    async with running(sink):
        with pytest.raises(SinkUnavailable):
            await sink.deliver(records(1))
    assert health.sinks["mqtt"].connected is False


async def test_reconnects_after_broker_restart_and_delivers_backlog(
    mosquitto_factory: object, mqtt_prefix: str, tmp_path: Path
) -> None:
    assert callable(mosquitto_factory)
    broker: MosquittoServer = mosquitto_factory()
    health = Health()
    sink = make_sink(broker.port, mqtt_prefix, health)
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["mqtt"]) as ob, running(sink):
        deliver = asyncio.create_task(
            deliver_loop(ob, sink, backoff=Backoff(initial_s=0.1, maximum_s=0.5))
        )
        batch = [
            stamper.stamp(device="d", measurement="moisture", fields={"moisture_pct": 1.0}, tags={})
            for _ in range(10)
        ]
        await ob.accept(batch)
        async with asyncio.timeout(10):
            while ob.backlog("mqtt"):
                await asyncio.sleep(0.05)
        broker.stop()
        await ob.accept(
            [
                stamper.stamp(
                    device="d", measurement="moisture", fields={"moisture_pct": 2.0}, tags={}
                )
                for _ in range(10)
            ]
        )
        await asyncio.sleep(1.0)
        assert ob.backlog("mqtt") == 10  # kept, not lost
        listener_ready = asyncio.Event()

        async def listen() -> list[aiomqtt.Message]:
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.subscribe(f"{mqtt_prefix}/s1/d/reading", qos=1)
                listener_ready.set()
                got = []
                async with asyncio.timeout(20):
                    async for msg in client.messages:
                        got.append(msg)
                        if len(got) >= 10:
                            break
                return got

        # Hold the agent off until our subscriber is in, by restarting first.
        broker.start()
        listener = asyncio.create_task(listen())
        got = await listener
        deliver.cancel()
    seqs = sorted(decode_reading(bytes(m.payload)).seq for m in got)
    assert seqs[-1] == 20
    assert set(range(11, 21)) <= set(seqs)


async def test_last_will_on_sigkill(mosquitto: MosquittoServer, mqtt_prefix: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from coffee_telemetry.agent.health import Health
        from coffee_telemetry.agent.sinks.mqtt import MqttSink
        async def main():
            sink = MqttSink(host="127.0.0.1", port={mosquitto.port}, prefix="{mqtt_prefix}",
                            site="s1", health=Health(), keepalive_s=5)
            task = asyncio.create_task(sink.connection_loop())
            await asyncio.wait_for(sink._gate.up.wait(), 10)
            print("connected", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        online = await collect(mosquitto.port, f"{mqtt_prefix}/s1/agent/status", 1)
        assert bytes(online[0].payload) == b"online"
        proc.kill()
        proc.wait()
        got = await collect(mosquitto.port, f"{mqtt_prefix}/s1/agent/status", 1, timeout_s=15)
        deadline = asyncio.get_running_loop().time() + 15
        while bytes(got[0].payload) != b"offline":
            assert asyncio.get_running_loop().time() < deadline, "Last Will not delivered"
            await asyncio.sleep(0.5)
            got = await collect(mosquitto.port, f"{mqtt_prefix}/s1/agent/status", 1)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
async def test_delivery_resumes_within_seconds_of_a_long_broker_outage(
    mosquitto_factory: object, mqtt_prefix: str, tmp_path: Path
) -> None:
    # The sink and the delivery loop at their defaults: the reconnect back-off is capped
    # at reconnect_max_s (2 s) and the delivery loop wakes when the connection is back,
    # so a 20 s outage costs 20 s plus about 2 s, not a back-off grown to tens of seconds.
    assert callable(mosquitto_factory)
    broker: MosquittoServer = mosquitto_factory()
    sink = MqttSink(
        host="127.0.0.1", port=broker.port, prefix=mqtt_prefix, site="s1", health=Health()
    )
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["mqtt"]) as ob, running(sink):
        deliver = asyncio.create_task(deliver_loop(ob, sink))
        broker.stop()
        await ob.accept(
            [
                stamper.stamp(device="d", measurement="moisture", fields={"m": 1.0}, tags={})
                for _ in range(5)
            ]
        )
        await asyncio.sleep(20.0)
        assert ob.backlog("mqtt") == 5
        broker.start()
        restarted = asyncio.get_running_loop().time()
        async with asyncio.timeout(30):
            while ob.backlog("mqtt"):
                await asyncio.sleep(0.05)
        recovered_s = asyncio.get_running_loop().time() - restarted
        deliver.cancel()
    # Before the cap and the wake-up this took 11 s or more (reconnects at 1, 3, 7, 15,
    # 31 s into the outage); the bound leaves room for a loaded machine.
    assert recovered_s < 6.0, f"delivery resumed {recovered_s:.1f} s after the broker"


async def test_retained_status_counters_follow_readings_without_a_state_change(
    mosquitto: MosquittoServer, mqtt_prefix: str
) -> None:
    health = Health()
    entry = health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    health.set_device_state("umid-1", DeviceState.ONLINE)
    sink = MqttSink(
        host="127.0.0.1",
        port=mosquitto.port,
        prefix=mqtt_prefix,
        site="s1",
        health=health,
        status_refresh_s=0.2,
    )
    topic = f"{mqtt_prefix}/s1/umid-1/status"
    async with running(sink):
        await asyncio.sleep(0.5)
        entry.frames_ok, entry.readings = 7, 7  # readings came in; the state stayed online
        await asyncio.sleep(0.6)
        [status] = await collect(mosquitto.port, topic, 1)  # the retained document
    doc = json.loads(bytes(status.payload))
    assert (doc["state"], doc["frames_ok"], doc["readings"]) == ("online", 7, 7)


async def test_a_full_batch_in_flight_logs_no_pending_publish_warnings(
    mosquitto: MosquittoServer, mqtt_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(mosquitto.port, mqtt_prefix, Health())
    async with running(sink):
        await asyncio.sleep(0.3)
        with caplog.at_level("DEBUG"):
            for start in range(0, 300, 100):
                assert await sink.deliver(records(300)[start : start + 100]) == []
    noisy = [r for r in caplog.records if "pending publish" in r.getMessage()]
    assert noisy == []
