"""E-mail over SMTP (aiosmtplib): 587 with STARTTLS, 465 with implicit TLS, or a LAN relay.

Each message is one connection: connect, (STARTTLS,) log in, send, quit. Alerts are
rare, a kept connection would be closed by the server long before the next one, and a
new connection per message leaves no state to go stale across outages.

The message is UTF-8 throughout: the subject is RFC 2047-encoded when it is not ASCII,
both parts are ``text/plain`` and ``text/html`` (``multipart/alternative``), the HTML a
plain escaped copy of the text with the acknowledgement link as a button. Its
``Message-ID`` is derived from the message's key (the alert event, the contact and the
channel), so a resend after a lost answer carries the same id and a mail client shows
it once.

Errors are sorted by what they mean for the next attempt:

* refused for good (a dead letter): authentication failed (535), the server lacks
  STARTTLS or AUTH it was asked for, a 5xx reply to the sender, a recipient or the data;
* try again later: connection refused or dropped, a timeout, a TLS failure on the way,
  a 4xx reply (greylisting, mailbox busy, rate limits).
"""

from __future__ import annotations

import asyncio
import html
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

import aiosmtplib

from coffee_telemetry.agent.notify.config import EmailConfig
from coffee_telemetry.agent.notify.model import Message, Outcome, Refused, Retry, Sent

__all__ = ["EmailChannel", "encode_email"]


def _domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "coffee-telemetry.invalid"


def encode_email(message: Message, *, sender: str) -> EmailMessage:
    """The e-mail for ``message`` (see the module docstring)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = formataddr((message.contact, message.address))
    mail["Subject"] = message.title
    mail["Date"] = format_datetime(datetime.fromtimestamp(message.created_ns / 1e9, tz=UTC))
    mail["Message-ID"] = f"<{message.message_id}@{_domain(sender)}>"
    mail["Auto-Submitted"] = "auto-generated"
    if message.severity == "critical" and message.kind in ("firing", "escalated"):
        mail["Importance"] = "high"
        mail["X-Priority"] = "1"
    mail.set_content(message.body, charset="utf-8", cte="quoted-printable")
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in message.body.split("\n") if line)
    button = ""
    if message.ack_url:
        label = "Acknowledge" if message.lang == "en" else "Reconhecer"
        button = (
            f'<p><a href="{html.escape(message.ack_url, quote=True)}" style="display:inline-block;'
            f'padding:10px 18px;background:#b00020;color:#fff;text-decoration:none">'
            f"{label}</a></p>"
        )
    page = (
        f'<!doctype html><html lang="{html.escape(message.lang)}"><meta charset="utf-8">'
        f"<body><h2>{html.escape(message.title)}</h2>{paragraphs}{button}</body></html>"
    )
    mail.add_alternative(page, subtype="html", charset="utf-8", cte="quoted-printable")
    mail["Content-Language"] = message.lang  # after the parts: set_content clears Content-*
    return mail


class EmailChannel:
    """Sends messages by SMTP (``[notify.email]``)."""

    def __init__(self, cfg: EmailConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self._cfg = cfg
        if tls_context is None and cfg.security != "none":
            tls_context = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file else None
            )
        self._tls = tls_context
        self._last: str | None = None

    @property
    def name(self) -> str:
        """``email``."""
        return "email"

    def health(self) -> dict[str, object]:
        """The server and the last answer."""
        return {"server": f"{self._cfg.host}:{self._cfg.port}", "last_answer": self._last}

    async def send(self, message: Message) -> Outcome:
        """Send one message (one SMTP connection)."""
        cfg = self._cfg
        mail = encode_email(message, sender=cfg.sender)
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=self._tls,
            timeout=cfg.timeout_s,
        )
        try:
            async with asyncio.timeout(cfg.timeout_s):
                await client.connect()
                try:
                    if cfg.username is not None:
                        if client.is_ehlo_or_helo_needed:
                            await client.ehlo()
                        if not client.supports_extension("auth"):
                            return self._refused("server offers no AUTH; check security", None)
                        await client.login(cfg.username, cfg.secret or "")
                    errors, answer = await client.send_message(mail)
                except asyncio.CancelledError:
                    # Stopping: no polite QUIT, which would wait for a server that may
                    # never answer (the finally below skips a closed connection).
                    client.close()
                    raise
                finally:
                    if client.is_connected:
                        try:
                            await client.quit()
                        except aiosmtplib.SMTPException:
                            client.close()
        except aiosmtplib.SMTPAuthenticationError as exc:
            return self._refused(f"authentication failed: {exc.code} {exc.message}", exc.code)
        except aiosmtplib.SMTPNotSupported as exc:
            return self._refused(f"server does not support it: {exc}", None)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(code >= 500 for code in codes):
                return self._refused(f"recipient refused: {text}", codes[0] if codes else None)
            return self._retry(f"recipient deferred: {text}")
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                return self._refused(f"refused: {exc.code} {exc.message}", exc.code)
            return self._retry(f"deferred: {exc.code} {exc.message}")
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            return self._retry(f"no answer within {cfg.timeout_s:g} s")
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            return self._retry(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
        refused = "; ".join(f"{who}: {r.code} {r.message}" for who, r in errors.items())
        if refused:
            return self._refused(f"recipient refused: {refused}", None)
        self._last = answer
        return Sent(answer)

    def _refused(self, reason: str, code: int | None) -> Refused:
        self._last = reason
        return Refused(f"{self._cfg.host}: {reason}", code)

    def _retry(self, reason: str) -> Retry:
        self._last = reason
        return Retry(f"{self._cfg.host}: {reason}")
