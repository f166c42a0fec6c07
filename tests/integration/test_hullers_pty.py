"""Hullers end to end inside one process: the RTU simulator on a real pty, the real pymodbus
client and bus poller, the huller service, and an outbox on disk.

A bag counter and an hour meter share one bus. The counter wraps after 999999 and is reset
from its front panel mid-run; the service is then cancelled with no cleanup (what a crash
leaves: the store as last committed) and a new one takes over the same store and outbox,
while ``coffee-telemetry maintenance done`` records a service from the side.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.maintenance import record_done
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import AsyncMaintenanceStore, open_maintenance_store
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.pty import open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, serve_rtu_bus
from tests.fakes import stage

pytestmark = pytest.mark.integration


def site(tmp_path: Path, port: str) -> Config:
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "buses": [
                {
                    "id": "rs485",
                    "port": port,
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
                    "hour_meter": 2,
                    "hour_meter_unit": "s",
                    "poll_interval_s": 0.15,
                    "tasks": [{"id": "oleo", "interval_h": 250}],
                }
            ],
        }
    )


async def records(outbox: Outbox) -> list[Reading]:
    return [r.reading for r in await outbox.read_batch("probe", 100_000)]


async def until(
    outbox: Outbox, check: Callable[[list[Reading]], bool], timeout_s: float = 10
) -> None:
    async with asyncio.timeout(timeout_s):
        while not check(await records(outbox)):
            await asyncio.sleep(0.05)


def of(readings: list[Reading], measurement: str) -> list[Reading]:
    return [r for r in readings if r.measurement == measurement]


def pv(reading: Reading) -> int:
    return int(reading.fields["counter_pv"])


@contextlib.asynccontextmanager
async def service(
    cfg: Config, store: AsyncMaintenanceStore, outbox: Outbox, stamper: Stamper, health: Health
) -> AsyncIterator[asyncio.Task[None]]:
    svc = HullerService(
        cfg=cfg,
        store=store,
        accept=stage(outbox.accept, stamper).accept,
        health=health,
        services_poll_s=0.1,
    )
    task = asyncio.create_task(svc.run_loop(), name="hullers")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_hullers_through_wrap_reset_and_crash(tmp_path: Path) -> None:
    with open_pty_port(link=tmp_path / "ttyRS485") as pty:
        cfg = site(tmp_path, pty.path)
        counter = CounterUnitSim(1, pv=999_950, rate_per_s=40)  # wraps about 1.2 s in
        hours = CounterUnitSim(2, mode=Mode.TIMER, pv=7200)
        async with (
            serve_rtu_bus(pty, [counter, hours]),
            open_outbox(tmp_path / "outbox.sqlite3", sinks=["probe"]) as outbox,
            open_maintenance_store(cfg.maintenance_path) as store,
        ):
            health = Health()
            async with service(cfg, store, outbox, Stamper(), health) as first:
                await until(outbox, lambda rs: len(of(rs, "counter_reset")) >= 1)  # the wrap
                # A reset is seen when the PV it throws away exceeds what is counted until
                # the next poll; right after the wrap the PV is too small for that.
                await until(outbox, lambda rs: pv(of(rs, "huller")[-1]) > 40)
                counter.front_panel_reset()
                await until(outbox, lambda rs: len(of(rs, "counter_reset")) >= 2)
                await until(outbox, lambda rs: pv(of(rs, "huller")[-1]) > 10)
                assert health.devices["desc-1"].state is DeviceState.ONLINE
                # A crash: the task is gone; nothing of it is cleaned up or flushed.
                first.cancel()
            before = len(of(await records(outbox), "huller"))
            stamper = Stamper()
            stamper.restore(await outbox.sequences())
            async with service(cfg, store, outbox, stamper, Health()):
                # The CLI records a service meanwhile (a thread stands for its process).
                out = io.StringIO()
                code = await asyncio.to_thread(
                    record_done, cfg, "desc-1", "oleo", note="troca", at=None, by="ana", out=out
                )
                assert code == 0, out.getvalue()
                await until(outbox, lambda rs: len(of(rs, "huller")) >= before + 5)
                await until(outbox, lambda rs: bool(of(rs, "maintenance")))
            readings = await records(outbox)

    huller = of(readings, "huller")
    totals = [float(r.fields["bags_total"]) for r in huller]
    assert totals == sorted(totals), "bags_total went backwards"
    # The hours are known from the hour meter's first poll on (it may follow the counter's).
    hour_totals = [float(r.fields["hours_total"]) for r in huller if "hours_total" in r.fields]
    assert len(hour_totals) >= len(huller) - 2
    assert hour_totals == sorted(hour_totals)
    assert hour_totals[0] >= 2.0
    resets = of(readings, "counter_reset")
    assert [r.fields["unit"] for r in resets] == ["counter", "counter"]
    wrap, panel = (r.fields for r in resets)
    assert int(wrap["previous_pv"]) > 999_950
    assert int(wrap["pv"]) < 100
    assert int(panel["pv"]) < int(panel["previous_pv"])
    # The total is the PVs seen before each drop plus the PV now: nothing doubled.
    offset = sum(int(r.fields["previous_pv"]) for r in resets)
    assert panel["offset"] == offset
    assert totals[-1] == offset + int(huller[-1].fields["counter_pv"])
    # Sequence numbers stay unique across the crash.
    keys = [(r.device, r.seq) for r in readings]
    assert len(keys) == len(set(keys))
    (done_event,) = of(readings, "maintenance")
    assert done_event.fields["note"] == "troca"
    assert float(done_event.fields["hours_at"]) >= 2.0
    assert of(readings, "maintenance_status")
