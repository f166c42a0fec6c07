"""The built-in dashboard in a real browser (Debian's chromium), against the real agent.

One site per module (see ``conftest.py``): the agent process, two ticket meters
and a huller on ptys, a real Mosquitto. Each test opens a fresh tab (no cookie,
no stored language) whose watcher fails the test on any console error or
warning, uncaught exception, failed request, answer >= 400 or dialog, unless the
test triggered that answer on purpose. Tests print tickets themselves, each with
its own lot codes, so they do not depend on each other's order.

Screenshots go to ``artifacts/screenshots/`` (kept by CI).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.fixtures import HULLER
from tests.browser.helpers import (
    NAV_EN,
    NAV_PT,
    PAGES,
    USER,
    Site,
    Tab,
    as_dict,
    as_list,
    canvas_pixels,
    find,
    open_tab,
    wait_for_colour,
)
from tests.integration.harness import ROOT, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

#: A printed ticket reaches the agent as one burst ending in FF (no idle gap to
#: wait for), but it still crosses the pty and pyserial and is committed to the
#: outbox (SQLite) before the live stream sends it: this much on top of the 2 s.
TICKET_MARGIN_S = 0.5
#: The hours chart's bar colour (charts.js, HoursChart ``fill``).
BAR_RGB = (0x8A, 0x5A, 0x3B)
#: Where the measured live-update latency is written for CI.
LATENCY_FILE = ROOT / "artifacts" / "browser-live-latency.txt"

TASK = "oleo"


async def series_colour(page: Page, station: str, device: str) -> tuple[int, int, int]:
    """The colour of ``device``'s line, from its marker in the chart's legend."""
    chart = page.get_by_test_id(f"chart-{station}")
    marker = chart.locator(".u-legend .u-series").filter(has_text=device).locator(".u-marker")
    css = await marker.evaluate("el => getComputedStyle(el).borderColor")
    found = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+).*\)", str(css))
    assert found, f"{device}'s legend marker has no colour: {css!r}"
    r, g, b = (int(x) for x in found.groups())
    return r, g, b


async def post_from_page(page: Page, path: str, body: object) -> int:
    """POST JSON from the page's origin with its cookies but no CSRF header; the status."""
    status = await page.evaluate(
        """async ([path, body]) => {
          const r = await fetch(path, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
          return r.status;
        }""",
        [path, body],
    )
    return int(str(status))


# -- 1. every page loads clean ---------------------------------------------------------


@pytest.mark.parametrize("page_id", list(PAGES))
async def test_page_loads_without_errors(tab: Tab, page_id: str) -> None:
    await tab.open(page_id)
    page = tab.page
    assert await page.locator("html").get_attribute("lang") == "pt-BR"
    for other, label in NAV_PT.items():
        link = page.get_by_test_id(f"nav-{other}")
        await expect(link).to_contain_text(label)
        if other == page_id:
            await expect(link).to_have_attribute("aria-current", "page")
    await tab.settle(1.5)  # the first refetches after the live stream's hello
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        f"{page_id} scrolls sideways at 1280 px"
    )
    await tab.screenshot(f"{page_id}-pt-1280x800")
    tab.watcher.check()


async def test_warehouse_on_a_tablet(browser: Browser, site: Site) -> None:
    t = await open_tab(browser, site, width=768, height=1024)
    try:
        await t.open("armazem")
        for device in site.meters:
            await expect(t.page.get_by_test_id(f"meter-{device}")).to_be_visible()
        await t.settle(1.0)
        assert await t.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            "the warehouse page scrolls sideways on a 768 px tablet"
        )
        await t.screenshot("armazem-pt-768x1024")
        t.watcher.check()
    finally:
        t.watcher.active = False
        await t.context.close()


# -- 2. charts draw ---------------------------------------------------------------------------


async def test_charts_draw(tab: Tab) -> None:
    site, page = tab.site, tab.page
    await tab.open("armazem")
    for device, station in site.stations.items():
        canvas = f'[data-testid="chart-{station}"] canvas'
        rgb = await series_colour(page, station, device)
        pixels = await wait_for_colour(page, canvas, rgb, at_least=8, what=f"{device}'s line")
        # Axes, grid and the dashed threshold are there too.
        assert pixels.painted > pixels.width, pixels

    # Another range redraws from the history; a new reading extends the line live.
    chart = page.get_by_test_id("chart-recepcao")
    await page.get_by_test_id("range-1h").first.click()
    await expect(page.get_by_test_id("range-1h").first).to_have_attribute("aria-pressed", "true")
    rgb = await series_colour(page, "recepcao", "umid-1")
    before = await wait_for_colour(
        page, '[data-testid="chart-recepcao"] canvas', rgb, at_least=8, what="umid-1 at 1 h"
    )
    assert await chart.locator("canvas").count() == 1
    await site.ticket("umid-1", 12.3, lot="L-0101")
    await wait_for_colour(
        page,
        '[data-testid="chart-recepcao"] canvas',
        rgb,
        at_least=before.colour + 8,
        what="umid-1's new point",
    )

    # The hullers' running hours: today's bar (the huller runs 0.1 h a second).
    async def hours_today() -> bool:
        huller = find(as_dict(await site.get("/api/hullers"))["hullers"], "id", HULLER)
        assert huller is not None
        days = as_list(huller["daily_hours"])
        return len(days) == 14 and float(str(as_dict(days[-1])["hours"])) >= 1.0

    await eventually(hours_today, timeout_s=30, what="an hour of running today")
    await tab.go("descascadores")
    pixels = await wait_for_colour(
        page,
        f'[data-testid="hours-chart-{HULLER}"] canvas',
        BAR_RGB,
        at_least=200,
        what="today's bar of running hours",
    )
    assert pixels.painted > pixels.width, pixels
    tab.watcher.check()


# -- 3. a new reading shows within 2 s ------------------------------------------------------

_SEEN_JS = """
([device, expected]) => {
  window.__seenAt = null;
  const read = () => {
    const el = document.querySelector(
      `[data-testid="meter-${device}"] [data-testid="meter-moisture"]`);
    return el ? el.textContent : null;
  };
  const observer = new MutationObserver(() => {
    if (window.__seenAt === null && read() === expected) {
      window.__seenAt = Date.now();
      observer.disconnect();
    }
  });
  observer.observe(document.querySelector("main"),
                   {subtree: true, childList: true, characterData: true});
  return read();
}
"""


async def test_new_reading_shows_within_2_s(tab: Tab) -> None:
    site, page = tab.site, tab.page
    await tab.open("armazem")
    card = page.get_by_test_id("meter-umid-1")
    current = (await site.meter("umid-1"))["moisture_pct"]
    value = 10.7 if current != 10.7 else 10.8
    expected = f"{value:.1f} %".replace(".", ",")
    shown = await page.evaluate(_SEEN_JS, ["umid-1", expected])
    assert shown != expected

    # From just before the write: a process switch between the write and a clock read
    # after it could otherwise hide the first milliseconds (this errs on the slow side).
    written_ns = time.time_ns()
    await site.ticket("umid-1", value, lot="L-0102", wait=False)
    await expect(card.get_by_test_id("meter-moisture")).to_have_text(expected, timeout=10_000)
    seen_ms = await page.evaluate("window.__seenAt")
    assert isinstance(seen_ms, int | float), seen_ms
    await expect(card.get_by_test_id("meter-lot")).to_have_text("L-0102")

    meter = await site.meter("umid-1")
    assert meter["moisture_pct"] == value
    latency_s = seen_ms / 1000 - written_ns / 1e9
    stamped_s = seen_ms / 1000 - int(str(meter["ts_ns"])) / 1e9
    report = (
        f"live update: ticket written -> value on the page {latency_s * 1000:.0f} ms;"
        f" agent's stamp -> page {stamped_s * 1000:.0f} ms"
    )
    print(report)
    LATENCY_FILE.parent.mkdir(parents=True, exist_ok=True)
    LATENCY_FILE.write_text(report + "\n")
    assert latency_s <= 2.0 + TICKET_MARGIN_S, report
    tab.watcher.check()


# -- 4. acknowledge an alert through the page -------------------------------------------------


async def test_acknowledge_wet_lot_through_the_page(tab: Tab) -> None:
    site, page = tab.site, tab.page
    lot = f"L-U{uuid.uuid4().hex[:6].upper()}"
    await site.ticket("umid-1", 14.2, lot=lot)

    async def firing() -> bool:
        alert = await site.alert("wet_lot", lot)
        return alert is not None and alert["state"] == "firing"

    await eventually(firing, timeout_s=15, what=f"wet_lot {lot} firing")

    # The warehouse shouts about it.
    await tab.open("armazem")
    card = page.get_by_test_id("meter-umid-1")
    await expect(card.get_by_test_id("meter-status")).to_have_text("ÚMIDO")
    banner = page.get_by_test_id("wet-alerts")
    await expect(banner).to_be_visible()
    await expect(banner.get_by_test_id("alert-row").filter(has_text=lot)).to_have_count(1)

    await tab.go("alertas")
    row = page.get_by_test_id(f"alert-wet_lot-{lot}")
    await expect(row.get_by_test_id("alert-state")).to_have_text(await tab.t("alert.state.firing"))
    await expect(row.get_by_test_id("alert-ack")).to_be_hidden()  # nobody logged in

    await tab.login("alertas", screenshot="login-dialog-pt-1280x800")
    ack = row.get_by_test_id("alert-ack")
    await expect(ack).to_be_visible()
    await ack.click()
    acked = await tab.t("alert.state.acknowledged")
    await expect(row.get_by_test_id("alert-state")).to_have_text(acked)
    await expect(row).to_have_attribute("data-state", "acknowledged")
    await expect(row.get_by_test_id("alert-acked-by")).to_contain_text(USER)
    await expect(row.get_by_test_id("alert-ack")).to_be_hidden()

    alert = await site.alert("wet_lot", lot)
    assert alert is not None
    assert alert["state"] == "acknowledged"
    assert alert["acked_by"] == USER
    await tab.settle(0.5)
    await tab.screenshot("alertas-pt-logged-in-1280x800")
    tab.watcher.check()


async def test_reading_at_the_threshold_is_wet(tab: Tab) -> None:
    """The alert rule counts a reading at the threshold as wet; the page must agree."""
    site, page = tab.site, tab.page
    lot = f"L-T{uuid.uuid4().hex[:6].upper()}"
    await tab.open("armazem")
    await site.ticket("umid-2", 12.5, lot=lot)

    async def firing() -> bool:
        alert = await site.alert("wet_lot", lot)
        return alert is not None and alert["state"] == "firing"

    await eventually(firing, timeout_s=15, what=f"wet_lot {lot} firing at 12.5 %")
    status = page.get_by_test_id("meter-umid-2").get_by_test_id("meter-status")
    row = page.get_by_test_id("lot-row").filter(has_text=lot)
    await expect(status).to_have_text("ÚMIDO")
    await expect(row.get_by_test_id("lot-badge")).to_have_text("ÚMIDO")
    await tab.settle(1.5)  # the refetch after the reading has the last word
    await expect(status).to_have_text("ÚMIDO")
    await expect(row.get_by_test_id("lot-badge")).to_have_text("ÚMIDO")
    meter = await site.meter("umid-2")
    assert meter["wet"] is True, meter
    tab.watcher.check()


async def test_product_threshold_agrees_with_the_alert_rule(tab: Tab) -> None:
    """A conilon lot at 12.8 % is below its 13.0 % threshold: no alert, and the page says OK."""
    site, page = tab.site, tab.page
    lot = f"L-C{uuid.uuid4().hex[:6].upper()}"
    await tab.open("armazem")
    await site.ticket("umid-2", 12.8, lot=lot, product="CONILON")
    await tab.settle(1.0)
    assert await site.alert("wet_lot", lot) is None
    meter = await site.meter("umid-2")
    assert meter["threshold_pct"] == 13.0, meter
    card = page.get_by_test_id("meter-umid-2")
    await expect(card.get_by_test_id("meter-threshold")).to_contain_text("13,0")
    await expect(card.get_by_test_id("meter-status")).to_have_text("OK")
    row = page.get_by_test_id("lot-row").filter(has_text=lot)
    await expect(row.get_by_test_id("lot-badge")).to_have_text("OK")
    tab.watcher.check()


# -- 5. record a service through the page -------------------------------------------------


async def test_record_service_through_the_page(tab: Tab) -> None:
    site, page = tab.site, tab.page
    await tab.open("descascadores")
    assert await page.get_by_test_id("service-note").count() == 0  # not logged in
    await tab.login("descascadores")

    note = f"óleo trocado, filtro novo {uuid.uuid4().hex[:4]}"
    form = page.get_by_test_id(f"service-form-{HULLER}-{TASK}")
    await form.get_by_test_id("service-note").fill(note)
    await form.get_by_test_id("service-submit").click()
    saved = await tab.t("service.saved")
    await expect(form.get_by_test_id("service-message")).to_have_text(saved)

    task = page.get_by_test_id(f"task-{HULLER}-{TASK}")
    last = task.get_by_test_id("task-last-service")
    await expect(last).to_contain_text(USER)
    await expect(last).to_contain_text(note)
    await expect(task.get_by_test_id("task-state")).to_have_text(await tab.t("task.state.ok"))
    await expect(task.get_by_test_id("task-hours-since")).to_have_text(re.compile(r"^\d,\d h$"))

    huller = find(as_dict(await site.get("/api/hullers"))["hullers"], "id", HULLER)
    assert huller is not None
    entry = find(huller["tasks"], "task", TASK)
    assert entry is not None
    service = as_dict(entry["last_service"])
    assert service["by"] == USER
    assert service["note"] == note
    await tab.screenshot("descascadores-pt-logged-in-1280x800")
    tab.watcher.check()


# -- 6. set a lot through the page; a hostile code is refused ----------------------------------


async def test_set_lot_through_the_page(tab: Tab) -> None:
    site, page = tab.site, tab.page
    await tab.open("armazem")
    await tab.login("armazem")
    form = page.get_by_test_id("lot-form-recepcao")
    shown = page.get_by_test_id("station-lot-recepcao")
    message = form.get_by_test_id("lot-message")

    await form.get_by_test_id("lot-input").fill("L-0301")
    await form.get_by_test_id("lot-set").click()
    await expect(shown).to_have_text("L-0301")
    await expect(message).to_have_text(await tab.t("lot.saved", {"lot": "L-0301"}))
    lots = as_dict(await site.get("/api/lots"))
    assert as_dict(lots["recepcao"])["lot"] == "L-0301"
    assert as_dict(lots["recepcao"])["by"] == USER

    # A ticket printed without a lot gets the station's.
    await site.ticket("umid-1", 11.1)
    await expect(page.get_by_test_id("meter-umid-1").get_by_test_id("meter-lot")).to_have_text(
        "L-0301"
    )

    # A hostile lot code: refused by the agent, its reason shown as text.
    hostile = "<script>alert(1)</script>"
    tab.watcher.allow("/api/lots/recepcao", 400)
    async with page.expect_response(
        lambda r: r.url.endswith("/api/lots/recepcao") and r.request.method == "POST"
    ) as answer:
        await form.get_by_test_id("lot-input").fill(hostile)
        await form.get_by_test_id("lot-set").click()
    response = await answer.value
    assert response.status == 400
    error = str(as_dict(await response.json())["error"])
    await expect(message).to_have_text(error)
    assert "<" not in await message.inner_html()
    assert await form.locator("script").count() == 0
    await expect(shown).to_have_text("L-0301")
    assert as_dict(as_dict(await site.get("/api/lots"))["recepcao"])["lot"] == "L-0301"

    await form.get_by_test_id("lot-clear").click()
    await expect(shown).to_have_text(await tab.t("armazem.noLot"))
    await expect(message).to_have_text(await tab.t("lot.cleared"))
    assert "recepcao" not in as_dict(await site.get("/api/lots"))
    tab.watcher.check()


# -- 7. device text stays text ----------------------------------------------------------------


async def test_device_text_is_shown_as_text(tab: Tab) -> None:
    site, page = tab.site, tab.page
    await tab.open("armazem")
    scripts = await page.locator("script").count()
    card = page.get_by_test_id("meter-umid-2")

    img = "<img src=x onerror=alert(1)>"
    await site.ticket("umid-2", 11.8, lot="L-XSS1", product=img)
    await expect(card.get_by_test_id("meter-product")).to_have_text(img)
    row = page.get_by_test_id("lot-row").filter(has_text="L-XSS1")
    await expect(row.get_by_test_id("lot-product")).to_have_text(img)

    # The agent refuses a lot code with markup (the reading is kept, without the tag);
    # the product is free text and reaches the page as it was printed.
    script = "<script>alert(2)</script>"
    await site.ticket("umid-2", 11.7, lot="<script>alert(1)</script>", product=script)
    await expect(card.get_by_test_id("meter-product")).to_have_text(script)
    await expect(card.get_by_test_id("meter-lot")).to_have_text(await tab.t("common.none"))

    await tab.settle(1.0)  # a handler that got in would have run by now
    assert await page.locator("img").count() == 0
    assert await page.locator("script").count() == scripts
    html = await card.inner_html()
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "<img" not in await row.inner_html()
    devices = as_dict(await site.get("/api/devices"))["devices"]
    umid2 = find(devices, "device", "umid-2")
    assert umid2 is not None
    assert as_dict(umid2["errors"]).get("bad-lot") == 1
    tab.watcher.check()  # no dialog opened


# -- 8. language switch ----------------------------------------------------------------------


async def test_language_switch(tab: Tab) -> None:
    page = tab.page
    await tab.open("armazem")
    html = page.locator("html")
    toggle = page.get_by_test_id("lang-toggle")
    moisture = page.get_by_test_id("meter-umid-2").get_by_test_id("meter-moisture")
    await expect(toggle).to_have_text("English")
    await expect(moisture).to_have_text(re.compile(r"^\d+,\d %$"))

    await toggle.click()
    await expect(html).to_have_attribute("lang", "en")
    await tab.ready("armazem")
    for page_id, label in NAV_EN.items():
        await expect(page.get_by_test_id(f"nav-{page_id}")).to_contain_text(label)
    await expect(toggle).to_have_text("Português")
    await expect(moisture).to_have_text(re.compile(r"^\d+\.\d %$"))
    await tab.settle(0.5)
    await tab.screenshot("armazem-en-1280x800")

    # Moving to another page and reloading keep the choice.
    await tab.go("descascadores")
    await expect(html).to_have_attribute("lang", "en")
    hours = page.get_by_test_id(f"huller-{HULLER}").get_by_test_id("huller-hours-total")
    await expect(hours).to_have_text(re.compile(r"^\d+\.\d h$"))
    await tab.reload("descascadores")
    await expect(html).to_have_attribute("lang", "en")
    await expect(page.get_by_test_id("nav-descascadores")).to_contain_text("Hullers")
    await tab.screenshot("descascadores-en-1280x800")

    await page.get_by_test_id("lang-toggle").click()
    await expect(html).to_have_attribute("lang", "pt-BR")
    await tab.ready("descascadores")
    for page_id, label in NAV_PT.items():
        await expect(page.get_by_test_id(f"nav-{page_id}")).to_contain_text(label)
    await expect(page.get_by_test_id("lang-toggle")).to_have_text("English")
    await expect(hours).to_have_text(re.compile(r"^\d+,\d h$"))

    # A link with ?lang=en beats the stored choice (a TV in the office, say).
    await tab.open("dispositivos", query="?lang=en")
    await expect(html).to_have_attribute("lang", "en")
    await expect(page.get_by_test_id("nav-dispositivos")).to_contain_text("Devices")
    tab.watcher.check()


# -- 9. no writes without logging in ----------------------------------------------------------


async def test_writes_need_login(tab: Tab) -> None:
    site, page = tab.site, tab.page
    lot = f"L-N{uuid.uuid4().hex[:6].upper()}"
    await site.ticket("umid-2", 14.0, lot=lot)

    async def firing() -> bool:
        alert = await site.alert("wet_lot", lot)
        return alert is not None and alert["state"] == "firing"

    await eventually(firing, timeout_s=15, what=f"wet_lot {lot} firing")
    lots_before = as_dict(await site.get("/api/lots"))

    await tab.open("armazem")
    assert await page.get_by_test_id("lot-input").count() == 0
    assert await page.locator('[data-testid^="lot-form-"]').count() == 0
    await expect(page.get_by_test_id("login-hint").first).to_be_visible()
    await tab.go("alertas")
    row = page.get_by_test_id(f"alert-wet_lot-{lot}")
    await expect(row.get_by_test_id("alert-state")).to_have_text(await tab.t("alert.state.firing"))
    await expect(row.get_by_test_id("alert-ack")).to_be_hidden()
    await tab.go("descascadores")
    assert await page.get_by_test_id("service-note").count() == 0
    assert await page.locator('[data-testid^="service-form-"]').count() == 0

    # Straight to the API from the page: not logged in.
    ack = f"/api/alerts/wet_lot/{lot}/ack"
    service = f"/api/hullers/{HULLER}/services"
    for path in ("/api/lots/armazem", ack, service):
        tab.watcher.allow(path, 401)
    assert await post_from_page(page, "/api/lots/armazem", {"lot": "L-9999"}) == 401
    assert await post_from_page(page, ack, {}) == 401
    assert await post_from_page(page, service, {"task": TASK, "note": "x"}) == 401

    # Logged in, but without the session's CSRF token.
    await tab.login("descascadores")
    for path in ("/api/lots/armazem", ack, service):
        tab.watcher.allow(path, 403)
    assert await post_from_page(page, "/api/lots/armazem", {"lot": "L-9999"}) == 403
    assert await post_from_page(page, ack, {}) == 403
    assert await post_from_page(page, service, {"task": TASK, "note": "x"}) == 403

    assert as_dict(await site.get("/api/lots")) == lots_before
    alert = await site.alert("wet_lot", lot)
    assert alert is not None
    assert alert["state"] == "firing"
    tab.watcher.check()


async def test_wrong_password_is_refused(tab: Tab) -> None:
    page = tab.page
    await tab.open("alertas")
    await page.get_by_test_id("login-open").click()
    form = page.get_by_test_id("login-form")
    await form.get_by_test_id("login-user").fill(USER)
    await form.get_by_test_id("login-password").fill("not-her-password")
    tab.watcher.allow("/api/login", 401)
    await form.get_by_test_id("login-submit").click()
    error = form.get_by_test_id("login-error")
    await expect(error).to_be_visible()
    # The page's own words, in Portuguese, not the agent's English error text.
    await expect(error).to_have_text(await tab.t("login.failed"))
    await expect(page.get_by_test_id("session-user")).to_have_count(0)
    session = as_dict(await tab.site.get("/api/session"))
    assert session["user"] is None
    tab.watcher.check()


async def test_canvas_helper_sees_a_blank_canvas(tab: Tab) -> None:
    """The pixel counter itself: a blank canvas has nothing painted."""
    await tab.open("alertas")
    await tab.page.evaluate(
        """() => { const c = document.createElement("canvas"); c.id = "blank";
                   c.width = 50; c.height = 20; document.body.append(c); }"""
    )
    pixels = await canvas_pixels(tab.page, "#blank", (0, 0, 0))
    assert pixels is not None
    assert (pixels.painted, pixels.colour) == (0, 0)
