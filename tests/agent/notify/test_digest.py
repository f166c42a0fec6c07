"""The daily digest: once a day at its hour, one message per contact in their language."""

from __future__ import annotations

from pathlib import Path

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
            "Últimas 24 h: 2 alertas (Lote úmido: 1, Equipamento sem dados: 1).\n"
            "Reconhecidos: 1 (Maria: 1). Resolvidos: 1.\n"
            "Abertos agora: 1\n"
            "- Lote úmido L-1, desde 29/11 15:00 (reconhecido por Maria)",
        ),
        (
            "Maria",
            "email",
            "Daily summary — Armazém 1 — 11/30",
            "Last 24 h: 2 alerts (Wet lot: 1, Device silent: 1).\n"
            "Acknowledged: 1 (Maria: 1). Resolved: 1.\n"
            "Open now: 1\n"
            "- Wet lot L-1, since 11/29 15:00 (acknowledged by Maria)",
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
        "Last 24 h: 0 alerts.\nAcknowledged: 0. Resolved: 0.\nOpen now: 1\n"
        "- Wet lot L-1, since 11/29 15:00 (acknowledged by Maria)"
    )


async def test_a_quiet_day(tmp_path: Path) -> None:
    clock = WallClock(local_ns("2026-11-30 08:00"))
    cfg = notify_config(digest_hour=7)
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, cfg=cfg) as n:
        assert await n.digest_due() == 2
        sent = await drain_titles(n, clock)
    assert [body for _, _, _, body in sent] == [
        "Nenhum alerta nas últimas 24 h.",
        "No alerts in the last 24 h.",
    ]
