"""Hostile input to corrections and blends: nothing escapes but a refusal.

Through the command boundary (MQTT payloads and the web API's bodies enter there), MQTT
command topics, HTTP requests of a logged-in session, and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.commands import CommandBoundary, CommandRate
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.lots.corrections import MOVE_COMMAND
from coffee_telemetry.agent.lots.records import (
    LotRecords,
    configured_thresholds,
    move_command,
    open_lot_records,
)
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.auth import CSRF_HEADER
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.lots.test_records import moisture
from tests.agent.lots.test_verify import site_file
from tests.agent.web.test_server import PASSWORD, make_config
from tests.services.net import free_port

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.text(max_size=60) | st.sampled_from(["umid-1:1", "umid-1:2", "L-0043", "L-0042", ""])
values = st.one_of(texts, st.integers(), st.none(), st.booleans(), st.lists(st.integers()))
bodies = st.one_of(
    st.binary(max_size=1200),
    st.dictionaries(st.sampled_from(["reading", "to", "reason", "by", "x"]), values).map(
        lambda d: json.dumps(d).encode()
    ),
)
sources = st.sampled_from(["web:ana", "mqtt", "token:api", "cli"])


def readings_of(path: Path) -> dict[str, list[int]]:
    store = LotRecords.open(path)
    try:
        out = {}
        for code in ("L-0042", "L-0043"):
            record = store.record(code)
            out[code] = [] if record is None else [r.seq for r in record.readings]
        return out
    finally:
        store.close()


@FUZZ
@given(levels=st.lists(st.text(max_size=40), min_size=1, max_size=3), body=bodies, source=sources)
def test_fuzz_move_commands_refuse_or_move(
    tmp_path_factory: pytest.TempPathFactory, levels: list[str], body: bytes, source: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "r.sqlite3"

    async def run() -> tuple[bool, bool]:
        async with open_lot_records(path) as records:
            records.sync.write([moisture(1, 11.0), moisture(2, 13.5)])
            boundary = CommandBoundary(rate=CommandRate(burst=10**6))
            boundary.add(MOVE_COMMAND, move_command(records))
            reply = await boundary.submit((MOVE_COMMAND, *levels), body, source=source, by="ana")
            return reply.ok, reply.failed

    ok, failed = asyncio.run(run())
    assert not failed  # never an internal error
    after = readings_of(path)
    assert sorted(after["L-0042"] + after["L-0043"]) == [1, 2]  # every reading in one lot
    if not ok:
        assert after == {"L-0042": [1, 2], "L-0043": []}  # a refusal wrote nothing
    else:
        assert source.startswith(("web:", "cli"))


@pytest.fixture
def site(tmp_path: Path) -> str:
    path = site_file(tmp_path)
    cfg = load_config(path)
    store = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    try:
        store.write([moisture(1, 11.0), moisture(2, 13.5), moisture(3, 11.0, lot="L-0043")])
    finally:
        store.close()
    return str(path)


@FUZZ
@given(reading=texts, to=texts, reason=st.text(max_size=400), by=st.text(max_size=80))
def test_fuzz_cli_move(
    site: str, capsys: pytest.CaptureFixture[str], reading: str, to: str, reason: str, by: str
) -> None:
    argv = ["lot", "move", "-c", site, f"--reading={reading}", f"--to={to}", f"--reason={reason}"]
    try:
        code = main([*argv, f"--by={by}"])
    except SystemExit as exc:  # argparse: a usage error
        code = int(exc.code or 0)
    capsys.readouterr()
    assert code in (0, 1, 2)


@FUZZ
@given(lot=texts, sources=st.lists(texts, max_size=6), by=st.text(max_size=80))
def test_fuzz_cli_blend(
    site: str, capsys: pytest.CaptureFixture[str], lot: str, sources: list[str], by: str
) -> None:
    try:
        code = main(["lot", "blend", "-c", site, f"{lot}", "--from", *sources, f"--by={by}"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    capsys.readouterr()
    assert code in (0, 1, 2)


# -- over HTTP, from a logged-in session -----------------------------------------------------


class Browser:
    def __init__(self, base: str, session: aiohttp.ClientSession, csrf: str) -> None:
        self.base, self.session, self.csrf = base, session, csrf

    async def post(self, path: str, body: bytes) -> tuple[int, str]:
        headers = {CSRF_HEADER: self.csrf}
        async with self.session.post(self.base + path, data=body, headers=headers) as r:
            return r.status, await r.text()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    cfg = make_config(tmp_path)
    async with open_lot_records(tmp_path / "r.sqlite3") as records:
        await records.write([moisture(1, 11.0), moisture(2, 13.5)])
        commands = CommandBoundary(
            {MOVE_COMMAND: move_command(records)}, rate=CommandRate(burst=10**6)
        )
        app = make_web_app(
            WebDeps(cfg=cfg, commands=commands), session_key=b"k" * 32, lot_records=records
        )
        port = free_port()
        jar = aiohttp.CookieJar(unsafe=True)
        async with (
            open_web(app, host="127.0.0.1", port=port),
            aiohttp.ClientSession(cookie_jar=jar) as session,
        ):
            base = f"http://127.0.0.1:{port}"
            login = json.dumps({"user": "maria", "password": PASSWORD})
            async with session.post(base + "/api/login", data=login) as r:
                assert r.status == 200
                csrf = str((await r.json())["csrf"])
            yield Browser(base, session, csrf)


@FUZZ
@given(code=st.text(max_size=40) | st.just("L-0042"), body=bodies)
async def test_fuzz_moves_over_http(browser: Browser, code: str, body: bytes) -> None:
    """A logged-in session's hostile moves: a clear 4xx, or the move; never a 5xx."""
    path = f"/api/lots/{urllib.parse.quote(code, safe='')}/move"
    status, text = await browser.post(path, body)
    assert status in (200, 400, 404, 405, 413), (status, text)
    if status == 200:
        assert json.loads(text)["ok"] is True
    elif status == 400:
        assert json.loads(text)["error"]


@FUZZ
@given(rest=st.text(max_size=80).map(lambda t: f"{MOVE_COMMAND}/{t}"), body=bodies)
def test_fuzz_mqtt_move_topics_are_refused(
    tmp_path_factory: pytest.TempPathFactory, rest: str, body: bytes
) -> None:
    """Over MQTT a move is never carried out (it needs a person), whatever the topic."""
    path = tmp_path_factory.mktemp("mqtt") / "r.sqlite3"

    async def run() -> list[dict[str, object]]:
        async with open_lot_records(path) as records:
            records.sync.write([moisture(1, 11.0), moisture(2, 13.5)])
            boundary = CommandBoundary({MOVE_COMMAND: move_command(records)})
            replies = await boundary.submit_topic(rest, body, source="mqtt")
            return [json.loads(r.payload) for r in replies]

    for reply in asyncio.run(run()):
        assert reply["ok"] is False
        assert reply["error"]
    assert readings_of(path) == {"L-0042": [1, 2], "L-0043": []}
