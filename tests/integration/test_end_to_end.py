"""Simulated meters on ptys → the real agent process → real Mosquitto and InfluxDB.

Every test ends by comparing what the simulators wrote with what arrived:
count, values, tags and timestamps, on MQTT and in InfluxDB. The fault tests
stop the broker, stop the database, SIGKILL the agent and unplug a meter in
the middle of the stream; none may lose a reading the agent accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffee_telemetry.simulators.moisture import Faults, SentReading, TesmaMeterSim, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    outbox_last_id,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SITE = "ourofino"


@dataclass
class Rig:
    """Everything one end-to-end test runs."""

    tmp: Path
    agent: AgentProcess
    collector: MqttCollector
    influx: InfluxServer
    database: str
    data_dir: Path
    ports: dict[str, PtyPort]

    def influx_rows(self) -> list[dict[str, object]]:
        return self.influx.query(self.database, 'SELECT * FROM "moisture"')

    def context(self) -> str:
        return f"agent log tail:\n{self.agent.log_tail()}"


def pty_ports(tmp: Path, names: list[str]) -> dict[str, PtyPort]:
    ports = {name: PtyPort(link=tmp / "dev" / name) for name in names}
    (tmp / "dev").mkdir(exist_ok=True)
    for port in ports.values():
        port.open()
    return ports


_lots = itertools.count(1)


def next_lot() -> str:
    return f"L-{next(_lots):04d}"


@pytest.fixture
def make_rig(
    tmp_path: Path,
) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(
        *,
        broker: MosquittoServer,
        influx: InfluxServer,
        database: str,
        devices: list[DeviceSpec],
        port_names: list[str],
    ) -> Rig:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        ports = pty_ports(tmp_path, port_names)
        data_dir = tmp_path / "data"
        config = write_site_config(
            tmp_path / "site.toml",
            data_dir=data_dir,
            devices=devices,
            mqtt_port=broker.port,
            prefix=prefix,
            influx_url=influx.url,
            database=database,
            site=SITE,
        )
        collector = MqttCollector(port=broker.port, prefix=prefix, client_id=f"c-{prefix}")
        collector.start()
        agent = AgentProcess(config, tmp_path / "agent.log")
        rig = Rig(tmp_path, agent, collector, influx, database, data_dir, ports)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        if rig.agent.alive:
            rig.agent.stop()
        rig.collector.stop()
        for port in rig.ports.values():
            port.close()


def standard_devices(tmp: Path) -> list[DeviceSpec]:
    return [
        DeviceSpec(
            "umid-1", "moisture.ticket", str(tmp / "dev" / "umid-1"), "recepcao", "cafe-verde"
        ),
        DeviceSpec("umid-2", "moisture.ticket", str(tmp / "dev" / "umid-2"), "armazem"),
        DeviceSpec("umid-3", "moisture.tesma", str(tmp / "dev" / "umid-3"), "secador"),
    ]


async def wait_open(rig: Rig, device: str, timeout_s: float = 20.0, *, after_ns: int = 0) -> None:
    """Wait until the agent reports the device online (its port is open).

    ``after_ns`` ignores statuses received earlier: after a restart the retained
    status of the previous process still says online.
    """

    def online() -> bool:
        status = rig.collector.last_status(device, after_ns=after_ns)
        return isinstance(status, dict) and status.get("state") == "online"

    await eventually(online, timeout_s=timeout_s, what=f"{device} online", context=rig.context)


async def emit_tickets(
    sim: TicketMeterSim, n: int, *, lot: str | None = None, start: float = 10.0
) -> list[SentReading]:
    sent = []
    for i in range(n):
        got = await sim.emit(moisture_pct=round(start + (i % 40) / 10, 1), lot=lot)
        assert got is not None, "the simulator could not write a whole ticket"
        sent.append(got)
        await asyncio.sleep(0.02)
    return sent


async def all_delivered(rig: Rig, expected: dict[str, list[SentReading]], timeout_s: float) -> None:
    total = sum(len(v) for v in expected.values())
    await eventually(
        lambda: rig.collector.count() >= total,
        timeout_s=timeout_s,
        what=f"{total} readings on MQTT (have {rig.collector.count()})",
        context=rig.context,
    )
    await eventually(
        lambda: len(rig.influx_rows()) >= total,
        timeout_s=timeout_s,
        what=f"{total} points in InfluxDB",
        context=rig.context,
    )


def check_arrived(rig: Rig, device: str, sent: list[SentReading], station: str) -> None:
    """The device's readings on MQTT and in InfluxDB equal what was sent."""
    got = rig.collector.of(device)
    assert [doc["fields"]["moisture_pct"] for doc in got] == [s.moisture_pct for s in sent]  # type: ignore[index]
    assert [doc["seq"] for doc in got] == list(range(1, len(sent) + 1))
    for doc, s in zip(got, sent, strict=True):
        tags = doc["tags"]
        assert isinstance(tags, dict)
        assert tags["site"] == SITE
        assert tags["device"] == device
        assert tags["station"] == station
        if s.lot:
            assert tags["lot"] == s.lot
        ts = doc["ts"]
        assert isinstance(ts, int)
        # Stamped when the bytes arrived: after the write, and promptly.
        assert ts >= s.ts_ns - 50_000_000
        assert ts - s.ts_ns < 5_000_000_000
    rows = {int(str(r["seq"])): r for r in rig.influx_rows() if r["device"] == device}
    assert sorted(rows) == list(range(1, len(sent) + 1))
    for doc in got:
        row = rows[int(str(doc["seq"]))]
        fields = doc["fields"]
        assert isinstance(fields, dict)
        assert row["time"] == doc["ts"]
        assert row["moisture_pct"] == fields["moisture_pct"]
        assert row["station"] == station
        assert row["site"] == SITE


async def test_meters_to_mqtt_and_influx(
    make_rig: Callable[..., Rig],
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    tmp_path: Path,
) -> None:
    rig = make_rig(
        broker=mosquitto,
        influx=influxd,
        database=influx_db,
        devices=standard_devices(tmp_path),
        port_names=["umid-1", "umid-2", "umid-3"],
    )
    rig.agent.start()
    for name in ("umid-1", "umid-2", "umid-3"):
        await wait_open(rig, name)
    t1 = TicketMeterSim(rig.ports["umid-1"], product="CAFE")
    t2 = TicketMeterSim(rig.ports["umid-2"], product="CAFE")
    tesma = TesmaMeterSim(rig.ports["umid-3"], interval_s=0.1)
    lot1, lot2 = next_lot(), next_lot()
    sent1, sent2 = await asyncio.gather(
        emit_tickets(t1, 20, lot=lot1), emit_tickets(t2, 15, lot=lot2, start=11.0)
    )
    tesma_task = asyncio.create_task(tesma.run())
    for value in (11.2, 12.9, 10.4):
        tesma.set_value("CAFE", value)
        await asyncio.sleep(0.6)
    tesma_task.cancel()
    expected = {"umid-1": sent1, "umid-2": sent2, "umid-3": tesma.sent}
    await all_delivered(rig, expected, timeout_s=30)
    check_arrived(rig, "umid-1", sent1, "recepcao")
    check_arrived(rig, "umid-2", sent2, "armazem")
    assert [d["fields"]["moisture_pct"] for d in rig.collector.of("umid-3")] == [  # type: ignore[index]
        s.moisture_pct for s in tesma.sent
    ]
    # Tickets keep their audit text and device fields; product comes from the ticket.
    first = rig.collector.of("umid-1")[0]
    assert "Umidade" in str(first["audit"])
    assert first["tags"]["product"] == "CAFE"  # type: ignore[index]
    assert rig.agent.stop() == 0
    assert rig.collector.last_status("agent") == "offline"


@pytest.mark.slow
async def test_broker_outage_loses_nothing(
    make_rig: Callable[..., Rig],
    mosquitto_factory: Callable[[], MosquittoServer],
    influxd: InfluxServer,
    influx_db: str,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    rig = make_rig(
        broker=broker,
        influx=influxd,
        database=influx_db,
        devices=standard_devices(tmp_path)[:1],
        port_names=["umid-1"],
    )
    rig.agent.start()
    await wait_open(rig, "umid-1")
    sim = TicketMeterSim(rig.ports["umid-1"])
    sent = await emit_tickets(sim, 10, lot=next_lot())
    await eventually(lambda: rig.collector.count() == 10, timeout_s=20, what="first 10")
    broker.stop()
    # 30 s without a broker while the meter keeps printing.
    for _ in range(6):
        sent += await emit_tickets(sim, 5, start=12.0)
        await asyncio.sleep(5)
    await eventually(lambda: outbox_last_id(rig.data_dir) >= 40, timeout_s=10, what="accepted")
    broker.start()
    await all_delivered(rig, {"umid-1": sent}, timeout_s=60)
    check_arrived(rig, "umid-1", sent, "recepcao")
    assert rig.agent.alive


@pytest.mark.slow
async def test_influx_outage_loses_nothing(
    make_rig: Callable[..., Rig],
    mosquitto: MosquittoServer,
    influxd_factory: Callable[[], InfluxServer],
    tmp_path: Path,
) -> None:
    influx = influxd_factory()
    influx.create_database("coffee")
    rig = make_rig(
        broker=mosquitto,
        influx=influx,
        database="coffee",
        devices=standard_devices(tmp_path)[:1],
        port_names=["umid-1"],
    )
    rig.agent.start()
    await wait_open(rig, "umid-1")
    sim = TicketMeterSim(rig.ports["umid-1"])
    sent = await emit_tickets(sim, 10, lot=next_lot())
    await eventually(lambda: len(rig.influx_rows()) == 10, timeout_s=20, what="first 10")
    influx.stop()
    for _ in range(4):
        sent += await emit_tickets(sim, 5, start=12.5)
        await asyncio.sleep(5)
    influx.start()
    await all_delivered(rig, {"umid-1": sent}, timeout_s=90)
    check_arrived(rig, "umid-1", sent, "recepcao")


@pytest.mark.slow
async def test_agent_sigkill_mid_stream_loses_nothing(
    make_rig: Callable[..., Rig],
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    tmp_path: Path,
) -> None:
    rig = make_rig(
        broker=mosquitto,
        influx=influxd,
        database=influx_db,
        devices=standard_devices(tmp_path)[:2],
        port_names=["umid-1", "umid-2"],
    )
    rig.agent.start()
    await wait_open(rig, "umid-1")
    await wait_open(rig, "umid-2")
    s1, s2 = TicketMeterSim(rig.ports["umid-1"]), TicketMeterSim(rig.ports["umid-2"])
    sent1, sent2 = await asyncio.gather(emit_tickets(s1, 25), emit_tickets(s2, 25, start=11.5))
    # Kill as soon as everything is accepted: deliveries are still in flight.
    await eventually(lambda: outbox_last_id(rig.data_dir) >= 50, timeout_s=20, what="accepted")
    rig.agent.kill()
    restarted = time.time_ns()
    rig.agent.start()
    await wait_open(rig, "umid-1", after_ns=restarted)
    await wait_open(rig, "umid-2", after_ns=restarted)
    more1, more2 = await asyncio.gather(emit_tickets(s1, 10, start=13.0), emit_tickets(s2, 10))
    sent1 += more1
    sent2 += more2
    await all_delivered(rig, {"umid-1": sent1, "umid-2": sent2}, timeout_s=40)
    # Sequence numbers continue across the kill, so (device, seq) stays unique.
    check_arrived(rig, "umid-1", sent1, "recepcao")
    check_arrived(rig, "umid-2", sent2, "armazem")


@pytest.mark.slow
async def test_unplug_and_replug(
    make_rig: Callable[..., Rig],
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    tmp_path: Path,
) -> None:
    rig = make_rig(
        broker=mosquitto,
        influx=influxd,
        database=influx_db,
        devices=standard_devices(tmp_path)[:1],
        port_names=["umid-1"],
    )
    rig.agent.start()
    await wait_open(rig, "umid-1")
    port = rig.ports["umid-1"]
    sim = TicketMeterSim(port)
    sent = await emit_tickets(sim, 5)
    await eventually(lambda: rig.collector.count() == 5, timeout_s=20, what="first 5")
    port.unplug()

    def offline() -> bool:
        status = rig.collector.last_status("umid-1")
        return isinstance(status, dict) and status.get("state") == "offline"

    await eventually(offline, timeout_s=20, what="umid-1 offline", context=rig.context)
    await asyncio.sleep(3)  # stays unplugged across a few reopen attempts
    replugged = time.time_ns()
    port.replug()
    await wait_open(rig, "umid-1", timeout_s=90, after_ns=replugged)
    sent += await emit_tickets(sim, 5, start=12.0)
    await all_delivered(rig, {"umid-1": sent}, timeout_s=30)
    check_arrived(rig, "umid-1", sent, "recepcao")
    status = rig.collector.last_status("umid-1")
    assert isinstance(status, dict)
    assert status["reconnects"] == 1


async def test_garbage_and_hostile_lots(
    make_rig: Callable[..., Rig],
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    tmp_path: Path,
) -> None:
    rig = make_rig(
        broker=mosquitto,
        influx=influxd,
        database=influx_db,
        devices=standard_devices(tmp_path)[:1],
        port_names=["umid-1"],
    )
    rig.agent.start()
    await wait_open(rig, "umid-1")
    port = rig.ports["umid-1"]
    sim = TicketMeterSim(port, knobs=Faults(garbage_prob=0.5), seed=7)
    port.write(b"\x00\xff\xfe garbage " * 50)
    port.write(b"Umidade: 11")  # a cut ticket
    port.write(b"\x0c")
    sent = await emit_tickets(sim, 10)
    for _ in range(20):  # an over-long line with no terminator, 20 kB
        assert port.write(b"X" * 1000) == 1000
        await asyncio.sleep(0.02)
    port.write(b"\x0c")
    await asyncio.sleep(0.2)
    hostile = await sim.emit(moisture_pct=11.5, lot='L"1,x=2;DROP')
    assert hostile is not None
    sent.append(hostile)
    await all_delivered(rig, {"umid-1": sent}, timeout_s=30)
    got = rig.collector.of("umid-1")
    assert [d["fields"]["moisture_pct"] for d in got] == [s.moisture_pct for s in sent]  # type: ignore[index]
    last = got[-1]
    # The invalid lot is kept as data but never becomes a tag.
    assert "lot" not in last["tags"]  # type: ignore[operator]
    assert last["fields"]["lot_rejected"] == 'L"1,x=2;DROP'  # type: ignore[index]
    rows = rig.influx_rows()
    assert len(rows) == len(sent)
    status = rig.collector.last_status("umid-1")
    assert isinstance(status, dict)
    assert status["state"] == "online"
