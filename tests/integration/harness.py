"""End-to-end harness: the real agent process, a real broker and database.

``AgentProcess`` runs ``python -m coffee_telemetry.agent.cli run -c site.toml`` (the console
script's entry point) as a child process, so tests can SIGKILL and restart it
like systemd would. ``MqttCollector`` subscribes with a persistent session and
keeps every reading by ``(device, seq)``, the way consumers dedupe.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coffee_telemetry.agent.commands import unescape_level
from coffee_telemetry.agent.outbox.stats import read_stats
from tests.services.net import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DeviceSpec:
    """One device line of the generated site file."""

    id: str
    driver: str
    port: str
    station: str = ""
    product: str | None = None
    extra: str = ""


def write_site_config(
    path: Path,
    *,
    data_dir: Path,
    devices: Sequence[DeviceSpec],
    mqtt_port: int | None,
    prefix: str,
    influx_url: str | None,
    database: str = "coffee",
    site: str = "ourofino",
    flush_interval_s: float = 0.2,
) -> Path:
    """Write a site TOML for the agent under test."""
    lines = [
        "[site]",
        f'id = "{site}"',
        "[agent]",
        f'data_dir = "{data_dir}"',
        # This machine's clock is kept by its host, which the kernel cannot vouch for.
        'time_sources = ["system"]',
        'log_level = "debug"',
        "status_interval_s = 3600",
        "[mqtt]",
        f"enabled = {'true' if mqtt_port else 'false'}",
        f"port = {mqtt_port or 1883}",
        f'prefix = "{prefix}"',
        "[influx]",
        f"enabled = {'true' if influx_url else 'false'}",
        f'url = "{influx_url or "http://127.0.0.1:8086"}"',
        f'database = "{database}"',
        f"flush_interval_s = {flush_interval_s}",
        "timeout_s = 5",
        "[api]",
        f"port = {free_port()}",
    ]
    for dev in devices:
        lines += [
            "[[devices]]",
            f'id = "{dev.id}"',
            f'driver = "{dev.driver}"',
            f'port = "{dev.port}"',
            f'station = "{dev.station}"',
        ]
        if dev.product:
            lines.append(f'product = "{dev.product}"')
        if dev.extra:
            lines.append(dev.extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def huller_toml(
    bus_port: str,
    *,
    huller: str,
    station: str,
    poll_interval_s: float,
    hour_meter_unit: str = "s",
    bags_per_pulse: float = 1.0,
    tasks: Sequence[Mapping[str, object]] = (),
) -> list[str]:
    """TOML lines for an RS-485 bus ``rs485`` on ``bus_port`` with one huller.

    Its bag counter is Modbus unit 1 and its hour meter unit 2 (as ``CounterUnitSim``s
    on the bus); each task is a ``[[hullers.tasks]]`` table (``id``, ``name``,
    ``interval_h``, optionally ``warn_before_h``).
    """
    lines = [
        "[[buses]]",
        'id = "rs485"',
        f'port = "{bus_port}"',
        "timeout_s = 0.3",
        "min_gap_s = 0.01",
        "[buses.serial]",
        "baudrate = 9600",
        "stopbits = 2",
        "[[hullers]]",
        f'id = "{huller}"',
        'name = "Descascador 1"',
        'bus = "rs485"',
        "bag_counter = 1",
        "hour_meter = 2",
        f'hour_meter_unit = "{hour_meter_unit}"',
        f"bags_per_pulse = {bags_per_pulse}",
        f"poll_interval_s = {poll_interval_s}",
        f'station = "{station}"',
    ]
    for task in tasks:
        lines.append("[[hullers.tasks]]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in task.items()]
    return lines


class AgentProcess:
    """The agent as a child process, logs in a file."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        *,
        nofile: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """The agent, not started yet.

        Args:
            config: The site file.
            log_path: Where the agent's output goes.
            nofile: If set, the child's open-file limit, soft and hard (it cannot raise it).
            env: Extra environment variables for the child.
        """
        self.config = config
        self.log_path = log_path
        self.nofile = nofile
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def _limit_files(self) -> None:
        # Runs in the child between fork and exec.
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> None:
        """Start ``coffee-telemetry run -c CONFIG``."""
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coffee_telemetry.agent.cli", "run", "-c", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=None if self.nofile is None else self._limit_files,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"agent did not stop on SIGTERM; log:\n{self.log_tail()}"
            ) from None

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        """The end of the agent's log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@dataclass
class MqttCollector:
    """Collects readings and retained statuses from a broker."""

    port: int
    prefix: str
    client_id: str = "collector"
    readings: dict[tuple[str, int], dict[str, object]] = field(default_factory=dict)
    statuses: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    alert_states: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    duplicates: int = 0
    _client: paho.Client | None = None

    def start(self) -> None:
        """Connect with a persistent session and subscribe at QoS 1."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.connect_async("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        self._client = client

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if parts[-1] == "status":
            self.statuses.setdefault(parts[-2], []).append((time.time_ns(), bytes(msg.payload)))
            return
        if len(parts) >= 5 and parts[2] == "alerts" and parts[3] != "event":
            # Retained alert states: <prefix>/<site>/alerts/<rule>/<subject>, one escaped level.
            subject = unescape_level("/".join(parts[4:]))
            self.alert_states.setdefault(subject, []).append(json.loads(msg.payload))
            return
        if parts[-1] == "reply" or (len(parts) >= 2 and parts[-2] == "lots"):
            # Command replies under "reply"; retained lot states under the station.
            slot = "reply" if parts[-1] == "reply" else parts[-1]
            self.statuses.setdefault(slot, []).append((time.time_ns(), bytes(msg.payload)))
            return
        if parts[-1] not in ("reading", "event"):
            return
        doc = json.loads(msg.payload)
        key = (str(doc["device"]), int(doc["seq"]))
        if key in self.readings:
            self.duplicates += 1
            assert self.readings[key] == doc, "a resend must be identical to the first send"
        self.readings[key] = doc

    def stop(self) -> None:
        """Disconnect."""
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def count(self, measurement: str = "moisture") -> int:
        """Readings of one measurement received so far (alerts and events excluded)."""
        return sum(1 for doc in self.readings.values() if doc.get("measurement") == measurement)

    def of(self, device: str) -> list[dict[str, object]]:
        """Readings of one device, in sequence order."""
        return [doc for (dev, _), doc in sorted(self.readings.items()) if dev == device]

    def last_status(self, device: str, *, after_ns: int = 0) -> dict[str, object] | str | None:
        """The latest status message of a device (or the agent), if received after ``after_ns``."""
        got = [payload for at, payload in self.statuses.get(device, []) if at >= after_ns]
        if not got:
            return None
        try:
            value: dict[str, object] | str = json.loads(got[-1])
        except json.JSONDecodeError:
            value = got[-1].decode()
        return value


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
    context: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` until true or fail with ``what`` (and ``context``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
        await asyncio.sleep(interval_s)


def outbox_last_id(data_dir: Path) -> int:
    """Records the agent has accepted (0 before the outbox exists)."""
    path = data_dir / "outbox.sqlite3"
    if not path.exists():
        return 0
    try:
        return read_stats(path).last_id
    except Exception:
        return 0


def points_by_seq(
    rows: Sequence[Mapping[str, object]], device: str
) -> dict[int, Mapping[str, object]]:
    """InfluxQL rows of one device keyed by their ``seq`` field."""
    return {int(str(r["seq"])): r for r in rows if r.get("device") == device}
