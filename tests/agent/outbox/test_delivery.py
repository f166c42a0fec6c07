"""Delivery loops with recording fake sinks: keep, reject, accept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.errors import SinkUnavailable
from coffee_telemetry.agent.health import SinkHealth
from coffee_telemetry.agent.outbox.delivery import deliver_loop
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper


def readings(stamper: Stamper, n: int) -> list[Reading]:
    return [
        stamper.stamp(device="d", measurement="moisture", fields={"moisture_pct": 11.0}, tags={})
        for _ in range(n)
    ]


class RecordingSink:
    """Fails ``fail_times`` batches, rejects ``poison`` ids, records the rest."""

    def __init__(
        self,
        *,
        fail_times: int = 0,
        poison: Sequence[int] = (),
        batch_size: int = 100,
        flush_interval_s: float = 0.0,
        retry_after_s: float | None = None,
    ) -> None:
        self.name = "fake"
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.fail_times = fail_times
        self.poison = set(poison)
        self.retry_after_s = retry_after_s
        self.delivered: list[int] = []
        self.batches: list[list[int]] = []
        self.attempts = 0
        self.event = asyncio.Event()

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        self.attempts += 1
        if self.fail_times:
            self.fail_times -= 1
            raise SinkUnavailable("down", sink=self.name, retry_after_s=self.retry_after_s)
        self.batches.append([r.id for r in records])
        out = []
        for r in records:
            if r.id in self.poison:
                out.append(Rejection(record_id=r.id, reason="bad", status=400))
            else:
                self.delivered.append(r.id)
        self.event.set()
        return out

    async def wait_available(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)


class ComesBackSink(RecordingSink):
    """Down until ``back`` is set; says so through ``wait_available``."""

    def __init__(self) -> None:
        super().__init__()
        self.back = asyncio.Event()
        self.failures = 0

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        if not self.back.is_set():
            self.failures += 1
            raise SinkUnavailable("down", sink=self.name)
        return await super().deliver(records)

    async def wait_available(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.back.wait()


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.01, maximum_s=0.05, jitter=0.0)


async def wait_until(cond: object, timeout_s: float = 5.0) -> None:
    assert callable(cond)
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


async def test_unavailable_keeps_batch_and_retries(tmp_path: Path) -> None:
    sink = RecordingSink(fail_times=3)
    health = SinkHealth(sink="fake")
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 20))
        task = asyncio.create_task(deliver_loop(ob, sink, health=health, backoff=fast_backoff()))
        await wait_until(lambda: ob.cursor("fake") == 20)
        task.cancel()
        assert sink.attempts == 4
        assert sink.delivered == list(range(1, 21))
        assert ob.cursor("fake") == 20
        assert health.failures == 3
        assert health.delivered == 20


async def test_rejected_records_go_to_dead_letters_and_rest_delivered(tmp_path: Path) -> None:
    sink = RecordingSink(poison=[3, 7])
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 10))
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=fast_backoff()))
        await wait_until(lambda: ob.cursor("fake") == 10)
        task.cancel()
        letters = await ob.dead_letters()
    assert sorted(d.record_id for d in letters) == [3, 7]
    assert sink.delivered == [1, 2, 4, 5, 6, 8, 9, 10]


async def test_batches_fill_up_to_flush_interval(tmp_path: Path) -> None:
    sink = RecordingSink(batch_size=50, flush_interval_s=0.3)
    stamper = Stamper()
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=fast_backoff()))
        for _ in range(10):
            await ob.accept(readings(stamper, 1))
            await asyncio.sleep(0.005)
        await wait_until(lambda: len(sink.delivered) == 10)
        # Ten records trickling in within the interval leave in one batch.
        assert sink.batches == [list(range(1, 11))]
        await ob.accept(readings(stamper, 120))
        await wait_until(lambda: len(sink.delivered) == 130)
        task.cancel()
    # A full batch is sent without waiting for the interval.
    assert [len(b) for b in sink.batches[1:]] == [50, 50, 20]


async def test_dead_sink_does_not_block_other_sink(tmp_path: Path) -> None:
    dead = RecordingSink(fail_times=10**9)
    dead.name = "dead"
    live = RecordingSink()
    live.name = "live"
    async with open_outbox(tmp_path / "o.db", sinks=["dead", "live"]) as ob:
        t1 = asyncio.create_task(deliver_loop(ob, dead, backoff=fast_backoff()))
        t2 = asyncio.create_task(deliver_loop(ob, live, backoff=fast_backoff()))
        await ob.accept(readings(Stamper(), 30))
        await wait_until(lambda: ob.cursor("live") == 30)
        t1.cancel()
        t2.cancel()
        assert ob.backlog("dead") == 30
        assert ob.backlog("live") == 0


async def test_a_sink_that_comes_back_is_retried_at_once_not_after_its_back_off(
    tmp_path: Path,
) -> None:
    sink = ComesBackSink()
    slow = Backoff(initial_s=3600.0, maximum_s=3600.0, jitter=0.0)  # an hour between retries
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 5))
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=slow))
        await wait_until(lambda: sink.failures == 1)
        sink.back.set()
        await wait_until(lambda: len(sink.delivered) == 5, timeout_s=2.0)
        assert sink.failures == 1  # one failed attempt, then the wake-up, not the hour
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class GatedSink:
    """Holds each batch until the test releases it; fails the batches it is told to."""

    def __init__(self, *, in_flight: int, batch_size: int = 2) -> None:
        self.name = "fake"
        self.batch_size = batch_size
        self.flush_interval_s = 0.0
        self.in_flight = in_flight
        self.sent: list[list[int]] = []
        self.gates: dict[int, asyncio.Future[str]] = {}
        self.available = asyncio.Event()

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        ids = [r.id for r in records]
        self.sent.append(ids)
        gate = self.gates.setdefault(ids[0], asyncio.get_running_loop().create_future())
        if await gate == "fail":
            raise SinkUnavailable("broken", sink=self.name)
        return []

    def release(self, first_id: int, outcome: str = "ok") -> None:
        self.gates.setdefault(first_id, asyncio.get_running_loop().create_future())
        self.gates[first_id].set_result(outcome)

    async def wait_available(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.available.wait()


async def test_pipelined_sink_gets_later_batches_before_the_first_is_confirmed(
    tmp_path: Path,
) -> None:
    sink = GatedSink(in_flight=3)
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 10))
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=fast_backoff()))
        # Three batches out while none is confirmed; the fourth waits for room.
        await wait_until(lambda: len(sink.sent) == 3)
        await asyncio.sleep(0.05)
        assert sink.sent == [[1, 2], [3, 4], [5, 6]]
        assert ob.cursor("fake") == 0
        # A later batch confirmed first moves nothing: the cursor follows id order.
        sink.release(3)
        await asyncio.sleep(0.05)
        assert ob.cursor("fake") == 0
        sink.release(1)
        await wait_until(lambda: ob.cursor("fake") == 4)
        for first in (5, 7, 9):
            sink.release(first)
        await wait_until(lambda: ob.cursor("fake") == 10)
        assert sink.sent == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pipelined_failure_resends_from_the_failed_batch_and_loses_nothing(
    tmp_path: Path,
) -> None:
    sink = GatedSink(in_flight=3)
    health = SinkHealth(sink="fake")
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 8))
        task = asyncio.create_task(deliver_loop(ob, sink, health=health, backoff=fast_backoff()))
        await wait_until(lambda: len(sink.sent) == 3)
        sink.release(1)
        await wait_until(lambda: ob.cursor("fake") == 2)
        await wait_until(lambda: len(sink.sent) == 4)  # [7, 8] took the freed place
        sink.release(5)  # confirmed, but after a batch that fails: sent again
        sink.release(3, "fail")
        await wait_until(lambda: health.failures == 1)
        assert ob.cursor("fake") == 2
        sink.gates.clear()
        sink.available.set()
        await wait_until(lambda: len(sink.sent) == 7)
        assert sink.sent[4:] == [[3, 4], [5, 6], [7, 8]]
        for first in (3, 5, 7):
            sink.release(first)
        await wait_until(lambda: ob.cursor("fake") == 8)
        assert health.delivered == 8
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pipelined_loop_cancelled_acknowledges_nothing_unconfirmed(tmp_path: Path) -> None:
    sink = GatedSink(in_flight=4)
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 8))
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=fast_backoff()))
        await wait_until(lambda: len(sink.sent) == 4)
        sink.release(1)
        await wait_until(lambda: ob.cursor("fake") == 2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # The batches still out were cancelled with the loop, not left running.
        assert all(gate.cancelled() for first, gate in sink.gates.items() if first != 1)
        assert ob.cursor("fake") == 2
        assert ob.backlog("fake") == 6


async def test_pipelined_loop_stopped_ends_after_the_batches_out_are_confirmed(
    tmp_path: Path,
) -> None:
    sink = GatedSink(in_flight=3)
    stop = asyncio.Event()
    async with open_outbox(tmp_path / "o.db", sinks=["fake"]) as ob:
        await ob.accept(readings(Stamper(), 10))
        task = asyncio.create_task(deliver_loop(ob, sink, backoff=fast_backoff(), stop=stop))
        await wait_until(lambda: len(sink.sent) == 3)
        stop.set()
        sink.release(1)
        await asyncio.sleep(0.05)
        assert not task.done()  # two batches still out: it waits for them
        assert len(sink.sent) == 3  # and sends nothing new
        sink.release(3)
        sink.release(5)
        await asyncio.wait_for(task, 5)
        assert ob.cursor("fake") == 6
        assert ob.backlog("fake") == 4
