"""A lot's record, end to end: a meter and a scale on ptys → the real agent → the lot store.

The agent is SIGKILLed while the lot store is behind the outbox (its sink batches a
second of records), restarted, and fed more; at the end every moisture reading and
weighment of the lot is in its record exactly once, with the values the simulators
printed, and the summary's counters agree with the rows. Then the raw history is
pruned as if the lot were older than its retention: the lot's record is still whole.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.lots.records import LotRecords
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.simulators.moisture import SentReading, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.scales import ToledoStreamSim, Weighment
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    eventually,
    outbox_last_id,
    write_site_config,
)

pytestmark = pytest.mark.integration

LOT = "L-0042"
STATION = "recepcao"


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[tuple[PtyPort, PtyPort]]:
    (tmp_path / "dev").mkdir()
    with (
        open_pty_port(link=tmp_path / "dev" / "umid-1") as meter,
        open_pty_port(link=tmp_path / "dev" / "balanca") as scale,
    ):
        yield meter, scale


def site_file(tmp_path: Path, meter: PtyPort, scale: PtyPort) -> tuple[Path, int]:
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[
            DeviceSpec("umid-1", "moisture.ticket", meter.path, STATION, "cafe"),
            # Only the print request makes a weighment (see test_scales_e2e).
            DeviceSpec(
                "balanca",
                "scale.toledo_continuous",
                scale.path,
                STATION,
                extra="[devices.toledo]\nweighment_stable_s = 30.0",
            ),
        ],
        mqtt_port=None,
        prefix="t",
        influx_url=None,
    )
    match = re.search(r"^\[api\]\nport = (\d+)$", config.read_text(), re.MULTILINE)
    assert match is not None
    return config, int(match.group(1))


def get_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


async def online(agent: AgentProcess, port: int, devices: list[str]) -> None:
    def check() -> bool:
        try:
            doc = get_json(port, "/api/health")
        except OSError:
            return False
        assert isinstance(doc, dict)
        states = {name: d.get("state") for name, d in doc["devices"].items()}
        return all(states.get(dev) == "online" for dev in devices)

    await eventually(
        lambda: asyncio.to_thread(check),
        timeout_s=30,
        what="devices online",
        context=lambda: agent.log_tail(),
    )


async def tickets(
    meter: TicketMeterSim, n: int, start: float, *, pause_s: float = 0.03
) -> list[SentReading]:
    sent = []
    for i in range(n):
        got = await meter.emit(moisture_pct=round(start + (i % 30) / 10, 1))
        assert got is not None, "the simulator could not write a whole ticket"
        sent.append(got)
        await asyncio.sleep(pause_s)
    return sent


async def weigh(scale: ToledoStreamSim, loads: list[float]) -> list[Weighment]:
    done = []
    for load in loads:
        got = await scale.weigh(load, motion_s=0.5, stable_s=1.0, rest_s=0.3)
        assert got is not None
        done.append(got)
    return done


def lot_rows(data_dir: Path) -> tuple[int, int]:
    path = data_dir / "lots-records.sqlite3"
    if not path.exists():
        return 0, 0
    store = LotRecords.open(path)
    try:
        record = store.record(LOT)
    finally:
        store.close()
    return (0, 0) if record is None else (len(record.readings), len(record.weighments))


@pytest.mark.slow
async def test_every_reading_and_weighment_once_through_a_sigkill(
    tmp_path: Path, ptys: tuple[PtyPort, PtyPort]
) -> None:
    meter_pty, scale_pty = ptys
    config, api_port = site_file(tmp_path, meter_pty, scale_pty)
    data_dir = tmp_path / "data"
    lots = LotStore.open(data_dir / "lots.sqlite3")  # as `coffee-telemetry lot set` does
    lots.set(STATION, LOT, by="maria", source="cli", at_ns=time.time_ns())
    lots.close()
    meter = TicketMeterSim(meter_pty, product=None, seed=3)
    scale = ToledoStreamSim(scale_pty, rate_hz=10.0, auto_weighment_s=30.0, seed=5)
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    try:
        await online(agent, api_port, ["umid-1"])
        hold = asyncio.create_task(scale.hold(3.0))
        await online(agent, api_port, ["balanca"])
        await hold
        sent, weighed = await asyncio.gather(tickets(meter, 25, 10.5), weigh(scale, [812.5, 640.0]))
        sent += await tickets(meter, 15, 13.0, pause_s=0.005)
        # Kill as soon as the outbox has them all: the lot store takes a batch a second,
        # so it is usually still behind (printed below; the end result must not depend on it).
        await eventually(
            lambda: outbox_last_id(data_dir) >= len(sent) + len(weighed) + 1,
            timeout_s=20,
            what="readings accepted",
            context=agent.log_tail,
            interval_s=0.02,
        )
        behind = lot_rows(data_dir)
        agent.kill()
        restarted = time.time_ns()
        agent.start()
        await online(agent, api_port, ["umid-1", "balanca"])
        more, more_weighed = await asyncio.gather(tickets(meter, 20, 12.0), weigh(scale, [1234.5]))
        sent += more
        weighed += more_weighed
        await eventually(
            lambda: lot_rows(data_dir) == (len(sent), len(weighed)),
            timeout_s=30,
            what=f"{len(sent)} readings and {len(weighed)} weighments in the lot's record",
            context=lambda: f"have {lot_rows(data_dir)}; log:\n{agent.log_tail()}",
        )
        doc = await asyncio.to_thread(get_json, api_port, f"/api/lots/{LOT}")
        assert isinstance(doc, dict)
        assert doc["summary"]["readings"] == len(sent)
        assert doc["summary"]["weighments"] == len(weighed)
    finally:
        if agent.alive:
            assert agent.stop() == 0
    assert restarted > 0
    print(f"lot store at the kill: {behind} of {len(sent) - 20} readings, 2 weighments")

    store = LotRecords.open(data_dir / "lots-records.sqlite3")
    try:
        record = store.record(LOT)
        identities = store.identities(LOT)
    finally:
        store.close()
    assert record is not None
    # Exactly once: identities are unique, and they are the devices' whole sequences.
    assert len(identities) == len(set(identities))
    assert sorted(s for t, d, s in identities if t == "readings") == list(range(1, len(sent) + 1))
    readings = sorted(record.readings, key=lambda r: r.seq)
    assert [r.moisture_pct for r in readings] == [s.moisture_pct for s in sent]
    assert [r.sample_id for r in readings] == [s.sample_id for s in sent]
    assert all(r.audit and "GEHAKA" in r.audit for r in readings)
    assert [round(w.net_kg, 3) for w in record.weighments] == [
        round(w.weight_kg, 3) for w in weighed
    ]
    s = record.summary
    assert (s.readings, s.weighments) == (len(sent), len(weighed))
    assert s.mean_moisture_pct == pytest.approx(sum(x.moisture_pct for x in sent) / len(sent))
    assert s.net_kg == pytest.approx(sum(w.weight_kg for w in weighed))
    assert s.stations == (STATION,)
    assert [e.kind for e in record.events][:1] == ["assigned"]

    # Older than the raw history's retention: the history forgets it, the record does not.
    history = History.open(data_dir / "history.sqlite3", raw_retention_s=1.0)
    try:
        later = time.time_ns() + 10 * 1_000_000_000
        raw = "SELECT COUNT(*) FROM points"
        assert history.connection.execute(raw).fetchone()[0] > 0
        history.prune(later)
        assert history.connection.execute(raw).fetchone()[0] == 0
    finally:
        history.close()
    store = LotRecords.open(data_dir / "lots-records.sqlite3")
    try:
        again = store.record(LOT)
    finally:
        store.close()
    assert again is not None
    assert len(again.readings) == len(sent)
    assert len(again.weighments) == len(weighed)
