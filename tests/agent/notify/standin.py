"""A local HTTP stand-in for the internet services (Telegram, ntfy, WhatsApp).

There is no internet where the tests run: this server takes the place of
api.telegram.org, ntfy.sh and graph.facebook.com on a loopback port. It keeps every
request exactly as the client sent it (method, path, headers, JSON body) and answers
from a script of ``(status, json, headers)``, then ``200 {"ok": true}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.services.net import free_port


@dataclass
class Seen:
    """One request as received."""

    method: str
    path: str
    headers: Mapping[str, str]
    doc: object


@dataclass
class StandIn:
    """See the module docstring."""

    port: int = field(default_factory=free_port)
    script: list[tuple[int, object, dict[str, str]]] = field(default_factory=list)
    by_path: dict[str, list[tuple[int, object, dict[str, str]]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            doc: object = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode("utf-8", "replace")
        self.seen.append(Seen(request.method, request.path, dict(request.headers), doc))
        self.changed.set()
        queue = next(
            (q for suffix, q in self.by_path.items() if request.path.endswith(suffix)), None
        )
        if queue is None:
            queue = self.script
        status, body, headers = queue.pop(0) if queue else (200, {"ok": True}, {})
        return web.json_response(body, status=status, headers=headers)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Seen]:
        async with asyncio.timeout(timeout_s):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.seen


@asynccontextmanager
async def open_standin(port: int | None = None) -> AsyncIterator[StandIn]:
    """Serve a stand-in on ``port`` (a free one by default) until the block ends."""
    standin = StandIn() if port is None else StandIn(port=port)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", standin._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", standin.port).start()
    try:
        yield standin
    finally:
        await runner.cleanup()
