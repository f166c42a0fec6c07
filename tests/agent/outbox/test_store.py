"""Outbox: durability, per-sink cursors, quota drops, dead letters."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from coffee_telemetry.agent.errors import OutboxError
from coffee_telemetry.agent.outbox.sink import Rejection
from coffee_telemetry.agent.outbox.stats import read_dead_letters, read_stats
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper, decode_reading, encode_reading


def make(stamper: Stamper, n: int, device: str = "umid-1", start: float = 10.0) -> list[Reading]:
    return [
        stamper.stamp(
            device=device,
            measurement="moisture",
            fields={"moisture_pct": start + i / 10},
            tags={"site": "s", "device": device},
            ts_ns=1_700_000_000_000_000_000 + i,
        )
        for i in range(n)
    ]


async def test_accept_then_read_in_order(tmp_path: Path) -> None:
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["a", "b"]) as ob:
        ids = await ob.accept(make(stamper, 5))
        assert ids == [1, 2, 3, 4, 5]
        batch = await ob.read_batch("a", 3)
        assert [r.id for r in batch] == [1, 2, 3]
        assert [r.reading.seq for r in batch] == [1, 2, 3]
        assert batch[0].payload == encode_reading(batch[0].reading)
        assert ob.backlog("a") == 5


async def test_payload_is_stored_byte_identical(tmp_path: Path) -> None:
    stamper = Stamper()
    readings = make(stamper, 3)
    async with open_outbox(tmp_path / "o.db", sinks=["a"]) as ob:
        await ob.accept(readings)
    # A fresh process reads exactly the bytes that were first encoded.
    async with open_outbox(tmp_path / "o.db", sinks=["a"]) as ob:
        batch = await ob.read_batch("a", 10)
    assert [r.payload for r in batch] == [encode_reading(r) for r in readings]
    assert [decode_reading(r.payload) for r in batch] == readings


async def test_cursors_are_independent_and_prune_when_all_delivered(tmp_path: Path) -> None:
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["mqtt", "influx"]) as ob:
        await ob.accept(make(stamper, 10))
        await ob.ack("mqtt", 10)
        assert ob.backlog("mqtt") == 0
        assert ob.backlog("influx") == 10
        stats = await ob.stats()
        assert stats.records == 10  # influx still owes them all
        await ob.ack("influx", 4)
        stats = await ob.stats()
        assert stats.records == 6
        batch = await ob.read_batch("influx", 100)
        assert [r.id for r in batch] == [5, 6, 7, 8, 9, 10]


async def test_cursor_and_backlog_survive_restart(tmp_path: Path) -> None:
    stamper = Stamper()
    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["mqtt", "influx"]) as ob:
        await ob.accept(make(stamper, 7))
        await ob.ack("mqtt", 7)
        await ob.ack("influx", 3)
    async with open_outbox(path, sinks=["mqtt", "influx"]) as ob:
        assert ob.cursor("mqtt") == 7
        assert ob.cursor("influx") == 3
        assert [r.id for r in await ob.read_batch("influx", 100)] == [4, 5, 6, 7]
        assert await ob.read_batch("mqtt", 100) == []
        # New records continue the id sequence; ids are never reused.
        assert await ob.accept(make(Stamper(), 1)) == [8]


async def test_sequences_persist_with_records(tmp_path: Path) -> None:
    stamper = Stamper()
    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["a"]) as ob:
        await ob.accept(make(stamper, 4, device="x"))
        await ob.accept(make(stamper, 2, device="y"))
        await ob.ack("a", 6)  # delivered and pruned: sequences must still survive
    async with open_outbox(path, sinks=["a"]) as ob:
        assert await ob.sequences() == {"x": 4, "y": 2}
        restored = Stamper()
        restored.restore(await ob.sequences())
        assert make(restored, 1, device="x")[0].seq == 5


async def test_concurrent_producers_are_group_committed(tmp_path: Path) -> None:
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["a"]) as ob:
        groups = [make(stamper, 1, device=f"d{i % 4}") for i in range(200)]
        results = await asyncio.gather(*(ob.accept(g) for g in groups))
        ids = sorted(i for r in results for i in r)
        assert ids == list(range(1, 201))
        batch = await ob.read_batch("a", 1000)
        assert len(batch) == 200
    conn = sqlite3.connect(tmp_path / "o.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 200


async def test_quota_drops_oldest_and_counts_per_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stamper = Stamper()
    path = tmp_path / "o.db"
    one = len(encode_reading(make(Stamper(), 1)[0])) + 48
    quota = one * 50
    async with open_outbox(path, sinks=["mqtt", "influx"], max_bytes=quota) as ob:
        await ob.accept(make(stamper, 30))
        await ob.ack("mqtt", 30)  # mqtt has everything; influx has nothing
        for _ in range(10):
            await ob.accept(make(stamper, 10))
        stats = await ob.stats()
        assert stats.bytes_held <= quota
        assert stats.dropped_total > 0
        by_sink = {s.sink: s for s in stats.sinks}
        # Only influx lost records; mqtt had delivered all it later lost.
        assert by_sink["influx"].dropped_total == stats.dropped_total
        assert by_sink["mqtt"].dropped_total < stats.dropped_total
        batch = await ob.read_batch("influx", 10_000)
        # What remains is the newest, contiguous, and ends with the last accepted.
        assert batch[-1].id == 130
        assert [r.id for r in batch] == list(range(batch[0].id, 131))
        assert by_sink["influx"].backlog == len(batch)
    assert any("over its quota" in rec.getMessage() for rec in caplog.records)
    # The count survives a restart (reported, never silent).
    assert read_stats(path).dropped_total == stats.dropped_total


async def test_dead_letters_keep_payload_and_reason(tmp_path: Path) -> None:
    stamper = Stamper()
    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["influx"]) as ob:
        await ob.accept(make(stamper, 5))
        batch = await ob.read_batch("influx", 5)
        await ob.ack(
            "influx", 5, rejected=[Rejection(record_id=3, reason="field type conflict", status=400)]
        )
        letters = await ob.dead_letters()
        stats = await ob.stats()
    assert len(letters) == 1
    assert letters[0].record_id == 3
    assert letters[0].status == 400
    assert letters[0].payload == batch[2].payload
    assert stats.sinks[0].dead_total == 1
    assert stats.sinks[0].delivered_total == 4
    assert read_dead_letters(path)[0].reason == "field type conflict"


async def test_new_sink_starts_with_what_is_held(tmp_path: Path) -> None:
    stamper = Stamper()
    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["mqtt"]) as ob:
        await ob.accept(make(stamper, 5))
        await ob.ack("mqtt", 2)
    async with open_outbox(path, sinks=["mqtt", "influx"]) as ob:
        assert [r.id for r in await ob.read_batch("influx", 100)] == [3, 4, 5]


async def test_wait_beyond_wakes_on_commit(tmp_path: Path) -> None:
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["a"]) as ob:
        waiter = asyncio.create_task(ob.wait_beyond(0, timeout_s=5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await ob.accept(make(stamper, 1))
        assert await waiter is True
        assert await ob.wait_beyond(1, timeout_s=0.01) is False


async def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot open outbox"):
        async with open_outbox(blocker / "o.db", sinks=["a"]):
            pass


def test_read_stats_of_missing_outbox(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="no outbox"):
        read_stats(tmp_path / "nope.db")


async def test_outbox_cli_shows_backlog_and_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coffee_telemetry.agent.cli.main import main

    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["mqtt", "influx"]) as ob:
        await ob.accept(make(Stamper(), 6))
        await ob.ack("mqtt", 6)
        await ob.ack("influx", 2, rejected=[Rejection(record_id=2, reason="bad field", status=400)])
    assert main(["outbox", "--path", str(path), "--dead-letters", "5"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert lines["influx"][1] == "4"  # backlog
    assert lines["mqtt"][1] == "0"
    assert "status=400 bad field" in out
    assert main(["outbox", "--path", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {s["sink"]: s["backlog"] for s in doc["sinks"]} == {"influx": 4, "mqtt": 0}
    assert main(["outbox", "--path", str(tmp_path / "missing.db")]) == 1


async def test_normal_mode_checkpoints_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with open_outbox(path, sinks=["a"], synchronous="normal", sync_interval_s=0.05) as ob:
        await ob.accept(make(Stamper(), 50))
        # The write connection never checkpoints; until sync_loop runs, the rows
        # live only in the WAL.
        await asyncio.sleep(0.5)  # ten sync intervals
        # immutable=1 reads the database file alone, ignoring the WAL.
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            rows = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            conn.close()
    assert rows == 50
