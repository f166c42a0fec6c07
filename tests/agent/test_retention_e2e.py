"""Lot evidence leaves the box: on to every sink while the agent runs, and into its backup.

The real agent reads a ticket meter on a pty for two lots whose members have geolocated
plots. While it runs, a reading is moved from one lot to the other, the two are blended
into a third, the blend's evidence pack is issued, and a backup is made. The corrections
and the blend reach the MQTT broker as ``lot_record`` events (the outbox's path, which
the NATS sink to the central recorder shares). The backup restored into a fresh data
folder holds the lots, the move, the blend, the members, their plots' geometry, the
issued manifest and the box's signing key (a pack made there is signed by the same key).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffee_telemetry.agent.backup import MANIFEST, parse_manifest
from coffee_telemetry.agent.evidence.store import EvidenceStore
from coffee_telemetry.agent.lots.records import LotRecords
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from tests.agent.evidence.test_pack import import_car
from tests.agent.test_backup import members
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    write_site_config,
)
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

STATION = "recepcao"


@pytest.fixture
def meter_pty(tmp_path: Path) -> Iterator[PtyPort]:
    (tmp_path / "dev").mkdir()
    with open_pty_port(link=tmp_path / "dev" / "umid-1") as port:
        yield port


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def site(path: Path, data: Path, meter: str, mqtt_port: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_site_config(
        path,
        data_dir=data,
        devices=[DeviceSpec("umid-1", "moisture.ticket", meter, STATION, "cafe")],
        mqtt_port=mqtt_port,
        prefix="retention",
        influx_url=None,
    )


def api_port(config: Path) -> int:
    text = config.read_text().split("[api]\n", 1)[1]
    return int(text.split("\n", 1)[0].removeprefix("port = "))


def lot_seqs(data: Path, code: str) -> list[int]:
    path = data / "lots-records.sqlite3"
    if not path.exists():
        return []
    store = LotRecords.open(path)
    try:
        record = store.record(code)
    finally:
        store.close()
    return [] if record is None else [r.seq for r in record.readings]


@pytest.mark.timeout(300)  # a dozen CLI processes and two agent lives
async def test_lot_evidence_goes_on_and_survives_backup_and_restore(
    tmp_path: Path, meter_pty: PtyPort, mosquitto: MosquittoServer
) -> None:
    old_data, new_data = tmp_path / "old" / "data", tmp_path / "new" / "data"
    old_site = site(tmp_path / "old" / "site.toml", old_data, meter_pty.path, mosquitto.port)
    import_car(str(old_site), code="M-017", name="Maria Aparecida")
    import_car(str(old_site), code="M-018", name="João Batista")
    for lot, member in (("L-0042", "M-017"), ("L-0043", "M-018")):
        done = cli("lot", "members", "-c", str(old_site), lot, "--add", member)
        assert done.returncode == 0, done.stderr
    lots = LotStore.open(old_data / "lots.sqlite3")
    lots.set(STATION, "L-0042", by="maria", source="cli", at_ns=time.time_ns())
    lots.close()
    collector = MqttCollector(port=mosquitto.port, prefix="retention", client_id="c-retention")
    collector.start()
    meter = TicketMeterSim(meter_pty, product=None, seed=11)
    agent = AgentProcess(old_site, tmp_path / "old-agent.log")
    archive = tmp_path / "site.backup"
    port = api_port(old_site)
    try:
        agent.start()

        def online() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                    doc = json.loads(r.read())
            except OSError:
                return False
            return bool(doc["devices"].get("umid-1", {}).get("state") == "online")

        await eventually(
            lambda: asyncio.to_thread(online), timeout_s=30, what="meter", context=agent.log_tail
        )
        for i in range(4):
            assert await meter.emit(moisture_pct=11.0 + i / 10) is not None
            await asyncio.sleep(0.05)
        await eventually(
            lambda: len(lot_seqs(old_data, "L-0042")) == 4,
            timeout_s=30,
            what="L-0042's readings",
            context=agent.log_tail,
        )
        assert cli("lot", "set", "-c", str(old_site), STATION, "L-0043").returncode == 0
        await asyncio.sleep(2.5)  # the agent picks the change up within a second
        for i in range(3):
            assert await meter.emit(moisture_pct=11.5 + i / 10) is not None
            await asyncio.sleep(0.05)
        await eventually(
            lambda: len(lot_seqs(old_data, "L-0043")) == 3,
            timeout_s=30,
            what="L-0043's readings",
            context=agent.log_tail,
        )
        first = lot_seqs(old_data, "L-0042")[0]
        moved = cli(
            "lot", "move", "-c", str(old_site), "--reading", f"umid-1:{first}",
            "--to", "L-0043", "--reason", "amostra trocada", "--by", "ana",
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        blended = cli(
            "lot", "blend", "-c", str(old_site), "L-0100", "--from", "L-0042", "L-0043",
            "--by", "ana",
        )  # fmt: skip
        assert blended.returncode == 0, blended.stderr
        assert "geolocalizado/geolocated" in blended.stdout
        packed = cli("lot", "pack", "-c", str(old_site), "L-0100", "-o", str(tmp_path / "pack"))
        assert packed.returncode == 0, packed.stderr

        # The people-written events go on through the outbox to the sinks.
        def sent_on() -> dict[str, set[str]]:
            got: dict[str, set[str]] = {}
            for doc in collector.of("lot-records"):
                tags, fields = doc["tags"], doc["fields"]
                assert isinstance(tags, dict)
                assert isinstance(fields, dict)
                got.setdefault(str(fields["event"]), set()).add(str(tags["lot"]))
            return got

        await eventually(
            lambda: sent_on().get("blended") == {"L-0042", "L-0043"},
            timeout_s=30,
            what="the lot record events on MQTT",
            context=lambda: f"{sent_on()}\n{agent.log_tail()}",
        )
        assert sent_on()["moved_out"] == {"L-0042"}
        assert sent_on()["moved_in"] == {"L-0043"}
        assert sent_on()["blend"] == {"L-0100"}
        (blend_doc,) = [d for d in collector.of("lot-records") if d["fields"]["event"] == "blend"]  # type: ignore[index]
        assert json.loads(blend_doc["fields"]["data"])["sources"] == "L-0042,L-0043"  # type: ignore[index]

        made = cli("backup", "-c", str(old_site), "-o", str(archive))  # while it runs
        assert made.returncode == 0, made.stderr
        assert agent.alive
    finally:
        collector.stop()
        if agent.alive:
            assert agent.stop() == 0

    manifest = parse_manifest(members(archive)[MANIFEST])
    assert {"lot_records", "evidence", "evidence_key"} <= {f.store for f in manifest.files}

    new_site = site(tmp_path / "new" / "site.toml", new_data, meter_pty.path, mosquitto.port)
    restored = cli("restore", str(archive), "-c", str(new_site))
    assert restored.returncode == 0, restored.stderr

    records = LotRecords.open(new_data / "lots-records.sqlite3")
    try:
        blend = records.record("L-0100")
        into = records.record("L-0043")
    finally:
        records.close()
    assert blend is not None
    assert into is not None
    (event,) = [e for e in blend.events if e.kind == "blend"]
    assert event.data["readings"] == 7
    assert first in [r.seq for r in into.readings]
    assert [e.data["reason"] for e in into.events if e.kind == "moved_in"] == ["amostra trocada"]

    old_evidence = EvidenceStore.open(old_data / "evidence.sqlite3")
    new_evidence = EvidenceStore.open(new_data / "evidence.sqlite3")
    try:
        assert [m.code for m in new_evidence.lot_members("L-0100")] == ["M-017", "M-018"]
        for code in ("M-017", "M-018"):
            plots = new_evidence.plots(code)
            assert plots
            assert all(p.geometry is not None for p in plots)
            assert plots == old_evidence.plots(code)
        assert new_evidence.manifests("L-0100") == old_evidence.manifests("L-0100")
        assert len(new_evidence.manifests("L-0100")) == 1
    finally:
        old_evidence.close()
        new_evidence.close()
    key = "evidence-ed25519.pem"
    assert (new_data / key).read_bytes() == (old_data / key).read_bytes()
    assert (new_data / key).stat().st_mode & 0o777 == 0o600

    # The restored box signs with the same key: its pack's key is the old pack's.
    again = cli("lot", "pack", "-c", str(new_site), "L-0100", "-o", str(tmp_path / "pack2"))
    assert again.returncode == 0, again.stderr
    old_manifest = json.loads((tmp_path / "pack" / "manifest.json").read_bytes())
    new_manifest = json.loads((tmp_path / "pack2" / "manifest.json").read_bytes())
    assert new_manifest["public_key"] == old_manifest["public_key"]
    assert cli("lot", "verify-pack", str(tmp_path / "pack")).returncode == 0
