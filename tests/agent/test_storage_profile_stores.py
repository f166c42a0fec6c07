"""The ``sd-card`` storage profile's settings, applied to real stores the agent opens.

The outbox's ``commit_delay_s`` gathers the records of a moment into one commit (fewer
WAL frames written) while a record is still committed before ``accept`` returns; the
history's ``flush_interval_s`` keeps points in memory between writes and writes them
on a clean stop. Bytes written are measured by ``bench/writes.py``, not here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from coffee_telemetry.agent.app import open_configured_outbox
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.history.service import open_configured_history
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper


def config(
    tmp_path: Path, *, profile: str = "default", outbox: dict[str, object] | None = None
) -> Config:
    return parse_config(
        {
            "site": {"id": "ourofino"},
            "agent": {"data_dir": str(tmp_path), "storage_profile": profile},
            "outbox": outbox or {},
        }
    )


def reading(stamper: Stamper, device: str, value: float) -> Reading:
    return stamper.stamp(
        device=device,
        measurement="moisture",
        fields={"moisture_pct": value},
        tags={"site": "ourofino", "device": device, "station": "secador"},
    )


def wal_frames(db: Path) -> int:
    """Frames in the WAL file (none checkpointed away in these tests: see ``sync_interval_s``)."""
    wal = Path(f"{db}-wal")
    if not wal.exists() or wal.stat().st_size < 32:
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    return (wal.stat().st_size - 32) // (page + 24)


def committed_ids(db: Path) -> set[int]:
    """Record ids another connection sees: what is committed."""
    conn = sqlite3.connect(db)
    try:
        return {int(r[0]) for r in conn.execute("SELECT id FROM records")}
    finally:
        conn.close()


async def staggered_frames(cfg: Config) -> tuple[int, list[list[int]]]:
    """WAL frames written by five producers accepting 20 ms apart, and their ids.

    The outbox is opened as the agent opens it; its sync interval must be longer than the
    test, so that no checkpoint resets the WAL meanwhile.
    """
    assert cfg.outbox.sync_interval_s >= 10
    db = cfg.outbox_path
    stamper = Stamper()
    async with open_configured_outbox(cfg, ["mqtt"]) as ob:
        before = wal_frames(db)

        async def producer(i: int) -> list[int]:
            await asyncio.sleep(0.02 * i)
            ids = await ob.accept([reading(stamper, f"umid-{i}", 11.0 + i)])
            # Committed when accept returns: another connection sees it.
            assert set(ids) <= committed_ids(db)
            return ids

        ids = await asyncio.gather(*(producer(i) for i in range(5)))
        frames = wal_frames(db) - before
    return frames, ids


async def test_commit_delay_gathers_a_moment_into_one_commit(tmp_path: Path) -> None:
    sd = config(tmp_path / "sd", profile="sd-card")
    assert sd.outbox.commit_delay_s > 0.1  # the stagger below fits in it
    gathered, ids = await staggered_frames(sd)
    default = config(tmp_path / "default", outbox={"sync_interval_s": 60})
    one_by_one, _ = await staggered_frames(default)
    assert sorted(i for got in ids for i in got) == [1, 2, 3, 4, 5]
    assert gathered < one_by_one, (gathered, one_by_one)


async def test_accept_returns_only_once_committed(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite3"
    stamper = Stamper()
    async with open_outbox(db, sinks=["mqtt"], commit_delay_s=0.2) as ob:
        for i in range(3):
            (rid,) = await ob.accept([reading(stamper, "umid-1", 11.0 + i)])
            assert rid in committed_ids(db)


async def test_close_does_not_wait_out_the_delay(tmp_path: Path) -> None:
    # A delay far longer than the test's timeout: only the close can end the wait.
    db = tmp_path / "o.sqlite3"
    stamper = Stamper()
    async with open_outbox(db, sinks=["mqtt"], commit_delay_s=3600) as ob:
        pending = asyncio.create_task(ob.accept([reading(stamper, "umid-1", 12.0)]))
        await asyncio.sleep(0.1)
        assert not pending.done()
    assert await pending == [1]
    assert committed_ids(db) == {1}


async def history_holds_points(cfg: Config) -> tuple[int, list[tuple[int, float]]]:
    """Points still pending 1.5 s after a write, and what the store held when it closed."""
    stamper = Stamper()
    start = time.time_ns() - 10**9
    async with open_configured_history(cfg) as history:
        # Added before the history loop first runs: its first flush takes it.
        history.add(reading(stamper, "umid-1", 11.0))
        for _ in range(100):
            if history.sync.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert history.sync.pending == 0, "the first flush did not run"
        history.add(reading(stamper, "umid-1", 12.0))
        await asyncio.sleep(1.5)  # beyond the default flush interval
        held = history.sync.pending
    closed = History.open(cfg.history_path)
    try:
        series = closed.series("moisture", "umid-1", "moisture_pct", start, time.time_ns())
    finally:
        closed.close()
    return held, series


async def test_history_flush_interval_of_the_profile_is_applied(tmp_path: Path) -> None:
    held, series = await history_holds_points(config(tmp_path / "sd", profile="sd-card"))
    assert held == 1  # the second point waits for the minute's write
    assert [v for _, v in series] == [11.0, 12.0]  # and is written on a clean stop


async def test_history_default_writes_every_second(tmp_path: Path) -> None:
    cfg = config(tmp_path / "default")
    stamper = Stamper()
    async with open_configured_history(cfg) as history:
        history.add(reading(stamper, "umid-1", 11.0))
        for _ in range(100):
            if history.sync.pending == 0:
                break
            await asyncio.sleep(0.1)
        history.add(reading(stamper, "umid-1", 12.0))
        for _ in range(100):
            if history.sync.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert history.sync.pending == 0
