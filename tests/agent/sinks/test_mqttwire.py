"""The readings' MQTT data connection: wire format, broker bytes as hostile input, real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.sinks.mqttwire import (
    MAX_INCOMING,
    Packet,
    PacketReader,
    PublishConnection,
    WireError,
    connect_packet,
    publish_packet,
)
from tests.services.mosquitto import MosquittoServer
from tests.services.net import free_port


def test_connect_packet_is_the_3_1_1_layout() -> None:
    packet = connect_packet("ag", keepalive_s=30, username="ourofino", password="s3")
    body = (
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # level 4 = 3.1.1
        b"\xc2"  # user name, password, clean session
        b"\x00\x1e"  # keep-alive 30 s
        b"\x00\x02ag"
        b"\x00\x08ourofino"
        b"\x00\x02s3"
    )
    assert packet == b"\x10" + bytes((len(body),)) + body
    anonymous = connect_packet("ag", keepalive_s=0, username=None, password=None)
    assert anonymous[9] == 0x02  # clean session only


def test_publish_packet_qos1_and_long_lengths() -> None:
    assert publish_packet(b"a/b", b"xy", 0x0102) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    big = publish_packet(b"t", b"p" * 200, 7)
    # 2 + 1 + 2 + 200 = 205 = 0xCD: two length bytes, low 7 bits first.
    assert big[:3] == b"\x32\xcd\x01"
    assert len(big) == 3 + 205


def test_reader_takes_pubacks_split_anywhere() -> None:
    stream = b"".join(b"\x40\x02" + i.to_bytes(2, "big") for i in range(1, 51)) + b"\xd0\x00"
    for step in (1, 3, 7, len(stream)):
        reader = PacketReader()
        got: list[Packet] = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert [p.kind for p in got] == [0x40] * 50 + [0xD0]
        assert [int.from_bytes(p.body, "big") for p in got[:50]] == list(range(1, 51))
        assert reader.buffer == bytearray()


def test_reader_refuses_oversized_and_malformed_lengths() -> None:
    too_long = MAX_INCOMING + 1
    length = bytes(
        ((too_long >> (7 * i)) & 0x7F) | (0x80 if too_long >> (7 * (i + 1)) else 0)
        for i in range(3)
    )
    with pytest.raises(WireError, match="refused"):
        PacketReader().feed(b"\x30" + length + b"x")
    with pytest.raises(WireError, match="malformed"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_reader_fuzz_nothing_escapes_but_packets_or_a_refusal(chunks: list[bytes]) -> None:
    reader = PacketReader()
    try:
        for chunk in chunks:
            for packet in reader.feed(chunk):
                assert len(packet.body) <= MAX_INCOMING
        # What is left is never a whole packet, and never grows past one packet's size.
        assert len(reader.buffer) <= MAX_INCOMING + 5
    except WireError:
        pass


async def subscriber(port: int, topic: str, n: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="wire-test-sub") as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((str(message.topic), message.payload))
            if len(got) == n:
                return got
    return got


ready = asyncio.Event()


async def test_a_batch_reaches_a_subscriber_and_resolves_on_its_pubacks(
    mosquitto: MosquittoServer,
) -> None:
    ready.clear()
    listening = asyncio.create_task(subscriber(mosquitto.port, "wire/+/reading", 300))
    await asyncio.wait_for(ready.wait(), 10)
    conn = await PublishConnection.open(
        "127.0.0.1", mosquitto.port, client_id="wire-test/data", keepalive_s=30
    )
    try:
        messages = [(f"wire/d{i % 3}/reading", f'{{"seq":{i}}}'.encode()) for i in range(300)]
        first = conn.publish_batch(messages[:100])
        second = conn.publish_batch(messages[100:])
        assert conn.in_flight > 0
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert conn.in_flight == 0
        got = await asyncio.wait_for(listening, 10)
    finally:
        conn.close()
    assert sorted(got) == sorted(messages)
    with pytest.raises(WireError):
        conn.publish_batch(messages[:1])


async def test_refused_login_is_a_clear_error(tmp_path: Path) -> None:
    server = MosquittoServer(tmp_path / "b", extra_conf="allow_anonymous false")
    server.start()
    try:
        with pytest.raises(WireError, match=r"not authorized|bad user name"):
            await PublishConnection.open(
                "127.0.0.1", server.port, client_id="x/data", keepalive_s=30, username="nobody"
            )
    finally:
        server.stop()


async def test_unreachable_broker_is_a_clear_error() -> None:
    with pytest.raises(WireError, match="cannot connect"):
        await PublishConnection.open("127.0.0.1", free_port(), client_id="x", keepalive_s=30)


async def test_a_broker_that_dies_fails_the_batches_out_and_the_connection(
    mosquitto_factory: Callable[[], MosquittoServer],
) -> None:
    server = mosquitto_factory()
    conn = await PublishConnection.open(
        "127.0.0.1", server.port, client_id="dies/data", keepalive_s=30
    )
    await asyncio.wait_for(conn.publish_batch([("t/a", b"1")]), 5)
    assert server.proc is not None
    server.proc.kill()

    async def publish_until_refused() -> None:
        async with asyncio.timeout(5):
            while True:
                # Published into a dead socket: the loss shows on this batch or the next.
                await conn.publish_batch([("t/a", b"2")])
                await asyncio.sleep(0.05)

    with pytest.raises(WireError):
        await publish_until_refused()
    assert conn.lost.done()
    server.stop()


async def test_an_idle_connection_is_kept_alive_by_pings(mosquitto: MosquittoServer) -> None:
    conn = await PublishConnection.open(
        "127.0.0.1", mosquitto.port, client_id="idle/data", keepalive_s=1
    )
    try:
        await asyncio.sleep(3.5)  # the broker drops a silent client after 1.5 s
        assert not conn.lost.done()
        await asyncio.wait_for(conn.publish_batch([("idle/x", b"1")]), 5)
    finally:
        conn.close()


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_a_publish_the_broker_sends_anyway_is_acknowledged_and_dropped() -> None:
    conn = PublishConnection(keepalive_s=30)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"\x20\x02\x00\x00")  # CONNACK
    qos0 = b"\x30\x05\x00\x01tx" + b"y"
    qos1 = b"\x32\x07\x00\x01t\x12\x34xy"
    qos2 = b"\x34\x07\x00\x01t\x56\x78xy"
    pubrel = b"\x62\x02\x56\x78"
    conn.data_received(qos0 + qos1 + qos2 + pubrel)
    assert (
        bytes(transport.written) == b"\x40\x02\x12\x34" + b"\x50\x02\x56\x78" + b"\x70\x02\x56\x78"
    )
    assert not conn.lost.done()
    conn.data_received(b"\x36\x03\x00\x01t")  # QoS 3 does not exist
    assert conn.lost.done()
    assert transport.closed
