"""Moving a reading with the real agent: a logged-in user over HTTP; the rest refused.

A ticket meter on a pty feeds the real agent with lot L-0042 set on its station; the
lot's record fills from the outbox. Over HTTP: an anonymous write, a session's write
without its CSRF token, an API token's write and a request without a reason are each
refused and change nothing; the logged-in user's move (with the CSRF token) moves the
reading, and both lots' records and summaries show it, with who, when and why. The CLI
moves another one while the agent runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from coffee_telemetry.agent.lots.records import LotRecords
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.web.auth import CSRF_HEADER, hash_password
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from tests.integration.harness import ROOT, AgentProcess, DeviceSpec, eventually, write_site_config

pytestmark = pytest.mark.integration

LOT, RIGHT, STATION = "L-0042", "L-0043", "recepcao"
PASSWORD = "s3nha-do-armazem"
TOKEN = "token-de-teste-0123456789abcdef"


@pytest.fixture
def meter_pty(tmp_path: Path) -> Iterator[PtyPort]:
    (tmp_path / "dev").mkdir()
    with open_pty_port(link=tmp_path / "dev" / "umid-1") as port:
        yield port


def site_file(tmp_path: Path, meter: PtyPort) -> tuple[Path, int]:
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", meter.path, STATION, "cafe")],
        mqtt_port=None,
        prefix="t",
        influx_url=None,
    )
    text = config.read_text()
    text = (
        text.replace("[api]\n", '[api]\ntoken_env = "COFFEE_TEST_TOKEN"\n', 1)
        + f'[[api.users]]\nname = "ana"\npassword_hash = "{hash_password(PASSWORD)}"\n'
    )
    config.write_text(text)
    match = re.search(r"^port = (\d+)$", text.split("[api]", 1)[1], re.MULTILINE)
    assert match is not None
    return config, int(match.group(1))


def record_of(data_dir: Path, code: str) -> dict[str, object] | None:
    path = data_dir / "lots-records.sqlite3"
    if not path.exists():
        return None
    store = LotRecords.open(path)
    try:
        record = store.record(code)
    finally:
        store.close()
    if record is None:
        return None
    return {
        "seqs": [(r.device, r.seq, r.moisture_pct) for r in record.readings],
        "summary": record.summary,
        "events": record.events,
    }


async def online(agent: AgentProcess, port: int) -> None:
    def check() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                doc = json.loads(r.read())
        except OSError:
            return False
        return bool(doc["devices"].get("umid-1", {}).get("state") == "online")

    await eventually(
        lambda: asyncio.to_thread(check), timeout_s=30, what="meter online", context=agent.log_tail
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_logged_in_user_moves_a_reading_over_http(
    tmp_path: Path, meter_pty: PtyPort, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFEE_TEST_TOKEN", TOKEN)
    config, port = site_file(tmp_path, meter_pty)
    data_dir = tmp_path / "data"
    lots = LotStore.open(data_dir / "lots.sqlite3")
    lots.set(STATION, LOT, by="maria", source="cli", at_ns=time.time_ns())
    lots.close()
    meter = TicketMeterSim(meter_pty, product=None, seed=7)
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    base = f"http://127.0.0.1:{port}"
    try:
        await online(agent, port)
        for i in range(6):
            assert await meter.emit(moisture_pct=11.0 + i / 2) is not None
            await asyncio.sleep(0.05)

        def readings_in(code: str) -> list[tuple[str, int, float]]:
            doc = record_of(data_dir, code)
            return [] if doc is None else doc["seqs"]  # type: ignore[return-value]

        await eventually(
            lambda: len(readings_in(LOT)) >= 6,
            timeout_s=60,
            what="six readings in L-0042's record",
            context=agent.log_tail,
        )
        device, seq, value = readings_in(LOT)[-1]  # the 13.5 % one
        wrong = readings_in(LOT)[0]
        move = {"reading": f"{device}:{seq}", "to": RIGHT, "reason": "amostra do L-0043"}
        url = f"{base}/api/lots/{LOT}/move"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(url, data=json.dumps(move)) as resp:
                assert resp.status in (401, 403), await resp.text()  # anonymous
            async with http.post(
                url, data=json.dumps(move), headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                body = await resp.json()
                assert resp.status == 400
                assert "logged in" in body["error"]
            async with http.post(
                f"{base}/api/login", data=json.dumps({"user": "ana", "password": PASSWORD})
            ) as resp:
                assert resp.status == 200, await resp.text()
                csrf = (await resp.json())["csrf"]
            async with http.post(url, data=json.dumps(move)) as resp:
                assert resp.status == 403  # the session without its CSRF token
                assert "CSRF" in await resp.text()
            no_reason = {"reading": f"{device}:{seq}", "to": RIGHT, "reason": " "}
            async with http.post(
                url, data=json.dumps(no_reason), headers={CSRF_HEADER: csrf}
            ) as resp:
                assert resp.status == 400
                assert "reason" in (await resp.json())["error"]
            assert record_of(data_dir, RIGHT) is None  # nothing written by any refusal
            async with http.post(url, data=json.dumps(move), headers={CSRF_HEADER: csrf}) as resp:
                reply = await resp.json()
                assert resp.status == 200, reply
                assert reply["ok"] is True
                assert reply["to"] == RIGHT
                assert reply["by"] == "ana"
            async with http.get(f"{base}/api/lots/{RIGHT}") as resp:
                doc = await resp.json()
            assert [(r["device"], r["seq"]) for r in doc["readings"]] == [(device, seq)]
            assert doc["summary"]["readings"] == 1
            assert doc["summary"]["max_moisture_pct"] == value
            moved_in = [e for e in doc["events"] if e["kind"] == "moved_in"]
            assert moved_in[0]["by"] == "ana"
            assert moved_in[0]["source"] == "web:ana"
            assert moved_in[0]["data"]["reason"] == "amostra do L-0043"
            async with http.get(f"{base}/api/lots/{LOT}") as resp:
                old = await resp.json()
            assert old["summary"]["readings"] == 5
            assert (device, seq) not in [(r["device"], r["seq"]) for r in old["readings"]]
            assert [e["kind"] for e in old["events"]].count("moved_out") == 1

        # The CLI moves another while the agent runs; more readings keep arriving.
        done = cli(
            "lot", "move", "-c", str(config), "--reading", f"{wrong[0]}:{wrong[1]}",
            "--to", RIGHT, "--reason", "pesagem trocada", "--by", "joao",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"{LOT} -> {RIGHT}" in done.stdout
        again = cli(
            "lot", "move", "-c", str(config), "--reading", f"{wrong[0]}:{wrong[1]}",
            "--to", RIGHT, "--reason", "de novo",
        )  # fmt: skip
        assert again.returncode == 1
        assert "already in lot" in again.stderr
        await meter.emit(moisture_pct=10.9)
        await eventually(
            lambda: len(readings_in(LOT)) == 5,
            timeout_s=30,
            what="a new reading in L-0042 beside the moves",
            context=agent.log_tail,
        )
        assert [s for _, s, _ in readings_in(RIGHT)] == sorted([seq, wrong[1]])
    finally:
        if agent.alive:
            assert agent.stop() == 0
