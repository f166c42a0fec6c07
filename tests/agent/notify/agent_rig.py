"""The real agent process with notifications, for the integration tests.

A ticket moisture meter simulator on a pty feeds the agent (no MQTT, no InfluxDB:
notifications do not need them); the test adds its ``[notify]`` TOML. ``health()``
reads ``/api/health`` (the notifier's counters are under ``counters.notify``).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import AgentProcess, DeviceSpec, eventually, write_site_config


class NotifyAgentRig:
    """See the module docstring."""

    def __init__(self, tmp: Path, notify_toml: str, *, repeat_s: float = 3600.0) -> None:
        (tmp / "dev").mkdir(exist_ok=True)
        self.data_dir = tmp / "data"
        self.meter = PtyPort(link=tmp / "dev" / "umid-1")
        self.meter.open()
        self.config = write_site_config(
            tmp / "site.toml",
            data_dir=self.data_dir,
            devices=[DeviceSpec("umid-1", "moisture.ticket", self.meter.path, "recepcao")],
            mqtt_port=None,
            prefix="t",
            influx_url=None,
        )
        text = self.config.read_text()
        match = re.search(r"\[api\]\nport = (\d+)", text)
        assert match is not None
        self.api_port = int(match.group(1))
        self.base = f"http://127.0.0.1:{self.api_port}"
        with self.config.open("a") as f:
            f.write(
                "[alerts.wet_lot]\nk = 1\nn = 1\ndefault_threshold_pct = 12.5\n"
                f"hysteresis_pct = 0.5\nrepeat_s = {repeat_s}\n"
            )
            f.write(notify_toml.replace("{API}", self.base))
        self.agent = AgentProcess(self.config, tmp / "agent.log")
        self.sim = TicketMeterSim(self.meter, lot="L-WET")

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.base}/api/health", timeout=5) as response:
            doc = json.loads(response.read())
        assert isinstance(doc, dict)
        return doc

    def notify_channel(self, name: str) -> dict[str, object]:
        counters = self.health()["counters"]
        assert isinstance(counters, dict)
        channels = counters["notify"]["channels"]
        assert isinstance(channels, dict)
        doc = channels[name]
        assert isinstance(doc, dict)
        return doc

    def alert_state(self, subject: str) -> str | None:
        with urllib.request.urlopen(f"{self.base}/api/alerts", timeout=5) as response:
            doc = json.loads(response.read())
        items = doc if isinstance(doc, list) else doc.get("alerts", [])
        for item in items:
            if item.get("subject") == subject:
                return str(item.get("state"))
        return None

    async def start(self) -> None:
        self.agent.start()

        def online() -> bool:
            try:
                devices = self.health()["devices"]
            except OSError:
                return False
            assert isinstance(devices, dict)
            return bool(devices.get("umid-1", {}).get("state") == "online")

        await eventually(online, timeout_s=20, what="umid-1 online", context=self.agent.log_tail)

    async def emit(self, *values: float) -> None:
        for value in values:
            assert await self.sim.emit(moisture_pct=value) is not None
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self.agent.alive:
            self.agent.stop()
        self.meter.close()
