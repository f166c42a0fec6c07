"""The accept stage: commit first, then every listener, each one isolated."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Reading, Stamper


def reading(stamper: Stamper) -> Reading:
    return stamper.stamp(device="d", measurement="moisture", fields={"moisture_pct": 1.0}, tags={})


async def test_commit_comes_before_the_listeners_and_a_failing_one_harms_none() -> None:
    health = Health()
    order: list[str] = []

    async def commit(readings: Sequence[Reading]) -> None:
        order.extend(f"commit {r.seq}" for r in readings)

    def broken(r: Reading) -> None:
        raise KeyError("bug")

    stage = AcceptStage(commit, health=health, listeners=[broken])
    stage.add_listener(lambda r: order.append(f"heard {r.seq}"))
    stamper = Stamper()
    await stage.accept([reading(stamper), reading(stamper)])
    await stage.accept([reading(stamper)])
    assert order == ["commit 1", "commit 2", "heard 1", "heard 2", "commit 3", "heard 3"]
    assert health.interfaces["fanout"].failures == 3
    assert "KeyError" in str(health.interfaces["fanout"].last_error)


async def test_a_failed_commit_reaches_no_listener() -> None:
    heard: list[Reading] = []

    async def commit(readings: Sequence[Reading]) -> None:
        raise OSError("disk full")

    stage = AcceptStage(commit, health=Health(), listeners=[heard.append])
    with pytest.raises(OSError, match="disk full"):
        await stage.accept([reading(Stamper())])
    assert heard == []
