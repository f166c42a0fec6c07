"""Where an alert went, on the Dispositivos page: each channel's queue and dead letters.

The real agent process with one ticket meter on a pty and ``[notify]`` with two
channels for one contact, and Debian's chromium on the Dispositivos page. Telegram's
server is a local HTTP stand-in (no internet here) that refuses the bot's token (401):
a dead letter. ntfy's server cannot be reached at all (nothing listens on its port):
the message waits and is retried. The page must tell the two apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.agent.notify.standin import StandIn, open_standin
from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, Site, open_tab
from tests.integration.harness import eventually
from tests.services.net import free_port

pytestmark = pytest.mark.integration

NOTIFY = """
[notify]
retry_initial_s = 1
retry_max_s = 2
[notify.telegram]
api_url = "{telegram}"
token_env = "TEST_NOTIFY_TG_TOKEN"
poll_updates = false
timeout_s = 2
[notify.ntfy]
url = "http://127.0.0.1:{dead}"
timeout_s = 2
[[notify.contacts]]
name = "João"
channels = {{ telegram = "123456789", ntfy = "armazem-joao" }}
[[notify.routes]]
name = "plantao"
contacts = ["João"]
"""


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian package 'chromium'")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[StandIn]:
    async with open_standin() as standin:
        standin.by_path["/sendMessage"] = [
            (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {})
        ]
        yield standin


async def test_dead_letters_and_retries_are_shown_per_channel(
    tmp_path: Path, browser: Browser, telegram: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NOTIFY_TG_TOKEN", "123:abc")
    rig = NotifyAgentRig(tmp_path, NOTIFY.format(telegram=telegram.url, dead=free_port()))
    try:
        await rig.start()
        await rig.emit(14.2)
        # (Queue lengths reach health once a second.)
        await eventually(
            lambda: (
                rig.notify_channel("telegram").get("dead") == 1
                and rig.notify_channel("ntfy").get("queued") == 1
                and int(str(rig.notify_channel("ntfy").get("retries"))) >= 1
            ),
            timeout_s=20,
            what="Telegram's dead letter and ntfy retrying",
            context=rig.agent.log_tail,
        )
        site = Site(url=rig.base, agent=rig.agent, meters={}, stations={})
        tab = await open_tab(browser, site, width=1280, height=800)
        try:
            await tab.open("dispositivos")
            panel = tab.page.get_by_test_id("notify-panel")
            await expect(panel).to_be_visible()
            await expect(panel).to_contain_text(await tab.t("notify.title"))

            dead = panel.get_by_test_id("notify-telegram")
            await expect(dead).to_contain_text("Telegram")
            await expect(dead.get_by_test_id("notify-state")).to_have_text(
                await tab.t("notify.stateDead")
            )
            await expect(dead.get_by_test_id("notify-dead")).to_have_text("1")
            await expect(dead.get_by_test_id("notify-queued")).to_have_text("0")
            await expect(dead.get_by_test_id("notify-sent")).to_have_text("0")

            waiting = panel.get_by_test_id("notify-ntfy")
            await expect(waiting.get_by_test_id("notify-state")).to_have_text(
                await tab.t("notify.stateRetrying")
            )
            await expect(waiting.get_by_test_id("notify-queued")).to_have_text("1")
            await expect(waiting.get_by_test_id("notify-dead")).to_have_text("0")
            error = str(rig.notify_channel("ntfy").get("last_error"))
            await expect(waiting).to_contain_text(error)
            await tab.settle(0.5)
            await tab.screenshot("dispositivos-notify-pt-1280x800")
        finally:
            tab.watcher.active = False
            await tab.context.close()
        tab.watcher.check()
    finally:
        rig.close()
