"""`coffee-telemetry demo` fills lots at once: readings, weighments, a wet alert, a drying run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from coffee_telemetry.agent.lots.records import LotRecords
from tests.services.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def lots_api(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        doc = json.loads(resp.read())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.slow
def test_demo_lots_are_full(tmp_path: Path) -> None:
    api_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coffee_telemetry.agent.cli",
            "demo",
            "--port",
            str(free_port()),
            "--interval",
            "1",
            "--duration",
            "60",
            "--data-dir",
            str(tmp_path),
            "--api-port",
            str(api_port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[str, dict[str, object]] = {}
    try:
        deadline = time.monotonic() + 55
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                found = lots_api(api_port, "/api/lots?per_page=10")
            except OSError:
                continue
            lots = found["lots"]
            assert isinstance(lots, list)
            seen = {str(lot["code"]): lot for lot in lots}
            wet = seen.get("L-0002", {})
            if (
                seen.get("L-0001", {}).get("weighments", 0) >= 1  # type: ignore[operator]
                and wet.get("open_alerts", 0) >= 1  # type: ignore[operator]
                and seen.get("L-0003", {}).get("readings", 0) >= 3  # type: ignore[operator]
            ):
                break
        record = lots_api(api_port, "/api/lots/L-0003")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert set(seen) >= {"L-0001", "L-0002", "L-0003"}, out[-3000:]
    assert seen["L-0001"]["weighments"] >= 1, seen  # type: ignore[operator]
    assert seen["L-0001"]["producer"] == "Sítio Boa Vista"
    assert seen["L-0002"]["verdict"] == "wet"
    assert seen["L-0002"]["open_alerts"] >= 1, seen  # type: ignore[operator]
    readings = record["readings"]
    assert isinstance(readings, list)
    values = [r["moisture_pct"] for r in readings]
    assert len(values) >= 3
    assert values[-1] < values[0]  # the drying run's moisture falls
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        wet_record = store.record("L-0002")
    finally:
        store.close()
    assert wet_record is not None
    assert "alert" in [e.kind for e in wet_record.events]
