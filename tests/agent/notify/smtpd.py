"""A real SMTP server for the tests: aiosmtpd on a free loopback port, in the test's loop.

It speaks STARTTLS (or implicit TLS) with a certificate made by ``trustme`` for the
test, asks for AUTH when given users, and keeps every message it accepted, parsed, with
how the session went (TLS or not, who logged in). ``stop()`` and ``start()`` again on
the same port make an outage. ``refuse_rcpt`` answers RCPT with a given reply.
"""

from __future__ import annotations

import asyncio
import email
import ssl
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.services.net import free_port


@dataclass
class Received:
    """One accepted message."""

    mail: EmailMessage
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    user: str | None
    at_ns: int = field(default_factory=time.time_ns)


@dataclass
class Tls:
    """A test CA and a server certificate for 127.0.0.1."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_file: Path


def make_tls(tmp: Path) -> Tls:
    """A CA made now, a certificate for 127.0.0.1 and localhost, both sides' contexts."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca_file = tmp / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(server=server, client=client, ca_file=ca_file)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.server.refuse_rcpt is not None:
            return self.server.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        mail = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(mail, EmailMessage)
        user = (
            session.auth_data.login.decode()
            if isinstance(session.auth_data, LoginPassword)
            else None
        )
        self.server.received.append(
            Received(
                mail=mail,
                raw=raw,
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                tls=session.ssl is not None,
                user=user,
            )
        )
        self.server.changed.set()
        return "250 Message accepted"


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1 (see the module docstring)."""

    tls: Tls | None = None
    implicit_tls: bool = False
    users: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    refuse_rcpt: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _sessions: list[SMTP] = field(default_factory=list)

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def _protocol(self) -> SMTP:
        starttls = self.tls is not None and not self.implicit_tls
        with warnings.catch_warnings():
            # Implicit TLS: aiosmtpd cannot see that the socket is TLS and warns about AUTH.
            warnings.simplefilter("ignore", UserWarning)
            protocol = self._make(starttls)
        self._sessions.append(protocol)
        return protocol

    def _make(self, starttls: bool) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="smtp.test",
            tls_context=self.tls.server if starttls and self.tls else None,
            require_starttls=starttls,
            auth_required=bool(self.users),
            # Implicit TLS is invisible to aiosmtpd's check; the socket is TLS all the same.
            auth_require_tls=starttls,
            authenticator=self._authenticate if self.users else None,
            enable_SMTPUTF8=True,
        )

    async def start(self) -> None:
        ssl_context = self.tls.server if self.tls is not None and self.implicit_tls else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, "127.0.0.1", self.port, ssl=ssl_context, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for session in self._sessions:  # an outage drops the open connections too
                if session.transport is not None:
                    session.transport.close()
            self._sessions.clear()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.received
