"""Warehouse screen benchmark: from a wet-lot reading to the alarm banner on the Armazém page.

The real agent (a subprocess, ``coffee-telemetry run``) with one ticket meter on a pty,
MQTT and InfluxDB off, ``[alerts.wet_lot] k = 1, n = 1`` (the notifications rig of the
tests, without channels), serving the dashboard; Debian's chromium (headless, driven by
Playwright) shows the Armazém page as a wall screen would, started with the kiosk
setting ``--autoplay-policy=no-user-gesture-required``.

``--readings`` times, paced by ``--gap`` seconds: the meter prints a ticket of a new lot
at 14.0 % (threshold 12.5 %); the page's alarm banner names that lot; then a ticket of
the same lot at 8.0 % brings the lot's mean under the clear level (12.0 %) and the
banner goes. Measured in the page (a MutationObserver on the banner, the time taken at
the next animation frame, i.e. when the browser is about to paint it) against the
simulator's clock right after the ticket's last byte was written (both the machine's
wall clock):

* ``banner_ms``: ticket written → banner shown with the lot: parse, acceptance, the
  outbox commit, the rule, the live stream's ``alert`` event, the page's alarm;
* ``sound_ms``: ticket written → the audio element's ``playing`` event;
* ``clear_ms``: dry ticket written → banner gone.

p50/p90/p99/max of each. Usage: ``python bench/screen_alarm.py [--readings 100]
[--gap 0.2]``. Not a test: the numbers go in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.async_api import Page, async_playwright

from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS

KIOSK_ARGS = [*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"]

#: Installed once: records when the banner shows ``window.__want`` and when it hides.
_WATCH_JS = """
() => {
  const banner = document.querySelector('[data-testid="wet-alarm"]');
  const lot = banner.querySelector('[data-testid="alarm-lot"]');
  const audio = banner.querySelector('[data-testid="alarm-audio"]');
  const now = () => performance.timeOrigin + performance.now();
  window.__shown = null; window.__hidden = null; window.__playing = null; window.__want = null;
  const look = () => {
    const showing = !banner.hidden && lot.textContent === window.__want;
    if (showing && window.__shown === null) {
      requestAnimationFrame(() => { if (window.__shown === null) window.__shown = now(); });
    }
    if (banner.hidden && window.__want === null && window.__hidden === null) {
      requestAnimationFrame(() => { if (window.__hidden === null) window.__hidden = now(); });
    }
  };
  new MutationObserver(look).observe(banner, {subtree: true, childList: true,
    characterData: true, attributes: true});
  audio.addEventListener("playing", () => {
    if (window.__playing === null) window.__playing = now();
  });
}
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "p90": round(pct(values, 90), 1),
        "p99": round(pct(values, 99), 1),
        "max": round(max(values), 1),
    }


async def open_screen(page: Page, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector(
        'main[data-testid="page-armazem"][data-ready="1"]', state="attached"
    )
    await page.wait_for_selector('[data-testid="live-status"][data-state="open"]', state="attached")
    await page.wait_for_function(
        "() => localStorage.getItem('coffee-telemetry.alarm.sound') === 'on'"
    )
    await page.evaluate(_WATCH_JS)


async def run(readings: int, gap_s: float) -> dict[str, object]:
    banner: list[float] = []
    sound: list[float] = []
    clear: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        rig = NotifyAgentRig(Path(tmp_name), "")
        try:
            await rig.start()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=KIOSK_ARGS)
                page = await browser.new_page(viewport={"width": 1920, "height": 1080})
                await open_screen(page, rig.base + "/")
                for i in range(readings):
                    lot = f"L-{i:05d}"
                    await page.evaluate(
                        "(lot) => { window.__want = lot; window.__shown = null;"
                        " window.__playing = null; }",
                        lot,
                    )
                    rig.sim.lot = lot
                    sent = await rig.sim.emit(moisture_pct=14.0)
                    assert sent is not None
                    await page.wait_for_function(
                        "() => window.__shown !== null && window.__playing !== null", timeout=10_000
                    )
                    shown, playing = await page.evaluate("() => [window.__shown, window.__playing]")
                    banner.append(shown - sent.ts_ns / 1e6)
                    sound.append(playing - sent.ts_ns / 1e6)

                    await page.evaluate("() => { window.__want = null; window.__hidden = null; }")
                    dried = await rig.sim.emit(moisture_pct=8.0)
                    assert dried is not None
                    await page.wait_for_function("() => window.__hidden !== null", timeout=10_000)
                    hidden = await page.evaluate("() => window.__hidden")
                    clear.append(hidden - dried.ts_ns / 1e6)
                    await asyncio.sleep(gap_s)
                await browser.close()
        finally:
            rig.close()
    if os.environ.get("BENCH_VERBOSE"):
        print(sorted(banner)[-10:], file=sys.stderr)
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "readings": readings,
        "banner_ms": summary(banner),
        "sound_ms": summary(sound),
        "clear_ms": summary(clear),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.readings, args.gap)), indent=2))


if __name__ == "__main__":
    main()
