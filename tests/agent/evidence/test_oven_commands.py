"""A lot's oven result from MQTT (``cmd/lotoven/<lot>``) and the web, and the meters JSON.

A real lot record store with two calibrated meters' readings, the real command
boundary and the real web server on a free port. The fuzz tests send any topic,
payload, code and body: nothing escapes but a refusal, and a refusal writes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import CommandBoundary, CommandRate
from coffee_telemetry.agent.evidence.meters import MeterCalibration, record_calibrations
from coffee_telemetry.agent.evidence.oven import OVEN_COMMAND, oven_command, parse_oven_doc
from coffee_telemetry.agent.lots.records import AsyncLotRecords, open_lot_records
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.web.test_server import TOKEN, make_config
from tests.services.net import free_port

NS = 1_000_000_000
#: 2026-11-03 12:00 UTC.
T0 = 1_793_707_200 * NS
DAY = 86_400 * NS
AUTH = {"Authorization": f"Bearer {TOKEN}"}

GEHAKA = MeterCalibration(
    ref="cal-gehaka00001",
    device="umid-1",
    make="Gehaka",
    model="G650i",
    serial="SN 0042-A",
    method="ISO 6673-indexed",
    date="2026-01-10",
    certificate="RBC-1234/26",
    offset_pct=0.2,
    due="2026-11-20",
)
MOTOMCO = MeterCalibration(
    ref="cal-motomco0002",
    device="umid-2",
    make="Motomco",
    model="919",
    serial="M-77",
    method="Motomco 919 chart 12",
    date="2026-06-01",
    certificate="C-9",
    due="2027-06-01",
)


def moisture(
    seq: int, pct: float, device: str, ref: str, *, ts: int, lot: str = "L-0042"
) -> Reading:
    return Reading(
        ts_ns=ts,
        seq=seq,
        device=device,
        measurement="moisture",
        fields={"moisture_pct": pct, "calibration": ref},
        tags={"site": "s1", "device": device, "station": "recepcao", "lot": lot},
    )


async def fill(records: AsyncLotRecords) -> None:
    await records.call(
        records.sync.write_with,
        lambda conn: record_calibrations(conn, [GEHAKA, MOTOMCO], at_ns=T0),
    )
    await records.write(
        [
            moisture(1, 11.6, "umid-1", GEHAKA.ref, ts=T0),
            moisture(2, 11.8, "umid-1", GEHAKA.ref, ts=T0 + 30 * DAY),  # past its due date
            moisture(1, 11.0, "umid-2", MOTOMCO.ref, ts=T0 + 60 * NS),
            moisture(3, 12.0, "umid-1", GEHAKA.ref, ts=T0, lot="L/7"),
        ]
    )


def oven_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM lot_oven").fetchone()[0])


@dataclass
class Box:
    base: str
    session: aiohttp.ClientSession
    records: AsyncLotRecords
    commands: CommandBoundary
    path: Path

    async def get(self, path: str) -> tuple[int, dict[str, object]]:
        async with self.session.get(self.base + path) as r:
            return r.status, json.loads(await r.text())

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, object]]:
        async with self.session.post(
            self.base + path, data=body, headers=AUTH if headers is None else headers
        ) as r:
            return r.status, json.loads(await r.text())


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    cfg = make_config(tmp_path)
    path = tmp_path / "r.sqlite3"
    async with open_lot_records(path, clock_ns=lambda: T0 + 40 * DAY) as records:
        await fill(records)
        commands = CommandBoundary(
            {OVEN_COMMAND: oven_command(records)}, rate=CommandRate(burst=10**6, per_s=10**6)
        )
        app = make_web_app(
            WebDeps(cfg=cfg, commands=commands),
            token=TOKEN,
            session_key=b"k" * 32,
            lot_records=records,
        )
        port = free_port()
        async with (
            open_web(app, host="127.0.0.1", port=port),
            aiohttp.ClientSession() as session,
        ):
            yield Box(f"http://127.0.0.1:{port}", session, records, commands, path)


async def test_mqtt_sets_the_oven_result_and_replies_with_each_meters_bias(box: Box) -> None:
    [reply] = await box.commands.submit_topic(
        "lotoven/L-0042", b'{"moisture_pct": "11,4", "by": "ana"}', source="mqtt"
    )
    assert reply.topic == "cmd/lotoven/L-0042/reply"
    doc = json.loads(reply.payload)
    assert doc["ok"] is True
    assert doc["lot"] == "L-0042"
    assert doc["oven"] == {"ts_ns": T0 + 40 * DAY, "moisture_pct": 11.4, "by": "ana"}
    assert [(b["device"], b["readings"], b["mean_pct"]) for b in doc["bias"]] == [
        ("umid-1", 2, 11.7),
        ("umid-2", 1, 11.0),
    ]
    assert [b["bias_pp"] for b in doc["bias"]] == pytest.approx([0.3, -0.4])
    # A code with "/" crosses the topic level escaped, as every lot command.
    [reply] = await box.commands.submit_topic(
        "lotoven/L%2F7", b'{"moisture_pct": 12.5}', source="mqtt"
    )
    doc = json.loads(reply.payload)
    assert (doc["ok"], doc["lot"], doc["oven"]["by"]) == (True, "L/7", "mqtt")
    assert oven_rows(box.path) == 2


@pytest.mark.parametrize(
    ("rest", "payload", "error"),
    [
        ("lotoven/L-0042", b'{"moisture_pct": 0}', "fora de 0-"),
        ("lotoven/L-0042", b'{"moisture_pct": 100.5}', "out of range"),
        ("lotoven/L-0042", b'{"moisture_pct": "onze"}', "invalid oven moisture"),
        ("lotoven/L-0042", b'{"moisture_pct": true}', "invalid oven moisture"),
        ("lotoven/L-0042", b'{"moisture_pct": "NaN"}', "out of range"),
        ("lotoven/L-0042", b'{"pct": 11.4}', "unknown key 'pct'"),
        ("lotoven/L-0042", b"{}", "send {'moisture_pct'"),
        ("lotoven/L-0042", b'{"moisture_pct": 11, "by": "a\\u0007b"}', "by"),
        ("lotoven/L-0099", b'{"moisture_pct": 11.4}', "unknown lot 'L-0099'"),
        ("lotoven/L 42", b'{"moisture_pct": 11.4}', "lot"),
        ("lotoven", b'{"moisture_pct": 11.4}', "expected cmd/lotoven/<lot>"),
        ("lotoven/L-0042/x", b'{"moisture_pct": 11.4}', "expected cmd/lotoven/<lot>"),
    ],
)
async def test_mqtt_refusals_write_nothing(box: Box, rest: str, payload: bytes, error: str) -> None:
    [reply] = await box.commands.submit_topic(rest, payload, source="mqtt")
    doc = json.loads(reply.payload)
    assert doc["ok"] is False
    assert error in doc["error"]
    assert oven_rows(box.path) == 0


async def test_the_same_validation_as_the_cli() -> None:
    assert parse_oven_doc({"moisture_pct": "11,4"}, "ana") == (11.4, "ana")
    assert parse_oven_doc({"moisture_pct": 11.4567}, "ana") == (11.457, "ana")


async def test_http_sets_it_and_the_record_shows_meters_calibrations_and_bias(box: Box) -> None:
    status, doc = await box.get("/api/lots/L-0042")
    assert status == 200
    meters = doc["meters"]
    assert isinstance(meters, dict)
    assert meters["oven"] is None
    assert meters["refs"] == {
        "umid-1:1": GEHAKA.ref,
        "umid-1:2": GEHAKA.ref,
        "umid-2:1": MOTOMCO.ref,
    }
    assert meters["overdue"] == ["umid-1:2"]
    cal = meters["calibrations"][GEHAKA.ref]
    assert (cal["make"], cal["serial"], cal["certificate"], cal["due"]) == (
        "Gehaka",
        "SN 0042-A",
        "RBC-1234/26",
        "2026-11-20",
    )
    assert [b["bias_pp"] for b in meters["bias"]] == [None, None]
    # Not logged in, no token: refused before the boundary.
    status, _ = await box.post("/api/lots/L-0042/oven", b'{"moisture_pct": 11.4}', headers={})
    assert status == 401
    status, reply = await box.post("/api/lots/L-0042/oven", b'{"moisture_pct": 11.4}')
    assert status == 200, reply
    status, reply = await box.post("/api/lots/L-0042/oven", b'{"moisture_pct": 101}')
    assert status == 400
    assert "out of range" in str(reply["error"])
    status, doc = await box.get("/api/lots/L-0042")
    meters = doc["meters"]
    assert isinstance(meters, dict)
    assert meters["oven"]["moisture_pct"] == 11.4
    assert meters["oven"]["by"] == "api"  # the token's name
    assert len(meters["oven_history"]) == 1
    assert [b["bias_pp"] for b in meters["bias"]] == pytest.approx([0.3, -0.4])
    status, reply = await box.post("/api/lots/L%2042/oven", b'{"moisture_pct": 11.4}')
    assert status == 400
    assert "not a lot code" in str(reply["error"])


# -- fuzz --------------------------------------------------------------------------------

_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_DOCS = st.dictionaries(
    st.sampled_from(["moisture_pct", "by"]) | st.text(max_size=8), _VALUES, max_size=6
)
_FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _valid(doc: dict[str, object]) -> bool:
    try:
        parse_oven_doc(doc, str(doc.get("by", "mqtt")))
    except Exception:
        return False
    return True


@_FUZZ
@given(
    rest=st.sampled_from(["lotoven/L-0042", "lotoven/L-0099"]) | st.text(max_size=60),
    doc=_DOCS,
    raw=st.none() | st.binary(max_size=200),
    retained=st.booleans(),
)
async def test_fuzz_mqtt(
    box: Box, rest: str, doc: dict[str, object], raw: bytes | None, retained: bool
) -> None:
    """Any topic and payload: a reply (or nothing, retained); a refusal writes nothing."""
    before = oven_rows(box.path)
    payload = raw if raw is not None else json.dumps(doc).encode()
    replies = await box.commands.submit_topic(rest, payload, source="mqtt", retained=retained)
    if retained:
        assert replies == []
        assert oven_rows(box.path) == before
        return
    [reply] = replies
    answer = json.loads(reply.payload)
    assert answer["ok"] in (True, False)
    assert answer.get("error") != "internal error"
    if answer["ok"]:
        assert rest == "lotoven/L-0042"
        assert raw is None
        assert _valid(doc)
        assert oven_rows(box.path) == before + 1
    else:
        assert oven_rows(box.path) == before


@_FUZZ
@given(
    code=st.sampled_from(["L-0042"]) | st.text(max_size=40),
    doc=_DOCS,
    raw=st.none() | st.binary(max_size=200),
)
async def test_fuzz_http(box: Box, code: str, doc: dict[str, object], raw: bytes | None) -> None:
    """Any body on any code: 200, 400, 404, 405 or 413; a refusal writes nothing."""
    before = oven_rows(box.path)
    path = "/api/lots/" + urllib.parse.quote(code, safe="") + "/oven"
    body = raw if raw is not None else json.dumps(doc).encode()
    async with box.session.post(box.base + path, data=body, headers=AUTH) as r:
        assert r.status in (200, 400, 404, 405, 413), await r.text()
        text = await r.text()
    if r.status == 200:
        assert json.loads(text)["ok"] is True
        assert oven_rows(box.path) == before + 1
    else:
        if r.status in (400, 413):
            assert json.loads(text)["ok"] is False
        assert oven_rows(box.path) == before
