"""``coffee-telemetry backup`` / ``restore``: what is saved, what comes back, what is refused."""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from coffee_telemetry.agent.backup import (
    MANIFEST,
    BackupError,
    encode_manifest,
    parse_manifest,
    read_backup,
    store_holder,
)
from coffee_telemetry.agent.cli.backup import SEQ_RESTORE_GAP, supported_versions
from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.lots.store import LotStore
from tests.agent.test_migrations import PREVIOUS, open_outbox_once, raw_version

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def site(path: Path, data_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[site]\nid = "ourofino"\n[agent]\ndata_dir = "{data_dir}"\n')
    return path


@pytest.fixture
def old_site(tmp_path: Path) -> Path:
    """A site whose data folder is the previous release's stores, opened by this version."""
    data = tmp_path / "old" / "data"
    shutil.copytree(PREVIOUS, data)
    (data / "site.toml").unlink()
    open_outbox_once(data / "outbox.sqlite3")
    LotStore.open(data / "lots.sqlite3").close()
    return site(tmp_path / "old" / "site.toml", data)


def sequences(outbox: Path) -> dict[str, int]:
    conn = sqlite3.connect(outbox)
    try:
        return dict(conn.execute("SELECT device, seq FROM sequences").fetchall())
    finally:
        conn.close()


def meta(outbox: Path) -> dict[str, int]:
    conn = sqlite3.connect(outbox)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def record_count(outbox: Path) -> int:
    conn = sqlite3.connect(outbox)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    finally:
        conn.close()


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            out[info.name] = f.read()
        return out


def repack(archive: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- a round trip ---------------------------------------------------------------------


def test_backup_then_restore_into_a_fresh_box(run: Run, old_site: Path, tmp_path: Path) -> None:
    archive = tmp_path / "site.backup"
    code, out, _ = run("backup", "-c", str(old_site), "-o", str(archive))
    assert code == 0, out
    assert archive.stat().st_mode & 0o777 == 0o600  # the site file holds credentials
    manifest = parse_manifest(members(archive)[MANIFEST])
    assert {f.store for f in manifest.files} == {"site", "outbox", "lots", "maintenance", "alerts"}
    outbox_entry = manifest.entry("outbox")
    assert outbox_entry is not None
    assert outbox_entry.schema_version == supported_versions()["outbox"]
    assert not manifest.with_outbox

    new_data = tmp_path / "new" / "data"
    new_site = site(tmp_path / "new" / "site.toml", new_data)
    code, out, err = run("restore", str(archive), "-c", str(new_site))
    assert code == 0, err
    assert "restaurado" in out

    store = LotStore.open(new_data / "lots.sqlite3")
    try:
        assert {s: a.lot for s, a in store.active().items()} == {
            "secador-1": "L-2026-001",
            "secador-2": "L-2026-002",
        }
    finally:
        store.close()
    with MaintenanceStore.open(new_data / "maintenance.sqlite3") as maint:
        assert [s.task for s in maint.services("descascador-1")] == ["peneira"]
    old_outbox = old_site.parent / "data" / "outbox.sqlite3"
    new_outbox = new_data / "outbox.sqlite3"
    # Sequences go on past the backup's (with room for what the old box numbered since),
    # in a new epoch; the records stayed behind (no --with-outbox).
    assert sequences(new_outbox) == {
        device: seq + SEQ_RESTORE_GAP for device, seq in sequences(old_outbox).items()
    }
    assert meta(new_outbox)["epoch"] != meta(old_outbox)["epoch"]
    assert meta(new_outbox)["dropped_total"] == 3
    assert record_count(new_outbox) == 0
    assert record_count(old_outbox) == 2
    # The records left behind count as delivered: no sink waits for one that is not there.
    conn = sqlite3.connect(new_outbox)
    try:
        assert conn.execute("SELECT sink, delivered_id FROM cursors").fetchall() == [("mqtt", 2)]
    finally:
        conn.close()
    assert open_outbox_once(new_outbox) == sequences(new_outbox)
    assert json.loads((new_data / "alerts.json").read_text())["version"] == 1


def test_with_outbox_keeps_the_undelivered_records(
    run: Run, old_site: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "site.backup"
    assert run("backup", "-c", str(old_site), "-o", str(archive), "--with-outbox")[0] == 0
    new_site = site(tmp_path / "new" / "site.toml", tmp_path / "new" / "data")
    assert run("restore", str(archive), "-c", str(new_site))[0] == 0
    assert record_count(tmp_path / "new" / "data" / "outbox.sqlite3") == 2


def test_restore_writes_the_site_file_when_there_is_none(
    run: Run, old_site: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "site.backup"
    assert run("backup", "-c", str(old_site), "-o", str(archive))[0] == 0
    shutil.rmtree(old_site.parent / "data")  # the old box's SD card is gone
    target = tmp_path / "etc" / "site.toml"
    code, _out, err = run("restore", str(archive), "-c", str(target))
    assert code == 0, err
    assert target.read_bytes() == old_site.read_bytes()
    assert (old_site.parent / "data" / "lots.sqlite3").exists()  # the site's own data_dir


def test_a_previous_release_backup_restores_and_migrates(run: Run, tmp_path: Path) -> None:
    data = tmp_path / "old" / "data"
    shutil.copytree(PREVIOUS, data)
    old = site(tmp_path / "old" / "site.toml", data)
    archive = tmp_path / "site.backup"
    assert run("backup", "-c", str(old), "-o", str(archive))[0] == 0
    new_site = site(tmp_path / "new" / "site.toml", tmp_path / "new" / "data")
    assert run("restore", str(archive), "-c", str(new_site))[0] == 0
    outbox = tmp_path / "new" / "data" / "outbox.sqlite3"
    assert raw_version(outbox) == 0
    open_outbox_once(outbox)  # the agent migrates it at start
    assert raw_version(outbox) == supported_versions()["outbox"]


# -- refusals -------------------------------------------------------------------------


def test_restore_refuses_to_replace_state_without_force(
    run: Run, old_site: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "site.backup"
    assert run("backup", "-c", str(old_site), "-o", str(archive))[0] == 0
    outbox = old_site.parent / "data" / "outbox.sqlite3"
    before = sequences(outbox)
    code, _, err = run("restore", str(archive), "-c", str(old_site))
    assert code == 1
    assert "--force" in err
    assert sequences(outbox) == before
    Path(f"{outbox}-wal").write_bytes(b"stale WAL of a crashed agent")
    code, _, err = run("restore", str(archive), "-c", str(old_site), "--force")
    assert code == 0, err
    assert not Path(f"{outbox}-wal").exists()
    assert sequences(outbox) == {d: s + SEQ_RESTORE_GAP for d, s in before.items()}


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("SELECT COUNT(*) FROM sequences").fetchall()
print("open", flush=True)
sys.stdin.read()
"""


def test_restore_refuses_while_the_agent_has_the_stores_open(
    run: Run, old_site: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "site.backup"
    assert run("backup", "-c", str(old_site), "-o", str(archive))[0] == 0
    outbox = old_site.parent / "data" / "outbox.sqlite3"
    assert store_holder(outbox) is None
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(outbox)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline() == "open\n"
        assert store_holder(outbox) == holder.pid
        code, _, err = run("restore", str(archive), "-c", str(old_site), "--force")
        holder.stdin.close()
    assert code == 1
    assert f"processo {holder.pid}" in err
    assert "rodando" in err
    assert store_holder(outbox) is None


@pytest.fixture
def archive(run: Run, old_site: Path, tmp_path: Path) -> Path:
    path = tmp_path / "site.backup"
    assert run("backup", "-c", str(old_site), "-o", str(path))[0] == 0
    return path


def edited(files: dict[str, bytes], how: str) -> dict[str, bytes]:
    manifest = json.loads(files[MANIFEST])
    if how == "byte flipped":
        data = bytearray(files["data/lots.sqlite3"])
        data[5000] ^= 0x01
        files["data/lots.sqlite3"] = bytes(data)
    elif how == "file swapped, size kept":
        files["data/lots.sqlite3"] = files["data/outbox.sqlite3"][: len(files["data/lots.sqlite3"])]
    elif how == "file missing":
        del files["data/maintenance.sqlite3"]
    elif how == "extra file":
        files["data/../../etc/evil"] = b"x"
    elif how == "newer store":
        for f in manifest["files"]:
            if f["store"] == "outbox":
                f["schema_version"] = 99
    elif how == "newer layout":
        manifest["format_version"] = 2
    elif how == "unknown store name":
        manifest["files"][0]["name"] = "../site.toml"
    files[MANIFEST] = json.dumps(manifest).encode()
    return files


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("byte flipped", "SHA-256 differs"),
        ("file swapped, size kept", "SHA-256 differs"),
        ("file missing", "lacks data/maintenance.sqlite3"),
        ("extra file", "not in its manifest"),
        ("newer store", r"newer version.*schema version 99.*supports up to \d+"),
        ("newer layout", "newer version.*layout 2"),
        ("unknown store name", "must be saved as"),
    ],
)
def test_an_edited_backup_is_refused_and_nothing_is_written(
    run: Run, archive: Path, tmp_path: Path, how: str, why: str
) -> None:
    repack(archive, edited(members(archive), how))
    new_data = tmp_path / "new" / "data"
    target = tmp_path / "new" / "site.toml"
    code, _, err = run("restore", str(archive), "-c", str(target))
    assert code == 1
    assert "backup recusado / backup refused" in err
    assert re.search(why, err), err
    assert not target.exists()
    assert not new_data.exists()


def test_a_truncated_backup_is_refused(run: Run, archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    code, _, err = run("restore", str(archive), "-c", str(tmp_path / "new.toml"))
    assert code == 1
    assert "not a readable backup" in err


def test_manifest_round_trip(archive: Path) -> None:
    manifest = parse_manifest(members(archive)[MANIFEST])
    assert parse_manifest(encode_manifest(manifest)) == manifest


def test_read_backup_refuses_a_non_archive(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BackupError, match="not a readable backup"):
        read_backup(path, tmp_path, supported={})


def test_restore_refuses_while_the_agents_pid_file_names_a_live_agent(
    run: Run, archive: Path, tmp_path: Path
) -> None:
    data = tmp_path / "new" / "data"
    data.mkdir(parents=True)
    target = site(tmp_path / "new" / "site.toml", data)
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "coffee-telemetry", "run"],
        stdin=subprocess.PIPE,
    ) as agent:
        assert agent.stdin is not None
        (data / "agent.pid").write_text(f"{agent.pid}\n")
        code, _, err = run("restore", str(archive), "-c", str(target))
        agent.stdin.close()
    assert code == 1
    assert f"processo {agent.pid}" in err
    assert not (data / "lots.sqlite3").exists()
    # The agent is gone, its pid file stayed (killed): restore goes on.
    code, _, err = run("restore", str(archive), "-c", str(target))
    assert code == 0, err
