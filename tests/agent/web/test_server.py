"""The web server: reads, writes, login, CSRF, live events, pages and their headers.

A real aiohttp server on a free loopback port, with the agent's real lot
service, alert engine, outbox, history and maintenance store behind it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.commands import Outgoing
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.history.service import open_history
from coffee_telemetry.agent.hullers.store import MaintenanceStore, open_maintenance_store
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.auth import CSRF_HEADER, SESSION_COOKIE, hash_password
from coffee_telemetry.agent.web.live import LiveHub
from coffee_telemetry.agent.web.server import SECURITY_HEADERS, make_web_app, open_web
from tests.fakes import stage
from tests.services.net import free_port

TOKEN = "s3cret-token-9f8e7d6c5b4a39281706"
PASSWORD = "cafe-bom-2026"
#: Hashing is slow on purpose; one hash for every test.
PASSWORD_HASH = hash_password(PASSWORD)


def make_config(tmp_path: Path, **api: object) -> Config:
    assets = tmp_path / "assets"
    assets.mkdir(exist_ok=True)
    (assets / "index.html").write_text("<!doctype html><title>t</title>", encoding="utf-8")
    (assets / "favicon.ico").write_bytes(b"\0\0\1\0")
    (assets / "app.js").write_text("console.log('x');\n", encoding="utf-8")
    return parse_config(
        {
            "site": {"id": "s1", "name": "Cooperativa", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "devices": [
                {
                    "id": "umid-1",
                    "driver": "moisture.ticket",
                    "port": "/dev/fake-1",
                    "station": "recepcao",
                    "product": "arabica",
                }
            ],
            "buses": [{"id": "rs485", "port": "/dev/fake-bus"}],
            "hullers": [
                {
                    "id": "desc-1",
                    "name": "Descascador 1",
                    "bus": "rs485",
                    "bag_counter": 1,
                    "tasks": [{"id": "oleo", "name": "Troca de óleo", "interval_h": 250}],
                }
            ],
            "alerts": {"wet_lot": {"k": 1, "n": 1, "thresholds_pct": {"arabica": 12.0}}},
            "api": {
                "users": [{"name": "maria", "password_hash": PASSWORD_HASH}],
                "assets_dir": str(assets),
                **api,
            },
        }
    )


class Client:
    """One browser: a cookie jar, and the CSRF token once logged in."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        self.csrf: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: Mapping[str, str] | None = None,
        csrf: bool = True,
    ) -> tuple[int, object]:
        sent = dict(headers or {})
        if csrf and self.csrf:
            sent[CSRF_HEADER] = self.csrf
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        async with self.session.request(method, self.base + path, data=data, headers=sent) as r:
            text = await r.text()
            return r.status, json.loads(text) if text.startswith(("{", "[")) else text

    async def login(self, user: str = "maria", password: str = PASSWORD) -> tuple[int, object]:
        status, doc = await self.request("POST", "/api/login", {"user": user, "password": password})
        if status == 200:
            assert isinstance(doc, dict)
            self.csrf = str(doc["csrf"])
        return status, doc


class Site:
    def __init__(self, deps: WebDeps, base: str, published: list[Outgoing]) -> None:
        self.deps = deps
        self.base = base
        self.published = published
        self.stamper = Stamper()

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    def moisture(self, value: float, *, lot: str = "L-9", ts_ns: int | None = None) -> Reading:
        return self.stamper.stamp(
            device="umid-1",
            measurement="moisture",
            fields={"moisture_pct": value, "temperature_c": 24.5},
            tags={
                "site": "s1",
                "device": "umid-1",
                "station": "recepcao",
                "lot": lot,
                "product": "arabica",
            },
            ts_ns=ts_ns,
        )


async def _site(tmp_path: Path, cfg: Config, token: str | None) -> AsyncIterator[Site]:
    store = LotStore.open(tmp_path / "lots.sqlite3")
    published: list[Outgoing] = []
    stamper = Stamper()
    hub = LiveHub()
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/fake-1", station="recepcao")
    health.add_sink("mqtt")

    async def accept(readings: object) -> None:
        pass

    lots = LotService(
        store=store,
        stations={"recepcao"},
        site="s1",
        record=stage(accept, stamper).record,
        on_change=lambda st, a: hub.publish("lots", {"station": st}),
    )
    async with (
        open_outbox(tmp_path / "o.db", sinks=["mqtt"]) as outbox,
        open_history(tmp_path / "h.db", flush_interval_s=3600) as history,
        open_maintenance_store(cfg.maintenance_path) as maintenance,
    ):
        alerts = AlertService(
            cfg=cfg.alerts,
            site="s1",
            state_path=tmp_path / "alerts.json",
            record=stage(outbox.accept, stamper).record,
            outbox=outbox,
            health=health,
            on_alert=lambda doc: hub.publish("alert", doc),
        )
        deps = WebDeps(
            cfg=cfg,
            health=health,
            hub=hub,
            lots=lots,
            alerts=alerts,
            history=history,
            maintenance=maintenance,
            outbox=outbox,
            publish=published.append,
        )
        port = free_port()
        app = make_web_app(deps, token=token, session_key=b"k" * 32)
        async with open_web(app, host="127.0.0.1", port=port):
            yield Site(deps, f"http://127.0.0.1:{port}", published)
    store.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path, make_config(tmp_path), TOKEN):
        yield s


@pytest.fixture
async def browser(site: Site) -> AsyncIterator[Client]:
    async with site.client() as session:
        yield Client(site.base, session)


# -- reads ---------------------------------------------------------------------------


async def test_reads_are_open_by_default(browser: Client) -> None:
    status, doc = await browser.request("GET", "/api/health")
    assert status == 200
    assert isinstance(doc, dict)
    assert set(doc) == {"time_ns", "devices", "sinks", "interfaces", "counters"}
    assert await browser.request("GET", "/api/lots") == (200, {})
    assert await browser.request("GET", "/api/alerts") == (200, [])
    assert await browser.request("GET", "/api/alerts/recent") == (200, [])


async def test_session_document_has_no_secrets(browser: Client, site: Site) -> None:
    status, doc = await browser.request("GET", "/api/session")
    assert status == 200
    assert doc == {
        "site": {"id": "s1", "name": "Cooperativa", "timezone": "America/Sao_Paulo"},
        "user": None,
        "can_write": False,
        "login_enabled": True,
        "read_open": True,
        "csrf": None,
        "lang": "pt-BR",
    }
    _, logged = await browser.login()
    text = json.dumps(logged)
    assert PASSWORD_HASH.split("$")[-1] not in text
    assert TOKEN not in text
    assert PASSWORD not in text


async def test_warehouse_shows_the_live_reading_and_todays_lots(
    site: Site, browser: Client
) -> None:
    site.deps.health.set_device_state("umid-1", DeviceState.ONLINE)
    for value, lot in ((11.5, "L-10"), (11.0, "L-9"), (12.6, "L-9")):
        reading = site.moisture(value, lot=lot)
        site.deps.hub.on_reading(reading)
        site.deps.alerts.on_reading(reading)  # type: ignore[union-attr]
        assert site.deps.history is not None
        site.deps.history.add(reading)
    # Not flushed yet (the fixture's history writes hourly): the page must see them anyway.
    assert site.deps.history is not None
    assert site.deps.history.sync.pending > 0
    status, doc = await browser.request("GET", "/api/warehouse")
    assert status == 200
    assert isinstance(doc, dict)
    [meter] = doc["meters"]
    assert meter["device"] == "umid-1"
    assert meter["online"] is True
    assert meter["moisture_pct"] == 12.6
    assert meter["temperature_c"] == 24.5
    assert (meter["lot"], meter["product"], meter["threshold_pct"]) == ("L-9", "arabica", 12.0)
    assert meter["wet"] is True
    # Newest first; L-9 is wet (its alert fired), L-10 is not.
    assert [
        (lot["lot"], lot["count"], lot["mean_pct"], lot["max_pct"], lot["wet"])
        for lot in doc["lots_today"]
    ] == [("L-9", 2, 11.8, 12.6, True), ("L-10", 1, 11.5, 11.5, False)]
    assert doc["stations"] == [{"station": "recepcao", "lot": None, "set_at_ns": None, "by": None}]
    assert [(a["rule"], a["subject"]) for a in doc["alerts"]] == [("wet_lot", "L-9")]


async def test_series_for_a_chart(site: Site, browser: Client) -> None:
    assert site.deps.history is not None
    now = site.deps.clock_ns()
    for i in range(10):
        site.deps.history.add(site.moisture(11.0 + i / 10, ts_ns=now - (10 - i) * 60 * 10**9))
    await site.deps.history.flush()
    q = "/api/series?measurement=moisture&device=umid-1&field=moisture_pct"
    status, doc = await browser.request("GET", q + "&range=1h")
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["resolution"] == "raw"
    assert doc["v"] == [round(11.0 + i / 10, 4) for i in range(10)]
    assert len(doc["t"]) == 10
    assert all(isinstance(t, float) and t > 1.7e9 for t in doc["t"])
    status, doc = await browser.request("GET", q + "&range=30d")
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["resolution"] == "1h"
    assert (await browser.request("GET", q + "&range=2y"))[0] == 400
    assert (await browser.request("GET", q + "&start_ns=10&end_ns=5"))[0] == 400
    assert (await browser.request("GET", q + "&start_ns=x"))[0] == 400
    assert (await browser.request("GET", "/api/series?device=umid-1"))[0] == 400
    status, doc = await browser.request(
        "GET", "/api/series?measurement=moisture&device=nope&field=moisture_pct"
    )
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["t"] == doc["v"] == []


async def test_devices_page_data(site: Site, browser: Client) -> None:
    assert site.deps.outbox is not None
    await site.deps.outbox.accept([site.moisture(11.0), site.moisture(11.1)])
    status, doc = await browser.request("GET", "/api/devices")
    assert status == 200
    assert isinstance(doc, dict)
    assert [d["device"] for d in doc["devices"]] == ["umid-1"]
    assert doc["devices"][0]["port"] == "/dev/fake-1"
    [sink] = doc["sinks"]
    assert (sink["sink"], sink["backlog"], sink["connected"]) == ("mqtt", 2, False)
    assert doc["history"]["max_bytes"] > 0
    assert doc["agent"]["uptime_s"] >= 0


# -- writes: token -------------------------------------------------------------------


async def test_token_writes_and_names_who(site: Site, browser: Client) -> None:
    body = {"lot": "L-0042", "by": "maria"}
    assert (await browser.request("POST", "/api/lots/recepcao", body))[0] == 401
    bad = {"Authorization": "Bearer wrong"}
    assert (await browser.request("POST", "/api/lots/recepcao", body, headers=bad))[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, doc = await browser.request("POST", "/api/lots/recepcao", body, headers=auth)
    assert (status, doc) == (200, {"ok": True, "station": "recepcao", "lot": "L-0042"})
    _, lots = await browser.request("GET", "/api/lots")
    assert isinstance(lots, dict)
    assert (lots["recepcao"]["lot"], lots["recepcao"]["by"]) == ("L-0042", "maria")
    assert lots["recepcao"]["source"] == "token:api"  # the claim, and the token's name
    assert site.published[-1].topic == "cmd/lot/recepcao/reply"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/api/lots/recepcao", b'{"lot": "<script>alert(1)</script>"}', 400, "lot code"),
        ("/api/lots/silo", b'{"lot": "L-1"}', 400, "unknown station"),
        ("/api/lots/recepcao", b"nope", 400, "JSON"),
        ("/api/lots/recepcao", b"[1]", 400, "object"),
        ("/api/lots/recepcao", b'{"lot": "' + b"x" * 2000 + b'"}', 413, "over"),
        ("/api/alerts/wet_lot/L-1/ack", b'{"by": "ana"}', 400, "no firing alert"),
        ("/api/alerts/nope/L-1/ack", b"{}", 400, "unknown rule"),
        ("/api/hullers/desc-1/services", b'{"task": "nope"}', 400, "no task"),
        ("/api/hullers/desc-9/services", b'{"task": "oleo"}', 400, "unknown huller"),
        ("/api/hullers/desc-1/services", b'{"task": 3}', 400, "task must be"),
        ("/api/hullers/desc-1/services", b'{"task": "oleo", "note": "a\\u0000b"}', 400, "note"),
    ],
)
async def test_bad_writes_are_refused_and_change_nothing(
    site: Site, browser: Client, path: str, body: bytes, status: int, reason: str
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    got, doc = await browser.request("POST", path, body, headers=auth)
    assert got == status
    assert isinstance(doc, dict)
    assert doc["ok"] is False
    assert reason in str(doc["error"])
    assert await browser.request("GET", "/api/lots") == (200, {})
    with MaintenanceStore.open(site.deps.cfg.maintenance_path) as store:
        assert store.services() == []


async def test_writes_disabled_without_users_or_token(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, users=[])
    async for s in _site(tmp_path, cfg, None):
        async with s.client() as session:
            c = Client(s.base, session)
            status, doc = await c.request("POST", "/api/lots/recepcao", {"lot": "L-1"})
            assert status == 403
            assert "disabled" in str(doc)
            assert (await c.request("POST", "/api/login", {"user": "a", "password": "b"}))[0] == 403


async def test_port_in_use_does_not_stop_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    cfg = make_config(tmp_path)
    app1 = make_web_app(WebDeps(cfg=cfg), session_key=b"k" * 32)
    app2 = make_web_app(WebDeps(cfg=cfg), session_key=b"k" * 32)
    async with (
        open_web(app1, host="127.0.0.1", port=port),
        open_web(app2, host="127.0.0.1", port=port),
    ):
        pass
    assert any("Web server not started" in r.getMessage() for r in caplog.records)


# -- writes: login and CSRF ----------------------------------------------------------


async def test_login_then_write_with_the_csrf_token(site: Site, browser: Client) -> None:
    assert (await browser.login(password="wrong"))[0] == 401
    assert (await browser.login(user="nobody"))[0] == 401
    status, doc = await browser.login()
    assert status == 200
    assert isinstance(doc, dict)
    assert (doc["user"], doc["can_write"]) == ("maria", True)
    cookie = browser.session.cookie_jar.filter_cookies(URL(site.base))
    assert SESSION_COOKIE in cookie
    # The body's "by" is ignored: a logged-in user writes as themselves.
    status, reply = await browser.request("POST", "/api/lots/recepcao", {"lot": "L-7", "by": "x"})
    assert (status, reply) == (200, {"ok": True, "station": "recepcao", "lot": "L-7"})
    _, lots = await browser.request("GET", "/api/lots")
    assert isinstance(lots, dict)
    assert lots["recepcao"]["by"] == "maria"


async def test_session_writes_need_the_csrf_token(browser: Client) -> None:
    await browser.login()
    status, doc = await browser.request("POST", "/api/lots/recepcao", {"lot": "L-7"}, csrf=False)
    assert status == 403
    assert "CSRF" in str(doc)
    wrong = {CSRF_HEADER: "forged"}
    status, _ = await browser.request(
        "POST", "/api/lots/recepcao", {"lot": "L-7"}, headers=wrong, csrf=False
    )
    assert status == 403
    assert await browser.request("GET", "/api/lots") == (200, {})


@pytest.mark.parametrize(
    "headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]
)
async def test_cross_origin_writes_are_refused(browser: Client, headers: dict[str, str]) -> None:
    await browser.login()
    status, doc = await browser.request(
        "POST", "/api/lots/recepcao", {"lot": "L-7"}, headers=headers
    )
    assert status == 403
    assert "cross-origin" in str(doc)
    status, _ = await browser.request(
        "POST", "/api/login", {"user": "maria", "password": PASSWORD}, headers=headers
    )
    assert status == 403
    assert await browser.request("GET", "/api/lots") == (200, {})


async def test_same_origin_header_is_accepted(site: Site, browser: Client) -> None:
    await browser.login()
    same = {"Origin": site.base, "Sec-Fetch-Site": "same-origin"}
    status, _ = await browser.request("POST", "/api/lots/recepcao", {"lot": "L-8"}, headers=same)
    assert status == 200


async def test_forged_cookie_is_not_a_session(site: Site) -> None:
    async with site.client() as session:
        c = Client(site.base, session)
        _, doc = await c.login()
        assert isinstance(doc, dict)
        good = session.cookie_jar.filter_cookies(URL(site.base))[SESSION_COOKIE].value
    user, expires, epoch, fp, mac = good.split(".")
    forged = f"{user}.{int(expires) + 10**6}.{epoch}.{fp}.{mac}"
    async with aiohttp.ClientSession(cookies={SESSION_COOKIE: forged}) as session:
        c = Client(site.base, session)
        c.csrf = str(doc["csrf"])
        status, _ = await c.request("POST", "/api/lots/recepcao", {"lot": "L-7"})
        assert status == 401
        _, me = await c.request("GET", "/api/session")
        assert isinstance(me, dict)
        assert me["user"] is None


async def test_logout_ends_the_session_everywhere(site: Site, browser: Client) -> None:
    await browser.login()
    cookie = browser.session.cookie_jar.filter_cookies(URL(site.base))[SESSION_COOKIE].value
    async with site.client() as other_session:  # the same user on another device
        other = Client(site.base, other_session)
        await other.login()
        assert (await browser.request("POST", "/api/logout", {}))[0] == 200
        status, _ = await browser.request("POST", "/api/lots/recepcao", {"lot": "L-7"})
        assert status == 401
        assert (await other.request("POST", "/api/lots/recepcao", {"lot": "L-7"}))[0] == 401
    # A copy of the cookie taken before the logout is worth nothing after it.
    async with aiohttp.ClientSession(cookies={SESSION_COOKIE: cookie}) as copied:
        stolen = Client(site.base, copied)
        stolen.csrf = browser.csrf
        assert (await stolen.request("POST", "/api/lots/recepcao", {"lot": "L-7"}))[0] == 401
        _, me = await stolen.request("GET", "/api/session")
        assert isinstance(me, dict)
        assert me["user"] is None
    assert await browser.request("GET", "/api/lots") == (200, {})
    assert (await browser.login())[0] == 200  # logging in again works


async def test_wrong_passwords_are_throttled(site: Site, browser: Client) -> None:
    for _ in range(5):
        assert (await browser.login(password="guess"))[0] == 401
    status, doc = await browser.login()  # even the right password, for a while, from here
    assert status == 429
    assert "too many" in str(doc)
    body = json.dumps({"user": "maria", "password": PASSWORD})
    async with site.client() as session, session.post(site.base + "/api/login", data=body) as r:
        assert r.status == 429
        assert 0 < int(r.headers["Retry-After"]) <= 300


async def test_ack_and_service_through_a_session(site: Site, browser: Client) -> None:
    assert site.deps.alerts is not None
    site.deps.alerts.on_reading(site.moisture(14.0))
    await browser.login()
    status, doc = await browser.request("POST", "/api/alerts/wet_lot/L-9/ack", {"by": "someone"})
    assert (status, doc) == (200, {"ok": True, "rule": "wet_lot", "subject": "L-9", "by": "maria"})
    status, doc = await browser.request(
        "POST", "/api/hullers/desc-1/services", {"task": "oleo", "note": "filtro <novo>"}
    )
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["service"]["by"] == "maria"
    assert doc["service"]["note"] == "filtro <novo>"
    with MaintenanceStore.open(site.deps.cfg.maintenance_path) as store:
        [record] = store.services()
    assert (record.huller, record.task, record.by) == ("desc-1", "oleo", "maria")
    status, hullers = await browser.request("GET", "/api/hullers")
    assert status == 200
    assert isinstance(hullers, dict)
    [h] = hullers["hullers"]
    [task] = h["tasks"]
    assert task["last_service"]["id"] == record.id
    assert len(h["daily_hours"]) == 14


async def test_read_access_login_closes_reads_not_pages(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, read_access="login")
    async for s in _site(tmp_path, cfg, TOKEN):
        async with s.client() as session:
            c = Client(s.base, session)
            for path in ("/api/warehouse", "/api/devices", "/api/hullers", "/api/events"):
                assert (await c.request("GET", path))[0] == 401, path
            status, page = await c.request("GET", "/dispositivos")
            assert status == 200
            assert "<title>" in str(page)
            _, me = await c.request("GET", "/api/session")
            assert isinstance(me, dict)
            assert me["read_open"] is False
            await c.login()
            assert (await c.request("GET", "/api/warehouse"))[0] == 200
            auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            assert (await Client(s.base, session).request("GET", "/api/devices"))[0] == 200


# -- pages and headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/descascadores", "/alertas", "/api/health", "/static/app.js", "/nope"]
)
async def test_security_headers_everywhere(site: Site, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(site.base + path) as r:
        assert r.status == (404 if path == "/nope" else 200)
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, name
        assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"]


async def test_favicon_and_no_path_traversal(site: Site) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(site.base + "/favicon.ico") as r:
            assert r.status == 200
            assert await r.read() == b"\0\0\1\0"
        for path in ("/static/../data/web-session.key", "/static/%2e%2e/data/web-session.key"):
            async with session.get(site.base + path) as r:
                assert r.status in (403, 404), path
                assert b"k" * 32 not in await r.read()


# -- live events ---------------------------------------------------------------------


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, object]]:
    event = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


async def test_events_stream_readings_and_changes(site: Site) -> None:
    async with aiohttp.ClientSession() as session, session.get(site.base + "/api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        stream = _events(r)
        assert (await anext(stream))[0] == "hello"
        site.deps.hub.on_reading(site.moisture(11.5, lot="<script>x</script>"))
        event, data = await asyncio.wait_for(anext(stream), 5)
        assert event == "reading"
        assert isinstance(data, dict)
        assert data["fields"] == {"moisture_pct": 11.5, "temperature_c": 24.5}
        assert data["tags"] == {
            "station": "recepcao",
            "lot": "<script>x</script>",
            "product": "arabica",
        }
        assert site.deps.alerts is not None
        site.deps.alerts.on_reading(site.moisture(14.0))
        await site.deps.alerts._flush()
        event, data = await asyncio.wait_for(anext(stream), 5)
        assert event == "alert"
        assert isinstance(data, dict)
        assert (data["rule"], data["state"]) == ("wet_lot", "firing")
        assert site.deps.hub.subscribers == 1
    # The page went away: its subscription ends within a check interval or two.
    for _ in range(50):
        if site.deps.hub.subscribers == 0:
            break
        await asyncio.sleep(0.1)
    assert site.deps.hub.subscribers == 0


# -- tokens, proxies, host names -----------------------------------------------------


async def test_wrong_tokens_are_throttled_and_logged(
    site: Site, browser: Client, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        bad = {"Authorization": "Bearer guess-guess-guess"}
        assert (await browser.request("POST", "/api/lots/recepcao", {"lot": "L"}, headers=bad))[
            0
        ] == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, doc = await browser.request("POST", "/api/lots/recepcao", {"lot": "L-1"}, headers=good)
    assert status == 429  # this address guessed too often: not even compared
    assert "too many wrong API tokens" in str(doc)
    assert await browser.request("GET", "/api/lots") == (200, {})
    assert sum("Wrong API token from 127.0.0.1" in r.getMessage() for r in caplog.records) == 5
    assert not any("guess-guess" in r.getMessage() for r in caplog.records)
    _, stats = await browser.request("GET", "/api/web")
    assert isinstance(stats, dict)
    assert (stats["auth"]["tokens_wrong"], stats["auth"]["tokens_locked"]) == (5, 1)


async def test_named_tokens_from_the_config_record_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "4f1c9e2a7b30d58e6a91c0f2b7d34e85"
    monkeypatch.setenv("COFFEE_BALANCA_TOKEN", token)
    cfg = make_config(tmp_path, tokens=[{"name": "balanca", "token_env": "COFFEE_BALANCA_TOKEN"}])
    async for s in _site(tmp_path, cfg, None):
        async with s.client() as session:
            c = Client(s.base, session)
            auth = {"Authorization": f"Bearer {token}"}
            status, _ = await c.request("POST", "/api/lots/recepcao", {"lot": "L-5"}, headers=auth)
            assert status == 200
            _, lots = await c.request("GET", "/api/lots")
            assert isinstance(lots, dict)
            assert (lots["recepcao"]["source"], lots["recepcao"]["by"]) == (
                "token:balanca",
                "balanca",
            )


async def test_the_session_cookie_lasts_the_configured_hours(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, session_hours=720)
    async for s in _site(tmp_path, cfg, None):
        body = json.dumps({"user": "maria", "password": PASSWORD})
        async with s.client() as session, session.post(s.base + "/api/login", data=body) as r:
            assert r.status == 200
            morsel = r.cookies[SESSION_COOKIE]
            assert morsel["max-age"] == str(720 * 3600)
            assert morsel["httponly"]
            assert morsel["samesite"] == "Strict"
            assert not morsel["secure"]  # plain http, no proxy: a Secure cookie would be lost


async def test_behind_a_tls_proxy_logins_and_writes_work(tmp_path: Path) -> None:
    """The proxy speaks https to browsers and http to the agent: the Origin is https."""
    origin = "https://armazem.example.coop"
    cfg = make_config(tmp_path, public_origin=origin, trusted_proxies=["127.0.0.1"])
    async for s in _site(tmp_path, cfg, None):
        proxied = {
            "Host": "armazem.example.coop",
            "Origin": origin,
            "X-Forwarded-For": "192.168.10.40",
            "X-Forwarded-Proto": "https",
        }
        async with s.client() as session:
            body = json.dumps({"user": "maria", "password": PASSWORD})
            async with session.post(s.base + "/api/login", data=body, headers=proxied) as r:
                assert r.status == 200
                assert r.cookies[SESSION_COOKIE]["secure"]  # the browser sees https
                csrf = (await r.json())["csrf"]
                cookie = r.cookies[SESSION_COOKIE].value
        async with aiohttp.ClientSession(cookies={SESSION_COOKIE: cookie}) as session:
            c = Client(s.base, session)
            c.csrf = csrf
            status, _ = await c.request(
                "POST", "/api/lots/recepcao", {"lot": "L-8"}, headers=proxied
            )
            assert status == 200
            evil = {**proxied, "Origin": "https://evil.example"}
            status, _ = await c.request("POST", "/api/lots/recepcao", {"lot": "L-9"}, headers=evil)
            assert status == 403


async def test_forwarded_headers_count_only_from_trusted_proxies(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, trusted_proxies=["10.1.1.1"])  # not the test client
    async for s in _site(tmp_path, cfg, None):
        async with s.client() as session:
            c = Client(s.base, session)
            for i in range(5):  # each claims another address: all are 127.0.0.1
                forged = {"X-Forwarded-For": f"10.9.9.{i}"}
                status, _ = await c.request(
                    "POST", "/api/login", {"user": "maria", "password": "x"}, headers=forged
                )
                assert status == 401
            status, _ = await c.request(
                "POST",
                "/api/login",
                {"user": "maria", "password": PASSWORD},
                headers={"X-Forwarded-For": "10.9.9.99"},
            )
            assert status == 429
            # A proxy that says https is not believed either: the Origin stays http.
            spoof = {"X-Forwarded-Proto": "https", "Origin": f"https://{URL(s.base).authority}"}
            status, _ = await c.request(
                "POST", "/api/login", {"user": "joao", "password": "x"}, headers=spoof
            )
            assert status == 403


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("localhost:8780", 200),
        ("[::1]:8780", 200),
        ("192.168.0.10", 200),
        ("armazem.example.coop", 200),  # public_origin's
        ("painel.coop.br", 200),  # allowed_hosts
        ("armazem", 200),  # only the LAN resolves a name without a dot
        ("balanca-1.local", 200),  # ...or an mDNS name
        ("evil.example", 421),
        ("armazem.example.coop.evil.example", 421),
        ("", 421),
    ],
)
async def test_host_names_outside_the_allowlist_are_refused(
    tmp_path: Path, host: str, status: int
) -> None:
    cfg = make_config(
        tmp_path, public_origin="https://armazem.example.coop", allowed_hosts=["painel.coop.br"]
    )
    async for s in _site(tmp_path, cfg, None):
        async with aiohttp.ClientSession() as session:
            for path in ("/api/health", "/", "/static/app.js"):
                async with session.get(s.base + path, headers={"Host": host}) as r:
                    assert r.status == status, (host, path)
                    if status == 421:
                        assert "host name" in await r.text()
                        assert r.headers["X-Frame-Options"] == "DENY"
