"""A wet lot reaches the on-duty phone by SMS, end to end, when nothing else can.

The real agent process, a simulated ticket meter and a simulated GSM modem, each on a
pseudo-terminal. The contact also has Telegram and ntfy, whose servers cannot be
reached (the internet link is down: connection refused on loopback), and the SMS
still arrives within 30 s: in Portuguese, so UCS-2, in two concatenated parts, decoded
here by an independent implementation (smspdudecoder). The modem answers the first
try with ``+CMS ERROR: 38`` (network out of order) and the message goes on the retry,
once. The contact answers the SMS with its code and the alert is acknowledged. Then the
modem is unplugged; the next wet lot's SMS waits, and goes once it is plugged back in.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from io import StringIO
from pathlib import Path

import pytest
from smspdudecoder.fields import SMSSubmit

from coffee_telemetry.simulators.modem import ModemSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.integration.harness import eventually
from tests.services.net import free_port

pytestmark = pytest.mark.integration

PHONE = "+5535999990001"

NOTIFY = """
[notify]
retry_initial_s = 1
retry_max_s = 5
[notify.sms]
port = "{modem}"
pin_file = "{pin}"
health_interval_s = 1
[notify.telegram]
api_url = "http://127.0.0.1:{dead}"
token_env = "TEST_NOTIFY_TG_TOKEN"
poll_updates = false
timeout_s = 2
[notify.ntfy]
url = "http://127.0.0.1:{dead}"
timeout_s = 2
[[notify.contacts]]
name = "João"
channels = {{ sms = "{phone}", telegram = "123456789", ntfy = "armazem-joao" }}
[[notify.routes]]
name = "plantao"
contacts = ["João"]
"""


@pytest.fixture
async def modem(tmp_path: Path) -> AsyncIterator[ModemSim]:
    (tmp_path / "dev").mkdir(exist_ok=True)
    port = PtyPort(link=tmp_path / "dev" / "modem")
    port.open()
    sim = ModemSim(port, pin="4321")
    task = asyncio.create_task(sim.run())
    yield sim
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    port.close()


def messages(sim: ModemSim) -> list[tuple[str, str, list[str]]]:
    """(recipient, whole text, DCS of each part) per message, parts joined in order."""
    parts: dict[int, list[tuple[int, str, str]]] = {}
    singles: list[tuple[str, str, list[str]]] = []
    recipient = ""
    for sub in sim.submitted:
        sms = SMSSubmit.decode(StringIO(sub.pdu))
        recipient = "+" + sms["recipient"]["number"]
        dcs = str(sms["dcs"]["encoding"])
        header = sms["user_data"].get("header")
        text = sms["user_data"]["data"]
        if header:
            data = header["elements"][0]["data"]
            parts.setdefault(data["reference"], []).append((data["part_number"], text, dcs))
        else:
            singles.append((recipient, text, [dcs]))
    joined = [
        (recipient, "".join(t for _, t, _ in sorted(p)), [d for _, _, d in sorted(p)])
        for p in parts.values()
    ]
    return singles + joined


async def test_sms_when_the_internet_is_down_acked_by_reply_and_across_an_unplug(
    tmp_path: Path, modem: ModemSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NOTIFY_TG_TOKEN", "123:abc")
    (tmp_path / "pin").write_text("4321\n")
    notify = NOTIFY.format(
        modem=modem.port.path, pin=tmp_path / "pin", dead=free_port(), phone=PHONE
    )
    rig = NotifyAgentRig(tmp_path, notify)
    try:
        await rig.start()
        await eventually(
            lambda: rig.notify_channel("sms").get("connected") is True,
            timeout_s=15,
            what="the modem ready",
            context=rig.agent.log_tail,
        )
        modem.fail_next = [38]
        started = time.monotonic()
        await rig.emit(14.2)
        await eventually(
            lambda: len(modem.submitted) >= 2,
            timeout_s=30,
            what="the SMS",
            context=rig.agent.log_tail,
        )
        took = time.monotonic() - started
        assert took < 30
        await asyncio.sleep(1.0)  # nothing more comes
        [(to, text, dcs)] = messages(modem)
        assert to == PHONE
        assert dcs == ["ucs2", "ucs2"], text  # two parts, once: the +CMS ERROR try sent none
        assert all(sub.pdu[4:6] == "00" for sub in modem.submitted)  # TP-MR left to the modem
        assert text.startswith("ALERTA — Lote úmido: lote L-WET, estação recepcao:"), text
        code = re.search(r"\nReconhecer: responda (\d{6})$", text)
        assert code is not None, text
        sms = rig.notify_channel("sms")
        assert sms["sent"] == 1
        assert sms["retries"] == 1
        for dead in ("telegram", "ntfy"):
            assert rig.notify_channel(dead)["sent"] == 0
        # The answer acknowledges.
        modem.deliver(PHONE, f"OK {code.group(1)}")
        await eventually(
            lambda: rig.alert_state("L-WET") == "acknowledged",
            timeout_s=15,
            what="the alert acknowledged by SMS",
            context=rig.agent.log_tail,
        )
        assert "acknowledged by João via sms" in rig.agent.log_tail(50000)
        # Unplugged: the next alert's SMS waits for the modem to come back.
        modem.port.unplug()
        await eventually(
            lambda: rig.notify_channel("sms").get("connected") is False,
            timeout_s=10,
            what="the modem gone",
        )
        rig.sim.lot = "L-WET-2"
        await rig.emit(14.5)
        await asyncio.sleep(2.0)
        assert len(modem.submitted) == 2
        modem.port.open()
        await eventually(
            lambda: len(modem.submitted) >= 3,
            timeout_s=30,
            what="the SMS after the replug",
            context=rig.agent.log_tail,
        )
        await asyncio.sleep(1.0)
        texts = [t for _, t, _ in messages(modem)]
        assert len(texts) == 2
        assert texts[1].startswith("ALERTA — Lote úmido: lote L-WET-2")
    finally:
        rig.close()
