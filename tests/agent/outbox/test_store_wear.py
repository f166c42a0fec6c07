"""Outbox settings that wear an SD card less, applied, and losing nothing.

Packed records (``compress``), small pages (``page_size``), cursor moves written once per
``cursor_flush_s`` rather than with every commit, delivered records deleted once per
``prune_interval_s`` and checkpoints once per ``checkpoint_interval_s``: each is checked
on a real store, and a writer killed with SIGKILL mid-stream under the ``sd-card``
profile loses no accepted record and never has a cursor past what its sink confirmed.
The bytes each saves are measured by ``bench/writes.py``, not here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.app import open_configured_outbox
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.history.service import open_configured_history
from coffee_telemetry.agent.hullers.store import MaintenanceStore, open_maintenance_store
from coffee_telemetry.agent.outbox.schema import PACKED, pack, unpack
from coffee_telemetry.agent.outbox.sink import Rejection
from coffee_telemetry.agent.outbox.stats import read_dead_letters, read_stats
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading

ROOT = Path(__file__).resolve().parents[3]


def make(stamper: Stamper, n: int, device: str = "umid-1") -> list[Reading]:
    return [
        stamper.stamp(
            device=device,
            measurement="moisture",
            fields={"moisture_pct": 10.0 + i / 10, "audit": f"GEHAKA G650\nAmostra: {i:06d}"},
            tags={"site": "s", "device": device, "station": "secador"},
            ts_ns=1_700_000_000_000_000_000 + i,
        )
        for i in range(n)
    ]


def line_of(reading: Reading) -> str:
    return f"moisture,device={reading.device} moisture_pct={reading.fields['moisture_pct']}"


def sd_card(data: Path, **outbox: object) -> Config:
    return parse_config(
        {
            "site": {"id": "s"},
            "agent": {"data_dir": str(data), "storage_profile": "sd-card"},
            "outbox": outbox,
        }
    )


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """What another connection sees (committed rows only)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def page_size(db: Path) -> int:
    return int(query(db, "PRAGMA page_size")[0][0])


# -- packed records ----------------------------------------------------------------------


@given(payload=st.binary().filter(lambda b: b"\x00" not in b), line=st.none() | st.text())
def test_pack_round_trips(payload: bytes, line: str | None) -> None:
    packed, no_line = pack(payload, line)
    assert packed.startswith(PACKED)
    assert no_line is None
    assert unpack(packed, None) == (payload, line)


@given(stored=st.binary(), line=st.none() | st.text())
def test_unpack_of_any_bytes_returns_or_refuses(stored: bytes, line: str | None) -> None:
    try:
        payload, _ = unpack(stored, line)
    except ValueError:
        assert stored.startswith(PACKED)
        return
    assert isinstance(payload, bytes)


async def test_packed_records_are_read_back_byte_identical(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    stamper = Stamper()
    first, second = make(stamper, 3), make(stamper, 2, device="umid-2")
    async with open_outbox(db, sinks=["a"], line_encoder=line_of, compress=True) as ob:
        await ob.accept(first)
    stored = query(db, "SELECT payload, line FROM records ORDER BY id")
    assert all(bytes(p).startswith(PACKED) for p, _ in stored)
    assert all(line is None for _, line in stored)
    plain = sum(len(encode_reading(r)) + len(line_of(r)) for r in first)
    assert sum(len(bytes(p)) for p, _ in stored) < plain
    # Reopened without packing: old packed records and new plain ones side by side.
    async with open_outbox(db, sinks=["a"], line_encoder=line_of) as ob:
        await ob.accept(second)
        batch = await ob.read_batch("a", 10)
        stats = await ob.stats()
    assert [r.payload for r in batch] == [encode_reading(r) for r in first + second]
    assert [r.line for r in batch] == [line_of(r) for r in first + second]
    assert [r.reading for r in batch] == first + second
    assert stats.sinks[0].oldest_ns == first[0].ts_ns
    assert stats.sinks[0].backlog == 5


async def test_dead_letter_of_a_packed_record_keeps_the_plain_payload(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    (reading,) = make(Stamper(), 1)
    async with open_outbox(db, sinks=["influx"], line_encoder=line_of, compress=True) as ob:
        (rid,) = await ob.accept([reading])
        await ob.ack(
            "influx", rid, rejected=[Rejection(record_id=rid, status=400, reason="bad field")]
        )
    (letter,) = read_dead_letters(db)
    assert letter.payload == encode_reading(reading)
    assert read_stats(db).sinks[0].dead_total == 1


async def test_restamped_packed_records_stay_packed_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    stamper = Stamper()
    provisional = [dataclasses.replace(r, time_quality="provisional") for r in make(stamper, 2)]
    async with open_outbox(db, sinks=["a"], line_encoder=line_of, compress=True) as ob:
        ob.set_boot("boot-1")
        await ob.accept(provisional)
        assert ob.ready_id == 0
        again = await ob.resolve(delta_ns=5, quality="estimated", boot=None)
        batch = await ob.read_batch("a", 10)
    assert [r.ts_ns for r in again] == [r.ts_ns + 5 for r in provisional]
    assert {r.time_quality for r in again} == {"estimated"}
    assert [r.payload for r in batch] == [encode_reading(r) for r in again]
    assert all(bytes(p).startswith(PACKED) for (p,) in query(db, "SELECT payload FROM records"))
    # The quota's count after a restart (from SQL) is the one kept in memory.
    assert read_stats(db).bytes_held == sum(
        len(bytes(p)) + 48 for (p,) in query(db, "SELECT payload FROM records")
    )


# -- page size ---------------------------------------------------------------------------


async def test_sd_card_profile_creates_stores_with_small_pages(tmp_path: Path) -> None:
    cfg = sd_card(tmp_path)
    assert cfg.outbox.page_size == 512
    assert cfg.outbox.compress
    assert cfg.outbox.checkpoint_interval_s == 60
    assert cfg.history.page_size == 1024
    async with open_configured_outbox(cfg, ["mqtt"]) as ob:
        await ob.accept(make(Stamper(), 3))
    async with open_maintenance_store(
        cfg.maintenance_path, synchronous=cfg.outbox.synchronous, page_size=cfg.outbox.page_size
    ):
        pass
    async with open_configured_history(cfg):
        pass
    assert page_size(cfg.outbox_path) == 512
    assert page_size(cfg.maintenance_path) == 512
    assert page_size(cfg.history_path) == 1024
    default = parse_config({"site": {"id": "s"}, "agent": {"data_dir": str(tmp_path / "d")}})
    async with open_configured_outbox(default, ["mqtt"]), open_configured_history(default):
        pass
    assert page_size(default.outbox_path) == page_size(default.history_path) == 4096
    assert [bytes(p)[:1] for (p,) in query(cfg.outbox_path, "SELECT payload FROM records")] == [
        PACKED
    ] * 3


async def test_an_existing_store_keeps_its_page_size_and_records(tmp_path: Path) -> None:
    db = tmp_path / "data" / "outbox.sqlite3"
    stamper = Stamper()
    readings = make(stamper, 4)
    async with open_outbox(db, sinks=["mqtt"]) as ob:
        await ob.accept(readings)
    assert page_size(db) == 4096
    async with open_configured_outbox(sd_card(tmp_path / "data"), ["mqtt"]) as ob:
        batch = await ob.read_batch("mqtt", 10)
    assert page_size(db) == 4096
    assert [r.reading for r in batch] == readings
    MaintenanceStore.open(tmp_path / "m.db").close()
    MaintenanceStore.open(tmp_path / "m.db", page_size=512).close()
    assert page_size(tmp_path / "m.db") == 4096


# -- cursors, pruning, checkpoints -------------------------------------------------------


def cursor_on_disk(db: Path) -> int:
    return int(query(db, "SELECT delivered_id FROM cursors WHERE sink = 'a'")[0][0])


async def test_cursor_moves_wait_for_their_interval_not_the_next_commit(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    stamper = Stamper()
    async with open_outbox(db, sinks=["a"], cursor_flush_s=1.0, sync_interval_s=60) as ob:
        await asyncio.sleep(1.1)  # the first interval passes with nothing to write
        await ob.accept(make(stamper, 3))
        await ob.ack("a", 3)
        await ob.accept(make(stamper, 1))  # rides along: the interval had passed
        assert cursor_on_disk(db) == 3
        await ob.ack("a", 4)
        await ob.accept(make(stamper, 1))  # within the interval: the cursor stays in memory
        assert ob.cursor("a") == 4
        assert cursor_on_disk(db) == 3
        deadline = time.monotonic() + 5
        while cursor_on_disk(db) != 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # written alone once the interval is over
        assert cursor_on_disk(db) == 4
        await ob.ack("a", 5)
    assert cursor_on_disk(db) == 5  # and every move on a clean close


async def test_delivered_records_are_deleted_once_per_prune_interval(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    stamper = Stamper()

    def held() -> list[int]:
        return [int(r[0]) for r in query(db, "SELECT id FROM records ORDER BY id")]

    async with open_outbox(
        db, sinks=["a"], cursor_flush_s=0.05, prune_interval_s=1.0, sync_interval_s=60
    ) as ob:
        await ob.accept(make(stamper, 4))
        await asyncio.sleep(1.1)
        await ob.ack("a", 2)
        await ob.flush()
        assert held() == [3, 4]  # the first prune: its interval had passed
        await ob.ack("a", 3)
        await ob.flush()
        assert cursor_on_disk(db) == 3  # the cursor is written at once...
        assert held() == [3, 4]  # ...record 3 waits for the next prune
        assert ob.backlog("a") == 1
        assert [r.id for r in await ob.read_batch("a", 10)] == [4]
        await ob.ack("a", 4)
    assert held() == []  # a clean close prunes
    assert read_stats(db).sinks[0].delivered_total == 4


async def test_checkpoints_wait_for_their_interval(tmp_path: Path) -> None:
    db = tmp_path / "o.db"

    def in_database_file() -> int:
        # immutable=1 reads the database file alone, ignoring the WAL.
        conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            conn.close()

    async with open_outbox(db, sinks=["a"]):
        pass  # created, and checkpointed on close
    async with open_outbox(db, sinks=["a"], sync_interval_s=0.1, checkpoint_interval_s=2.0) as ob:
        await ob.accept(make(Stamper(), 20))
        await asyncio.sleep(0.8)  # several fsyncs, no checkpoint yet
        assert in_database_file() == 0
        deadline = time.monotonic() + 5
        while in_database_file() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert in_database_file() == 20


# -- a kill under the sd-card profile ----------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from coffee_telemetry.agent.app import open_configured_outbox
    from coffee_telemetry.agent.config import parse_config
    from coffee_telemetry.agent.readings import Stamper

    async def main():
        cfg = parse_config({"site": {"id": "s"},
                            "agent": {"data_dir": sys.argv[1], "storage_profile": "sd-card"},
                            "outbox": {"cursor_flush_s": 2.0}})
        stamper = Stamper()
        async with open_configured_outbox(cfg, ["a"]) as ob:
            i = 0
            while True:
                batch = []
                for _ in range(5):
                    i += 1
                    batch.append(stamper.stamp(
                        device="umid-%d" % (i % 3), measurement="moisture",
                        fields={"moisture_pct": 11.0 + i % 7}, tags={"site": "s"}))
                ids = await ob.accept(batch)
                for rid, r in zip(ids, batch):
                    print("accepted", rid, r.device, r.seq, flush=True)
                # The sink confirms all but the newest two.
                await ob.ack("a", ids[-1] - 2)
                print("confirmed", ids[-1] - 2, "-", 0, flush=True)

    asyncio.run(main())
    """
)


def test_sigkill_under_the_sd_card_profile_loses_nothing_accepted(tmp_path: Path) -> None:
    cfg = sd_card(tmp_path, cursor_flush_s=2.0)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.stdout is not None
    accepted: list[int] = []
    last_seq: dict[str, int] = {}
    confirmed = 0
    start = time.monotonic()
    # Long enough for a cursor write and prune (cursor_flush_s = 2 s here)...
    while len(accepted) < 20 or time.monotonic() < start + 5:
        assert time.monotonic() < start + 30, "the writer stalled"
        what, n, device, seq = proc.stdout.readline().split()
        if what == "accepted":
            accepted.append(int(n))
            last_seq[device] = int(seq)
        else:
            confirmed = int(n)
    proc.send_signal(signal.SIGKILL)  # ...then killed mid-stream, with no goodbye
    proc.wait(timeout=10)
    for line in proc.stdout.read().splitlines():
        what, n, device, seq = line.split()
        if what == "accepted":
            accepted.append(int(n))
            last_seq[device] = int(seq)
    proc.stdout.close()

    cursor = int(query(cfg.outbox_path, "SELECT delivered_id FROM cursors")[0][0])
    held = {int(r[0]) for r in query(cfg.outbox_path, "SELECT id FROM records")}
    assert len(accepted) >= 20
    assert 0 < cursor <= confirmed  # written at some point, never past a confirmation
    # Every accepted record is still held, or was confirmed and deleted.
    assert all(rid in held or rid <= cursor for rid in accepted)
    assert max(accepted) in held

    # Sequence numbers of every accepted record are on disk, with it: numbering goes on.
    async def reopened() -> dict[str, int]:
        async with open_configured_outbox(cfg, ["a"]) as ob:
            return await ob.sequences()

    seqs = asyncio.run(reopened())
    assert all(seqs[device] >= seq for device, seq in last_seq.items()), (seqs, last_seq)
    table = dict(query(cfg.outbox_path, "SELECT device, seq FROM sequences"))
    assert table == seqs
