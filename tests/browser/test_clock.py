"""The agent's clock on the Dispositivos page: a person sets it, and a GPS takes over.

The real agent (its entry point, a child process) with one ticket meter on a pty and a
GPS receiver on another (``[agent.time_gps]``), ``time_sources = ["gps", "user"]``,
and no other source: it starts with provisional time. The receiver, silent at first,
answers from a thread of its own (like the RS-485 bus of the other browser tests).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from coffee_telemetry.agent.web.auth import hash_password
from coffee_telemetry.simulators.gps import GpsSim
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.browser.helpers import PASSWORD, USER, LoopThread, Site, Tab, as_dict, open_tab
from tests.integration.harness import AgentProcess, DeviceSpec, eventually, write_site_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NS = 1_000_000_000


class ClockSite(Site):
    gps: GpsSim


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clock_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClockSite]:
    tmp = tmp_path_factory.mktemp("clock")
    (tmp / "dev").mkdir()
    meter = PtyPort(link=tmp / "dev" / "umid-1")
    receiver = PtyPort(link=tmp / "dev" / "gps")
    meter.open()
    receiver.open()
    thread = LoopThread("gps-sim")
    agent = AgentProcess(tmp / "site.toml", tmp / "agent.log")
    config = tmp / "site.toml"
    try:
        write_site_config(
            config,
            data_dir=tmp / "data",
            devices=[DeviceSpec("umid-1", "moisture.ticket", meter.path, "recepcao")],
            mqtt_port=None,
            prefix="clock",
            influx_url=None,
        )
        text = config.read_text(encoding="utf-8").replace(
            'time_sources = ["system"]', 'time_sources = ["gps", "user"]'
        )
        text += "\n".join(
            [
                "[[api.users]]",
                f'name = "{USER}"',
                f'password_hash = "{hash_password(PASSWORD)}"',
                "[agent.time_gps]",
                f'port = "{receiver.path}"',
                "interval_s = 1",
                "",
            ]
        )
        config.write_text(text, encoding="utf-8")
        api_port = int(re.search(r"^port = (\d+)$", text.split("[api]")[1], re.M)[1])  # type: ignore[index]
        gps = GpsSim(receiver)
        gps.silent = True
        thread.start()
        thread.spawn(gps.run(interval_s=0.5))
        agent.start()
        site = ClockSite(
            url=f"http://127.0.0.1:{api_port}",
            agent=agent,
            meters={"umid-1": TicketMeterSim(meter, product="CAFE")},
            stations={"umid-1": "recepcao"},
        )
        site.gps = gps

        async def up() -> bool:
            if not agent.alive:
                raise AssertionError(f"the agent exited:\n{agent.log_tail()}")
            try:
                status, _ = await site.request("GET", "/api/time")
            except OSError:
                return False
            return status == 200

        await eventually(up, timeout_s=30, what="the agent's API", context=agent.log_tail)
        yield site
    finally:
        try:
            code = agent.stop()
            assert code == 0, f"the agent exited with {code}:\n{agent.log_tail()}"
        finally:
            thread.stop()
            meter.close()
            receiver.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, clock_site: ClockSite) -> AsyncIterator[Tab]:
    t = await open_tab(browser, clock_site, width=1280, height=900)
    try:
        yield t
    finally:
        t.watcher.active = False
        await t.context.close()
    t.watcher.check()


async def time_doc(site: Site) -> dict[str, object]:
    return as_dict(await site.get("/api/time"))


async def test_a_person_sets_the_time_after_confirming_it(tab: Tab, clock_site: ClockSite) -> None:
    assert (await time_doc(clock_site))["quality"] == "provisional"
    await tab.open("dispositivos")
    panel = tab.page.get_by_test_id("clock-panel")
    await expect(panel).to_be_visible()
    quality = panel.get_by_test_id("clock-quality")
    await expect(quality).to_have_attribute("data-quality", "provisional")
    await expect(quality).to_have_text(await tab.t("clock.quality.provisional"))
    await expect(panel.get_by_test_id("clock-reason")).to_contain_text(
        await tab.t("clock.why.noSource")
    )
    gps = panel.get_by_test_id("clock-source-gps")
    await expect(gps).to_contain_text("GPS")
    # Not logged in: no set button, the login hint instead.
    await expect(panel.get_by_test_id("clock-set-area")).to_be_hidden()
    await expect(panel.get_by_test_id("login-hint")).to_be_visible()

    await tab.login("dispositivos")
    panel = tab.page.get_by_test_id("clock-panel")
    await panel.get_by_test_id("clock-set").click()
    box = panel.get_by_test_id("clock-confirm-box")
    await expect(box).to_be_visible()
    await expect(box.get_by_test_id("clock-confirm-text")).to_have_text(
        await tab.t("clock.confirmText")
    )
    shown = await box.get_by_test_id("clock-device-time").text_content()
    assert shown is not None
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4},? \d{2}:\d{2}:\d{2}", shown), shown
    await tab.screenshot("clock-confirm-pt")
    # Cancel changes nothing.
    await box.get_by_test_id("clock-cancel").click()
    await expect(box).to_be_hidden()
    assert (await time_doc(clock_site))["quality"] == "provisional"

    await panel.get_by_test_id("clock-set").click()
    await box.get_by_test_id("clock-confirm").click()
    await expect(panel.get_by_test_id("clock-message")).to_have_text(await tab.t("clock.saved"))
    await expect(quality).to_have_attribute("data-quality", "trusted")
    await expect(panel.get_by_test_id("clock-source")).to_contain_text(f"({USER})")
    doc = await time_doc(clock_site)
    assert (doc["quality"], doc["source"]) == ("trusted", f"user:{USER}")
    now_ns = doc["now_ns"]
    assert isinstance(now_ns, int)
    assert abs(now_ns - time.time_ns()) < 5 * NS
    await tab.settle()


async def test_with_a_gps_fix_the_page_says_why_it_cannot_be_set(
    tab: Tab, clock_site: ClockSite
) -> None:
    clock_site.gps.silent = False

    async def gps_in_use() -> bool:
        doc = await time_doc(clock_site)
        return doc["source"] == "gps"

    await eventually(gps_in_use, timeout_s=15, what="the GPS as the time source")
    health = as_dict(await clock_site.get("/api/health"))
    sources = as_dict(as_dict(as_dict(health["counters"])["time"])["sources"])
    assert as_dict(sources["gps"])["state"] == "ok"
    assert as_dict(sources["user"])["state"] == "waiting"

    await tab.open("dispositivos")
    await tab.login("dispositivos")
    panel = tab.page.get_by_test_id("clock-panel")
    await expect(panel.get_by_test_id("clock-quality")).to_have_attribute("data-quality", "trusted")
    refusal = panel.get_by_test_id("clock-refusal")
    await expect(refusal).to_have_text(
        await tab.t("clock.refusal.trusted-source", {"source": "GPS"})
    )
    await expect(panel.get_by_test_id("clock-set-area")).to_be_hidden()
    state = panel.get_by_test_id("clock-source-gps").get_by_test_id("clock-source-state")
    await expect(state).to_have_attribute("data-source-state", "ok")
    await tab.screenshot("clock-gps-pt")

    await tab.open("dispositivos", query="?lang=en")
    panel = tab.page.get_by_test_id("clock-panel")
    await expect(panel.get_by_test_id("clock-refusal")).to_have_text(
        "No need to set the time: it already comes from a trusted source (GPS)."
    )
    await expect(panel.get_by_test_id("clock-quality")).to_have_text("Trusted time")
    await tab.settle()
