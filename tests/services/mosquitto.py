"""A real Mosquitto broker for integration tests.

The broker runs from ``broker_config/mosquitto.conf`` (the file production
uses) plus a generated loopback listener on a free port, with its persistence
file and log in a temp dir. One broker serves the whole session; tests that
stop or restart the broker get a private one from ``mosquitto_factory``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.services.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BASE_CONF = ROOT / "broker_config" / "mosquitto.conf"


def mosquitto_binary() -> str:
    """Path of the mosquitto binary, or fail the test with what to install."""
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if path is None:
        pytest.fail(
            "mosquitto not found: install Debian package 'mosquitto'"
            " (apt-get install mosquitto), or run `make test`, which installs it"
        )
    return path


class MosquittoServer:
    """One private Mosquitto process on 127.0.0.1."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra_conf: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [
            BASE_CONF.read_text(),
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # do not drop to 'mosquitto': it cannot write here
        lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.port, timeout_s=10.0):
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            pytest.fail(f"mosquitto did not start on port {self.port}:\n{log[-2000:]}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (persistence kept)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """One Mosquitto broker for the whole test session."""
    server = MosquittoServer(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mosquitto_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], MosquittoServer]]:
    """Start private brokers (for tests that stop or restart them)."""
    servers: list[MosquittoServer] = []

    def make() -> MosquittoServer:
        server = MosquittoServer(tmp_path_factory.mktemp("mosquitto-private"))
        server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def mqtt_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
