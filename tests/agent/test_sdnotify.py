"""systemd's notification protocol (``agent.sdnotify``) against real datagram sockets.

Each test binds the ``AF_UNIX`` datagram socket systemd would (a path, or a name in
the abstract namespace) and reads what the agent sends. The stalled-loop tests block
the event loop with a callable run on it, the way a blocking call in the agent would,
and show the pings stop for as long as it blocks and resume after.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.app import run_agent
from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.sdnotify import SdNotify, status_line, watchdog_loop
from tests.fakes import FakePorts


class Receiver:
    """The systemd side: a bound datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.sock.bind(bind)

    def get(self, timeout_s: float = 10.0) -> dict[str, str]:
        """The next datagram as its assignments (fails after ``timeout_s``)."""
        self.sock.settimeout(timeout_s)
        data = self.sock.recv(4096)
        lines = data.decode().split("\n")
        assert all("=" in line for line in lines), data
        return dict(line.split("=", 1) for line in lines)

    def drain(self) -> list[dict[str, str]]:
        """Every datagram already queued."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                got.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        except BlockingIOError:
            return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(str(tmp_path / "notify"))
    yield r
    r.close()


def test_ready_status_stopping_reach_a_path_socket(receiver: Receiver) -> None:
    sd = SdNotify(receiver.address)
    assert sd.ready("dispositivos 0/2 online")
    assert receiver.get() == {"READY": "1", "STATUS": "dispositivos 0/2 online"}
    assert sd.status("uma\nlinha")
    assert receiver.get() == {"STATUS": "uma linha"}
    assert sd.stopping()
    assert receiver.get() == {"STOPPING": "1"}
    assert sd.reloading()
    got = receiver.get()
    assert got["RELOADING"] == "1"
    assert int(got["MONOTONIC_USEC"]) > 0
    assert (sd.sent, sd.failures) == (4, 0)
    sd.close()


def test_abstract_namespace_address() -> None:
    r = Receiver(f"@coffee-telemetry-test/{uuid.uuid4().hex}")
    try:
        sd = SdNotify(r.address, watchdog_usec=2_000_000)
        assert sd.watchdog("ok")
        assert r.get() == {"WATCHDOG": "1", "STATUS": "ok"}
        assert sd.watchdog_interval_s == 1.0
        sd.close()
    finally:
        r.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    sd = SdNotify.from_env({"WATCHDOG_USEC": "1000000"})
    assert not sd.enabled
    assert sd.watchdog_interval_s is None
    assert not sd.ready("x")
    assert not sd.watchdog()
    assert (sd.sent, sd.failures) == (0, 0)
    asyncio.run(watchdog_loop(sd, lambda: "x"))  # returns at once


def test_a_missing_socket_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "later"
    sd = SdNotify(str(path))
    assert not sd.ready()
    assert sd.failures == 1
    assert sd.last_error is not None
    assert "FileNotFoundError" in sd.last_error
    assert sd.health_doc()["failures"] == 1
    r = Receiver(str(path))  # systemd came back: the next send goes
    try:
        assert sd.ready()
        assert r.get() == {"READY": "1"}
        sd.close()
    finally:
        r.close()


def test_a_full_queue_is_a_counted_failure_never_a_block(receiver: Receiver) -> None:
    sd = SdNotify(receiver.address, watchdog_usec=1_000_000)
    # Nobody reads: the socket's queue fills and sending fails at once (non-blocking).
    results = [sd.watchdog("x" * 200) for _ in range(5000)]
    assert sd.failures > 0
    assert results.count(False) == sd.failures
    assert sd.sent == results.count(True)
    sd.close()


def test_watchdog_pid_names_the_process() -> None:
    mine = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert SdNotify.from_env(mine).watchdog_usec == 30_000_000
    ours = dict(mine, WATCHDOG_PID=str(os.getpid()))
    assert SdNotify.from_env(ours).watchdog_interval_s == 15.0
    other = dict(mine, WATCHDOG_PID=str(os.getpid() + 1))
    assert SdNotify.from_env(other).watchdog_usec is None
    for bad in ("", "0", "-5", "abc", "1e6"):
        assert SdNotify.from_env(dict(mine, WATCHDOG_USEC=bad)).watchdog_usec is None


def test_an_unsupported_address_is_a_refusal() -> None:
    sd = SdNotify("vsock:2:1234")
    assert not sd.ready()
    assert sd.failures == 1
    assert sd.last_error is not None
    assert "unsupported" in sd.last_error


@settings(max_examples=200, deadline=None)
@given(
    address=st.text(max_size=120),
    usec=st.text(max_size=20),
    pid=st.one_of(st.none(), st.text(max_size=10)),
    status=st.text(max_size=300),
)
def test_fuzz_whatever_the_environment_says_nothing_raises(
    address: str, usec: str, pid: str | None, status: str
) -> None:
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = pid
    if "\0" in address:
        env["NOTIFY_SOCKET"] = address.replace("\0", "")
    sd = SdNotify.from_env(env)
    for send in (sd.ready, sd.watchdog, sd.stopping, sd.reloading):
        assert send(status) in (True, False)
    assert sd.sent + sd.failures <= 4
    sd.close()


def test_status_line() -> None:
    assert status_line(3, 4, {"mqtt": 0, "influx": 12}) == (
        "dispositivos 3/4 online; fila: influx=12, mqtt=0"
    )
    assert status_line(0, 0, {}) == "dispositivos 0/0 online; fila: sem destinos"


def stall_and_check_silence(receiver: Receiver, stalls_s: float) -> Callable[[], None]:
    """A callable that, run on the event loop, blocks it for ``stalls_s`` and checks
    that no datagram arrives meanwhile (none can be sent: the loop is blocked)."""

    def block() -> None:
        receiver.drain()  # sent before the stall
        receiver.sock.settimeout(stalls_s)
        with pytest.raises(TimeoutError):
            receiver.sock.recv(4096)

    return block


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_stalled_loop_stops_the_pings(
    receiver: Receiver, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    sd = SdNotify(receiver.address, watchdog_usec=100_000)  # a ping every 50 ms

    async def scenario() -> None:
        task = asyncio.create_task(watchdog_loop(sd, lambda: "tudo certo"))
        got = await asyncio.to_thread(receiver.get)
        assert got == {"READY": "1", "STATUS": "tudo certo"}
        for _ in range(3):
            got = await asyncio.to_thread(receiver.get)
            assert got == {"WATCHDOG": "1", "STATUS": "tudo certo"}
        # Ten ping intervals with the loop blocked: no ping.
        stall_and_check_silence(receiver, 0.5)()
        receiver.sock.setblocking(True)
        got = await asyncio.to_thread(receiver.get)  # the loop runs again: so do the pings
        assert got["WATCHDOG"] == "1"
        task.cancel()
        sd.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


def agent_config(data_dir: Path) -> dict[str, object]:
    return {
        "site": {"id": "ourofino"},
        "agent": {"data_dir": str(data_dir), "status_interval_s": 3600},
        "mqtt": {"enabled": False},
        "influx": {"enabled": False},
        "api": {"enabled": False},
        "devices": [
            {"id": "umid-1", "driver": "moisture.ticket", "port": "/dev/fake1"},
            {"id": "umid-2", "driver": "moisture.ticket", "port": "/dev/fake2"},
        ],
    }


def test_the_agent_stalled_in_process_stops_pinging(receiver: Receiver, tmp_path: Path) -> None:
    """The real composition root, in process: READY after the device loops opened their
    ports, then pings; a blocking callable on the loop stops them; STOPPING at the end."""
    cfg = parse_config(agent_config(tmp_path / "data"))
    sd = SdNotify(receiver.address, watchdog_usec=200_000)
    health = Health()

    async def scenario() -> None:
        ports = FakePorts()
        stop = asyncio.Event()
        agent = asyncio.create_task(
            run_agent(cfg, stop=stop, open_port=ports.open, health=health, systemd=sd)
        )
        ready = await asyncio.to_thread(receiver.get)
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("dispositivos ")
        assert ready["STATUS"].endswith("/2 online; fila: sem destinos")
        assert {p.device for p in ports.opened} == {"umid-1", "umid-2"}
        got = await asyncio.to_thread(receiver.get)
        while "WATCHDOG" not in got:
            got = await asyncio.to_thread(receiver.get)
        assert got["STATUS"] == "dispositivos 2/2 online; fila: sem destinos"
        asyncio.get_running_loop().call_soon(stall_and_check_silence(receiver, 1.0))
        await asyncio.sleep(0)
        receiver.sock.setblocking(True)
        got = await asyncio.to_thread(receiver.get)
        assert got["WATCHDOG"] == "1"
        stop.set()
        await agent
        tail = receiver.drain()
        assert tail[-1]["STOPPING"] == "1"
        assert health.counters["systemd"]()["failures"] == 0
        sd.close()

    asyncio.run(scenario())
