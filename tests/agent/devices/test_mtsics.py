"""Scale device loops with in-memory fake ports: MT-SICS polling, Toledo and ASCII weighments."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import pytest

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.config import DeviceConfig, parse_config
from coffee_telemetry.agent.devices import make_device_runner
from coffee_telemetry.agent.devices.mtsics import MtSicsRunner
from coffee_telemetry.agent.devices.runner import DeviceRunner, LotLookup
from coffee_telemetry.agent.health import DeviceHealth, DeviceState, Health
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.scale_ascii import encode_line
from coffee_telemetry.drivers.scale_mtsics import encode_error, encode_reply
from coffee_telemetry.drivers.scale_toledo import encode_frame
from tests.fakes import FakePorts, FakeSerialPort, ManualClock, stage

STABLE_100_G = encode_reply("S", "S", value=100.0, unit="g")
DEVICE = "balanca-1"


class Harness:
    """One device loop made by ``make_device_runner``, with fake ports and sinks."""

    def __init__(
        self,
        driver: str,
        *,
        replies: dict[str, bytes] | None = None,
        manual_clock: bool = False,
        lot_for_station: LotLookup | None = None,
        **options: object,
    ) -> None:
        self.accepted: list[Reading] = []
        self.health = Health()
        self.replies = replies if replies is not None else {}
        self.clock = ManualClock() if manual_clock else None
        self.opener = FakePorts(replies=self.replies, clock=self.clock)
        dev: dict[str, object] = {
            "id": DEVICE,
            "driver": driver,
            "port": "/dev/fake",
            "station": "recepcao",
        }
        dev.update(options)
        config: DeviceConfig = parse_config({"site": {"id": "s1"}, "devices": [dev]}).devices[0]
        self.runner = make_device_runner(
            config,
            site="s1",
            accept=stage(self._accept, Stamper()).accept,
            health=self.health,
            open_port=self.opener.open,
            backoff=Backoff(initial_s=0.01, maximum_s=0.02, jitter=0.0),
            lot_for_station=lot_for_station,
            monotonic=time.monotonic if self.clock is None else self.clock,
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def ports(self) -> list[FakeSerialPort]:
        return self.opener.opened

    @property
    def missing(self) -> bool:
        return self.opener.missing

    @missing.setter
    def missing(self, value: bool) -> None:
        self.opener.missing = value

    async def _accept(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)

    @property
    def port(self) -> FakeSerialPort:
        return self.ports[-1]

    @property
    def entry(self) -> DeviceHealth:
        return self.health.devices[DEVICE]

    async def start(self) -> FakeSerialPort:
        self.task = asyncio.create_task(self.runner.run_loop())
        await until(lambda: bool(self.ports))
        return self.port

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def polls(self) -> int:
        return sum(port.commands.count("SI") for port in self.ports)


async def until(cond: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


def balance(si_reply: bytes | None) -> dict[str, bytes]:
    """A balance's replies to start-up and to ``SI``."""
    replies = {
        "@": encode_reply("I4", "A", text="B012345678"),
        "I2": encode_reply("I2", "A", text="XS205 220.00 g"),
    }
    if si_reply is not None:
        replies["SI"] = si_reply
    return replies


def mtsics(si_reply: bytes | None, **options: object) -> Harness:
    return Harness(
        "scale.mtsics",
        replies=balance(si_reply),
        mtsics={"poll_s": 0.1, "reply_timeout_s": 0.05, **options},
    )


# -- MT-SICS -------------------------------------------------------------------------


async def test_mtsics_resets_then_polls_and_publishes_stable_weight_in_kg() -> None:
    h = mtsics(STABLE_100_G)
    assert isinstance(h.runner, MtSicsRunner)
    port = await h.start()
    await until(lambda: len(h.accepted) == 1 and h.polls() >= 3)
    await h.stop()
    assert port.commands[:3] == ["@", "I2", "SI"]
    reading = h.accepted[0]
    assert reading.measurement == "scale"
    assert reading.kind == "reading"
    assert reading.fields == {"weight_kg": 0.1, "stable": True, "quality": "ok"}
    assert reading.tags == {
        "site": "s1",
        "device": DEVICE,
        "station": "recepcao",
        "unit_raw": "g",
    }
    # The same weight again is not news (republish_s = 5 s).
    assert len(h.accepted) == 1
    assert h.entry.state is DeviceState.ONLINE
    assert h.entry.readings == 1
    assert h.entry.last_frame_ns is not None
    assert not h.entry.errors


async def test_mtsics_unstable_weight_is_not_published_by_default() -> None:
    h = mtsics(encode_reply("S", "D", value=1.5, unit="kg"))
    await h.start()
    await until(lambda: h.polls() >= 4)
    assert h.accepted == []
    h.replies["SI"] = encode_reply("S", "S", value=1.52, unit="kg")
    await until(lambda: len(h.accepted) == 1)
    await h.stop()
    assert h.accepted[0].fields["weight_kg"] == 1.52


async def test_mtsics_unstable_weight_when_configured() -> None:
    h = mtsics(encode_reply("S", "D", value=-0.03, unit="kg"), publish_unstable=True)
    await h.start()
    await until(lambda: len(h.accepted) == 1)
    await h.stop()
    assert h.accepted[0].fields == {"weight_kg": -0.03, "stable": False, "quality": "unstable"}


async def test_mtsics_overload_is_a_reading_without_weight() -> None:
    h = mtsics(encode_reply("S", "+"))
    await h.start()
    await until(lambda: len(h.accepted) == 1)
    await h.stop()
    assert h.accepted[0].fields == {"stable": False, "quality": "overload"}


async def test_mtsics_error_replies_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="coffee_telemetry.agent.devices.mtsics")
    h = mtsics(encode_error("ES"))
    await h.start()
    await until(lambda: h.entry.errors["ES"] >= 3)
    h.replies["SI"] = encode_error("ET")
    await until(lambda: h.entry.errors["suspect-link"] >= 2)
    await h.stop()
    assert h.entry.errors["ET"] >= 3
    assert h.entry.state is DeviceState.ONLINE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == f"Device {DEVICE} answered ES to b'SI\\r\\n'"
    # The first ET is a transmission error; the second in a row suspects the line settings.
    assert warnings[1] == f"Device {DEVICE} answered ET to b'SI\\r\\n'"
    assert "check that its baud rate and parity match 9600 8N1" in warnings[2]
    assert len(warnings) == 3, "repeats of the same trouble go to debug"
    assert h.entry.last_error is not None
    assert "baud rate" in h.entry.last_error


async def test_mtsics_no_reply_is_counted_and_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="coffee_telemetry.agent.devices.mtsics")
    h = mtsics(None)
    await h.start()
    await until(lambda: h.entry.errors["no-response"] >= 3)
    assert h.polls() >= 3
    h.replies["SI"] = STABLE_100_G
    await until(lambda: len(h.accepted) == 1)
    await h.stop()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.WARNING, f"Device {DEVICE} did not answer b'SI\\r\\n'") in messages
    assert sum(level == logging.WARNING for level, _ in messages) == 1
    assert (logging.INFO, f"Device {DEVICE} answers again") in messages
    assert (logging.INFO, f"Device {DEVICE} identifies as 'B012345678' (I4)") in messages


async def test_mtsics_busy_after_retries_is_counted() -> None:
    h = mtsics(encode_reply("S", "I"))
    port = await h.start()
    await until(lambda: h.entry.errors["busy"] >= 1)
    await h.stop()
    # The client asks again after each I (max_retries = 3) before giving up.
    assert port.commands[2:6] == ["SI"] * 4
    assert h.accepted == []


async def test_mtsics_garbage_is_discarded() -> None:
    h = mtsics(b"\x00\xff S S 12 \x01\x02\r\n" + STABLE_100_G)
    await h.start()
    await until(lambda: len(h.accepted) == 1)
    await h.stop()
    assert h.entry.frames_discarded >= 1
    assert h.accepted[0].fields["weight_kg"] == 0.1


async def test_mtsics_unplug_reopens_with_a_fresh_client() -> None:
    h = mtsics(STABLE_100_G)
    first = await h.start()
    await until(lambda: len(h.accepted) == 1)
    h.missing = True
    first.unplug()
    await until(lambda: h.entry.state is DeviceState.OFFLINE)
    h.missing = False
    await until(lambda: len(h.ports) == 2 and len(h.accepted) == 2)
    await h.stop()
    second = h.ports[1]
    assert second is not first
    # A new client: it starts over with @, and publishes the unchanged weight again.
    assert second.commands[:3] == ["@", "I2", "SI"]
    assert [r.seq for r in h.accepted] == [1, 2]
    assert h.entry.reconnects == 1
    assert h.entry.errors["port"] >= 1


async def test_mtsics_cancel_writes_reset() -> None:
    h = mtsics(STABLE_100_G, mode="stream")
    h.replies["SIR"] = STABLE_100_G
    port = await h.start()
    await until(lambda: "SIR" in port.commands and len(h.accepted) == 1)
    await h.stop()
    # @ ends the SIR stream, so the balance does not stream at nobody.
    assert port.commands[-1] == "@"


# -- stream scales -------------------------------------------------------------------


async def test_toledo_print_request_is_a_weighment_event() -> None:
    h = Harness("scale.toledo_continuous", manual_clock=True)
    assert isinstance(h.runner, DeviceRunner)
    port = await h.start()
    port.send(encode_frame(50.25, motion=True), at=10.0)
    port.send(encode_frame(1234.56), at=10.5)
    port.send(encode_frame(1234.56, print_request=True), at=10.7)
    await until(lambda: len(h.accepted) == 3)
    await h.stop()
    moving, stable, weighment = h.accepted
    assert (moving.kind, moving.fields["quality"]) == ("reading", "unstable")
    assert (stable.kind, stable.fields["weight_kg"]) == ("reading", 1234.56)
    assert weighment.measurement == "weighment"
    assert weighment.kind == "event"
    assert weighment.fields == {
        "weight_kg": 1234.56,
        "tare_kg": 0.0,
        "net": False,
        "stable": True,
    }
    assert weighment.tags == {
        "site": "s1",
        "device": DEVICE,
        "station": "recepcao",
        "unit_raw": "kg",
        "trigger": "print",
    }


async def test_ascii_stable_weighment_carries_the_station_lot() -> None:
    asked: list[str] = []

    def lot_for_station(station: str) -> str | None:
        asked.append(station)
        return "L-0042"

    h = Harness(
        "scale.ascii",
        manual_clock=True,
        lot_for_station=lot_for_station,
        ascii={"weighment_stable_s": 2.0},
    )
    port = await h.start()
    port.send(encode_line(50.0, header="US", kind="GS"), at=0.0)
    for t in (1.0, 2.0, 3.0):
        port.send(encode_line(50.0, header="ST", kind="GS"), at=t)
    await until(lambda: any(r.kind == "event" for r in h.accepted))
    await h.stop()
    weighment = h.accepted[-1]
    assert weighment.measurement == "weighment"
    assert weighment.fields["weight_kg"] == 50.0
    assert weighment.tags["trigger"] == "stable"
    assert weighment.tags["lot"] == "L-0042"
    # Only events are tagged with the station's lot.
    assert all("lot" not in r.tags for r in h.accepted if r.kind == "reading")
    assert asked == ["recepcao"]


async def test_invalid_station_lot_is_kept_as_field_not_tag() -> None:
    h = Harness("scale.toledo_continuous", manual_clock=True, lot_for_station=lambda s: "L 1;x")
    port = await h.start()
    port.send(encode_frame(80.0, motion=True), at=0.0)
    port.send(encode_frame(80.0), at=0.2)
    port.send(encode_frame(80.0, print_request=True), at=0.4)
    await until(lambda: any(r.kind == "event" for r in h.accepted))
    await h.stop()
    weighment = h.accepted[-1]
    assert "lot" not in weighment.tags
    assert weighment.fields["lot_rejected"] == "L 1;x"
    assert h.entry.errors["bad-lot"] == 1
