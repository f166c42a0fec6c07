"""The recorder: its checks on each message, and a recorder between a real cluster and influxd.

What is checked: every kind of bad message is refused with its reason and nothing
else escapes (a Hypothesis fuzz over subject and bytes); good readings land in
InfluxDB as the agent would write them and are acknowledged (the work queue is
empty after); poison messages (malformed JSON, a huge reading, a reading naming
another site) go to the dead-letter stream with the reason, are counted, and do not
hold back the good ones; while InfluxDB is down nothing is acknowledged and
everything is written once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from coffee_telemetry.agent.central.recorder import (
    MAX_MESSAGE_BYTES,
    REASON_HEADER,
    SUBJECT_HEADER,
    Recorder,
    Refused,
    check_message,
)
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading
from coffee_telemetry.agent.sinks.influx import open_influx_v1
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

SETTINGS = stream_settings(ack_wait_s=2.0)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def reading(stamper: Stamper, *, site: str = "site-a", device: str = "umid-1") -> Reading:
    return stamper.stamp(
        device=device,
        measurement="moisture",
        fields={"moisture_pct": 11.5},
        tags={"site": site, "device": device, "station": "recepcao"},
    )


# -- checks, without a cluster -------------------------------------------------------------


def test_a_good_reading_passes_with_its_line() -> None:
    r = reading(Stamper())
    got, line = check_message("coffee.site-a.umid-1.reading", encode_reading(r), prefix="coffee")
    assert got == r
    assert line.startswith("moisture,")
    assert "site=site-a" in line


@pytest.mark.parametrize(
    ("subject", "data", "kind"),
    [
        ("coffee.site-a.umid-1", b"{}", "subject"),
        ("other.site-a.umid-1.reading", b"{}", "subject"),
        ("coffee.site-a.umid-1.status", b"{}", "subject"),
        ("coffee.site-a.umid-1.reading", b"{not json", "not-a-reading"),
        ("coffee.site-a.umid-1.reading", b'{"seq": 1}', "not-a-reading"),
        ("coffee.site-a.umid-1.reading", b"[" * 100_000, "too-large"),
        ("coffee.site-a.umid-1.reading", b"[" * 70_000 + b"]" * 50, "too-large"),
        ("coffee.site-a.umid-1.reading", b"[" * 30_000, "not-a-reading"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(subject: str, data: bytes, kind: str) -> None:
    with pytest.raises(Refused) as refused:
        check_message(subject, data, prefix="coffee")
    assert refused.value.kind == kind
    assert len(str(refused.value)) <= 200


def test_a_reading_naming_another_site_is_a_forgery() -> None:
    forged = encode_reading(reading(Stamper(), site="site-b"))
    with pytest.raises(Refused, match="site") as refused:
        check_message("coffee.site-a.umid-1.reading", forged, prefix="coffee")
    assert refused.value.kind == "site"


def test_a_reading_of_another_device_or_kind_is_refused() -> None:
    data = encode_reading(reading(Stamper(), device="umid-2"))
    with pytest.raises(Refused) as refused:
        check_message("coffee.site-a.umid-1.reading", data, prefix="coffee")
    assert refused.value.kind == "device"
    with pytest.raises(Refused):
        check_message("coffee.site-a.umid-2.event", data, prefix="coffee")


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(min_size=0, max_size=60),
    data=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda doc: json.dumps(doc).encode(),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=6)
                ),
                max_leaves=20,
            ),
        ),
    ),
)
def test_fuzz_nothing_escapes_but_a_refusal(subject: str, data: bytes) -> None:
    kinds: set[str] = set()
    for subj in (subject, f"coffee.site-a.umid-1.{subject or 'reading'}"):
        try:
            got, line = check_message(subj, data, prefix="coffee")
        except Refused as refused:
            kinds.add(refused.kind)
            continue
        assert got.tags["site"] == "site-a"
        assert isinstance(line, str)
    assert kinds <= {"subject", "too-large", "not-a-reading", "site", "device", "line"}


def test_the_size_limit_is_below_the_stream_limit() -> None:
    assert SETTINGS.max_msg_size > MAX_MESSAGE_BYTES


# -- a recorder between a real cluster and influxd -------------------------------------------


@contextlib.asynccontextmanager
async def client(cluster: NatsCluster, user: str, password: str) -> AsyncIterator[JetStreamContext]:
    inbox = "_INBOX" if user == RECORDER_USER else f"_INBOX_{user}"  # as the cluster allows
    nc = await nats.connect(cluster.urls, user=user, password=password, inbox_prefix=inbox)
    try:
        yield nc.jetstream(timeout=5.0)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running_recorder(
    cluster: NatsCluster, influx: InfluxServer, database: str
) -> AsyncIterator[Recorder]:
    async with (
        client(cluster, RECORDER_USER, RECORDER_PASSWORD) as js,
        open_influx_v1(url=influx.url, database=database, timeout_s=2.0) as sink,
    ):
        recorder = Recorder(js=js, sink=sink, settings=SETTINGS, batch_size=50)
        task = asyncio.create_task(recorder.run())
        try:
            yield recorder
        finally:
            await recorder.stop()
            await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def pending(cluster: NatsCluster) -> int:
    async with client(cluster, RECORDER_USER, RECORDER_PASSWORD) as js:
        return int((await js.stream_info(SETTINGS.stream)).state.messages)


async def dead_letters(cluster: NatsCluster) -> list[tuple[str, str, int]]:
    """(reason, original subject, size) of every dead letter."""
    async with client(cluster, RECORDER_USER, RECORDER_PASSWORD) as js:
        info = await js.stream_info(SETTINGS.dead_stream)
        if not info.state.messages:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(SETTINGS.dead_stream, seq)
            headers = msg.headers or {}
            out.append((headers[REASON_HEADER], headers[SUBJECT_HEADER], len(msg.data or b"")))
        return out


def seqs_in(influx: InfluxServer, database: str) -> list[tuple[str, str, int]]:
    rows = influx.query(database, 'SELECT "seq", "site", "device" FROM "moisture"')
    return sorted((str(r["site"]), str(r["device"]), int(str(r["seq"]))) for r in rows)


@pytest.mark.integration
async def test_good_readings_are_written_and_poison_goes_to_dead_letters(
    nats_cluster: NatsCluster, influxd: InfluxServer, influx_db: str
) -> None:
    await fresh_streams(nats_cluster, SETTINGS)
    stamper = Stamper()
    good = [reading(stamper) for _ in range(40)]
    huge = Reading(
        ts_ns=good[0].ts_ns,
        seq=999,
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": 1.0},
        tags={"site": "site-a", "device": "umid-1"},
        audit="x" * 200_000,
    )
    forged = reading(Stamper(), site="site-b")
    async with client(nats_cluster, "site-a", site_password("site-a")) as js:
        subject = "coffee.site-a.umid-1.reading"
        for r in good[:20]:
            await js.publish(subject, encode_reading(r))
        await js.publish(subject, b'{"device": "umid-1", "seq": ')  # malformed JSON
        await js.publish(subject, encode_reading(huge))
        await js.publish(subject, encode_reading(forged))
        for r in good[20:]:
            await js.publish(subject, encode_reading(r))
    async with running_recorder(nats_cluster, influxd, influx_db) as recorder:
        await eventually(lambda: recorder.stats.written == 40, "40 readings written")
        await eventually(lambda: recorder.stats.dead_total == 3, "3 dead letters")
    assert seqs_in(influxd, influx_db) == [("site-a", "umid-1", s) for s in range(1, 41)]
    assert recorder.stats.dead == {"not-a-reading": 1, "too-large": 1, "site": 1}
    dead = await dead_letters(nats_cluster)
    reasons = sorted(reason.split(":")[0] for reason, _, _ in dead)
    assert reasons == ["not-a-reading", "site", "too-large"]
    assert all(subj == "coffee.site-a.umid-1.reading" for _, subj, _ in dead)
    assert max(size for _, _, size in dead) > 200_000  # kept whole, for inspection
    assert await pending(nats_cluster) == 0  # every message acknowledged


@pytest.mark.integration
@pytest.mark.slow
async def test_nothing_is_acknowledged_while_influxdb_is_down(
    nats_cluster: NatsCluster, influxd_factory: Callable[[], InfluxServer]
) -> None:
    await fresh_streams(nats_cluster, SETTINGS)
    influx = influxd_factory()
    influx.create_database("central")
    influx.stop()
    stamper = Stamper()
    async with running_recorder(nats_cluster, influx, "central") as recorder:
        async with client(nats_cluster, "site-a", site_password("site-a")) as js:
            for _ in range(30):
                await js.publish("coffee.site-a.umid-1.reading", encode_reading(reading(stamper)))
        await eventually(lambda: recorder.stats.write_retries >= 3, "write retries")
        # Longer than ack_wait: in_progress kept the messages with this recorder.
        await asyncio.sleep(SETTINGS.ack_wait_s * 1.5)
        assert recorder.stats.written == 0
        assert await pending(nats_cluster) == 30
        influx.start()
        await eventually(lambda: recorder.stats.written == 30, "30 written after the outage")
    assert seqs_in(influx, "central") == [("site-a", "umid-1", s) for s in range(1, 31)]
    assert recorder.stats.redelivered == 0
    assert await pending(nats_cluster) == 0
