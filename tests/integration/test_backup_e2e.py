"""Backup while the real agent writes, restore on a new box, and carry on.

The agent reads a continuous meter on a pty; its MQTT sink points at a port where no
broker listens, so every record stays in the outbox and each box's ``(device, seq)``
can be read back from it. A backup is made by another process while readings are being
committed; the agent keeps writing after it, and is then stopped. The backup is
restored into a fresh data folder (a new box), where the agent starts with the same
active lot (its readings carry it), the same maintenance record, and sequences that
never number a reading the old box numbered.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.simulators.moisture import TesmaMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    eventually,
    outbox_last_id,
    write_site_config,
)
from tests.services.net import free_port

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def readings(outbox: Path) -> list[tuple[str, int, dict[str, object]]]:
    """Every reading record in an outbox: device, seq and payload."""
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT device, seq, payload FROM records WHERE kind = 'reading' ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [(str(d), int(s), json.loads(p)) for d, s, p in rows]


def identities(outbox: Path) -> set[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return {(str(d), int(s)) for d, s in conn.execute("SELECT device, seq FROM records")}
    finally:
        conn.close()


def backup_sequences(archive: Path, tmp: Path) -> dict[str, int]:
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile("data/outbox.sqlite3")
        assert member is not None
        (tmp / "saved-outbox.sqlite3").write_bytes(member.read())
    conn = sqlite3.connect(tmp / "saved-outbox.sqlite3")
    try:
        return {str(d): int(s) for d, s in conn.execute("SELECT device, seq FROM sequences")}
    finally:
        conn.close()


def site(path: Path, data: Path, port: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_site_config(
        path,
        data_dir=data,
        devices=[DeviceSpec("umid-1", "moisture.tesma", port, "secador")],
        mqtt_port=free_port(),  # nobody listens: records stay in the outbox
        prefix="backup",
        influx_url=None,
    )


async def test_backup_while_writing_then_restore_on_a_new_box(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    values = iter([11.0 + (n % 40) / 10 for n in range(100_000)])
    sim = asyncio.create_task(
        TesmaMeterSim(port, interval_s=0.05, moisture=lambda: next(values)).run()
    )
    old_data, new_data = tmp_path / "old" / "data", tmp_path / "new" / "data"
    old_site = site(tmp_path / "old" / "site.toml", old_data, port.path)
    with MaintenanceStore.open(old_data / "maintenance.sqlite3") as maint:
        maint.record_service(
            "descascador-1", "peneira", at_ns=time.time_ns(), hours_at=812.5, by="ana"
        )
    done = cli("lot", "set", "-c", str(old_site), "secador", "L-2026-77", "--by", "ana")
    assert done.returncode == 0, done.stderr
    old_agent = AgentProcess(old_site, tmp_path / "old-agent.log")
    new_agent = AgentProcess(
        site(tmp_path / "new" / "site.toml", new_data, port.path), tmp_path / "new-agent.log"
    )
    archive = tmp_path / "site.backup"
    try:
        old_agent.start()
        await eventually(
            lambda: outbox_last_id(old_data) >= 20,
            timeout_s=60,
            what="the old box's first readings",
            context=old_agent.log_tail,
        )
        made = cli("backup", "-c", str(old_site), "-o", str(archive))  # while it writes
        assert made.returncode == 0, made.stderr
        at_backup = outbox_last_id(old_data)
        await eventually(
            lambda: outbox_last_id(old_data) >= at_backup + 20,
            timeout_s=60,
            what="readings after the backup",
            context=old_agent.log_tail,
        )
        refused = cli("restore", str(archive), "-c", str(old_site), "--force")
        assert refused.returncode == 1
        assert "rodando" in refused.stderr
        assert old_agent.alive
        assert old_agent.stop() == 0
        old_outbox = old_data / "outbox.sqlite3"
        old_ids = identities(old_outbox)
        saved = backup_sequences(archive, tmp_path)
        assert max(s for d, s in old_ids if d == "umid-1") > saved["umid-1"]  # numbered since

        restored = cli("restore", str(archive), "-c", str(tmp_path / "new" / "site.toml"))
        assert restored.returncode == 0, restored.stderr
        new_agent.start()
        new_outbox = new_data / "outbox.sqlite3"
        await eventually(
            lambda: sum(d == "umid-1" for d, _, _ in readings(new_outbox)) >= 10,
            timeout_s=60,
            what="the new box's readings",
            context=new_agent.log_tail,
        )
        new_readings = [r for r in readings(new_outbox) if r[0] == "umid-1"]
        assert identities(new_outbox).isdisjoint(old_ids)  # no (device, seq) twice
        assert min(seq for _, seq, _ in new_readings) > max(s for _, s in old_ids)
        for _, _, payload in new_readings:
            tags = payload["tags"]
            assert isinstance(tags, dict)
            assert tags.get("lot") == "L-2026-77"  # the active lot came back
        lots = LotStore.open(new_data / "lots.sqlite3")
        try:
            assert lots.active()["secador"].lot == "L-2026-77"
        finally:
            lots.close()
        with MaintenanceStore.open(new_data / "maintenance.sqlite3") as maint:
            assert [(s.task, s.hours_at) for s in maint.services()] == [("peneira", 812.5)]
    finally:
        for agent in (old_agent, new_agent):
            if agent.alive:
                agent.stop()
        sim.cancel()
        port.close()
