"""The real agent under a flood of half-open web connections, with few file descriptors.

The agent runs with an open-file limit of 256, soft and hard, so it cannot raise it.
Hundreds of sockets from twenty loopback addresses connect to its web port and send
half a request line, more than the limit allows. Meanwhile a simulated meter on a pty
keeps printing tickets, some of them wet enough to fire an alert (the alert state is
written to ``alerts.json``: the agent must still be able to open files). Every reading
must reach MQTT and InfluxDB, the agent must stay alive, and once the hostile sockets
are gone the web server must answer again.

Before connection limits, the flood took every descriptor: the outbox could no longer
sync ("unable to open database file"), readings stopped reaching InfluxDB (a new HTTP
connection needs a descriptor too), and asyncio logged every failed accept, about a
million log lines in half a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from coffee_telemetry.simulators.moisture import SentReading, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    points_by_seq,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

#: The agent's open-file limit, soft and hard.
NOFILE = 256
#: Hostile sockets: more than the agent has descriptors.
HOSTILE = 400
#: They come from this many loopback addresses (so the total cap, not only the
#: per-address one, is what holds).
SOURCES = [f"127.0.1.{i}" for i in range(1, 21)]


@pytest.fixture
def meter_port(tmp_path: Path) -> Iterator[PtyPort]:
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    yield port
    port.close()


async def half_request(port: int, source: str) -> socket.socket:
    """A socket from ``source`` that connects and sends half a request line, then waits."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    # Refused, reset, or still waiting in the listen backlog: hold it all the same.
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(3):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\n")
    return sock


async def answers(url: str) -> bool:
    """Whether ``GET url`` answers 200 within two seconds."""
    return await get_json(url) is not None


async def get_json(url: str) -> object:
    """``GET url`` as JSON; ``None`` if the server does not answer within two seconds."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                return None
            return json.loads(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_a_flood_of_half_open_connections_does_not_stop_readings(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    meter_port: PtyPort,
    tmp_path: Path,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[
            DeviceSpec(
                "umid-1", "moisture.ticket", str(tmp_path / "dev" / "umid-1"), "recepcao", "cafe"
            )
        ],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=influxd.url,
        database=influx_db,
    )
    web_port = int(tomllib.loads(config.read_text())["api"]["port"])
    base = f"http://127.0.0.1:{web_port}"
    collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
    collector.start()
    agent = AgentProcess(config, tmp_path / "agent.log", nofile=NOFILE)
    hostile: list[socket.socket] = []

    def context() -> str:
        return f"agent log tail:\n{agent.log_tail()}"

    def wet_lot_fired() -> bool:
        states = [s for docs in collector.alert_states.values() for s in docs]
        return any(s.get("rule") == "wet_lot" and s.get("state") == "firing" for s in states)

    def influx_seqs() -> set[int]:
        rows = influxd.query(influx_db, 'SELECT * FROM "moisture"')
        return set(points_by_seq(rows, "umid-1"))

    try:
        agent.start()
        await eventually(
            lambda: answers(f"{base}/api/health"), timeout_s=20, what="web", context=context
        )
        sim = TicketMeterSim(meter_port, product="CAFE")
        sent: list[SentReading] = []

        async def emit(n: int, moisture_pct: float) -> None:
            for _ in range(n):
                got = await sim.emit(moisture_pct=moisture_pct, lot="L-0001")
                assert got is not None
                sent.append(got)
                await asyncio.sleep(0.05)

        await emit(3, 11.0)
        await eventually(
            lambda: collector.count() == 3, timeout_s=20, what="first readings", context=context
        )

        hostile = list(
            await asyncio.gather(
                *(half_request(web_port, SOURCES[i % len(SOURCES)]) for i in range(HOSTILE))
            )
        )
        # Wet readings: the wet-lot alert fires and its state is written to a file.
        await emit(4, 14.0)
        await emit(3, 11.5)
        await eventually(
            lambda: collector.count() == len(sent),
            timeout_s=30,
            what=f"{len(sent)} readings on MQTT during the flood (have {collector.count()})",
            context=context,
        )
        await eventually(
            lambda: influx_seqs() == set(range(1, len(sent) + 1)),
            timeout_s=30,
            what=f"{len(sent)} points in InfluxDB during the flood",
            context=context,
        )
        await eventually(
            wet_lot_fired,
            timeout_s=20,
            what="the wet-lot alert",
            context=context,
        )
        assert agent.alive, context()

        for sock in hostile:
            sock.close()
        hostile = []
        await eventually(
            lambda: answers(f"{base}/api/health"),
            timeout_s=20,
            what="/api/health after the flood",
            context=context,
        )
        stats = await get_json(f"{base}/api/web")
        assert isinstance(stats, dict), context()
        conns = stats["connections"]
        # Under 256 descriptors the cap is well below the flood: most sockets were refused.
        assert 0 < conns["max_connections"] < NOFILE // 2
        assert conns["refused_total_cap"] > HOSTILE // 2
        assert conns["open"] <= 1  # this request's, at most
        assert agent.alive, context()
        assert agent.stop() == 0, context()
    finally:
        for sock in hostile:
            sock.close()
        if agent.alive:
            agent.stop()
        collector.stop()
