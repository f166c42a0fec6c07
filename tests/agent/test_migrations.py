"""Schema versions: every store opens what the previous release wrote, refuses what a
newer one wrote, and a migration killed midway leaves the store as it was."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coffee_telemetry.agent.alerts.engine import Engine
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.alerts.snapshot import (
    RECENT_VERSION,
    SNAPSHOT_VERSION,
    decode_recent,
    encode_recent,
)
from coffee_telemetry.agent.config import AlertsConfig
from coffee_telemetry.agent.errors import ConfigError, MaintenanceError
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.history import store as history_store
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.hullers import store as maintenance_store
from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.lots import store as lot_store
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.outbox import schema as outbox_schema
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Stamper
from coffee_telemetry.agent.sqlite import connect, migrate, script, user_version
from tests.fakes import stage
from tests.services.net import free_port

PREVIOUS = Path(__file__).resolve().parents[1] / "cases" / "stores" / "previous-release"
ROOT = Path(__file__).resolve().parents[2]

#: Each store's file and the number of steps this code knows.
STORES = {
    "outbox.sqlite3": len(outbox_schema.STEPS),
    "history.sqlite3": len(history_store.STEPS),
    "maintenance.sqlite3": len(maintenance_store.STEPS),
    "lots.sqlite3": len(lot_store.STEPS),
}


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """A copy of the previous release's data directory."""
    data = tmp_path / "data"
    shutil.copytree(PREVIOUS, data)
    return data


def content(path: Path) -> str:
    """The store's schema and rows (opening may bump the header's change counter)."""
    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def raw_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return user_version(conn)
    finally:
        conn.close()


def set_raw_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version={version}")
    finally:
        conn.close()


def open_outbox_once(path: Path) -> dict[str, int]:
    async def main() -> dict[str, int]:
        async with open_outbox(path, sinks=["mqtt"]) as outbox:
            return await outbox.sequences()

    return asyncio.run(main())


# -- upgrade from the previous release ------------------------------------------------


def test_previous_release_stores_are_unversioned_fixtures() -> None:
    # The fixture is what that release wrote: no versions but the maintenance store's.
    assert {name: raw_version(PREVIOUS / name) for name in STORES} == {
        "outbox.sqlite3": 0,
        "history.sqlite3": 0,
        "maintenance.sqlite3": 1,
        "lots.sqlite3": 0,
    }


def test_outbox_of_the_previous_release_migrates_and_keeps_its_state(previous: Path) -> None:
    path = previous / "outbox.sqlite3"
    assert open_outbox_once(path) == {"umid-1": 42, "balanca-1": 7}
    assert raw_version(path) == len(outbox_schema.STEPS)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT device, seq, kind FROM records ORDER BY id").fetchall() == [
            ("umid-1", 41, "reading"),
            ("umid-1", 42, "reading"),
        ]
        assert conn.execute("SELECT delivered_id, delivered_total FROM cursors").fetchall() == [
            (1, 40)
        ]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        assert meta["dropped_total"] == 3
        assert meta["epoch"] > 0
        assert conn.execute("SELECT COUNT(*) FROM provisional").fetchone() == (0,)
    finally:
        conn.close()
    epoch = meta["epoch"]
    open_outbox_once(path)  # a second open runs nothing: the epoch stays
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone() == (epoch,)
    finally:
        conn.close()


def test_outbox_from_before_kind_and_line_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL,"
        " seq INTEGER NOT NULL, payload BLOB NOT NULL)"
    )
    conn.execute("INSERT INTO records (device, seq, payload) VALUES ('umid-1', 5, x'7b7d')")
    conn.commit()
    conn.close()
    assert open_outbox_once(path) == {"umid-1": 5}  # numbering goes on past a record held
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT seq, kind, line FROM records").fetchall() == [
            (5, "reading", None)
        ]
    finally:
        conn.close()


def test_lot_store_of_the_previous_release_migrates(previous: Path) -> None:
    store = LotStore.open(previous / "lots.sqlite3")
    try:
        active = store.active()
    finally:
        store.close()
    assert {s: a.lot for s, a in active.items()} == {
        "secador-1": "L-2026-001",
        "secador-2": "L-2026-002",
    }
    assert raw_version(previous / "lots.sqlite3") == len(lot_store.STEPS)


def test_maintenance_store_of_the_previous_release_opens(previous: Path) -> None:
    with MaintenanceStore.open(previous / "maintenance.sqlite3") as store:
        state = store.state("descascador-1")
        services = store.services("descascador-1")
    assert state is not None
    assert state.counter.offset == 100
    assert state.runtime_ms == 9_000_000
    assert [(s.task, s.note, s.by) for s in services] == [("peneira", "trocada", "ana")]


def test_history_of_the_previous_release_migrates(previous: Path) -> None:
    path = previous / "history.sqlite3"
    History.open(path).close()
    assert raw_version(path) == len(history_store.STEPS)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT series_id, value FROM points").fetchall() == [(1, 11.5)]
        assert conn.execute("SELECT lot FROM tagsets").fetchall() == [("L-2026-001",)]
    finally:
        conn.close()


def test_alert_state_of_the_previous_release_restores() -> None:
    text = (PREVIOUS / "alerts.json").read_text(encoding="utf-8")
    assert Engine.restore([], text).alerts(0) == []


# -- a newer store is refused, untouched ----------------------------------------------


@pytest.mark.parametrize("name", sorted(STORES))
def test_a_store_of_a_newer_version_is_refused_untouched(previous: Path, name: str) -> None:
    path = previous / name
    newer = STORES[name] + 1
    set_raw_version(path, newer)
    before = content(path)
    opens: dict[str, Callable[[], object]] = {
        "outbox.sqlite3": lambda: open_outbox_once(path),
        "history.sqlite3": lambda: History.open(path).close(),
        "maintenance.sqlite3": lambda: MaintenanceStore.open(path).close(),
        "lots.sqlite3": lambda: LotStore.open(path).close(),
    }
    error = MaintenanceError if name == "maintenance.sqlite3" else ConfigError
    with pytest.raises(error) as refused:
        opens[name]()
    message = str(refused.value)
    assert str(path) in message
    assert f"version {newer}" in message
    assert f"supports up to {STORES[name]}" in message
    assert "newer version" in message
    assert content(path) == before
    assert raw_version(path) == newer


def test_an_alert_state_of_a_newer_version_is_refused() -> None:
    text = f'{{"version": {SNAPSHOT_VERSION + 1}, "future": true}}'
    with pytest.raises(ConfigError, match=f"version {SNAPSHOT_VERSION + 1}.*up to 1"):
        Engine.restore([], text)


# -- the mechanism --------------------------------------------------------------------


def test_script_runs_each_statement_inside_the_callers_transaction(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s.db", isolation_level=None)
    steps = (script("CREATE TABLE a (x TEXT); INSERT INTO a VALUES ('one; two');"),)

    def fail(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("step 2 fails")

    with pytest.raises(sqlite3.OperationalError, match="step 2 fails"):
        migrate(conn, (*steps, fail), name="test")
    assert user_version(conn) == 0
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # rolled back
    assert migrate(conn, steps, name="test") == 0
    assert conn.execute("SELECT x FROM a").fetchall() == [("one; two",)]
    assert migrate(conn, steps, name="test") == 1  # current: nothing runs
    assert conn.execute("SELECT COUNT(*) FROM a").fetchone() == (1,)
    conn.close()


KILLED_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from coffee_telemetry.agent.outbox.schema import STEPS
    from coffee_telemetry.agent.sqlite import connect, migrate

    path, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def long_step(conn):
        # A next version's step: rewrites the records, then is killed before the commit.
        conn.execute("ALTER TABLE records ADD COLUMN extra TEXT")
        conn.execute("UPDATE records SET seq = seq + 1000")
        conn.executemany(
            "INSERT INTO records (device, seq, payload) VALUES ('x', ?, zeroblob(512))",
            ((n,) for n in range(20000)),
        )
        conn.execute("DELETE FROM sequences")
        marker.write_text("in the step")
        sys.stdin.read()  # wait to be killed

    connect(path, prepare=lambda conn: migrate(conn, (*STEPS, long_step), name="outbox"))
    """
)


def test_sigkill_during_a_migration_leaves_the_old_version_usable(previous: Path) -> None:
    path = previous / "outbox.sqlite3"
    marker = previous / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), str(marker)],
        stdin=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the migrating child exited before its last step"
            assert time.monotonic() < deadline, "the migrating child never reached its step"
            time.sleep(0.05)
        assert Path(f"{path}-wal").stat().st_size > 1_000_000  # the step's pages are in the WAL
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL
    # Killed: the store is at the previous release's version, with its rows as they were.
    assert raw_version(path) == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT device, seq FROM records ORDER BY id").fetchall() == [
            ("umid-1", 41),
            ("umid-1", 42),
        ]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "provisional" not in tables
    finally:
        conn.close()
    # And this version opens and migrates it.
    assert open_outbox_once(path) == {"umid-1": 42, "balanca-1": 7}
    assert raw_version(path) == len(outbox_schema.STEPS)


def test_recent_alerts_read_the_old_bare_list_and_refuse_a_newer_document() -> None:
    doc = {"rule": "wet_lot", "subject": "L-1"}
    assert decode_recent(json.dumps([doc, "junk"])) == [doc]  # written before versions
    assert decode_recent(encode_recent([doc])) == [doc]
    assert json.loads(encode_recent([doc]))["version"] == RECENT_VERSION
    with pytest.raises(ConfigError, match=f"version {RECENT_VERSION + 1}"):
        decode_recent(json.dumps({"version": RECENT_VERSION + 1, "recent": []}))
    with pytest.raises(ValueError, match="not a list"):
        decode_recent(json.dumps({"version": 0}))


@pytest.mark.parametrize("name", ["alerts.json", "alerts-recent.json"])
async def test_the_alert_service_refuses_a_newer_state_file_and_keeps_it(
    tmp_path: Path, name: str
) -> None:
    newer = json.dumps({"version": 99, "recent": [], "rules": {}})
    (tmp_path / name).write_text(newer, encoding="utf-8")
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["x"]) as outbox:
        with pytest.raises(ConfigError) as refused:
            AlertService(
                cfg=AlertsConfig.model_validate({"wet_lot": {"k": 1, "n": 1}}),
                site="s1",
                state_path=tmp_path / "alerts.json",
                record=stage(outbox.accept, stamper).record,
                outbox=outbox,
                health=Health(),
            )
    assert str(tmp_path / name) in str(refused.value)
    assert "version 99" in str(refused.value)
    assert (tmp_path / name).read_text(encoding="utf-8") == newer


@pytest.mark.parametrize("name", ["outbox.sqlite3", "lots.sqlite3", "alerts.json"])
def test_the_agent_refuses_to_start_on_a_newer_store(previous: Path, name: str) -> None:
    path = previous / name
    if name.endswith(".json"):
        path.write_text(json.dumps({"version": 99}), encoding="utf-8")
    else:
        set_raw_version(path, 99)
    config = previous / "site.toml"
    config.write_text(
        f'[site]\nid = "ourofino"\n[agent]\ndata_dir = "{previous}"\ntime_sources = ["system"]\n'
        f"[mqtt]\nenabled = false\n[api]\nport = {free_port()}\n",
        encoding="utf-8",
    )
    agent = subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", "run", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert agent.returncode == 2, agent.stderr
    assert f"configuration error:\n{path}: " in agent.stderr
    assert "version 99" in agent.stderr
    assert "Traceback" not in agent.stderr
