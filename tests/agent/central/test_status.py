"""The sites' status through the cluster: the board's rules, and sink → bucket → watcher → InfluxDB.

Without a cluster: a status document is decoded or refused (a Hypothesis fuzz: nothing
escapes but ``BadStatus``); the board writes a point per document at the time the
cluster stored it, declares a silent site offline once, at its deadline, and two
boards fed the same documents write the same points (two recorders, one point).

With a real three-node cluster and influxd: the agent's ``NatsSink`` puts its
heartbeats in the bucket, a ``StatusWatcher`` writes them as ``agent_status``; a sink
that closes says ``offline`` (shutdown), one that vanishes without a word is
declared offline at its deadline; a site cannot put another site's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator

import nats
import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.central.status import (
    MAX_STATUS_BYTES,
    TIMEOUT_BEATS,
    BadStatus,
    StatusBoard,
    StatusWatcher,
    decode_status,
)
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sinks.influx import open_influx_v1
from coffee_telemetry.agent.sinks.nats import NatsSink, status_stream, status_subject
from tests.services.influxd import InfluxServer
from tests.services.nats_cluster import (
    RECORDER_PASSWORD,
    RECORDER_USER,
    NatsCluster,
    fresh_streams,
    running_cluster,
    site_password,
    stream_settings,
)

SETTINGS = stream_settings()
S = 1_000_000_000


def doc(state: str = "online", beat: float = 15.0, online: int = 2, total: int = 3) -> bytes:
    return json.dumps(
        {"state": state, "heartbeat_s": beat, "devices_online": online, "devices_total": total}
    ).encode()


# -- decoding ------------------------------------------------------------------------------


def test_the_sinks_own_document_decodes() -> None:
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x", station="a")
    health.add_device("umid-2", driver="moisture.ticket", port="/dev/y", station="a")
    health.devices["umid-1"].state = DeviceState.ONLINE
    sink = NatsSink(servers=["nats://127.0.0.1:1"], site="site-a", health=health, heartbeat_s=5)
    sink.epoch = "e1"
    got = decode_status(sink.status_document("online"))
    assert (got.state, got.heartbeat_s, got.devices_online, got.devices_total) == (
        "online",
        5.0,
        1,
        2,
    )
    assert decode_status(sink.status_document("offline")).state == "offline"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"state": "maybe", "heartbeat_s": 1}',
        b'{"state": "online"}',
        b'{"state": "online", "heartbeat_s": "1"}',
        b'{"state": "online", "heartbeat_s": true}',
        b'{"state": "online", "heartbeat_s": 1, "devices_online": -1}',
        b'{"state": "online", "heartbeat_s": 1, "devices_total": 1.5}',
        b'{"state": "online", "heartbeat_s": 1e999}',
        b"[" * 3000,
        b" " * (MAX_STATUS_BYTES + 1),
    ],
)
def test_what_is_not_a_status_is_refused(data: bytes) -> None:
    with pytest.raises(BadStatus):
        decode_status(data)


def test_heartbeat_periods_are_clamped() -> None:
    assert decode_status(doc(beat=0)).heartbeat_s == 0.5
    assert decode_status(doc(beat=10**9)).heartbeat_s == 300.0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=16,
)


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"state": st.sampled_from(["online", "offline", "x"]), "heartbeat_s": _JSON},
            optional={"devices_online": _JSON, "devices_total": _JSON},
        ).map(lambda v: json.dumps(v).encode()),
    ),
    site=st.text(max_size=40),
)
def test_fuzz_nothing_escapes_the_board_but_a_count(data: bytes, site: str) -> None:
    try:
        got = decode_status(data)
    except BadStatus:
        got = None
    board = StatusBoard()
    points = board.seen(site, data, 5 * S)
    if got is None:
        assert points == []
        assert board.ignored["bad"] == 1
        return
    assert 0.5 <= got.heartbeat_s <= 300.0
    (point,) = points
    assert point.fields["online"] in (0, 1)
    assert len(board.due(10**6 * S)) == (1 if got.state == "online" else 0)
    assert board.due(10**7 * S) == []


# -- the board -----------------------------------------------------------------------------


def fields(points: list[Reading]) -> list[tuple[int, str, str]]:
    return [(p.ts_ns, str(p.fields["state"]), str(p.fields["reason"])) for p in points]


def test_heartbeats_then_silence_make_one_offline_point_at_the_deadline() -> None:
    board = StatusBoard()
    assert fields(board.seen("a", doc(beat=10), 100 * S)) == [(100 * S, "online", "heartbeat")]
    assert board.due(129 * S) == []
    assert fields(board.seen("a", doc(beat=10), 110 * S)) == [(110 * S, "online", "heartbeat")]
    deadline = 110 * S + TIMEOUT_BEATS * 10 * S
    assert board.deadline_ns("a") == deadline
    assert board.due(deadline - 1) == []
    assert not board.any_due(deadline - 1)
    assert board.any_due(deadline)
    (offline,) = board.due(deadline)
    assert fields([offline]) == [(deadline, "offline", "timeout")]
    assert offline.fields["devices_online"] == 0
    assert offline.fields["devices_total"] == 3
    assert offline.tags == {"site": "a", "device": "agent"}
    assert board.due(deadline + 100 * S) == []  # once
    assert not board.any_due(deadline + 100 * S)
    # It speaks again: online, and a new deadline.
    assert fields(board.seen("a", doc(beat=10), 500 * S)) == [(500 * S, "online", "heartbeat")]
    assert len(board.due(531 * S)) == 1


def test_a_goodbye_is_offline_at_once_and_has_no_deadline() -> None:
    board = StatusBoard()
    board.seen("a", doc(), 1 * S)
    (bye,) = board.seen("a", doc("offline"), 2 * S)
    assert fields([bye]) == [(2 * S, "offline", "shutdown")]
    assert bye.fields["online"] == 0
    assert board.deadline_ns("a") is None
    assert board.due(10**6 * S) == []


def test_an_older_document_changes_nothing() -> None:
    board = StatusBoard()
    board.seen("a", doc(), 50 * S)
    assert board.seen("a", doc("offline"), 40 * S) == []
    assert board.ignored["stale"] == 1
    assert board.deadline_ns("a") == 50 * S + TIMEOUT_BEATS * 15 * S


def test_two_recorders_write_the_same_points() -> None:
    """Each recorder has a board; their points coincide, so InfluxDB keeps one of each."""
    feed = [("a", doc(), 1 * S), ("b", doc(beat=2), 2 * S), ("a", doc(), 16 * S)]
    one, two = StatusBoard(), StatusBoard()
    out_one = [p for site, d, t in feed for p in one.seen(site, d, t)] + one.due(100 * S)
    # The second starts later: it sees only each site's last document (the bucket).
    out_two = two.seen("b", doc(beat=2), 2 * S) + two.seen("a", doc(), 16 * S) + two.due(100 * S)
    assert {(p.tags["site"], p.ts_ns, p.fields["state"]) for p in out_two} <= {
        (p.tags["site"], p.ts_ns, p.fields["state"]) for p in out_one
    }
    assert [p.ts_ns for p in one.due(200 * S)] == [p.ts_ns for p in two.due(200 * S)] == []


# -- through a real cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def status_rows(influx: InfluxServer, db: str) -> list[dict[str, object]]:
    try:
        return influx.query(
            db,
            'SELECT "state", "reason", "online", "devices_online", "site" FROM "agent_status"',
        )
    except Exception:
        return []


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def watching(cluster: NatsCluster, influx: InfluxServer, db: str) -> AsyncIterator[None]:
    nc = await nats.connect(cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    try:
        async with open_influx_v1(url=influx.url, database=db, timeout_s=2.0) as sink:
            watcher = StatusWatcher(js=nc.jetstream(timeout=5.0), sink=sink, check_s=0.2)
            task = asyncio.create_task(watcher.run())
            try:
                yield
            finally:
                await watcher.stop()
                await asyncio.wait_for(task, 10)
    finally:
        await nc.close()


def site_sink(cluster: NatsCluster, site: str, health: Health | None = None) -> NatsSink:
    sink = NatsSink(
        servers=cluster.urls,
        site=site,
        health=health or Health(),
        username=site,
        password=site_password(site),
        heartbeat_s=0.5,
        publish_timeout_s=2.0,
        reconnect_max_s=1.0,
    )
    sink.epoch = "test"
    return sink


@pytest.mark.integration
async def test_heartbeats_goodbye_and_silence_reach_influxdb(
    nats_cluster: NatsCluster, influxd: InfluxServer, influx_db: str
) -> None:
    await fresh_streams(nats_cluster, SETTINGS)
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x", station="a")
    health.devices["umid-1"].state = DeviceState.ONLINE
    polite, silent = site_sink(nats_cluster, "site-a", health), site_sink(nats_cluster, "site-b")
    async with watching(nats_cluster, influxd, influx_db):
        tasks = {s: asyncio.create_task(s.connection_loop()) for s in (polite, silent)}

        def states(site: str) -> list[tuple[str, str]]:
            rows = [r for r in status_rows(influxd, influx_db) if r["site"] == site]
            return [(str(r["state"]), str(r["reason"])) for r in rows]

        def beating(site: str) -> Callable[[], bool]:
            return lambda: states(site).count(("online", "heartbeat")) >= 3

        for site in ("site-a", "site-b"):
            await eventually(beating(site), f"{site}'s heartbeats")
        online_a = [r for r in status_rows(influxd, influx_db) if r["site"] == "site-a"]
        assert {int(str(r["devices_online"])) for r in online_a} == {1}
        # site-a shuts down cleanly: offline at once, no timeout later.
        await polite.close()
        await tasks[polite]
        await eventually(lambda: states("site-a")[-1] == ("offline", "shutdown"), "goodbye")
        # site-b vanishes without a word (its connection dropped, nothing said).
        tasks[silent].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[silent]
        gone = time.monotonic()
        await eventually(lambda: states("site-b")[-1] == ("offline", "timeout"), "the deadline")
        assert time.monotonic() - gone <= TIMEOUT_BEATS * 0.5 + 3.0
        await asyncio.sleep(1.0)
        assert states("site-a")[-1] == ("offline", "shutdown")
        assert states("site-b").count(("offline", "timeout")) == 1
    assert polite.status_puts >= 4
    assert polite.status_failures == 0


@pytest.mark.integration
async def test_a_site_cannot_put_another_sites_status(nats_cluster: NatsCluster) -> None:
    await fresh_streams(nats_cluster, SETTINGS)
    nc = await nats.connect(
        nats_cluster.urls,
        user="site-a",
        password=site_password("site-a"),
        inbox_prefix="_INBOX_site-a",
    )
    try:
        js = nc.jetstream(timeout=2.0)
        await js.publish(
            status_subject("COFFEE_STATUS", "site-a"), doc(), stream="KV_COFFEE_STATUS"
        )
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await js.publish(
                status_subject("COFFEE_STATUS", "site-b"), doc(), stream="KV_COFFEE_STATUS"
            )
    finally:
        await nc.close()
    nc = await nats.connect(nats_cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    try:
        js = nc.jetstream(timeout=5.0)
        info = await js.stream_info(status_stream("COFFEE_STATUS"))
        assert info.state.messages == 1  # site-a's own; site-b's forgery was never stored
        msg = await js.get_last_msg(status_stream("COFFEE_STATUS"), "$KV.COFFEE_STATUS.site-a")
        assert msg.data == doc()
    finally:
        await nc.close()
