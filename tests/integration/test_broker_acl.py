"""The broker's users and topic ACL against a real Mosquitto, with two sites.

Each test starts a private broker from ``broker_config/mosquitto.conf`` with the
project's ``coffee-telemetry.acl`` as shipped, a password file made by
``mosquitto_passwd`` in the test's temp dir, and anonymous clients refused. The ACL
names the topic prefix ``coffee`` and two example sites, ``ourofino`` and
``santana``, so the tests use them too (each broker is private). Accounts: one agent
per site, named after the site; a dashboard per site; the cooperative's desk with
both sites; the office's read-only account.

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
from tests.fakes import stage
from tests.services.mosquitto import MosquittoServer
from tests.services.net import free_port, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "broker_config" / "coffee-telemetry.acl"
#: The two sites of the shipped ACL, and every account it names.
S1, S2 = "ourofino", "santana"
ACCOUNTS = (S1, S2, "painel.ourofino", "painel.santana", "painel.cooperativa", "escritorio.leitura")
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
    """The shipped ACL with every account it names."""
    with acl_broker(tmp_path / "broker", acl=ACL, users=ACCOUNTS) as running:
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
        pytest.param(S1, "wrong", {NOT_AUTHORIZED, BAD_CREDENTIALS}, id="bad-password"),
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


def site_topics(site: str) -> dict[str, str]:
    """One topic of each kind under ``site``."""
    base = f"coffee/{site}"
    return {
        "reading": f"{base}/umid-1/reading",
        "event": f"{base}/balanca-1/event",
        "status": f"{base}/umid-1/status",
        "agent_status": f"{base}/agent/status",
        "lot": f"{base}/lots/recepcao",
        "alert": f"{base}/alerts/wet_lot/L-0042",
        "alert_deep": f"{base}/alerts/huller_fault/descascador-1/jam",
        "reply": f"{base}/cmd/reply",
        "lot_reply": f"{base}/cmd/lot/recepcao/reply",
        "ack_reply": f"{base}/cmd/ack/huller_fault/descascador-1/jam/reply",
        "deepest_reply": f"{base}/cmd/ack/wet_lot/2024/07/03/L-1/reply",  # six levels
        "too_deep_reply": f"{base}/cmd/ack/wet_lot/2024/07/03/a/L-1/reply",
        "cmd_lot": f"{base}/cmd/lot/recepcao",
        "cmd_ack": f"{base}/cmd/ack/wet_lot/L-0042",
        "cmd_service": f"{base}/cmd/service/descascador-1/facas",
        "cmd_other": f"{base}/cmd/other",
        "other": f"{base}/umid-1/other",
        "bare": base,
    }


AGENT_MAY = {"reading", "event", "status", "agent_status", "lot", "alert", "alert_deep"} | {
    "reply",
    "lot_reply",
    "ack_reply",
    "deepest_reply",
}
#: cmd/ack/# and cmd/service/# also cover replies below them (subjects have no fixed depth).
DASHBOARD_MAY = {"cmd_lot", "cmd_ack", "cmd_service", "ack_reply", "deepest_reply"} | {
    "too_deep_reply"
}


def write_grants() -> list[tuple[str, str, bool]]:
    """(user, topic, delivered?) for a publish by ``user``, seen by the office on coffee/#."""
    grants: list[tuple[str, str, bool]] = []
    mine = {S1: S1, S2: S2, "painel.ourofino": S1, "painel.santana": S2}
    for user in ACCOUNTS:
        for site in (S1, S2):
            for kind, topic in site_topics(site).items():
                if user in (S1, S2):
                    allowed = site == user and kind in AGENT_MAY
                elif user == "painel.cooperativa":
                    allowed = kind in DASHBOARD_MAY
                elif user in mine:
                    allowed = site == mine[user] and kind in DASHBOARD_MAY
                else:
                    allowed = False
                grants.append((user, topic, allowed))
        # An account that is not an agent gets nothing from the agent patterns.
        for kind in ("reading", "status", "lot", "cmd_lot"):
            topic = site_topics(user)[kind]
            grants.append((user, topic, user in (S1, S2) and kind != "cmd_lot"))
    return grants


WRITES = write_grants()


async def test_each_account_writes_only_what_it_may_on_two_sites(broker: Broker) -> None:
    fence = f"coffee/{S1}/fence/reading"
    async with (
        connect(broker, "escritorio.leitura") as witness,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = {
            user: await stack.enter_async_context(connect(broker, user)) for user in ACCOUNTS
        }
        await witness.subscribe("coffee/#", qos=1)
        for user, topic, _ in WRITES:
            await clients[user].publish(topic, f"{user} {topic}".encode(), qos=1)
        await clients[S1].publish(fence, b"fence", qos=1)
        got = await receive_until(witness, fence, timeout_s=10)
    expected = [f"{user} {topic}".encode() for user, topic, delivered in WRITES if delivered]
    assert [payload for _, payload in got] == [*expected, b"fence"]
    refused = [(u, t) for u, t, ok in WRITES if not ok]
    assert len(refused) > 100  # every forbidden publish above was tried, and dropped
    assert any(u == S1 and t.startswith(f"coffee/{S2}/") for u, t in refused)
    assert any(u == "painel.ourofino" and t == f"coffee/{S2}/cmd/lot/recepcao" for u, t in refused)


async def test_each_account_reads_only_its_sites(broker: Broker) -> None:
    readers = (S1, S2, "painel.ourofino", "painel.santana", "painel.cooperativa")
    fence = f"coffee/{S2}/cmd/lot/fence"
    async with (
        connect(broker, "painel.cooperativa") as commander,
        connect(broker, S1) as agent1,
        connect(broker, S2) as agent2,
        connect(broker, "escritorio.leitura") as office,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = {u: await stack.enter_async_context(connect(broker, u)) for u in readers}
        for client in (*clients.values(), office):
            # Accepted even where nothing may be read: the broker filters per message.
            await client.subscribe("coffee/#", qos=1)
        sent = []
        for agent, site in ((agent1, S1), (agent2, S2)):
            t = site_topics(site)
            for kind in ("reading", "lot", "alert", "lot_reply"):
                await agent.publish(t[kind], b"x", qos=1)
                sent.append(t[kind])
            await commander.publish(t["cmd_lot"], b"c", qos=1)
            sent.append(t["cmd_lot"])
        await commander.publish(fence, b"fence", qos=1)
        everything = [*sent, fence]

        def of(site: str) -> list[str]:
            return [t for t in everything if t.startswith(f"coffee/{site}/")]

        # An agent reads its own site's commands (and its replies, which it ignores).
        assert topics(await receive_until(clients[S2], fence)) == [
            t for t in of(S2) if "/cmd/" in t
        ]
        assert topics(await receive_until(clients["painel.santana"], fence)) == of(S2)
        assert topics(await receive_until(clients["painel.cooperativa"], fence)) == everything
        assert topics(await receive_until(office, fence)) == everything
        # S1's accounts see nothing of S2: a fence of their own site closes their view.
        fence1 = f"coffee/{S1}/cmd/lot/fence"
        await commander.publish(fence1, b"fence", qos=1)
        assert topics(await receive_until(clients[S1], fence1)) == [
            *(t for t in of(S1) if "/cmd/" in t),
            fence1,
        ]
        assert topics(await receive_until(clients["painel.ourofino"], fence1)) == [
            *of(S1),
            fence1,
        ]


async def test_dashboard_commands_reach_their_own_agent_only(broker: Broker) -> None:
    commands = [
        (f"coffee/{S1}/cmd/lot/recepcao", b'{"lot": "L-0042", "by": "maria"}'),
        (f"coffee/{S1}/cmd/ack/wet_lot/L-0042", b'{"by": "maria"}'),
        (f"coffee/{S1}/cmd/ack/huller_fault/descascador-1/jam", b'{"by": "maria"}'),
        (f"coffee/{S1}/cmd/service/descascador-1/facas", b'{"note": "facas novas"}'),
    ]
    async with (
        connect(broker, S1) as agent1,
        connect(broker, S2) as agent2,
        connect(broker, "painel.ourofino") as dashboard,
        connect(broker, "painel.santana") as other_dashboard,
    ):
        await agent1.subscribe(f"coffee/{S1}/cmd/#", qos=1)
        await agent2.subscribe("coffee/+/cmd/#", qos=1)
        for topic, payload in commands:
            await dashboard.publish(topic, payload, qos=1)
            await dashboard.publish(topic.replace(S1, S2), payload, qos=1)  # not its site
        await other_dashboard.publish(f"coffee/{S1}/cmd/lot/recepcao", b"not mine", qos=1)
        assert await receive_until(agent1, commands[-1][0]) == commands
        fence = f"coffee/{S2}/cmd/lot/fence"
        await other_dashboard.publish(fence, b"fence", qos=1)
        assert await receive_until(agent2, fence) == [(fence, b"fence")]


async def test_agent_publishes_readings_and_retained_status(broker: Broker) -> None:
    t = site_topics(S1)
    retained = {
        t["agent_status"]: b"online",
        t["status"]: b'{"state": "online"}',
        t["lot"]: b'{"lot": "L-0042", "station": "recepcao"}',
        t["alert_deep"]: b'{"state": "firing"}',
    }
    async with connect(broker, S1) as agent:
        async with connect(broker, "escritorio.leitura") as live:
            await live.subscribe("coffee/#", qos=1)
            await agent.publish(t["reading"], b'{"moisture_pct": 11.5}', qos=1)
            for topic, payload in retained.items():
                await agent.publish(topic, payload, qos=1, retain=True)
            got = await receive_until(live, t["alert_deep"])
            assert got == [(t["reading"], b'{"moisture_pct": 11.5}'), *retained.items()]
        # Someone who connects later still gets the state documents, flagged retained.
        async with connect(broker, "painel.ourofino") as late:
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


async def test_agent_sink_works_within_its_grants(broker: Broker, tmp_path: Path) -> None:
    """The real sink and lot service: every topic they build is one the ACL grants."""
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    sink = MqttSink(
        host="127.0.0.1",
        port=broker.port,
        prefix="coffee",
        site=S1,
        health=health,
        client_id=f"agent-{S1}",
        username=S1,
        password=broker.passwords[S1],
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
        site=S1,
        record=stage(accept, stamper).record,
        publish_state=sink.set_state,
    )
    sink.set_command_handler(CommandBoundary({"lot": lots.handle_command}))
    reading = stamper.stamp(
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": 11.5},
        tags={"site": S1, "device": "umid-1"},
    )
    seen: dict[str, bytes] = {}
    base = f"coffee/{S1}"

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

    async with (
        connect(broker, "escritorio.leitura") as viewer,
        connect(broker, "painel.ourofino") as dashboard,
    ):
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
                viewer, f"{base}/agent/status", f"{base}/umid-1/status", f"{base}/umid-1/reading"
            )

            await dashboard.publish(f"{base}/cmd/lot/recepcao", b'{"lot": "L-0042"}', qos=1)
            await until_seen(viewer, f"{base}/cmd/lot/recepcao/reply", f"{base}/lots/recepcao")
            # The lot event travels like a reading: outbox, then this sink.
            [event] = events
            record = Record(id=2, payload=encode_reading(event), reading=event)
            assert await sink.deliver([record]) == []
            # Not a command this agent handles: refused on the same topic + /reply.
            await dashboard.publish(f"{base}/cmd/service/descascador-1/facas", b"{}", qos=1)
            await until_seen(
                viewer, f"{base}/agent/event", f"{base}/cmd/service/descascador-1/facas/reply"
            )
        finally:
            await sink.close()
            async with asyncio.timeout(10):
                await task
            store.close()
    assert seen[f"{base}/agent/status"] == b"online"
    assert json.loads(seen[f"{base}/cmd/lot/recepcao/reply"])["ok"] is True
    assert json.loads(seen[f"{base}/lots/recepcao"])["lot"] == "L-0042"
    assert json.loads(seen[f"{base}/cmd/service/descascador-1/facas/reply"])["ok"] is False


# -- TLS: the listener, and `alerts ack` with the agent's own [mqtt.tls] ------------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, int, Path]]:
    """The shipped ACL, plus a TLS listener with a private CA (its file is returned)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    workdir = tmp_path / "broker"
    workdir.mkdir()
    passwords = {user: secrets.token_urlsafe(12) for user in ACCOUNTS}
    write_password_file(workdir / "passwd", passwords)
    tls_port = free_port()
    server = MosquittoServer(
        workdir,
        extra_conf="\n".join(
            [
                "allow_anonymous false",
                f"password_file {workdir / 'passwd'}",
                f"acl_file {ACL}",
                f"listener {tls_port} 127.0.0.1",
                f"cafile {ca_file}",
                f"certfile {cert_file}",
                f"keyfile {key_file}",
            ]
        ),
    )
    server.start()
    try:
        if not wait_for_port(tls_port, timeout_s=10):
            pytest.fail("mosquitto's TLS listener did not start")
        yield Broker(port=server.port, passwords=passwords), tls_port, ca_file
    finally:
        server.stop()


async def test_alerts_ack_uses_the_agents_tls_settings(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path
) -> None:
    from coffee_telemetry.agent.cli.main import main

    broker, tls_port, ca_file = tls_broker
    secret = tmp_path / "mqtt-password"
    secret.write_text(broker.passwords["painel.ourofino"])

    def site(tls: str) -> str:
        path = tmp_path / "site.toml"
        path.write_text(
            f'[site]\nid = "{S1}"\n[agent]\ndata_dir = "{tmp_path}"\n'
            f'[mqtt]\nport = {tls_port}\nusername = "painel.ourofino"\n'
            f'password_file = "{secret}"\n[mqtt.tls]\n{tls}\n'
        )
        return str(path)

    def ack(config: str) -> tuple[int, str]:
        import contextlib as ctx
        import io

        err = io.StringIO()
        with ctx.redirect_stderr(err), ctx.redirect_stdout(io.StringIO()):
            code = main(
                ["alerts", "ack", "-c", config, "wet_lot", "L-1", "--by", "ana", "--timeout", "5"]
            )
        return code, err.getvalue()

    async with connect(broker, S1) as agent:  # answers like the agent does
        await agent.subscribe(f"coffee/{S1}/cmd/ack/#", qos=1)

        async def answer() -> None:
            async for message in agent.messages:
                if message.topic.value.endswith("/reply"):
                    continue
                doc = json.loads(payload_bytes(message))
                reply = {"ok": True, "rule": "wet_lot", "subject": "L-1", "by": doc["by"]}
                await agent.publish(f"{message.topic.value}/reply", json.dumps(reply), qos=1)

        answering = asyncio.create_task(answer())
        try:
            code, err = await asyncio.to_thread(ack, site(f'ca_file = "{ca_file}"'))
            assert (code, err) == (0, "")
            code, err = await asyncio.to_thread(ack, site(""))  # the system's CAs only
            assert code == 1
            assert "cannot reach the MQTT broker" in err
            assert "CERTIFICATE_VERIFY_FAILED" in err
            code, err = await asyncio.to_thread(ack, site("insecure = true"))
            assert code == 0
            assert "[mqtt.tls] insecure = true" in err
        finally:
            answering.cancel()


async def test_agent_writes_its_own_sites_home_assistant_discovery_only(tmp_path: Path) -> None:
    # Home Assistant's account, as the README says to add it: reads discovery documents.
    reader = "homeassistant.casa"
    acl = tmp_path / "with-ha.acl"
    acl.write_text(
        ACL.read_text() + f"\nuser {reader}\ntopic deny coffee/{reader}/#\n"
        "topic read homeassistant/#\n"
    )
    mine = f"homeassistant/sensor/{S1}/{S1}_umid-1_moisture/config"
    others = f"homeassistant/sensor/{S2}/{S2}_umid-1_moisture/config"
    flat = f"homeassistant/sensor/{S1}_umid-1_moisture/config"  # no site level: not granted
    with acl_broker(tmp_path / "broker", acl=acl, users=(*ACCOUNTS, reader)) as broker:
        async with connect(broker, reader) as ha, connect(broker, S1) as agent:
            await ha.subscribe("homeassistant/#", qos=1)
            for topic in (others, flat, mine):
                await agent.publish(topic, f"{S1} {topic}".encode(), qos=1)
            async with connect(broker, "painel.ourofino") as dashboard:
                await dashboard.publish(mine, b"forged", qos=1)
                fence = f"homeassistant/binary_sensor/{S1}/{S1}_agent_status/config"
                await agent.publish(fence, b"fence", qos=1)
            got = await receive_until(ha, fence)
    assert got == [(mine, f"{S1} {mine}".encode()), (fence, b"fence")]
