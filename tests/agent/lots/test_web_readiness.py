"""Lotes API: dried and receipt writes, readiness in a lot and a search; bad input refused."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.commands import CommandBoundary, CommandRate
from coffee_telemetry.agent.lots.readiness import (
    DAY_NS,
    DRIED_COMMAND,
    ReadinessRules,
    ReadinessService,
)
from coffee_telemetry.agent.lots.receipt import RECEIPT_COMMAND, receipt_command
from coffee_telemetry.agent.lots.records import LotQuery, open_lot_records
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.lots.test_records import T0, moisture, weighment
from tests.agent.lots.test_web_lots import AUTH, Api
from tests.agent.web.test_server import TOKEN, make_config
from tests.services.net import free_port

NOW = [T0]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    NOW[0] = T0
    cfg = make_config(tmp_path)
    async with open_lot_records(tmp_path / "r.sqlite3", clock_ns=lambda: NOW[0]) as records:
        await records.write([weighment(1, 1000.0), moisture(1, 12.0, ts=T0 - DAY_NS)])
        readiness = ReadinessService(
            records=records, rules=ReadinessRules(), clock_ns=lambda: NOW[0]
        )
        commands = CommandBoundary(
            {DRIED_COMMAND: readiness.handle_command, RECEIPT_COMMAND: receipt_command(records)},
            rate=CommandRate(burst=10**6, per_s=10**6),
        )
        deps = WebDeps(cfg=cfg, commands=commands, readiness=readiness)
        app = make_web_app(deps, token=TOKEN, session_key=b"k" * 32, lot_records=records)
        port = free_port()
        async with (
            open_web(app, host="127.0.0.1", port=port),
            aiohttp.ClientSession() as session,
        ):
            yield Api(f"http://127.0.0.1:{port}", session, records)


async def test_dried_then_ready_in_the_record_and_the_search(api: Api) -> None:
    body = json.dumps({"dryer": "patio", "at": T0, "by": "ana"}).encode()
    assert (await api.post("/api/lots/L-0042/dried", body, headers={}))[0] == 401
    status, doc = await api.post("/api/lots/L-0042/dried", body)
    assert (status, doc) == (200, {"ok": True, "lot": "L-0042", "dried_ns": T0, "dryer": "patio"})
    _, doc = await api.get("/api/lots/L-0042")
    assert doc["dried"]["dryer"] == "patio"
    readiness = doc["readiness"]
    assert readiness["state"] == "resting"
    assert readiness["text"]["pt-BR"] == "Em descanso após terreiro: faltam 8 d 0 h"
    # Readings since the dryer, then eight days later: ready.
    await api.records.write([moisture(i, 11.0, ts=T0 + i) for i in range(2, 5)])
    NOW[0] = T0 + 8 * DAY_NS
    _, doc = await api.get("/api/lots/L-0042")
    assert doc["readiness"]["state"] == "ready"
    assert doc["readiness"]["latest_pct"] == [11.0, 11.0, 11.0]
    _, doc = await api.get("/api/lots?q=L-0042")
    assert doc["lots"][0]["readiness"]["state"] == "ready"
    assert "Pronto para beneficiar" in doc["lots"][0]["readiness"]["text"]["pt-BR"]


async def test_receipt_through_the_boundary(api: Api) -> None:
    body = json.dumps({"member": "M-7", "invoice": "123456", "sacks": 17, "stack": "A-3"})
    status, doc = await api.post("/api/lots/L-0042/receipt", body.encode())
    assert status == 200
    assert doc["ok"] is True
    _, doc = await api.get("/api/lots/L-0042")
    receipt = doc["receipt"]
    assert (receipt["member"], receipt["sacks"], receipt["stack"]) == ("M-7", 17, "A-3")
    # No weight entered: the lot's weighment (gross display 1000 kg, tare 10 kg).
    assert (receipt["gross_kg"], receipt["net_kg"], receipt["weight_source"]) == (
        1000.0,
        990.0,
        "scale",
    )
    status, doc = await api.post("/api/lots/L-0042/receipt", b'{"stack": "<script>x</script>"}')
    assert status == 400
    assert "stack may only use" in doc["error"]
    status, doc = await api.post("/api/lots/L%2042/receipt", b'{"sacks": 1}')
    assert status == 400
    assert "not a lot code" in doc["error"]


async def test_unknown_lot_has_no_readiness(api: Api) -> None:
    status, doc = await api.get("/api/lots/L-0099")
    assert status == 404
    _, doc = await api.get("/api/lots?q=L")
    assert all(lot["readiness"] is None for lot in doc["lots"])


_FORM = st.dictionaries(
    st.sampled_from(["dryer", "at", "member", "invoice", "sacks", "gross_kg", "net_kg", "stack"])
    | st.text(max_size=8),
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    max_size=5,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.sampled_from(["dried", "receipt"]),
    code=st.text(max_size=40),
    form=_FORM,
    raw=st.none() | st.binary(max_size=200),
)
async def test_fuzz_http_forms(
    api: Api, which: str, code: str, form: dict[str, object], raw: bytes | None
) -> None:
    """Any body on any code: 200, 400 or 404 with a JSON answer; a refusal writes nothing."""
    before = (await api.records.search(LotQuery()))[1]
    path = "/api/lots/" + urllib.parse.quote(code, safe="")
    body = raw if raw is not None else json.dumps(form).encode()
    async with api.session.post(f"{api.base}{path}/{which}", data=body, headers=AUTH) as r:
        assert r.status in (200, 400, 404, 405)
        text = await r.text()
    if r.status == 400:
        assert json.loads(text)["ok"] is False
        assert (await api.records.search(LotQuery()))[1] == before
