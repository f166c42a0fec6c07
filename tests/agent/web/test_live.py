"""The live hub: fan-out, the newest reading per device, slow pages."""

from __future__ import annotations

import json

import pytest

from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.web.live import MAX_SUBSCRIBERS, QUEUE_FRAMES, LiveHub, sse_frame


def reading(value: float, device: str = "umid-1", measurement: str = "moisture") -> Reading:
    return Stamper().stamp(
        device=device,
        measurement=measurement,
        fields={"moisture_pct": value, "note": "text is not streamed"},
        tags={"site": "s", "device": device, "station": "recepcao", "lot": "L-1\nx"},
    )


def decode(frame: bytes) -> tuple[str, object]:
    event, data, end = frame.decode().split("\n", 2)
    assert end == "\n"
    return event.removeprefix("event: "), json.loads(data.removeprefix("data: "))


async def test_readings_reach_every_page_once_encoded() -> None:
    hub = LiveHub()
    with hub.subscribe() as a, hub.subscribe() as b:
        assert decode(await a.next_frame())[0] == "hello"
        assert decode(await b.next_frame())[0] == "hello"
        hub.on_reading(reading(11.5))
        fa, fb = await a.next_frame(), await b.next_frame()
        assert fa is fb  # one encoding for all pages
        event, data = decode(fa)
        assert event == "reading"
        assert isinstance(data, dict)
        assert data["fields"] == {"moisture_pct": 11.5}
        assert data["tags"] == {"station": "recepcao", "lot": "L-1\nx"}
    assert hub.subscribers == 0


def test_without_pages_only_the_latest_is_kept() -> None:
    hub = LiveHub()
    hub.on_reading(reading(11.0))
    hub.on_reading(reading(12.0))
    hub.on_reading(reading(1.0, measurement="agent"))  # not a live measurement
    assert hub.latest["umid-1"].fields["moisture_pct"] == 12.0
    assert set(hub.latest) == {"umid-1"}


async def test_a_page_that_falls_behind_is_told_to_resync() -> None:
    hub = LiveHub()
    with hub.subscribe() as sub:
        for i in range(QUEUE_FRAMES + 10):
            hub.on_reading(reading(float(i)))
        assert sub.lagged == 1
        event, _ = decode(await sub.next_frame())
        assert event == "hello"
        hub.on_reading(reading(99.0))
        assert decode(await sub.next_frame())[0] == "reading"


def test_subscribers_are_bounded() -> None:
    hub = LiveHub()
    subs = [hub.subscribe() for _ in range(MAX_SUBSCRIBERS)]
    for cm in subs:
        cm.__enter__()
    with pytest.raises(OverflowError), hub.subscribe():
        pass
    for cm in subs:
        cm.__exit__(None, None, None)
    assert hub.subscribers == 0


def test_frames_are_single_line_json() -> None:
    frame = sse_frame("lots", {"lot": "a\nb\r\n<script>"})
    assert frame.count(b"\n") == 3
    assert decode(frame) == ("lots", {"lot": "a\nb\r\n<script>"})


async def test_health_changes_are_sent_once_per_change() -> None:
    hub = LiveHub()
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/x")
    import asyncio

    with hub.subscribe() as sub:
        await sub.next_frame()
        task = asyncio.create_task(hub.health_loop(health, interval_s=0.01))
        event, data = decode(await asyncio.wait_for(sub.next_frame(), 2))
        assert (event, data) == ("devices", {"devices": ["umid-1"]})
        health.set_device_state("umid-1", DeviceState.ONLINE)
        event, data = decode(await asyncio.wait_for(sub.next_frame(), 2))
        assert (event, data) == ("devices", {"devices": ["umid-1"]})
        await asyncio.sleep(0.05)
        assert sub._queue.empty()
        task.cancel()


async def test_a_growing_backlog_is_a_change() -> None:
    import asyncio

    hub = LiveHub()
    health = Health()
    health.add_sink("mqtt")
    backlog = {"mqtt": 0}
    with hub.subscribe() as sub:
        await sub.next_frame()
        task = asyncio.create_task(
            hub.health_loop(health, backlog=lambda s: backlog[s], interval_s=0.01)
        )
        assert decode(await asyncio.wait_for(sub.next_frame(), 2)) == ("devices", {"devices": []})
        backlog["mqtt"] = 5  # the broker is down; nothing else about the sink changes
        assert decode(await asyncio.wait_for(sub.next_frame(), 2)) == ("devices", {"devices": []})
        task.cancel()
