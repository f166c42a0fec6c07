"""The long tail through Apprise service URLs (``pip install coffee-telemetry[apprise]``).

Apprise knows a hundred services (Discord, Slack, Matrix, Pushover, Gotify, Signal
through signal-cli's REST API...). A contact's ``apprise`` address names where its URL
is kept, never the URL itself (it holds the service's token): ``env:VARIABLE`` or
``file:/etc/coffee-telemetry/apprise-joao``. Apprise is synchronous (``requests``),
so each send runs on a worker thread within ``timeout_s``; a send that overruns is a
``Retry`` (its thread finishes on its own, it cannot be stopped).

Apprise says only whether a send worked: a failure is a ``Retry`` (up to the message's
max age); a URL Apprise cannot read, or one that is missing, is ``Refused``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import apprise

from coffee_telemetry.agent.notify.config import AppriseConfig
from coffee_telemetry.agent.notify.model import Message, Outcome, Refused, Retry, Sent

__all__ = ["AppriseChannel"]

_TYPES = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}


def _url(address: str) -> str | None:
    kind, _, where = address.partition(":")
    if kind == "env":
        return os.environ.get(where)
    try:
        return Path(where).read_text(encoding="utf-8").strip()
    except OSError:
        return None


class AppriseChannel:
    """Messages through Apprise service URLs (``[notify.apprise]``)."""

    name = "apprise"

    def __init__(self, cfg: AppriseConfig) -> None:
        self._cfg = cfg
        self._last: str | None = None

    def health(self) -> dict[str, object]:
        """The last answer."""
        return {"last_answer": self._last}

    async def send(self, message: Message) -> Outcome:
        """Send through the contact's Apprise URL."""
        url = _url(message.address)
        if not url:
            return self._note(Refused(f"no Apprise URL in {message.address}"))
        hub = apprise.Apprise()
        if not hub.add(url):
            return self._note(Refused(f"Apprise cannot use the URL in {message.address}"))
        kind = apprise.NotifyType.SUCCESS
        if message.kind in ("firing", "escalated"):
            kind = _TYPES.get(message.severity, apprise.NotifyType.INFO)
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                ok = await asyncio.to_thread(
                    hub.notify, body=message.body, title=message.title, notify_type=kind
                )
        except TimeoutError:
            return self._note(Retry(f"no answer within {self._cfg.timeout_s:g} s"))
        if not ok:
            return self._note(Retry(f"Apprise could not send to {message.address}"))
        return self._note(Sent())

    def _note(self, outcome: Outcome) -> Outcome:
        self._last = outcome.reason if isinstance(outcome, Retry | Refused) else "sent"
        return outcome
