"""Ready to hull, end to end: the real agent, a real broker, a meter on a pty, a phone.

The composition root (``run_agent``) runs in process with a real Mosquitto, a ticket
moisture meter simulated on a pty at station ``recepcao``, the JSON API on a free
port and one ntfy contact (an ntfy server of the test's own, on 127.0.0.1). The lots'
rest is measured on an injected wall clock, so eight days pass in an instant:

1. an operator says over MQTT that lot ``L-0042`` left the patio (``cmd/lotdried``);
   a payload with markup is refused with a reason and writes nothing;
2. the meter prints three tickets of the lot inside the hulling window: the API shows
   the lot resting, the rest's end eight days on, and no notice goes out;
3. the clock moves eight days: the API and the Lotes search show it ready to hull,
   one notice is queued and reaches the phone, and no second one follows;
4. its intake receipt is set over MQTT and read back from the API.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from aiohttp import web

from coffee_telemetry.agent.app import run_agent
from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.readings import Reading, decode_reading
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, serve_rtu_bus
from tests.integration.harness import eventually
from tests.services.mosquitto import MosquittoServer
from tests.services.net import free_port

pytestmark = pytest.mark.integration

NS = 1_000_000_000
DAY_NS = 86_400 * NS
LOT = "L-0042"


class Phone:
    """An ntfy server that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.messages.append(json.loads(await request.read()))
        return web.json_response({"id": str(len(self.messages))})

    async def __aenter__(self) -> Phone:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def _get_sync(base: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        doc = json.loads(response.read())
    assert isinstance(doc, dict)
    return doc


async def _get(base: str, path: str) -> dict[str, object]:
    """A GET off the event loop (the agent under test runs on it)."""
    return await asyncio.to_thread(_get_sync, base, path)


async def _ok(base: str, path: str) -> bool:
    try:
        await _get(base, path)
    except OSError:
        return False
    return True


@pytest.fixture
async def meter(tmp_path: Path) -> AsyncIterator[PtyPort]:
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    yield port
    port.close()


async def test_ready_to_hull_end_to_end(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_prefix: str, meter: PtyPort
) -> None:
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    clock = [0]
    async with Phone() as phone:
        cfg = parse_config(
            {
                "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
                "agent": {
                    "data_dir": str(tmp_path / "data"),
                    "status_interval_s": 3600,
                    "time_sources": ["system"],
                },
                "mqtt": {"enabled": True, "port": mosquitto.port, "prefix": mqtt_prefix},
                "influx": {"enabled": False},
                "api": {"port": api_port},
                "devices": [
                    {
                        "id": "umid-1",
                        "driver": "moisture.ticket",
                        "port": str(meter.path),
                        "station": "recepcao",
                    }
                ],
                "lots": {"ready_check_s": 0.2},
                "notify": {
                    "ntfy": {"url": f"http://127.0.0.1:{phone.port}"},
                    "contacts": [{"name": "Ana", "channels": {"ntfy": "armazem-ana"}}],
                    "routes": [
                        {
                            "name": "beneficio",
                            "rules": ["ready_to_hull"],
                            "severities": ["info"],
                            "contacts": ["Ana"],
                        }
                    ],
                },
            }
        )
        clock[0] = time.time_ns()
        stop = asyncio.Event()
        agent = asyncio.create_task(run_agent(cfg, stop=stop, lots_clock_ns=lambda: clock[0]))
        try:
            await eventually(lambda: _ok(base, "/api/health"), timeout_s=20, what="the API")
            topic = f"{mqtt_prefix}/ourofino/cmd"
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                await client.subscribe(f"{topic}/+/+/reply")
                # 1. Left the patio, said over MQTT; a payload with markup is refused.
                await client.publish(f"{topic}/lotdried/L-BAD", b'{"dryer": "<b>sol</b>"}')
                await client.publish(
                    f"{topic}/lotdried/{LOT}", json.dumps({"dryer": "patio", "by": "ana"})
                )
                replies: dict[str, dict[str, object]] = {}
                async with asyncio.timeout(10):
                    async for message in client.messages:
                        replies[str(message.topic)] = json.loads(bytes(message.payload))
                        if len(replies) == 2:
                            break
                bad = replies[f"{topic}/lotdried/L-BAD/reply"]
                assert bad == {"ok": False, "error": "dryer must be one of patio, mechanical"}
                good = replies[f"{topic}/lotdried/{LOT}/reply"]
                assert good["ok"] is True
                assert good["dryer"] == "patio"
            assert await asyncio.to_thread(_lot_status, base, "L-BAD") == 404

            # 2. Three tickets inside the window: resting, nothing sent.
            sim = TicketMeterSim(meter, lot=LOT)
            for value in (11.0, 11.1, 10.9):
                assert await sim.emit(moisture_pct=value) is not None
                await asyncio.sleep(0.05)

            async def readings() -> int:
                summary = (await _get(base, f"/api/lots/{LOT}"))["summary"]
                assert isinstance(summary, dict)
                return int(summary["readings"])

            async def three() -> bool:
                return await readings() == 3

            await eventually(three, timeout_s=15, what="three readings")
            doc = await _get(base, f"/api/lots/{LOT}")
            readiness = doc["readiness"]
            assert isinstance(readiness, dict)
            assert readiness["state"] == "resting"
            assert readiness["rest_ends_ns"] == good["dried_ns"] + 8 * DAY_NS  # type: ignore[operator]
            assert readiness["latest_pct"] == [10.9, 11.1, 11.0]
            await asyncio.sleep(0.6)  # three checks
            assert phone.messages == []

            # 3. Eight days later: ready, announced once.
            clock[0] += 8 * DAY_NS + 60 * NS

            async def ready() -> bool:
                r = (await _get(base, f"/api/lots/{LOT}"))["readiness"]
                assert isinstance(r, dict)
                return r["state"] == "ready" and r["announced_ns"] is not None

            await eventually(ready, timeout_s=10, what="ready to hull")
            await eventually(lambda: len(phone.messages) == 1, timeout_s=10, what="the notice")
            found = (await _get(base, f"/api/lots?q={LOT}"))["lots"]
            assert isinstance(found, list)
            assert found[0]["readiness"]["state"] == "ready"
            assert "Pronto para beneficiar" in found[0]["readiness"]["text"]["pt-BR"]
            sent = phone.messages[0]
            assert sent["topic"] == "armazem-ana"
            assert LOT in str(sent["message"])
            assert "Pronto para beneficiar" in str(sent["message"])
            events = (await _get(base, f"/api/lots/{LOT}"))["events"]
            assert isinstance(events, list)
            assert [e["kind"] for e in events].count("ready") == 1
            clock[0] += DAY_NS
            await asyncio.sleep(1.0)
            assert len(phone.messages) == 1
            assert _notices(tmp_path / "data" / "notify.sqlite3") == 1

            # 4. The intake receipt, over MQTT.
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                await client.subscribe(f"{topic}/lotreceipt/+/reply")
                await client.publish(
                    f"{topic}/lotreceipt/{LOT}",
                    json.dumps({"member": "M-77", "sacks": 40, "stack": "Pilha 3", "by": "ana"}),
                )
                async with asyncio.timeout(10):
                    async for message in client.messages:
                        reply = json.loads(bytes(message.payload))
                        break
            assert reply["ok"] is True
            receipt = (await _get(base, f"/api/lots/{LOT}"))["receipt"]
            assert isinstance(receipt, dict)
            assert (receipt["member"], receipt["sacks"], receipt["stack"]) == (
                "M-77",
                40,
                "Pilha 3",
            )
        finally:
            stop.set()
            await asyncio.wait_for(agent, 20)


def _lot_status(base: str, code: str) -> int:
    try:
        urllib.request.urlopen(f"{base}/api/lots/{code}", timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def _notices(path: Path) -> int:
    """Messages about ``ready_to_hull`` in the notify queue, waiting or done."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        waiting = conn.execute(
            "SELECT COUNT(*) FROM queue WHERE doc LIKE '%ready_to_hull%'"
        ).fetchone()[0]
        done = conn.execute(
            "SELECT COUNT(*) FROM done WHERE doc LIKE '%ready_to_hull%'"
        ).fetchone()[0]
    finally:
        conn.close()
    return int(waiting) + int(done)


async def test_bags_hulled_while_the_lot_is_active_are_its_own(
    tmp_path: Path, mosquitto: MosquittoServer, mqtt_prefix: str
) -> None:
    """A huller on a real RS-485 pty: the bags it counts while a lot is set on its station
    are credited to that lot's record, exactly, and none before it was set or after it was
    cleared. The expected count is replayed from what the agent published over MQTT
    (its huller readings and lot assignments, in the outbox's order)."""
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    seen: list[Reading] = []
    site = f"{mqtt_prefix}/ourofino"
    with open_pty_port(link=tmp_path / "ttyRS485") as pty:
        cfg = parse_config(
            {
                "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
                "agent": {
                    "data_dir": str(tmp_path / "data"),
                    "status_interval_s": 3600,
                    "time_sources": ["system"],
                },
                "mqtt": {"enabled": True, "port": mosquitto.port, "prefix": mqtt_prefix},
                "influx": {"enabled": False},
                "api": {"port": api_port},
                "buses": [
                    {
                        "id": "rs485",
                        "port": pty.path,
                        "serial": {"baudrate": 9600, "stopbits": 2},
                        "timeout_s": 0.3,
                        "min_gap_s": 0.01,
                    }
                ],
                "hullers": [
                    {
                        "id": "desc-1",
                        "bus": "rs485",
                        "bag_counter": 1,
                        "poll_interval_s": 0.2,
                        "station": "casa-maquinas",
                    }
                ],
            }
        )
        counter = CounterUnitSim(1, pv=100, rate_per_s=10)
        stop = asyncio.Event()
        async with (
            serve_rtu_bus(pty, [counter]),
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client,
        ):
            await client.subscribe(f"{site}/desc-1/reading", qos=1)
            await client.subscribe(f"{site}/agent/event", qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    seen.append(decode_reading(bytes(message.payload)))

            listener = asyncio.create_task(listen())
            agent = asyncio.create_task(run_agent(cfg, stop=stop))

            def hullers() -> int:
                return sum(1 for r in seen if r.measurement == "huller")

            def assignments() -> int:
                return sum(1 for r in seen if r.measurement == "lot_assignment")

            try:
                await eventually(lambda: hullers() >= 3, timeout_s=20, what="huller readings")
                topic = f"{site}/cmd/lot/casa-maquinas"
                await client.publish(topic, json.dumps({"lot": LOT, "by": "ana"}), qos=1)
                await eventually(lambda: assignments() == 1, timeout_s=10, what="the lot set")
                at_set = hullers()
                await eventually(lambda: hullers() >= at_set + 8, timeout_s=15, what="bags")
                await client.publish(topic, json.dumps({"lot": None, "by": "ana"}), qos=1)
                await eventually(lambda: assignments() == 2, timeout_s=10, what="the lot cleared")
                at_clear = hullers()
                await eventually(
                    lambda: hullers() >= at_clear + 5, timeout_s=15, what="bags after it"
                )
                expected = _replay(seen, LOT)
                assert expected > 0

                async def credited() -> bool:
                    doc = await _get(base, f"/api/lots/{LOT}")
                    return doc.get("hulled_bags") == expected

                await eventually(credited, timeout_s=10, what=f"{expected} bags in the record")
                # The counter went on before and after: more bags than the lot's.
                totals = [float(r.fields["bags_total"]) for r in seen if r.measurement == "huller"]
                assert totals[-1] - totals[0] > expected
                doc = await _get(base, f"/api/lots/{LOT}")
                assert "desc-1" in doc["summary"]["devices"]  # type: ignore[index]
            finally:
                stop.set()
                await asyncio.wait_for(agent, 20)
                listener.cancel()


def _replay(seen: list[Reading], lot: str) -> float:
    """Bags the huller counted while ``lot`` was set on its station, from the stream."""
    active: str | None = None
    previous: float | None = None
    bags = 0.0
    for r in seen:
        if r.measurement == "lot_assignment" and r.tags.get("station") == "casa-maquinas":
            active = r.tags.get("lot") if r.fields.get("action") == "set" else None
        elif r.measurement == "huller":
            total = float(r.fields["bags_total"])
            if previous is not None and active == lot and total > previous:
                bags += total - previous
            previous = total
    return bags
