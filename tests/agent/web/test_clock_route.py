"""``/api/time``: the clock's state, and a person setting it from the browser's clock.

A real aiohttp server on a free port with the agent's real time service behind it (a
keeper whose wall clock says 1970, the outbox, the accept stage). The HTTP fuzz writes
raw requests to the route from a server thread: nothing escapes but a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.app import TimeService
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Stamper
from coffee_telemetry.agent.timekeeping import FLOOR_NS, NS, TimeKeeper
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.auth import CSRF_HEADER
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.web.test_server import PASSWORD, TOKEN, Client, make_config
from tests.services.net import free_port

EPOCH_1970 = 5 * NS


@dataclass
class Clock:
    base: str
    keeper: TimeKeeper
    service: TimeService


@contextlib.asynccontextmanager
async def serve(
    tmp: Path, sources: tuple[str, ...] = ("ntp", "gps", "user")
) -> AsyncIterator[Clock]:
    keeper = TimeKeeper(
        ntp=lambda: False, wall_ns=lambda: EPOCH_1970, sources=sources, rtc_set_clock=lambda: False
    )
    stamper = Stamper(clock_ns=keeper.now_ns, quality=lambda: keeper.quality.value)
    async with open_outbox(tmp / "o.db", sinks=["mqtt"]) as outbox:
        outbox.set_boot(keeper.boot)
        stage = AcceptStage(outbox.accept, stamper=stamper, health=Health())
        service = TimeService(keeper, stamper=stamper, outbox=outbox, accept=stage, site="s1")
        deps = WebDeps(cfg=make_config(tmp), time_control=service)
        port = free_port()
        app = make_web_app(deps, token=TOKEN, session_key=b"k" * 32)
        async with open_web(app, host="127.0.0.1", port=port):
            yield Clock(f"http://127.0.0.1:{port}", keeper, service)


@pytest.fixture
async def clock(tmp_path: Path) -> AsyncIterator[Clock]:
    async with serve(tmp_path) as c:
        yield c


@pytest.fixture
async def browser(clock: Clock) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Client(clock.base, session)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_the_clock_shows_its_quality_and_each_source(browser: Client) -> None:
    status, doc = await browser.request("GET", "/api/time")
    assert status == 200
    assert isinstance(doc, dict)
    assert (doc["available"], doc["quality"], doc["user_refusal"]) == (True, "provisional", None)
    assert doc["floor_ns"] == FLOOR_NS
    assert {name: s["state"] for name, s in doc["sources"].items()} == {
        "ntp": "waiting",
        "gps": "waiting",
        "user": "waiting",
    }


async def test_a_logged_in_user_sets_the_time_once_confirmed(clock: Clock, browser: Client) -> None:
    body = {"wall_ms": now_ms(), "confirmed": True}
    assert (await browser.request("POST", "/api/time", body))[0] == 401  # not logged in
    await browser.login()
    status, doc = await browser.request("POST", "/api/time", body, csrf=False)
    assert status == 403
    status, doc = await browser.request("POST", "/api/time", {"wall_ms": now_ms()})
    assert (status, doc["code"]) == (400, "not-confirmed")  # type: ignore[index]
    assert not clock.keeper.trusted
    before_floor = {"wall_ms": FLOOR_NS // 1_000_000 - 1, "confirmed": True}
    status, doc = await browser.request("POST", "/api/time", before_floor)
    assert (status, doc["code"]) == (400, "before-floor")  # type: ignore[index]
    assert not clock.keeper.trusted
    status, doc = await browser.request(
        "POST", "/api/time", {"wall_ms": now_ms(), "confirmed": True}
    )
    assert status == 200, doc
    assert isinstance(doc, dict)
    assert doc["time"]["quality"] == "trusted"
    assert doc["time"]["source"] == "user:maria"
    assert abs(clock.keeper.now_ns() - time.time_ns()) < 2 * NS


async def test_refused_while_a_trusted_source_answers(clock: Clock, browser: Client) -> None:
    await browser.login()
    assert await clock.service.offer("gps", time.time_ns(), time.monotonic_ns())
    status, doc = await browser.request(
        "POST", "/api/time", {"wall_ms": now_ms(), "confirmed": True}
    )
    assert status == 409
    assert isinstance(doc, dict)
    assert doc["code"] == "trusted-source"
    assert "gps" in doc["error"]
    assert doc["time"]["source"] == "gps"


async def test_an_api_token_may_set_it_and_is_named(clock: Clock, browser: Client) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status, doc = await browser.request(
        "POST", "/api/time", {"wall_ms": now_ms(), "confirmed": True}, headers=headers
    )
    assert status == 200, doc
    assert clock.keeper.source.startswith("user:token:")


async def test_setting_by_hand_off_is_refused_with_its_reason(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, sources=("ntp",)) as c,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        browser = Client(c.base, session)
        await browser.login()
        status, doc = await browser.request(
            "POST", "/api/time", {"wall_ms": now_ms(), "confirmed": True}
        )
        assert (status, doc["code"]) == (409, "off")  # type: ignore[index]


# -- fuzz ---------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    cookie: str
    csrf: str
    keeper: TimeKeeper | None = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("clockfuzz")
    ready = threading.Event()
    stop_box: dict[str, object] = {}
    box: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        stop_box["loop"], stop_box["stop"] = asyncio.get_running_loop(), stop
        async with serve(tmp) as c:
            box["base"], box["keeper"] = c.base, c.keeper
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    assert ready.wait(30)
    port = int(str(box["base"]).rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/login", json.dumps({"user": "maria", "password": PASSWORD}))
    answer = conn.getresponse()
    assert answer.status == 200
    cookie = answer.getheader("Set-Cookie", "").split(";", 1)[0]
    csrf = json.loads(answer.read())["csrf"]
    conn.close()
    keeper = box["keeper"]
    assert isinstance(keeper, TimeKeeper)
    try:
        yield Server(port, cookie, csrf, keeper)
    finally:
        loop, stop = stop_box["loop"], stop_box["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def raw_post(server: Server, body: bytes, headers: dict[str, str]) -> int:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /api/time HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{head}\r\n"
    ).encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(request)
        got = b""
        while b"\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return int(got.split(b" ", 2)[1])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=300)
    | st.builds(
        lambda wall, confirmed, extra: json.dumps(
            {"wall_ms": wall, "confirmed": confirmed, **extra}
        ).encode(),
        json_values | st.integers(-(2**70), 2**70),
        json_values,
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    ),
    auth=st.sampled_from(["none", "session", "session-no-csrf", "token", "wrong-token"]),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/json; charset=latin-1"]
    ),
)
def test_any_request_to_the_route_is_answered_or_refused_never_a_5xx(
    server: Server, body: bytes, auth: str, content_type: str
) -> None:
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    if auth.startswith("session"):
        headers["Cookie"] = server.cookie
        if auth == "session":
            headers[CSRF_HEADER] = server.csrf
    elif auth == "token":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif auth == "wrong-token":
        headers["Authorization"] = "Bearer nope"
    status = raw_post(server, body, headers)
    assert status in (200, 400, 401, 403, 409, 413, 429), status
    assert server.keeper is not None
    assert server.keeper.now_ns() >= FLOOR_NS  # whatever was sent, never before the floor
