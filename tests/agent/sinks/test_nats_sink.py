"""The JetStream sink against a real three-node cluster, and the outbox epoch it names.

What is checked: the cursor moves only on PubAck and every message carries
``site/device/epoch/seq``; a resend is stored once; a site cannot publish in another
site's name (the cluster's permissions refuse it and the batch is kept); a record too
large for the server is refused for good while the rest are delivered; with no server
the sink says unavailable; the store's epoch is stable across restarts, new for a new
or wiped store, and added to a store written before epochs existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.errors import ConfigError, SinkUnavailable
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading
from coffee_telemetry.agent.sinks.nats import NatsSink, message_id
from tests.services.nats_cluster import (
    RECORDER_PASSWORD,
    RECORDER_USER,
    NatsCluster,
    fresh_streams,
    running_cluster,
    site_password,
    stream_settings,
)
from tests.services.net import free_port

pytestmark = pytest.mark.integration

SETTINGS = stream_settings()


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def readings(stamper: Stamper, n: int, *, site: str, device: str = "umid-1") -> list[Reading]:
    return [
        stamper.stamp(
            device=device,
            measurement="moisture",
            fields={"moisture_pct": 10.0 + i / 10},
            tags={"site": site, "device": device, "station": "recepcao"},
        )
        for i in range(n)
    ]


def sink_for(cluster: NatsCluster, site: str, *, user: str | None = None) -> NatsSink:
    user = user or site
    return NatsSink(
        servers=cluster.urls,
        site=site,
        health=Health(),
        username=user,
        password=site_password(user),
        publish_timeout_s=3.0,
        reconnect_max_s=1.0,
    )


@contextlib.asynccontextmanager
async def connected(sink: NatsSink) -> AsyncIterator[NatsSink]:
    task = asyncio.create_task(sink.connection_loop())
    try:
        await asyncio.wait_for(sink._gate.up.wait(), 20)
        yield sink
    finally:
        await sink.close()
        await asyncio.wait_for(task, 10)


async def stream_messages(cluster: NatsCluster) -> list[tuple[str, str, bytes]]:
    """Every message in the readings stream: (subject, Nats-Msg-Id, payload)."""
    nc = await nats.connect(cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    try:
        js = nc.jetstream()
        info = await js.stream_info(SETTINGS.stream)
        if not info.state.messages:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(SETTINGS.stream, seq)
            headers = msg.headers or {}
            out.append(
                (str(msg.subject), str(headers.get("Nats-Msg-Id", "")), bytes(msg.data or b""))
            )
        return out
    finally:
        await nc.close()


@pytest.fixture
async def streams(nats_cluster: NatsCluster) -> NatsCluster:
    await fresh_streams(nats_cluster, SETTINGS)
    return nats_cluster


async def test_cursor_moves_on_puback_and_ids_name_site_device_epoch_seq(
    streams: NatsCluster, tmp_path: Path
) -> None:
    stamper = Stamper()
    async with open_outbox(tmp_path / "outbox.sqlite3", sinks=["nats"]) as outbox:
        sink = sink_for(streams, "site-a")
        sink.epoch = outbox.epoch
        await outbox.accept(readings(stamper, 30, site="site-a"))
        async with connected(sink):
            loop = asyncio.create_task(deliver_loop(outbox, sink))
            try:
                while outbox.cursor("nats") < outbox.last_id:
                    await outbox.acked()
            finally:
                loop.cancel()
        epoch = outbox.epoch
    got = await stream_messages(streams)
    assert [s for s, _, _ in got] == ["coffee.site-a.umid-1.reading"] * 30
    assert [i for _, i, _ in got] == [
        message_id("site-a", "umid-1", epoch, seq) for seq in range(1, 31)
    ]
    assert got[0][1] == f"site-a/umid-1/{epoch}/1"


async def test_a_resend_is_stored_once(streams: NatsCluster) -> None:
    stamper = Stamper()
    records = [
        Record(id=i + 1, payload=encode_reading(r), reading=r)
        for i, r in enumerate(readings(stamper, 20, site="site-a"))
    ]
    sink = sink_for(streams, "site-a")
    sink.epoch = "e1"
    async with connected(sink):
        assert await sink.deliver(records) == []
        assert await sink.deliver(records) == []  # a lost PubAck: the same batch again
    assert sink.duplicates == 20
    assert len(await stream_messages(streams)) == 20


async def test_a_site_cannot_publish_as_another(streams: NatsCluster) -> None:
    stamper = Stamper()
    # site-a's credentials, but records published under site-b's subjects.
    sink = sink_for(streams, "site-b", user="site-a")
    sink.epoch = "e1"
    records = [
        Record(id=1, payload=encode_reading(r), reading=r)
        for r in readings(stamper, 1, site="site-b")
    ]
    async with connected(sink):
        with pytest.raises(SinkUnavailable):
            await sink.deliver(records)
    assert sink.server_errors >= 1
    assert "ermissions" in str(sink._sink_health.last_error)
    assert await stream_messages(streams) == []


async def test_a_record_larger_than_the_server_allows_is_refused_for_good(
    streams: NatsCluster,
) -> None:
    stamper = Stamper()
    small, big = readings(stamper, 2, site="site-a")
    huge = Reading(
        ts_ns=big.ts_ns,
        seq=big.seq,
        device=big.device,
        measurement=big.measurement,
        fields=big.fields,
        tags=big.tags,
        audit="x" * (1024 * 1024 + 10),
    )
    records = [
        Record(id=1, payload=encode_reading(small), reading=small),
        Record(id=2, payload=encode_reading(huge), reading=huge),
    ]
    sink = sink_for(streams, "site-a")
    sink.epoch = "e1"
    async with connected(sink):
        rejections = await sink.deliver(records)
    assert [r.record_id for r in rejections] == [2]
    assert "largest message" in rejections[0].reason
    assert len(await stream_messages(streams)) == 1


async def test_without_a_server_the_sink_is_unavailable_and_keeps_trying() -> None:
    health = Health()
    sink = NatsSink(
        servers=[f"nats://127.0.0.1:{free_port()}"],
        site="site-a",
        health=health,
        publish_timeout_s=0.3,
        reconnect_max_s=0.2,
        epoch="e1",
    )
    task = asyncio.create_task(sink.connection_loop())
    try:
        stamper = Stamper()
        r = readings(stamper, 1, site="site-a")[0]
        with pytest.raises(SinkUnavailable, match="not connected"):
            await sink.deliver([Record(id=1, payload=encode_reading(r), reading=r)])
        while sink._backoff.attempts < 3:
            await asyncio.sleep(0.05)
        assert health.sinks["nats"].connected is False
        assert "no NATS server answered" in str(health.sinks["nats"].last_error)
    finally:
        await sink.close()
        await asyncio.wait_for(task, 5)


def test_sites_that_lost_the_centre_together_come_back_spread_out() -> None:
    sinks = [
        NatsSink(servers=["nats://h:1"], site=f"s{i}", health=Health(), reconnect_max_s=30.0)
        for i in range(50)
    ]
    delays = [[s._backoff.next_delay() for _ in range(10)] for s in sinks]
    assert all(0 < d <= 30.0 for row in delays for d in row)
    assert all(row[-1] >= 15.0 for row in delays)  # capped, jittered by at most half
    assert len({round(row[6], 3) for row in delays}) > 40  # not in lock-step


# -- the outbox epoch ------------------------------------------------------------------


async def _epoch(path: Path) -> str:
    outbox: Outbox
    async with open_outbox(path, sinks=["nats"]) as outbox:
        return outbox.epoch


async def test_the_epoch_is_kept_across_restarts_and_new_for_a_new_store(tmp_path: Path) -> None:
    first = await _epoch(tmp_path / "a.sqlite3")
    assert int(first, 16) > 0
    assert await _epoch(tmp_path / "a.sqlite3") == first
    assert await _epoch(tmp_path / "b.sqlite3") != first
    for name in ("a.sqlite3", "a.sqlite3-wal", "a.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)  # the SD card is replaced
    assert await _epoch(tmp_path / "a.sqlite3") != first


async def test_a_store_from_before_epochs_gets_one_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    stamper = Stamper()
    async with open_outbox(path, sinks=["nats"]) as outbox:
        await outbox.accept(readings(stamper, 3, site="site-a"))
    with sqlite3.connect(path) as conn:  # what an older version left behind
        conn.execute("DELETE FROM meta WHERE key = 'epoch'")
        conn.execute("PRAGMA user_version = 2")  # the schema version before epochs
    conn.close()
    async with open_outbox(path, sinks=["nats"]) as outbox:
        assert outbox.epoch
        assert outbox.backlog("nats") == 3
        epoch = outbox.epoch
    assert await _epoch(path) == epoch


# -- [sinks.nats] ------------------------------------------------------------------------


def test_config_reads_the_password_file_and_checks_urls(tmp_path: Path) -> None:
    secret = tmp_path / "nats.pw"
    secret.write_text("s3cret\n")
    cfg = parse_config(
        {
            "site": {"id": "site-a"},
            "sinks": {
                "nats": {
                    "servers": ["nats://10.0.0.1:4222", "tls://n2.example:4222"],
                    "username": "site-a",
                    "password_file": str(secret),
                }
            },
        }
    )
    assert cfg.sinks.nats is not None
    assert cfg.nats_password is not None
    assert cfg.nats_password.get_secret_value() == "s3cret"
    with pytest.raises(ConfigError, match=r"sinks\.nats\.servers: 'http://x' is not a nats://"):
        parse_config({"site": {"id": "a"}, "sinks": {"nats": {"servers": ["http://x"]}}})
    with pytest.raises(ConfigError, match=r"sinks\.nats\.password_file: cannot read"):
        parse_config(
            {
                "site": {"id": "a"},
                "sinks": {
                    "nats": {"servers": ["nats://h:1"], "password_file": str(tmp_path / "no")}
                },
            }
        )
