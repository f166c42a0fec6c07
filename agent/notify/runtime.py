"""Opening notifications for the agent: the queue, the channels, the notifier, its loops.

``open_notify`` is what ``agent.app`` calls: it opens the queue database, makes the
link-signing key on first start, opens one channel per configured section, wires the
answers (SMS replies, Telegram buttons) back to the notifier's acknowledgements, and
lists the loops to run, each under its own supervisor: one per channel, the
escalations, the modem and the Telegram updates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

from coffee_telemetry.agent.notify.acks import load_link_key
from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.notify.email import EmailChannel
from coffee_telemetry.agent.notify.model import Channel
from coffee_telemetry.agent.notify.push import (
    NtfyChannel,
    TelegramChannel,
    WhatsAppChannel,
    open_http_session,
)
from coffee_telemetry.agent.notify.queue import open_notify_store
from coffee_telemetry.agent.notify.service import AckResult, Notifier
from coffee_telemetry.agent.notify.sms import ModemChannel

__all__ = ["RELOADABLE_CHANNELS", "NotifyRuntime", "ack_answer", "open_notify"]

log = logging.getLogger(__name__)

#: Where the queue lives, in ``data_dir``.
QUEUE_FILE = "notify.sqlite3"
#: The link-signing key, in ``data_dir``.
KEY_FILE = "notify-link.key"

#: Channels a reload may add, change or remove; the SMS modem and Telegram's updates
#: hold a port or a poll loop of their own and need a restart.
RELOADABLE_CHANNELS = ("email", "ntfy", "whatsapp", "apprise")


@dataclass(frozen=True, slots=True)
class NotifyRuntime:
    """The open notifier and the loops to supervise, by interface name."""

    notifier: Notifier
    loops: dict[str, Callable[[], Awaitable[None]]]
    #: The SMS modem, when ``[notify.sms]`` is set (also the ``modem`` time source).
    modem: ModemChannel | None = None
    #: Makes one of ``RELOADABLE_CHANNELS`` from a new ``[notify]`` (a reload).
    reopen: Callable[[str, NotifyConfig], Awaitable[Channel]] | None = None


def ack_answer(result: AckResult, lang: str = "pt-BR") -> str:
    """One short line about an acknowledgement attempt (Telegram's popup, logs)."""
    pt = {
        "acknowledged": "Alerta reconhecido. Obrigado!",
        "used": "Este código já foi usado.",
        "expired": "Este código expirou.",
        "closed": "Este alerta já foi reconhecido ou resolvido.",
        "failed": "Não foi possível reconhecer o alerta.",
    }
    en = {
        "acknowledged": "Alert acknowledged. Thank you!",
        "used": "This code was used already.",
        "expired": "This code has expired.",
        "closed": "This alert was already acknowledged or resolved.",
        "failed": "The alert could not be acknowledged.",
    }
    table = en if lang == "en" else pt
    return table.get(result.status, "Código inválido." if lang != "en" else "Invalid code.")


@asynccontextmanager
async def open_notify(
    cfg: NotifyConfig,
    *,
    data_dir: Path,
    site: str,
    zone: ZoneInfo,
    clock_ns: Callable[[], int] = time.time_ns,
) -> AsyncIterator[NotifyRuntime]:
    """Open notifications as ``[notify]`` says, for the duration.

    Raises:
        OSError: The data directory cannot hold the key or the queue.
        sqlite3.Error: The queue database cannot be opened.
    """
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            open_notify_store(data_dir / QUEUE_FILE, now_ns=clock_ns())
        )
        key = load_link_key(data_dir / KEY_FILE)
        channels: dict[str, Channel] = {}
        if cfg.email is not None:
            channels["email"] = EmailChannel(cfg.email)
        modem = None
        if cfg.sms is not None:
            modem = channels["sms"] = ModemChannel(cfg.sms)
        telegram = None
        http: list[aiohttp.ClientSession] = []  # one session, opened when a channel needs it
        if cfg.telegram is not None or cfg.ntfy is not None or cfg.whatsapp is not None:
            session = await stack.enter_async_context(open_http_session())
            http.append(session)
            if cfg.telegram is not None:
                telegram = channels["telegram"] = TelegramChannel(cfg.telegram, session)
            if cfg.ntfy is not None:
                channels["ntfy"] = NtfyChannel(cfg.ntfy, session)
            if cfg.whatsapp is not None:
                channels["whatsapp"] = WhatsAppChannel(cfg.whatsapp, session)
        if cfg.apprise is not None:
            from coffee_telemetry.agent.notify.apprise import AppriseChannel

            channels["apprise"] = AppriseChannel(cfg.apprise)
        notifier = Notifier(
            cfg=cfg, site=site, zone=zone, store=store, channels=channels, link_key=key,
            clock_ns=clock_ns,
        )  # fmt: skip
        loops = notifier.loops()
        if modem is not None:

            async def sms_reply(sender: str, text: str) -> None:
                await notifier.acknowledge_reply("sms", sender, text)

            modem.on_reply = sms_reply
            loops["notify-modem"] = modem.run_loop
        if telegram is not None:

            async def telegram_reply(chat: str, code: str) -> str:
                result = await notifier.acknowledge_reply("telegram", chat, code)
                contact = (
                    None if result.contact is None else notifier.config.contact(result.contact)
                )
                return ack_answer(result, contact.lang if contact else "pt-BR")

            telegram.on_reply = telegram_reply
            loops["notify-telegram-updates"] = telegram.run_loop
        log.info(
            "Notifications: channels %s, %d contacts, %d routes",
            ", ".join(channels) or "none",
            len(cfg.contacts),
            len(cfg.routes),
        )

        async def reopen(name: str, new: NotifyConfig) -> Channel:
            if name == "email" and new.email is not None:
                return EmailChannel(new.email)
            if name == "apprise" and new.apprise is not None:
                from coffee_telemetry.agent.notify.apprise import AppriseChannel

                return AppriseChannel(new.apprise)
            if not http:
                http.append(await stack.enter_async_context(open_http_session()))
            if name == "ntfy" and new.ntfy is not None:
                return NtfyChannel(new.ntfy, http[0])
            if name == "whatsapp" and new.whatsapp is not None:
                return WhatsAppChannel(new.whatsapp, http[0])
            raise ValueError(f"channel {name} is not configured or needs a restart")

        yield NotifyRuntime(notifier=notifier, loops=loops, modem=modem, reopen=reopen)
