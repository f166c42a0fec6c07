"""Fakes and builders the notification tests share.

``RecordingChannel`` is a channel that answers from a script of outcomes (``Sent`` once
the script is spent) and keeps every message it was asked to send. ``WallClock`` is a
settable UTC clock in nanoseconds. ``AckRecorder`` is the alert side of the command
boundary: it records every ``ack/<rule>/<subject>`` it is handed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.commands import Command, CommandBoundary, CommandRefused
from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.notify.model import AlertEvent, Message, Outcome, Sent
from coffee_telemetry.agent.notify.queue import open_notify_store
from coffee_telemetry.agent.notify.service import Notifier

ZONE = ZoneInfo("America/Sao_Paulo")
NS = 1_000_000_000


def local_ns(text: str) -> int:
    """``2026-11-30 10:41`` in São Paulo time, as UTC ns."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()) * NS


class WallClock:
    """A UTC clock in ns that moves only when a test moves it."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * NS)


class RecordingChannel:
    """A channel that answers from ``script`` (then ``Sent``) and keeps what it got."""

    def __init__(
        self, name: str, script: Sequence[Outcome] = (), *, forever: Outcome | None = None
    ):
        self._name = name
        self.script = list(script)
        self.forever = forever
        self.sent: list[Message] = []
        self.attempts: list[tuple[float, Message]] = []
        self.changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: Message) -> Outcome:
        self.attempts.append((asyncio.get_running_loop().time(), message))
        self.changed.set()
        if self.script:
            outcome = self.script.pop(0)
        elif self.forever is not None:
            outcome = self.forever
        else:
            outcome = Sent()
        if isinstance(outcome, Sent):
            self.sent.append(message)
        return outcome

    def health(self) -> dict[str, object]:
        return {"fake": True}

    async def wait_for(self, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self.changed.clear()
                await self.changed.wait()


class AckRecorder:
    """The alert side of ``cmd/ack``: records acknowledgements, refuses unknown alerts."""

    def __init__(self, firing: set[tuple[str, str]] | None = None) -> None:
        self.firing = firing
        self.acks: list[Command] = []

    async def __call__(self, cmd: Command) -> dict[str, object]:
        _, rule, subject = cmd.path
        if self.firing is not None and (rule, subject) not in self.firing:
            raise CommandRefused("no firing alert to acknowledge")
        self.acks.append(cmd)
        return {"rule": rule, "subject": subject, "by": cmd.by}


def event(
    state: str = "firing",
    *,
    rule: str = "wet_lot",
    subject: str = "L-0042",
    severity: str = "critical",
    since_ns: int,
    at_ns: int | None = None,
    repeat: int = 0,
    acked_by: str | None = None,
) -> AlertEvent:
    """A wet-lot alert event (messages in both languages)."""
    return AlertEvent(
        rule=rule,
        subject=subject,
        state=state,
        severity=severity,
        since_ns=since_ns,
        at_ns=since_ns if at_ns is None else at_ns,
        repeat=repeat,
        messages={
            "pt-BR": f"Lote {subject} úmido: média 13,4 % (limite 12,5 %)",
            "en": f"Lot {subject} wet: mean 13.4 % (threshold 12.5 %)",
        },
        acked_by=acked_by,
    )


def notify_config(**overrides: object) -> NotifyConfig:
    """Two contacts (João by e-mail and SMS, Maria by e-mail) on one escalating route."""
    doc: dict[str, object] = {
        "public_url": "http://armazem.local:8780",
        "email": {"host": "127.0.0.1", "port": 2525, "security": "none", "sender": "a@b.c"},
        "sms": {"port": "/dev/null"},
        "contacts": [
            {
                "name": "João",
                "channels": {"email": "joao@coop.example", "sms": "+5535999990001"},
            },
            {"name": "Maria", "channels": {"email": "maria@coop.example"}, "lang": "en"},
        ],
        "routes": [
            {
                "name": "plantao",
                "contacts": ["João", "Maria"],
                "escalate_after_min": 10,
                "severities": ["warning", "critical"],
            }
        ],
    }
    doc.update(overrides)
    return NotifyConfig.model_validate(doc)


@asynccontextmanager
async def open_notifier(
    tmp: Path,
    channels: Sequence[RecordingChannel],
    *,
    cfg: NotifyConfig | None = None,
    clock: WallClock,
    acks: AckRecorder | None = None,
) -> AsyncIterator[Notifier]:
    """A notifier on a real queue database in ``tmp``, with the channels given."""
    commands = CommandBoundary({"ack": acks or AckRecorder()})
    async with open_notify_store(tmp / "notify.sqlite3", now_ns=clock()) as store:
        yield Notifier(
            cfg=cfg or notify_config(),
            site="Armazém 1",
            zone=ZONE,
            store=store,
            channels={c.name: c for c in channels},
            link_key=b"k" * 32,
            commands=commands,
            clock_ns=clock,
        )


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``check`` every 10 ms until it holds (fails after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)
