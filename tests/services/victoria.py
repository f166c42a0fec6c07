"""A real VictoriaMetrics single node (Debian's ``victoria-metrics``) for tests.

``VictoriaServer`` starts ``victoria-metrics`` on a free loopback port with its store
in a temp dir. It ingests InfluxDB line protocol on ``/write`` (the v1 path the
recorder's sink uses) and answers PromQL/MetricsQL on ``/api/v1/query``. Its search
normally hides the last 30 s (``-search.latencyOffset``); tests set it to 0 so a
point written is queryable as soon as it is flushed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.services.net import free_port

NOT_FOUND = (
    "victoria-metrics not found: install Debian package 'victoria-metrics' "
    "(apt-get install victoria-metrics)"
)


def victoria_binary() -> str:
    """Path of ``victoria-metrics``; fails the test (never skips) when it is missing."""
    path = shutil.which("victoria-metrics")
    if path is None:
        pytest.fail(NOT_FOUND, pytrace=False)
    return path


class VictoriaServer:
    """One ``victoria-metrics`` process on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: InfluxDB's ``/write`` and Prometheus' ``/api/v1``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start and wait for ``/health``."""
        self._log = (self.root / "victoria.log").open("ab")
        self._process = subprocess.Popen(
            [
                victoria_binary(),
                f"-storageDataPath={self.root / 'data'}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-search.latencyOffset=0s",
                "-retentionPeriod=1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                    if int(response.status) == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"victoria-metrics did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def flush(self) -> None:
        """Make what was ingested searchable now (``/internal/force_flush``)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5.0):
            pass

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL/MetricsQL query: ``[{"metric": {...}, "value": [t, "v"]}]``.

        Raises:
            RuntimeError: The server answered with an error.
        """
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10.0) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"{promql}: {doc}")
        result = doc["data"]["result"]
        assert isinstance(result, list)
        return result

    def series(self, match: str = '{__name__=~".+"}') -> list[dict[str, str]]:
        """Every series' labels matching ``match``."""
        data = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/series", data=data, timeout=10.0) as r:
            doc = json.loads(r.read())
        result = doc["data"]
        assert isinstance(result, list)
        return result

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log."""
        path = self.root / "victoria.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaServer]:
    """A fresh VictoriaMetrics for one test."""
    server = VictoriaServer(tmp_path_factory.mktemp("victoria"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()
