"""A real three-node NATS cluster with JetStream (Debian's ``nats-server``) for tests.

Fixtures:

* ``nats_cluster`` (module): three nodes for the tests of one module; tests may kill
  and restart nodes but must leave all three running.
* ``nats_cluster_factory`` (function): private clusters, stopped when the test ends.
* ``running_cluster``: the same as a context manager, for a module's own fixture.

Each node gets its own temp dir (config, JetStream store, log) and three free loopback
ports: clients, cluster routes and monitoring (``/healthz``, which answers 200 once
the node's JetStream is current with the cluster). All nodes route to each other.

Authorisation is the production shape (``deploy/central/nats-server.conf``): one
account with JetStream; the ``recorder`` user may use the JetStream API, acknowledge,
write dead letters and receive its replies, and each site's
user may publish only under ``coffee.<site>.>`` and its own key of the status bucket
(``$KV.COFFEE_STATUS.<site>``), and receive only on its own inbox
prefix ``_INBOX_<site>.>`` (where its PubAcks arrive). ``site_permissions`` renders
that block.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import nats
import nats.js.errors
import pytest

from coffee_telemetry.agent.central.stream import StreamSettings, ensure_streams
from tests.services.net import free_port

NOT_FOUND = (
    "nats-server not found: install Debian package 'nats-server' (apt-get install nats-server)"
)

RECORDER_USER = "recorder"
RECORDER_PASSWORD = "recorder-secret"


#: The recorders' permissions, as in ``deploy/central/nats-server.conf``: the JetStream
#: API, acknowledgements on the readings stream, dead letters, their own replies.
RECORDER_PERMISSIONS = (
    'permissions: { publish: {allow: ["$JS.API.>", "$JS.ACK.COFFEE.>", "coffee-dead.>"]},'
    ' subscribe: {allow: ["_INBOX.>"]} }'
)


def site_password(site: str) -> str:
    """The test password of ``site``'s NATS user."""
    return f"{site}-secret"


def site_permissions(site: str, password: str, *, prefix: str = "coffee") -> str:
    """One site's user: publish only its own subjects and its own key of the status
    bucket, receive only its own replies."""
    return (
        f'{{user: "{site}", password: "{password}", permissions: {{'
        f' publish: {{allow: ["{prefix}.{site}.>", "$KV.COFFEE_STATUS.{site}"]}},'
        f' subscribe: {{allow: ["_INBOX_{site}.>"]}} }} }}'
    )


def nats_binary() -> str:
    """Path of ``nats-server``; fails the test (never skips) when it is missing."""
    path = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if path is None:
        pytest.fail(NOT_FOUND, pytrace=False)
    return path


class NatsNode:
    """One ``nats-server`` process of a cluster.

    Attributes:
        name: Server name (``n1`` ...), what stream info calls the leader.
        port: Client port on 127.0.0.1.
    """

    def __init__(self, root: Path, name: str, *, binary: str) -> None:
        self.root = root
        self.name = name
        self.binary = binary
        self.port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.config_path = root / f"{name}.conf"
        self.log_path = root / f"{name}.log"
        self.store_dir = root / f"{name}-js"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs (benchmarks read its RSS)."""
        return self._process.pid if self.running and self._process is not None else None

    def write_config(self, routes: Sequence[int], users: str) -> None:
        """Write the node's config: JetStream store, cluster routes, the account's users."""
        route_list = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        self.config_path.write_text(
            f"""\
server_name: {self.name}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.http_port}
max_payload: 1MB
jetstream {{
  store_dir: "{self.store_dir}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: coffee-test
  listen: 127.0.0.1:{self.cluster_port}
  routes: [{route_list}]
}}
accounts {{
  CENTRAL {{
    jetstream: enabled
    users: [
{users}
    ]
  }}
}}
"""
        )

    def start(self) -> None:
        """Start the process (readiness is the cluster's ``wait_ready``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: a crash or power loss."""
        self._end(signal.SIGKILL, 0.0)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        self._end(signal.SIGTERM, timeout_s)

    def _end(self, sig: signal.Signals, timeout_s: float) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (JetStream current)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=1.0
            ) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the node's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """Three nodes routed to each other, with the sites' users."""

    def __init__(self, root: Path, *, sites: Sequence[str] = (), size: int = 3) -> None:
        binary = nats_binary()
        self.root = root
        self.nodes = [NatsNode(root, f"n{i + 1}", binary=binary) for i in range(size)]
        users = [
            f'      {{user: "{RECORDER_USER}", password: "{RECORDER_PASSWORD}",'
            f" {RECORDER_PERMISSIONS}}}",
            *(f"      {site_permissions(s, site_password(s))}" for s in sites),
        ]
        routes = [n.cluster_port for n in self.nodes]
        for node in self.nodes:
            node.write_config(routes, "\n".join(users))

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        """The node called ``name``."""
        return next(n for n in self.nodes if n.name == name)

    def start(self, *, timeout_s: float = 60.0) -> None:
        """Start every node and wait until all report JetStream healthy."""
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout_s=timeout_s)

    def wait_ready(self, *, timeout_s: float = 60.0) -> None:
        """Wait until every running node answers ``/healthz`` with 200.

        Raises:
            RuntimeError: Not in time; the message holds the nodes' log tails.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(n.healthy() for n in self.nodes if n.running):
                return
            time.sleep(0.1)
        tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.nodes)
        raise RuntimeError(f"NATS cluster not healthy within {timeout_s:g} s:\n{tails}")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def _start(root: Path, sites: Sequence[str]) -> NatsCluster:
    cluster = NatsCluster(root, sites=sites)
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        pytest.fail(str(exc), pytrace=False)
    return cluster


#: Sites whose users the module-scoped cluster knows.
DEFAULT_SITES = ("site-a", "site-b", "site-c")


@contextlib.contextmanager
def running_cluster(root: Path, sites: Sequence[str] = DEFAULT_SITES) -> Iterator[NatsCluster]:
    """A started cluster in ``root``, stopped on exit (for a test module's own fixture)."""
    cluster = _start(root, sites)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three nodes for one test module (users: the recorder and ``DEFAULT_SITES``)."""
    cluster = _start(tmp_path_factory.mktemp("nats"), DEFAULT_SITES)
    yield cluster
    cluster.stop()


@pytest.fixture
def nats_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Sequence[str]], NatsCluster]]:
    """Start private clusters with the given sites' users; stopped when the test ends."""
    clusters: list[NatsCluster] = []

    def start(sites: Sequence[str] = DEFAULT_SITES) -> NatsCluster:
        cluster = _start(tmp_path_factory.mktemp("nats-private"), sites)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


async def fresh_streams(cluster: NatsCluster, settings: StreamSettings) -> None:
    """Delete the central streams if a previous test left them, and create them anew."""
    nc = await nats.connect(cluster.urls, user=RECORDER_USER, password=RECORDER_PASSWORD)
    try:
        js = nc.jetstream(timeout=10.0)
        for name in (settings.stream, settings.dead_stream, f"KV_{settings.status_bucket}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                await ensure_streams(js, settings)
                return
            except nats.js.errors.Error:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def stream_settings(**changes: object) -> StreamSettings:
    """Stream settings that fit a test cluster's 1 GB per node."""
    base = StreamSettings(max_bytes=64 * 1024 * 1024, ack_wait_s=3.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
