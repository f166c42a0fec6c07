"""The accept stage: stamp, commit first, then every listener, each one isolated."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Draft, Reading, Stamper


def draft(device: str = "d", ts_ns: int | None = None, *, exact: bool = False) -> Draft:
    return Draft(
        device=device,
        measurement="moisture",
        fields={"moisture_pct": 1.0},
        tags={"site": "s1", "lot": ""},
        ts_ns=ts_ns,
        exact=exact,
    )


async def test_commit_comes_before_the_listeners_and_a_failing_one_harms_none() -> None:
    health = Health()
    order: list[str] = []

    async def commit(readings: Sequence[Reading]) -> None:
        order.extend(f"commit {r.seq}" for r in readings)

    def broken(r: Reading) -> None:
        raise KeyError("bug")

    stage = AcceptStage(commit, stamper=Stamper(), health=health, listeners=[broken])
    stage.add_listener(lambda r: order.append(f"heard {r.seq}"))
    await stage.accept([draft(), draft()])
    await stage.accept([draft()])
    assert order == ["commit 1", "commit 2", "heard 1", "heard 2", "commit 3", "heard 3"]
    assert health.interfaces["fanout"].failures == 3
    assert "KeyError" in str(health.interfaces["fanout"].last_error)


async def test_a_failed_commit_reaches_no_listener() -> None:
    heard: list[Reading] = []

    async def commit(readings: Sequence[Reading]) -> None:
        raise OSError("disk full")

    stage = AcceptStage(commit, stamper=Stamper(), health=Health(), listeners=[heard.append])
    with pytest.raises(OSError, match="disk full"):
        await stage.accept([draft()])
    assert heard == []


async def test_the_stage_stamps_what_it_commits_and_returns_it() -> None:
    committed: list[Reading] = []

    async def commit(readings: Sequence[Reading]) -> None:
        committed.extend(readings)

    stamper = Stamper(clock_ns=lambda: 1_000)
    stamper.restore({"d": 41})
    stage = AcceptStage(commit, stamper=stamper, health=Health())
    got = await stage.accept([draft(ts_ns=500), draft(ts_ns=500), draft("e")])
    assert got == committed
    # Sequences continue from the outbox's; one device's times never repeat; empty tags go.
    assert [(r.device, r.seq, r.ts_ns) for r in got] == [
        ("d", 42, 500),
        ("d", 43, 501),
        ("e", 1, 1_000),
    ]
    assert got[0].tags == {"site": "s1"}


async def test_records_are_committed_but_not_fanned_out() -> None:
    committed: list[Reading] = []
    heard: list[Reading] = []

    async def commit(readings: Sequence[Reading]) -> None:
        committed.extend(readings)

    stage = AcceptStage(commit, stamper=Stamper(), health=Health(), listeners=[heard.append])
    got = await stage.record([draft("alerts")])
    assert [r.device for r in committed] == ["alerts"]
    assert got == committed
    assert heard == []
    assert await stage.record([]) == []
    assert await stage.accept([]) == []


async def test_an_exact_time_is_kept_even_behind_the_devices_last_stamp() -> None:
    async def commit(readings: Sequence[Reading]) -> None:
        return None

    now = 10_000
    stage = AcceptStage(commit, stamper=Stamper(clock_ns=lambda: now), health=Health())
    (later,) = await stage.accept([draft(ts_ns=9_000)])
    # A stored event sent again after a crash: its own time, the next sequence number.
    (resent,) = await stage.accept([draft(ts_ns=5_000, exact=True)])
    assert (resent.ts_ns, resent.seq) == (5_000, later.seq + 1)
    # A future exact time does not pull the device's later stamps past now.
    (future,) = await stage.accept([draft(ts_ns=50_000, exact=True)])
    (after,) = await stage.accept([draft()])
    assert future.ts_ns == 50_000
    assert after.ts_ns <= now + 2
