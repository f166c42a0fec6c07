"""The Lotes JSON API: search, a lot's record, details through the boundary; bad input refused."""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import CommandBoundary
from coffee_telemetry.agent.lots.records import (
    DETAILS_COMMAND,
    AsyncLotRecords,
    open_lot_records,
)
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.lots import QueryError, parse_query
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.lots.test_records import (
    NS,
    T0,
    THRESHOLDS,
    alert,
    assignment,
    moisture,
    weighment,
)
from tests.agent.web.test_server import TOKEN, make_config
from tests.services.net import free_port

DAY = 86_400 * NS
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, records: AsyncLotRecords):
        self.base = base
        self.session = session
        self.records = records

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as r:
            return r.status, json.loads(await r.text())

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] = AUTH
    ) -> tuple[int, Any]:
        async with self.session.post(self.base + path, data=body, headers=headers) as r:
            return r.status, json.loads(await r.text())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    cfg = make_config(tmp_path)
    async with open_lot_records(tmp_path / "r.sqlite3", thresholds=THRESHOLDS) as records:
        await records.write(
            [
                assignment(1, "set"),
                *[moisture(i, 11.0 + i / 10) for i in range(1, 21)],
                weighment(1, 1000.0),
                alert(1, "firing"),
                moisture(30, 11.0, lot="L/7", ts=T0 - 30 * 86_400 * NS),
                moisture(31, 10.5, lot="X-1", ts=T0 - 60 * 86_400 * NS),
            ]
        )
        commands = CommandBoundary({DETAILS_COMMAND: records.handle_command})
        deps = WebDeps(cfg=cfg, commands=commands)
        app = make_web_app(deps, token=TOKEN, session_key=b"k" * 32, lot_records=records)
        port = free_port()
        async with (
            open_web(app, host="127.0.0.1", port=port),
            aiohttp.ClientSession() as session,
        ):
            yield Api(f"http://127.0.0.1:{port}", session, records)


async def test_search_pages_and_filters(api: Api) -> None:
    status, doc = await api.get("/api/lots?per_page=2")
    assert status == 200
    assert doc["total"] == 3
    assert (doc["page"], doc["per_page"]) == (1, 2)
    lots = doc["lots"]
    assert isinstance(lots, list)
    assert [lot["code"] for lot in lots] == ["L-0042", "L/7"]
    first = lots[0]
    assert first["readings"] == 20
    assert first["verdict"] == "wet"
    assert first["open_alerts"] == 1
    assert first["stations"] == ["recepcao"]
    assert first["net_kg"] == pytest.approx(990.0)
    assert isinstance(first["last_ns"], int)
    _, doc = await api.get("/api/lots?page=2&per_page=2")
    assert [lot["code"] for lot in doc["lots"]] == ["X-1"]
    _, doc = await api.get("/api/lots?q=l%2F")
    assert [lot["code"] for lot in doc["lots"]] == ["L/7"]
    _, doc = await api.get("/api/lots?verdict=ok")
    assert sorted(lot["code"] for lot in doc["lots"]) == ["L/7", "X-1"]
    # X-1 was seen 60 days before T0, L/7 30 days before.
    _, doc = await api.get(f"/api/lots?from={T0 - 45 * DAY}&to={T0 - 15 * DAY}")
    assert [lot["code"] for lot in doc["lots"]] == ["L/7"]


async def test_without_parameters_the_path_still_lists_active_lots(api: Api) -> None:
    assert await api.get("/api/lots") == (200, {})


async def test_a_lots_record(api: Api) -> None:
    status, doc = await api.get("/api/lots/L-0042")
    assert status == 200
    assert set(doc) == {
        "summary",
        "details",
        "readings",
        "weighments",
        "events",
        "threshold_pct",
        "drying",
        "dried",
        "readiness",
        "receipt",
        "hulled_bags",
        "meters",
    }
    drying = doc["drying"]
    assert isinstance(drying, dict)
    assert drying["target_pct"] == 11.5
    # 20 readings a second apart: too short a span to believe any drying curve.
    assert drying == {
        "status": "not_enough_data",
        "reason": "too_short_span",
        "text": {
            "pt-BR": "dados insuficientes: leituras num intervalo curto demais",
            "en": "not enough data: readings span too short a time",
        },
        "target_pct": 11.5,
        "points": 20,
        "last_ns": T0 + 20 * NS,
        "remaining_s": None,
        "eta_ns": None,
        "fit": None,
    }
    readings = doc["readings"]
    assert isinstance(readings, list)
    assert len(readings) == 20
    assert readings[0] == {
        "ts_ns": T0 + NS,
        "seq": 1,
        "device": "umid-1",
        "station": "recepcao",
        "moisture_pct": 11.1,
        "temperature_c": 24.5,
        "sample_id": "A1",
        "audit": "UMIDADE 11.1 %",
        "time_quality": "trusted",
    }
    assert doc["weighments"] == [
        {
            "ts_ns": T0 + 101 * NS,
            "seq": 1,
            "device": "balanca",
            "station": "recepcao",
            "gross_kg": 1000.0,
            "tare_kg": 10.0,
            "net_kg": 990.0,
            "trigger": "stable",
        }
    ]
    assert [e["kind"] for e in doc["events"]] == ["assigned", "alert"]
    assert doc["threshold_pct"] == 12.5
    status, doc = await api.get("/api/lots/L%2F7")
    assert status == 200
    assert doc["summary"]["code"] == "L/7"


async def test_a_drying_lots_estimate_follows_its_readings(api: Api) -> None:
    # M(t) = 9 + 13 exp(-t / 6 h): every 20 min for 8 h, then on until it is dry.
    def at(i: int) -> tuple[int, float]:
        hours = i / 3
        return T0 + i * 1200 * NS, 9.0 + 13.0 * math.exp(-hours / 6.0)

    def dryer(seqs: range) -> list[Reading]:
        return [moisture(100 + i, round(at(i)[1], 2), lot="SEC-1", ts=at(i)[0]) for i in seqs]

    await api.records.write(dryer(range(25)))
    status, doc = await api.get("/api/lots/SEC-1")
    assert status == 200
    drying = doc["drying"]
    assert drying["status"] == "estimate"
    assert drying["reason"] == "ok"
    true_remaining_s = (6.0 * math.log(13.0 / 2.5) - 8.0) * 3600
    assert abs(drying["remaining_s"] - true_remaining_s) <= 0.15 * true_remaining_s
    assert drying["eta_ns"] == at(24)[0] + round(drying["remaining_s"] * 1e9)
    assert drying["fit"]["me_pct"] == pytest.approx(9.0, abs=0.2)
    assert (await api.get("/api/lots/SEC-1"))[1]["drying"] == drying  # unchanged: the same
    # New readings past the target: the estimate is made again from them.
    await api.records.write(dryer(range(25, 40)))
    drying = (await api.get("/api/lots/SEC-1"))[1]["drying"]
    assert drying["status"] == "reached"
    assert drying["remaining_s"] == 0.0
    assert drying["points"] == 40


async def test_unknown_and_bad_lots(api: Api) -> None:
    status, doc = await api.get("/api/lots/L-9999")
    assert status == 404
    assert "unknown lot 'L-9999'" in str(doc["error"])
    status, doc = await api.get("/api/lots/%3Cscript%3E")
    assert status == 400
    assert "not a lot code" in str(doc["error"])


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("from=2026-12-10&to=2026-12-01", "inverted"),
        ("from=1", "between the years 2000 and 2100"),
        ("to=9999-01-01", "between the years 2000 and 2100"),
        ("from=yesterday", "ISO date"),
        ("verdict=maybe", "verdict must be"),
        ("page=0", "page must be"),
        ("per_page=100000", "per_page must be"),
        ("page=-1", "page must be"),
        ("q=" + "x" * 65, "longer than 64"),
        ("q=%00", "control"),
        ("producer=%E2%80%AE", "control"),
        ("drop=1", "unknown parameter"),
        ("q=a&q=b", "more than once"),
    ],
)
async def test_bad_searches_are_clear_400s(api: Api, query: str, error: str) -> None:
    status, doc = await api.get("/api/lots?" + query)
    assert status == 400
    assert error in str(doc["error"])


async def test_details_through_the_boundary(api: Api) -> None:
    body = json.dumps({"producer": "Sítio Boa Vista", "bags": 42, "by": "ana"}).encode()
    assert (await api.post("/api/lots/L-0042/details", body, headers={}))[0] == 401
    status, doc = await api.post("/api/lots/L-0042/details", body)
    assert status == 200
    assert doc["ok"] is True
    status, doc = await api.post("/api/lots/L-0042/details", b'{"producer": "' + b"p" * 201 + b'"}')
    assert status == 400
    assert "longer than 200" in str(doc["error"])
    _, doc = await api.get("/api/lots/L-0042")
    details = doc["details"]
    assert isinstance(details, dict)
    assert (details["producer"], details["bags"], details["updated_by"]) == (
        "Sítio Boa Vista",
        42,
        "ana",
    )
    events = doc["events"]
    assert isinstance(events, list)
    assert [e["kind"] for e in events].count("details") == 1
    _, doc = await api.get("/api/lots?producer=BOA")
    assert [lot["code"] for lot in doc["lots"]] == ["L-0042"]


_values = st.text(max_size=80) | st.sampled_from(
    ["", "0", "-1", "1e9", "2026-12-01", "2026-13-45", "9" * 30, "NaN", "\u202e", "%", "_"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=st.dictionaries(
        st.sampled_from(["q", "producer", "from", "to", "verdict", "page", "per_page"])
        | st.text(max_size=10),
        _values,
        max_size=6,
    )
)
def test_fuzz_query_parameters(params: dict[str, str]) -> None:
    """Any parameters: a valid, bounded query, or a ``QueryError`` naming the problem."""
    try:
        query = parse_query(params)
    except QueryError as exc:
        refusal = str(exc)
        assert refusal.strip()
        return
    assert 1 <= query.page <= 100_000
    assert 1 <= query.per_page <= 200
    assert len(query.q) <= 64
    assert len(query.producer) <= 64
    if query.from_ns is not None and query.to_ns is not None:
        assert query.from_ns <= query.to_ns


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.lists(st.tuples(st.text(max_size=12), _values), max_size=5))
async def test_fuzz_search_over_http(api: Api, raw: list[tuple[str, str]]) -> None:
    """Through the server: 200 with a well-formed page, or a 400 with an error; never 5xx."""
    query = urllib.parse.urlencode(raw)
    status, doc = await api.get("/api/lots?" + query)
    if status == 200 and raw:
        assert set(doc) == {"lots", "total", "page", "per_page"}
    elif status != 200:
        assert status == 400
        assert doc["error"]
