"""E-mail against a real SMTP server (aiosmtpd): STARTTLS with a certificate made here,
AUTH, implicit TLS, a plain LAN relay; headers, encoding and text; every refusal sorted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from coffee_telemetry.agent.notify.config import EmailConfig
from coffee_telemetry.agent.notify.email import EmailChannel, encode_email
from coffee_telemetry.agent.notify.model import Message, Refused, Retry, Sent
from tests.agent.notify.smtpd import SmtpServer, Tls, make_tls

TITLE = "[CRÍTICO] Lote úmido: L-0042"
BODY = (
    "Lote L-0042 úmido: média 13,4 % (limite 12,5 %)\n"
    "Desde 30/11 10:41 — Armazém São João\n"
    "Reconhecer: http://armazem.local:8780/ack/abc.def"
)


def message(**overrides: object) -> Message:
    doc: dict[str, object] = {
        "key": "wet_lot/L-0042/1796035314000000000/firing/0/João/email",
        "channel": "email",
        "contact": "João Conceição",
        "address": "joao@coop.example",
        "lang": "pt-BR",
        "kind": "firing",
        "severity": "critical",
        "title": TITLE,
        "body": BODY,
        "episode": "wet_lot/L-0042/1796035314000000000",
        "ack_url": "http://armazem.local:8780/ack/abc.def",
        "ack_code": "123456",
        "created_ns": 1796035314000000000,
        "expires_ns": 1796121714000000000,
    }
    doc.update(overrides)
    return Message(**doc)  # type: ignore[arg-type]


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def starttls_server(tls: Tls) -> AsyncIterator[SmtpServer]:
    server = SmtpServer(tls=tls, users={"alertas": "s3nha-ção"})
    await server.start()
    yield server
    await server.stop()


def email_config(server: SmtpServer, tls: Tls, **overrides: object) -> EmailConfig:
    doc: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "starttls",
        "sender": "Armazém Ouro Fino <alertas@coop.example>",
        "ca_file": tls.ca_file,
    }
    doc.update(overrides)
    return EmailConfig.model_validate(doc)


def with_password(cfg: EmailConfig, monkeypatch: pytest.MonkeyPatch, password: str) -> EmailConfig:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
    return EmailConfig.model_validate(
        {**cfg.model_dump(), "username": "alertas", "password_env": "TEST_SMTP_PASSWORD"}
    )


async def test_starttls_and_auth_deliver_utf8_text_and_html(
    starttls_server: SmtpServer, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_password(email_config(starttls_server, tls), monkeypatch, "s3nha-ção")
    outcome = await EmailChannel(cfg).send(message())
    assert isinstance(outcome, Sent)
    [got] = await starttls_server.wait_for(1)
    assert got.tls
    assert got.user == "alertas"
    assert got.rcpt_tos == ["joao@coop.example"]
    mail = got.mail
    assert str(mail["Subject"]) == TITLE
    assert b"Subject: =?utf-8?" in got.raw  # RFC 2047 on the wire, not raw UTF-8
    assert str(make_header(decode_header(str(mail["From"])))) == (
        "Armazém Ouro Fino <alertas@coop.example>"
    )
    assert mail["To"].addresses[0].display_name == "João Conceição"
    assert mail["Message-ID"] == f"<{message().message_id}@coop.example>"
    assert mail["Content-Language"] == "pt-BR"
    assert mail["Importance"] == "high"
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(("plain",))
    page = mail.get_body(("html",))
    assert plain is not None
    assert page is not None
    assert plain.get_content_charset() == "utf-8"
    assert plain.get_content().replace("\r\n", "\n").strip() == BODY
    html = page.get_content()
    assert "<h2>[CRÍTICO] Lote úmido: L-0042</h2>" in html
    assert 'href="http://armazem.local:8780/ack/abc.def"' in html
    assert "Reconhecer</a>" in html


async def test_a_resend_carries_the_same_message_id() -> None:
    first = encode_email(message(), sender="a@coop.example")
    again = encode_email(message(created_ns=1796035999000000000), sender="a@coop.example")
    other = encode_email(message(key="wet_lot/L-0043/1/firing/0/João/email"), sender="a@x.y")
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != other["Message-ID"]


async def test_html_escapes_what_the_text_holds() -> None:
    mail = encode_email(message(body="Lote <b>&</b>", ack_url=None), sender="a@coop.example")
    page = mail.get_body(("html",))
    assert page is not None
    assert "<p>Lote &lt;b&gt;&amp;&lt;/b&gt;</p>" in page.get_content()
    assert "Reconhecer" not in page.get_content()


async def test_wrong_password_is_refused_for_good(
    starttls_server: SmtpServer, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_password(email_config(starttls_server, tls), monkeypatch, "errada")
    outcome = await EmailChannel(cfg).send(message())
    assert isinstance(outcome, Refused)
    assert outcome.status == 535
    assert "errada" not in outcome.reason
    assert starttls_server.received == []


async def test_implicit_tls_like_port_465(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SmtpServer(tls=tls, implicit_tls=True, users={"alertas": "pw"})
    await server.start()
    try:
        cfg = with_password(email_config(server, tls, security="tls"), monkeypatch, "pw")
        assert isinstance(await EmailChannel(cfg).send(message()), Sent)
        [got] = await server.wait_for(1)
    finally:
        await server.stop()
    assert str(got.mail["Subject"]) == TITLE


async def test_plain_lan_relay_without_auth(tls: Tls) -> None:
    server = SmtpServer()
    await server.start()
    try:
        cfg = email_config(server, tls, security="none")
        assert isinstance(await EmailChannel(cfg).send(message()), Sent)
        [got] = await server.wait_for(1)
    finally:
        await server.stop()
    assert not got.tls
    assert got.user is None


async def test_an_untrusted_certificate_is_retried_not_sent(
    starttls_server: SmtpServer, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")  # a CA that did not sign the server's certificate
    cfg = with_password(email_config(starttls_server, other), monkeypatch, "s3nha-ção")
    outcome = await EmailChannel(cfg).send(message())
    assert isinstance(outcome, Retry)
    assert starttls_server.received == []


@pytest.mark.parametrize(
    ("reply", "kind"),
    [("550 5.1.1 no such user", Refused), ("451 4.7.1 greylisted, try later", Retry)],
)
async def test_recipient_refusals_are_sorted_by_their_code(
    tls: Tls, reply: str, kind: type[Refused | Retry]
) -> None:
    server = SmtpServer(refuse_rcpt=reply)
    await server.start()
    try:
        outcome = await EmailChannel(email_config(server, tls, security="none")).send(message())
    finally:
        await server.stop()
    assert isinstance(outcome, kind)
    assert reply.split()[0] in outcome.reason


async def test_no_server_is_a_retry(tls: Tls) -> None:
    server = SmtpServer()  # never started: connection refused
    outcome = await EmailChannel(email_config(server, tls, security="none")).send(message())
    assert isinstance(outcome, Retry)
    assert "127.0.0.1" in outcome.reason
