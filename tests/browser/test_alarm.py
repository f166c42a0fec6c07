"""The warehouse alarm in a real browser: banner, sound, "silenciar", against the real agent.

The site is the browser tests' warehouse (``fixtures.py``: the agent process, two
ticket meters on ptys, a huller, Mosquitto), one per module. Chromium runs with an
explicit autoplay policy, since that policy is what the alarm is about:

* ``user-gesture-required``, as a desktop browser behaves: the page must ask for a
  tap before it can sound, and a reload forgets the tap (the browser's rule), though
  not the choice;
* ``no-user-gesture-required``, the wall-screen kiosk setting the README gives: no
  question, the alarm sounds by itself.

"The audio element plays" is read from the element itself: ``paused`` is false and
its ``playing`` event fired (counted by a listener the context installs before the
page's own scripts run). Headless Chromium has no sound card; the media pipeline
runs all the same.

Playwright's own queries (``evaluate``, ``expect``...) count as a user gesture for
Chromium, so a test that needs the browser to refuse sound lets the page load and
ring before it asks the page anything. Each test prints its own lot codes and
clears its alerts, so one test's alerts never count in another.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, Site, Tab, open_tab
from tests.integration.harness import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SOUND_KEY = "coffee-telemetry.alarm.sound"
SILENCED_KEY = "coffee-telemetry.alarm.silenced"

#: Counts the alarm's ``playing`` events in ``window.__playing`` (an init script).
_COUNT_PLAYING_JS = """
window.__playing = 0;
document.addEventListener("playing", (e) => {
  if (e.target instanceof HTMLMediaElement && e.target.dataset.testid === "alarm-audio") {
    window.__playing += 1;
  }
}, true);
"""
_PLAYING_JS = """
() => {
  const audio = document.querySelector('[data-testid="alarm-audio"]');
  return audio !== null && audio.paused === false && window.__playing > 0;
}
"""
_PAUSED_JS = """
() => {
  const audio = document.querySelector('[data-testid="alarm-audio"]');
  return audio !== null && audio.paused === true;
}
"""


async def launch(policy: str) -> AsyncIterator[Browser]:
    """Debian's chromium with the given ``--autoplay-policy``."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian package 'chromium'")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, f"--autoplay-policy={policy}"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def desk(site: Site) -> AsyncIterator[Tab]:
    """A tab in a browser that wants a tap before any sound (see the module doc)."""
    async for browser in launch("user-gesture-required"):
        tab = await open_tab(browser, site, width=1280, height=800)
        await tab.context.add_init_script(_COUNT_PLAYING_JS)
        try:
            yield tab
        finally:
            tab.watcher.active = False
            await tab.context.close()
        tab.watcher.check()


@pytest_asyncio.fixture(loop_scope="module")
async def kiosk(site: Site) -> AsyncIterator[Tab]:
    """A tab in a wall screen's kiosk browser, which may sound without a tap."""
    async for browser in launch("no-user-gesture-required"):
        tab = await open_tab(browser, site, width=1920, height=1080)
        await tab.context.add_init_script(_COUNT_PLAYING_JS)
        try:
            yield tab
        finally:
            tab.watcher.active = False
            await tab.context.close()
        tab.watcher.check()


def new_lot() -> str:
    return f"L-A{uuid.uuid4().hex[:6].upper()}"


async def stored(page: Page, key: str) -> object:
    return await page.evaluate("(key) => localStorage.getItem(key)", key)


async def silenced(page: Page) -> list[str]:
    raw = await stored(page, SILENCED_KEY)
    return [] if raw is None else list(json.loads(str(raw)))


async def wait_playing(page: Page) -> None:
    await page.wait_for_function(_PLAYING_JS, timeout=10_000)
    await expect(page.get_by_test_id("wet-alarm")).to_have_attribute("data-sound", "playing")


async def wait_paused(page: Page) -> None:
    await page.wait_for_function(_PAUSED_JS, timeout=10_000)


async def firing(site: Site, lot: str) -> None:
    async def check() -> bool:
        alert = await site.alert("wet_lot", lot)
        return alert is not None and alert["state"] == "firing"

    await eventually(check, timeout_s=15, what=f"wet_lot {lot} firing")


async def nothing_firing(site: Site) -> None:
    """No wet lot is firing: each test starts from a quiet site and leaves it so."""
    items = await site.get("/api/alerts")
    assert isinstance(items, list)
    loud = [a for a in items if a.get("rule") == "wet_lot" and a.get("state") == "firing"]
    assert loud == [], f"wet lots still firing from elsewhere: {loud}"


async def dry(site: Site, device: str, lot: str) -> None:
    """A dry reading of ``lot``: the lot's mean falls under the clear level and its alert clears."""
    await site.ticket(device, 8.0, lot=lot, wait=False)

    async def cleared() -> bool:
        alert = await site.alert("wet_lot", lot)
        return alert is None or alert["state"] != "firing"

    await eventually(cleared, timeout_s=15, what=f"wet_lot {lot} no longer firing")


async def ack(tab: Tab, lot: str) -> None:
    """Acknowledge through the page's own API client (logged in, with its CSRF token)."""
    status = await tab.page.evaluate(
        """async (lot) => {
          const api = await import("/static/js/api.js");
          await api.postJSON(api.apiPath("alerts", "wet_lot", lot) + "/ack", {});
          return "ok";
        }""",
        lot,
    )
    assert status == "ok"


async def test_new_wet_lot_rings_and_silenciar_lasts_until_the_next(desk: Tab) -> None:
    site, page = desk.site, desk.page
    await nothing_firing(site)
    await desk.open("armazem")
    alarm = page.get_by_test_id("wet-alarm")
    audio = alarm.get_by_test_id("alarm-audio")
    assert await audio.get_attribute("src") == "/static/alarme.wav"

    # A fresh screen asks once for a tap, and nothing rings yet.
    prompt = page.get_by_test_id("alarm-sound-prompt")
    await expect(prompt).to_be_visible()
    await expect(prompt).to_contain_text(await desk.t("alarm.enableSound"))
    await expect(alarm).to_be_hidden()
    assert await stored(page, SOUND_KEY) is None
    await prompt.get_by_test_id("alarm-sound-ok").click()
    await expect(prompt).to_be_hidden()
    assert await stored(page, SOUND_KEY) == "on"

    # A wet lot from the meter: the banner names it and the sound plays.
    first = new_lot()
    await site.ticket("umid-1", 14.2, lot=first, wait=False)
    await expect(alarm).to_be_visible(timeout=15_000)
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(first)
    await expect(alarm).to_contain_text(await desk.t("alarm.title"))
    await wait_playing(page)
    box = await alarm.bounding_box()
    assert box is not None
    assert (box["x"], box["width"]) == (0, 1280), box  # edge to edge
    await desk.screenshot("armazem-alarm-pt-1280x800")

    # Silenciar: quiet and out of the way, while the alert itself stays open.
    await alarm.get_by_test_id("alarm-silence").click()
    await expect(alarm).to_be_hidden()
    await wait_paused(page)
    alert = await site.alert("wet_lot", first)
    assert alert is not None
    assert alert["state"] == "firing"
    assert any(f"|{first}|" in key for key in await silenced(page))
    await expect(page.get_by_test_id("wet-alerts")).to_be_visible()  # the list still shows it

    # ...and it stays silenced on a reload, without asking for the tap again.
    await desk.settle(1.0)  # no refetch in flight for the reload to abort
    await desk.reload("armazem")
    await expect(page.get_by_test_id("alarm-sound-prompt")).to_be_hidden()
    await desk.settle(1.0)
    await expect(alarm).to_be_hidden()
    assert await page.evaluate(_PAUSED_JS)

    # The next new wet lot rings again. (This test's queries count as taps; a browser
    # that refuses the sound after a reload is the next test's case.)
    second = new_lot()
    await site.ticket("umid-2", 14.6, lot=second, wait=False)
    await expect(alarm).to_be_visible(timeout=15_000)
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(second)
    await wait_playing(page)
    await expect(alarm.get_by_test_id("alarm-enable-sound")).to_be_hidden()

    # The second lot dries: the rule clears it, and with it the banner and the sound.
    await site.ticket("umid-2", 8.0, lot=second, wait=False)
    await expect(alarm).to_be_hidden(timeout=15_000)
    await wait_paused(page)
    assert await site.alert("wet_lot", second) is None
    # The silenced set keeps only what is still open.
    keys = await silenced(page)
    assert any(f"|{first}|" in key for key in keys)
    assert not any(f"|{second}|" in key for key in keys)
    await dry(site, "umid-1", first)


async def test_acknowledged_alert_removes_the_banner(desk: Tab) -> None:
    """A screen that said "ativar som" before, reloaded, untouched, while a lot is wet."""
    site, page = desk.site, desk.page
    await nothing_firing(site)
    lot = new_lot()
    await site.ticket("umid-1", 15.1, lot=lot, wait=False)
    await firing(site, lot)

    # Nothing may query the page until it has tried to sound (see the module doc).
    await desk.context.add_init_script(f"localStorage.setItem({SOUND_KEY!r}, 'on')")
    desk.watcher.leaving = True
    await page.goto(site.url + "/")
    desk.watcher.leaving = False
    await page.wait_for_timeout(4000)

    # The browser refused the sound: the banner offers the tap, not the first-visit bar.
    alarm = page.get_by_test_id("wet-alarm")
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(lot)
    await expect(alarm).to_have_attribute("data-sound", "blocked")
    enable = alarm.get_by_test_id("alarm-enable-sound")
    await expect(enable).to_be_visible()
    await expect(page.get_by_test_id("alarm-sound-prompt")).to_be_hidden()
    assert await page.evaluate(_PAUSED_JS)
    assert await page.evaluate("() => window.__playing") == 0
    await desk.screenshot("armazem-alarm-blocked-pt-1280x800")
    await enable.click()
    await wait_playing(page)
    await expect(enable).to_be_hidden()

    # Logging in redraws the page: the alarm goes on ringing.
    await desk.login("armazem")
    await wait_playing(page)

    await ack(desk, lot)
    await expect(alarm).to_be_hidden(timeout=10_000)
    await wait_paused(page)
    alert = await site.alert("wet_lot", lot)
    assert alert is not None
    assert alert["state"] == "acknowledged"
    # Acknowledged, not silenced: a reload does not bring the alarm back.
    await desk.settle(1.0)  # no refetch in flight for the reload to abort
    await desk.reload("armazem")
    await desk.settle(1.0)
    await expect(alarm).to_be_hidden()
    # The calm list still names it, marked as acknowledged.
    row = page.get_by_test_id("wet-alerts").get_by_test_id("alert-row").filter(has_text=lot)
    await expect(row).to_have_class("wet-alert is-acked")


async def test_kiosk_screen_rings_without_a_tap(kiosk: Tab) -> None:
    site, page = kiosk.site, kiosk.page
    await nothing_firing(site)
    await kiosk.open("armazem")

    # The page found it may sound: it never asks, and says so in storage.
    await page.wait_for_function(f"() => localStorage.getItem({SOUND_KEY!r}) === 'on'")
    await expect(page.get_by_test_id("alarm-sound-prompt")).to_be_hidden()

    lot = new_lot()
    await site.ticket("umid-1", 14.9, lot=lot, wait=False)
    alarm = page.get_by_test_id("wet-alarm")
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(lot, timeout=15_000)
    await wait_playing(page)
    await expect(alarm.get_by_test_id("alarm-enable-sound")).to_be_hidden()
    await kiosk.screenshot("armazem-alarm-pt-1920x1080")
    await alarm.get_by_test_id("alarm-silence").click()
    await wait_paused(page)
    await dry(site, "umid-1", lot)


#: Hidden-tab emulation and a record of the system notifications the page shows.
_BACKGROUND_JS = """
window.__notes = [];
window.__hidden = false;
const RealNotification = window.Notification;
window.Notification = class extends RealNotification {
  constructor(title, options) {
    super(title, options);
    window.__notes.push({title, body: options && options.body, tag: options && options.tag});
  }
};
Object.defineProperty(Document.prototype, "visibilityState", {
  configurable: true,
  get() { return window.__hidden ? "hidden" : "visible"; },
});
"""


async def test_a_tab_in_the_background_gets_a_system_notification(kiosk: Tab) -> None:
    """Headless Chromium keeps every tab visible: the test makes the page believe it is not."""
    site, page = kiosk.site, kiosk.page
    await nothing_firing(site)
    await kiosk.context.grant_permissions(["notifications"], origin=site.url)
    await kiosk.context.add_init_script(_BACKGROUND_JS)
    await kiosk.open("armazem")
    alarm = page.get_by_test_id("wet-alarm")

    await page.evaluate("() => { window.__hidden = true; }")
    hidden_lot = new_lot()
    await site.ticket("umid-1", 14.4, lot=hidden_lot, wait=False)
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(hidden_lot, timeout=15_000)
    await page.wait_for_function("() => window.__notes.length === 1")
    [note] = await page.evaluate("() => window.__notes")
    assert note["title"] == await kiosk.t("alarm.notifyTitle", {"lot": hidden_lot})
    assert hidden_lot in note["body"]

    # In front, the banner says it: no notification for the next one.
    await page.evaluate("() => { window.__hidden = false; }")
    shown_lot = new_lot()
    await site.ticket("umid-2", 14.4, lot=shown_lot, wait=False)
    await expect(alarm.get_by_test_id("alarm-lot")).to_have_text(shown_lot, timeout=15_000)
    await kiosk.settle(1.0)
    assert await page.evaluate("() => window.__notes.length") == 1
    await dry(site, "umid-1", hidden_lot)
    await dry(site, "umid-2", shown_lot)
    await expect(alarm).to_be_hidden(timeout=10_000)
