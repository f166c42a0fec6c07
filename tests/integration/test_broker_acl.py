"""The broker's users and topic ACL against a real Mosquitto.

Each test starts a private broker from ``broker_config/mosquitto.conf`` with the
project's ``coffee-telemetry.acl``, a password file made by ``mosquitto_passwd``
in the test's temp dir, and anonymous clients refused. The ACL names the topic
prefix ``coffee``, so the tests use it too (each broker is private).

How "denied" is observed: MQTT 3.1.1 has no way to refuse a PUBLISH. Mosquitto
drops it and still sends the PUBACK, so a denial shows only as non-delivery. A
publisher waits for its PUBACK, and only then does a permitted client publish a
*fence* message to the same subscriber. Mosquitto routes one packet at a time
and delivers to a client in order, so by the time the fence arrives anything the
denied publish could have produced has arrived before it: the test waits for
the fence, not for a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.commands import CommandBoundary
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.outbox.sink import Record
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "broker_config" / "coffee-telemetry.acl"
ROLES = ("agent", "dashboard", "viewer")
#: paho's reason code for MQTT 3.1.1 CONNACK 5, "not authorized".
NOT_AUTHORIZED = 135
#: ... and for CONNACK 4, "bad user name or password".
BAD_CREDENTIALS = 134


def mosquitto_passwd_binary() -> str:
    """Path of mosquitto_passwd, or fail the test with what to install."""
    path = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
    )
    if path is None:
        pytest.fail(
            "mosquitto_passwd not found: it ships with Debian package 'mosquitto'"
            " (apt-get install mosquitto), or run `make test`, which installs it"
        )
    return path


def write_password_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Create ``path`` with ``mosquitto_passwd -b``, one run per user."""
    binary = mosquitto_passwd_binary()
    for i, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if i == 0 else []
        result = subprocess.run(
            [binary, *create, "-b", str(path), user, password],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert result.returncode == 0, f"mosquitto_passwd failed for {user!r}: {result.stderr}"


@dataclass(frozen=True, slots=True)
class Broker:
    """A running broker and the password of each user."""

    port: int
    passwords: Mapping[str, str]


@contextmanager
def acl_broker(workdir: Path, *, acl: Path, users: Sequence[str]) -> Iterator[Broker]:
    """A private Mosquitto that only lets ``users`` in, each limited by ``acl``.

    MosquittoServer's generated config says ``allow_anonymous true`` before
    ``extra_conf``; Mosquitto keeps the last value of the option, so the line
    here wins (``test_refused_connections`` would catch it if it stopped).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    passwords = {user: secrets.token_urlsafe(12) for user in users}
    password_file = workdir / "passwd"
    write_password_file(password_file, passwords)
    server = MosquittoServer(
        workdir,
        extra_conf="\n".join(
            [
                "allow_anonymous false",
                f"password_file {password_file}",
                f"acl_file {acl}",
            ]
        ),
    )
    server.start()
    try:
        yield Broker(port=server.port, passwords=passwords)
    finally:
        server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The project's ACL with its three roles."""
    with acl_broker(tmp_path / "broker", acl=ACL, users=ROLES) as running:
        yield running


@asynccontextmanager
async def connect(broker: Broker, user: str) -> AsyncIterator[aiomqtt.Client]:
    """A client logged in as ``user`` (MQTT 3.1.1, like the agent)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"{user}-{uuid.uuid4().hex[:8]}",
        username=user,
        password=broker.passwords[user],
    ) as client:
        yield client


def payload_bytes(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes | bytearray), message.payload
    return bytes(message.payload)


async def receive_until(
    client: aiomqtt.Client, fence: str, *, timeout_s: float = 5.0
) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of each message up to and including one on ``fence``."""
    got: list[tuple[str, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                got.append((message.topic.value, payload_bytes(message)))
                if message.topic.value == fence:
                    return got
    except TimeoutError:
        pass
    raise AssertionError(f"fence {fence!r} not received in {timeout_s} s; got {got}")


def topics(messages: Sequence[tuple[str, bytes]]) -> list[str]:
    return [topic for topic, _ in messages]


@pytest.mark.parametrize(
    ("username", "password", "codes"),
    [
        pytest.param(None, None, {NOT_AUTHORIZED}, id="anonymous"),
        # Mosquitto 2.0 answers a wrong password with "not authorized" as well.
        pytest.param("viewer", "wrong", {NOT_AUTHORIZED, BAD_CREDENTIALS}, id="bad-password"),
        pytest.param("nobody", "x", {NOT_AUTHORIZED, BAD_CREDENTIALS}, id="unknown-user"),
    ],
)
async def test_refused_connections(
    broker: Broker, username: str | None, password: str | None, codes: set[int]
) -> None:
    client = aiomqtt.Client("127.0.0.1", broker.port, username=username, password=password)
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client:
            pass
    rc = refused.value.rc
    assert (rc.value if isinstance(rc, ReasonCode) else rc) in codes, str(refused.value)


async def test_viewer_reads_readings_but_its_commands_are_dropped(broker: Broker) -> None:
    cmd = "coffee/s1/cmd/lot/recepcao"
    reading = "coffee/s1/umid-1/reading"
    async with (
        connect(broker, "agent") as agent,
        connect(broker, "viewer") as viewer,
        connect(broker, "dashboard") as dashboard,
    ):
        await agent.subscribe("coffee/s1/cmd/#", qos=1)
        await viewer.subscribe("coffee/#", qos=1)
        await agent.publish(reading, b'{"moisture_pct": 11.5}', qos=1)
        assert await receive_until(viewer, reading) == [(reading, b'{"moisture_pct": 11.5}')]

        await viewer.publish(cmd, b'{"lot": "L-from-viewer"}', qos=1)
        await viewer.publish("coffee/s1/cmd/ack/wet_lot/L-0042", b"{}", qos=1)
        await viewer.publish(reading, b"forged", qos=1)
        await dashboard.publish(cmd, b'{"lot": "L-from-dashboard"}', qos=1)  # the fence

        assert await receive_until(agent, cmd) == [(cmd, b'{"lot": "L-from-dashboard"}')]
        assert await receive_until(viewer, cmd) == [(cmd, b'{"lot": "L-from-dashboard"}')]


async def test_dashboard_commands_reach_the_agent(broker: Broker) -> None:
    commands = [
        ("coffee/s1/cmd/lot/recepcao", b'{"lot": "L-0042", "by": "maria"}'),
        ("coffee/s1/cmd/ack/wet_lot/L-0042", b'{"by": "maria"}'),
        ("coffee/s1/cmd/ack/huller_fault/descascador-1/jam", b'{"by": "maria"}'),
        ("coffee/s1/cmd/service/descascador-1/facas", b'{"note": "facas novas"}'),
    ]
    async with connect(broker, "agent") as agent, connect(broker, "dashboard") as dashboard:
        await agent.subscribe("coffee/s1/cmd/#", qos=1)
        for topic, payload in commands:
            await dashboard.publish(topic, payload, qos=1)
        assert await receive_until(agent, commands[-1][0]) == commands


async def test_dashboard_cannot_publish_readings(broker: Broker) -> None:
    reading = "coffee/s1/umid-1/reading"
    async with (
        connect(broker, "agent") as agent,
        connect(broker, "viewer") as viewer,
        connect(broker, "dashboard") as dashboard,
    ):
        await viewer.subscribe("coffee/#", qos=1)
        await dashboard.publish(reading, b"forged", qos=1)
        await dashboard.publish("coffee/s1/umid-1/status", b'{"state": "online"}', qos=1)
        await agent.publish(reading, b"real", qos=1)  # the fence
        assert await receive_until(viewer, reading) == [(reading, b"real")]


async def test_agent_publishes_readings_and_retained_status(broker: Broker) -> None:
    reading = "coffee/s1/umid-1/reading"
    retained = {
        "coffee/s1/agent/status": b"online",
        "coffee/s1/umid-1/status": b'{"state": "online"}',
        "coffee/s1/lots/recepcao": b'{"lot": "L-0042", "station": "recepcao"}',
        "coffee/s1/alerts/huller_fault/descascador-1/jam": b'{"state": "firing"}',
    }
    async with connect(broker, "agent") as agent:
        async with connect(broker, "viewer") as live:
            await live.subscribe("coffee/#", qos=1)
            await agent.publish(reading, b'{"moisture_pct": 11.5}', qos=1)
            for topic, payload in retained.items():
                await agent.publish(topic, payload, qos=1, retain=True)
            got = await receive_until(live, "coffee/s1/alerts/huller_fault/descascador-1/jam")
            assert got == [(reading, b'{"moisture_pct": 11.5}'), *retained.items()]
        # Someone who connects later still gets the state documents, flagged retained.
        async with connect(broker, "viewer") as late:
            await late.subscribe("coffee/#", qos=1)
            seen: dict[str, bytes] = {}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    async for message in late.messages:
                        assert message.retain, message.topic
                        seen[message.topic.value] = payload_bytes(message)
                        if len(seen) == len(retained):
                            break
            assert seen == retained


#: (user, topic, delivered?) for a publish by ``user``, seen by a viewer on coffee/#.
WRITES = [
    ("agent", "coffee/s1/umid-1/reading", True),
    ("agent", "coffee/s1/balanca-1/event", True),
    ("agent", "coffee/s1/umid-1/status", True),
    ("agent", "coffee/s1/agent/status", True),
    ("agent", "coffee/s1/agent/event", True),
    ("agent", "coffee/s1/lots/recepcao", True),
    ("agent", "coffee/s1/alerts/wet_lot/L-0042", True),
    ("agent", "coffee/s1/alerts/huller_fault/descascador-1/jam", True),
    ("agent", "coffee/s1/cmd/reply", True),
    ("agent", "coffee/s1/cmd/lot/recepcao/reply", True),
    ("agent", "coffee/s1/cmd/ack/huller_fault/descascador-1/jam/reply", True),
    ("agent", "coffee/s1/cmd/ack/wet_lot/2024/07/03/L-1/reply", True),  # six levels: the limit
    ("agent", "coffee/s1/cmd/ack/wet_lot/2024/07/03/a/L-1/reply", False),
    ("agent", "coffee/s1/cmd/lot/recepcao", False),
    ("agent", "coffee/s1/cmd/ack/wet_lot/L-0042", False),
    ("agent", "coffee/s1/cmd/service/descascador-1/facas", False),
    ("agent", "coffee/s1/umid-1/other", False),
    ("agent", "coffee/s1", False),
    ("dashboard", "coffee/s1/cmd/lot/recepcao", True),
    ("dashboard", "coffee/s1/cmd/ack/wet_lot/L-0042", True),
    ("dashboard", "coffee/s1/cmd/service/descascador-1/facas", True),
    ("dashboard", "coffee/s1/cmd/lot/recepcao/reply", False),
    ("dashboard", "coffee/s1/cmd/reply", False),
    ("dashboard", "coffee/s1/cmd/other", False),
    ("dashboard", "coffee/s1/umid-1/reading", False),
    ("dashboard", "coffee/s1/agent/status", False),
    ("dashboard", "coffee/s1/lots/recepcao", False),
    ("dashboard", "coffee/s1/alerts/wet_lot/L-0042", False),
    ("viewer", "coffee/s1/umid-1/reading", False),
    ("viewer", "coffee/s1/agent/status", False),
    ("viewer", "coffee/s1/lots/recepcao", False),
    ("viewer", "coffee/s1/alerts/wet_lot/L-0042", False),
    ("viewer", "coffee/s1/cmd/lot/recepcao", False),
    ("viewer", "coffee/s1/cmd/ack/wet_lot/L-0042", False),
    ("viewer", "coffee/s1/cmd/service/descascador-1/facas", False),
    ("viewer", "coffee/s1/cmd/lot/recepcao/reply", False),
]


async def test_write_grants(broker: Broker) -> None:
    fence = "coffee/s1/fence/reading"
    async with (
        connect(broker, "agent") as agent,
        connect(broker, "dashboard") as dashboard,
        connect(broker, "viewer") as viewer,
        connect(broker, "viewer") as witness,
    ):
        await witness.subscribe("coffee/#", qos=1)
        clients = {"agent": agent, "dashboard": dashboard, "viewer": viewer}
        for user, topic, _ in WRITES:
            await clients[user].publish(topic, f"{user} {topic}".encode(), qos=1)
        await agent.publish(fence, b"fence", qos=1)
        got = await receive_until(witness, fence)
    expected = [f"{user} {topic}".encode() for user, topic, delivered in WRITES if delivered]
    assert [payload for _, payload in got] == [*expected, b"fence"]


async def test_read_grants(broker: Broker) -> None:
    cmd = "coffee/s1/cmd/lot/recepcao"
    async with (
        connect(broker, "agent") as agent,
        connect(broker, "dashboard") as dashboard,
        connect(broker, "viewer") as viewer,
    ):
        for client in (agent, dashboard, viewer):
            # Accepted even where nothing may be read: the broker filters per message.
            await client.subscribe("coffee/#", qos=1)
        await agent.publish("coffee/s1/umid-1/reading", b"r", qos=1)
        await agent.publish("coffee/s1/lots/recepcao", b"l", qos=1)
        await agent.publish("coffee/s1/alerts/wet_lot/L-0042", b"a", qos=1)
        await agent.publish("coffee/s1/cmd/lot/armazem/reply", b"ok", qos=1)
        await dashboard.publish(cmd, b"c", qos=1)  # the fence
        everything = [
            "coffee/s1/umid-1/reading",
            "coffee/s1/lots/recepcao",
            "coffee/s1/alerts/wet_lot/L-0042",
            "coffee/s1/cmd/lot/armazem/reply",
            cmd,
        ]
        # The agent reads its commands (and its own replies, which it ignores), nothing else.
        assert topics(await receive_until(agent, cmd)) == ["coffee/s1/cmd/lot/armazem/reply", cmd]
        assert topics(await receive_until(dashboard, cmd)) == everything
        assert topics(await receive_until(viewer, cmd)) == everything


async def test_agent_sink_works_within_its_grants(broker: Broker, tmp_path: Path) -> None:
    """The real sink and lot service: every topic they build is one the ACL grants."""
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    sink = MqttSink(
        host="127.0.0.1",
        port=broker.port,
        prefix="coffee",
        site="s1",
        health=health,
        client_id="agent-s1",
        username="agent",
        password=broker.passwords["agent"],
        publish_timeout_s=3.0,
        backoff=Backoff(initial_s=0.1, maximum_s=0.5),
    )
    stamper = Stamper()
    events: list[Reading] = []

    async def accept(readings: Sequence[Reading]) -> None:
        events.extend(readings)

    store = LotStore.open(tmp_path / "lots.sqlite3")
    lots = LotService(
        store=store,
        stations={"recepcao"},
        site="s1",
        stamper=stamper,
        accept=accept,
        publish_state=sink.set_state,
    )
    sink.set_command_handler(CommandBoundary({"lot": lots.handle_command}))
    reading = stamper.stamp(
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": 11.5},
        tags={"site": "s1", "device": "umid-1"},
    )
    seen: dict[str, bytes] = {}

    async def until_seen(viewer: aiomqtt.Client, *wanted: str) -> None:
        try:
            async with asyncio.timeout(5):
                async for message in viewer.messages:
                    seen[message.topic.value] = payload_bytes(message)
                    if seen.keys() >= set(wanted):
                        return
        except TimeoutError:
            pass
        raise AssertionError(f"not delivered: {sorted(set(wanted) - seen.keys())}")

    async with connect(broker, "viewer") as viewer, connect(broker, "dashboard") as dashboard:
        await viewer.subscribe("coffee/#", qos=1)
        task = asyncio.create_task(sink.connection_loop(), name="mqtt-sink")
        try:
            async with asyncio.timeout(10):
                while not health.sinks["mqtt"].connected:  # subscribed to its commands
                    await asyncio.sleep(0.02)
            health.set_device_state("umid-1", DeviceState.ONLINE)
            record = Record(id=1, payload=encode_reading(reading), reading=reading)
            assert await sink.deliver([record]) == []
            await until_seen(
                viewer,
                "coffee/s1/agent/status",
                "coffee/s1/umid-1/status",
                "coffee/s1/umid-1/reading",
            )

            await dashboard.publish("coffee/s1/cmd/lot/recepcao", b'{"lot": "L-0042"}', qos=1)
            await until_seen(viewer, "coffee/s1/cmd/lot/recepcao/reply", "coffee/s1/lots/recepcao")
            # The lot event travels like a reading: outbox, then this sink.
            [event] = events
            record = Record(id=2, payload=encode_reading(event), reading=event)
            assert await sink.deliver([record]) == []
            # Not a command this agent handles: refused on the same topic + /reply.
            await dashboard.publish("coffee/s1/cmd/service/descascador-1/facas", b"{}", qos=1)
            await until_seen(
                viewer, "coffee/s1/agent/event", "coffee/s1/cmd/service/descascador-1/facas/reply"
            )
        finally:
            await sink.close()
            async with asyncio.timeout(10):
                await task
            store.close()
    assert seen["coffee/s1/agent/status"] == b"online"
    assert json.loads(seen["coffee/s1/cmd/lot/recepcao/reply"])["ok"] is True
    assert json.loads(seen["coffee/s1/lots/recepcao"])["lot"] == "L-0042"
    assert json.loads(seen["coffee/s1/cmd/service/descascador-1/facas/reply"])["ok"] is False


def per_site_variant(acl: str) -> str:
    """The ACL with the ``user agent`` block removed and the ``#pattern`` lines enabled."""
    lines = acl.splitlines()
    start = lines.index("user agent")
    end = lines.index("", start)
    kept = [
        line.removeprefix("#") if line.startswith("#pattern ") else line
        for line in lines[:start] + lines[end:]
    ]
    assert "pattern read coffee/%u/cmd/#" in kept, "per-site variant block not found"
    return "\n".join(kept) + "\n"


async def test_per_site_variant_pins_each_agent_to_its_site(tmp_path: Path) -> None:
    acl = tmp_path / "per-site.acl"
    acl.write_text(per_site_variant(ACL.read_text()))
    users = ("s1", "s2", "dashboard", "viewer")
    with acl_broker(tmp_path / "broker", acl=acl, users=users) as broker:
        async with (
            connect(broker, "s1") as s1,
            connect(broker, "dashboard") as dashboard,
            connect(broker, "viewer") as viewer,
        ):
            await s1.subscribe("coffee/+/cmd/#", qos=1)
            await viewer.subscribe("coffee/#", qos=1)
            await s1.publish("coffee/s2/umid-1/reading", b"not my site", qos=1)
            await s1.publish("coffee/s2/cmd/lot/recepcao/reply", b"not my site", qos=1)
            await s1.publish("coffee/s1/cmd/lot/recepcao", b"not a command I may send", qos=1)
            await s1.publish("coffee/s1/umid-1/reading", b"mine", qos=1)
            await dashboard.publish("coffee/s2/cmd/lot/recepcao", b"for s2", qos=1)
            await dashboard.publish("coffee/s1/cmd/lot/recepcao", b"for s1", qos=1)  # fence
            assert await receive_until(viewer, "coffee/s1/cmd/lot/recepcao") == [
                ("coffee/s1/umid-1/reading", b"mine"),
                ("coffee/s2/cmd/lot/recepcao", b"for s2"),
                ("coffee/s1/cmd/lot/recepcao", b"for s1"),
            ]
            assert await receive_until(s1, "coffee/s1/cmd/lot/recepcao") == [
                ("coffee/s1/cmd/lot/recepcao", b"for s1")
            ]
