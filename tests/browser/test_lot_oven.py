"""The Lote page's meters, calibrations and oven reference, in a real browser.

The site of this module is its own: the agent's real entry point as a child process,
a ticket-printing moisture meter on a pty at ``recepcao``, one web user. Before the
agent starts, the records get lot ``L-ESTUFA`` as an earlier run would have left it:
two readings of ``umid-9`` (a Gehaka whose calibration was due on 2026-11-20; the
later reading is past it) and one of ``umid-8`` (a Motomco), with both meters'
calibration records. A logged-in user enters the oven result; a wrong one is refused
in the agent's words and writes nothing.

Every tab's watcher fails the test on any console error, uncaught exception, failed
request, answer >= 400 or dialog, unless the test caused that answer on purpose.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from coffee_telemetry.agent.evidence.meters import MeterCalibration, record_calibrations
from coffee_telemetry.agent.lots.records import LotRecords
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.web.auth import hash_password
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.browser.helpers import PASSWORD, USER, Site, Tab, as_dict, open_tab
from tests.integration.harness import AgentProcess, DeviceSpec, eventually, write_site_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NS = 1_000_000_000
DAY_NS = 86_400 * NS
#: 2026-11-03 12:00 UTC.
T0 = 1_793_707_200 * NS
METER = "umid-1"
LOT = "L-ESTUFA"
GEHAKA = MeterCalibration(
    ref="cal-gehaka00001",
    device="umid-9",
    make="Gehaka",
    model="G650i",
    serial="SN 0042-A",
    method="ISO 6673-indexed",
    date="2026-01-10",
    certificate="RBC-1234/26",
    due="2026-11-20",
)
MOTOMCO = MeterCalibration(
    ref="cal-motomco0002",
    device="umid-8",
    make="Motomco",
    model="919",
    serial="M-77",
    method="Motomco 919",
    date="2026-06-01",
    certificate="C-9",
    due="2027-06-01",
)


def seed(data_dir: Path) -> None:
    """The lot of the module docstring."""
    data_dir.mkdir(parents=True, exist_ok=True)
    records = LotRecords.open(data_dir / "lots-records.sqlite3")
    try:
        records.write_with(lambda c: record_calibrations(c, [GEHAKA, MOTOMCO], at_ns=T0))
        records.write(
            [
                Reading(
                    ts_ns=ts,
                    seq=seq,
                    device=device,
                    measurement="moisture",
                    fields={"moisture_pct": value, "calibration": ref},
                    tags={"station": "recepcao", "lot": LOT},
                )
                for seq, device, ref, value, ts in (
                    (1, "umid-9", GEHAKA.ref, 11.6, T0),
                    (2, "umid-9", GEHAKA.ref, 11.8, T0 + 30 * DAY_NS),
                    (1, "umid-8", MOTOMCO.ref, 11.0, T0 + 60 * NS),
                )
            ]
        )
    finally:
        records.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def oven_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("browser-oven")
    (tmp / "dev").mkdir()
    meter = PtyPort(link=tmp / "dev" / METER)
    meter.open()
    agent = AgentProcess(tmp / "site.toml", tmp / "agent.log")
    try:
        path = write_site_config(
            tmp / "site.toml",
            data_dir=tmp / "data",
            devices=[DeviceSpec(METER, "moisture.ticket", meter.path, "recepcao")],
            mqtt_port=None,
            prefix="t",
            influx_url=None,
        )
        with path.open("a", encoding="utf-8") as f:
            f.write(
                f'[[api.users]]\nname = "{USER}"\npassword_hash = "{hash_password(PASSWORD)}"\n'
            )
        found = re.search(r"^\[api\]\nport = (\d+)$", path.read_text(), re.MULTILINE)
        assert found is not None
        seed(tmp / "data")
        agent.start()
        site = Site(
            url=f"http://127.0.0.1:{found.group(1)}",
            agent=agent,
            meters={METER: TicketMeterSim(meter, seed=3)},
            stations={METER: "recepcao"},
        )

        async def serving() -> bool:
            if not agent.alive:
                raise AssertionError(f"the agent exited:\n{agent.log_tail()}")
            try:
                status, _ = await site.request("GET", "/api/lots/" + LOT)
            except OSError:
                return False
            return status == 200

        await eventually(serving, timeout_s=30, what="the lot served", context=agent.log_tail)
        yield site
    finally:
        try:
            code = agent.stop()
            assert code == 0, f"the agent exited with {code}:\n{agent.log_tail()}"
        finally:
            meter.close()


@pytest_asyncio.fixture(loop_scope="module")
async def otab(browser: Browser, oven_site: Site) -> AsyncIterator[Tab]:
    t = await open_tab(browser, oven_site, width=1280, height=800)
    try:
        yield t
    finally:
        t.watcher.active = False
        await t.context.close()
    t.watcher.check()


async def goto(tab: Tab, path: str, page_id: str) -> None:
    tab.watcher.leaving = True
    try:
        await tab.page.goto(tab.site.url + path)
    finally:
        tab.watcher.leaving = False
    await tab.ready(page_id)


async def test_each_reading_shows_its_meter_and_calibration(otab: Tab) -> None:
    page = otab.page
    await goto(otab, "/lotes/" + quote(LOT, safe=""), "lote")
    panel = page.get_by_test_id("lot-meters")
    await expect(panel.get_by_role("heading", name="Medidores e estufa")).to_be_visible()
    await expect(page.get_by_test_id("lot-oven")).to_have_text(
        "Nenhum resultado de estufa registrado."
    )
    await expect(page.get_by_test_id("lot-oven-form")).to_have_count(0)  # not logged in
    rows = page.get_by_test_id("lot-meter-reading")
    await expect(rows).to_have_count(3)
    late = page.locator('[data-testid="lot-meter-reading"][data-reading="umid-9:2"]')
    await expect(late).to_contain_text("umid-9 (Gehaka G650i nº SN 0042-A)")
    await expect(late).to_contain_text("ISO 6673-indexed")
    await expect(late.get_by_test_id("lot-meter-calibration")).to_have_text(
        "cal-gehaka00001 RBC-1234/26 (2026-11-20)"
    )
    await expect(late.get_by_test_id("lot-meter-state")).to_have_text("vencida")
    early = page.locator('[data-testid="lot-meter-reading"][data-reading="umid-9:1"]')
    await expect(early.get_by_test_id("lot-meter-state")).to_have_text("em dia")
    motomco = page.locator('[data-testid="lot-meter-reading"][data-reading="umid-8:1"]')
    await expect(motomco).to_contain_text("umid-8 (Motomco 919 nº M-77)")
    bias = page.get_by_test_id("lot-meter-bias-value")
    await expect(bias).to_have_text(["—", "—"])
    otab.watcher.check()


async def test_a_logged_in_user_enters_the_oven_result_and_sees_each_bias(otab: Tab) -> None:
    page = otab.page
    await goto(otab, "/lotes/" + quote(LOT, safe=""), "lote")
    await otab.login("lote")
    form = page.get_by_test_id("lot-oven-form")
    await expect(form).to_be_visible()
    message = page.get_by_test_id("lot-oven-message")
    # Nothing typed: said here, nothing sent.
    await page.get_by_test_id("lot-oven-save").click()
    await expect(message).to_have_text("Informe a umidade de estufa (ex.: 11,4).")
    # Out of range: refused by the agent, in its words; nothing written.
    otab.watcher.allow(f"/api/lots/{LOT}/oven", 400)
    await form.get_by_label("Umidade de estufa (%)").fill("95")
    await page.get_by_test_id("lot-oven-save").click()
    await expect(message).to_have_class(re.compile("msg--error"))
    await expect(message).to_contain_text("fora de 0-80 %")
    meters = as_dict(as_dict(await otab.site.get("/api/lots/" + LOT))["meters"])
    assert meters["oven"] is None
    # Markup is only text: refused, never rendered.
    await form.get_by_label("Umidade de estufa (%)").fill("<b>11</b>")
    await page.get_by_test_id("lot-oven-save").click()
    await expect(message).to_contain_text("invalid oven moisture")
    # A comma, as staff write it.
    await form.get_by_label("Umidade de estufa (%)").fill("11,4")
    await page.get_by_test_id("lot-oven-save").click()
    await expect(message).to_have_text("Resultado de estufa registrado.")
    await expect(page.get_by_test_id("lot-oven")).to_contain_text(f"11,40 % por {USER}")
    gehaka = page.locator('[data-testid="lot-meter-bias-row"][data-device="umid-9"]')
    await expect(gehaka.get_by_test_id("lot-meter-bias-value")).to_have_text("+0,30 pp")
    motomco = page.locator('[data-testid="lot-meter-bias-row"][data-device="umid-8"]')
    await expect(motomco.get_by_test_id("lot-meter-bias-value")).to_have_text("-0,40 pp")
    meters = as_dict(as_dict(await otab.site.get("/api/lots/" + LOT))["meters"])
    oven = as_dict(meters["oven"])
    assert (oven["moisture_pct"], oven["by"]) == (11.4, USER)
    assert len(list(meters["oven_history"])) == 1  # type: ignore[call-overload]
    await otab.screenshot("lot-oven-pt-1280x800")
    otab.watcher.check()
