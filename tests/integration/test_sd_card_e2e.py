"""The real agent under ``storage_profile = "sd-card"``, SIGKILLed mid-stream, loses nothing.

The profile packs records in 512-byte pages, writes delivered cursors every 10 s and
checkpoints every 60 s: a SIGKILL in the middle of the stream, with deliveries in flight
and cursors still in memory, may make the sinks receive readings again (the same
``(device, seq)``, byte-identical), never lose one the agent accepted, and sequence
numbers continue across the kill.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.pipeline import with_settings
from coffee_telemetry.simulators.moisture import TicketMeterSim
from tests.integration.harness import eventually, outbox_last_id
from tests.integration.test_end_to_end import (
    Rig,
    all_delivered,
    check_arrived,
    emit_tickets,
    make_rig,
    standard_devices,
    wait_open,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

__all__ = ["make_rig"]  # the fixture, used by name


def sd_card(rig: Rig) -> None:
    """The rig's site file with the ``sd-card`` profile."""
    config = rig.agent.config
    config.write_text(with_settings(config.read_text(), ['agent.storage_profile="sd-card"']))


def page_size(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
async def test_sigkill_under_the_sd_card_profile_loses_nothing(
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
    sd_card(rig)
    rig.agent.start()
    await wait_open(rig, "umid-1")
    await wait_open(rig, "umid-2")
    s1, s2 = TicketMeterSim(rig.ports["umid-1"]), TicketMeterSim(rig.ports["umid-2"])
    sent1, sent2 = await asyncio.gather(emit_tickets(s1, 25), emit_tickets(s2, 25, start=11.5))
    await eventually(lambda: outbox_last_id(rig.data_dir) >= 50, timeout_s=20, what="accepted")
    await eventually(
        lambda: rig.collector.count() >= 50, timeout_s=20, what="delivered", context=rig.context
    )
    rig.agent.kill()  # delivered, the cursors most likely still only in memory
    assert page_size(rig.data_dir / "outbox.sqlite3") == 512
    restarted = time.time_ns()
    rig.agent.start()
    await wait_open(rig, "umid-1", after_ns=restarted)
    await wait_open(rig, "umid-2", after_ns=restarted)
    more1, more2 = await asyncio.gather(emit_tickets(s1, 10, start=13.0), emit_tickets(s2, 10))
    sent1 += more1
    sent2 += more2
    await all_delivered(rig, {"umid-1": sent1, "umid-2": sent2}, timeout_s=60)
    check_arrived(rig, "umid-1", sent1, "recepcao")
    check_arrived(rig, "umid-2", sent2, "armazem")
