"""Ready to hull and the intake receipt on the Lotes and Lote pages, in a real browser.

The site of this module is its own: the agent's real entry point as a child process,
a ticket-printing moisture meter on a pty at ``recepcao``, one web user. Before the
agent starts, the records get two lots as ``coffee-telemetry lot dried`` and an
earlier run would have left them:

* ``L-PRONTO`` left the patio nine days ago and has three readings since, inside the
  hulling window: the agent finds it ready to hull;
* ``L-REPOUSO`` left the patio two days ago: resting, six days to go.

Every tab's watcher fails the test on any console error, uncaught exception, failed
request, answer >= 400 or dialog, unless the test caused that answer on purpose.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from coffee_telemetry.agent.lots.readiness import parse_dried, set_dried
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
METER = "umid-1"


def seed(data_dir: Path) -> None:
    """The two lots of the module docstring."""
    data_dir.mkdir(parents=True, exist_ok=True)
    now = time.time_ns()
    records = LotRecords.open(data_dir / "lots-records.sqlite3")
    try:
        for code, days in (("L-PRONTO", 9), ("L-REPOUSO", 2)):
            change = parse_dried({"dryer": "patio", "at": now - days * DAY_NS}, now_ns=now)
            set_dried(records, code, change, by=USER, source="cli", at_ns=now - days * DAY_NS)
        records.write(
            [
                Reading(
                    ts_ns=now - (5 - i) * DAY_NS,
                    seq=i + 1,
                    device="umid-9",
                    measurement="moisture",
                    fields={"moisture_pct": value},
                    tags={"station": "patio", "lot": "L-PRONTO"},
                )
                for i, value in enumerate((11.0, 11.1, 10.9))
            ]
        )
    finally:
        records.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ready_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("browser-ready")
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
                "[lots]\nready_check_s = 0.5\n"
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

        async def announced() -> bool:
            if not agent.alive:
                raise AssertionError(f"the agent exited:\n{agent.log_tail()}")
            try:
                status, doc = await site.request("GET", "/api/lots/L-PRONTO")
            except OSError:
                return False
            readiness = as_dict(doc).get("readiness") if status == 200 else None
            return isinstance(readiness, dict) and readiness.get("announced_ns") is not None

        await eventually(announced, timeout_s=30, what="L-PRONTO ready", context=agent.log_tail)
        yield site
    finally:
        try:
            code = agent.stop()
            assert code == 0, f"the agent exited with {code}:\n{agent.log_tail()}"
        finally:
            meter.close()


@pytest_asyncio.fixture(loop_scope="module")
async def rtab(browser: Browser, ready_site: Site) -> AsyncIterator[Tab]:
    t = await open_tab(browser, ready_site, width=1280, height=800)
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


async def test_readiness_in_the_list_and_the_lot(rtab: Tab) -> None:
    page = rtab.page
    await goto(rtab, "/lotes", "lotes")
    table = page.get_by_test_id("lots-table")
    ready = table.locator('tr[data-lot="L-PRONTO"]').get_by_test_id("lot-readiness-cell")
    await expect(ready).to_have_text("Pronto para beneficiar")
    await expect(ready).to_have_attribute("data-readiness", "ready")
    resting = table.locator('tr[data-lot="L-REPOUSO"]').get_by_test_id("lot-readiness-cell")
    await expect(resting).to_have_text("Em descanso")
    await expect(resting).to_have_attribute("title", re.compile(r"faltam 5 d 2[34] h|faltam 6 d"))

    await goto(rtab, "/lotes/" + quote("L-PRONTO", safe=""), "lote")
    await expect(page.get_by_test_id("lot-readiness")).to_have_text("Pronto para beneficiar")
    await expect(page.get_by_test_id("lot-readiness-text")).to_have_text(
        "Pronto para beneficiar: 10,9 %, 11,1 %, 11,0 % dentro da janela (10,8\u201311,2 %)"
    )
    await expect(page.get_by_test_id("lot-dried")).to_contain_text("Terreiro")
    await expect(page.get_by_test_id("lot-hulled")).to_have_text("—")
    event = page.get_by_test_id("lot-event").filter(has_text="Pronto para beneficiar")
    await expect(event).to_have_count(1)
    await expect(page.get_by_test_id("lot-receipt-empty")).to_be_visible()
    await expect(page.get_by_test_id("lot-receipt-form")).to_have_count(0)
    await rtab.screenshot("lots-ready-to-hull-pt-1280x800")
    rtab.watcher.check()


async def test_receipt_and_dried_forms(rtab: Tab) -> None:
    page = rtab.page
    await goto(rtab, "/lotes/" + quote("L-REPOUSO", safe=""), "lote")
    await rtab.login("lote")
    form = page.get_by_test_id("lot-receipt-form")
    await expect(form).to_be_visible()
    # Markup in a field: refused by the agent, in its words; nothing written.
    rtab.watcher.allow("/api/lots/L-REPOUSO/receipt", 400)
    await form.get_by_label("Pilha").fill('<img src=x onerror="alert(1)">')
    await page.get_by_test_id("lot-receipt-save").click()
    message = page.get_by_test_id("lot-receipt-message")
    await expect(message).to_have_class(re.compile("msg--error"))
    await expect(message).to_contain_text("stack may only use letters")
    assert as_dict(await rtab.site.get("/api/lots/L-REPOUSO"))["receipt"] is None
    # A weight that is not a number is refused here.
    await form.get_by_label("Pilha").fill("Pilha 3 / Fila B")
    await form.get_by_label("Peso bruto (kg)").fill("muito")
    await page.get_by_test_id("lot-receipt-save").click()
    await expect(message).to_have_text("Peso bruto (kg): um número (ex.: 2450,5).")
    await form.get_by_label("Membro (código)").fill("M-77")
    await form.get_by_label("Nota fiscal").fill("000.123.456")
    await form.get_by_label("Sacas").fill("40")
    await form.get_by_label("Peso bruto (kg)").fill("2450,5")
    await form.get_by_label("Peso líquido (kg)").fill("2400")
    await page.get_by_test_id("lot-receipt-save").click()
    await expect(message).to_have_text("Recibo salvo.")
    await expect(page.get_by_test_id("lot-receipt-member")).to_have_text("M-77")
    await expect(page.get_by_test_id("lot-receipt-stack")).to_have_text("Pilha 3 / Fila B")
    await expect(page.get_by_test_id("lot-receipt-gross")).to_have_text(
        re.compile(r"^2\.450,5\s?kg \(informado\)$")
    )
    receipt = as_dict(as_dict(await rtab.site.get("/api/lots/L-REPOUSO"))["receipt"])
    assert (receipt["member"], receipt["invoice"], receipt["sacks"]) == ("M-77", "000.123.456", 40)
    assert (receipt["gross_kg"], receipt["net_kg"]) == (2450.5, 2400.0)

    # Left a mechanical dryer just now: ten days of rest from now.
    dried = page.get_by_test_id("lot-dried-form")
    await dried.get_by_label("Secador").select_option("mechanical")
    await dried.get_by_label("Quando").fill("")
    await page.get_by_test_id("lot-dried-save").click()
    await expect(page.get_by_test_id("lot-dried-message")).to_have_text(
        "Saída do secador registrada."
    )
    await expect(page.get_by_test_id("lot-readiness-text")).to_contain_text(
        "Em descanso após secador mecânico: faltam"
    )
    await expect(page.get_by_test_id("lot-dried")).to_contain_text("Secador mecânico")
    await expect(
        page.get_by_test_id("lot-event").filter(has_text="Recibo de entrada")
    ).to_have_count(1)
    await rtab.screenshot("lots-receipt-pt-1280x800")
    rtab.watcher.check()
