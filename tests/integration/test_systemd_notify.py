"""The real agent process under systemd's notification protocol.

The test plays systemd: it binds the ``NOTIFY_SOCKET`` datagram socket, starts
``coffee-telemetry run`` with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set, and
reads what arrives, checking each datagram's sender (``SO_PASSCRED``) is the
agent's own process, as systemd does for ``NotifyAccess=main``: ``READY=1`` once
the outbox, the MQTT sink and the device loops are up, ``WATCHDOG=1`` with a
``STATUS=`` line at half the watchdog interval, and ``STOPPING=1`` on SIGTERM.
The stalled-loop case is in ``tests/agent/test_sdnotify.py`` (in process, with a
blocking callable on the loop): the agent carries no switch to stall itself.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import AgentProcess, DeviceSpec, write_site_config
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

UCRED = struct.Struct("3i")  # pid, uid, gid


class SystemdSide:
    """The notify socket, with the sender's pid of each datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.got: list[tuple[int, dict[str, str]]] = []

    async def next(self, timeout_s: float, context: AgentProcess) -> dict[str, str]:
        """The next datagram's assignments, checking it came from the agent."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
                        break
                    except BlockingIOError:
                        fut = loop.create_future()
                        loop.add_reader(self.sock, fut.set_result, None)
                        try:
                            await fut
                        finally:
                            loop.remove_reader(self.sock)
        except TimeoutError:
            raise AssertionError(
                f"no notification in {timeout_s:.0f} s; agent log:\n{context.log_tail()}"
            ) from None
        pids = [
            UCRED.unpack(d[: UCRED.size])[0]
            for level, kind, d in anc
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        ]
        assert context.proc is not None
        assert pids == [context.proc.pid], "a datagram from another process than the agent"
        fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.got.append((pids[0], fields))
        return fields

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd_side(tmp_path: Path) -> Iterator[SystemdSide]:
    side = SystemdSide(tmp_path / "notify")
    yield side
    side.close()


async def test_ready_watchdog_status_and_stopping(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    systemd_side: SystemdSide,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "dev").mkdir()
    ports = {name: PtyPort(link=tmp_path / "dev" / name) for name in ("umid-1", "umid-2")}
    for port in ports.values():
        port.open()
    data_dir = tmp_path / "data"
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=data_dir,
        devices=[
            DeviceSpec(name, "moisture.ticket", str(tmp_path / "dev" / name), "recepcao")
            for name in ports
        ],
        mqtt_port=mosquitto.port,
        prefix=f"t{uuid.uuid4().hex[:8]}",
        influx_url=None,
    )
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd_side.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1s: a ping every 0.5 s
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    try:
        ready = await systemd_side.next(60, agent)
        # The first word: the pipeline is up (outbox on disk, the MQTT sink counted).
        assert ready["READY"] == "1", ready
        assert (data_dir / "outbox.sqlite3").exists()
        assert ready["STATUS"].startswith("dispositivos ")
        assert ready["STATUS"].endswith("/2 online; fila: mqtt=0"), ready
        assert "Agent for site ourofino: 2 devices" in agent.log_tail(100_000)

        # Pings keep coming, with the summary; the devices come online.
        pings, status = 0, ""
        while pings < 4 or "2/2 online" not in status:
            got = await systemd_side.next(30, agent)
            assert set(got) == {"WATCHDOG", "STATUS"}, got
            assert got["WATCHDOG"] == "1"
            status = got["STATUS"]
            pings += 1

        assert agent.stop() == 0
        rest = systemd_side.sock
        tail: list[dict[str, str]] = []
        while True:
            try:
                data = rest.recv(4096)
            except BlockingIOError:
                break
            tail.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        stopping = [t for t in tail if "STOPPING" in t]
        assert stopping, f"no STOPPING=1 after SIGTERM (got {tail}); log:\n{agent.log_tail()}"
        assert stopping[0]["STOPPING"] == "1"
        assert stopping[0]["STATUS"].startswith("dispositivos ")
    finally:
        if agent.alive:
            agent.stop()
        for port in ports.values():
            port.close()
