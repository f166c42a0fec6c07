"""The agent keeps a local history of what it accepts, across restarts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from coffee_telemetry.agent.history.store import History
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


async def test_history_fills_and_survives_a_restart(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    data_dir = tmp_path / "data"
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=data_dir,
        devices=[DeviceSpec("umid-1", "moisture.ticket", port.path, "recepcao")],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=None,
    )
    collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
    collector.start()
    agent = AgentProcess(config, tmp_path / "agent.log")
    sim = TicketMeterSim(port, lot="L-0007")
    sent: list[float] = []
    start_ns = time.time_ns()
    try:
        for round_ in range(2):
            after = time.time_ns()
            agent.start()

            def online(after: int = after) -> bool:
                status = collector.last_status("umid-1", after_ns=after)
                return isinstance(status, dict) and status.get("state") == "online"

            await eventually(online, timeout_s=20, what="umid-1 online", context=agent.log_tail)
            for i in range(4):
                value = round(11.0 + round_ + i / 10, 1)
                got = await sim.emit(moisture_pct=value)
                assert got is not None
                sent.append(value)
            await eventually(
                lambda: collector.count() == len(sent), timeout_s=20, what="readings accepted"
            )
            assert agent.stop() == 0  # a clean stop writes what the history still buffers
    finally:
        if agent.alive:
            agent.stop()
        collector.stop()
        port.close()
    history = History.open(data_dir / "history.sqlite3")
    try:
        lots = history.lots_today(start_ns)
        assert lots["L-0007"].count == len(sent)  # both runs' readings, none twice
        assert lots["L-0007"].max_pct == max(sent)
        assert lots["L-0007"].mean_pct == pytest.approx(sum(sent) / len(sent))
        assert lots["L-0007"].station == "recepcao"
        latest = history.latest("moisture")["umid-1"]
        assert latest.fields["moisture_pct"] == sent[-1]
        # Points close together share a chart bucket: the bucket means span the values.
        points = history.series("moisture", "umid-1", "moisture_pct", start_ns, time.time_ns())
        assert points
        assert min(sent) <= min(v for _, v in points) <= max(v for _, v in points) <= max(sent)
    finally:
        history.close()
