"""``alerts ack`` publishes only once the broker has confirmed its reply subscriptions."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coffee_telemetry.agent.cli.main import main
from tests.services.mosquitto import MosquittoServer

SITE = '[site]\nid = "ack"\n[mqtt]\nport = {port}\nprefix = "{prefix}"\n'


class SilentBroker:
    """Accepts a connection, answers CONNECT, never answers SUBSCRIBE; notes packet types."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_packet(self, conn: socket.socket) -> int | None:
        head = conn.recv(1)
        if not head:
            return None
        length, shift = 0, 0
        while True:
            byte = conn.recv(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        while length:
            length -= len(conn.recv(length))
        return head[0] >> 4

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while (kind := self._read_packet(conn)) is not None:
                self.packets.append(kind)
                if kind == 1:  # CONNECT -> CONNACK
                    conn.sendall(b"\x20\x02\x00\x00")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    try:
        yield broker
    finally:
        broker.close()


def test_no_suback_no_publish(
    tmp_path: Path, silent_broker: SilentBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(port=silent_broker.port, prefix="coffee"))
    argv = ["alerts", "ack", "-c", str(site), "wet_lot", "L-1", "--timeout", "1"]
    assert main(argv) == 1
    assert "did not confirm the subscription" in capsys.readouterr().err
    silent_broker.thread.join(timeout=5)
    assert 8 in silent_broker.packets  # SUBSCRIBE was sent...
    assert 3 not in silent_broker.packets  # ...and no PUBLISH without its SUBACK


@pytest.mark.integration
def test_an_instant_reply_is_never_missed(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    mqtt_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A stand-in agent that replies the moment the command arrives: the reply can only
    # be caught by a subscription the broker has already confirmed.
    ready = threading.Event()
    agent = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"agent-{mqtt_prefix}")

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe(f"{mqtt_prefix}/ack/cmd/ack/#", qos=1)

    def on_subscribe(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        ready.set()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/reply"):
            return
        by = json.loads(msg.payload)["by"]
        c.publish(f"{msg.topic}/reply", json.dumps({"ok": True, "by": by}), qos=1)

    agent.on_connect, agent.on_subscribe, agent.on_message = on_connect, on_subscribe, on_message
    agent.connect("127.0.0.1", mosquitto.port)
    agent.loop_start()
    try:
        assert ready.wait(10), "the stand-in agent could not subscribe"
        site = tmp_path / "site.toml"
        site.write_text(SITE.format(port=mosquitto.port, prefix=mqtt_prefix))
        for _ in range(5):
            argv = ["alerts", "ack", "-c", str(site), "wet_lot", "L-1", "--by", "ana"]
            assert main(argv) == 0, capsys.readouterr().err
            assert capsys.readouterr().out == "acknowledged wet_lot/L-1 as ana\n"
    finally:
        agent.loop_stop()
        agent.disconnect()
