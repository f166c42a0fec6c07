"""Write the stores of ``previous-release/`` with the code of a release, as it wrote them.

Run it with that release's tree first on the path; the files here were made from
commit d46ac18, the last before schema versions were kept::

    mkdir /tmp/release && git archive d46ac18 | tar -x -C /tmp/release
    PYTHONPATH=/tmp/release .venv/bin/python tests/cases/stores/make_previous_release.py

Each store is created by the release's own ``open`` (its schema, its pragmas); the rows
are the ones ``tests/agent/test_migrations.py`` checks after the upgrade (``EXPECTED``).
The alert state is the release's ``encode_snapshot``. The site file is a minimal one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from coffee_telemetry.agent.alerts.snapshot import encode_snapshot
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.hullers.tasks import HullerState
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.outbox.schema import create_schema
from coffee_telemetry.agent.sqlite import connect
from coffee_telemetry.drivers.counter_autonics_ct import TotalState

OUT = Path(__file__).resolve().parent / "previous-release"
T0 = 1_780_000_000_000_000_000  # 2026-05-28


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    lots = LotStore.open(OUT / "lots.sqlite3")
    lots.set("secador-1", "L-2026-001", by="ana", source="cli", at_ns=T0)
    lots.set("secador-2", "L-2026-002", by="joao", source="mqtt", at_ns=T0 + 1)
    lots.close()

    with MaintenanceStore.open(OUT / "maintenance.sqlite3") as maint:
        state = HullerState(
            counter=TotalState(offset=100, last_pv=42),
            timer=TotalState(offset=3600, last_pv=7200),
            runtime_ms=9_000_000,
            day="2026-05-28",
            day_counter=42,
            day_timer=7200,
            day_runtime_ms=9_000_000,
        )
        maint.save_state("descascador-1", state, at_ns=T0, snapshot_hours=2.5)
        maint.record_service(
            "descascador-1", "peneira", at_ns=T0, hours_at=2.5, note="trocada", by="ana"
        )

    conn = connect(OUT / "outbox.sqlite3", prepare=create_schema, isolation_level=None)
    conn.executemany(
        "INSERT INTO records (device, seq, kind, payload, line) VALUES (?, ?, 'reading', ?, NULL)",
        [("umid-1", seq, json.dumps({"seq": seq}).encode()) for seq in (41, 42)],
    )
    conn.execute("INSERT INTO sequences (device, seq) VALUES ('umid-1', 42), ('balanca-1', 7)")
    conn.execute("INSERT INTO cursors (sink, delivered_id, delivered_total) VALUES ('mqtt', 1, 40)")
    conn.execute("INSERT INTO meta (key, value) VALUES ('dropped_total', 3)")
    conn.close()

    history = History.open(OUT / "history.sqlite3")
    with history.connection as hist:
        hist.execute(
            "INSERT INTO series (id, measurement, device, field)"
            " VALUES (1, 'moisture', 'umid-1', 'moisture_pct')"
        )
        hist.execute(
            "INSERT INTO tagsets (id, station, lot, product)"
            " VALUES (1, 'secador-1', 'L-2026-001', 'arabica')"
        )
        hist.execute(
            "INSERT INTO points (series_id, ts_ns, value, tags_id) VALUES (1, ?, 11.5, 1)", (T0,)
        )
    history.close()

    (OUT / "alerts.json").write_text(encode_snapshot([], {}, next_sweep_ns=T0), encoding="utf-8")
    (OUT / "site.toml").write_text('[site]\nid = "ourofino"\n', encoding="utf-8")
    for leftover in OUT.glob("*-shm"):
        leftover.unlink()
    assert all(not p.name.endswith("-wal") for p in OUT.iterdir())


if __name__ == "__main__":
    main()
