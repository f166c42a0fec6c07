"""Alert notifications survive a receiver outage and an agent restart.

A real outbox (SQLite in a temp dir), the real ``deliver_loop`` and
``WebhookSink``, and a local aiohttp receiver. While the receiver's port is
closed for 30 s, three notifications (among readings and a ``notify=False``
alert) are accepted; when it comes up, each arrives exactly once. After a
restart on the same outbox file nothing is sent again.

The port is held by a socket that is bound but not listening: connecting to
it is refused, as if nothing ran there, and no other process can take the
port before the receiver binds it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from coffee_telemetry.agent.alerts.formats import alert_point
from coffee_telemetry.agent.alerts.model import Alert, AlertState, Severity
from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.health import SinkHealth
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.sinks.webhook import open_webhook
from tests.integration.harness import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0
SINK = "webhook"
TOKEN = "Bearer very-secret-token"
HOOK_PATH = "/hooks/T0/secret-path"


class Receiver:
    """Counts notifications by id."""

    def __init__(self) -> None:
        self.ids: collections.Counter[str] = collections.Counter()
        self.order: list[str] = []
        self.authorized = True

    async def handle(self, request: web.Request) -> web.Response:
        if request.path != HOOK_PATH or request.headers.get("Authorization") != TOKEN:
            self.authorized = False
            return web.Response(status=401)
        doc = json.loads(await request.read())
        self.ids[doc["id"]] += 1
        self.order.append(doc["id"])
        return web.Response(status=200, text="ok")

    @asynccontextmanager
    async def serve(self, port: int) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
            yield
        finally:
            await runner.cleanup()


def alert(stamper: Stamper, subject: str, state: AlertState, *, notify: bool) -> Reading:
    at_ns = time.time_ns()
    event = Alert(
        rule="wet_lot",
        subject=subject,
        state=state,
        severity=Severity.WARNING,
        message=f"Lote {subject} úmido",
        data={"lot": subject, "mean_pct": 12.4},
        notify=notify,
        since_ns=at_ns,
        at_ns=at_ns,
    )
    point = alert_point(event, site="ourofino")
    return stamper.stamp(
        device="agent",
        measurement=point.measurement,
        fields=point.fields,
        tags=point.tags,
        kind="event",
        ts_ns=point.ts_ns,
    )


def moisture(stamper: Stamper, pct: float) -> Reading:
    return stamper.stamp(
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": pct},
        tags={"site": "ourofino", "lot": "L-1"},
    )


def id_of(reading: Reading) -> str:
    return f"ourofino/wet_lot/{reading.tags['subject']}/{reading.ts_ns}"


@asynccontextmanager
async def agent(path: Path, url: str, health: SinkHealth) -> AsyncIterator[Outbox]:
    """Outbox, sink and delivery loop, closed in the agent's order."""
    async with (
        open_outbox(path, sinks=[SINK]) as outbox,
        open_webhook(url=url, headers={"Authorization": TOKEN}, timeout_s=2.0, name=SINK) as sink,
        asyncio.TaskGroup() as tg,
    ):
        task = tg.create_task(
            deliver_loop(outbox, sink, health=health, backoff=Backoff(initial_s=0.5, maximum_s=2)),
            name=f"deliver[{SINK}]",
        )
        try:
            yield outbox
        finally:
            task.cancel()


async def accept_one_by_one(outbox: Outbox, readings: Sequence[Reading]) -> None:
    for reading in readings:
        await outbox.accept([reading])


async def test_notifications_survive_outage_and_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="coffee_telemetry.agent")
    path = tmp_path / "outbox.db"
    receiver = Receiver()
    stamper = Stamper()
    health = SinkHealth(sink=SINK)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed_port:
        closed_port.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port: int = closed_port.getsockname()[1]
        url = f"http://127.0.0.1:{port}{HOOK_PATH}"

        async with agent(path, url, health) as outbox:
            loop = asyncio.get_running_loop()
            down_since = loop.time()
            notified = [
                alert(stamper, "L-1", AlertState.FIRING, notify=True),
                alert(stamper, "L-2", AlertState.FIRING, notify=True),
                alert(stamper, "L-1", AlertState.RESOLVED, notify=True),
            ]
            quiet = alert(stamper, "L-3", AlertState.PENDING, notify=False)
            await accept_one_by_one(
                outbox,
                [
                    moisture(stamper, 11.0),
                    notified[0],
                    quiet,
                    moisture(stamper, 12.5),
                    notified[1],
                    moisture(stamper, 13.0),
                    notified[2],
                ],
            )
            last_id = outbox.last_id
            await eventually(lambda: health.failures >= 3, timeout_s=10, what="retries")
            await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - down_since)))
            # Nothing got through; the cursor is at most past the first reading.
            assert receiver.ids == {}
            assert outbox.cursor(SINK) <= 1
            assert health.last_error is not None
            assert "ClientConnectorError" in health.last_error

            closed_port.close()
            async with receiver.serve(port):
                await eventually(
                    lambda: outbox.cursor(SINK) == last_id, timeout_s=15, what="delivery"
                )
                expected = [id_of(reading) for reading in notified]
                assert receiver.order == expected  # in order, each exactly once
                assert receiver.ids == dict.fromkeys(expected, 1)
                assert receiver.authorized
                assert health.delivered == 7  # the readings and the quiet alert too
                assert health.rejected == 0

        # Restart on the same file, the receiver up: nothing is sent again. A
        # marker accepted after the restart arrives after anything the outbox
        # would resend, so once it is there, the count is final.
        async with receiver.serve(port), agent(path, url, SinkHealth(sink=SINK)) as outbox:
            assert outbox.cursor(SINK) == last_id
            marker = alert(stamper, "L-9", AlertState.FIRING, notify=True)
            await outbox.accept([marker])
            await eventually(lambda: receiver.ids[id_of(marker)] >= 1, timeout_s=10, what="marker")
            assert receiver.order == [*expected, id_of(marker)]
            assert receiver.ids == dict.fromkeys([*expected, id_of(marker)], 1)

    # Only the origin of the URL appears in logs; never the token or the path.
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("coffee_telemetry.agent")
    )
    assert f"127.0.0.1:{port}" in logged
    assert "very-secret-token" not in logged
    assert HOOK_PATH not in logged
