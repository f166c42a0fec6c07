"""``[notify]``: channels, contacts and routes of the notifications people get.

Declared here, beside the code that reads it, and hung on the site file's root model as
``Config.notify``; ``agent.config`` imports this module, so it imports nothing of the
agent. Secrets (SMTP password, bot and API tokens, the SIM PIN) never live in the file:
each ``*_env`` names an environment variable and each ``*_file`` a file, read once while
the file is validated, so a missing one stops the agent before it connects anywhere
(``notify.email: password_env: environment variable X is not set``).

Example (``examples/site.toml`` has a longer one)::

    [notify]
    public_url = "http://armazem.local:8780"
    [notify.email]
    host = "smtp.gmail.com"
    port = 587
    security = "starttls"
    username = "alertas@coop.example"
    password_env = "COFFEE_SMTP_PASSWORD"
    sender = "Armazém <alertas@coop.example>"
    [[notify.contacts]]
    name = "João"
    channels = { email = "joao@coop.example", sms = "+5535999990001" }
    [[notify.routes]]
    name = "plantao"
    rules = ["wet_lot"]
    contacts = ["João", "Maria"]
    escalate_after_min = 10
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

__all__ = [
    "CHANNELS",
    "AppriseConfig",
    "ContactConfig",
    "EmailConfig",
    "NotifyConfig",
    "NtfyConfig",
    "RouteConfig",
    "SmsConfig",
    "TelegramConfig",
    "WhatsAppConfig",
]

#: Every channel a contact may name, in the order the README lists them.
CHANNELS = ("email", "sms", "telegram", "ntfy", "whatsapp", "apprise")
Channel = Literal["email", "sms", "telegram", "ntfy", "whatsapp", "apprise"]
Lang = Literal["pt-BR", "en"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: ``HH:MM-HH:MM``, local time of the site; the end may be before the start (overnight).
QUIET = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"
#: A contact's name: printable, shown in messages and acknowledgement logs.
ContactName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _secret(env: str | None, file: Path | None, key: str) -> SecretStr | None:
    """The secret named by ``<key>_env`` or ``<key>_file``; ValueError naming the key."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{key}_env: environment variable {env} is not set")
        return SecretStr(value)
    if file is not None:
        try:
            return SecretStr(file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ValueError(f"{key}_file: cannot read {file}: {exc.strerror}") from None
    return None


class _WithSecret(_Model):
    """A channel with one secret (``<secret_key>_env`` or ``<secret_key>_file``)."""

    _secret_value: SecretStr | None = PrivateAttr(default=None)
    _secret_key: ClassVar[str] = "token"
    _secret_required: ClassVar[bool] = True

    @model_validator(mode="after")
    def _read_secret(self) -> _WithSecret:
        key = self._secret_key
        self._secret_value = _secret(getattr(self, f"{key}_env"), getattr(self, f"{key}_file"), key)
        if self._secret_value is None and self._secret_required:
            raise ValueError(f"set {key}_env or {key}_file")
        return self

    @property
    def secret(self) -> str | None:
        """The secret's value (never logged)."""
        return None if self._secret_value is None else self._secret_value.get_secret_value()


class EmailConfig(_WithSecret):
    """``[notify.email]``: an SMTP server (587 STARTTLS, 465 implicit TLS, or a LAN relay).

    Attributes:
        security: ``starttls`` (port 587), ``tls`` (implicit, port 465) or ``none``
            (a relay on the LAN; never across the internet).
        ca_file: Trust these certificates instead of the system's (a LAN relay's own CA).
    """

    _secret_key: ClassVar[str] = "password"
    _secret_required: ClassVar[bool] = False

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    sender: str
    ca_file: Path | None = None
    timeout_s: float = Field(default=20.0, gt=0, le=300)

    @model_validator(mode="after")
    def _password(self) -> EmailConfig:
        if self.username is not None and self.secret is None:
            raise ValueError("username is set: set password_env or password_file too")
        return self


class SmsConfig(_WithSecret):
    """``[notify.sms]``: a GSM/LTE USB modem on a serial port, spoken to in AT commands.

    Attributes:
        port: Its AT port, by a stable path (``/dev/serial/by-id/...``).
        pin_file: The SIM PIN, if the SIM asks for one (a file, 0600).
        delivery_reports: Ask the network for delivery reports.
        health_interval_s: How often signal quality and registration are read.
        reply_timeout_s: Longest wait for the modem's answer to one command.
        send_timeout_s: Longest wait for ``+CMGS`` (the network's answer to a message).
    """

    _secret_key: ClassVar[str] = "pin"
    _secret_required: ClassVar[bool] = False

    port: str
    baudrate: int = Field(default=115200, ge=1200, le=921600)
    pin_env: str | None = None
    pin_file: Path | None = None
    delivery_reports: bool = True
    health_interval_s: float = Field(default=60.0, gt=0, le=3600)
    reply_timeout_s: float = Field(default=5.0, gt=0, le=120)
    send_timeout_s: float = Field(default=60.0, gt=0, le=300)

    @model_validator(mode="after")
    def _pin(self) -> SmsConfig:
        if self.secret is not None and not re.fullmatch(r"\d{4,8}", self.secret):
            raise ValueError(f"{self._secret_key}: a SIM PIN is 4 to 8 digits")
        return self


class TelegramConfig(_WithSecret):
    """``[notify.telegram]``: a Telegram bot (``@BotFather`` gives the token).

    Attributes:
        poll_updates: Long-poll ``getUpdates`` for the acknowledge buttons.
    """

    api_url: str = "https://api.telegram.org"
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    poll_updates: bool = True


class NtfyConfig(_WithSecret):
    """``[notify.ntfy]``: an ntfy server (ntfy.sh or a self-hosted one); contacts name topics."""

    _secret_required: ClassVar[bool] = False

    url: str = "https://ntfy.sh"
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: float = Field(default=20.0, gt=0, le=300)


class WhatsAppConfig(_WithSecret):
    """``[notify.whatsapp]``: the WhatsApp Business Cloud API, template messages.

    Attributes:
        phone_number_id: The sending number's id (Meta's WhatsApp Manager).
        template: The approved template's name; its body takes {{1}} (the alert)
            and {{2}} (the acknowledgement link or code). README "Notificações" has
            the texts to register in ``pt_BR`` and ``en``.
    """

    api_url: str = "https://graph.facebook.com/v21.0"
    phone_number_id: Annotated[str, Field(pattern=r"^\d{5,20}$")]
    template: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,512}$")] = "alerta_armazem"
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: float = Field(default=20.0, gt=0, le=300)


class AppriseConfig(_Model):
    """``[notify.apprise]``: the long tail, through Apprise service URLs (optional extra).

    Contacts give the URL's environment variable or file as their address
    (``channels = { apprise = "env:COFFEE_APPRISE_JOAO" }``): the URLs hold secrets.
    """

    timeout_s: float = Field(default=30.0, gt=0, le=300)


class ContactConfig(_Model):
    """``[[notify.contacts]]``: a person, where to reach them and in which language.

    Attributes:
        name: Shown in messages and recorded with every acknowledgement.
        channels: Address per channel: an e-mail address, a phone number in
            international form (``+5535...``, SMS and WhatsApp), a Telegram chat
            id, an ntfy topic, or ``env:VAR``/``file:PATH`` holding an Apprise URL.
            Every channel listed gets every message.
        lang: The language of their messages.
    """

    name: ContactName
    channels: dict[Channel, str] = Field(min_length=1)
    lang: Lang = "pt-BR"

    @model_validator(mode="after")
    def _addresses(self) -> ContactConfig:
        for channel, address in self.channels.items():
            if channel in ("sms", "whatsapp") and not re.fullmatch(r"\+\d{8,15}", address):
                raise ValueError(f"channels.{channel}: a phone number like +5535999990000")
            if channel == "email" and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", address):
                raise ValueError(f"channels.{channel}: an e-mail address like joao@example.com")
            if channel == "telegram" and not re.fullmatch(r"-?\d{1,20}", address):
                raise ValueError(f"channels.{channel}: a numeric chat id")
            if channel == "ntfy" and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", address):
                raise ValueError(f"channels.{channel}: a topic name (letters, digits, - and _)")
            if channel == "apprise" and not re.fullmatch(r"(env|file):\S+", address):
                raise ValueError(f"channels.{channel}: env:VARIABLE or file:PATH")
        return self


class RouteConfig(_Model):
    """``[[notify.routes]]``: which alerts go to whom, when, and who is next.

    Attributes:
        rules: Alert rules it takes (empty: every rule).
        severities: Severities it takes.
        contacts: Contact names in escalation order: the first gets the alert; if it
            is not acknowledged within ``escalate_after_min``, the next, and so on.
        escalate_after_min: Minutes before the next contact is told (none: never).
        quiet_hours: ``HH:MM-HH:MM`` (site time): non-critical messages wait for the
            end; critical ones go at once.
        days: Days of the week (site time) the route is on duty.
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")]
    rules: tuple[str, ...] = ()
    severities: tuple[Literal["info", "warning", "critical"], ...] = ("warning", "critical")
    contacts: tuple[ContactName, ...] = Field(min_length=1)
    escalate_after_min: float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    quiet_hours: Annotated[str, Field(pattern=QUIET)] | None = None
    days: tuple[Day, ...] = DAYS


class NotifyConfig(_Model):
    """``[notify]``: notifications to people (see the README's "Notificações").

    Attributes:
        public_url: How phones reach the dashboard (acknowledgement links); none: the
            messages carry no link, only the SMS code.
        ack_link_hours: How long an acknowledgement link or code stays valid.
        max_age_h: A message not delivered within this is dropped (with a record).
        max_age_h_by_rule: The same, per alert rule.
        retry_initial_s: First retry delay of a channel that failed; doubles up to
            ``retry_max_s``. A server's ``Retry-After`` wins when longer.
        digest_hour: Local hour of the daily digest (none: no digest).
    """

    enabled: bool = True
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = None
    ack_link_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    max_age_h: float = Field(default=24.0, gt=0, le=24 * 30)
    max_age_h_by_rule: dict[str, Annotated[float, Field(gt=0, le=24 * 30)]] = Field(
        default_factory=dict
    )
    retry_initial_s: float = Field(default=5.0, gt=0, le=3600)
    retry_max_s: float = Field(default=300.0, gt=0, le=86400)
    digest_hour: int | None = Field(default=None, ge=0, le=23)
    email: EmailConfig | None = None
    sms: SmsConfig | None = None
    telegram: TelegramConfig | None = None
    ntfy: NtfyConfig | None = None
    whatsapp: WhatsAppConfig | None = None
    apprise: AppriseConfig | None = None
    contacts: tuple[ContactConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> NotifyConfig:
        names = [c.name for c in self.contacts]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"contact names must be unique; repeated: {', '.join(dup)}")
        routes = [r.name for r in self.routes]
        if dup := sorted({n for n in routes if routes.count(n) > 1}):
            raise ValueError(f"route names must be unique; repeated: {', '.join(dup)}")
        for route in self.routes:
            for name in route.contacts:
                if name not in names:
                    raise ValueError(f"route {route.name!r}: no contact named {name!r}")
        for contact in self.contacts:
            for channel in contact.channels:
                if getattr(self, channel) is None:
                    raise ValueError(
                        f"contact {contact.name!r}: {channel} needs a [notify.{channel}] section"
                    )
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self

    def max_age_s(self, rule: str) -> float:
        """How long a message about ``rule`` is worth delivering, in seconds."""
        return self.max_age_h_by_rule.get(rule, self.max_age_h) * 3600.0

    def contact(self, name: str) -> ContactConfig | None:
        """The contact named ``name``."""
        return next((c for c in self.contacts if c.name == name), None)
