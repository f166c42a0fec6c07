"""The acknowledgement page on the agent's real web server (``make_web_app``): GET shows,
only the button's POST acknowledges, through the command boundary, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.notify.service import Notifier
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.server import make_web_app
from tests.agent.notify.helpers import (
    AckRecorder,
    RecordingChannel,
    WallClock,
    event,
    local_ns,
    open_notifier,
)
from tests.services.net import free_port

NOW = local_ns("2026-11-30 10:41")


@dataclass
class Rig:
    base: str
    notifier: Notifier
    acks: AckRecorder
    clock: WallClock
    http: aiohttp.ClientSession

    async def link(self) -> str:
        queued = await self.notifier.store.next_due("email", self.clock())
        assert queued is not None
        assert queued.message.ack_url is not None
        return self.base + "/ack/" + queued.message.ack_url.rsplit("/", 1)[1]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = WallClock(NOW)
    acks = AckRecorder()
    cfg = parse_config({"site": {"id": "s1"}, "agent": {"data_dir": str(tmp_path / "data")}})
    async with open_notifier(tmp_path, [RecordingChannel("email")], clock=clock, acks=acks) as n:
        await n.submit([event(since_ns=NOW)])
        app = make_web_app(WebDeps(cfg=cfg), session_key=b"k" * 32, notifier=n)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as http:
            yield Rig(f"http://127.0.0.1:{port}", n, acks, clock, http)
        await runner.cleanup()


async def test_the_link_shows_the_alert_and_a_button_and_changes_nothing(rig: Rig) -> None:
    async with rig.http.get(await rig.link()) as response:
        page = await response.text()
        assert response.status == 200
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    assert "<h1>Lote úmido: L-0042</h1>" in page
    assert "Lote L-0042 úmido: média 13,4 %" in page
    assert "Você reconhece como <b>João</b>" in page
    assert '<form method="post"><button type="submit">Reconhecer este alerta</button>' in page
    assert "<script" not in page
    assert "style=" not in page
    assert rig.acks.acks == []
    async with rig.http.get(rig.base + "/ack.css") as css:
        assert css.status == 200
        assert css.content_type == "text/css"


async def test_the_button_acknowledges_once(rig: Rig) -> None:
    link = await rig.link()
    async with rig.http.post(link, headers={"Origin": "https://evil.example"}) as response:
        assert response.status == 403
        assert "outra página" in await response.text()
    assert rig.acks.acks == []
    async with rig.http.post(link) as response:
        assert response.status == 200
        assert "Alerta reconhecido. Obrigado, João!" in await response.text()
    async with rig.http.post(link) as response:
        assert response.status == 410
        assert "já foi usado" in await response.text()
    async with rig.http.get(link + "?lang=en") as response:
        assert response.status == 410
        assert "This link was used already." in await response.text()
    assert [(c.path, c.by, c.source) for c in rig.acks.acks] == [
        (("ack", "wet_lot", "L-0042"), "João", "notify:link")
    ]


async def test_forged_and_expired_links_get_a_clear_page(rig: Rig) -> None:
    link = await rig.link()
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    async with rig.http.post(forged) as response:
        assert response.status == 403
        assert "não é válido" in await response.text()
    rig.clock.advance(13 * 3600)
    async with rig.http.get(link, headers={"Accept-Language": "en-US,en;q=0.8"}) as response:
        assert response.status == 410
        assert "This link has expired." in await response.text()
    async with rig.http.post(link) as response:
        assert response.status == 410
    assert rig.acks.acks == []


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=200))
async def test_any_path_is_a_refusal_page(rig: Rig, token: str) -> None:
    url = rig.base + "/ack/" + quote(token, safe="")
    for method in ("GET", "POST"):
        async with rig.http.request(method, url) as response:
            assert response.status in (400, 403, 404, 405), (method, token, response.status)
    assert rig.acks.acks == []
