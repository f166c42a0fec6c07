"""InfluxV1Sink against a local aiohttp server that answers scripted statuses.

``ScriptedServer`` records every request (path, query, headers, body lines)
and answers with what its ``script`` says; ``written`` holds the lines it
accepted, so a test can check that everything ends up delivered exactly as
encoded. The v2 stand-in tests reuse it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Record, Rejection, Sink
from coffee_telemetry.agent.readings import Reading, encode_reading
from coffee_telemetry.agent.sinks.influx import open_influx_v1, parse_retry_after
from coffee_telemetry.agent.sinks.lineprotocol import encode_line
from tests.services.net import free_port

TS = 1_796_035_314_000_000_000


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    lines: list[str]


Script = Callable[["ScriptedServer", Seen], Awaitable[web.Response]]


async def accept(server: ScriptedServer, seen: Seen) -> web.Response:
    server.written.extend(seen.lines)
    return web.Response(status=204)


def answer(status: int, *, headers: dict[str, str] | None = None, error: str = "") -> Script:
    async def script(server: ScriptedServer, seen: Seen) -> web.Response:
        body = json.dumps({"error": error}) if error else None
        return web.Response(status=status, headers=headers, text=body)

    return script


def too_large_over(max_lines: int) -> Script:
    """413 for bodies of more than ``max_lines`` lines, like max-body-size."""

    async def script(server: ScriptedServer, seen: Seen) -> web.Response:
        if len(seen.lines) > max_lines:
            return web.Response(status=413, text='{"error":"Request Entity Too Large"}')
        return await accept(server, seen)

    return script


def poisoned(marker: str, *, status: int = 400, partial: bool = True) -> Script:
    """Refuse lines containing ``marker``; with ``partial``, write the others (1.x)."""

    async def script(server: ScriptedServer, seen: Seen) -> web.Response:
        bad = [line for line in seen.lines if marker in line]
        if not bad:
            return await accept(server, seen)
        if partial:
            server.written.extend(line for line in seen.lines if marker not in line)
        error = f"partial write: unable to parse '{bad[0]}': bad dropped={len(bad)}"
        return web.Response(status=status, text=json.dumps({"error": error}))

    return script


@dataclass
class ScriptedServer:
    """A local HTTP server on 127.0.0.1 with a scripted answer per request."""

    script: Script = accept
    requests: list[Seen] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    #: Set to let requests held by ``hang`` finish.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        # aiohttp inflates a gzip body (Content-Encoding) before read(); a body
        # that is not really gzip fails here with 400.
        body = await request.read()
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            lines=body.decode().split("\n") if body else [],
        )
        self.requests.append(seen)
        return await self.script(self, seen)


async def hang(server: ScriptedServer, seen: Seen) -> web.Response:
    await server.release.wait()
    return web.Response(status=204)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer()
    await srv.start()
    yield srv
    await srv.close()


def make_records(count: int, *, start_id: int = 1, poison: int | None = None) -> list[Record]:
    """Readings with ids from ``start_id``; record ``poison`` gets a ``poison`` tag."""
    records = []
    for offset in range(count):
        record_id = start_id + offset
        tags = {"site": "ourofino", "device": "umid-1"}
        if record_id == poison:
            tags["lot"] = "poison"
        reading = Reading(
            ts_ns=TS + record_id,
            seq=record_id,
            device="umid-1",
            measurement="moisture",
            fields={"moisture_pct": 11.0 + record_id / 100},
            tags=tags,
        )
        records.append(Record(id=record_id, payload=encode_reading(reading), reading=reading))
    return records


def lines_of(records: Sequence[Record]) -> list[str]:
    return [encode_line(record.reading) for record in records]


async def test_delivers_with_path_query_auth_and_gzip(server: ScriptedServer) -> None:
    records = make_records(3)
    async with open_influx_v1(
        url=server.url,
        database="coffee",
        retention_policy="autogen",
        username="agent",
        password="s3cret",
        name="influx-main",
        batch_size=500,
        flush_interval_s=2.5,
    ) as sink:
        as_sink: Sink = sink  # mypy checks the protocol here
        assert (as_sink.name, as_sink.batch_size, as_sink.flush_interval_s) == (
            "influx-main",
            500,
            2.5,
        )
        assert await as_sink.deliver(records) == []

    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/write")
    assert seen.query == {"db": "coffee", "precision": "ns", "rp": "autogen"}
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"agent:s3cret").decode()
    assert seen.headers["Content-Encoding"] == "gzip"
    assert seen.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert seen.lines == lines_of(records)


async def test_token_auth_and_plain_body(server: ScriptedServer) -> None:
    records = make_records(2)
    async with open_influx_v1(url=server.url, database="coffee", token="tok", gzip=False) as sink:
        assert await sink.deliver(records) == []
    [seen] = server.requests
    assert seen.query == {"db": "coffee", "precision": "ns"}
    assert seen.headers["Authorization"] == "Token tok"
    assert "Content-Encoding" not in seen.headers
    assert seen.lines == lines_of(records)


async def test_empty_batch_sends_nothing(server: ScriptedServer) -> None:
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        assert await sink.deliver([]) == []
    assert server.requests == []


async def test_429_with_retry_after(server: ScriptedServer) -> None:
    server.script = answer(429, headers={"Retry-After": "7"}, error="rate limited")
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        with pytest.raises(SinkUnavailable, match="HTTP 429") as caught:
            await sink.deliver(make_records(10))
    assert caught.value.retry_after_s == 7.0
    assert caught.value.sink == "influx"
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_server_errors_keep_the_batch(server: ScriptedServer, status: int) -> None:
    server.script = answer(status, error="engine overloaded")
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        with pytest.raises(SinkUnavailable, match="engine overloaded") as caught:
            await sink.deliver(make_records(10))
    assert caught.value.retry_after_s is None
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "credentials refused"), (403, "credentials refused"), (404, "not found")],
)
async def test_configuration_errors_keep_the_batch(
    server: ScriptedServer, status: int, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = answer(status, error="authorization failed")
    caplog.set_level(logging.DEBUG)
    async with open_influx_v1(
        url=server.url, database="coffee", username="agent", password="s3cret"
    ) as sink:
        with pytest.raises(SinkUnavailable, match=hint) as caught:
            await sink.deliver(make_records(10))
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in caplog.text
    assert len(server.requests) == 1  # no bisecting: no record is to blame


async def test_timeout(server: ScriptedServer) -> None:
    server.script = hang
    async with open_influx_v1(url=server.url, database="coffee", timeout_s=0.2) as sink:
        with pytest.raises(SinkUnavailable, match=r"no answer within 0\.2 s"):
            await sink.deliver(make_records(2))


async def test_connection_refused() -> None:
    async with open_influx_v1(url=f"http://127.0.0.1:{free_port()}", database="coffee") as sink:
        with pytest.raises(SinkUnavailable, match="Client"):
            await sink.deliver(make_records(2))


async def test_413_splits_until_everything_is_delivered(server: ScriptedServer) -> None:
    server.script = too_large_over(10)
    records = make_records(100)
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        assert await sink.deliver(records) == []
    assert sorted(server.written) == sorted(lines_of(records))
    assert len(server.written) == 100  # every accepted request held ≤ 10 lines
    assert all(len(seen.lines) <= 100 for seen in server.requests)


async def test_413_for_a_single_line_rejects_it(server: ScriptedServer) -> None:
    server.script = too_large_over(0)
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        rejections = await sink.deliver(make_records(2))
    assert [(r.record_id, r.status) for r in rejections] == [(1, 413), (2, 413)]


@pytest.mark.parametrize("partial", [True, False], ids=["partial-write-1x", "all-or-nothing"])
async def test_one_poisoned_line_among_100(
    server: ScriptedServer, partial: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = poisoned("lot=poison", partial=partial)
    records = make_records(100, poison=37)
    caplog.set_level(logging.WARNING)
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        rejections = await sink.deliver(records)

    [rejection] = rejections
    assert rejection.record_id == 37
    assert rejection.status == 400
    assert rejection.reason.startswith("partial write: unable to parse 'moisture,")
    good = [line for line in lines_of(records) if "poison" not in line]
    assert set(server.written) == set(good)
    # Bisecting 100 lines costs about 2·log2(100) requests, not 100.
    assert len(server.requests) <= 16
    [message] = [
        r.getMessage() for r in caplog.records if r.name == "coffee_telemetry.agent.sinks.influx"
    ]
    assert message.startswith("Rejected record 37 for influx: HTTP 400: partial write")


async def test_several_poisoned_lines(server: ScriptedServer) -> None:
    server.script = poisoned("lot=poison", status=422, partial=False)
    records = [
        *make_records(10, start_id=1, poison=3),
        *make_records(10, start_id=11, poison=11),
        *make_records(10, start_id=21, poison=30),
    ]
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        rejections = await sink.deliver(records)
    assert [(r.record_id, r.status) for r in rejections] == [(3, 422), (11, 422), (30, 422)]
    assert len(set(server.written)) == 27


async def test_server_fails_while_bisecting(server: ScriptedServer) -> None:
    calls = 0

    async def script(srv: ScriptedServer, seen: Seen) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=400, text='{"error":"bad line"}')
        return web.Response(status=503, headers={"Retry-After": "2"})

    server.script = script
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        with pytest.raises(SinkUnavailable) as caught:
            await sink.deliver(make_records(8))
    assert caught.value.retry_after_s == 2.0


async def test_unencodable_record_is_rejected_alone(server: ScriptedServer) -> None:
    records = make_records(3)
    bad = Reading(
        ts_ns=TS, seq=9, device="d", measurement="moisture", fields={"moisture_pct": math.nan}
    )
    records.insert(1, Record(id=99, payload=b"{}", reading=bad))
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        rejections = await sink.deliver(records)
    assert rejections == [
        Rejection(99, "cannot encode as line protocol: float nan is not finite", None)
    ]
    assert server.written == lines_of([records[0], *records[2:]])


async def test_long_server_errors_are_shortened(server: ScriptedServer) -> None:
    server.script = answer(400, error="x" * 5000)
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        [rejection] = await sink.deliver(make_records(1))
    assert len(rejection.reason) == 200
    assert rejection.reason.endswith("...")


async def test_ensure_database(server: ScriptedServer) -> None:
    async def ok(srv: ScriptedServer, seen: Seen) -> web.Response:
        return web.json_response({"results": [{"statement_id": 0}]})

    server.script = ok
    async with open_influx_v1(url=server.url, database='co"ffee', token="tok") as sink:
        assert await sink.ensure_database() is True
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/query")
    assert seen.query == {"q": 'CREATE DATABASE "co\\"ffee"'}
    assert seen.headers["Authorization"] == "Token tok"


async def test_ensure_database_is_best_effort(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(srv: ScriptedServer, seen: Seen) -> web.Response:
        return web.json_response({"results": [{"statement_id": 0, "error": "not admin"}]})

    server.script = refused
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        assert await sink.ensure_database() is False
    server.script = answer(401, error="authorization failed")
    async with open_influx_v1(url=server.url, database="coffee") as sink:
        assert await sink.ensure_database() is False
    async with open_influx_v1(url=f"http://127.0.0.1:{free_port()}", database="coffee") as sink:
        assert await sink.ensure_database() is False
    messages = [
        r.getMessage() for r in caplog.records if r.name == "coffee_telemetry.agent.sinks.influx"
    ]
    assert len(messages) == 3
    assert all(m.startswith("Could not create database 'coffee'") for m in messages)
    assert "not admin" in messages[0]


URL = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    "opener",
    [
        lambda: open_influx_v1(url=URL, database=""),
        lambda: open_influx_v1(url=URL, database="d", token="t", username="u", password="p"),
        lambda: open_influx_v1(url=URL, database="d", username="u"),
        lambda: open_influx_v1(url=URL, database="d", password="p"),
        lambda: open_influx_v1(url=URL, database="d", username="a:b", password="p"),
        lambda: open_influx_v1(url="http://u:p@127.0.0.1:1", database="d", token="t"),
    ],
    ids=[
        "no-database",
        "token-and-user",
        "user-only",
        "password-only",
        "colon-in-user",
        "url-credentials-and-token",
    ],
)
async def test_bad_arguments(opener: Callable[[], AbstractAsyncContextManager[object]]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the messages are for people
        async with opener():
            pass  # pragma: no cover


async def test_credentials_in_the_url_stay_out_of_messages() -> None:
    url = f"http://agent:s3cret@127.0.0.1:{free_port()}"
    async with open_influx_v1(url=url, database="coffee") as sink:
        with pytest.raises(SinkUnavailable) as caught:
            await sink.deliver(make_records(1))
    assert "s3cret" not in str(caught.value)
    assert "http://127.0.0.1:" in str(caught.value)


async def test_credentials_in_the_url_are_sent(server: ScriptedServer) -> None:
    url = f"http://agent:s3cret@127.0.0.1:{server.port}"
    async with open_influx_v1(url=url, database="coffee") as sink:
        assert await sink.deliver(make_records(1)) == []
    [seen] = server.requests
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"agent:s3cret").decode()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("Wed, 30 Nov 2026 10:00:30 GMT", 30.0),
        ("Wed, 30 Nov 2026 09:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds
