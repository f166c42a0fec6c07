"""A 30 s SMTP outage: every notification made during it arrives afterwards, once each.

A real SMTP server (aiosmtpd, STARTTLS, AUTH) stops for 30 s while alerts fire, are
acknowledged and resolve; the notifier's e-mail loop keeps retrying with back-off. When
the server is back, each transition's message arrives exactly once (one Message-ID
each), in the order they happened.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from coffee_telemetry.agent.notify.config import EmailConfig
from coffee_telemetry.agent.notify.email import EmailChannel
from coffee_telemetry.agent.notify.queue import open_notify_store
from coffee_telemetry.agent.notify.service import Notifier
from tests.agent.notify.helpers import ZONE, event, notify_config
from tests.agent.notify.smtpd import SmtpServer, make_tls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_every_notification_arrives_once_after_a_30s_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls(tmp_path)
    server = SmtpServer(tls=tls, users={"alertas": "pw"})
    await server.start()
    monkeypatch.setenv("TEST_OUTAGE_SMTP", "pw")
    email = EmailConfig(
        host="127.0.0.1",
        port=server.port,
        username="alertas",
        password_env="TEST_OUTAGE_SMTP",
        sender="alertas@coop.example",
        ca_file=tls.ca_file,
        timeout_s=5,
    )
    cfg = notify_config(
        retry_initial_s=1.0,
        retry_max_s=4.0,
        routes=[{"name": "plantao", "contacts": ["João"]}],
        contacts=[{"name": "João", "channels": {"email": "joao@coop.example"}}],
    )
    async with open_notify_store(tmp_path / "notify.sqlite3", now_ns=time.time_ns()) as store:
        notifier = Notifier(
            cfg=cfg.model_copy(update={"email": email}),
            site="Armazém 1",
            zone=ZONE,
            store=store,
            channels={"email": EmailChannel(email)},
            link_key=b"k" * 32,
        )
        loop = asyncio.create_task(notifier.channel_loop("email"))
        try:
            a = time.time_ns()
            await notifier.submit([event(subject="L-A", since_ns=a)])
            await server.wait_for(1)
            await server.stop()
            outage = time.monotonic()
            b = time.time_ns()
            await notifier.submit([event(subject="L-B", since_ns=b)])
            await asyncio.sleep(5)
            await notifier.submit(
                [event("acknowledged", subject="L-A", since_ns=a, acked_by="maria")]
            )
            await asyncio.sleep(5)
            await notifier.submit([event("resolved", subject="L-B", since_ns=b)])
            await notifier.submit([event("resolved", subject="L-B", since_ns=b)])  # resubmitted
            await asyncio.sleep(30 - (time.monotonic() - outage))
            assert len(server.received) == 1
            assert notifier.stats["email"].retries >= 5
            await server.start()
            received = await server.wait_for(4, timeout_s=15)
            await asyncio.sleep(3)  # and nothing more
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await server.stop()
    subjects = [str(r.mail["Subject"]) for r in received]
    assert subjects == [
        "[CRÍTICO] Lote úmido: L-A",
        "[CRÍTICO] Lote úmido: L-B",
        "Reconhecido: Lote úmido L-A",
        "Resolvido: Lote úmido L-B",
    ]
    ids = [str(r.mail["Message-ID"]) for r in received]
    assert len(set(ids)) == 4
