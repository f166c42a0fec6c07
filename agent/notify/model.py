"""What notifications are made of: the alert events in, the messages out, the outcomes.

``AlertEvent`` is an alert transition as the notifier sees it (the app builds it from
``agent.alerts``' events: this package imports nothing of the alerts). ``Message`` is
one text for one contact on one channel, as queued on disk; a channel answers each send
with an ``Outcome``: ``Sent``, ``Retry`` (later, maybe after ``retry_after_s``) or
``Refused`` (never: a dead letter).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

__all__ = [
    "AlertEvent",
    "Channel",
    "Message",
    "MessageKind",
    "Outcome",
    "Refused",
    "Retry",
    "Sent",
]

#: Data values, as in an alert's ``data``.
Value = str | int | float | bool

#: What a message says: an alert firing (or its reminder), escalated to the next
#: contact, acknowledged, resolved, or the daily digest.
MessageKind = Literal["firing", "escalated", "acknowledged", "resolved", "digest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    """An alert event to notify.

    Attributes:
        rule: The rule's name (``wet_lot``).
        subject: What it is about (a lot code, a device id).
        state: ``firing``, ``acknowledged`` or ``resolved``.
        severity: ``info``, ``warning`` or ``critical``.
        since_ns: When the episode began; with rule and subject it names the episode.
        at_ns: When this event happened.
        repeat: 0 for the first firing notice, then 1, 2... for reminders.
        messages: The alert's one-line message by language (``pt-BR``, ``en``).
        acked_by: Who acknowledged it.
        data: The alert's details.
    """

    rule: str
    subject: str
    state: str
    severity: str
    since_ns: int
    at_ns: int
    repeat: int = 0
    messages: Mapping[str, str] = field(default_factory=dict)
    acked_by: str | None = None
    data: Mapping[str, Value] = field(default_factory=dict)

    @property
    def episode(self) -> str:
        """``rule/subject/since_ns``: one firing of one alert, across its events."""
        return f"{self.rule}/{self.subject}/{self.since_ns}"

    @property
    def event_id(self) -> str:
        """Names this event: a resubmission of it is recognised and not sent twice."""
        return f"{self.episode}/{self.state}/{self.repeat}"

    def message(self, lang: str) -> str:
        """The one-line message in ``lang`` (else any language there is)."""
        if lang in self.messages:
            return self.messages[lang]
        return next(iter(self.messages.values()), f"{self.rule} {self.subject}")

    def to_json(self) -> str:
        """As JSON (kept with an episode's escalation)."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> AlertEvent:
        """Read ``to_json``'s output back."""
        doc = json.loads(text)
        return cls(**doc)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One text for one contact on one channel, as queued.

    Attributes:
        key: Names the message: the alert event, the contact and the channel. A
            message with a key already queued or delivered is not queued again.
        channel: ``email``, ``sms``...
        contact: The contact's name.
        address: Where the channel sends it (e-mail address, phone, chat id, topic).
        lang: The text's language.
        kind: What it says (``MessageKind``).
        severity: The alert's severity (``digest`` messages: ``info``).
        title: A short line (e-mail subject, push title).
        body: The text (plain; channels escape it for their markup).
        episode: The alert episode it is about (empty for a digest).
        ack_url: The signed acknowledgement link, when there is one.
        ack_code: The short code an SMS or Telegram answer acknowledges with.
        created_ns: When it was queued.
        expires_ns: Past this it is dropped undelivered (with a record).
    """

    key: str
    channel: str
    contact: str
    address: str
    lang: str
    kind: MessageKind
    severity: str
    title: str
    body: str
    episode: str = ""
    ack_url: str | None = None
    ack_code: str | None = None
    created_ns: int = 0
    expires_ns: int = 0

    @property
    def message_id(self) -> str:
        """A stable id for this message (e-mail ``Message-ID``): a resend has the same."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    def to_json(self) -> str:
        """As stored in the queue."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Message:
        """Read ``to_json``'s output back."""
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Sent:
    """The channel took the message (``detail``: its id there, if any)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """Not now: the server is down, busy (429), timed out. Try again later.

    Attributes:
        reason: What happened (no secrets).
        retry_after_s: The delay the server asked for, if it asked.
    """

    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Never: bad credentials, no such chat or number, a refused text. A dead letter.

    Attributes:
        reason: What happened (no secrets).
        status: The protocol's code (HTTP status, SMTP reply, ``+CMS ERROR``), if any.
    """

    reason: str
    status: int | None = None


#: What a channel says about one send.
Outcome = Sent | Retry | Refused


class Channel(Protocol):
    """A way to reach people: sends one message at a time, never raises for a send."""

    @property
    def name(self) -> str:
        """The channel's name (``email``, ``sms``...)."""
        ...

    async def send(self, message: Message) -> Outcome:
        """Send ``message``; any failure is an outcome, not an exception."""
        ...

    def health(self) -> dict[str, object]:
        """What health shows about the channel beyond its queue (signal, last error)."""
        ...
