"""The HTTP channels: Telegram (Bot API), ntfy, and WhatsApp (Business Cloud API).

Telegram
    ``POST <api>/bot<token>/sendMessage`` with ``chat_id``, the text in HTML parse mode
    (the title bold; every dynamic value escaped: a lot code with ``<`` or ``&`` stays
    text) and, when the message carries an acknowledgement code, an inline button
    ``Reconhecer`` whose ``callback_data`` is ``ack:<code>``. With ``poll_updates``,
    ``run_loop`` long-polls ``getUpdates`` for those buttons and hands
    ``(chat id, code)`` to ``on_reply``; the notifier acknowledges if the chat is the
    code's contact's, and the button's spinner stops with the answer
    (``answerCallbackQuery``). A 429 carries ``parameters.retry_after``.
ntfy
    ``POST <url>`` with JSON ``{topic, title, message, priority, tags, click, actions}``:
    priority 5 (max) for critical, 4 for warnings, 3 otherwise; the acknowledgement link
    as the click target and a ``view`` action.
WhatsApp
    ``POST <api>/<phone_number_id>/messages``, a *template* message: a business may
    start a conversation only with a template Meta approved (outside the 24-hour window
    after the person last wrote, nothing else is delivered). The template's body takes
    two parameters: {{1}} the alert (title and message) and {{2}} the acknowledgement
    link or code. Parameters may not hold new lines, tabs or more than four spaces in a
    row, so they are flattened. Language ``pt_BR`` or ``en``.

Every channel answers per message through ``_http.classify``.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.notify._http import HttpAnswer, classify, origin, post_json
from coffee_telemetry.agent.notify.config import NtfyConfig, TelegramConfig, WhatsAppConfig
from coffee_telemetry.agent.notify.model import Message, Outcome, Refused, Retry, Sent

__all__ = ["NtfyChannel", "TelegramChannel", "WhatsAppChannel", "open_http_session"]

log = logging.getLogger(__name__)

#: A button's text by language.
ACK_LABEL = {"pt-BR": "Reconhecer", "en": "Acknowledge"}
#: Longest Telegram message (characters after entity parsing; kept below it).
TELEGRAM_MAX = 4000
#: Longest ``getUpdates`` long poll, seconds.
POLL_S = 30

ReplyHandler = Callable[[str, str], Awaitable[str]]


@asynccontextmanager
async def open_http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session for the HTTP channels (each request has its own time limit)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


class _HttpChannel:
    def __init__(self, session: aiohttp.ClientSession, where: str) -> None:
        self._session = session
        self._where = where
        self._last: str | None = None

    def health(self) -> dict[str, object]:
        """The server and the last answer."""
        return {"server": self._where, "last_answer": self._last}

    def _note(self, outcome: Outcome) -> Outcome:
        self._last = outcome.reason if isinstance(outcome, Retry | Refused) else "sent"
        return outcome


class TelegramChannel(_HttpChannel):
    """Messages through a Telegram bot (``[notify.telegram]``)."""

    name = "telegram"

    def __init__(
        self,
        cfg: TelegramConfig,
        session: aiohttp.ClientSession,
        *,
        on_reply: ReplyHandler | None = None,
    ) -> None:
        super().__init__(session, origin(cfg.api_url))
        self._cfg = cfg
        self._base = f"{cfg.api_url.rstrip('/')}/bot{cfg.secret}"
        self.on_reply = on_reply
        self._offset = 0

    async def send(self, message: Message) -> Outcome:
        """``sendMessage`` to the contact's chat."""
        text = f"<b>{html.escape(message.title)}</b>\n{html.escape(message.body)}"
        doc: dict[str, object] = {
            "chat_id": message.address,
            "text": text[:TELEGRAM_MAX],
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        if message.ack_code:
            label = ACK_LABEL.get(message.lang, ACK_LABEL["pt-BR"])
            doc["reply_markup"] = {
                "inline_keyboard": [[{"text": label, "callback_data": f"ack:{message.ack_code}"}]]
            }
        answer = await post_json(
            self._session, f"{self._base}/sendMessage", doc, timeout_s=self._cfg.timeout_s
        )
        return self._note(self._classify(answer))

    def _classify(self, answer: HttpAnswer | Retry) -> Outcome:
        if not isinstance(answer, HttpAnswer):
            assert isinstance(answer, Retry)
            return answer
        doc = answer.doc or {}
        params = doc.get("parameters")
        after = params.get("retry_after") if isinstance(params, dict) else None
        detail = str(doc.get("description", ""))
        return classify(
            answer,
            where=self._where,
            detail=detail,
            retry_after_s=float(after) if isinstance(after, int | float) else None,
        )

    async def run_loop(self) -> None:
        """Long-poll ``getUpdates`` for acknowledge buttons, forever (if ``poll_updates``)."""
        if not self._cfg.poll_updates:
            await asyncio.Event().wait()
        backoff = Backoff(initial_s=1.0, maximum_s=60.0)
        while True:
            answer = await post_json(
                self._session,
                f"{self._base}/getUpdates",
                {"offset": self._offset, "timeout": POLL_S, "allowed_updates": ["callback_query"]},
                timeout_s=POLL_S + self._cfg.timeout_s,
            )
            outcome = self._classify(answer)
            if not isinstance(outcome, Sent) or not isinstance(answer, HttpAnswer):
                delay = backoff.next_delay()
                if isinstance(outcome, Retry) and outcome.retry_after_s:
                    delay = max(delay, outcome.retry_after_s)
                log.warning("Telegram updates: %s; again in %.0f s", outcome, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            result = (answer.doc or {}).get("result")
            for update in result if isinstance(result, list) else []:
                await self._update(update)

    async def _update(self, update: object) -> None:
        if not isinstance(update, dict):
            return
        update_id = update.get("update_id")
        if isinstance(update_id, int):
            self._offset = max(self._offset, update_id + 1)
        query = update.get("callback_query")
        if not isinstance(query, dict):
            return
        data = query.get("data")
        message = query.get("message")
        chat = message.get("chat") if isinstance(message, dict) else None
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        if not isinstance(data, str) or not data.startswith("ack:") or chat_id is None:
            return
        said = "?"
        if self.on_reply is not None:
            said = await self.on_reply(str(chat_id), data.removeprefix("ack:"))
        await post_json(
            self._session,
            f"{self._base}/answerCallbackQuery",
            {"callback_query_id": query.get("id"), "text": said[:190]},
            timeout_s=self._cfg.timeout_s,
        )


class NtfyChannel(_HttpChannel):
    """Push notifications through ntfy (``[notify.ntfy]``)."""

    name = "ntfy"

    def __init__(self, cfg: NtfyConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(session, origin(cfg.url))
        self._cfg = cfg

    async def send(self, message: Message) -> Outcome:
        """Publish to the contact's topic."""
        priority = {"critical": 5, "warning": 4}.get(message.severity, 3)
        if message.kind in ("acknowledged", "resolved"):
            priority = 3
        tags = {
            "firing": "rotating_light",
            "escalated": "rotating_light",
            "acknowledged": "white_check_mark",
            "resolved": "heavy_check_mark",
        }.get(message.kind, "coffee")
        doc: dict[str, object] = {
            "topic": message.address,
            "title": message.title,
            "message": message.body,
            "priority": priority,
            "tags": [tags],
        }
        if message.ack_url:
            label = ACK_LABEL.get(message.lang, ACK_LABEL["pt-BR"])
            doc["click"] = message.ack_url
            doc["actions"] = [{"action": "view", "label": label, "url": message.ack_url}]
        headers = {"Authorization": f"Bearer {self._cfg.secret}"} if self._cfg.secret else {}
        answer = await post_json(
            self._session,
            self._cfg.url.rstrip("/"),
            doc,
            headers=headers,
            timeout_s=self._cfg.timeout_s,
        )
        return self._note(classify(answer, where=self._where))


def _flat(text: str) -> str:
    """A WhatsApp template parameter: no new lines or tabs, at most 4 spaces in a row."""
    return re.sub(r" {4,}", "   ", re.sub(r"[\n\t\r]+", " · ", text)).strip()[:1000]


#: WhatsApp error codes that a retry may cure (rate limits, temporary trouble).
WHATSAPP_RETRY = frozenset({4, 80007, 130429, 131000, 131016, 131048, 131056, 133004})


class WhatsAppChannel(_HttpChannel):
    """Template messages through the WhatsApp Business Cloud API (``[notify.whatsapp]``)."""

    name = "whatsapp"

    def __init__(self, cfg: WhatsAppConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(session, origin(cfg.api_url))
        self._cfg = cfg

    async def send(self, message: Message) -> Outcome:
        """Send the template to the contact's number."""
        body = message.body.split("\n")[0]
        ack = message.ack_url or (message.ack_code and f"#{message.ack_code}") or "-"
        doc = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.address.lstrip("+"),
            "type": "template",
            "template": {
                "name": self._cfg.template,
                "language": {"code": "en" if message.lang == "en" else "pt_BR"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": _flat(f"{message.title}: {body}")},
                            {"type": "text", "text": _flat(ack)},
                        ],
                    }
                ],
            },
        }
        answer = await post_json(
            self._session,
            f"{self._cfg.api_url.rstrip('/')}/{self._cfg.phone_number_id}/messages",
            doc,
            headers={"Authorization": f"Bearer {self._cfg.secret}"},
            timeout_s=self._cfg.timeout_s,
        )
        if isinstance(answer, HttpAnswer) and answer.doc is not None:
            error = answer.doc.get("error")
            if isinstance(error, dict):
                code = error.get("code")
                detail = f"{error.get('message', '')} (code {code})"
                if code in WHATSAPP_RETRY:
                    return self._note(Retry(f"{self._where}: {detail}", answer.retry_after_s))
                return self._note(classify(answer, where=self._where, detail=detail))
        return self._note(classify(answer, where=self._where))
