"""Local API: reads open, writes need the token, bad input refused with the reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.alerts import AlertService
from agent.api import make_app, open_api
from agent.config import AlertsConfig
from agent.health import Health
from agent.lots import LotStore
from agent.lotservice import LotService, Outgoing
from agent.outbox import open_outbox
from agent.readings import Reading, Stamper
from tests.services.net import free_port

TOKEN = "s3cret-token"


class Api:
    def __init__(self, base: str, published: list[Outgoing], alerts: AlertService) -> None:
        self.base = base
        self.published = published
        self.alerts = alerts

    async def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN
    ) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, data=body, headers=headers) as resp,
        ):
            return resp.status, json.loads(await resp.text())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = LotStore.open(tmp_path / "lots.sqlite3")
    published: list[Outgoing] = []
    stamper = Stamper()

    async def accept(readings: object) -> None:
        pass

    lots = LotService(store=store, stations={"recepcao"}, site="s1", stamper=stamper, accept=accept)
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        alerts = AlertService(
            cfg=AlertsConfig.model_validate({"wet_lot": {"k": 1, "n": 1}}),
            site="s1",
            state_path=tmp_path / "alerts.json",
            stamper=stamper,
            outbox=outbox,
            health=Health(),
        )
        port = free_port()
        app = make_app(
            health_registry=Health(),
            lot_service=lots,
            alert_service=alerts,
            token=TOKEN,
            publish=published.append,
        )
        async with open_api(app, host="127.0.0.1", port=port):
            yield Api(f"http://127.0.0.1:{port}", published, alerts)
    store.close()


async def test_reads_are_open(api: Api) -> None:
    status, doc = await api.request("GET", "/api/health", token=None)
    assert status == 200
    assert isinstance(doc, dict)
    assert set(doc) == {"time_ns", "devices", "sinks"}
    assert await api.request("GET", "/api/lots", token=None) == (200, {})
    assert await api.request("GET", "/api/alerts", token=None) == (200, [])


async def test_set_lot_needs_the_token(api: Api) -> None:
    body = b'{"lot": "L-0042", "by": "maria"}'
    assert (await api.request("POST", "/api/lots/recepcao", body, token=None))[0] == 401
    assert (await api.request("POST", "/api/lots/recepcao", body, token="wrong"))[0] == 401
    status, doc = await api.request("POST", "/api/lots/recepcao", body)
    assert (status, doc) == (200, {"ok": True, "station": "recepcao", "lot": "L-0042"})
    _, lots = await api.request("GET", "/api/lots", token=None)
    assert isinstance(lots, dict)
    assert lots["recepcao"]["lot"] == "L-0042"
    assert api.published[-1].topic == "cmd/lot/recepcao/reply"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/api/lots/recepcao", b'{"lot": "<script>alert(1)</script>"}', 400, "lot code"),
        ("/api/lots/silo", b'{"lot": "L-1"}', 400, "unknown station"),
        ("/api/lots/recepcao", b"nope", 400, "JSON"),
        ("/api/lots/recepcao", b'{"lot": "' + b"x" * 2000 + b'"}', 413, "over"),
        ("/api/alerts/wet_lot/L-1/ack", b'{"by": "ana"}', 400, "no firing alert"),
        ("/api/alerts/nope/L-1/ack", b"{}", 400, "unknown rule"),
    ],
)
async def test_bad_writes_are_refused(
    api: Api, path: str, body: bytes, status: int, reason: str
) -> None:
    got, doc = await api.request("POST", path, body)
    assert got == status
    assert isinstance(doc, dict)
    assert doc["ok"] is False
    assert reason in str(doc["error"])
    _, lots = await api.request("GET", "/api/lots", token=None)
    assert lots == {}


async def test_ack_through_the_api(api: Api) -> None:
    stamper = Stamper()
    reading: Reading = stamper.stamp(
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": 14.0},
        tags={"site": "s1", "device": "umid-1", "station": "recepcao", "lot": "L-9"},
    )
    api.alerts.on_reading(reading)
    _, open_alerts = await api.request("GET", "/api/alerts", token=None)
    assert isinstance(open_alerts, list)
    assert [(a["rule"], a["subject"], a["state"]) for a in open_alerts] == [
        ("wet_lot", "L-9", "firing")
    ]
    status, doc = await api.request("POST", "/api/alerts/wet_lot/L-9/ack", b'{"by": "ana"}')
    assert status == 200
    assert doc == {"ok": True, "rule": "wet_lot", "subject": "L-9", "by": "ana"}


async def test_writes_disabled_without_a_token(tmp_path: Path) -> None:
    store = LotStore.open(tmp_path / "lots.sqlite3")

    async def accept(readings: object) -> None:
        pass

    lots = LotService(
        store=store, stations={"recepcao"}, site="s1", stamper=Stamper(), accept=accept
    )
    port = free_port()
    app = make_app(health_registry=Health(), lot_service=lots, alert_service=None, token=None)
    async with (
        open_api(app, host="127.0.0.1", port=port),
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/api/lots/recepcao", data=b'{"lot": "L-1"}') as r,
    ):
        assert r.status == 403
    store.close()


async def test_port_in_use_does_not_stop_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    app1 = make_app(health_registry=Health(), lot_service=None, alert_service=None, token=None)  # type: ignore[arg-type]
    app2 = make_app(health_registry=Health(), lot_service=None, alert_service=None, token=None)  # type: ignore[arg-type]
    async with (
        open_api(app1, host="127.0.0.1", port=port),
        open_api(app2, host="127.0.0.1", port=port),
    ):
        pass
    assert any("Local API not started" in r.getMessage() for r in caplog.records)
