"""Telegram, ntfy and WhatsApp against a local HTTP stand-in.

These are stand-ins because there is no internet here: each test checks exactly what
the client sends and how it takes 429 with retry_after, 401 and 5xx answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.notify._http import HttpAnswer, classify, parse_retry_after
from coffee_telemetry.agent.notify.config import NtfyConfig, TelegramConfig, WhatsAppConfig
from coffee_telemetry.agent.notify.model import Message, Refused, Retry, Sent
from coffee_telemetry.agent.notify.push import (
    NtfyChannel,
    TelegramChannel,
    WhatsAppChannel,
    open_http_session,
)
from tests.agent.notify.helpers import until
from tests.agent.notify.standin import StandIn, open_standin

TOKEN = "123456:ABC-segredo"


def message(**overrides: object) -> Message:
    doc: dict[str, object] = {
        "key": "wet_lot/L<42>&/1/firing/0/João/telegram",
        "channel": "telegram",
        "contact": "João",
        "address": "987654321",
        "lang": "pt-BR",
        "kind": "firing",
        "severity": "critical",
        "title": "[CRÍTICO] Lote úmido: L<42>&",
        "body": "Lote L<42>& úmido: média 13,4 %\nReconhecer: http://armazem.local/ack/t",
        "episode": "wet_lot/L<42>&/1",
        "ack_url": "http://armazem.local/ack/t",
        "ack_code": "123456",
    }
    doc.update(overrides)
    return Message(**doc)  # type: ignore[arg-type]


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with open_standin() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_http_session() as s:
        yield s


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TG_TOKEN", TOKEN)


def telegram(standin: StandIn, session: aiohttp.ClientSession, **kw: Any) -> TelegramChannel:
    cfg = TelegramConfig(api_url=standin.url, token_env="TEST_TG_TOKEN", timeout_s=2, **kw)
    return TelegramChannel(cfg, session)


async def test_telegram_sends_escaped_html_with_an_ack_button(
    standin: StandIn, session: aiohttp.ClientSession
) -> None:
    outcome = await telegram(standin, session).send(message())
    assert isinstance(outcome, Sent)
    [seen] = standin.seen
    assert seen.path == f"/bot{TOKEN}/sendMessage"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.doc == {
        "chat_id": "987654321",
        "text": "<b>[CRÍTICO] Lote úmido: L&lt;42&gt;&amp;</b>\n"
        "Lote L&lt;42&gt;&amp; úmido: média 13,4 %\n"
        "Reconhecer: http://armazem.local/ack/t",
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
        "reply_markup": {
            "inline_keyboard": [[{"text": "Reconhecer", "callback_data": "ack:123456"}]]
        },
    }


async def test_telegram_429_retries_after_what_it_says_and_401_is_dead(
    standin: StandIn, session: aiohttp.ClientSession
) -> None:
    standin.script = [
        (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
               "parameters": {"retry_after": 7}}, {}),
        (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}),
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, {}),
        (502, {"ok": False}, {}),
    ]  # fmt: skip
    channel = telegram(standin, session)
    busy = await channel.send(message())
    assert isinstance(busy, Retry)
    assert busy.retry_after_s == 7.0
    denied = await channel.send(message())
    assert isinstance(denied, Refused)
    assert denied.status == 401
    assert TOKEN not in denied.reason
    assert "Unauthorized" in denied.reason
    missing = await channel.send(message())
    assert isinstance(missing, Refused)
    assert "chat not found" in missing.reason
    assert isinstance(await channel.send(message()), Retry)


async def test_telegram_button_acknowledges_through_get_updates(
    standin: StandIn, session: aiohttp.ClientSession
) -> None:
    update = {
        "update_id": 41,
        "callback_query": {
            "id": "cb-1",
            "data": "ack:123456",
            "message": {"chat": {"id": 987654321}},
        },
    }
    standin.by_path["/getUpdates"] = [(200, {"ok": True, "result": [update]}, {})]
    replies: list[tuple[str, str]] = []

    async def on_reply(chat: str, code: str) -> str:
        replies.append((chat, code))
        return "Reconhecido"

    channel = telegram(standin, session)
    channel.on_reply = on_reply
    task = asyncio.create_task(channel.run_loop())
    try:
        await until(lambda: any(s.path.endswith("answerCallbackQuery") for s in standin.seen))
        await until(lambda: sum(s.path.endswith("getUpdates") for s in standin.seen) >= 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert replies == [("987654321", "123456")]
    answers = [s.doc for s in standin.seen if s.path.endswith("answerCallbackQuery")]
    assert answers == [{"callback_query_id": "cb-1", "text": "Reconhecido"}]
    polls = [s.doc for s in standin.seen if s.path.endswith("getUpdates")]
    assert isinstance(polls[1], dict)
    assert polls[1]["offset"] == 42


async def test_ntfy_publishes_json_with_priority_and_the_link(
    standin: StandIn, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NTFY", "tk_segredo")
    cfg = NtfyConfig(url=standin.url, token_env="TEST_NTFY")
    standin.script = [(500, {"error": "boom"}, {}), (429, {}, {"Retry-After": "3"})]
    channel = NtfyChannel(cfg, session)
    assert isinstance(await channel.send(message(address="armazem-joao")), Retry)
    limited = await channel.send(message(address="armazem-joao"))
    assert isinstance(limited, Retry)
    assert limited.retry_after_s == 3.0
    assert isinstance(await channel.send(message(address="armazem-joao")), Sent)
    seen = standin.seen[-1]
    assert seen.path == "/"
    assert seen.headers["Authorization"] == "Bearer tk_segredo"
    assert seen.doc == {
        "topic": "armazem-joao",
        "title": "[CRÍTICO] Lote úmido: L<42>&",
        "message": "Lote L<42>& úmido: média 13,4 %\nReconhecer: http://armazem.local/ack/t",
        "priority": 5,
        "tags": ["rotating_light"],
        "click": "http://armazem.local/ack/t",
        "actions": [{"action": "view", "label": "Reconhecer", "url": "http://armazem.local/ack/t"}],
    }


async def test_whatsapp_sends_the_template_with_flat_parameters(
    standin: StandIn, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WA", "EAAG-segredo")
    cfg = WhatsAppConfig(api_url=standin.url, phone_number_id="1098765432", token_env="TEST_WA")
    channel = WhatsAppChannel(cfg, session)
    outcome = await channel.send(message(address="+5535999990001", lang="en"))
    assert isinstance(outcome, Sent)
    [seen] = standin.seen
    assert seen.path == "/1098765432/messages"
    assert seen.headers["Authorization"] == "Bearer EAAG-segredo"
    assert seen.doc == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "5535999990001",
        "type": "template",
        "template": {
            "name": "alerta_armazem",
            "language": {"code": "en"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {
                            "type": "text",
                            "text": "[CRÍTICO] Lote úmido: L<42>&: Lote L<42>& úmido: média 13,4 %",
                        },
                        {"type": "text", "text": "http://armazem.local/ack/t"},
                    ],
                }
            ],
        },
    }


async def test_whatsapp_errors_by_their_code(
    standin: StandIn, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WA", "EAAG-segredo")
    cfg = WhatsAppConfig(api_url=standin.url, phone_number_id="1098765432", token_env="TEST_WA")
    standin.script = [
        (400, {"error": {"message": "Rate limit hit", "code": 130429}}, {}),
        (401, {"error": {"message": "Invalid OAuth access token", "code": 190}}, {}),
        (400, {"error": {"message": "Template name does not exist", "code": 132001}}, {}),
        (503, {}, {}),
    ]
    channel = WhatsAppChannel(cfg, session)
    assert isinstance(await channel.send(message(address="+5535999990001")), Retry)
    denied = await channel.send(message(address="+5535999990001"))
    assert isinstance(denied, Refused)
    assert denied.status == 401
    assert "EAAG" not in denied.reason
    missing = await channel.send(message(address="+5535999990001"))
    assert isinstance(missing, Refused)
    assert "132001" in missing.reason
    assert isinstance(await channel.send(message(address="+5535999990001")), Retry)


async def test_no_server_is_a_retry(session: aiohttp.ClientSession) -> None:
    cfg = NtfyConfig(url="http://127.0.0.1:9", timeout_s=2)
    assert isinstance(await NtfyChannel(cfg, session).send(message()), Retry)


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@settings(max_examples=300)
@given(status=st.integers(100, 999), text=st.text(max_size=50))
def test_every_status_is_sent_retry_or_refused(status: int, text: str) -> None:
    outcome = classify(HttpAnswer(status, None, text, None), where="http://x")
    assert isinstance(outcome, Sent | Retry | Refused)
    assert isinstance(outcome, Sent) == (200 <= status <= 299)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
UPDATE = st.fixed_dictionaries(
    {},
    optional={
        "update_id": st.integers() | JSON,
        "callback_query": st.fixed_dictionaries(
            {},
            optional={
                "id": JSON,
                "data": st.text(max_size=30) | JSON,
                "message": st.fixed_dictionaries({}, optional={"chat": JSON}) | JSON,
            },
        )
        | JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(updates=st.lists(UPDATE | JSON, max_size=5))
async def test_any_update_from_telegram_is_taken_or_ignored_never_an_exception(
    updates: list[object],
) -> None:
    # What getUpdates returns comes from outside: any shape, no exception.
    async with open_standin() as standin, open_http_session() as session:
        channel = TelegramChannel(
            TelegramConfig(api_url=standin.url, token_env="TEST_TG_TOKEN", timeout_s=2), session
        )
        said: list[tuple[str, str]] = []

        async def on_reply(chat: str, code: str) -> str:
            said.append((chat, code))
            return "ok"

        channel.on_reply = on_reply
        for update in updates:
            await channel._update(update)
    answered = [s for s in standin.seen if s.path.endswith("answerCallbackQuery")]
    assert len(answered) == len(said)
