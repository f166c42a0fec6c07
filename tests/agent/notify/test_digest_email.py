"""The daily digest by e-mail, end to end, to a real SMTP server (aiosmtpd, STARTTLS, AUTH).

First in-process: the notifier as ``open_notify`` makes it, handed the facts provider
the agent builds over the real stores of ``test_digest_facts.open_site``; the mails the
server received carry every section, in each contact's language, with every value from
outside escaped in the HTML part. Then the real agent process, whose digest hour has
passed: its first digest carries the sections too (the app's wiring).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.notify.runtime import open_notify
from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.agent.notify.smtpd import Received, SmtpServer, Tls, make_tls
from tests.agent.notify.test_digest_facts import NOW, ZONE, open_site
from tests.integration.harness import eventually

pytestmark = pytest.mark.integration

PASSWORD_ENV = "TEST_DIGEST_SMTP_PASSWORD"


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def smtp(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SmtpServer]:
    monkeypatch.setenv(PASSWORD_ENV, "s3nha")
    server = SmtpServer(tls=tls, users={"alertas": "s3nha"})
    await server.start()
    yield server
    await server.stop()


def email_section(smtp: SmtpServer, tls: Tls) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "starttls",
        "username": "alertas",
        "password_env": PASSWORD_ENV,
        "sender": "Armazém Ouro Fino <alertas@coop.example>",
        "ca_file": str(tls.ca_file),
    }


def parts(received: Received) -> tuple[str, str]:
    plain = received.mail.get_body(("plain",))
    page = received.mail.get_body(("html",))
    assert plain is not None
    assert page is not None
    # Lines end in CRLF on the wire.
    return (
        str(plain.get_content()).replace("\r\n", "\n"),
        str(page.get_content()).replace("\r\n", "\n"),
    )


async def test_the_digest_mail_carries_every_section(
    tmp_path: Path, smtp: SmtpServer, tls: Tls
) -> None:
    cfg = NotifyConfig.model_validate(
        {
            "digest_hour": 7,
            "email": email_section(smtp, tls),
            "contacts": [
                {"name": "João", "channels": {"email": "joao@coop.example"}},
                {"name": "Maria", "channels": {"email": "maria@coop.example"}, "lang": "en"},
            ],
        }
    )
    async with (
        open_site(tmp_path) as site,
        open_notify(
            cfg, data_dir=tmp_path, site="Armazém Ouro Fino", zone=ZONE, clock_ns=lambda: NOW
        ) as notify,
    ):
        notify.notifier.digest_facts = site.provider  # as agent.app does
        assert await notify.notifier.digest_due() == 2
        task = asyncio.create_task(notify.notifier.channel_loop("email"))
        try:
            received = await smtp.wait_for(2)
            # Stopped only between sends: a send cut by a cancel is the next run's retry.
            async with asyncio.timeout(10):
                while notify.notifier.stats["email"].sent < 2:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    by_rcpt = {r.rcpt_tos[0]: r for r in received}
    joao, maria = by_rcpt["joao@coop.example"], by_rcpt["maria@coop.example"]
    assert str(joao.mail["Subject"]) == "Resumo diário — Armazém Ouro Fino — 30/11"
    assert str(maria.mail["Subject"]) == "Daily summary — Armazém Ouro Fino — 11/30"
    text, page = parts(joao)
    sections = text.rstrip("\n").split("\n\n")
    assert sections[0].startswith("Alertas abertos: nada a relatar")
    assert sections[1].split("\n") == [
        "Lotes de hoje (3):",
        "- L<&> (recepcao, arabica): 2 leituras, média 12,0 %, máx. 14,0 % — ÚMIDO (limite 12,5 %)",
        "- L-CONILON (recepcao, conilon): 2 leituras, média 13,0 %, máx. 13,2 %"
        " — ÚMIDO (limite 13,0 %)",
        "- L-SECO (recepcao, arabica): 2 leituras, média 11,3 %, máx. 11,6 % — ok (limite 12,5 %)",
    ]
    assert sections[2].split("\n") == [
        "Manutenção vencendo ou atrasada (2):",
        "- Descascador <1> (desc-1): Correia — ATRASADA, 145,0 h desde o último serviço,"
        " em 01/10 09:00 (intervalo 100,0 h)",
        "- Descascador <1> (desc-1): Troca de óleo — VENCENDO, 245,0 h sem serviço"
        " registrado (intervalo 250,0 h)",
    ]
    assert sections[3] == (
        "Equipamentos offline (1):\n- umid-2 (secador): sem dados desde que o agente iniciou"
    )
    assert sections[4] == (
        "Entregas de dados pendentes (1):\n"
        "- influx: 3 registros a entregar, nada entregue desde que o agente iniciou"
        " — connection refused"
    )
    # The HTML part: the same lines, every value from outside escaped.
    assert "<p>- L&lt;&amp;&gt; (recepcao, arabica): 2 leituras" in page
    assert "Descascador &lt;1&gt; (desc-1)" in page
    assert "L<&>" not in page
    assert "<1>" not in page
    text_en, _ = parts(maria)
    assert "Today's lots (3):" in text_en
    assert "- L<&> (recepcao, arabica): 2 readings, mean 12.0 %, max 14.0 % — WET" in text_en
    assert "Service tasks due or overdue (2):" in text_en
    assert "Devices offline (1):" in text_en
    assert "Data delivery backlogs (1):" in text_en


NOTIFY = """
[notify]
digest_hour = 0
[notify.email]
host = "127.0.0.1"
port = {port}
security = "starttls"
username = "alertas"
password_env = "{env}"
sender = "Armazém Ouro Fino <alertas@coop.example>"
ca_file = "{ca}"
[[notify.contacts]]
name = "João"
channels = {{ email = "joao@coop.example" }}
"""


async def test_the_agents_digest_mail_carries_every_section(
    tmp_path: Path, smtp: SmtpServer, tls: Tls
) -> None:
    rig = NotifyAgentRig(tmp_path, NOTIFY.format(port=smtp.port, ca=tls.ca_file, env=PASSWORD_ENV))
    try:
        await rig.start()
        # The digest's hour (0) has passed today: the agent sends it on start.
        await eventually(
            lambda: len(smtp.received) >= 1,
            timeout_s=20,
            what="the digest mailed",
            context=rig.agent.log_tail,
        )
    finally:
        rig.close()
    digest = smtp.received[0]
    assert str(digest.mail["Subject"]).startswith("Resumo diário — ")
    text, page = parts(digest)
    headings = [section.split("\n")[0] for section in text.rstrip("\n").split("\n\n")]
    assert [h.split(":")[0].split(" (")[0] for h in headings] == [
        "Alertas abertos",
        "Lotes de hoje",
        "Manutenção vencendo ou atrasada",
        "Equipamentos offline",
        "Entregas de dados pendentes",
    ]
    # No huller on this site; the history is read (or said unavailable), never missing.
    assert "Manutenção vencendo ou atrasada: nada a relatar" in text
    assert "Entregas de dados pendentes" in page
