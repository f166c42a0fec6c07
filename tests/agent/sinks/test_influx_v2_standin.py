"""InfluxV2Sink against a stand-in for InfluxDB 2.x's ``/api/v2/write``.

No InfluxDB 2.x server can be installed here (Debian ships only influxd 1.6,
which answers 404 on ``/api/v2/write``), so this local HTTP server is the one
allowed stand-in: it checks what influxdb-client actually sends (path, org,
bucket, ``precision=ns``, ``Authorization: Token ...``, the body lines) and
answers scripted statuses to show that the client's exceptions map to the
same outcomes as the v1 sink. The server semantics here are 2.x's:
a rejected batch writes nothing (no partial writes).
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.sinks.influx import open_influx_v2
from tests.agent.sinks.test_influx import (
    ScriptedServer,
    Seen,
    answer,
    hang,
    lines_of,
    make_records,
    poisoned,
    server,
    too_large_over,
)
from tests.services.net import free_port

__all__ = ["server"]  # the fixture, shared with the v1 tests


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"code": "invalid", "message": message}, status=status, headers=headers
    )


async def test_what_influxdb_client_sends(server: ScriptedServer) -> None:
    records = make_records(5)
    async with open_influx_v2(
        url=server.url,
        org="cooperativa",
        bucket="coffee",
        token="s3cret-token",
        name="influx-cloud",
        batch_size=1000,
        flush_interval_s=3.0,
    ) as sink:
        as_sink: Sink = sink
        assert (as_sink.name, as_sink.batch_size, as_sink.flush_interval_s) == (
            "influx-cloud",
            1000,
            3.0,
        )
        assert await as_sink.deliver(records) == []

    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/api/v2/write")
    assert seen.query == {"org": "cooperativa", "bucket": "coffee", "precision": "ns"}
    assert seen.headers["Authorization"] == "Token s3cret-token"
    assert seen.headers["Content-Type"].startswith("text/plain")
    assert seen.lines == lines_of(records)


async def test_retry_after_from_api_exception(server: ScriptedServer) -> None:
    async def script(srv: ScriptedServer, seen: Seen) -> web.Response:
        return v2_error(429, "too many requests", {"Retry-After": "30"})

    server.script = script
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="t") as sink:
        with pytest.raises(SinkUnavailable, match="HTTP 429, server unavailable") as caught:
            await sink.deliver(make_records(3))
    assert caught.value.retry_after_s == 30.0


@pytest.mark.parametrize(
    ("status", "match"),
    [
        (503, "server unavailable: engine down"),
        (500, "server unavailable: engine down"),
        (401, "credentials refused"),
        (403, "credentials refused"),
        (404, "not found"),
    ],
)
async def test_unavailable_statuses(
    server: ScriptedServer, status: int, match: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(srv: ScriptedServer, seen: Seen) -> web.Response:
        return v2_error(status, "engine down")

    server.script = script
    caplog.set_level(logging.DEBUG)
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="s3cret-token") as sink:
        with pytest.raises(SinkUnavailable, match=match) as caught:
            await sink.deliver(make_records(4))
    assert caught.value.retry_after_s is None
    assert len(server.requests) == 1
    assert "s3cret-token" not in str(caught.value)
    assert "s3cret-token" not in caplog.text


async def test_poisoned_line_is_isolated(server: ScriptedServer) -> None:
    server.script = poisoned("lot=poison", partial=False)
    records = make_records(50, poison=20)
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="t") as sink:
        [rejection] = await sink.deliver(records)
    assert (rejection.record_id, rejection.status) == (20, 400)
    assert "unable to parse" in rejection.reason
    good = [line for line in lines_of(records) if "poison" not in line]
    assert sorted(server.written) == sorted(good)


CONFLICT = "failure writing points to database: partial write: field type conflict"


async def test_v2_error_message_becomes_the_reason(server: ScriptedServer) -> None:
    async def script(srv: ScriptedServer, seen: Seen) -> web.Response:
        return v2_error(422, CONFLICT)

    server.script = script
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="t") as sink:
        [rejection] = await sink.deliver(make_records(1))
    assert rejection.reason == CONFLICT
    assert rejection.status == 422


async def test_413_splits(server: ScriptedServer) -> None:
    server.script = too_large_over(7)
    records = make_records(40)
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="t") as sink:
        assert await sink.deliver(records) == []
    assert sorted(server.written) == sorted(lines_of(records))


async def test_timeout(server: ScriptedServer) -> None:
    server.script = hang
    async with open_influx_v2(
        url=server.url, org="o", bucket="b", token="t", timeout_s=0.2
    ) as sink:
        with pytest.raises(SinkUnavailable, match="no answer within"):
            await sink.deliver(make_records(2))


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with open_influx_v2(url=url, org="o", bucket="b", token="t") as sink:
        with pytest.raises(SinkUnavailable, match="Client"):
            await sink.deliver(make_records(2))


async def test_plain_4xx_without_body(server: ScriptedServer) -> None:
    server.script = answer(400)
    async with open_influx_v2(url=server.url, org="o", bucket="b", token="t") as sink:
        [rejection] = await sink.deliver(make_records(1))
    assert (rejection.status, rejection.reason) == (400, "HTTP 400")
