"""The SMS channel against the modem simulator on a real pseudo-terminal: PIN, sending
UCS-2 in two parts (decoded by smspdudecoder), CMS errors, replies, unplug and replug."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from smspdudecoder.fields import SMSSubmit

from coffee_telemetry.agent.notify.config import SmsConfig
from coffee_telemetry.agent.notify.model import Message, Refused, Retry, Sent
from coffee_telemetry.agent.notify.sms import ModemChannel
from coffee_telemetry.simulators.modem import ModemSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.agent.notify.helpers import until

BODY = (
    "[CRÍTICO] Lote úmido: L-0042\nLote L-0042 úmido: média 13,4 % (limite 12,5 %)\n"
    "Responda 123456 para reconhecer."
)


def sms(body: str = BODY, address: str = "+5535999990001") -> Message:
    return Message(
        key=f"wet_lot/L-0042/1/firing/0/João/sms/{body[:10]}",
        channel="sms",
        contact="João",
        address=address,
        lang="pt-BR",
        kind="firing",
        severity="critical",
        title="[CRÍTICO] Lote úmido: L-0042",
        body=body,
        ack_code="123456",
    )


def texts(sim: ModemSim) -> list[tuple[str, str, object]]:
    out = []
    for sub in sim.submitted:
        decoded = SMSSubmit.decode(StringIO(sub.pdu))
        header = decoded["user_data"].get("header")
        part = header["elements"][0]["data"]["part_number"] if header else None
        out.append(("+" + decoded["recipient"]["number"], decoded["user_data"]["data"], part))
    return out


@dataclass
class Rig:
    sim: ModemSim
    channel: ModemChannel
    replies: list[tuple[str, str]]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "modem")
    port.open()
    sim = ModemSim(port, pin="4321")
    (tmp_path / "pin").write_text("4321\n")
    cfg = SmsConfig(
        port=str(tmp_path / "dev" / "modem"),
        pin_file=tmp_path / "pin",
        reply_timeout_s=1.0,
        send_timeout_s=2.0,
        health_interval_s=0.2,
    )
    replies: list[tuple[str, str]] = []

    async def on_reply(sender: str, text: str) -> None:
        replies.append((sender, text))

    channel = ModemChannel(cfg, on_reply=on_reply)
    tasks = [asyncio.create_task(sim.run()), asyncio.create_task(channel.run_loop())]
    await until(lambda: channel.status.connected, timeout_s=5)
    yield Rig(sim, channel, replies)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    port.close()


async def test_the_pin_comes_from_its_file_and_health_shows_the_network(rig: Rig) -> None:
    assert 'AT+CPIN="4321"' in rig.sim.commands
    health = rig.channel.health()
    assert health["signal_csq"] == 21
    assert health["registered"] is True
    rig.sim.csq = 9
    await until(lambda: rig.channel.health()["signal_csq"] == 9)


async def test_portuguese_goes_as_two_ucs2_parts_with_a_delivery_report(rig: Rig) -> None:
    assert isinstance(await rig.channel.send(sms()), Sent)
    got = texts(rig.sim)
    assert [(to, part) for to, _, part in got] == [("+5535999990001", 1), ("+5535999990001", 2)]
    assert "".join(text for _, text, _ in got) == BODY
    await until(lambda: rig.channel.status.delivered == 2)


async def test_cms_errors_are_retried_or_refused_by_their_code(rig: Rig) -> None:
    rig.sim.fail_next = [38]  # network out of order: try later
    outcome = await rig.channel.send(sms("Teste 1"))
    assert isinstance(outcome, Retry)
    assert "+CMS ERROR: 38" in outcome.reason
    assert isinstance(await rig.channel.send(sms("Teste 1")), Sent)
    rig.sim.fail_next = [21]  # short message transfer rejected
    refused = await rig.channel.send(sms("Teste 2"))
    assert isinstance(refused, Refused)
    assert refused.status == 21
    rig.sim.registered = False
    assert isinstance(await rig.channel.send(sms("Teste 3")), Retry)
    assert [text for _, text, _ in texts(rig.sim)] == ["Teste 1"]


async def test_a_number_the_network_cannot_take_is_refused(rig: Rig) -> None:
    assert isinstance(await rig.channel.send(sms(address="+55 35")), Refused)


async def test_a_modem_that_does_not_answer_in_time_is_a_retry(rig: Rig) -> None:
    rig.sim.silent_sends = 1
    outcome = await rig.channel.send(sms("Teste lento"))
    assert isinstance(outcome, Retry)
    assert "within 2 s" in outcome.reason
    assert isinstance(await rig.channel.send(sms("Teste lento")), Sent)


async def test_replies_are_handed_over_and_deleted(rig: Rig) -> None:
    rig.sim.deliver("+5535999990001", "OK 123456")
    rig.sim.deliver("+5511988887777", "Recebi, obrigado ✓")
    await until(lambda: len(rig.replies) == 2)
    assert rig.replies == [
        ("+5535999990001", "OK 123456"),
        ("+5511988887777", "Recebi, obrigado ✓"),
    ]
    await until(lambda: rig.sim.storage == {})


async def test_unplugged_it_retries_and_replugged_it_sends_again(rig: Rig) -> None:
    rig.sim.port.unplug()
    await until(lambda: not rig.channel.status.connected)
    outcome = await rig.channel.send(sms("Durante"))
    assert isinstance(outcome, Retry)
    assert "not connected" in outcome.reason
    rig.sim.deliver("+5535999990001", "OK 123456")  # arrives while the agent cannot read
    await asyncio.sleep(0.3)
    rig.sim.port.open()
    await until(lambda: rig.channel.status.connected, timeout_s=10)
    assert isinstance(await rig.channel.send(sms("Depois")), Sent)
    assert [text for _, text, _ in texts(rig.sim)] == ["Depois"]
    assert rig.sim.commands.count('AT+CPIN="4321"') == 2  # a power cycle asks again
    await until(lambda: rig.replies == [("+5535999990001", "OK 123456")])  # read at start


async def test_a_wrong_pin_is_tried_once_only(tmp_path: Path) -> None:
    port = PtyPort()
    port.open()
    sim = ModemSim(port, pin="4321")
    (tmp_path / "pin").write_text("1111")
    channel = ModemChannel(SmsConfig(port=port.tty_path, pin_file=tmp_path / "pin"))
    tasks = [asyncio.create_task(sim.run()), asyncio.create_task(channel.run_loop())]
    try:
        await until(lambda: channel.status.pin_refused)
        await asyncio.sleep(1.5)  # past the first reopen
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        port.close()
    assert sim.commands.count('AT+CPIN="1111"') == 1
    assert not channel.status.connected
