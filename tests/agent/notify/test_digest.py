"""The daily digest: once a day at its hour, one message per contact in their language."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coffee_telemetry.agent.notify import service
from coffee_telemetry.agent.notify.digest import (
    DeviceOffline,
    DigestFacts,
    LotVerdict,
    SinkBacklog,
)
from tests.agent.notify.helpers import (
    RecordingChannel,
    WallClock,
    event,
    local_ns,
    notify_config,
    open_notifier,
)


async def drain_titles(notifier: object, clock: WallClock) -> list[tuple[str, str, str, str]]:
    from coffee_telemetry.agent.notify.service import Notifier

    assert isinstance(notifier, Notifier)
    out = []
    for channel in ("email", "sms"):
        while (q := await notifier.store.next_due(channel, clock())) is not None:
            out.append((q.message.contact, channel, q.message.title, q.message.body))
            await notifier.store.finish(q.id, "sent", now_ns=clock())
    return out


async def test_the_digest_goes_once_a_day_at_its_hour(tmp_path: Path) -> None:
    yesterday = local_ns("2026-11-29 15:00")
    clock = WallClock(yesterday)
    cfg = notify_config(digest_hour=7)
    channels = [RecordingChannel("email"), RecordingChannel("sms")]
    async with open_notifier(tmp_path, channels, clock=clock, cfg=cfg) as notifier:
        l1 = event(subject="L-1", since_ns=yesterday)
        silent = event(
            rule="device_silent", subject="umid-2", severity="warning", since_ns=yesterday + 1
        )
        await notifier.submit([l1, silent])
        clock.now_ns = local_ns("2026-11-29 15:10")
        await notifier.submit(
            [
                event(
                    "acknowledged",
                    subject="L-1",
                    since_ns=yesterday,
                    at_ns=clock(),
                    acked_by="Maria",
                )
            ]
        )
        await notifier.submit(
            [event("resolved", rule="device_silent", subject="umid-2", severity="warning",
                   since_ns=yesterday + 1, at_ns=clock())]
        )  # fmt: skip
        await drain_titles(notifier, clock)
        clock.now_ns = local_ns("2026-11-30 06:59")
        assert await notifier.digest_due() == 0
        clock.now_ns = local_ns("2026-11-30 07:00")
        assert await notifier.digest_due() == 2
        assert await notifier.digest_due() == 0
        sent = await drain_titles(notifier, clock)
    assert sent == [
        (
            "João",
            "email",  # not SMS: he has e-mail
            "Resumo diário — Armazém 1 — 30/11",
            "Alertas abertos (1):\n"
            "- Lote úmido L-1, desde 29/11 15:00 (reconhecido por Maria)\n"
            "Últimas 24 h: 2 alertas (Lote úmido: 1, Equipamento sem dados: 1)."
            " Reconhecidos: 1 (Maria: 1). Resolvidos: 1.",
        ),
        (
            "Maria",
            "email",
            "Daily summary — Armazém 1 — 11/30",
            "Open alerts (1):\n"
            "- Wet lot L-1, since 11/29 15:00 (acknowledged by Maria)\n"
            "Last 24 h: 2 alerts (Wet lot: 1, Device silent: 1)."
            " Acknowledged: 1 (Maria: 1). Resolved: 1.",
        ),
    ]
    # A restart the same day sends nothing more; the next day says what is still open.
    clock.now_ns = local_ns("2026-11-30 09:00")
    async with open_notifier(tmp_path, channels, clock=clock, cfg=cfg) as notifier:
        assert await notifier.digest_due() == 0
        clock.now_ns = local_ns("2026-12-01 07:30")
        assert await notifier.digest_due() == 2
        sent = await drain_titles(notifier, clock)
    assert sent[1][3] == (
        "Open alerts (1):\n"
        "- Wet lot L-1, since 11/29 15:00 (acknowledged by Maria)\n"
        "No alerts in the last 24 h."
    )


async def test_a_quiet_day(tmp_path: Path) -> None:
    clock = WallClock(local_ns("2026-11-30 08:00"))
    cfg = notify_config(digest_hour=7)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        assert await n.digest_due() == 2
        sent = await drain_titles(n, clock)
    assert [body for _, _, _, body in sent] == [
        "Alertas abertos: nada a relatar\nNenhum alerta nas últimas 24 h.",
        "Open alerts: nothing to report\nNo alerts in the last 24 h.",
    ]


async def test_the_digest_carries_the_providers_facts_per_contact(tmp_path: Path) -> None:
    clock = WallClock(local_ns("2026-11-30 08:00"))
    asked: list[int] = []

    async def provider(now_ns: int) -> DigestFacts:
        asked.append(now_ns)
        return DigestFacts(
            lots=(LotVerdict("L-7", "recepcao", "", 3, 13.0, 13.5, 12.5, True, now_ns),),
            tasks=(),
            offline=(DeviceOffline("umid-2", "", now_ns, None, None),),
            backlogs=(SinkBacklog("influx", 12, None, None),),
        )

    sms_only = notify_config(
        digest_hour=7,
        contacts=[{"name": "Zé", "channels": {"sms": "+5535999990009"}}],
        routes=[],
    )
    channels = [RecordingChannel("email"), RecordingChannel("sms")]
    cfg = notify_config(digest_hour=7)
    async with open_notifier(tmp_path, channels, clock=clock, cfg=cfg) as notifier:
        notifier.digest_facts = provider
        assert await notifier.digest_due() == 2
        sent = await drain_titles(notifier, clock)
    assert asked == [clock()]  # once for all the contacts
    joao, maria = (body for _, _, _, body in sent)
    assert joao.split("\n\n")[1:] == [
        "Lotes de hoje (1):\n"
        "- L-7 (recepcao): 3 leituras, média 13,0 %, máx. 13,5 % — ÚMIDO (limite 12,5 %)",
        "Manutenção vencendo ou atrasada: nada a relatar",
        "Equipamentos offline (1):\n- umid-2: sem dados desde que o agente iniciou",
        "Entregas de dados pendentes (1):\n"
        "- influx: 12 registros a entregar, nada entregue desde que o agente iniciou",
    ]
    assert maria.split("\n\n")[2] == "Service tasks due or overdue: nothing to report"
    # A contact with only SMS gets it there.
    async with open_notifier(tmp_path / "sms", channels, clock=clock, cfg=sms_only) as notifier:
        notifier.digest_facts = provider
        assert await notifier.digest_due() == 1
        [(who, channel, _, body)] = await drain_titles(notifier, clock)
    assert (who, channel) == ("Zé", "sms")
    assert "Lotes de hoje (1):" in body


async def test_a_failing_provider_still_lets_the_digest_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = WallClock(local_ns("2026-11-30 08:00"))

    async def broken(now_ns: int) -> DigestFacts:
        raise OSError("disk gone")

    cfg = notify_config(digest_hour=7)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        n.digest_facts = broken
        assert await n.digest_due() == 2
        sent = await drain_titles(n, clock)
    assert sent[0][3].split("\n\n")[1:] == [
        "Lotes de hoje: indisponível",
        "Manutenção vencendo ou atrasada: indisponível",
        "Equipamentos offline: indisponível",
        "Entregas de dados pendentes: indisponível",
    ]
    assert "could not gather its facts" in caplog.text
    assert "disk gone" in caplog.text


async def test_a_provider_that_hangs_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = WallClock(local_ns("2026-11-30 08:00"))
    monkeypatch.setattr(service, "DIGEST_FACTS_TIMEOUT_S", 0.05)

    async def stuck(now_ns: int) -> DigestFacts:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    cfg = notify_config(digest_hour=7)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        n.digest_facts = stuck
        assert await n.digest_due() == 2
        sent = await drain_titles(n, clock)
    assert "Lotes de hoje: indisponível" in sent[0][3]
