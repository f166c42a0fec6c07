"""What the browser tests share: the site under test, a watcher for page errors, pixels.

``Site`` is one warehouse as the tests see it: the real agent process (its JSON
API on a free port), two ticket-printing moisture meters on ptys that print a
ticket when a test asks, and an RS-485 bus whose two Autonics units answer from
a thread of their own (so the huller keeps answering between tests, when no
test's event loop runs).

``PageWatcher`` listens to everything a clean page never reports: console errors
and warnings, uncaught exceptions, failed requests, answers >= 400 and dialogs
(``alert(1)`` from injected markup would be one). A test that triggers a 401 or
400 on purpose allows exactly that (path, status) first; Chromium also logs such
an answer as a console error ("Failed to load resource"), which is allowed with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    Response,
    expect,
)

from coffee_telemetry.simulators.moisture import SentReading, TicketMeterSim
from tests.integration.harness import ROOT, AgentProcess, eventually

#: Where CI picks up the screenshots (``/artifacts/`` is git-ignored).
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
#: Debian's chromium; the tests never download a browser.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The web user the site file configures.
USER, PASSWORD = "maria", "cafe-com-leite-42"

PAGES = {
    "armazem": "/",
    "descascadores": "/descascadores",
    "dispositivos": "/dispositivos",
    "alertas": "/alertas",
}
NAV_PT = {
    "armazem": "Armazém",
    "descascadores": "Descascadores",
    "dispositivos": "Dispositivos",
    "alertas": "Alertas",
}
NAV_EN = {
    "armazem": "Warehouse",
    "descascadores": "Hullers",
    "dispositivos": "Devices",
    "alertas": "Alerts",
}


# -- JSON ------------------------------------------------------------------------------


def as_dict(value: object) -> dict[str, object]:
    """``value`` as a JSON object (fails the test otherwise)."""
    assert isinstance(value, dict), f"expected a JSON object, got {value!r}"
    return value


def as_list(value: object) -> list[object]:
    """``value`` as a JSON array (fails the test otherwise)."""
    assert isinstance(value, list), f"expected a JSON array, got {value!r}"
    return value


def find(items: object, key: str, value: object) -> dict[str, object] | None:
    """The first object of the array ``items`` whose ``key`` is ``value``."""
    for item in as_list(items):
        if as_dict(item).get(key) == value:
            return as_dict(item)
    return None


# -- the simulated RS-485 bus -------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a thread of its own, for simulators that must always answer."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._tasks: list[concurrent.futures.Future[None]] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` in the thread until ``stop``."""
        self._tasks.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        """Cancel what runs there, wait for it, and end the thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"a simulator failed: {task.exception()!r}")
        self.loop.close()


# -- the site ----------------------------------------------------------------------------------


@dataclass
class Site:
    """The agent under test and the equipment it reads."""

    url: str
    agent: AgentProcess
    meters: dict[str, TicketMeterSim]
    stations: dict[str, str]  # meter -> station

    async def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, object]:
        """One call to the agent's JSON API: (status, decoded body)."""

        def call() -> tuple[int, object]:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                self.url + path,
                data=data,
                method=method,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                exc.close()
            return status, json.loads(raw) if raw else None

        return await asyncio.to_thread(call)

    async def get(self, path: str) -> object:
        """GET ``path`` from the JSON API; fails the test on anything but 200."""
        status, doc = await self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {doc!r}"
        return doc

    async def meter(self, device: str) -> dict[str, object]:
        """The warehouse API's entry for one meter."""
        found = find(as_dict(await self.get("/api/warehouse"))["meters"], "device", device)
        assert found is not None, f"{device} is not on /api/warehouse"
        return found

    async def ticket(
        self,
        device: str,
        moisture_pct: float,
        *,
        lot: str | None = None,
        product: str = "CAFE",
        wait: bool = True,
    ) -> SentReading:
        """Have a meter print one ticket; with ``wait``, until the agent serves it.

        Returns:
            What was printed, ``ts_ns`` being right after the last byte was written.
        """
        before = (await self.meter(device)).get("ts_ns") if wait else None
        sent = await self.meters[device].emit(moisture_pct=moisture_pct, lot=lot, product=product)
        assert sent is not None, f"{device}: the ticket did not go out whole"
        if wait:

            async def served() -> bool:
                m = await self.meter(device)
                return m.get("ts_ns") != before and m.get("moisture_pct") == sent.moisture_pct

            await eventually(
                served,
                timeout_s=15,
                what=f"{device}'s {moisture_pct} % ticket on /api/warehouse",
                context=self.agent.log_tail,
            )
        return sent

    async def alert(self, rule: str, subject: str) -> dict[str, object] | None:
        """The open alert (rule, subject), if any."""
        for item in as_list(await self.get("/api/alerts")):
            alert = as_dict(item)
            if alert.get("rule") == rule and alert.get("subject") == subject:
                return alert
        return None


# -- watching a page ----------------------------------------------------------------------------


_STATUS_IN_CONSOLE = re.compile(r"status of (\d{3})")


@dataclass
class PageWatcher:
    """Collects what a clean page never reports (see the module docstring)."""

    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed: set[tuple[str, int]] = field(default_factory=set)
    active: bool = True
    #: A test navigates away: the live stream (``/api/events``) is aborted, which is fine.
    leaving: bool = False

    def attach(self, page: Page) -> None:
        """Listen to ``page`` from now on (attach before the first ``goto``)."""
        page.on("console", self._console)
        page.on("pageerror", self._page_error)
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)
        page.on("dialog", self._dialog)

    def allow(self, path: str, status: int) -> None:
        """A test is about to trigger this answer on purpose."""
        self.allowed.add((path, status))

    def _is_allowed(self, url: str, status: int) -> bool:
        return (urlsplit(url).path, status) in self.allowed

    def _console(self, msg: ConsoleMessage) -> None:
        if not self.active or msg.type not in ("error", "warning"):
            return
        found = _STATUS_IN_CONSOLE.search(msg.text)
        url = str(msg.location.get("url", ""))
        if (
            msg.text.startswith("Failed to load resource")
            and found
            and self._is_allowed(url, int(found.group(1)))
        ):
            return
        self.problems.append(f"console {msg.type}: {msg.text} ({url})")

    def _page_error(self, exc: Exception) -> None:
        if self.active:
            self.problems.append(f"page error: {exc!r}")

    def _request_failed(self, request: Request) -> None:
        if not self.active:
            return
        if self.leaving and urlsplit(request.url).path == "/api/events":
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if (
            self.active
            and response.status >= 400
            and not self._is_allowed(response.url, response.status)
        ):
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def check(self) -> None:
        """Fail if anything was reported so far."""
        assert not self.dialogs, f"dialogs opened (injected markup ran?): {self.dialogs}"
        assert not self.problems, "the page reported problems:\n" + "\n".join(self.problems)


@dataclass
class Tab:
    """A browser tab on the site, with its watcher."""

    page: Page
    context: BrowserContext
    watcher: PageWatcher
    site: Site

    async def open(self, page_id: str, *, query: str = "") -> None:
        """Load one of the four pages and wait for its first data to be drawn."""
        self.watcher.leaving = True  # the page we leave, if any, loses its live stream
        try:
            await self.page.goto(self.site.url + PAGES[page_id] + query)
        finally:
            self.watcher.leaving = False
        await self.ready(page_id)

    async def reload(self, page_id: str) -> None:
        """Reload the page (as F5 would) and wait for it to be drawn again."""
        self.watcher.leaving = True
        try:
            await self.page.reload()
        finally:
            self.watcher.leaving = False
        await self.ready(page_id)

    async def go(self, page_id: str) -> None:
        """Move to another page through the nav bar (client-side; the live stream stays)."""
        await self.page.get_by_test_id(f"nav-{page_id}").click()
        await self.ready(page_id)

    async def ready(self, page_id: str) -> None:
        """Wait for ``<main data-testid="page-<id>" data-ready="1">`` and the live stream."""
        main = self.page.locator(f'main[data-testid="page-{page_id}"][data-ready="1"]')
        await expect(main).to_be_attached(timeout=15_000)
        live = self.page.get_by_test_id("live-status")
        await expect(live).to_have_attribute("data-state", "open", timeout=10_000)

    async def t(self, key: str, params: dict[str, object] | None = None) -> str:
        """The page's own text for ``key``, in its current language (``i18n.js``'s ``t``)."""
        text = await self.page.evaluate(
            "async ([key, params]) => (await import('/static/i18n.js')).t(key, params)",
            [key, params],
        )
        assert isinstance(text, str), text
        assert text != key, f"no text for {key!r} in i18n.js"
        return text

    async def settle(self, seconds: float = 1.0) -> None:
        """Let late requests and refetches finish, so the watcher sees them."""
        await self.page.wait_for_timeout(seconds * 1000)

    async def login(self, page_id: str, *, screenshot: str | None = None) -> None:
        """Log in through the header's login form, as staff would."""
        await self.page.get_by_test_id("login-open").click()
        form = self.page.get_by_test_id("login-form")
        await expect(form).to_be_visible()
        await form.get_by_test_id("login-user").fill(USER)
        await form.get_by_test_id("login-password").fill(PASSWORD)
        if screenshot:
            await self.screenshot(screenshot)
        await form.get_by_test_id("login-submit").click()
        await expect(self.page.get_by_test_id("session-user")).to_have_text(USER)
        await expect(form).to_have_count(0)
        await self.ready(page_id)

    async def screenshot(self, name: str) -> Path:
        """A full-page PNG under ``artifacts/screenshots/``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        # Transitions (a progress bar shrinking after a service) are finished first.
        await self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


async def open_tab(browser: Browser, site: Site, *, width: int, height: int) -> Tab:
    """A fresh context (no cookies, no stored language) and page, watched from the start."""
    context = await browser.new_context(
        viewport={"width": width, "height": height},
        locale="pt-BR",
        timezone_id="America/Sao_Paulo",
    )
    page = await context.new_page()
    watcher = PageWatcher()
    watcher.attach(page)
    return Tab(page=page, context=context, watcher=watcher, site=site)


# -- canvases -------------------------------------------------------------------------------

_PIXELS_JS = """
([selector, rgb, tolerance]) => {
  const canvas = document.querySelector(selector);
  if (!canvas || !canvas.width || !canvas.height) return null;
  // Read a copy: repeated readbacks of the page's own canvas make Chromium warn.
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  const ctx = copy.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(canvas, 0, 0);
  const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
  let painted = 0, colour = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    painted++;
    const near = (k) => Math.abs(data[i + k] - rgb[k]) <= tolerance;
    if (data[i + 3] > 128 && near(0) && near(1) && near(2)) {
      colour++;
    }
  }
  return {width: canvas.width, height: canvas.height, painted, colour};
}
"""


@dataclass(frozen=True)
class CanvasPixels:
    """What a canvas holds: its size, non-transparent pixels, pixels of one colour."""

    width: int
    height: int
    painted: int
    colour: int


async def canvas_pixels(
    page: Page, selector: str, rgb: tuple[int, int, int], tolerance: int = 40
) -> CanvasPixels | None:
    """Count the painted pixels of the canvas at ``selector`` (None: no canvas yet)."""
    doc = await page.evaluate(_PIXELS_JS, [selector, list(rgb), tolerance])
    if doc is None:
        return None
    d = as_dict(doc)
    return CanvasPixels(
        width=int(str(d["width"])),
        height=int(str(d["height"])),
        painted=int(str(d["painted"])),
        colour=int(str(d["colour"])),
    )


async def wait_for_colour(
    page: Page, selector: str, rgb: tuple[int, int, int], *, at_least: int, what: str
) -> CanvasPixels:
    """Wait until the canvas at ``selector`` has ``at_least`` pixels close to ``rgb``."""
    deadline = time.monotonic() + 15
    last: CanvasPixels | None = None
    while time.monotonic() < deadline:
        last = await canvas_pixels(page, selector, rgb)
        if last is not None and last.colour >= at_least:
            return last
        await page.wait_for_timeout(250)
    raise AssertionError(f"{what}: the canvas never drew it ({last})")
