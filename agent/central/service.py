"""Running one recorder: connect to the cluster and InfluxDB, ensure the streams, record.

Beside the recorder runs a ``StatusWatcher`` (``agent.central.status``): the sites'
status bucket into ``agent_status`` points, offline when heartbeats stop.

The recorder keeps its NATS connection with nats-py's own reconnection (every node of
the cluster is listed; a node that dies is replaced by another), retries the stream
set-up until the cluster answers (its nodes may be starting too), and logs its
counters every ``stats_every_s`` and when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.central.recorder import Recorder, RecorderStats
from coffee_telemetry.agent.central.status import StatusWatcher
from coffee_telemetry.agent.central.stream import StreamSettings, ensure_streams
from coffee_telemetry.agent.sinks.influx import open_influx_v1

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecorderOptions:
    """Everything ``coffee-telemetry recorder`` is told on its command line."""

    servers: Sequence[str]
    influx_url: str
    influx_database: str
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: Path | None = None
    nats_tls: ssl.SSLContext | None = None
    influx_username: str | None = None
    influx_password: str | None = None
    influx_token: str | None = None
    influx_ssl: ssl.SSLContext | None = None
    create_database: bool = False
    batch_size: int = 1000
    fetch_timeout_s: float = 1.0
    influx_timeout_s: float = 10.0
    stats_every_s: float = 60.0
    #: How often the sites' heartbeat deadlines are checked (``agent.central.status``).
    status_check_s: float = 1.0
    name: str = "recorder"
    streams: StreamSettings = field(default_factory=StreamSettings)


def _log_stats(stats: RecorderStats, prefix: str) -> None:
    dead = ", ".join(f"{k}={v}" for k, v in sorted(stats.dead.items())) or "none"
    log.info(
        "%s: %d batches, %d written, %d redelivered, %d write retries, dead letters: %s",
        prefix,
        stats.batches,
        stats.written,
        stats.redelivered,
        stats.write_retries,
        dead,
    )


async def run_recorder(options: RecorderOptions, *, stop: asyncio.Event) -> RecorderStats:
    """Record until ``stop`` is set; return the counters."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    nc = await nats.connect(
        servers=list(options.servers),
        name=options.name,
        user=options.nats_user,
        password=options.nats_password,
        user_credentials=str(options.nats_creds) if options.nats_creds else None,
        tls=options.nats_tls,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
    )
    try:
        js = nc.jetstream(timeout=10.0)
        backoff = Backoff(initial_s=0.5, maximum_s=10.0)
        while True:
            try:
                await ensure_streams(js, options.streams)
                break
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                delay = backoff.next_delay()
                log.warning("Streams not ready (%s); again in %.1f s", exc, delay)
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                    return RecorderStats()
                except TimeoutError:
                    continue
        async with open_influx_v1(
            url=options.influx_url,
            database=options.influx_database,
            username=options.influx_username,
            password=options.influx_password,
            token=options.influx_token,
            timeout_s=options.influx_timeout_s,
            batch_size=options.batch_size,
            name="influx",
            ssl_context=options.influx_ssl,
        ) as sink:
            if options.create_database:
                await sink.ensure_database()
            recorder = Recorder(
                js=js,
                sink=sink,
                settings=options.streams,
                batch_size=options.batch_size,
                fetch_timeout_s=options.fetch_timeout_s,
            )
            log.info(
                "Recording %s from %s into %s",
                options.streams.stream,
                ", ".join(options.servers),
                options.influx_url,
            )
            watcher = StatusWatcher(
                js=js,
                sink=sink,
                bucket=options.streams.status_bucket,
                check_s=options.status_check_s,
            )
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(recorder.run(), name="recorder")
                status = tg.create_task(watcher.run(), name="status")
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(options.stats_every_s):
                            await stop.wait()
                    if not stop.is_set():
                        _log_stats(recorder.stats, "Recorder")
                await recorder.stop()
                await watcher.stop()
                await task
                await status
            _log_stats(recorder.stats, "Recorder stopped")
            return recorder.stats
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
