"""Reloading the site file: an invalid one refused (old config running), a valid one planned."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.cli.reload import pid_file, read_pid
from coffee_telemetry.agent.config import DeviceConfig, load_config
from coffee_telemetry.agent.devices import make_device_runner
from coffee_telemetry.agent.devices.fleet import Fleet
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.reload import Reloader, plan_reload
from tests.fakes import FakePorts, stage


def site(
    tmp: Path,
    *,
    devices: Sequence[tuple[str, str]] = (("umid-1", "secador"), ("umid-2", "secador")),
    threshold: float = 12.5,
    extra: str = "",
    api_port: int = 8780,
) -> str:
    lines = [
        "[site]",
        'id = "s1"',
        "[agent]",
        f'data_dir = "{tmp / "data"}"',
        "[api]",
        f"port = {api_port}",
        "[alerts.wet_lot]",
        f"default_threshold_pct = {threshold}",
    ]
    for dev_id, station in devices:
        lines += [
            "[[devices]]",
            f'id = "{dev_id}"',
            'driver = "moisture.tesma"',
            f'port = "/dev/fake-{dev_id}"',
            f'station = "{station}"',
        ]
    return "\n".join(lines) + "\n" + extra


class Agent:
    """A fleet on fake ports and the reloader over a site file, as the app wires them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cfg = load_config(path)
        self.health = Health()
        self.ports = FakePorts()
        self.accepted: list[Reading] = []
        accept = stage(self._commit, Stamper()).accept

        def make_runner(dev: DeviceConfig) -> Any:
            return make_device_runner(
                dev,
                site="s1",
                accept=accept,
                health=self.health,
                open_port=self.ports.open,
                backoff=Backoff(initial_s=0.01, maximum_s=0.02, jitter=0.0),
            )

        def spawn(dev_id: str, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            return asyncio.create_task(loop, name=f"device[{dev_id}]")

        self.fleet = Fleet(make_runner, spawn=spawn, health=self.health)
        self.fleet.start([d for d in self.cfg.devices if d.enabled])
        self.reloader = Reloader(path=path, running=self.cfg, fleet=self.fleet)

    async def _commit(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)

    async def online(self) -> None:
        async with asyncio.timeout(5):
            while not all(d.state is DeviceState.ONLINE for d in self.health.devices.values()):
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        for task in self.fleet.cancel_all():
            await asyncio.wait([task])


async def test_invalid_config_is_refused_and_the_old_one_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site(tmp_path))
    agent = Agent(path)
    await agent.online()
    tasks = agent.fleet.tasks
    # A bad baud rate on a new device and a threshold out of range.
    bad = site(
        tmp_path,
        devices=[("umid-1", "secador"), ("umid-3", "secador")],
        threshold=99,
        extra="",
    ).replace('port = "/dev/fake-umid-3"', 'port = "/dev/fake-umid-3"\nserial.baudrate = 1234')
    path.write_text(bad)
    with caplog.at_level(logging.ERROR):
        outcome = await agent.reloader.reload()
    assert not outcome.ok
    # The same errors check-config prints for this file.
    assert main(["check-config", str(path)]) == 2
    printed = capsys.readouterr().err
    assert outcome.error is not None
    for line in outcome.error.splitlines():
        assert line in printed
    assert "devices[1].serial.baudrate" in outcome.error
    assert "alerts.wet_lot.default_threshold_pct" in outcome.error
    assert "Reload refused" in caplog.text
    assert "devices[1].serial.baudrate" in caplog.text
    # Nothing changed: the same loops, ports and config.
    assert agent.fleet.tasks == tasks
    assert not any(t.done() for t in tasks)
    assert [d.id for d in agent.fleet.devices] == ["umid-1", "umid-2"]
    assert len(agent.ports.opened) == 2
    assert agent.reloader.running is agent.cfg
    doc = agent.reloader.health_doc()
    assert doc["ok"] == 0
    assert doc["refused"] == 1
    assert isinstance(doc["last_error"], str)
    assert "baudrate" in doc["last_error"]
    assert doc["last_at"] is not None
    # Fixed, the next reload applies it.
    path.write_text(site(tmp_path, devices=[("umid-1", "secador"), ("umid-3", "secador")]))
    outcome = await agent.reloader.reload()
    assert outcome.ok
    assert outcome.summary == "devices +umid-3 -umid-2"
    assert agent.reloader.health_doc()["last_error"] is None
    assert agent.reloader.health_doc()["ok"] == 1
    await agent.online()
    assert [p.device for p in agent.ports.opened] == ["umid-1", "umid-2", "umid-3"]
    await agent.close()


async def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site(tmp_path))
    agent = Agent(path)
    path.unlink()
    outcome = await agent.reloader.reload()
    assert not outcome.ok
    assert outcome.error is not None
    assert "cannot read file" in outcome.error
    assert agent.reloader.health_doc()["refused"] == 1
    await agent.close()


def test_plan_names_what_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(site(tmp_path))
    running = load_config(path)
    path.write_text(
        site(
            tmp_path,
            devices=[("umid-1", "recepcao"), ("umid-2", "secador")],
            threshold=11.0,
            api_port=8781,
            extra='[outbox]\nmax_mb = 64\n[[alerts.webhooks]]\nname = "h"\nurl = "http://x/"\n',
        )
    )
    new = load_config(path)
    plan = plan_reload(running, new, alerts_live=True)
    assert plan.restart == (
        "outbox.max_mb",
        "api.port",
        "webhook_secret_headers",
        "alerts.webhooks",
        "lots.stations (recepcao)",
    )
    assert plan.alerts is not None
    assert plan.alerts.wet_lot.default_threshold_pct == 11.0
    assert plan.alerts.webhooks == ()  # the webhooks wait for the restart
    assert plan.alerts_changed == ("alerts.wet_lot",)
    assert [d.station for d in plan.devices] == ["recepcao", "secador"]
    assert plan.running.api.port == 8780
    assert plan.running.outbox == running.outbox
    # Applied, then read again: the lots still know only the stations of the start.
    again = plan_reload(plan.running, new, alerts_live=True, started=running)
    assert again.restart == plan.restart
    assert again.alerts is None
    # Without an alert service, the rules have nobody to go to.
    assert plan_reload(running, new, alerts_live=False).alerts is None
    # Home Assistant's documents list the devices of the start.
    with_ha = running.model_copy(
        update={"mqtt": running.mqtt.model_copy(update={"homeassistant_discovery": True})}
    )
    moved = new.model_copy(update={"mqtt": with_ha.mqtt})
    assert plan_reload(with_ha, moved, alerts_live=True).restart[-1] == (
        "mqtt.homeassistant_discovery (devices)"
    )
    # The same file again: nothing to do.
    same = plan_reload(running, running, alerts_live=True)
    assert same.restart == ()
    assert same.alerts is None


def test_reload_command_validates_then_signals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site(tmp_path))
    # No agent: refused, clearly.
    assert main(["reload", "-c", str(path)]) == 1
    assert "no running agent" in capsys.readouterr().err
    got: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))
    try:
        # This process stands in for the agent (its command line is pytest's).
        with pid_file(tmp_path / "data") as pid_path:
            assert read_pid(pid_path) == os.getpid()
            assert main(["reload", "-c", str(path), "--pid", str(os.getpid())]) == 0
            assert got == [signal.SIGHUP]
            # An invalid file never reaches the agent.
            path.write_text(site(tmp_path, threshold=99))
            assert main(["reload", "-c", str(path), "--pid", str(os.getpid())]) == 2
            assert "default_threshold_pct" in capsys.readouterr().err
            assert got == [signal.SIGHUP]
        assert not pid_path.exists()
    finally:
        signal.signal(signal.SIGHUP, previous)


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=64))
def test_pid_file_bytes_give_a_pid_or_none(content: bytes) -> None:
    """Whatever the pid file holds (it may be left half written), no exception escapes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.pid"
        path.write_bytes(content)
        pid = read_pid(path)
    assert pid is None or 0 < pid < 2**22
    if pid is not None:
        assert int(content.decode("ascii").strip()) == pid
