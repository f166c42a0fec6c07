"""The MQTT sink moved to another broker: offline on the old one, everything on the new one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt

from coffee_telemetry.agent.commands import Outgoing
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.reload import Reloader, SinkReload
from coffee_telemetry.agent.sinks.configured import lane_parts, make_mqtt
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from tests.agent.test_reload_sinks import fleet_without_devices, produce, rig, site_text, until
from tests.services.mosquitto import MosquittoServer


async def retained(port: int, topic: str) -> dict[str, bytes]:
    """The retained messages under ``topic`` on the broker at ``port``."""
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    got[str(message.topic)] = bytes(message.payload)
        except TimeoutError:
            pass
    return got


async def until_async(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.05)


async def test_reconnect_with_moves_status_states_and_will_to_the_new_broker(
    mosquitto_factory: Callable[[], MosquittoServer], mqtt_prefix: str
) -> None:
    a, b = mosquitto_factory(), mosquitto_factory()
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    sink = MqttSink(host="127.0.0.1", port=a.port, prefix=mqtt_prefix, site="s1", health=health)
    sink.set_state(Outgoing("lots/recepcao", b'{"lot":"L-1"}', retain=True))
    loop = asyncio.create_task(sink.connection_loop())
    base = f"{mqtt_prefix}/s1"
    try:
        record = Record(id=1, payload=b"{}", device="umid-1", kind="reading")
        assert await sink.deliver([record]) == []
        on_a = await retained(a.port, f"{base}/#")
        assert on_a[f"{base}/agent/status"] == b"online"
        assert on_a[f"{base}/lots/recepcao"] == b'{"lot":"L-1"}'

        sink.reconnect_with(
            host="127.0.0.1", port=b.port, prefix=mqtt_prefix, site="s1", batch_size=7
        )
        assert sink.batch_size == 7

        async def moved() -> bool:
            got = await retained(b.port, f"{base}/#")
            return got.get(f"{base}/agent/status") == b"online"

        await until_async(moved)
        second = Record(id=2, payload=b"{}", device="umid-1", kind="reading")
        assert await sink.deliver([second]) == []
        on_a = await retained(a.port, f"{base}/#")
        on_b = await retained(b.port, f"{base}/#")
        # The old broker was told the agent left; the new one has what the agent keeps.
        assert on_a[f"{base}/agent/status"] == b"offline"
        assert on_b[f"{base}/lots/recepcao"] == b'{"lot":"L-1"}'
        assert b'"state"' in on_b[f"{base}/umid-1/status"]
    finally:
        await sink.close()
        await asyncio.wait_for(loop, 10)
    # Closed on B: offline there too (and the Last Will would say the same after a crash).
    assert (await retained(b.port, f"{base}/agent/status"))[f"{base}/agent/status"] == b"offline"


async def test_reloader_moves_then_removes_mqtt_and_counts_every_record(
    tmp_path: Path, mosquitto_factory: Callable[[], MosquittoServer], mqtt_prefix: str
) -> None:
    a, b = mosquitto_factory(), mosquitto_factory()
    path = tmp_path / "site.toml"

    def write(port: int, *, enabled: bool = True) -> None:
        text = site_text(tmp_path, mqtt=enabled, broker=port).replace(
            "[influx]\nenabled = true", "[influx]\nenabled = false"
        )
        path.write_text(text.replace("[mqtt]\n", f'[mqtt]\nprefix = "{mqtt_prefix}"\n'))

    write(a.port)
    cfg = load_config(path)
    got: dict[int, list[int]] = {a.port: [], b.port: []}

    async def collect(port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe(f"{mqtt_prefix}/s1/d/reading", qos=1)
            ready.set()
            async for message in client.messages:
                got[port].append(json.loads(bytes(message.payload))["seq"])

    readies = [asyncio.Event(), asyncio.Event()]
    collectors = [
        asyncio.create_task(collect(p, e)) for p, e in zip((a.port, b.port), readies, strict=True)
    ]
    for ready in readies:
        await asyncio.wait_for(ready.wait(), 10)
    health = Health()
    try:
        async with rig(tmp_path, ["mqtt"]) as r:
            mqtt = make_mqtt(cfg, health)
            loops, close = lane_parts(mqtt, AsyncExitStack())
            await r.lanes.start(mqtt, loops=loops, close=close)
            reloader = Reloader(
                path=path,
                running=cfg,
                fleet=fleet_without_devices(health),
                sinks=SinkReload(lanes=r.lanes, health=health, mqtt=mqtt),
            )
            producer = asyncio.create_task(produce(r, 60))
            await asyncio.sleep(0.05)
            write(b.port)
            outcome = await reloader.reload()
            assert outcome.changes == ("sink mqtt changed (mqtt.port)",)
            await producer
            await until(lambda: len(got[a.port]) + len(got[b.port]) >= 60, timeout_s=15)
            old, new = sorted(got[a.port]), sorted(got[b.port])
            assert sorted(old + new) == list(range(1, 61))
            assert new == list(range(len(old) + 1, 61))
            # Removed: offline on B, its cursor kept, the records no longer held for it.
            write(b.port, enabled=False)
            outcome = await reloader.reload()
            assert outcome.changes == ("sink mqtt removed",)
            assert list(r.outbox.sinks) == []
            status = await retained(b.port, f"{mqtt_prefix}/s1/agent/status")
            assert status[f"{mqtt_prefix}/s1/agent/status"] == b"offline"
            # Enabling it again needs a restart (nothing to move any more).
            write(b.port)
            outcome = await reloader.reload()
            assert outcome.changes == ()
            assert outcome.restart == ("mqtt.enabled",)
    finally:
        for task in collectors:
            task.cancel()
        await asyncio.gather(*collectors, return_exceptions=True)
