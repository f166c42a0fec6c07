"""Supervisors: a failing interface is restarted and counted; cancellation goes through."""

from __future__ import annotations

import asyncio
import random

import pytest

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.health import Health, InterfaceState
from coffee_telemetry.agent.supervise import supervise


async def test_a_failing_interface_is_restarted_and_counted() -> None:
    health = Health(clock_ns=lambda: 42)
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError(24, "Too many open files")
        done.set()
        await asyncio.Event().wait()

    backoff = Backoff(initial_s=0.01, maximum_s=0.02, rng=random.Random(1))
    task = asyncio.create_task(supervise("web", flaky, health=health, backoff=backoff))
    async with asyncio.timeout(5):
        await done.wait()
    entry = health.interfaces["web"]
    assert entry.failures == 2
    assert entry.state is InterfaceState.RUNNING
    assert entry.last_error == "OSError: [Errno 24] Too many open files"
    assert entry.last_error_ns == 42
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(runs) == 3


async def test_an_interface_that_returns_is_finished() -> None:
    health = Health()
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    await supervise("mqtt", once, health=health)
    assert calls == 1
    assert health.interfaces["mqtt"].failures == 0
