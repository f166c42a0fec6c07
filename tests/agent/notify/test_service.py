"""The notifier with a real queue database and recording channels: routing, escalation,
quiet hours, retries, dead letters, expiry and acknowledgements."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.notify.acks import TokenClaims, encode_token
from coffee_telemetry.agent.notify.model import Refused, Retry, Sent
from coffee_telemetry.agent.notify.queue import NotifyStore
from tests.agent.notify.helpers import (
    AckRecorder,
    RecordingChannel,
    WallClock,
    event,
    local_ns,
    notify_config,
    open_notifier,
    until,
)

MONDAY_10H = local_ns("2026-11-30 10:41")


def token_of(url: str | None) -> str:
    assert url is not None
    return url.rsplit("/", 1)[1]


async def drain(notifier_channels: list[RecordingChannel], loops: list[asyncio.Task[None]]) -> None:
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def test_a_firing_alert_goes_to_the_first_contact_on_every_channel_once(
    tmp_path: Path,
) -> None:
    clock = WallClock(MONDAY_10H)
    email, sms = RecordingChannel("email"), RecordingChannel("sms")
    async with open_notifier(tmp_path, [email, sms], clock=clock) as notifier:
        fired = event(since_ns=MONDAY_10H)
        assert await notifier.submit([fired]) == 2
        assert await notifier.submit([fired]) == 0  # a resubmitted event is not queued again
        loops = [asyncio.create_task(notifier.channel_loop(n)) for n in ("email", "sms")]
        await email.wait_for(lambda: len(email.sent) == 1)
        await sms.wait_for(lambda: len(sms.sent) == 1)
        await drain([email, sms], loops)
    mail, text = email.sent[0], sms.sent[0]
    assert (mail.contact, mail.address, mail.lang) == ("João", "joao@coop.example", "pt-BR")
    assert mail.title == "[CRÍTICO] Lote úmido: L-0042"
    assert "Lote L-0042 úmido: média 13,4 %" in mail.body
    assert mail.ack_url is not None
    assert mail.ack_url.startswith("http://armazem.local:8780/ack/")
    assert text.address == "+5535999990001"
    assert text.ack_code is not None
    assert (
        text.body
        == f"Lote L-0042 úmido: média 13,4 % (limite 12,5 %)\nReconhecer: responda {text.ack_code}"
    )
    assert "http" not in text.body  # SMS carries the code, not the LAN link
    assert text.ack_code == mail.ack_code  # one credential per (episode, contact)


async def test_unacknowledged_alert_escalates_to_the_next_contact_and_ack_stops_it(
    tmp_path: Path,
) -> None:
    clock = WallClock(MONDAY_10H)
    email, sms = RecordingChannel("email"), RecordingChannel("sms")
    acks = AckRecorder()
    async with open_notifier(tmp_path, [email, sms], clock=clock, acks=acks) as notifier:
        fired = event(since_ns=MONDAY_10H)
        await notifier.submit([fired])
        clock.advance(9 * 60)
        assert await notifier.escalate_due() == 0
        clock.advance(60)
        assert await notifier.escalate_due() == 1
        assert await notifier.escalate_due() == 0  # Maria is the last: nobody after her
        loop = asyncio.create_task(notifier.channel_loop("email"))
        await email.wait_for(lambda: len(email.sent) == 2)
        escalated = email.sent[1]
        assert (escalated.contact, escalated.kind, escalated.lang) == ("Maria", "escalated", "en")
        assert escalated.body.startswith("Not acknowledged by João within 10 min.")
        # Maria acknowledges from her link: the command goes through the boundary.
        result = await notifier.acknowledge_token(token_of(escalated.ack_url))
        assert result.ok
        assert result.contact == "Maria"
        assert [(c.path, c.by, c.source) for c in acks.acks] == [
            (("ack", "wet_lot", "L-0042"), "Maria", "notify:link")
        ]
        # The alert service answers with the acknowledged event: the episode closes.
        acked = event("acknowledged", since_ns=MONDAY_10H, at_ns=clock(), acked_by="Maria")
        await notifier.submit([acked])
        await email.wait_for(lambda: len(email.sent) == 3)
        await drain([email], [loop])
        assert await notifier.store.escalations() == []
    told = email.sent[2]
    assert (told.contact, told.kind) == ("João", "acknowledged")
    assert "Reconhecido por Maria." in told.body


async def test_quiet_hours_hold_warnings_until_morning_but_not_critical_alerts(
    tmp_path: Path,
) -> None:
    night = local_ns("2026-11-30 23:10")
    clock = WallClock(night)
    cfg = notify_config(
        routes=[{"name": "noite", "contacts": ["João"], "quiet_hours": "22:00-06:00"}]
    )
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        await n.submit([event(severity="warning", subject="L-1", since_ns=night)])
        await n.submit([event(severity="critical", subject="L-2", since_ns=night)])
        first = await n.store.next_due("email", night)
        assert first is not None
        assert first.message.title.endswith("L-2")
        await n.store.finish(first.id, "sent", now_ns=night)
        assert await n.store.next_due("email", local_ns("2026-12-01 05:59")) is None
        assert await n.store.next_due_ns("email") == local_ns("2026-12-01 06:00")


async def test_a_route_takes_only_its_days_rules_and_severities(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    cfg = notify_config(
        routes=[
            {"name": "fim-de-semana", "contacts": ["Maria"], "days": ["sat", "sun"]},
            {"name": "semana", "contacts": ["João"], "days": ["mon", "tue"], "rules": ["wet_lot"]},
        ]
    )
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        assert await n.submit([event(since_ns=MONDAY_10H)]) == 1
        assert await n.submit([event(rule="device_silent", since_ns=MONDAY_10H)]) == 0
        assert await n.submit([event(severity="info", subject="L-9", since_ns=MONDAY_10H)]) == 0
        queued = await n.store.next_due("email", MONDAY_10H)
    assert queued is not None
    assert queued.message.contact == "João"


async def test_retries_back_off_and_honour_retry_after(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    email = RecordingChannel("email", [Retry("HTTP 503"), Retry("HTTP 429", retry_after_s=0.4)])
    cfg = notify_config(retry_initial_s=0.05, retry_max_s=1.0)
    async with open_notifier(tmp_path, [email], clock=clock, cfg=cfg) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
        loop = asyncio.create_task(notifier.channel_loop("email"))
        await email.wait_for(lambda: len(email.sent) == 1)
        await drain([email], [loop])
        assert notifier.stats["email"].retries == 2
    times = [t for t, _ in email.attempts]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.04
    assert times[2] - times[1] >= 0.39  # the server's Retry-After, longer than the back-off


async def test_a_message_held_until_morning_still_counts_as_queued(tmp_path: Path) -> None:
    night = local_ns("2026-11-30 23:10")
    clock = WallClock(night)
    email = RecordingChannel("email")
    cfg = notify_config(
        routes=[{"name": "noite", "contacts": ["João"], "quiet_hours": "22:00-06:00"}]
    )
    async with open_notifier(tmp_path, [email], clock=clock, cfg=cfg) as notifier:
        await notifier.submit([event(severity="warning", subject="L-1", since_ns=night)])
        await notifier.refresh()
        loop = asyncio.create_task(notifier.channel_loop("email"))
        await asyncio.sleep(0.2)  # the loop looked, found nothing due, and waits
        channels = notifier.health_doc()["channels"]
        assert isinstance(channels, dict)
        assert channels["email"]["queued"] == 1
        assert email.attempts == []
        await drain([email], [loop])


async def test_a_refused_message_is_a_dead_letter_and_the_next_one_goes(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    email = RecordingChannel("email", [Refused("535 authentication failed", 535)])
    async with open_notifier(tmp_path, [email], clock=clock) as notifier:
        await notifier.submit([event(subject="L-1", since_ns=MONDAY_10H)])
        await notifier.submit([event(subject="L-2", since_ns=MONDAY_10H + 1)])
        loop = asyncio.create_task(notifier.channel_loop("email"))
        await until(lambda: notifier.stats["email"].sent == 1)
        await drain([email], [loop])
        await notifier.refresh()
        health = notifier.health_doc()
        dead = await notifier.store.dead_letters()
    assert email.sent[0].title.endswith("L-2")
    assert [(d.reason, d.status, d.message.title[-3:]) for d in dead] == [
        ("535 authentication failed", 535, "L-1")
    ]
    channels = health["channels"]
    assert isinstance(channels, dict)
    assert channels["email"]["dead"] == 1
    assert channels["email"]["sent"] == 1


async def test_a_dead_channel_never_delays_another(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    email = RecordingChannel("email", forever=Retry("connection refused"))
    sms = RecordingChannel("sms")
    cfg = notify_config(retry_initial_s=5.0)
    async with open_notifier(tmp_path, [email, sms], clock=clock, cfg=cfg) as notifier:
        loops = [asyncio.create_task(notifier.channel_loop(n)) for n in ("email", "sms")]
        for i in range(3):
            await notifier.submit([event(subject=f"L-{i}", since_ns=MONDAY_10H + i)])
        await sms.wait_for(lambda: len(sms.sent) == 3, timeout_s=2.0)
        await drain([email, sms], loops)
    assert len(email.attempts) == 1  # waiting out its back-off, alone


async def test_a_message_too_old_to_matter_is_dropped_with_a_record(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    email = RecordingChannel("email", forever=Retry("connection refused"))
    cfg = notify_config(max_age_h_by_rule={"wet_lot": 1.0}, retry_initial_s=0.05)
    async with open_notifier(tmp_path, [email], clock=clock, cfg=cfg) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
        loop = asyncio.create_task(notifier.channel_loop("email"))
        await email.wait_for(lambda: len(email.attempts) >= 1)
        clock.advance(3601)
        await until(lambda: notifier.stats["email"].expired == 1)
        await drain([email], [loop])
        counts = await notifier.store.counts()
    assert [(c.channel, c.queued, c.expired, c.sent) for c in counts] == [("email", 0, 1, 0)]


async def test_signed_links_refused_when_forged_expired_reused_or_someone_elses(
    tmp_path: Path,
) -> None:
    clock = WallClock(MONDAY_10H)
    email = RecordingChannel("email")
    acks = AckRecorder()
    async with open_notifier(tmp_path, [email], clock=clock, acks=acks) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
        clock.advance(600)
        await notifier.escalate_due()
        first = await notifier.store.next_due("email", clock())
        assert first is not None
        await notifier.store.finish(first.id, "sent", now_ns=clock())
        second = await notifier.store.next_due("email", clock())
        assert second is not None
        joao, maria = token_of(first.message.ack_url), token_of(second.message.ack_url)
        payload, mac = joao.split(".")
        forged = payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
        assert (await notifier.acknowledge_token(forged)).status == "forged"
        # Maria's nonce with João's name, signed with another key: forged.
        claims = TokenClaims(first.message.episode, "João", 2**40, maria.split(".")[0])
        assert (await notifier.acknowledge_token(encode_token(b"x" * 32, claims))).status == (
            "forged"
        )
        assert (await notifier.acknowledge_token("not-a-token")).status == "malformed"
        # A link shows the alert and asks for the button, without acknowledging.
        seen, alert = await notifier.inspect_token(joao)
        assert seen.status == "pending"
        assert alert is not None
        assert alert.subject == "L-0042"
        assert acks.acks == []
        ok = await notifier.acknowledge_token(joao)
        assert ok.ok
        assert ok.contact == "João"
        assert (await notifier.acknowledge_token(joao)).status == "used"
        assert (await notifier.inspect_token(joao))[0].status == "used"
        # Maria's link after João's acknowledgement closed the episode.
        await notifier.submit(
            [event("acknowledged", since_ns=MONDAY_10H, at_ns=clock(), acked_by="João")]
        )
        assert (await notifier.acknowledge_token(maria)).status == "closed"
    assert len(acks.acks) == 1


async def test_an_expired_link_is_refused(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    acks = AckRecorder()
    cfg = notify_config(ack_link_hours=1.0)
    async with open_notifier(
        tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg, acks=acks
    ) as n:
        await n.submit([event(since_ns=MONDAY_10H)])
        queued = await n.store.next_due("email", clock())
        assert queued is not None
        clock.advance(3601)
        token = token_of(queued.message.ack_url)
        assert (await n.inspect_token(token))[0].status == "expired"
        assert (await n.acknowledge_token(token)).status == "expired"
    assert acks.acks == []


async def test_an_sms_reply_with_the_code_acknowledges_only_from_the_contacts_phone(
    tmp_path: Path,
) -> None:
    clock = WallClock(MONDAY_10H)
    acks = AckRecorder()
    sms = RecordingChannel("sms")
    async with open_notifier(tmp_path, [sms], clock=clock, acks=acks) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
        queued = await notifier.store.next_due("sms", clock())
        assert queued is not None
        assert queued.message.ack_code is not None
        code = queued.message.ack_code
        stranger = await notifier.acknowledge_reply("sms", "+5511988887777", f"ok {code}")
        assert stranger.status == "forged"
        assert (await notifier.acknowledge_reply("sms", "+5535999990001", "ok")).status == (
            "malformed"
        )
        result = await notifier.acknowledge_reply("sms", "+5535999990001", f"Ok {code} obrigado")
        assert result.ok
        assert result.contact == "João"
        again = await notifier.acknowledge_reply("sms", "+5535999990001", code)
        assert again.status == "used"
    assert [(c.by, c.source) for c in acks.acks] == [("João", "notify:sms")]


async def test_resolution_reaches_everyone_told_and_nothing_after(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
        clock.advance(600)
        await notifier.escalate_due()
        await notifier.submit([event("resolved", since_ns=MONDAY_10H, at_ns=clock())])
        await notifier.submit([event("resolved", since_ns=MONDAY_10H, at_ns=clock())])
        clock.advance(3600)
        assert await notifier.escalate_due() == 0
        counts = await notifier.store.counts()
        resolved = []
        while (q := await notifier.store.next_due("email", clock())) is not None:
            resolved.append((q.message.contact, q.message.kind))
            await notifier.store.finish(q.id, "sent", now_ns=clock())
    assert counts[0].queued == 4
    assert resolved == [
        ("João", "firing"),
        ("Maria", "escalated"),
        ("João", "resolved"),
        ("Maria", "resolved"),
    ]


async def test_a_restart_keeps_the_queue_and_the_escalation(tmp_path: Path) -> None:
    clock = WallClock(MONDAY_10H)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock) as notifier:
        await notifier.submit([event(since_ns=MONDAY_10H)])
    clock.advance(600)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock) as notifier:
        assert await notifier.escalate_due() == 1
        counts = await notifier.store.counts()
    assert counts[0].queued == 2
    store = NotifyStore.open(tmp_path / "notify.sqlite3", now_ns=clock())
    try:
        assert [r.notified for r in store.escalations()] == [("João", "Maria")]
    finally:
        store.close()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(max_size=300), sender=st.text(max_size=30), text=st.text(max_size=300))
async def test_any_token_or_reply_is_a_refusal_never_an_exception(
    tmp_path: Path, token: str, sender: str, text: str
) -> None:
    clock = WallClock(MONDAY_10H)
    acks = AckRecorder()
    async with open_notifier(tmp_path, [RecordingChannel("sms")], clock=clock, acks=acks) as n:
        assert not (await n.acknowledge_token(token)).ok
        assert (await n.inspect_token(token))[0].status != "pending"
        assert not (await n.acknowledge_reply("sms", sender, text)).ok
    assert acks.acks == []


@pytest.mark.parametrize(
    "outcome", [Sent("id-1"), Retry("x", retry_after_s=None), Refused("y", None)]
)
def test_outcomes_are_values(outcome: Sent | Retry | Refused) -> None:
    assert outcome == type(outcome)(*[getattr(outcome, f) for f in outcome.__slots__])
