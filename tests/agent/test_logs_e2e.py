"""JSON logs end to end: ``run`` and ``demo`` as child processes write one JSON object a line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffee_telemetry.agent.logs import LOG_FORMAT_ENV
from tests.services.net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def parse_lines(stderr: str) -> list[dict[str, object]]:
    lines = [line for line in stderr.splitlines() if line]
    assert lines, "nothing was logged"
    docs = []
    for line in lines:
        doc = json.loads(line)  # every line, or the test fails here
        assert isinstance(doc, dict)
        assert {"time", "level", "logger", "message"} <= doc.keys(), line
        docs.append(doc)
    return docs


def test_run_with_log_format_json(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "\n".join(
            [
                "[site]",
                'id = "s1"',
                "[agent]",
                f'data_dir = "{tmp_path / "data"}"',
                'log_format = "json"',
                "[mqtt]",
                f"port = {free_port()}",  # nothing listens: the sink logs its attempts
                "reconnect_max_s = 0.2",
                "[api]",
                f"port = {free_port()}",
                "[[devices]]",
                'id = "umid-1"',
                'driver = "moisture.tesma"',
                f'port = "{tmp_path / "absent"}"',
            ]
        )
        + "\n"
    )
    env = {k: v for k, v in os.environ.items() if k != LOG_FORMAT_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", "run", "-c", str(site)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    # Read until both a device line and a sink line were logged, then stop the agent.
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        text = "".join(seen)
        if '"device":"umid-1"' in text and '"sink":"mqtt"' in text:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[1]
    docs = parse_lines("".join(seen) + rest)
    assert proc.returncode == 0
    assert any(d.get("device") == "umid-1" and d["level"] == "warning" for d in docs)
    assert any(d.get("sink") == "mqtt" and "unreachable" in str(d["message"]) for d in docs)
    assert all(str(d["time"]).endswith("Z") for d in docs)


def test_demo_with_the_environment_variable(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "coffee_telemetry.agent.cli", "--log-level", "info", "demo",
            "--port", str(free_port()), "--api-port", str(free_port()), "--interval", "1",
            "--duration", "4", "--data-dir", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, LOG_FORMAT_ENV: "json"},
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = parse_lines(proc.stderr)
    assert any(str(d["logger"]).startswith("coffee_telemetry") for d in docs)
    assert any("device" in d for d in docs)
