"""Browser tests' fixtures: one warehouse per module, one browser, a fresh tab per test.

(``conftest.py`` imports them when playwright is installed.)

The site (``site``) is built once per module, since the machine has two cores:
a real Mosquitto (the session's), the agent's real entry point as a child
process, two ticket-printing moisture meters on ptys (stations ``recepcao`` and
``armazem``) and an RS-485 bus with a huller's bag counter and hour meter. Its
``[api]`` has one user (``maria``) and no API token; ``[alerts.wet_lot]`` fires
on a single wet reading (k = 1, n = 1), at 12.5 % (13.0 % for conilon).

The hour meter counts seconds and the agent reads each count as 0.1 h, so the
huller runs 0.1 h a second: today's bar of the hours chart grows visibly while
the tests run.

Playwright's async API drives Debian's chromium (never ``playwright install``:
there is nothing to download here). Everything async runs on the module's event
loop; the RTU bus answers from a thread of its own, so it keeps answering
between tests.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from coffee_telemetry.agent.web.auth import hash_password
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.rtu import CounterUnitSim, RtuBusSim
from tests.browser.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    USER,
    LoopThread,
    Site,
    Tab,
    as_dict,
    as_list,
    find,
    open_tab,
)
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    eventually,
    huller_toml,
    write_site_config,
)
from tests.services.mosquitto import MosquittoServer

METERS = {"umid-1": "recepcao", "umid-2": "armazem"}
HULLER = "desc-1"


def site_config(
    path: Path,
    *,
    data_dir: Path,
    meters: dict[str, PtyPort],
    bus: PtyPort,
    mqtt_port: int,
) -> int:
    """Write the site file; returns the API port ``write_site_config`` chose."""
    write_site_config(
        path,
        data_dir=data_dir,
        devices=[
            DeviceSpec(device, "moisture.ticket", port.path, METERS[device])
            for device, port in meters.items()
        ],
        mqtt_port=mqtt_port,
        prefix=f"t{uuid.uuid4().hex[:10]}",
        influx_url=None,
    )
    extra = [
        # write_site_config opened [api] (with its port); the users belong to it.
        "[[api.users]]",
        f'name = "{USER}"',
        f'password_hash = "{hash_password(PASSWORD)}"',
        "[alerts.wet_lot]",
        "k = 1",
        "n = 1",
        # Products are matched without regard to case: tickets print "CONILON".
        'thresholds_pct = { "conilon" = 13.0 }',
    ]
    extra += huller_toml(
        bus.path,
        huller=HULLER,
        station="beneficio",
        poll_interval_s=0.5,
        hour_meter_unit="0.1h",
        tasks=[{"id": "oleo", "name": "Troca de óleo", "interval_h": 250, "warn_before_h": 25}],
    )
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(extra) + "\n")
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return int(doc["api"]["port"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(
    mosquitto: MosquittoServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    """The agent with its meters and huller, serving the dashboard (see the module doc)."""
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "dev").mkdir()
    ports = {device: PtyPort(link=tmp / "dev" / device) for device in METERS}
    bus = PtyPort(link=tmp / "dev" / "rs485")
    for port in (*ports.values(), bus):
        port.open()
    bus_thread = LoopThread("rtu-sim")
    agent = AgentProcess(tmp / "site.toml", tmp / "agent.log")
    try:
        api_port = site_config(
            tmp / "site.toml",
            data_dir=tmp / "data",
            meters=ports,
            bus=bus,
            mqtt_port=mosquitto.port,
        )
        units = [
            CounterUnitSim(1, mode=Mode.COUNTER, pv=1200, rate_per_s=0.5),
            # 95.0 h on the meter (in 0.1 h counts); the oil change (250 h) is far off.
            CounterUnitSim(2, mode=Mode.TIMER, pv=950),
        ]
        bus_thread.start()
        bus_thread.spawn(RtuBusSim(bus, units).serve_loop())
        agent.start()
        site = Site(
            url=f"http://127.0.0.1:{api_port}",
            agent=agent,
            meters={
                device: TicketMeterSim(port, product="CAFE", seed=i)
                for i, (device, port) in enumerate(ports.items())
            },
            stations=dict(METERS),
        )

        async def all_online() -> bool:
            if not agent.alive:
                raise AssertionError(f"the agent exited:\n{agent.log_tail()}")
            try:
                status, doc = await site.request("GET", "/api/devices")
            except OSError:
                return False
            if status != 200:
                return False
            devices = as_dict(doc)["devices"]
            return all(
                (d := find(devices, "device", name)) is not None and d.get("state") == "online"
                for name in (*METERS, HULLER)
            )

        await eventually(
            all_online, timeout_s=30, what="meters and huller online", context=agent.log_tail
        )
        # A morning's first samples. (The 24 h chart buckets them into one point per meter:
        # /api/series keeps at most 1000 points, 86.4 s each.)
        for value in (11.2, 11.6, 11.4):
            await site.ticket("umid-1", value, lot="L-0100")
        for value in (11.9, 12.1):
            await site.ticket("umid-2", value, lot="L-0200")

        async def charted() -> bool:
            # /api/series buckets points (24 h in 1000 buckets of 86.4 s): one point each.
            for device in METERS:
                doc = as_dict(
                    await site.get(
                        f"/api/series?measurement=moisture&device={device}"
                        "&field=moisture_pct&range=24h"
                    )
                )
                if not as_list(doc["v"]):
                    return False
            return True

        await eventually(charted, timeout_s=20, what="the readings in the local history")
        yield site
    finally:
        try:
            code = agent.stop()
            assert code == 0, f"the agent exited with {code}:\n{agent.log_tail()}"
        finally:
            bus_thread.stop()
            for port in (*ports.values(), bus):
                port.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, launched the one allowed way."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian package 'chromium' (apt-get install chromium);"
            " the browser tests never run `playwright install`"
        )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, site: Site) -> AsyncIterator[Tab]:
    """A fresh 1280x800 tab; after the test, nothing may have gone wrong on it."""
    t = await open_tab(browser, site, width=1280, height=800)
    try:
        yield t
    finally:
        t.watcher.active = False  # closing aborts the live stream: that is no error
        await t.context.close()
    t.watcher.check()
