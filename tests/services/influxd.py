"""A real influxd (InfluxDB 1.x, Debian's ``influxdb`` package) for tests.

Fixtures:

* ``influxd`` (session): one server for the whole run; tests never stop it.
* ``influx_db`` (function): a fresh database name, created on that server.
* ``influxd_factory`` (function): starts private servers, for tests that stop,
  kill or restart one; all are stopped when the test ends.

Each server gets its own temp dir (meta, data, wal, config, log) and two free
loopback ports: influxd listens for HTTP and, at the top level
``bind-address``, for backup RPC (default 8088). Leaving the RPC port at its
default makes the second instance on a machine fail to start. Usage
reporting and the ``_internal`` monitor database are off, so a test server
does no I/O of its own. Start-up waits for ``GET /ping`` to answer 204; when
it fails, the error shows the tail of influxd's log.

A restart reuses the same ports and data, like a service restart on the box.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest

from tests.services.net import free_port

NOT_FOUND = "influxd not found: install Debian package 'influxdb' (apt-get install influxdb)"

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false

[logging]
  suppress-logo = true
"""


class InfluxQueryError(Exception):
    """An InfluxQL statement failed (the server said so in its answer)."""


def influxd_binary() -> str:
    """Path of ``influxd``; fails the test (never skips) when it is missing."""
    path = shutil.which("influxd")
    if path is None:
        pytest.fail(NOT_FOUND, pytrace=False)
    return path


class InfluxServer:
    """One influxd process with its own directory and ports.

    Attributes:
        root: Directory holding config, log, meta, data and wal.
        http_port: HTTP API port on 127.0.0.1.
        rpc_port: Backup RPC port on 127.0.0.1.
    """

    def __init__(self, root: Path, *, binary: str | None = None) -> None:
        self.root = root
        self.binary = binary or influxd_binary()
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config_path = root / "influxd.conf"
        self.log_path = root / "influxd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.config_path.write_text(
            _CONFIG.format(root=root, rpc_port=self.rpc_port, http_port=self.http_port)
        )

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """The running influxd's process id (benchmarks measure its CPU)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Start influxd and wait until ``/ping`` answers 204.

        Raises:
            RuntimeError: It exited or did not answer in time; the message
                holds the tail of its log.
        """
        if self.running:
            raise RuntimeError("influxd is already running")
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._ping():
                return
            time.sleep(0.05)
        code = self._process.poll()
        self.stop()
        state = f"exited with status {code}" if code is not None else "did not answer /ping"
        raise RuntimeError(
            f"influxd {state} (config {self.config_path}); log tail:\n{self.log_tail()}"
        )

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Stop with SIGTERM (a clean shutdown), then SIGKILL after ``timeout_s``."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Stop with SIGKILL at once, like a crash or power loss."""
        self._end(signal.SIGKILL, 0.0)

    def restart(self, *, timeout_s: float = 30.0) -> None:
        """Stop and start again on the same ports, keeping the data."""
        self.stop()
        self.start(timeout_s=timeout_s)

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

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as response:
                status: int = response.status
                return status == 204
        except OSError:  # refused while starting; URLError is an OSError
            return False

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of influxd's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def query(self, db: str | None, influxql: str) -> list[dict[str, object]]:
        """Run InfluxQL and return the rows of every series, time in epoch ns.

        Each row is a dict of column to value, plus the series' ``GROUP BY``
        tags when there are any.

        Raises:
            InfluxQueryError: The server reported an error.
        """
        params = {"q": influxql, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        doc = self._post_query(params)
        rows: list[dict[str, object]] = []
        for result in doc.get("results", []):
            if "error" in result:
                raise InfluxQueryError(result["error"])
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row: dict[str, object] = dict(tags)
                    row.update(zip(series["columns"], values, strict=True))
                    rows.append(row)
        return rows

    def create_database(self, name: str) -> None:
        """Create a database (no error if it exists)."""
        self.query(None, f"CREATE DATABASE {_quote(name)}")

    def drop_database(self, name: str) -> None:
        """Drop a database (no error if it does not exist)."""
        self.query(None, f"DROP DATABASE {_quote(name)}")

    def _post_query(self, params: dict[str, str]) -> dict[str, Any]:
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30.0) as response:
                doc = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                raise InfluxQueryError(f"HTTP {exc.code}: {exc.read().decode()}") from exc
        if "error" in doc:
            raise InfluxQueryError(doc["error"])
        return cast(dict[str, Any], doc)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unique_database() -> str:
    """A database name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One influxd for the whole session. Do not stop it; use ``influxd_factory``."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def influx_db(influxd: InfluxServer) -> Iterator[str]:
    """A fresh database on the session's influxd; dropped afterwards."""
    name = unique_database()
    influxd.create_database(name)
    yield name
    if influxd.running:
        influxd.drop_database(name)


@pytest.fixture
def influxd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], InfluxServer]]:
    """Start private influxd instances; each is stopped when the test ends."""
    servers: list[InfluxServer] = []

    def start() -> InfluxServer:
        server = InfluxServer(tmp_path_factory.mktemp("influxd-private"))
        servers.append(server)
        try:
            server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return server

    yield start
    for server in servers:
        server.stop()
