"""Device loops with in-memory fake ports: stamping, enrichment, reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.devices.runner import DeviceRunner
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.moisture_tesma import encode_frame
from coffee_telemetry.drivers.moisture_ticket import encode_ticket
from tests.fakes import FakePorts, stage


def config(driver: str = "moisture.ticket", **extra: object) -> object:
    dev: dict[str, object] = {
        "id": "umid-1",
        "driver": driver,
        "port": "/dev/fake",
        "station": "recepcao",
        "product": "cafe-verde",
    }
    dev.update(extra)
    return parse_config({"site": {"id": "s1"}, "devices": [dev]}).devices[0]


class Harness:
    def __init__(self, driver: str = "moisture.ticket", **extra: object) -> None:
        self.accepted: list[Reading] = []
        self.ports = FakePorts()
        self.health = Health()
        self.clock = 1_700_000_000_000_000_000
        self.runner = DeviceRunner(
            config(driver, **extra),  # type: ignore[arg-type]
            site="s1",
            accept=stage(self._accept, Stamper()).accept,
            health=self.health,
            open_port=self.ports.open,
            backoff=Backoff(initial_s=0.01, maximum_s=0.02, jitter=0.0),
            clock_ns=self._clock,
        )

    def _clock(self) -> int:
        self.clock += 1000
        return self.clock

    async def _accept(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)

    async def until(self, cond: object, timeout_s: float = 3.0) -> None:
        assert callable(cond)
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.005)


async def test_ticket_becomes_enriched_reading() -> None:
    h = Harness()
    task = asyncio.create_task(h.runner.run_loop())
    await h.until(lambda: h.ports.current is not None)
    assert h.ports.current is not None
    h.ports.current.queue.put_nowait(
        encode_ticket(moisture_pct=11.8, product="CAFE", lot="L-7", sample_id="0042")
    )
    await h.until(lambda: len(h.accepted) == 1)
    task.cancel()
    r = h.accepted[0]
    assert r.fields["moisture_pct"] == 11.8
    assert r.tags == {
        "site": "s1",
        "device": "umid-1",
        "station": "recepcao",
        "product": "CAFE",
        "lot": "L-7",
    }
    assert r.seq == 1
    assert r.audit is not None
    assert "Umidade" in r.audit
    # Stamped with the time the bytes arrived.
    assert r.ts_ns == h.clock
    assert h.health.devices["umid-1"].state is DeviceState.ONLINE
    assert h.health.devices["umid-1"].readings == 1


async def test_invalid_printed_lot_is_kept_as_field_not_tag() -> None:
    h = Harness()
    task = asyncio.create_task(h.runner.run_loop())
    await h.until(lambda: h.ports.current is not None)
    assert h.ports.current is not None
    h.ports.current.queue.put_nowait(encode_ticket(moisture_pct=12.0, lot="L;DROP'"))
    await h.until(lambda: len(h.accepted) == 1)
    task.cancel()
    r = h.accepted[0]
    assert "lot" not in r.tags
    assert r.fields["lot_rejected"] == "L;DROP'"
    assert r.tags["product"] == "cafe-verde"  # from config when the ticket has none
    assert h.health.devices["umid-1"].errors["bad-lot"] == 1


async def test_idle_gap_ends_ticket_without_form_feed() -> None:
    h = Harness(ticket={"idle_gap_s": 0.1})
    task = asyncio.create_task(h.runner.run_loop())
    await h.until(lambda: h.ports.current is not None)
    assert h.ports.current is not None
    # A ticket with no ESC @ and no form feed is only trusted to be whole when
    # silence came before it (otherwise it may be the tail of a cut ticket).
    await asyncio.sleep(0.2)
    ticket = encode_ticket(moisture_pct=10.5, form_feed=False, escpos=False)
    h.ports.current.queue.put_nowait(ticket)
    await h.until(lambda: len(h.accepted) == 1)
    task.cancel()
    assert h.accepted[0].fields["moisture_pct"] == 10.5


async def test_unplug_reopens_with_fresh_driver_and_continues_sequence() -> None:
    h = Harness("moisture.tesma")
    task = asyncio.create_task(h.runner.run_loop())
    await h.until(lambda: h.ports.current is not None)
    first = h.ports.current
    assert first is not None
    for _ in range(2):
        first.queue.put_nowait(encode_frame("CAFE", 11.0))
    await h.until(lambda: len(h.accepted) == 1)
    # Half a frame, then the adapter disappears for a while.
    first.queue.put_nowait(encode_frame("CAFE", 12.0)[:9])
    h.ports.missing = True
    first.queue.put_nowait(None)
    await h.until(lambda: h.health.devices["umid-1"].state is DeviceState.OFFLINE)
    await asyncio.sleep(0.05)
    h.ports.missing = False
    await h.until(lambda: h.ports.current is not first)
    second = h.ports.current
    assert second is not None
    for _ in range(2):
        second.queue.put_nowait(encode_frame("CAFE", 12.5))
    await h.until(lambda: len(h.accepted) == 2)
    task.cancel()
    assert [r.fields["moisture_pct"] for r in h.accepted] == [11.0, 12.5]
    assert [r.seq for r in h.accepted] == [1, 2]
    entry = h.health.devices["umid-1"]
    assert entry.state is DeviceState.ONLINE
    assert entry.reconnects == 1
    assert entry.errors["port"] >= 2
    assert entry.last_error is not None


async def test_garbage_counts_as_discarded_not_readings() -> None:
    h = Harness("moisture.tesma")
    task = asyncio.create_task(h.runner.run_loop())
    await h.until(lambda: h.ports.current is not None)
    assert h.ports.current is not None
    h.ports.current.queue.put_nowait(b"\x02garbage\x03" * 10 + b"\xff" * 100)
    for _ in range(2):
        h.ports.current.queue.put_nowait(encode_frame("MAIZ", 14.4))
    await h.until(lambda: len(h.accepted) == 1)
    task.cancel()
    entry = h.health.devices["umid-1"]
    assert entry.frames_discarded > 0
    assert h.accepted[0].fields == {"moisture_pct": 14.4}
