"""The modem's network time in the real agent, while it sends SMS on the same port.

The real agent process with ``time_sources = ["modem", "user"]``, a simulated ticket
meter and the simulated GSM modem of ``[notify.sms]``, each on a pseudo-terminal. The
modem first answers ``AT+CCLK?`` with its power-up default (1980: no network time),
which health shows as refused; then with the network's time, which the agent adopts.
A wet lot's SMS, two UCS-2 parts, goes out whole while the time is being asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from smspdudecoder.fields import SMSSubmit

from coffee_telemetry.simulators.modem import ModemSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.integration.harness import eventually

pytestmark = pytest.mark.integration

NS = 1_000_000_000
PHONE = "+5535999990001"
NOTIFY = """
[notify]
retry_initial_s = 1
retry_max_s = 5
[notify.sms]
port = "{modem}"
health_interval_s = 1
[[notify.contacts]]
name = "João"
channels = {{ sms = "{phone}" }}
[[notify.routes]]
name = "plantao"
contacts = ["João"]
"""


@pytest.fixture
async def modem(tmp_path: Path) -> AsyncIterator[ModemSim]:
    (tmp_path / "dev").mkdir(exist_ok=True)
    port = PtyPort(link=tmp_path / "dev" / "modem")
    port.open()
    sim = ModemSim(port)
    task = asyncio.create_task(sim.run())
    yield sim
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    port.close()


def time_counters(rig: NotifyAgentRig) -> dict[str, object]:
    counters = rig.health()["counters"]
    assert isinstance(counters, dict)
    doc = counters["time"]
    assert isinstance(doc, dict)
    return doc


def modem_state(rig: NotifyAgentRig) -> str:
    sources = time_counters(rig)["sources"]
    assert isinstance(sources, dict)
    return str(sources["modem"]["state"])


async def test_the_agent_takes_the_network_time_and_still_sends_sms(
    tmp_path: Path, modem: ModemSim
) -> None:
    modem.network_clock = None
    rig = NotifyAgentRig(tmp_path, NOTIFY.format(modem=modem.port.path, phone=PHONE))
    text = rig.config.read_text(encoding="utf-8")
    rig.config.write_text(
        text.replace('time_sources = ["system"]', 'time_sources = ["modem", "user"]'),
        encoding="utf-8",
    )
    try:
        await rig.start()
        await eventually(
            lambda: modem_state(rig) == "refused",
            timeout_s=20,
            what="the modem's 1980 clock refused",
            context=rig.agent.log_tail,
        )
        doc = time_counters(rig)
        assert doc["quality"] == "provisional"
        assert "1980-01-06" in str(doc["sources"]["modem"]["detail"])  # type: ignore[index]

        modem.network_clock = lambda: datetime.now(UTC)
        await eventually(
            lambda: time_counters(rig)["source"] == "modem",
            timeout_s=20,
            what="the network's time adopted",
            context=rig.agent.log_tail,
        )
        doc = time_counters(rig)
        assert doc["quality"] == "trusted"
        now_ns = doc["now_ns"]
        assert isinstance(now_ns, int)
        assert abs(now_ns - time.time_ns()) < 3 * NS
        assert modem_state(rig) == "ok"
        asked = modem.commands.count("AT+CCLK?")

        await rig.emit(14.2)
        await eventually(
            lambda: len(modem.submitted) >= 2,
            timeout_s=30,
            what="the SMS",
            context=rig.agent.log_tail,
        )
        parts = [SMSSubmit.decode(StringIO(s.pdu)) for s in modem.submitted]
        assert {"+" + p["recipient"]["number"] for p in parts} == {PHONE}
        body = "".join(p["user_data"]["data"] for p in parts[:2])
        assert "L-WET" in body
        assert asked >= 2
    finally:
        rig.close()
