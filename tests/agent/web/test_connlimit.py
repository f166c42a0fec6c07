"""The web server's connection limits: caps, deadlines, keep-alive, stream caps.

A real aiohttp server on a free loopback port and raw client sockets: hostile
clients do not speak HTTP politely, so the tests do not either. Two client
addresses are 127.0.0.1 and 127.0.0.2 (Linux routes all of 127/8 to loopback;
the client socket is bound to the source address). Timeouts are a few tenths
of a second; the assertions only say that something happens, with ample slack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.web.api import DEPS, WebDeps
from coffee_telemetry.agent.web.auth import hash_password
from coffee_telemetry.agent.web.connlimit import (
    ConnectionGuard,
    ConnectionLimits,
    connection_cap,
    raise_nofile_limit,
)
from coffee_telemetry.agent.web.live import LiveHub
from coffee_telemetry.agent.web.server import GUARD, make_web_app, open_web
from tests.services.net import free_port

HASH = hash_password("cafe-bom-2026")
#: Long enough never to fire during a test.
LONG_S = 60.0
#: How long a test waits for something that should take a fraction of a second.
WAIT_S = 5.0


def make_config(tmp_path: Path, **api: object) -> Config:
    return parse_config(
        {
            "site": {"id": "s1", "name": "Cooperativa", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
            "api": {"users": [{"name": "maria", "password_hash": HASH}], **api},
        }
    )


@dataclass
class Client:
    """One raw client connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, bytes]:
        """Read one response with a ``Content-Length`` body: status and body."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(headers.get("Content-Length", "0")))
        return status, body

    async def closed_by_server(self, within_s: float = WAIT_S) -> bytes | None:
        """Everything the server sends until it closes; ``None`` if it does not close in time."""
        got = b""
        try:
            async with asyncio.timeout(within_s):
                while chunk := await self.reader.read(65536):
                    got += chunk
        except TimeoutError:
            return None
        except ConnectionError:
            pass  # reset, or a write of ours failed when the server closed
        return got

    def close(self) -> None:
        self.writer.close()


@dataclass
class Server:
    app: web.Application
    port: int
    clients: list[Client] = field(default_factory=list)

    @property
    def guard(self) -> ConnectionGuard:
        return self.app[GUARD]

    @property
    def hub(self) -> LiveHub:
        return self.app[DEPS].hub

    async def connect(self, source: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    async def get(self, path: str, source: str = "127.0.0.1") -> tuple[int, object]:
        """One request on a fresh connection, closed after it."""
        client = await self.connect(source)
        await client.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        status, body = await client.response()
        client.close()
        return status, json.loads(body) if body.startswith(b"{") else body

    async def stream(self, source: str = "127.0.0.1") -> tuple[Client, int, bytes]:
        """Open ``GET /api/events``: the client, the status, and the first bytes of the body."""
        client = await self.connect(source)
        await client.send(b"GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await client.reader.readuntil(b"\r\n\r\n")
        status = int(head.split()[1])
        if status == 200:
            return client, status, await client.reader.readuntil(b"\n\n")
        return client, status, head


@asynccontextmanager
async def serve(tmp_path: Path, **api: object) -> AsyncIterator[Server]:
    app = make_web_app(WebDeps(cfg=make_config(tmp_path, **api)), session_key=b"k" * 32)
    port = free_port()
    server = Server(app, port)
    async with open_web(app, host="127.0.0.1", port=port):
        try:
            yield server
        finally:
            for client in server.clients:
                client.close()


async def eventually(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


# -- caps ------------------------------------------------------------------------------


async def test_connections_over_the_total_cap_are_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, max_connections=4, header_timeout_s=LONG_S) as server:
        idle = [await server.connect(src) for src in ("127.0.0.1", "127.0.0.2") * 2]
        await eventually(lambda: server.guard.stats().open == 4, "four connections open")
        extra = await server.connect("127.0.0.3")
        assert await extra.closed_by_server() == b""
        assert server.guard.stats().refused_total_cap == 1
        assert server.guard.stats().open == 4
        for client in idle:
            client.close()
        await eventually(lambda: server.guard.stats().open == 0, "the idle ones gone")
        assert (await server.get("/api/health"))[0] == 200


async def test_connections_over_the_per_address_cap_are_refused(tmp_path: Path) -> None:
    async with serve(
        tmp_path, max_connections=8, max_connections_per_address=2, header_timeout_s=LONG_S
    ) as server:
        hostile = [await server.connect("127.0.0.2") for _ in range(2)]
        await eventually(lambda: server.guard.open_from("127.0.0.2") == 2, "two from .2")
        extra = await server.connect("127.0.0.2")
        assert await extra.closed_by_server() == b""
        assert server.guard.stats().refused_address_cap == 1
        # Another address is served meanwhile.
        assert (await server.get("/api/health", "127.0.0.1"))[0] == 200
        for client in hostile:
            client.close()
        await eventually(lambda: server.guard.open_from("127.0.0.2") == 0, "the .2 ones gone")
        assert (await server.get("/api/health", "127.0.0.2"))[0] == 200


async def test_refusals_are_logged_in_one_line_not_one_per_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="coffee_telemetry.agent.web.connlimit")
    async with serve(tmp_path, max_connections=1, header_timeout_s=LONG_S) as server:
        await server.connect()
        await eventually(lambda: server.guard.stats().open == 1, "one connection open")
        for _ in range(20):
            extra = await server.connect()
            assert await extra.closed_by_server() == b""
        assert server.guard.stats().refused_total_cap == 20
    lines = [r for r in caplog.records if r.name == "coffee_telemetry.agent.web.connlimit"]
    assert len(lines) == 1
    assert "refused 1 connections" in lines[0].getMessage()


# -- deadlines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [b"GET /api/hea", b"GET /api/health HTTP/1.1\r\nHost: t\r\nAccept: */"],
    ids=["request-line", "headers"],
)
async def test_a_partial_request_head_is_closed_after_the_header_timeout(
    tmp_path: Path, partial: bytes
) -> None:
    async with serve(tmp_path, header_timeout_s=0.3, keepalive_s=LONG_S) as server:
        client = await server.connect()
        await client.send(partial)
        assert await client.closed_by_server() == b""
        assert server.guard.stats().timed_out_head == 1
        assert (await server.get("/api/health"))[0] == 200


async def test_a_head_sent_a_byte_at_a_time_is_not_given_more_time(tmp_path: Path) -> None:
    async with serve(tmp_path, header_timeout_s=0.3, keepalive_s=LONG_S) as server:
        client = await server.connect()
        request = b"GET /api/health HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: y\r\n" * 10
        with suppress(ConnectionError):
            for byte in request:
                await client.send(bytes([byte]))
                await asyncio.sleep(0.01)
        assert await client.closed_by_server() == b""
        assert server.guard.stats().timed_out_head == 1


async def test_the_next_request_head_on_a_kept_alive_connection_is_timed_too(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, header_timeout_s=0.3, keepalive_s=LONG_S) as server:
        client = await server.connect()
        await client.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.response())[0] == 200
        await client.send(b"GET /api/health HTTP/1.1\r\nHo")
        assert await client.closed_by_server() == b""
        assert server.guard.stats().timed_out_head == 1


async def test_a_partial_body_is_closed_after_the_body_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path, header_timeout_s=LONG_S, body_timeout_s=0.3) as server:
        client = await server.connect()
        await client.send(
            b"POST /api/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 60\r\n\r\n{"user": "maria", "pass'
        )
        # The handler may answer what it got (a login reads what is there), but the
        # connection is closed when the body is not whole in time.
        assert await client.closed_by_server() is not None
        stats = server.guard.stats()
        assert (stats.timed_out_body, stats.timed_out_head) == (1, 0)
        # A whole body is answered, and the connection is not closed for its body later.
        client = await server.connect()
        body = b'{"user": "maria", "password": "wrong"}'
        await client.send(
            b"POST /api/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert (await client.response())[0] == 401
        await asyncio.sleep(0.5)
        assert server.guard.stats().timed_out_body == 1


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_s(tmp_path: Path) -> None:
    async with serve(tmp_path, header_timeout_s=LONG_S, keepalive_s=0.3) as server:
        client = await server.connect()
        await client.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.response())[0] == 200
        assert await client.closed_by_server() == b""
        await eventually(lambda: server.guard.stats().open == 0, "the connection released")
        assert server.guard.stats().timed_out_head == 0  # aiohttp's keep-alive timer did it


# -- live streams ----------------------------------------------------------------------


async def test_live_streams_are_capped_per_address_and_in_total(tmp_path: Path) -> None:
    async with serve(tmp_path, max_streams=3, max_streams_per_address=2) as server:
        first, status, body = await server.stream("127.0.0.1")
        assert status == 200
        assert body.endswith(b"retry: 2000\n\n")  # after the chunk size
        assert (await server.stream("127.0.0.1"))[1] == 200
        refused, status, _ = await server.stream("127.0.0.1")
        assert status == 503
        error = await refused.reader.read(4096)
        assert json.loads(error) == {
            "ok": False,
            "error": "too many live streams from 127.0.0.1: 2 already open"
            " (close another tab or window)",
        }
        assert (await server.stream("127.0.0.2"))[1] == 200
        status, doc = await server.get("/api/events", "127.0.0.3")
        assert status == 503
        assert doc == {"ok": False, "error": "too many live streams: 3 pages already connected"}
        assert server.hub.subscribers == 3
        assert server.hub.refused == 2
        # A page that goes away frees its stream (noticed within a second).
        first.close()
        await eventually(lambda: server.hub.subscribers == 2, "the closed stream released")
        assert (await server.stream("127.0.0.3"))[1] == 200


async def test_the_counters_are_served(tmp_path: Path) -> None:
    async with serve(tmp_path, max_connections=5, max_connections_per_address=9) as server:
        status, doc = await server.get("/api/web")
        assert status == 200
        assert isinstance(doc, dict)
        assert doc["connections"] == {
            "open": 1,
            "max_connections": 5,
            "max_per_address": 5,
            "accepted": 1,
            "refused_total_cap": 0,
            "refused_address_cap": 0,
            "timed_out_head": 0,
            "timed_out_body": 0,
        }
        assert doc["timeouts_s"] == {"header": 10.0, "body": 30.0, "keepalive": 75.0}
        assert doc["streams"] == {"open": 0, "max": 64, "max_per_address": 8, "refused": 0}


async def test_the_counters_need_a_login_when_reads_do(tmp_path: Path) -> None:
    async with serve(tmp_path, read_access="login") as server:
        assert (await server.get("/api/web"))[0] == 401


# -- fitting the open-file limit -------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "nofile", "cap"),
    [
        (256, 65536, 256),
        (256, 1024, 256),
        (256, 256, 48),
        (16, 256, 16),
        (256, 100, 4),
        (2, 100, 2),
    ],
)
def test_the_cap_fits_the_open_file_limit(configured: int, nofile: int, cap: int) -> None:
    assert connection_cap(configured, nofile) == cap


def test_fitting_lowers_the_per_address_cap_with_the_total() -> None:
    limits = ConnectionLimits(max_connections=256, max_per_address=32)
    assert limits.fit(4096) == limits
    assert limits.fit(256) == ConnectionLimits(max_connections=48, max_per_address=32)
    assert limits.fit(200) == ConnectionLimits(max_connections=20, max_per_address=20)


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        expected = 512 if hard == resource.RLIM_INFINITY else min(hard, 512)
        assert raise_nofile_limit(ceiling=512) == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
        # Never lowered.
        assert raise_nofile_limit(ceiling=300) == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_connections", 0),
        ("max_connections_per_address", 0),
        ("max_connections", 70000),
        ("header_timeout_s", 0),
        ("body_timeout_s", -1),
        ("keepalive_s", 0),
        ("max_streams", 0),
        ("max_streams_per_address", 5000),
    ],
)
def test_limits_out_of_range_are_config_errors(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"api.{key}"):
        make_config(tmp_path, **{key: value})


def test_limit_defaults(tmp_path: Path) -> None:
    api = make_config(tmp_path).api
    assert (api.max_connections, api.max_connections_per_address) == (256, 32)
    assert (api.header_timeout_s, api.body_timeout_s, api.keepalive_s) == (10.0, 30.0, 75.0)
    assert (api.max_streams, api.max_streams_per_address) == (64, 8)
