"""Simulated scales on ptys → the real agent process → real Mosquitto and InfluxDB.

An MT-SICS balance (polled) and a Toledo-continuous indicator (streaming) run side by
side. A load weighed on the indicator must arrive once as a ``weighment`` event, on
``<prefix>/<site>/<device>/event`` and in InfluxDB; the balance's stable weight must
arrive as ``scale`` readings in kg; line noise from either must cost nothing more
than the noise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.scales import (
    BalanceFaults,
    MtSicsBalanceSim,
    StreamFaults,
    ToledoStreamSim,
)
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SITE = "ourofino"
BALANCE = "balanca-lab"
TRUCK = "balanca-rodoviaria"


@dataclass
class Rig:
    """The agent with one balance and one indicator, and what watches the sinks."""

    agent: AgentProcess
    collector: MqttCollector
    events: MqttCollector  # subscribed to the indicator's event topic only
    influx: InfluxServer
    database: str
    balance: MtSicsBalanceSim
    truck: ToledoStreamSim

    def context(self) -> str:
        return f"agent log tail:\n{self.agent.log_tail()}"

    def rows(self, measurement: str, device: str) -> list[dict[str, object]]:
        return self.influx.query(
            self.database, f'SELECT * FROM "{measurement}" WHERE "device" = \'{device}\''
        )

    def scale_docs(self, device: str) -> list[dict[str, object]]:
        """The device's ``scale`` readings on MQTT, in sequence order."""
        return [doc for doc in self.collector.of(device) if doc["measurement"] == "scale"]

    def weights(self, device: str) -> list[object]:
        """``weight_kg`` of the device's ``scale`` readings on MQTT, in order."""
        return [fields(doc).get("weight_kg") for doc in self.scale_docs(device)]

    async def online(self, device: str) -> None:
        def check() -> bool:
            status = self.collector.last_status(device)
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(check, timeout_s=30, what=f"{device} online", context=self.context)


def fields(doc: dict[str, object]) -> dict[str, object]:
    """A reading document's fields."""
    value = doc["fields"]
    assert isinstance(value, dict)
    return value


@contextlib.contextmanager
def _ptys(tmp: Path) -> Iterator[tuple[PtyPort, PtyPort]]:
    (tmp / "dev").mkdir()
    with contextlib.ExitStack() as stack:
        ports = []
        for name in (BALANCE, TRUCK):
            port = PtyPort(link=tmp / "dev" / name)
            port.open()
            stack.callback(port.close)
            ports.append(port)
        yield ports[0], ports[1]


@pytest.fixture
async def rig(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    mqtt_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    with _ptys(tmp_path) as (balance_pty, truck_pty):
        config = write_site_config(
            tmp_path / "site.toml",
            data_dir=tmp_path / "data",
            devices=[
                DeviceSpec(
                    BALANCE,
                    "scale.mtsics",
                    balance_pty.path,
                    "laboratorio",
                    extra="[devices.mtsics]\npoll_s = 0.2",
                ),
                DeviceSpec(
                    TRUCK,
                    "scale.toledo_continuous",
                    truck_pty.path,
                    "recepcao",
                    # Only the print request makes a weighment: a loaded CI machine can stretch a
                    # rest past any weighment_stable_s short enough for a quick test.
                    extra="[devices.toledo]\nweighment_stable_s = 30.0",
                ),
            ],
            mqtt_port=mosquitto.port,
            prefix=mqtt_prefix,
            influx_url=influxd.url,
            database=influx_db,
            site=SITE,
        )
        collector = MqttCollector(
            port=mosquitto.port, prefix=mqtt_prefix, client_id=f"c-{mqtt_prefix}"
        )
        # "<topic>/#" also matches "<topic>" itself: this one sees only the event topic.
        events = MqttCollector(
            port=mosquitto.port,
            prefix=f"{mqtt_prefix}/{SITE}/{TRUCK}/event",
            client_id=f"e-{mqtt_prefix}",
        )
        agent = AgentProcess(config, tmp_path / "agent.log")
        balance = MtSicsBalanceSim(balance_pty, capacity_kg=5.0, unit="g", decimals=1, seed=3)
        truck = ToledoStreamSim(truck_pty, rate_hz=10.0, auto_weighment_s=30.0, seed=5)
        rig = Rig(agent, collector, events, influxd, influx_db, balance, truck)
        collector.start()
        events.start()
        agent.start()
        balance_task = asyncio.create_task(balance.run(), name="sim[balance]")
        try:
            await rig.online(BALANCE)
            await rig.online(TRUCK)
            yield rig
        finally:
            try:
                if agent.alive:
                    agent.stop()
            finally:
                balance_task.cancel()
                await asyncio.wait({balance_task})
                collector.stop()
                events.stop()


async def weigh_on_balance(balance: MtSicsBalanceSim, kg: float) -> None:
    """Put a load on the pan; it moves for a while, then settles."""
    balance.load(kg)
    await asyncio.sleep(0.6)
    balance.settle()


async def test_weighment_event_and_balance_readings(rig: Rig) -> None:
    await eventually(
        lambda: 0.0 in rig.weights(BALANCE),
        timeout_s=20,
        what="the empty balance's first reading",
        context=rig.context,
    )
    await rig.truck.hold(0.3)
    weighment, _ = await asyncio.gather(
        rig.truck.weigh(1234.5, motion_s=0.5, stable_s=1.0, rest_s=0.3),
        weigh_on_balance(rig.balance, 1.25),
    )
    assert weighment is not None
    assert weighment.trigger == "print"

    await eventually(
        lambda: len(rig.events.readings) >= 1,
        timeout_s=20,
        what="a weighment on the event topic",
        context=rig.context,
    )
    await eventually(
        lambda: 1.25 in rig.weights(BALANCE),
        timeout_s=20,
        what="the balance's 1.25 kg",
        context=rig.context,
    )
    # One load, one weighment: on its own topic, and nowhere else.
    assert len(rig.events.readings) == 1
    (event,) = rig.events.readings.values()
    assert event["measurement"] == "weighment"
    assert event["kind"] == "event"
    assert event["fields"] == {
        "weight_kg": weighment.weight_kg,
        "tare_kg": 0.0,
        "net": False,
        "stable": True,
    }
    assert event["tags"] == {
        "site": SITE,
        "device": TRUCK,
        "station": "recepcao",
        "trigger": "print",
        "unit_raw": "kg",
    }
    truck_docs = rig.collector.of(TRUCK)
    assert [d["kind"] for d in truck_docs if d["measurement"] == "weighment"] == ["event"]
    assert {d["kind"] for d in truck_docs if d["measurement"] == "scale"} == {"reading"}

    async def in_influx() -> bool:
        return bool(rig.rows("weighment", TRUCK)) and any(
            r["weight_kg"] == 1.25 for r in rig.rows("scale", BALANCE)
        )

    await eventually(in_influx, timeout_s=20, what="both scales in InfluxDB", context=rig.context)
    (row,) = rig.rows("weighment", TRUCK)
    assert row["weight_kg"] == 1234.5
    assert row["trigger"] == "print"
    assert row["station"] == "recepcao"
    assert row["time"] == event["ts"]

    # The balance: stable weights only (S D is not published), in kg from grams.
    stable = [s.weight_kg for s in rig.balance.sent if s.status == "S"]
    assert set(rig.weights(BALANCE)) <= set(stable)
    docs = [d for d in rig.scale_docs(BALANCE) if fields(d).get("weight_kg") == 1.25]
    assert docs[0]["tags"] == {
        "site": SITE,
        "device": BALANCE,
        "station": "laboratorio",
        "unit_raw": "g",
    }
    assert docs[0]["fields"] == {"weight_kg": 1.25, "stable": True, "quality": "ok"}
    assert rig.balance.commands[:3] == ["@", "I2", "SI"]

    assert rig.agent.stop() == 0
    # Shutting down, the agent resets the balance (ends any SIR stream).
    await eventually(lambda: rig.balance.commands[-1] == "@", timeout_s=5, what="@ at shutdown")


async def test_line_noise_costs_only_the_noise(rig: Rig) -> None:
    rig.balance.knobs = BalanceFaults(garbage_prob=0.5)
    rig.balance.port.write(b"S S  abc kg\r\n\xff\xfe\x00\x01\r\nZZZ Q\r\n")  # unasked, malformed
    rig.truck.port.write(b"\xff\x00 noise \x02\x2c\x30")  # junk and a cut frame
    rig.truck.knobs = StreamFaults(parity_noise=True)
    weighment, _ = await asyncio.gather(
        rig.truck.weigh(500.0, motion_s=0.5, stable_s=1.0, rest_s=0.3),
        weigh_on_balance(rig.balance, 2.0),
    )
    assert weighment is not None
    await eventually(
        lambda: len(rig.events.readings) >= 1 and 2.0 in rig.weights(BALANCE),
        timeout_s=20,
        what="the weighment and the balance's 2.0 kg",
        context=rig.context,
    )
    (event,) = rig.events.readings.values()
    assert fields(event)["weight_kg"] == 500.0
    assert rig.agent.alive
    log = rig.agent.log_tail(200_000)
    assert f"Device {BALANCE} discarded" in log
    assert f"Device {TRUCK} discarded" in log
    assert "Traceback" not in log
    for device in (BALANCE, TRUCK):
        status = rig.collector.last_status(device)
        assert isinstance(status, dict)
        assert status["state"] == "online"
        assert status["reconnects"] == 0
