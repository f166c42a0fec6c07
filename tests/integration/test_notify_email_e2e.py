"""A wet lot reaches people by e-mail, end to end, with the real agent process.

A simulated ticket meter on a pty, the agent started as systemd would, a real SMTP
server (aiosmtpd, STARTTLS with a certificate made for the test, AUTH). The first
contact gets the alert, does not acknowledge, the alert escalates to the second; the
second acknowledges from the link in their e-mail (the agent's own page, a POST), and
the first is told who did it.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.agent.notify.smtpd import SmtpServer, Tls, make_tls
from tests.integration.harness import eventually

pytestmark = pytest.mark.integration

NOTIFY = """
[notify]
public_url = "{API}"
[notify.email]
host = "127.0.0.1"
port = {port}
security = "starttls"
username = "alertas"
password_env = "TEST_NOTIFY_SMTP_PASSWORD"
sender = "Armazém Ouro Fino <alertas@coop.example>"
ca_file = "{ca}"
[[notify.contacts]]
name = "João"
channels = {{ email = "joao@coop.example" }}
[[notify.contacts]]
name = "Maria"
channels = {{ email = "maria@coop.example" }}
lang = "en"
[[notify.routes]]
name = "plantao"
rules = ["wet_lot"]
contacts = ["João", "Maria"]
escalate_after_min = 0.05
"""


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def smtp(tls: Tls) -> AsyncIterator[SmtpServer]:
    server = SmtpServer(tls=tls, users={"alertas": "s3nha"})
    await server.start()
    yield server
    await server.stop()


def fetch(url: str, data: bytes | None = None) -> str:
    """GET (or POST ``data``) like a phone's browser; the page's text."""
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    with urllib.request.urlopen(request, timeout=5) as page:
        return str(page.read().decode())


def to(server: SmtpServer, address: str) -> list[str]:
    return [str(r.mail["Subject"]) for r in server.received if r.rcpt_tos == [address]]


async def test_wet_lot_mails_the_first_contact_then_escalates_and_is_acknowledged(
    tmp_path: Path, smtp: SmtpServer, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NOTIFY_SMTP_PASSWORD", "s3nha")
    rig = NotifyAgentRig(tmp_path, NOTIFY.format(port=smtp.port, ca=tls.ca_file, API="{API}"))
    try:
        await rig.start()
        await rig.emit(14.2)
        await eventually(
            lambda: to(smtp, "joao@coop.example") == ["[CRÍTICO] Lote úmido: L-WET"],
            timeout_s=15,
            what="the alert mailed to João",
            context=rig.agent.log_tail,
        )
        first = smtp.received[0]
        assert first.tls
        assert first.user == "alertas"
        assert to(smtp, "maria@coop.example") == []
        # Not acknowledged within 3 s: Maria is next, in English.
        await eventually(
            lambda: to(smtp, "maria@coop.example") == ["[CRITICAL] Wet lot: L-WET"],
            timeout_s=15,
            what="the escalation to Maria",
            context=rig.agent.log_tail,
        )
        escalated = next(r for r in smtp.received if r.rcpt_tos == ["maria@coop.example"])
        plain = escalated.mail.get_body(("plain",))
        assert plain is not None
        text = plain.get_content()
        assert text.splitlines()[0] == "Not acknowledged by João within 0.05 min.", text
        link = re.search(r"Acknowledge: (\S+)", text)
        assert link is not None
        assert link.group(1).startswith(rig.base + "/ack/")
        # Opening the link acknowledges nothing; the button does.
        page = await asyncio.to_thread(fetch, link.group(1))
        assert "Maria" in page
        assert rig.alert_state("L-WET") == "firing"
        page = await asyncio.to_thread(fetch, link.group(1), b"")
        assert "Alerta reconhecido. Obrigado, Maria!" in page
        await eventually(
            lambda: rig.alert_state("L-WET") == "acknowledged",
            timeout_s=10,
            what="the alert acknowledged",
        )
        await eventually(
            lambda: "Reconhecido: Lote úmido L-WET" in to(smtp, "joao@coop.example"),
            timeout_s=15,
            what="João told that Maria acknowledged",
            context=rig.agent.log_tail,
        )
        assert "acknowledged by Maria via link" in rig.agent.log_tail(20000)
        assert to(smtp, "maria@coop.example") == ["[CRITICAL] Wet lot: L-WET"]  # not told twice
        # Each message once, whatever the retries: one Message-ID each.
        ids = [str(r.mail["Message-ID"]) for r in smtp.received]
        assert len(ids) == len(set(ids)) == 3
    finally:
        rig.close()
